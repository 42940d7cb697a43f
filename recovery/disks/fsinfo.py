"""What is on a filesystem, without mounting it: the space in use, and the system it holds.

The used space comes from each filesystem's own counters (ext2/3/4, XFS and
Btrfs superblocks, the FAT32 FSInfo sector or the FAT itself, exFAT's
allocation bitmap) read straight from the disk or image at the partition's
offset, or from ``ntfsinfo`` where the kernel made a node for an NTFS
partition; a mounted filesystem answers through ``statvfs``. The system is
named where that is cheap to tell: a Linux ``os-release`` read from an ext
filesystem with ``debugfs``, Windows from its boot loader on an EFI system
partition or its folder on NTFS. A disk with neither a partition table nor
a filesystem is sampled: all zeros, or data nothing here recognises.

The disks listed are this machine's, and a compromised machine's disk may be
crafted to attack the tool that parses it: every tool here reads a read-only
loop device over the partition alone, confined as for bytes a peer wrote
(:func:`on_region`); where none can be made (not root) the tool is not run.
"""

from __future__ import annotations

import os
import re
import shlex
import struct
import subprocess
from collections.abc import Callable, Mapping
from typing import NamedTuple

from recovery import run
from recovery.disks import partdev
from recovery.errors import RecoveryError

MIB = 1 << 20
SAMPLES = 14  # blocks read across a disk that shows nothing, besides its first and last MiB
SAMPLE = 64 << 10
MAX_FAT = 16 * MIB  # FAT bytes counted when FSInfo does not say (a FAT32 of 2 TiB has 1 GiB of them)
MAX_BITMAP = 64 * MIB  # exFAT allocation bitmap bytes counted
SMALL_FILE = 64 << 10  # bytes kept of a configuration file read from a disk
TOOL_TIMEOUT = 20  # seconds for a tool reading a disk (a damaged one may make it crawl)
TOOL_MEMORY = 512 << 20  # bytes of data a tool reading a disk may use


def on_region(
    argv_for: Callable[[str], list[str]],
    path: str,
    start: int,
    size: int,
    *,
    env: Mapping[str, str] | None = None,
    stdout: int | None = None,
) -> subprocess.CompletedProcess[bytes] | None:
    """Run ``argv_for(device)`` on the partition [start, start+size) of ``path``, given as a read-only loop
    device of its own, confined (:func:`recovery.run.confined`) and bounded in time and output; None when
    no such device can be made."""
    with partdev.private_region(path, start, size) as dev:
        if dev is None:
            return None
        tool = argv_for(dev)
        if stdout is None:  # it writes no file at all (a file it may write has a bound of its own)
            tool = [run.need_tool("prlimit", "util-linux"), "--fsize=0", "--", *tool]
        argv = run.confined(tool, memory=TOOL_MEMORY)
        out = subprocess.PIPE if stdout is None else stdout
        return run.run(argv, check=False, timeout=TOOL_TIMEOUT, env=env, stdout=out, keep=SMALL_FILE)


