"""Benchmark: our rescue against GNU ddrescue on the same failing disk, in one run.

    python -m tests.bench.rescue [--size MIB] [--areas N] [--slow SECONDS] [--seed N] [--json FILE]

As root, with /dev/fuse and Debian's python3-fusepy and gddrescue. Makes a
random disk image with ``--areas`` bad areas of various sizes (lone sectors,
short runs, scratches where every few sectors are bad, a dead zone of a few
MiB), serves it through FUSE as a failing disk that gets slower after its
first error (tests/rescue/failing.py; a fresh server for each contender, so
both meet the same disk), and copies it:

- GNU ddrescue with its defaults and ``--idirect`` (past the page cache, as
  ours reads), into a file, with a new mapfile;
- ours: ``recovery send --rescue`` (defaults) to ``recovery receive`` on
  this machine over loopback TCP, onto a file.

For each: failed reads and bytes read as the disk saw them (its FUSE read
log), bytes rescued (finished in the final mapfile), wall time; and ours
over ddrescue's as ratios. Figures, not a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from recovery.engine.rescue.sectormap import FINISHED, read_mapfile
from tests.helpers import CODE, MIB, Recovery, fill_random
from tests.rescue.failing import FailingDisk, failing_disk

SECTOR = 512


def bad_areas(size: int, areas: int, rng: random.Random) -> list[int]:
    """The bad sectors of ``areas`` areas spread over a disk of ``size`` bytes (not in its first and last
    MiB, where both tools look at partition tables), of the kinds a dying disk has."""
    sectors = size // SECTOR
    lo, hi = MIB // SECTOR, sectors - MIB // SECTOR
    bad: set[int] = set()
    for i in range(areas):
        start = rng.randrange(lo, hi - 8192)
        kind = i % 5
        if kind in (0, 1):  # a lone sector
            bad.add(start)
        elif kind == 2:  # a short run
            bad.update(range(start, start + rng.randrange(2, 64)))
        elif kind == 3:  # a scratch: every few sectors over a stretch
            step = rng.randrange(3, 12)
            bad.update(range(start, start + rng.randrange(256, 2048), step))
        else:  # a dead zone of up to 4 MiB, rarely
            bad.update(range(start, start + rng.randrange(64, 8192 if i % 25 == 4 else 1024)))
    return sorted(bad)


def disk_said(disk: FailingDisk) -> dict[str, int]:
    reads = disk.reads()
    return {
        "failed_reads": sum(1 for _, _, ok in reads if not ok),
        "reads": len(reads),
        "bytes_read": sum(n for _, n, _ in reads),
    }


def rescued(mapfile: Path, size: int) -> int:
    return read_mapfile(mapfile, size)[0].total(FINISHED)


def ddrescue(disk: FailingDisk, work: Path, size: int) -> dict[str, Any]:
    out, mapfile = work / "ddrescue.img", work / "ddrescue.map"
    started = time.monotonic()
    subprocess.run(["ddrescue", "--quiet", "--idirect", disk.device, str(out), str(mapfile)], check=True)
    seconds = time.monotonic() - started
    return {"seconds": round(seconds, 2), **disk_said(disk), "rescued": rescued(mapfile, size)}


def ours(disk: FailingDisk, work: Path, size: int) -> dict[str, Any]:
    target, logs = work / "ours.img", work / "logs"
    rx = Recovery("receive", "--code", CODE, "--target", str(target), "--listen", "127.0.0.1:0", "--yes",
                  "--log-dir", str(logs / "rx"))  # fmt: skip
    port = rx.wait_event("listening")["port"]
    started = time.monotonic()
    tx = Recovery("send", "--code", CODE, "--source", disk.device, "--to", f"127.0.0.1:{port}",
                  "--mode", "exact", "--rescue", "--log-dir", str(logs / "tx"))  # fmt: skip
    codes = tx.wait(3600), rx.wait(60)
    seconds = time.monotonic() - started
    summary = tx.event("summary")
    if summary is None:
        raise RuntimeError(f"our rescue ended with {codes} and no summary: {tx.stderr}")
    return {"seconds": round(seconds, 2), **disk_said(disk), "rescued": rescued(Path(summary["mapfile"]), size)}


def run(size: int, areas: int, slow: float, seed: int, work: Path) -> dict[str, Any]:
    image = work / "source.img"
    fill_random(image, size, seed=seed)
    bad = bad_areas(size, areas, random.Random(seed))
    report: dict[str, Any] = {"size": size, "areas": areas, "bad_sectors": len(bad), "slow_after_error": slow}
    for name, contender in (("ddrescue", ddrescue), ("ours", ours)):
        served = work / f"{name}-source.img"  # a fresh FUSE server (and its slow-down) for each
        served.symlink_to(image)
        with failing_disk(served, bad, slow_after_error=slow) as disk:
            report[name] = contender(disk, work, size)
    d, o = report["ddrescue"], report["ours"]
    report["ours_over_ddrescue"] = {
        k: round(o[k] / d[k], 3) if d[k] else None for k in ("failed_reads", "bytes_read", "rescued", "seconds")
    }
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512, help="MiB of the disk (default 512)")
    ap.add_argument("--areas", type=int, default=50, help="bad areas (default 50)")
    ap.add_argument("--slow", type=float, default=0.001, help="seconds per read once a read failed")
    ap.add_argument("--seed", type=int, default=25)
    ap.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args()
    if not shutil.which("ddrescue"):
        sys.exit("GNU ddrescue is not installed (Debian's gddrescue: ./setup.sh --dev)")
    with tempfile.TemporaryDirectory(prefix="bench-rescue-") as tmp:
        report = run(args.size * MIB, args.areas, args.slow, args.seed, Path(tmp))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
