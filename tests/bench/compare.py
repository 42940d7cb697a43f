"""Benchmark: usb4-recovery against the pipelines people use today, in one run.

    python -m tests.bench.compare [--dir DIR] [--runs N] [--no-shaped] [--no-sparse]
                                  [--encryption-only | --journal-only | --images-only]

As root. Makes the standard bench disk (tests/bench/benchdisk.py) on tmpfs,
so every contender reads a warm page cache, and clones it between two local
processes over loopback TCP onto the same target, a loop device over a
preallocated tmpfs file (a "disk"):

- ours, used mode, verified; ours, exact mode, verified;
- classic: dd bs=4M | zstd -1 -T0 | nc  ->  nc -l | zstd -d | dd conv=fsync,
  then b3sum of the source and of the target read past the page cache
  (dd iflag=direct): the check a careful user adds;
- Clonezilla's path: partclone.ext4 -c | zstd -1 -T0 | nc  ->  nc -l |
  zstd -d | partclone.ext4 -r (no end-to-end hash);
- this machine's limit: the slowest of reading the source, writing and
  flushing the target with O_DIRECT, and reading it back with O_DIRECT (dd),
  scaled to the bytes each mode copies.

Every contender runs once untimed (the VM's first touch of memory is slow)
and then ``--runs`` times; the table shows the best and the median. Ours are
timed to the end of their read-back verification, the others to the end of
their commands; note that plain dd and partclone leave data in the page cache
unflushed, while ours flushes and reads back from the device.

Also: CPU time per GiB with 1 and 2 workers on each side; peak RSS of each
of our processes (4 GiB disk, and a 16 GiB sparse one); a 64 GiB sparse disk
with one small partition cloned in used mode onto a loop device over a sparse
file (time, and what the target allocated); ``--level auto`` against raw on
loopback, and on a veth pair between two network namespaces shaped to
1 Gbit/s; and images: a save over loopback against the clone of the same
disk, the image's size against Clonezilla's partclone | zstd -1, verify's
rate, a local restore against the clone, and a mount of the 64 GiB sparse
disk's image (open time, random 4 KiB reads, a sequential read). Prints a report; these are
figures, not pass/fail tests.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench import bigdisk
from tests.helpers import CODE

REPO = Path(__file__).resolve().parents[2]
GIB = 1 << 30
PORT = 7611
PARTCLONE_QUIET = "-q -f 0"  # no progress thread delay (see recovery/disks/usedmap.py)


def sh(cmd: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True, text=True, capture_output=True, **kw)


@dataclass
class Run:
    seconds: float
    rss_kib: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    cpu: float = 0.0  # user + system seconds of our processes


def _wait(proc: subprocess.Popen[bytes]) -> tuple[int, int, float]:
    """(exit code, peak RSS in KiB, CPU seconds) of a child, via wait4."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


def recovery(args: list[str], netns: str | None = None, cpu: int | None = None) -> subprocess.Popen[bytes]:
    """``recovery ARGS --json`` (``cpu``: on that processor only, as on a machine of one core)."""
    argv = [sys.executable, "-m", "recovery", *args, "--json"]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    return subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)}
    )


