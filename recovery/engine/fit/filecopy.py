"""A filesystem that cannot shrink where it lies (XFS, exFAT) made again, smaller (an exFAT larger too: no
tool grows one in place), and filled file by file: a new filesystem with the old one's UUID, label and
features on the copy-on-write view, every file copied into it from the source (mounted read-only, from a
read-only loop device) by ``cp``, then every file compared (:mod:`recovery.engine.fit.sametree`). The source
is never written; the view is. exFAT stores no owners, links or extended attributes: its files are copied
with their contents, modes (its read-only attribute) and modification times."""

from __future__ import annotations

import os
import re
import threading

from recovery import run
from recovery.disks import blockdev, fsinfo, partitions
from recovery.engine.fit import fsattr, mounts, sametree
from recovery.errors import CancelledError, RefusedError, ToolError

MIB = 1 << 20
COPIED = ("xfs", "exfat")  # shrunk by a copy into a new filesystem
GROWN = ("exfat",)  # grown by a copy into a new, larger one too (no tool grows it in place; XFS grows mounted)
POSIX = ("xfs",)  # owners, links, extended attributes and flags kept (exFAT has none)
# The smallest new filesystem: mkfs.xfs (5.19 on) makes none under 300 MiB.
FLOOR = {"xfs": 300 * MIB, "exfat": 16 * MIB}
# Room over the bytes in use (and a tenth more): XFS's log, headers and inode chunks, and some slack; exFAT's
# boot region and FAT aligned to 1 MiB each (mkfs.exfat), its bitmap, up-case table and root folder, slack.
ROOM = {"xfs": 128 * MIB, "exfat": 16 * MIB}
# How cp copies each: exFAT has no owners (cp -a fails on them), links, special files or extended attributes.
CP = {
    "xfs": ["-a", "--sparse=auto", "--reflink=never"],
    "exfat": ["--recursive", "--no-dereference", "--preserve=mode,timestamps"],
}


