"""Filesystem-level checks of the target after the copy (used mode).

Reading back what was sent proves the target holds what the sender sent; it
cannot notice that the map left out something the filesystem needs. So after
the read-back, with nothing writing the target any more, each partition is
checked from the target itself, all partitions in parallel:

- ``blkid -p`` must see what it saw on the source partition (the plan carries
  the source's values): the same filesystem, UUID and label, nothing
  ambivalent;
- the filesystem's own read-only checker must find it clean: ``e2fsck -fn``,
  ``xfs_repair -n``, ``btrfs check --readonly``, ``ntfsfix -n``,
  ``fsck.vfat -n``, ``fsck.exfat -n``, ``fsck.f2fs --dry-run``. It runs only
  where ``blkid -p`` saw the source's filesystem.

What is checked came from the peer, and the machine being rescued may be
hostile: its bytes are never mounted (the kernel parses no filesystem the
peer wrote; a Btrfs's DUP copies are checked by the read-back, as the map
copies every allocated chunk), each checker is a user-space program run with
a memory bound (:data:`MEMORY_SHARE` of this machine's RAM), a time bound
that grows with the partition (:func:`time_limit`) and, as root, no network
(a network namespace of its own), and a plan names at most
:data:`MAX_PARTS` partitions (the receiver refuses more).

Each check runs on a device holding exactly the partition: the kernel's node
when it exists, else a read-only loop device over the region. A failure is
reported in the checker's own words and makes the clone "verification
failed", unless the same checker fails on the source partition too (the
sender checks, see :func:`check_source`): the copy is then as faithful as
its source. A checker that is not installed is reported as not run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from recovery import run
from recovery.disks import partdev, signatures
from recovery.errors import RecoveryError, VerificationError
from recovery.protocol.limits import MAX_PARTS
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
PACKAGES = {
    "e2fsck": "e2fsprogs",
    "xfs_repair": "xfsprogs",
    "btrfs": "btrfs-progs",
    "ntfsfix": "ntfs-3g",
    "fsck.vfat": "dosfstools",
    "fsck.exfat": "exfatprogs",
    "fsck.f2fs": "f2fs-tools",
}
MAX_PARALLEL = 8
WORDS = 600  # characters of a checker's output kept for the user
MEMORY_SHARE = 2  # a checker may use at most 1/MEMORY_SHARE of this machine's RAM
KEEP_OUTPUT = 64 << 10  # bytes of a checker's output kept (the end: where it says what it found)
MIN_SECONDS = 120.0
SECONDS_PER_BYTE = 1 / (100 << 20)  # ... plus a second per 100 MiB of the partition


def _words(proc_out: bytes, proc_err: bytes) -> str:
    lines = [line.strip() for line in (proc_out + b"\n" + proc_err).decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    return " / ".join(lines[-4:])[-WORDS:]


def _label(argv: Sequence[str]) -> str:
    short = {"-f -n": "-fn"}
    flags = " ".join(argv[1:])
    return f"{argv[0]} {short.get(flags, flags)}".strip()


def time_limit(size: int) -> float:
    """Seconds a checker may take on a partition of ``size`` bytes."""
    return MIN_SECONDS + size * SECONDS_PER_BYTE


def check_signature(dev: str, part: MapPart) -> FsCheck:
    """``blkid -p`` on ``dev`` (the partition, lent by :func:`partdev.private_region`), confined, against the
    source's values."""
    found = signatures.blkid(dev, 0, part.size, confine=run.ram_share(MEMORY_SHARE))
    same = found == tuple(part.blkid)
    message = (
        "same as the source"
        if same
        else (f"source: {signatures.describe(part.blkid)}; target: {signatures.describe(found)}")
    )
    return FsCheck(number=part.number, check="blkid -p", ok=same, message=message[:1000])


def checker_name(fstype: str | None) -> str | None:
    """How the check of a filesystem is named in :class:`FsCheck` (``e2fsck -fn``), if there is one."""
    argv = CHECKERS.get(fstype or "")
    return _label(argv) if argv else None


def check_filesystem(path: str, part: MapPart, *, signature: bool = False) -> list[FsCheck]:
    """The partition of ``path`` checked from a device lent for it alone (see the module): ``blkid -p``
    against the source's values first when ``signature``, then the filesystem's own read-only checker,
    unless blkid saw something else there."""
    argv = CHECKERS.get(part.fstype or "")
    if argv is None and not (signature and part.blkid):
        return []
    name = _label(argv) if argv else ""
    with partdev.private_region(path, part.start, part.size) as dev:
        if dev is None:
            why = "not run: no device for the partition (loop devices need root)"
            return [FsCheck(number=part.number, check=name or "blkid -p", ok=None, message=why)]
        out = [check_signature(dev, part)] if signature and part.blkid else []
        if argv is None:
            return out
        if out and not out[0].ok:
            why = "not run: blkid -p does not see the source's filesystem there"
            return [*out, FsCheck(number=part.number, check=name, ok=None, message=why)]
        return [*out, _run_checker(argv, name, dev, part)]


