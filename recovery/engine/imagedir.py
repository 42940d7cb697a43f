"""Image files in a folder a peer's wizard names: which folders this machine takes, and what each holds.

One rule decides which paths the side that holds the folder takes (docs/protocol.md, *Images in a
folder of the peer*): an absolute path in its plain form, no component a symbolic link, an existing
directory on a disk's filesystem (its mount is a block device) or a network filesystem, never a
pseudo filesystem or one in memory. A file in it is a plain name (no ``/``, not hidden); a save makes
a new ``.img`` file there (an unfinished save of it may resume), a restore opens an existing image,
never through a link. Everything else is a :class:`~recovery.errors.RefusedError` saying why, so
nothing is written outside the folder the user chose.
"""

from __future__ import annotations

import itertools
import os
import posixpath
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from recovery import run
from recovery.diskimage.format import Header
from recovery.diskimage.info import ImageDescription
from recovery.diskimage.reader import ImageReader, image_header
from recovery.diskimage.scan import unfinished_at
from recovery.disks import usage
from recovery.disks.partdev import partition_node
from recovery.engine.clone.imagesource import is_image
from recovery.engine.imagemount import mount_part
from recovery.errors import RecoveryError, RefusedError
from recovery.protocol import messages as m
from recovery.units import human_size, shown

NETWORK_FS = frozenset({"nfs", "nfs4", "cifs", "smb3"})
SUFFIX = ".img"  # what a saved image's name ends with
MAX_NAME = 255  # bytes of a file name
MAX_SCANNED = 4096  # directory entries a listing looks at
GLANCE = 1 << 20  # bytes of an image's manifest a listing reads, at most
# Folders of an installed system no save goes into (nor into one inside them, nor a hidden one, such as
# ~/.ssh): a peer's wizard picks the folder, and a file there could be taken for the system's own.
SYSTEM_TREES = (
    "/bin", "/boot", "/dev", "/efi", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run", "/sbin",
    "/sys", "/usr", "/var/backups", "/var/cache", "/var/lib", "/var/log", "/var/mail", "/var/opt", "/var/spool",
)  # fmt: skip
DRIVE_FOLDERS = ("/run/media",)  # where udisks mounts a user's drives (Fedora, Arch, openSUSE), under /run


