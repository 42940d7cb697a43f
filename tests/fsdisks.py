"""Disks with real filesystems of every kind the used mode maps, for end-to-end tests.

``make_disk(image, layout, label)`` partitions an image (GPT or MBR with
logical partitions), makes each filesystem and fills it with real files:
Btrfs gets subvolumes and read-only snapshots (mounted with compression),
NTFS and exFAT are filled through FUSE (ntfs-3g, exfat-fuse), FAT with
mtools. ``contents(dev, fstype)`` digests every file a filesystem holds.
Needs root (loop devices, mounts).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import MIB, fill_random, loop_device, populate, sh, tree_digests

MTOOLS = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
# mkfs.xfs allows filesystems under 300 MiB to the filesystem test suite (these variables)
XFS_SMALL = {**os.environ, "TEST_DIR": "1", "TEST_DEV": "1", "QA_CHECK_FS": "1"}
LINUX = "0fc63daf-8483-4772-8e79-3d69d8477de4"
BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
SWAP = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f"
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
BTRFS_MIN = 114294784  # smaller Btrfs filesystems are made with --mixed block groups


@dataclass(frozen=True)
class Part:
    fstype: str  # btrfs, xfs, ntfs, exfat, vfat, ext4, swap
    mib: int
    mbr_type: str = "83"
    gpt_type: str | None = None  # else by its filesystem
    options: tuple[str, ...] = ()  # more of mkfs.vfat's arguments


def make_fs(dev: str, fstype: str, label: str, options: Sequence[str] = ()) -> None:
    if fstype == "btrfs":
        small = int(sh("blockdev", "--getsize64", dev).stdout) < BTRFS_MIN
        sh("mkfs.btrfs", "-q", "-f", *(["--mixed"] if small else []), "-L", label, dev)
    elif fstype == "xfs":
        sh("mkfs.xfs", "-q", "-f", "-L", label[:12], dev, env=XFS_SMALL)
    elif fstype == "ntfs":
        sh("mkntfs", "-q", "-F", "-f", "-L", label, dev)
    elif fstype == "exfat":
        sh("mkfs.exfat", "-L", label[:11], dev)
    elif fstype == "vfat":
        sh("mkfs.vfat", "-n", label[:11].upper(), *options, dev)
    elif fstype == "ext4":
        sh("mkfs.ext4", "-q", "-F", "-E", "nodiscard,lazy_itable_init=0", "-L", label, dev)
    elif fstype == "swap":
        sh("mkswap", "-L", label, dev)
    else:
        raise ValueError(fstype)


@contextlib.contextmanager
def mounted_fs(dev: str, fstype: str, *, readonly: bool = False, options: str = "") -> Iterator[Path]:
    """Mount through the kernel, or FUSE for NTFS and exFAT (this kernel has neither)."""
    with tempfile.TemporaryDirectory(prefix="recovery-fs-") as mnt:
        opts = ",".join(o for o in ("ro" if readonly else "", options) if o)
        if fstype == "ntfs":
            argv = ["ntfs-3g", *(["-o", opts] if opts else []), dev, mnt]
        elif fstype == "exfat":
            argv = ["mount.exfat-fuse", *(["-o", opts] if opts else []), dev, mnt]
        else:
            argv = ["mount", *(["-o", opts] if opts else []), dev, mnt]
        sh(*argv)
        try:
            yield Path(mnt)
        finally:
            sh("umount", mnt, check=False)


def fill(dev: str, fstype: str, seed: int) -> None:
    """Real files; for Btrfs also subvolumes and snapshots, written with compression."""
    if fstype == "swap":
        return
    if fstype == "vfat":
        with tempfile.TemporaryDirectory() as tmp:
            populate(Path(tmp), seed=seed, mib=2)
            sh("mcopy", "-s", "-i", dev, *[str(p) for p in Path(tmp).iterdir()], "::/", env=MTOOLS)
        return
    options = "compress=zstd" if fstype == "btrfs" else ""
    with mounted_fs(dev, fstype, options=options) as mnt:
        if fstype != "btrfs":
            populate(mnt, seed=seed, mib=3)
            return
        sh("btrfs", "subvolume", "create", str(mnt / "home"))
        populate(mnt / "home", seed=seed, mib=4)
        sh("btrfs", "subvolume", "snapshot", "-r", str(mnt / "home"), str(mnt / "home-snap1"))
        populate(mnt / "home" / "later", seed=seed + 1, mib=3)
        (mnt / "home" / "docs" / "note-0.txt").unlink()
        sh("btrfs", "subvolume", "snapshot", "-r", str(mnt / "home"), str(mnt / "home-snap2"))
        sh("btrfs", "subvolume", "snapshot", str(mnt / "home"), str(mnt / "home-rw"))
        populate(mnt / "root", seed=seed + 2, mib=3)
        sh("sync")


def contents(dev: str, fstype: str) -> dict[str, str]:
    """Digest of every file (and, on Btrfs, every subvolume and snapshot)."""
    if fstype == "swap":
        return {}
    if fstype == "vfat":
        with tempfile.TemporaryDirectory() as tmp:
            sh("mcopy", "-s", "-n", "-i", dev, "::/", tmp, env=MTOOLS)
            return tree_digests(Path(tmp))
    with mounted_fs(dev, fstype, readonly=True) as mnt:
        found = tree_digests(mnt)
        found.pop("System Volume Information/", None)
        return found


def partition(image: Path, layout: Sequence[Part], label: str) -> None:
    lines = [f"label: {label}"]
    if label == "gpt":
        types = {"swap": SWAP, "ntfs": BASIC_DATA, "exfat": BASIC_DATA, "vfat": BASIC_DATA}
        lines += [f"size={p.mib}MiB, type={p.gpt_type or types.get(p.fstype, LINUX)}" for p in layout]
    else:  # MBR: the first partition primary, the rest logical inside an extended one
        lines.append(f"size={layout[0].mib}MiB, type={layout[0].mbr_type}")
        lines.append("type=5")
        lines += [f"size={p.mib}MiB, type={p.mbr_type}" for p in layout[1:]]
    sh("sfdisk", "--quiet", str(image), input="\n".join(lines) + "\n")


def make_disk(
    image: Path,
    layout: Sequence[Part],
    *,
    label: str = "gpt",
    name: str = "src",
    seed: int = 3,
    garbage: bool = True,
    files: bool = True,
) -> None:
    """Partition ``image`` (garbage in free space), make the filesystems and
    fill them with files (``files``)."""
    size = (sum(p.mib for p in layout) + 2 + (len(layout) if label == "dos" else 0)) * MIB
    with open(image, "wb") as f:
        f.truncate(size)
    if garbage:
        fill_random(image, size, seed)
    partition(image, layout, label)
    with loop_device(image) as dev:
        for node, p in zip(part_nodes(dev, label, len(layout)), layout, strict=True):
            make_fs(node, p.fstype, f"{name}{p.fstype}", p.options)
            if files:
                fill(node, p.fstype, seed + len(p.fstype))


def part_nodes(dev: str, label: str, count: int) -> list[str]:
    """The partition nodes in layout order (MBR logicals are numbered from 5)."""
    if label == "gpt":
        return [f"{dev}p{i}" for i in range(1, count + 1)]
    return [f"{dev}p1"] + [f"{dev}p{i}" for i in range(5, 4 + count)]