def _read(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


# --- used space -------------------------------------------------------------


def _ext(path: str, start: int, size: int) -> int | None:
    sb = _read(path, start + 1024, 1024)
    if len(sb) < 0x160 or struct.unpack_from("<H", sb, 0x38)[0] != 0xEF53:
        return None
    blocks, free = struct.unpack_from("<I", sb, 0x04)[0], struct.unpack_from("<I", sb, 0x0C)[0]
    block = 1024 << struct.unpack_from("<I", sb, 0x18)[0]
    if struct.unpack_from("<I", sb, 0x60)[0] & 0x80:  # 64bit: the high halves
        blocks |= struct.unpack_from("<I", sb, 0x150)[0] << 32
        free |= struct.unpack_from("<I", sb, 0x158)[0] << 32
    return (blocks - free) * block if free <= blocks else None


def _xfs(path: str, start: int, size: int) -> int | None:
    sb = _read(path, start, 0x98)
    if len(sb) < 0x98 or sb[:4] != b"XFSB":
        return None
    block, dblocks = struct.unpack_from(">IQ", sb, 4)
    fdblocks = struct.unpack_from(">Q", sb, 0x90)[0]
    return (dblocks - fdblocks) * block if fdblocks <= dblocks else None


def _btrfs(path: str, start: int, size: int) -> int | None:
    sb = _read(path, start + 0x10000, 0x80)
    if len(sb) < 0x80 or sb[0x40:0x48] != b"_BHRfS_M":
        return None
    return int(struct.unpack_from("<Q", sb, 0x78)[0])


def _fat(path: str, start: int, size: int) -> int | None:
    bpb = _read(path, start, 512)
    if len(bpb) < 512 or bpb[510:512] != b"\x55\xaa":
        return None
    bps, spc, reserved, nfats, root_entries, total16 = struct.unpack_from("<HBHBHH", bpb, 11)
    fat_size = struct.unpack_from("<H", bpb, 22)[0] or struct.unpack_from("<I", bpb, 36)[0]
    total = total16 or struct.unpack_from("<I", bpb, 32)[0]
    if not (bps and spc and nfats and fat_size):
        return None
    first_data = reserved + nfats * fat_size + (root_entries * 32 + bps - 1) // bps
    clusters = (total - first_data) // spc
    cluster = bps * spc
    if clusters <= 0:
        return None
    if clusters >= 65525:  # FAT32: FSInfo keeps the free count
        info = _read(path, start + struct.unpack_from("<H", bpb, 48)[0] * bps, 512)
        if len(info) == 512 and info[:4] == b"RRaA" and info[484:488] == b"rrAa":
            free = struct.unpack_from("<I", info, 488)[0]
            if free <= clusters:
                return int((clusters - free) * cluster)
        width = 4
    else:
        width = 2 if clusters >= 4085 else 0  # 0: FAT12, packed 12-bit entries
    fat_bytes = (clusters + 2) * width if width else (clusters + 2) * 3 // 2 + 1
    if fat_bytes > MAX_FAT:
        return None
    table = _read(path, start + reserved * bps, fat_bytes)
    if width == 4:
        entries = [e & 0x0FFFFFFF for e in struct.unpack_from(f"<{clusters + 2}I", table)]
    elif width == 2:
        entries = list(struct.unpack_from(f"<{clusters + 2}H", table))
    else:
        entries = [
            (int.from_bytes(table[n * 3 // 2 : n * 3 // 2 + 2], "little") >> (4 * (n & 1))) & 0xFFF
            for n in range(clusters + 2)
        ]
    return int(sum(1 for e in entries[2:] if e) * cluster)


class ExfatBoot(NamedTuple):
    """What an exFAT boot sector says (its offsets in bytes from the volume's start)."""

    heap: int  # the cluster heap's first byte
    clusters: int
    root: int  # the root folder's first cluster
    sector: int
    cluster: int  # bytes
    serial: int  # the volume serial (blkid's UUID)
    dirty: bool  # VolumeFlags' VolumeDirty: it was not unmounted cleanly


def exfat_boot(boot: bytes) -> ExfatBoot | None:
    """The exFAT boot sector ``boot`` (its first 512 bytes), None when it is not one."""
    if len(boot) < 512 or boot[3:11] != b"EXFAT   ":
        return None
    heap, clusters, root, serial = struct.unpack_from("<IIII", boot, 88)
    flags = struct.unpack_from("<H", boot, 106)[0]
    bps, spc = 1 << boot[108], 1 << boot[109]
    return ExfatBoot(heap * bps, clusters, root, bps, bps * spc, serial, bool(flags & 2))


def _exfat(path: str, start: int, size: int) -> int | None:
    b = exfat_boot(_read(path, start, 512))
    if b is None:
        return None

    def at(n: int) -> int:
        return int(start + b.heap + (n - 2) * b.cluster)

    entries = _read(path, at(b.root), min(b.cluster, 1 << 20))
    for i in range(0, len(entries) - 31, 32):
        if entries[i] == 0x81:  # the allocation bitmap's directory entry
            first, length = struct.unpack_from("<IQ", entries, i + 20)
            if length > MAX_BITMAP:
                return None
            bitmap = _read(path, at(first), min(length, (b.clusters + 7) // 8))
            used = sum(bin(x).count("1") for x in bitmap)
            return int(min(used, b.clusters) * b.cluster)
        if entries[i] == 0:
            break
    return None


def _ntfs(path: str, start: int, size: int) -> int | None:
    proc = on_region(lambda dev: [run.need_tool("ntfsinfo", "ntfs-3g"), "-m", "-f", dev], path, start, size)
    text = proc.stdout.decode(errors="replace") if proc else ""
    cluster = re.search(r"Cluster Size:\s*(\d+)", text)
    total = re.search(r"Volume Size in Clusters:\s*(\d+)", text)
    free = re.search(r"Free Clusters:\s*(\d+)", text)
    if not (cluster and total and free):
        return None
    return (int(total.group(1)) - int(free.group(1))) * int(cluster.group(1))


READERS: dict[str, Callable[[str, int, int], int | None]] = {
    "ext2": _ext,
    "ext3": _ext,
    "ext4": _ext,
    "xfs": _xfs,
    "btrfs": _btrfs,
    "vfat": _fat,
    "exfat": _exfat,
    "ntfs": _ntfs,
}


def used_bytes(path: str, start: int, size: int, fstype: str | None, *, mountpoint: str | None = None) -> int | None:
    """Bytes in use on the filesystem at ``start`` of ``path`` (None: it does not say here).

    ``mountpoint``: where it is mounted, when it is.
    """
    if mountpoint:
        try:
            st = os.statvfs(mountpoint)
            return (st.f_blocks - st.f_bfree) * st.f_frsize
        except OSError:
            return None
    try:
        reader = READERS.get(fstype or "")
        if reader is not None:
            return reader(path, start, size)
    except (OSError, struct.error, ValueError, IndexError, RecoveryError):
        return None
    return None


# --- the system on it ---------------------------------------------------------


def _os_release(text: str) -> str | None:
    values = dict(re.findall(r"^([A-Z_]+)=(.*)$", text, re.M))
    for key in ("PRETTY_NAME", "NAME"):
        if values.get(key):
            try:
                return " ".join(shlex.split(values[key]))[:80] or None
            except ValueError:
                return values[key].strip("\"'")[:80] or None
    return None


def debugfs_cat(path: str, start: int, size: int, name: str) -> str | None:
    """The text of file ``name`` in the ext filesystem at ``start`` of ``path`` (its last 64 KiB at
    most), read without mounting; None when it cannot be read."""
    proc = on_region(lambda dev: [run.need_tool("debugfs", "e2fsprogs"), "-R", f"cat {name}", dev], path, start, size)
    return proc.stdout.decode(errors="replace") if proc and proc.returncode == 0 else None


def _linux(path: str, start: int, size: int) -> str | None:
    for name in ("/etc/os-release", "/usr/lib/os-release"):
        found = _os_release(debugfs_cat(path, start, size, name) or "")
        if found:
            return found
    return None


def _boot_loaders(path: str, start: int, size: int) -> str | None:
    env = {"MTOOLS_SKIP_CHECK": "1"}
    proc = on_region(
        lambda dev: [run.need_tool("mdir", "mtools"), "-b", "-i", dev, "::/EFI"], path, start, size, env=env
    )
    said = proc.stdout.decode(errors="replace") if proc else ""
    names = {line.rstrip("/").rsplit("/", 1)[-1].lower() for line in said.split()}
    if "microsoft" in names:
        return "Windows"
    return None


def _windows_folder(path: str, start: int, size: int) -> str | None:
    proc = on_region(
        lambda dev: [run.need_tool("ntfsls", "ntfs-3g"), "-f", "-p", "/Windows/System32", dev], path, start, size
    )
    return "Windows" if proc and proc.returncode == 0 and proc.stdout.strip() else None


def detect_os(path: str, start: int, size: int, fstype: str | None) -> str | None:
    """The operating system a partition holds or boots, where cheap to tell (None: not found)."""
    try:
        if fstype in ("ext2", "ext3", "ext4"):
            return _linux(path, start, size)
        if fstype == "vfat":
            return _boot_loaders(path, start, size)
        if fstype == "ntfs":
            return _windows_folder(path, start, size)
    except RecoveryError:  # a tool is missing: say nothing rather than guess
        return None
    return None


# --- a disk that shows nothing -----------------------------------------------


def sampled_zeros(path: str, size: int) -> bool:
    """True when the first and last MiB and blocks spread over the disk are all zeros."""
    spots = [(0, min(MIB, size)), (max(0, size - MIB), min(MIB, size))]
    step = size // (SAMPLES + 1)
    spots += [(step * (i + 1) // SAMPLE * SAMPLE, SAMPLE) for i in range(SAMPLES) if step >= SAMPLE]
    with open(path, "rb") as f:
        for offset, length in spots:
            f.seek(offset)
            if f.read(length).strip(b"\0"):
                return False
    return True