def checked_folder(path: str, *, write: bool = False) -> str:
    """``path`` when image files may be found there (and, ``write``, saved); else refused, saying why."""
    if not path.startswith("/") or path.startswith("//") or posixpath.normpath(path) != path:
        raise RefusedError(f"{path!r} is not a folder's absolute path in plain form (no '.', '..', '//', final '/')")
    if os.path.realpath(path) != path:
        raise RefusedError(f"{path} goes through a symbolic link: give the folder's own path")
    try:
        st = os.stat(path)
    except OSError as e:
        raise RefusedError(f"{path}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise RefusedError(f"{path} is not a folder")
    mount = mount_of(path)
    if mount is None or not (mount.source.startswith("/dev/") or mount.fstype in NETWORK_FS):
        kind = mount.fstype if mount else "an unknown filesystem"
        raise RefusedError(f"{path} is on {kind}, not on a disk: images are kept only on a disk's filesystem")
    if write and (os.statvfs(path).f_flag & os.ST_RDONLY or not os.access(path, os.W_OK)):
        raise RefusedError(f"{path} cannot be written (a read-only filesystem or folder)")
    if write:
        _refuse_system_folder(path)
    return path


def _refuse_system_folder(path: str) -> None:
    """A save never goes into the system's own folders (:data:`SYSTEM_TREES`), by name or as the same folder
    mounted elsewhere (a bind mount: the same device and inode), nor a hidden folder; drives mounted under
    /run to save to (:data:`MEDIA`, :data:`DRIVE_FOLDERS`) are not the system's."""
    if any(part.startswith(".") for part in path.split("/")):
        raise RefusedError(f"{path} is a hidden folder: save images to a folder of their own")
    if any(path.startswith(d + "/") for d in (MEDIA, *DRIVE_FOLDERS)):
        return
    trees = {_inode(t): t for t in SYSTEM_TREES}
    trees.pop(None, None)
    at = path
    while True:
        tree = next((t for t in SYSTEM_TREES if at == t), None) or trees.get(_inode(at))
        if tree is not None:
            raise RefusedError(
                f"{path} is a folder of the installed system ({tree}): save images to a folder of their own"
            )
        if at == "/":
            return
        at = posixpath.dirname(at)


def _inode(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def mount_of(path: str) -> usage.Mount | None:
    """The mount ``path`` (a real path) lies on: the longest mountpoint that contains it."""
    best: usage.Mount | None = None
    for mount in usage.mounts():
        point = mount.mountpoint.rstrip("/") or "/"
        inside = path == point or path.startswith(point + "/") or point == "/"
        if inside and (best is None or len(point) >= len(best.mountpoint.rstrip("/") or "/")):
            best = mount
    return best


def checked_name(name: str, *, new: bool) -> str:
    """``name`` when it is one plain, visible file name (a new image's ends with ``.img``); else refused."""
    plain = name.isprintable() and "/" not in name and not name.startswith(".")
    if not plain or len(name.encode()) > MAX_NAME:
        raise RefusedError(f"{name!r} is not a plain file name (no '/', not hidden, at most {MAX_NAME} bytes)")
    if new and (not name.endswith(SUFFIX) or name == SUFFIX):
        raise RefusedError(f"{name!r}: an image's name ends with {SUFFIX}")
    return name


def new_image(path: str) -> str:
    """Where to save a new image: ``path`` in a folder this machine allows for writing, its name plain,
    no file of that name there (but an unfinished save, which resumes)."""
    folder, name = posixpath.split(path)
    checked_folder(folder, write=True)
    checked_name(name, new=True)
    if os.path.lexists(path) and not (stat.S_ISREG(os.lstat(path).st_mode) and unfinished_at(path)):
        raise RefusedError(f"{name} exists in {folder}", hint="choose another name for the image")
    return path


def saved_image(path: str) -> str:
    """An image to restore: ``path`` in a folder this machine allows, a regular file holding an image."""
    folder, name = posixpath.split(path)
    checked_folder(folder)
    checked_name(name, new=False)
    try:
        regular = stat.S_ISREG(os.lstat(path).st_mode)
    except OSError as e:
        raise RefusedError(f"{path}: {e.strerror}") from None
    if not regular or not is_image(path):
        raise RefusedError(f"{path} is not an image file", hint="choose an image from the folder's list")
    return path


def find_images(folder: str) -> m.Images:
    """What ``folder`` holds (empty: only the folders to suggest); never raises: a refusal is said."""
    places = suggested()
    if not folder:
        return m.Images(places=places)
    try:
        checked_folder(folder)
        with os.scandir(folder) as listing:
            names = sorted(e.name for e in itertools.islice(listing, MAX_SCANNED) if _candidate(e))
        found = [n for n in names if is_image(posixpath.join(folder, n))]
        free = free_bytes(folder)
    except (RecoveryError, OSError) as e:
        why = e.message if isinstance(e, RecoveryError) else f"{folder}: {e.strerror}"
        return m.Images(folder=folder, places=places, refused=shown(why)[:1024])
    images = tuple(describe(posixpath.join(folder, n)) for n in found[: m.MAX_IMAGES])
    return m.Images(folder=folder, images=images, places=places, free=free, more=len(found) - len(images))


def _candidate(entry: os.DirEntry[str]) -> bool:
    """A visible regular file (not a link) whose name can travel."""
    return entry.is_file(follow_symlinks=False) and not entry.name.startswith(".") and entry.name.isprintable()


def free_bytes(folder: str) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def describe(path: str) -> m.ImageEntry:
    """One image file as its header and manifest say (an encrypted one: its header only). Cheap whatever
    the file holds: its index is not read and its manifest is read only if small. Never raises: what
    goes wrong is the entry's ``problem``."""
    name = posixpath.basename(path)
    file_bytes = 0
    try:
        file_bytes = os.lstat(path).st_size
        header = image_header(path)
        if header.encrypted:
            return m.ImageEntry(
                name=name, file_bytes=file_bytes, size=header.size, sector_size=header.sector_size, encrypted=True
            )
        with ImageReader(path, glance=GLANCE) as reader:
            said = ImageDescription(reader.header, reader.manifest, "")
        return m.ImageEntry(
            name=name,
            file_bytes=file_bytes,
            size=header.size,
            sector_size=header.sector_size,
            source=_text(said.source, 600),
            source_host=_text(said.source_host, 255),
            created=_text(str(said.manifest.get("created", "")), 40),
            mode="exact" if said.manifest.get("mode") == "exact" else "used",
            problem=_text(_parent_problem(path, header), 512),
        )
    except Exception as e:  # noqa: BLE001 - a file that cannot be described is listed as such, never ends the session
        why = e.message if isinstance(e, RecoveryError) else f"cannot be read ({type(e).__name__})"
        return m.ImageEntry(name=name, file_bytes=file_bytes, problem=_text(why, 512))


def _parent_problem(path: str, header: Header) -> str:
    """Why an increment cannot be restored from its folder as it is now: its parent is not there (by the
    parent's header; restoring it checks the whole chain); "" otherwise."""
    named = header.parent
    if named is None:
        return ""
    try:
        there = image_header(posixpath.join(posixpath.dirname(path), named.name)).image_id == named.image_id
    except RecoveryError:
        there = False
    return "" if there else f"it is an increment of {named.name}, which is missing here or another image"


def _text(value: str, limit: int) -> str:
    """A string from a file, as it may travel: shown safely, valid UTF-8, at most ``limit`` characters."""
    return shown(value).encode("utf-8", "replace").decode("utf-8")[:limit]


def suggested() -> tuple[str, ...]:
    """The folders to suggest: mountpoints of this machine's disk and network filesystems that take images."""
    out: list[str] = []
    seen: set[str] = set()  # each filesystem once (a bind mount shows one again)
    for mount in usage.mounts():
        point = mount.mountpoint
        if point in out or mount.devnum in seen or not point.isprintable() or len(out) >= m.MAX_PLACES:
            continue
        try:
            checked_folder(point, write=True)
        except (RefusedError, OSError):
            continue
        out.append(point)
        seen.add(mount.devnum)
    return tuple(out)


# --- drives to save to, on this machine ---------------------------------------

MEDIA = "/run/usb4-recovery/media"  # where a drive mounted to save images to goes
MOUNTABLE_FS = frozenset({"ext2", "ext3", "ext4", "vfat", "exfat", "ntfs", "xfs", "btrfs"})


@dataclass(frozen=True)
class Drive:
    """A partition of an external drive (USB, or a removable medium) that is not mounted: a place to save
    images to once it is (``recovery image places --mount``)."""

    device: str
    fstype: str
    label: str | None
    size: int
    disk: str  # the whole disk, as a user recognises it


def mountable(disks: Iterable[m.DiskInfo]) -> list[Drive]:
    """The unmounted partitions of external drives with a filesystem this machine can write. Never the
    stick, never a disk with anything mounted or a system on it (the disk being saved may be external too:
    mounting it read-write would write it)."""
    out = []
    for disk in disks:
        external = disk.transport == "usb" or disk.removable
        # a clone's target (unfinished, or the finished copy a record vouches for): what a peer wrote
        busy = disk.boot_medium or disk.mountpoints or disk.unfinished is not None or disk.copy is not None
        if not external or busy or any(p.os for p in disk.partitions):
            continue
        for p in disk.partitions:
            if p.fstype in MOUNTABLE_FS and p.number:
                words = " ".join(w for w in (disk.model, human_size(disk.size)) if w)
                out.append(Drive(partition_node(disk.path, p.number), p.fstype, p.label, p.size, words))
    return out


def mount_drive(device: str, drives: Iterable[Drive]) -> str:
    """Mount ``device`` (one of ``drives``) read-write under :data:`MEDIA`: the folder to save images in."""
    drive = next((d for d in drives if d.device == device), None)
    if drive is None:
        raise RefusedError(
            f"{device} is not an unmounted partition of an external drive",
            hint="`recovery image places` lists those it mounts; mount any other yourself",
        )
    os.makedirs(MEDIA, mode=0o755, exist_ok=True)
    folder = posixpath.join(MEDIA, posixpath.basename(device))
    part = mount_part(0, device, folder, writable=True)
    if part.mountpoint is None:
        raise RefusedError(f"{device} could not be mounted: {part.why}")
    try:
        return checked_folder(folder, write=True)
    except RefusedError:
        run.run(["umount", folder], check=False)
        os.rmdir(folder)
        raise
