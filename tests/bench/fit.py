"""Benchmark: a clone shrunk onto a disk half the source's size (issue 24) against a same-size used clone of
the same source, in one run.

    python -m tests.bench.fit [--dir DIR] [--size-gib G] [--used-gib U] [--runs N]

As root. Makes a GPT bench disk on tmpfs (sparse: its free space holds nothing): a 256 MiB FAT ESP, ext4
on 55% of the rest and NTFS on the other 45%, together about ``--used-gib`` of real files
(copies of /usr) and random media, spread as the filesystems place them. Targets are loop devices over
sparse tmpfs files: one the source's size, one half of it. Each run:

1. a used-mode clone onto the same-size target (the baseline);
2. ``--fit shrink`` onto the half-size target: measured, shrunk and moved on the copy-on-write view, the
   view cloned, read back and checked.

It reports the fitted clone's wall time over the baseline's (the issue's goal: at most 1.3x, for 16 GiB with
about 3 GiB used onto 8 GiB: ``--size-gib 16 --used-gib 3``), the time making the view took, and the
overlay's size against the bytes the shrink had to move at most (the used bytes of the partitions that
were resized or moved). Figures, not pass/fail tests.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench import benchdisk
from tests.bench.compare import GIB, loop_over, ours, sh

MIB = 1 << 20
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
PART_FIELDS = ("number", "fstype", "size", "new_size", "method", "used")


def make_disk(path: Path, size: int, used: int, seed: int = 7) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
    rest = (size - 258 * MIB) // MIB
    ext_mib = rest * 55 // 100
    layout = f"label: gpt\nsize=256MiB, type={ESP}\nsize={ext_mib}MiB, type={LINUX}\ntype={DATA}\n"
    sh(f"sfdisk --quiet {path}", input=layout)
    rng = random.Random(seed)
    with loop_over(path) as dev:
        sh(f"partx --add {dev}")
        try:
            sh(f"mkfs.vfat -n ESP {dev}p1")
            sh(f"mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=0 -L root {dev}p2")
            sh(f"mkntfs -q -F -f -L data {dev}p3")
            with tempfile.TemporaryDirectory(prefix="fit-bench-") as mnt:
                for part, share, mount in (("p2", 0.6, "mount"), ("p3", 0.4, "ntfs-3g")):
                    sh(f"{mount} {dev}{part} {mnt}")
                    try:
                        budget = int(used * share)
                        done = sum(benchdisk.copy_tree(src, Path(mnt) / "files", budget // 2) for src in ("/usr/lib",))
                        i = 0
                        while done < budget:
                            n = min(32 * MIB, budget - done)
                            (Path(mnt) / f"clip-{i:04d}.mp4").write_bytes(rng.randbytes(n))
                            done += n
                            i += 1
                    finally:
                        sh(f"umount {mnt}")
        finally:
            subprocess.run(["partx", "--delete", dev], check=False)


def one_run(source: Path, same: str, half: str) -> dict[str, Any]:
    base = ours(str(source), same, "used")
    fitted = ours(str(source), half, "used", extra_send=("--fit", "shrink"))
    events = fitted.extra["events"]
    fit_done = next(e for e in events if e["event"] == "fitted")
    planned = next(e for e in events if e["event"] == "fit_planned")
    moved_at_most = sum(p["used"] or p["new_size"] for p in planned["parts"] if p["method"] != "keep")
    return {
        "same_size_s": round(base.seconds, 3),
        "fitted_s": round(fitted.seconds, 3),
        "fitted_vs_same_size": round(fitted.seconds / base.seconds, 3),
        "view_s": fit_done["seconds"],
        "overlay_bytes": fit_done["overlay_bytes"],
        "moved_at_most": moved_at_most,
        "overlay_vs_moved": round(fit_done["overlay_bytes"] / moved_at_most, 3),
        "same_size_wire": base.extra["wire"],
        "fitted_wire": fitted.extra["wire"],
        "parts": [
            {k: p[k] for k in ("number", "fstype", "size", "new_size", "method", "used")} for p in planned["parts"]
        ],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, default=Path("/dev/shm/usb4-recovery-bench"))
    p.add_argument("--size-gib", type=float, default=4)
    p.add_argument("--used-gib", type=float, default=0.75)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    os.environ["USB4_RECOVERY_LOG_DIR"] = str(args.dir / "fit-logs")
    size = int(args.size_gib * GIB)
    source = args.dir / f"fit-source-{args.size_gib:g}-{args.used_gib:g}.img"
    if not source.exists():
        print(f"making the bench disk {source} ...", flush=True)
        tmp = source.with_suffix(".tmp")
        make_disk(tmp, size, int(args.used_gib * GIB))
        tmp.rename(source)
    same_file, half_file = args.dir / "fit-same.img", args.dir / "fit-half.img"
    runs = []
    for f, n in ((same_file, size), (half_file, size // 2)):
        f.unlink(missing_ok=True)
        with open(f, "wb") as out:
            out.truncate(n)
    try:
        with loop_over(same_file) as same, loop_over(half_file) as half:
            ours(str(source), same, "used")  # warm-up, untimed
            for _ in range(args.runs):
                started = time.monotonic()
                row = one_run(source, same, half)
                row["run_s"] = round(time.monotonic() - started, 1)
                runs.append(row)
                print(json.dumps(row), flush=True)
    finally:
        same_file.unlink(missing_ok=True)
        half_file.unlink(missing_ok=True)
    numeric = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
    report = {
        "cpus": os.cpu_count(),
        "size_gib": args.size_gib,
        "used_gib": args.used_gib,
        "runs": runs,
        "median": {k: statistics.median(r[k] for r in runs) for k in numeric},
        "goals": {"fitted_vs_same_size": "<= 1.3", "overlay_vs_moved": "<= 1"},
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
