"""`recovery bench`: this machine's pipeline stages, and the clone speed to expect."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from recovery.cli.common import add_json
from recovery.engine.bench import LINKS, best_level, measure
from recovery.errors import SourceReadError, UsageError
from recovery.units import human_duration, human_rate, human_size, parse_size


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        help="measure this machine's disk, hashing and compression speed",
        description="Time each stage of the clone pipeline on this machine (disk read, "
        "BLAKE3, zstd at a few levels, loopback TCP) and predict the clone speed over "
        "typical links.",
    )
    p.add_argument(
        "--source",
        metavar="PATH",
        help="a disk (or image) to read, past the page cache; its data is used for the hashing and compression figures",
    )
    p.add_argument("--read", default="512M", metavar="SIZE", help="how much of the source to read (default 512M)")
    p.add_argument("--size", metavar="SIZE", help="bytes to copy, for the time estimate (default: the source's size)")
    add_json(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        rates = measure(args.source, parse_size(args.read))
    except FileNotFoundError:
        raise UsageError(f"{args.source} does not exist") from None
    except OSError as e:
        raise SourceReadError(f"cannot read {args.source}: {e.strerror}") from None
    size = parse_size(args.size) if args.size else None
    if size is None and args.source:
        with open(args.source, "rb") as f:
            size = f.seek(0, 2)
    predictions: dict[str, dict[str, Any]] = {}
    for name, link in LINKS.items():
        level, rate = best_level(rates, link)
        predictions[name] = {
            "level": "raw" if level is None else level,
            "rate": rate,
            "seconds": size / rate if size else None,
        }
    if args.json:
        body = {
            "event": "bench",
            "sample": rates.sample,
            "disk_read": rates.disk_read,
            "blake3": rates.blake3,
            "zstd": rates.zstd,
            "ratio": rates.ratio,
            "unzstd": rates.unzstd,
            "loopback": rates.loopback,
            "workers": rates.workers,
            "scaling": rates.scaling,
            "size": size,
            "predictions": predictions,
        }
        sys.stdout.write(json.dumps(body) + "\n")
        return 0
    w = sys.stdout.write
    w(f"Data: {rates.sample}\n")
    w(f"  disk read          {human_rate(rates.disk_read) if rates.disk_read else '(give --source to measure)'}\n")
    w(f"  BLAKE3             {human_rate(rates.blake3)} per thread\n")
    for level in rates.zstd:
        w(
            f"  zstd level {level:<2}      {human_rate(rates.zstd[level])} per thread, "
            f"output {rates.ratio[level] * 100:.0f}% of input\n"
        )
    w(f"  zstd decompress    {human_rate(rates.unzstd)} per thread\n")
    w(f"  loopback TCP       {human_rate(rates.loopback)}\n")
    one = rates.scaling.get(1, 0.0)
    for n, rate in rates.scaling.items():
        w(
            f"  {n:>2} worker{'s' if n > 1 else ' '} (BLAKE3 + zstd 1) {human_rate(rate):>12}"
            + (f"  {rate / one:.2f}x one" if one and n > 1 else "")
            + "\n"
        )
    w(
        f"Expected clone speed ({rates.workers} hashing/compressing threads"
        + (f", {human_size(size)} to copy" if size else "")
        + "):\n"
    )
    for name, p in predictions.items():
        w(
            f"  {name:<30} {human_rate(p['rate']):>12}  at level {p['level']}"
            + (f"  about {human_duration(p['seconds'])}" if p["seconds"] else "")
            + "\n"
        )
    w("In used mode only the used blocks count: see the plan `recovery send` prints.\n")
    return 0