def smallest(used: int, fstype: str) -> int:
    """The smallest filesystem the copy of one that uses ``used`` bytes is made as."""
    return max(FLOOR[fstype], used + used // 10 + ROOM[fstype])


def used_bytes(dev: str, fstype: str) -> int:
    """The bytes a copy of the filesystem on ``dev`` (a read-only device) needs for its files: what the
    mounted filesystem says it uses, or what its files hold (each counted once), whichever is more (extents
    shared by reflinks are used once there, and copied once per file; an exFAT's files and folders in whole
    clusters)."""
    cluster = exfat_boot(dev).cluster if fstype == "exfat" else None
    with mounts.mounted(dev, fstype, writable=False) as where:
        st = os.statvfs(where)
        held = sametree.allocated(where, cluster)
    return max((st.f_blocks - st.f_bfree) * st.f_frsize, held)


def exfat_boot(dev: str) -> fsinfo.ExfatBoot:
    """The boot sector of the exFAT on ``dev``."""
    with open(dev, "rb") as f:
        found = fsinfo.exfat_boot(f.read(512))
    if found is None:
        raise RefusedError(f"{dev} holds no exFAT boot sector")
    return found


def copy(old: str, new: str, fstype: str, cancel: threading.Event) -> None:
    """Make ``new`` (a device of the view) a filesystem like the one on ``old`` (a read-only device of the
    source), copy every file into it, then compare them all as the view holds them (the copy synced,
    unmounted and mounted again read-only). A ``cancel`` stops the copy or the comparison."""

    def check() -> None:
        if cancel.is_set():
            raise CancelledError("cancelled while a filesystem was copied: nothing was written to the target")

    with mounts.mounted(old, fstype, writable=False) as src:
        make_like(old, new, fstype, os.statvfs(src))
        with mounts.mounted(new, fstype, writable=True) as dst:
            run.run(["cp", *CP[fstype], "--no-target-directory", f"{src}/.", dst], cancel=cancel)
            if fstype in POSIX:
                fsattr.carry(os.fsencode(src), os.fsencode(dst))
        with mounts.mounted(new, fstype, writable=False) as dst:
            try:
                sametree.compare(src, dst, check, posix=fstype in POSIX)
            except sametree.Difference as e:
                raise ToolError(
                    f"the file-level copy differs from the source ({e}): nothing was written to the target and "
                    "the source is unchanged"
                ) from None


def make_like(old: str, new: str, fstype: str, files: os.statvfs_result) -> None:
    """A new filesystem on ``new`` with the UUID, label and features of the one on ``old``, with room for as
    many inodes as ``files`` (the old one, mounted) uses; checked to have its UUID and label."""
    if fstype not in COPIED:
        raise RefusedError(f"{fstype} is not copied file by file by this tool")
    found = partitions.probe(old)
    if not found.uuid:
        raise RefusedError(f"{old} has no filesystem UUID to carry over")
    label = ["-L", found.label] if found.label else []
    if fstype == "xfs":
        info = run.output(["xfs_info", old])
        pct = inode_share(info, files.f_files - files.f_ffree, blockdev.inspect(new).size)
        # -K: no discard of the view (it is a copy-on-write device); -f: the old filesystem is there
        run.run(["mkfs.xfs", "-q", "-f", "-K", *xfs_options(info, pct), *label, "-m", f"uuid={found.uuid}", new])
    else:
        _make_exfat(old, new, label)
    made = partitions.probe(new)
    if (made.uuid, made.label) != (found.uuid, found.label):
        raise ToolError(f"the new {fstype} did not get the old one's UUID and label ({made.uuid}, {made.label!r})")


def _make_exfat(old: str, new: str, label: list[str]) -> None:
    """An exFAT on ``new`` with the cluster size, label and volume serial (its UUID) of the one on ``old``;
    its sectors are the device's, as the old one's were (the view shows the source's sector size)."""
    was = exfat_boot(old)
    run.run(["mkfs.exfat", "--cluster-size", str(was.cluster), *label, new])
    run.run(["tune.exfat", "--set-serial", f"0x{was.serial:08x}", new])
    made = exfat_boot(new)
    if (made.cluster, made.sector) != (was.cluster, was.sector):
        raise ToolError(f"the new exFAT has {made.cluster}-byte clusters of {made.sector}-byte sectors, the old one "
                        f"{was.cluster} of {was.sector}")  # fmt: skip


def inode_share(info: str, inodes: int, size: int) -> int:
    """The percent of the new filesystem's space its inodes may take (mkfs.xfs -i maxpct): the old one's, or
    more when the old one's inodes, twice over, need it."""
    old = re.search(r"imaxpct=(\d+)", info)
    isize = re.search(r"isize=(\d+)", info)
    needed = -(-2 * inodes * int(isize.group(1) if isize else 512) * 100 // max(size, 1))
    return min(100, max(int(old.group(1)) if old else 25, needed))


# xfs_info's words, and the mkfs.xfs option each is made with.
XFS_FEATURES = {
    "crc": ("-m", "crc"),
    "finobt": ("-m", "finobt"),
    "rmapbt": ("-m", "rmapbt"),
    "reflink": ("-m", "reflink"),
    "bigtime": ("-m", "bigtime"),
    "inobtcount": ("-m", "inobtcount"),
    "sparse": ("-i", "sparse"),
    "nrext64": ("-i", "nrext64"),
    "isize": ("-i", "size"),
    "projid32bit": ("-i", "projid32bit"),
    "sectsz": ("-s", "size"),
    "ftype": ("-n", "ftype"),
    "lazy-count": ("-l", "lazy-count"),
}


def xfs_options(info: str, maxpct: int | None = None) -> list[str]:
    """mkfs.xfs options that make a filesystem with the features ``xfs_info`` names (its first value of
    each; the data and directory block sizes from their own lines), its inodes' share ``maxpct``."""
    values: dict[str, str] = {}
    for word, value in re.findall(r"([a-z0-9-]+)=(\S+?),?(?=\s|$)", info):
        values.setdefault(word, value)
    groups: dict[str, list[str]] = {}
    for word, (flag, name) in XFS_FEATURES.items():
        if word in values and re.fullmatch(r"\d+", values[word]):
            groups.setdefault(flag, []).append(f"{name}={values[word]}")
    if values.get("crc") == "1":  # v5 has no ftype option (always on)
        groups["-n"] = [o for o in groups.get("-n", []) if not o.startswith("ftype=")]
    if values.get("ascii-ci") == "1":  # names compared without ASCII case
        groups.setdefault("-n", []).append("version=ci")
    data = re.search(r"^data\s+=.*?bsize=(\d+)", info, re.MULTILINE)
    naming = re.search(r"^naming\s+=.*?bsize=(\d+)", info, re.MULTILINE)
    if maxpct is not None:
        groups.setdefault("-i", []).append(f"maxpct={maxpct}")
    if data:
        groups.setdefault("-b", []).append(f"size={data.group(1)}")
    if naming:
        groups.setdefault("-n", []).append(f"size={naming.group(1)}")
    return [part for flag, opts in groups.items() if opts for part in (flag, ",".join(opts))]
