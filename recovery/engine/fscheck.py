"""Filesystem-level checks of the target after the copy (used mode).

Reading back what was sent proves the target holds what the sender sent; it
cannot notice that the map left out something the filesystem needs. So after
the read-back, with nothing writing the target any more, each partition is
checked from the target itself, all partitions in parallel:

- ``blkid -p`` must see what it saw on the source partition (the plan carries
  the source's values): the same filesystem, UUID and label, nothing
  ambivalent;
- the filesystem's own read-only checker must find it clean: ``e2fsck -fn``,
  ``xfs_repair -n``, ``btrfs check --readonly`` (and, when the filesystem has
  DUP block groups, a read-only scrub of a read-only mount, the only check
  that reads the second copies), ``ntfsfix -n``, ``fsck.vfat -n``,
  ``fsck.exfat -n``, ``fsck.f2fs --dry-run``.

Each check runs on a device holding exactly the partition: the kernel's node
when it exists, else a read-only loop device over the region. A failure is
reported in the checker's own words and makes the clone "verification
failed"; a checker that is not installed is reported as not run.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from recovery import run
from recovery.disks import partdev, signatures
from recovery.errors import VerificationError
from recovery.protocol.messages import FsCheck, MapPart

CHECKERS: dict[str, tuple[str, ...]] = {
    "ext2": ("e2fsck", "-f", "-n"),
    "ext3": ("e2fsck", "-f", "-n"),
    "ext4": ("e2fsck", "-f", "-n"),
    "xfs": ("xfs_repair", "-n"),
    "btrfs": ("btrfs", "check", "--readonly"),
    "ntfs": ("ntfsfix", "-n"),
    "vfat": ("fsck.vfat", "-n"),
    "exfat": ("fsck.exfat", "-n"),
    "f2fs": ("fsck.f2fs", "--dry-run"),
}
PACKAGES = {"e2fsck": "e2fsprogs", "xfs_repair": "xfsprogs", "btrfs": "btrfs-progs", "ntfsfix": "ntfs-3g",
            "fsck.vfat": "dosfstools", "fsck.exfat": "exfatprogs", "fsck.f2fs": "f2fs-tools"}
MAX_PARALLEL = 8
WORDS = 600  # characters of a checker's output kept for the user


def _words(proc_out: bytes, proc_err: bytes) -> str:
    lines = [line.strip() for line in (proc_out + b"\n" + proc_err).decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    return " / ".join(lines[-4:])[-WORDS:]


def _label(argv: Sequence[str]) -> str:
    short = {"-f -n": "-fn"}
    flags = " ".join(argv[1:])
    return f"{argv[0]} {short.get(flags, flags)}".strip()


def check_signature(path: str, part: MapPart) -> FsCheck:
    """``blkid -p`` on the target partition against the source's."""
    found = signatures.blkid(path, part.start, part.size)
    same = found == tuple(part.blkid)
    message = "same as the source" if same else (
        f"source: {signatures.describe(part.blkid)}; target: {signatures.describe(found)}")
    return FsCheck(number=part.number, check="blkid -p", ok=same, message=message[:1000])


def _has_dup(device: str) -> bool:
    proc = run.run(["btrfs", "inspect-internal", "dump-tree", "-t", "chunk", device], check=False)
    return b"|DUP" in proc.stdout


def _scrub(device: str, number: int) -> FsCheck:
    """A read-only scrub of a read-only mount: reads and checks both DUP copies."""
    name = "btrfs scrub -r"
    with tempfile.TemporaryDirectory(prefix="recovery-scrub-") as mnt:
        mount = run.run(["mount", "-t", "btrfs", "-o", "ro", device, mnt], check=False)
        if mount.returncode != 0:
            return FsCheck(number=number, check=name, ok=None,
                           message=f"could not mount it read-only: {_words(mount.stdout, mount.stderr)}")
        try:
            proc = run.run(["btrfs", "scrub", "start", "-B", "-r", mnt], check=False)
        finally:
            run.run(["umount", mnt], check=False)
    text = (proc.stdout + proc.stderr).decode(errors="replace")
    ok = proc.returncode == 0 and "no errors found" in text
    return FsCheck(number=number, check=name, ok=ok, message="clean" if ok else _words(proc.stdout, proc.stderr))


def check_filesystem(path: str, part: MapPart) -> list[FsCheck]:
    """The filesystem's own read-only checker on the target partition."""
    argv = CHECKERS.get(part.fstype or "")
    if argv is None:
        return []
    name = _label(argv)
    if run.find_tool(argv[0]) is None:
        return [FsCheck(number=part.number, check=name, ok=None,
                        message=f"not run: {argv[0]} is not installed (Debian package {PACKAGES[argv[0]]})")]
    with partdev.region_device(path, part.start, part.size) as dev:
        if dev is None:
            return [FsCheck(number=part.number, check=name, ok=None,
                            message="not run: no device for the partition (loop devices need root)")]
        proc = run.run([*argv, dev], check=False)
        ok = proc.returncode == 0
        out = [FsCheck(number=part.number, check=name, ok=ok,
                       message="clean" if ok else f"exit {proc.returncode}: {_words(proc.stdout, proc.stderr)}")]
        if ok and part.fstype == "btrfs" and _has_dup(dev):
            out.append(_scrub(dev, part.number))
    return out


def check_target(path: str, parts: Sequence[MapPart]) -> list[FsCheck]:
    """Every check of every partition, the checkers in parallel; in partition order."""
    # A sender that sends no blkid values (an older one) leaves nothing to compare.
    results: list[FsCheck] = [check_signature(path, p) for p in parts if p.blkid]
    workers = max(1, min(MAX_PARALLEL, len(parts), (os.cpu_count() or 1) * 2))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fscheck") as pool:
        for found in pool.map(lambda p: check_filesystem(path, p), parts):
            results.extend(found)
    return sorted(results, key=lambda c: c.number)


def failures(checks: Sequence[FsCheck]) -> list[FsCheck]:
    return [c for c in checks if c.ok is False]


def describe(check: FsCheck) -> str:
    where = f"partition {check.number}" if check.number else "the filesystem"
    verdict = {True: "ok", False: "FAILED", None: "not run"}[check.ok]
    return f"{where}: {check.check} {verdict}" + (f" ({check.message})" if check.message else "")


def failure_error(checks: Sequence[FsCheck], target: str) -> VerificationError:
    bad = failures(checks)
    return VerificationError(
        f"the copy on {target} is not a faithful filesystem: " + "; ".join(describe(c) for c in bad),
        hint="the map of used blocks missed something: copy it again with --mode exact, "
             "and report this (if the source's filesystem is damaged itself, its checker says so too)",
    )
