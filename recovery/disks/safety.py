"""Safety checks before anything is written: the receiver's refusals.

A target is refused when it is mounted, holds the running system, is the
appliance's boot medium, is in use as swap or by device-mapper, is smaller
than the plan needs, or is (or holds, or lives on) the source itself. A
target that carries a partition table or a filesystem is only overwritten
when the user said so (``--yes`` or the wizard's typed confirmation).
"""

from __future__ import annotations

import errno
import os
import stat

from recovery.diskimage.scan import unfinished_at
from recovery.disks import identity, partitions, usage
from recovery.errors import RefusedError
from recovery.protocol.values import Identity
from recovery.units import human_size


def refuse_planted_link(path: str) -> str:
    """The name to open for a target: ``path`` itself, or for a device name under /dev that is a
    link (``/dev/disk/by-id/...``) the device it leads to. Any other symbolic link is refused: one
    planted where an image file is to be made could point anywhere, a disk among them."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError as e:
        raise RefusedError(f"cannot inspect {path}: {e.strerror}") from None
    if not stat.S_ISLNK(st.st_mode):
        return path
    real = os.path.realpath(path)
    if os.path.abspath(path).startswith("/dev/") and os.path.exists(real) and stat.S_ISBLK(os.stat(real).st_mode):
        return real
    raise RefusedError(
        f"refusing to write {path}: it is a symbolic link (to {real})",
        hint="give the disk or the image file itself, not a link to it",
    )


def open_without_links(path: str, flags: int, mode: int = 0o600) -> int:
    """Open the absolute ``path`` with no symbolic link anywhere on it: each folder on the way opened
    from ``/`` without following one, then the file in the last. A folder checked a moment before and
    swapped for a link since is refused, not followed (a peer's save never lands outside it)."""
    *folders, name = path.strip("/").split("/")
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for folder in folders:
            try:
                nxt = os.open(folder, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise RefusedError(f"refusing to open {path}: {folder} on its way is not a folder now") from None
                raise
            os.close(fd)
            fd = nxt
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=fd)
    finally:
        os.close(fd)


def check_target_path(path: str, *, overwrite: bool, image: bool = False) -> None:
    """Checks that need no plan: run before waiting for a sender. ``image``: an image file is to be
    made at ``path`` (a disk is refused, and so is any file that is not empty unless ``overwrite``)."""
    refuse_planted_link(path)
    if not os.path.exists(path):
        parent = os.path.dirname(os.path.abspath(path)) or "."
        if not os.path.isdir(parent):
            raise RefusedError(f"cannot create {path}: {parent} is not a directory")
        if filesystem_type(parent) == "devtmpfs":
            # A device name that does not exist: never create a file there.
            raise RefusedError(f"{path} does not exist", hint="run `recovery disks` to see this machine's disks")
        return
    st = os.stat(path)
    if image:
        if not stat.S_ISREG(st.st_mode):
            raise RefusedError(f"{path} is not a file: an image is saved into a file of its own")
        if st.st_size and not overwrite and not unfinished_at(path):  # an unfinished image may resume
            raise RefusedError(f"{path} exists; refusing to replace it without --yes", hint="give a new file name")
        return
    if stat.S_ISBLK(st.st_mode):
        u = usage.usage(st.st_rdev, partitions.read_table(path))
        reason = u.refusal()
        if reason:
            raise RefusedError(f"refusing to write {path}: {reason}")
    elif not stat.S_ISREG(st.st_mode):
        raise RefusedError(f"{path} is neither a block device nor a regular file")
    if not overwrite and (stat.S_ISBLK(st.st_mode) or st.st_size > 0):
        found = partitions.has_signatures(path)
        if found:
            raise RefusedError(
                f"{path} holds data ({found}); refusing to overwrite it without --yes",
                hint="check it is the right disk with `recovery disks`, then add --yes",
            )


def filesystem_type(path: str) -> str | None:
    """The type of the filesystem ``path`` is on (longest matching mountpoint)."""
    real = os.path.realpath(path)
    best: tuple[int, str] | None = None
    for m in usage.mounts():
        mp = m.mountpoint.rstrip("/") or "/"
        if real == mp or real.startswith(mp + "/") or mp == "/":
            if best is None or len(mp) > best[0]:
                best = (len(mp), m.fstype)
    return best[1] if best else None


def check_against_plan(target: Identity, source: Identity, needed: int) -> None:
    """Checks that need the plan: size, and not the source itself."""
    if identity.same_storage(source, target):
        raise RefusedError(
            f"refusing to write {target.path}: it is the source {source.path}, or one lives on the other"
        )
    why = sector_mismatch(source, target)
    if why:
        raise RefusedError(
            f"refusing to write {target.path}: {why}",
            hint="use a target disk with the same logical sector size (see `recovery disks`)",
        )
    if target.kind != "file" and target.size < needed:
        raise RefusedError(
            f"{target.path} is too small: the source needs {human_size(needed)} "
            f"({needed} bytes), the target has {human_size(target.size)} ({target.size} bytes)",
            hint="send with --fit shrink to shrink the source's filesystems to fit it",
        )


def sector_mismatch(source: Identity, target: Identity) -> str | None:
    """Why a disk with other logical sectors cannot hold the source's partition
    tables (they count in sectors: the copy would be unreadable), or None."""
    if target.kind == "file" or not source.sector_size or not target.sector_size:
        return None
    if source.sector_size == target.sector_size:
        return None
    return (
        f"its logical sectors are {target.sector_size} bytes, the source's are {source.sector_size}: "
        "the partition tables would not be readable on it"
    )