def _run_checker(argv: tuple[str, ...], name: str, dev: str, part: MapPart) -> FsCheck:
    if run.find_tool(argv[0]) is None:
        why = f"not run: {argv[0]} is not installed (Debian package {PACKAGES[argv[0]]})"
        return FsCheck(number=part.number, check=name, ok=None, message=why)
    limit = time_limit(part.size)
    command = run.confined([run.need_tool(argv[0]), *argv[1:], dev], memory=run.ram_share(MEMORY_SHARE))
    try:
        proc = run.run(command, check=False, timeout=limit, keep=KEEP_OUTPUT)
    except RecoveryError:
        return FsCheck(
            number=part.number, check=name, ok=False, message=f"did not finish within {limit:.0f} s (stopped)"
        )
    ok = proc.returncode == 0
    said = "clean" if ok else f"exit {proc.returncode}: {_words(proc.stdout, proc.stderr)}"
    return FsCheck(number=part.number, check=name, ok=ok, message=said)


def check_source(path: str, parts: Sequence[MapPart], failed: Sequence[FsCheck]) -> list[FsCheck]:
    """The sender's side: the checkers that failed on the target, run on the source's own partitions
    (read-only), so a filesystem that was already damaged is told from a bad copy."""
    by_number = {p.number: p for p in parts}
    out: list[FsCheck] = []
    for check in {(c.number, c.check): c for c in failed}.values():  # each at most once
        part = by_number.get(check.number)
        if part is None or checker_name(part.fstype) != check.check:
            out.append(FsCheck(number=check.number, check=check.check, ok=None, message="not a check of this plan"))
            continue
        out.extend(check_filesystem(path, part))
    return out


def explained(target: FsCheck, source: FsCheck | None) -> FsCheck:
    """A check that failed on the target, given how the same check went on the source."""
    if source is None or source.ok is not False:
        return target
    fs = target.check.split()[0]
    return FsCheck(
        number=target.number,
        check=target.check,
        ok=target.ok,
        source_fails=True,
        message=f"the source fails the same check ({fs}): copied as it is; on the source: {source.message}"[:1000],
    )


def check_target(path: str, parts: Sequence[MapPart]) -> list[FsCheck]:
    """Every check of every partition, the partitions in parallel; in partition order."""
    if len(parts) > MAX_PARTS:
        raise VerificationError(f"the plan names {len(parts)} partitions, more than {MAX_PARTS}")
    results: list[FsCheck] = []
    workers = max(1, min(MAX_PARALLEL, len(parts), (os.cpu_count() or 1) * 2))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fscheck") as pool:
        for found in pool.map(lambda p: check_filesystem(path, p, signature=True), parts):
            results.extend(found)
    return sorted(results, key=lambda c: c.number)


def failures(checks: Sequence[FsCheck]) -> list[FsCheck]:
    """The checks that fail the copy: failed on the target, and not because the source fails them too."""
    return [c for c in checks if c.ok is False and not c.source_fails]


def damage_found(check: FsCheck, parts: Sequence[MapPart]) -> str:
    """A checker that failed on the copy of a source that could not be read everywhere: a finding about
    the source's filesystem, not about the copy."""
    fstype = next((p.fstype for p in parts if p.number == check.number and p.fstype), "filesystem")
    where = f"partition {check.number}" if check.number else "the source"
    return (
        f"{where}: the source's {fstype} is damaged: {check.check} finds errors on the copy, which holds all "
        f"that could be read of it ({check.message})"
    )[:1000]


def describe(check: FsCheck) -> str:
    where = f"partition {check.number}" if check.number else "the filesystem"
    verdict = (
        "fails as on the source" if check.source_fails else {True: "ok", False: "FAILED", None: "not run"}[check.ok]
    )
    return f"{where}: {check.check} {verdict}" + (f" ({check.message})" if check.message else "")


def failure_error(checks: Sequence[FsCheck], target: str) -> VerificationError:
    bad = failures(checks)
    return VerificationError(
        f"the copy on {target} is not a faithful filesystem: " + "; ".join(describe(c) for c in bad),
        hint="the map of used blocks missed something: copy it again with --mode exact, "
        "and report this (if the source's filesystem is damaged itself, its checker says so too)",
    )