def _events(proc: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    assert proc.stdout is not None
    return [json.loads(line) for line in proc.stdout.read().splitlines() if line.startswith(b"{")]


def ours(
    source: str,
    target: str,
    mode: str,
    *,
    level: str = "auto",
    netns: tuple[str, str] | None = None,
    address: str = "127.0.0.1",
    workers: int | None = None,
    encrypt: bool = True,
    journal: bool = True,
    image: str | None = None,
    apart: bool = False,
    delta: bool = False,
    extra_send: tuple[str, ...] = (),
) -> Run:
    """One clone onto ``target``, or (``image``) a save into that image file. ``apart``: the sender on the
    first processor and the receiver on the second, as two machines would each have their own;
    ``delta``: take the target's record of the last clone (else every clone is a whole one, as the
    runs of a comparison must be); ``extra_send``: more of the sender's options."""
    more = ["--workers", str(workers)] if workers else []
    rx = recovery(
        [
            "receive",
            "--code",
            CODE,
            *(("--image", image) if image else ("--target", target)),
            "--listen",
            f"{address}:{PORT}",
            "--yes",
            *more,
            *([] if journal else ["--no-journal"]),
        ],
        netns[1] if netns else None,
        1 if apart else None,
    )
    assert rx.stdout is not None
    line = rx.stdout.readline()  # the "listening" event
    if b"listening" not in line:
        raise RuntimeError(f"receiver did not start: {line!r} {rx.stderr.read() if rx.stderr else ''}")
    start = time.monotonic()
    tx = recovery(
        [
            "send",
            "--code",
            CODE,
            "--source",
            source,
            "--to",
            f"{address}:{PORT}",
            "--mode",
            mode,
            "--level",
            level,
            *more,
            *([] if encrypt else ["--no-encrypt"]),
            *([] if delta else ["--no-delta"]),
            *extra_send,
        ],
        netns[0] if netns else None,
        0 if apart else None,
    )
    tx_events = _events(tx)
    tx_code, tx_rss, tx_cpu = _wait(tx)
    rx_events = _events(rx)
    rx_code, rx_rss, rx_cpu = _wait(rx)
    seconds = time.monotonic() - start
    if tx_code or rx_code:
        err = tx.stderr.read().decode() if tx.stderr else ""
        raise RuntimeError(f"clone failed ({tx_code}, {rx_code}): {err} {rx_events[-1:]}")
    summary = next(e for e in tx_events if e["event"] == "summary")
    rx_summary = next(e for e in rx_events if e["event"] == "summary")
    assert summary["verified"] and rx_summary["verified"] and summary["list_digest"] == rx_summary["list_digest"]
    phases = {e["name"]: e["time"] for e in tx_events if e["event"] == "phase"}
    transfer = phases["verify"] - phases["transfer"]
    levels = [e["level"] for e in tx_events if e["event"] == "progress" and e.get("level")]
    plan = next(e for e in tx_events if e["event"] == "plan")
    return Run(
        seconds,
        {"sender": tx_rss, "receiver": rx_rss},
        {
            "bytes_read": summary["bytes_read"],
            "wire": summary["bytes_sent"],
            "transfer_s": transfer,
            "image_digest": summary["image_digest"],
            "levels": levels,
            "to_send": plan["to_send"],
            "unchanged": summary["unchanged"],
            "events": tx_events,
        },
        cpu=tx_cpu + rx_cpu,
    )


def classic(source: str, target: str) -> Run:
    rx = subprocess.Popen(
        [
            "bash",
            "-o",
            "pipefail",
            "-c",
            f"nc -l 127.0.0.1 {PORT} | zstd -d -q | dd of={target} bs=4M conv=fsync status=none",
        ]
    )
    time.sleep(0.3)
    start = time.monotonic()
    sh(f"dd if={source} bs=4M status=none | zstd -1 -T0 -q | nc -N 127.0.0.1 {PORT}")
    if rx.wait() != 0:
        raise RuntimeError("classic receiver failed")
    # The target is exactly as large as the source; O_DIRECT reads past the page cache.
    digests = [
        sh(f"b3sum --no-names {source}").stdout.strip(),
        sh(f"dd if={target} iflag=direct bs=4M status=none | b3sum --no-names").stdout.strip(),
    ]
    seconds = time.monotonic() - start
    assert digests[0] == digests[1], "classic copy differs"
    return Run(seconds, extra={"image_digest": digests[0]})


def clonezilla(source: str, target: str) -> Run:
    rx = subprocess.Popen(
        [
            "bash",
            "-o",
            "pipefail",
            "-c",
            f"nc -l 127.0.0.1 {PORT} | zstd -d -q | partclone.ext4 -r -s - -o {target} {PARTCLONE_QUIET} -L /dev/null",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    start = time.monotonic()
    sh(
        f"partclone.ext4 -c -s {source} -o - {PARTCLONE_QUIET} -L /dev/null 2>/dev/null"
        f" | zstd -1 -T0 -q | nc -N 127.0.0.1 {PORT}"
    )
    if rx.wait() != 0:
        raise RuntimeError("clonezilla receiver failed")
    return Run(time.monotonic() - start)


def make_apart(module: str, path: Path) -> None:
    """Make a disk in a child process: the memory it takes would otherwise count
    in the peak RSS of every process this one starts later (until exec)."""
    subprocess.run(
        [sys.executable, "-m", module, str(path)], cwd=REPO, check=True, env={**os.environ, "PYTHONPATH": str(REPO)}
    )


def dd_rate(argv: str, nbytes: int) -> float:
    """Bytes per second of one dd run (best of two)."""
    best = 0.0
    for _ in range(2):
        start = time.monotonic()
        sh(argv)
        best = max(best, nbytes / (time.monotonic() - start))
    return best


def machine_limit(source: str, target: str, size: int) -> dict[str, float]:
    """This machine's rates for what every clone must do at least once."""
    count = size // (4 << 20)
    return {
        "read_source": dd_rate(f"dd if={source} of=/dev/null bs=4M status=none", size),
        "write_target_direct_fsync": dd_rate(
            f"dd if={source} of={target} bs=4M oflag=direct conv=fsync,notrunc count={count} status=none", size
        ),
        "read_target_direct": dd_rate(f"dd if={target} of=/dev/null iflag=direct bs=4M status=none", size),
    }


def sparse_used(workdir: Path) -> dict[str, Any]:
    """The 64 GiB sparse disk with a small partition, used mode, onto a thin loop device."""
    source, thin = workdir / "big64.img", workdir / "thin64.img"
    if not source.exists():
        make_apart("tests.bench.bigdisk", source)
    thin.unlink(missing_ok=True)
    with open(thin, "wb") as f:
        f.truncate(bigdisk.SIZE)
    try:
        with loop_over(source) as src, loop_over(thin) as dst:
            sh(f"partx --add {src}")
            try:
                used = bigdisk.used_bytes(f"{src}p1")
                r = ours(src, dst, "used")
            finally:
                subprocess.run(["partx", "--delete", src], check=False)
        allocated = bigdisk.allocated(thin)
    finally:
        thin.unlink(missing_ok=True)
    return {
        "seconds": round(r.seconds, 2),
        "fs_used_MiB": round(used / 2**20, 1),
        "read_MiB": round(r.extra["bytes_read"] / 2**20, 1),
        "allocated_MiB": round(allocated / 2**20, 1),
        "allocated_per_used": round(allocated / used, 2),
    }


@contextmanager
def loop_over(path: Path) -> Iterator[str]:
    dev = sh(f"losetup --find --show {path}").stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "--detach", dev], check=False)


@contextmanager
def shaped_link(rate: str = "1gbit") -> Iterator[tuple[str, str, str]]:
    """Two namespaces joined by a veth pair shaped to ``rate`` each way."""
    a, b = "u4bench-a", "u4bench-b"
    try:
        for ns in (a, b):
            sh(f"ip netns add {ns}")
            sh(f"ip -n {ns} link set lo up")
        sh(f"ip link add u4a netns {a} type veth peer name u4b netns {b}")
        sh(f"ip -n {a} addr add 10.211.0.1/24 dev u4a && ip -n {a} link set u4a up")
        sh(f"ip -n {b} addr add 10.211.0.2/24 dev u4b && ip -n {b} link set u4b up")
        for ns, dev in ((a, "u4a"), (b, "u4b")):
            sh(f"ip netns exec {ns} tc qdisc add dev {dev} root tbf rate {rate} burst 1mb latency 50ms")
        yield a, b, "10.211.0.2"
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


def timed(label: str, fn: Callable[[], Run], runs: int) -> dict[str, Any]:
    fn()  # warm-up, untimed
    results = [fn() for _ in range(runs)]
    best = min(results, key=lambda r: r.seconds)
    out = {
        "label": label,
        "best": round(best.seconds, 2),
        "median": round(statistics.median(r.seconds for r in results), 2),
        "rss_kib": best.rss_kib,
        **{k: v for k, v in best.extra.items() if k != "levels"},
    }
    print(
        f"  {label:<34} best {out['best']:6.2f} s   median {out['median']:6.2f} s"
        + (f"   peak RSS {best.rss_kib}" if best.rss_kib else ""),
        flush=True,
    )
    return out


def encryption_cost(src: str, target: str, runs: int) -> dict[str, Any]:
    """Encrypted against --no-encrypt, in turns (so the machine's load hits both alike)."""
    out: dict[str, Any] = {}
    for mode in ("used", "exact"):
        on: list[Run] = []
        off: list[Run] = []
        for _ in range(runs):
            on.append(ours(src, target, mode, level="0"))
            off.append(ours(src, target, mode, level="0", encrypt=False))
        best_on, best_off = min(r.seconds for r in on), min(r.seconds for r in off)
        cpu_on, cpu_off = min(r.cpu for r in on), min(r.cpu for r in off)
        out[mode] = {
            "encrypted_s": round(best_on, 2),
            "plain_s": round(best_off, 2),
            "time_ratio": round(best_on / best_off, 3),
            "encrypted_cpu_s": round(cpu_on, 2),
            "plain_cpu_s": round(cpu_off, 2),
            "cpu_ratio": round(cpu_on / cpu_off, 3),
        }
    return out


def journal_writes(frames: int, batch: int, logs: Path) -> dict[str, float]:
    """The journal alone, as a clone of ``frames`` chunks drives it (an ack every ``batch`` frames): the
    time the receiver's writing thread spends in it (its critical path), and its own thread's."""
    from recovery.engine.clone.framelist import FrameList
    from recovery.engine.clone.recvpipe import DurablePoint
    from recovery.engine.resume.journal import Journal

    journal = Journal(logs / "bench.journal", os.urandom(32))
    framelist = FrameList()
    caller = 0.0
    acks = 0
    for first in range(0, frames, batch):
        for i in range(first, min(frames, first + batch)):
            framelist.append(i << 22, 4 << 20, os.urandom(32), 0)
        started = time.perf_counter()
        journal.durable(DurablePoint(len(framelist), framelist.covered, first), framelist, then=lambda: None)
        caller += time.perf_counter() - started
        acks += 1
    journal.drain()
    busy = journal.busy
    journal.remove()
    return {"acks": acks, "writer_thread_s": round(caller, 4), "journal_thread_s": round(busy, 4)}


def journal_cost(src: str, target: str, runs: int) -> dict[str, Any]:
    """The resume journal against --no-journal, in turns (ABBA, so a load that drifts hits both alike).
    The logs (and so the journal, flushed before every ack) live on the disk the repository is on, not
    tmpfs, so its fsyncs cost what they cost. Both the whole run and the transfer phase alone; and
    the journal alone for as many frames and acks as those clones had."""
    out: dict[str, Any] = {}
    logs = Path(os.environ.setdefault("USB4_RECOVERY_LOG_DIR", "/var/tmp/usb4-recovery-bench-logs"))
    logs.mkdir(parents=True, exist_ok=True)
    for mode in ("used", "exact"):
        first = ours(src, target, mode)  # warm-up, untimed
        on: list[Run] = []
        off: list[Run] = []
        for i in range(runs):
            for journal in (True, False) if i % 2 == 0 else (False, True):
                (on if journal else off).append(ours(src, target, mode, journal=journal))
        row: dict[str, Any] = {"runs": runs}
        for what, get in (("total", lambda r: r.seconds), ("transfer", lambda r: r.extra["transfer_s"])):
            a, b = [get(r) for r in on], [get(r) for r in off]
            row[what] = {
                "journal_median_s": round(statistics.median(a), 3),
                "no_journal_median_s": round(statistics.median(b), 3),
                "ratio_median": round(statistics.median(a) / statistics.median(b), 3),
                "ratio_best": round(min(a) / min(b), 3),
            }
        frames = -(-first.extra["to_send"] // (4 << 20))
        transfer = row["transfer"]["no_journal_median_s"]
        batch = max(1, int(frames / max(1.0, transfer / 2.0)))  # an ack every 2 s (or 256 MiB, 64 chunks)
        alone = journal_writes(frames, min(batch, 64), logs)
        alone["writer_share_of_transfer"] = round(alone["writer_thread_s"] / transfer, 5)
        row["journal_alone"] = alone
        out[mode] = row
        print(f"  {mode}: {row}", flush=True)
    return out


@contextmanager
def drive(workdir: Path, size: int) -> Iterator[Path]:
    """A folder on an ext4 "drive" of the same kind as the clone's target: a loop device over a
    preallocated tmpfs file. (A new file on tmpfs itself costs the writer a page allocation per 4 KiB,
    which this VM makes 15x slower than a copy; a disk's writes never pay that.)"""
    backing = workdir / "drive.img"
    mountpoint = workdir / "drive"
    mountpoint.mkdir(exist_ok=True)
    sh(f"fallocate -l {size} {backing}")
    try:
        with loop_over(backing) as dev:
            sh(f"mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 {dev}")
            sh(f"mount {dev} {mountpoint}")
            try:
                yield mountpoint
            finally:
                subprocess.run(["umount", str(mountpoint)], check=False)
    finally:
        backing.unlink(missing_ok=True)


def image_cost(src: str, target: str, workdir: Path, runs: int) -> dict[str, Any]:
    """Images against clones of the same disk, in turns: saving over the link (onto a drive like the
    clone's target) against a disk-to-disk clone, the image's size against Clonezilla's
    (partclone | zstd -1), verify's rate, and a restore on this machine against the clone."""
    with drive(workdir, os.path.getsize(src) + GIB) as folder:
        return _image_cost(src, target, workdir, folder, runs)


def _image_cost(src: str, target: str, workdir: Path, folder: Path, runs: int) -> dict[str, Any]:
    img = folder / "bench.u4img"
    out: dict[str, Any] = {}
    for mode in ("exact", "used"):  # the used image stays, for what follows
        clone, save, clone_apart, save_apart = [], [], [], []
        for _ in range(runs):
            clone.append(ours(src, target, mode))
            save.append(ours(src, target, mode, image=str(img)))
            clone_apart.append(ours(src, target, mode, apart=True))
            save_apart.append(ours(src, target, mode, image=str(img), apart=True))
        best_clone, best_save = min(r.seconds for r in clone), min(r.seconds for r in save)
        apart_clone, apart_save = min(r.seconds for r in clone_apart), min(r.seconds for r in save_apart)
        out[mode] = {
            "clone_s": round(best_clone, 2),
            "save_s": round(best_save, 2),
            "save_vs_clone": round(best_clone / best_save, 2),
            # each side on a processor of its own, as on two machines (taskset)
            "apart_clone_s": round(apart_clone, 2),
            "apart_save_s": round(apart_save, 2),
            "apart_save_vs_clone": round(apart_clone / apart_save, 2),
            "image_bytes": img.stat().st_size,
            "save_peak_rss_kib": max(r.rss_kib["receiver"] for r in save),
        }
    partclone = int(
        sh(
            f"partclone.ext4 -c -s {src} -o - {PARTCLONE_QUIET} -L /dev/null 2>/dev/null | zstd -1 -T0 -q | wc -c"
        ).stdout.strip()
    )
    out["clonezilla_image_bytes"] = partclone
    out["used_image_vs_clonezilla"] = round(out["used"]["image_bytes"] / partclone, 3)

    def timed_cli(*args: str) -> tuple[float, list[dict[str, Any]]]:
        start = time.monotonic()
        proc = recovery(list(args))
        events = _events(proc)
        code, _, _ = _wait(proc)
        if code:
            raise RuntimeError(f"recovery {args[0]} {args[1]} failed ({code}): {events[-1:]}")
        return time.monotonic() - start, events

    verify = []
    for _ in range(runs):
        seconds, events = timed_cli("image", "verify", str(img))
        checked = next(e for e in events if e["event"] == "image_check")
        verify.append((seconds, checked["data_bytes"]))
    seconds, data = min(verify)
    out["verify_data_GBps"] = round(data / seconds / 1e9, 2)
    restore = [timed_cli("image", "restore", str(img), "--target", target, "--yes")[0] for _ in range(runs)]
    out["restore_s"] = round(min(restore), 2)
    out["restore_vs_clone"] = round(out["used"]["clone_s"] / out["restore_s"], 2)
    img.unlink()
    out["mount"] = mount_cost(workdir)
    return out


def mount_cost(workdir: Path, reads: int = 2000) -> dict[str, Any]:
    """`recovery image mount` of the 64 GiB sparse disk's image (used mode): the time until the disk
    and its filesystem are up, random 4 KiB reads of the disk file (p50, p99), a sequential read of it."""
    source, img, mnt = workdir / "big64.img", workdir / "big64.u4img", workdir / "mnt"
    if not source.exists():
        make_apart("tests.bench.bigdisk", source)
    img.unlink(missing_ok=True)
    saved = recovery(["image", "save", "--source", str(source), "--output", str(img)])
    if _wait(saved)[0]:
        raise RuntimeError("the image of the 64 GiB disk could not be saved")
    mnt.mkdir(exist_ok=True)
    start = time.monotonic()
    proc = recovery(["image", "mount", str(img), str(mnt)])
    assert proc.stdout is not None
    try:
        while b"image_mount" not in (line := proc.stdout.readline()):
            if not line:
                raise RuntimeError("the mount did not come up")
        opened = time.monotonic() - start
        disk = mnt / "disk"
        size = disk.stat().st_size
        rng = random.Random(7)
        fd = os.open(disk, os.O_RDONLY)
        try:
            times = []
            for _ in range(reads):
                at = rng.randrange(size // 4096) * 4096
                t = time.perf_counter()
                os.pread(fd, 4096, at)
                times.append(time.perf_counter() - t)
        finally:
            os.close(fd)
        times.sort()
        seq_bytes = bigdisk.PART_MIB << 20  # the partition's stretch: its files, and its free space
        Path("/proc/sys/vm/drop_caches").write_text("3")  # read through FUSE, not from the page cache
        t = time.monotonic()
        sh(f"dd if={disk} of=/dev/null bs=4M count={seq_bytes >> 22} status=none")
        seq = seq_bytes / (time.monotonic() - t)
    finally:
        proc.send_signal(2)
        proc.wait(60)
    return {
        "disk_GiB": size // GIB,
        "image_MiB": img.stat().st_size >> 20,
        "open_s": round(opened, 2),
        "random_4k_p50_ms": round(times[len(times) // 2] * 1000, 2),
        "random_4k_p99_ms": round(times[len(times) * 99 // 100] * 1000, 2),
        "sequential_MBps": round(seq / 1e6),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, default=Path("/dev/shm/usb4-recovery-bench"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--no-shaped", action="store_true", help="skip the 1 Gbit/s shaped-link runs")
    p.add_argument("--no-sparse", action="store_true", help="skip the 16 GiB sparse disk")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument(
        "--encryption-only",
        action="store_true",
        help="only the cost of encrypting the data (encrypted against --no-encrypt)",
    )
    p.add_argument(
        "--journal-only",
        action="store_true",
        help="only the cost of the receiver's resume journal (against --no-journal)",
    )
    p.add_argument(
        "--images-only",
        action="store_true",
        help="only images against clones: save, size against Clonezilla's, verify, restore",
    )
    args = p.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    disk = args.dir / "bench-disk.img"
    if not disk.exists():
        print(f"making the bench disk {disk} ...", flush=True)
        tmp = disk.with_suffix(".tmp")
        make_apart("tests.bench.benchdisk", tmp)
        tmp.rename(disk)
    backing = args.dir / "target.img"
    if not backing.exists() or backing.stat().st_size != disk.stat().st_size:
        sh(f"fallocate -l {disk.stat().st_size} {backing}")
    report: dict[str, Any] = {"machine": os.uname().nodename, "cpus": os.cpu_count(), "contenders": []}
    print(
        f"{disk.stat().st_size / GIB:.0f} GiB bench disk on tmpfs; {os.cpu_count()} CPUs; {args.runs} timed runs each",
        flush=True,
    )
    with loop_over(backing) as target:
        src = str(disk)
        costs = (
            ("journal", "the resume journal: journal against --no-journal", journal_cost, args.journal_only),
            (
                "encryption",
                "encrypting the data: encrypted against --no-encrypt, raw level",
                encryption_cost,
                args.encryption_only,
            ),
            (
                "images",
                "images: saving against cloning, the size against Clonezilla's, verify, restore",
                lambda src, target, runs: image_cost(src, target, args.dir, runs),
                args.images_only,
            ),
        )
        only = [name for name, _, _, chosen in costs if chosen]
        for name, what, measure, _ in costs:
            if only and name not in only:
                continue
            print(f"the cost of {what}, in turns:", flush=True)
            report[name] = measure(src, target, args.runs)
            print(f"  {report[name]}", flush=True)
        if only:
            print(json.dumps(report, indent=2))
            return
        rows = report["contenders"]
        rows.append(timed("ours, used mode, verified", lambda: ours(src, target, "used"), args.runs))
        rows.append(timed("ours, exact mode, verified", lambda: ours(src, target, "exact"), args.runs))
        rows.append(timed("classic dd|zstd|nc + b3sum", lambda: classic(src, target), args.runs))
        rows.append(timed("Clonezilla partclone|zstd|nc", lambda: clonezilla(src, target), args.runs))
        by = {r["label"]: r for r in rows}
        used, exact = by["ours, used mode, verified"], by["ours, exact mode, verified"]
        cl, cz = by["classic dd|zstd|nc + b3sum"], by["Clonezilla partclone|zstd|nc"]
        assert exact["image_digest"] == cl["image_digest"], "exact mode and b3sum disagree"
        ratios = {
            "used_vs_clonezilla": round(cz["best"] / used["best"], 2),
            "used_vs_classic": round(cl["best"] / used["best"], 2),
            "exact_vs_classic": round(cl["best"] / exact["best"], 2),
        }
        report["ratios"] = ratios
        print(f"  ratios (theirs / ours, best runs): {ratios}", flush=True)

        size = disk.stat().st_size
        limit = machine_limit(src, target, size)
        slowest = min(limit.values())
        to_send = used["to_send"]
        report["limit"] = {k: round(v / 2**20) for k, v in limit.items()}
        report["limit_ratios"] = {
            "used_vs_limit": round(used["best"] / (to_send / slowest), 2),
            "exact_vs_limit": round(exact["best"] / (size / slowest), 2),
        }
        print(f"  this machine's limit (MiB/s): {report['limit']}; ours / limit: {report['limit_ratios']}", flush=True)

        print("CPU time per GiB copied, 1 and 2 workers on each side (best of the runs):", flush=True)
        cpu: dict[str, Any] = {}
        for mode in ("used", "exact"):
            for n in (1, 2):
                runs = [ours(src, target, mode, workers=n) for _ in range(args.runs)]
                best = min(runs, key=lambda r: r.cpu)
                moved = best.extra["to_send"] / 2**30
                cpu[f"{mode}_{n}"] = {
                    "cpu_s_per_GiB": round(best.cpu / moved, 2),
                    "seconds": round(min(r.seconds for r in runs), 2),
                }
        report["cpu_per_gib"] = cpu
        print(f"  {cpu}", flush=True)

        print("--level auto against raw on loopback (used mode, transfer phase only):", flush=True)
        auto = [ours(src, target, "used") for _ in range(args.runs)]
        raw = [ours(src, target, "used", level="0") for _ in range(args.runs)]
        report["loopback_levels"] = {
            "auto_transfer_s": round(min(r.extra["transfer_s"] for r in auto), 2),
            "raw_transfer_s": round(min(r.extra["transfer_s"] for r in raw), 2),
            "auto_levels_seen": sorted(set(auto[0].extra["levels"])),
        }
        print(f"  {report['loopback_levels']}", flush=True)

        if not args.no_shaped:
            print("1 Gbit/s shaped veth between two network namespaces (used mode):", flush=True)
            shaped: dict[str, Any] = {}
            with shaped_link() as (a, b, address):
                for level in ("auto", "0"):
                    r = ours(src, target, "used", level=level, netns=(a, b), address=address)
                    t = r.extra["transfer_s"]
                    shaped[level] = {
                        "transfer_s": round(t, 2),
                        "effective_MBps": round(r.extra["bytes_read"] / t / 1e6, 1),
                        "link_busy": round(r.extra["wire"] / t / 125e6, 3),
                        "ratio": round(r.extra["bytes_read"] / r.extra["wire"], 2),
                        "levels_seen": sorted(set(r.extra["levels"])),
                    }
                    print(f"  level {level}: {shaped[level]}", flush=True)
            report["shaped_1gbit"] = shaped

    if not args.no_sparse:
        print("16 GiB sparse disk (the bench disk, then 12 GiB of holes), exact mode, image file target:", flush=True)
        sparse = args.dir / "sparse16.img"
        sh(f"cp --sparse=always {disk} {sparse} && truncate -s 16G {sparse}")
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            r = ours(str(sparse), str(Path(tmp) / "copy.img"), "exact")
        sparse.unlink()
        report["sparse16"] = {"seconds": round(r.seconds, 2), "rss_kib": r.rss_kib}
        print(f"  {report['sparse16']}", flush=True)
        print("64 GiB sparse disk, one 1 GiB partition, used mode onto a loop device over a sparse file:", flush=True)
        report["sparse64_used"] = sparse_used(args.dir)
        print(f"  {report['sparse64_used']}", flush=True)

    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as e:
        sys.exit(f"bench: {shlex.join(e.cmd) if isinstance(e.cmd, list) else e.cmd} failed: {e.stderr}")
