"""`recovery verify`: compare a source and a target by their chunk digests."""

from __future__ import annotations

import argparse
import json
import sys

from recovery.cli.common import add_json
from recovery.engine.clone.compare import compare
from recovery.errors import VerificationError
from recovery.units import human_size, parse_size


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "verify",
        help="compare two disks or images by chunk digests",
        description="Compare SOURCE and TARGET (devices or files) chunk by chunk "
        "with BLAKE3 and report the ranges that differ. Exit code 5 if they differ.",
    )
    p.add_argument("source")
    p.add_argument("target")
    p.add_argument("--chunk-size", default="4M", metavar="SIZE", help="granularity of reported ranges")
    add_json(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    result = compare(args.source, args.target, parse_size(args.chunk_size))
    if args.json:
        body = {
            "event": "verify",
            "source": result.source,
            "target": result.target,
            "compared": result.compared,
            "source_size": result.source_size,
            "target_size": result.target_size,
            "identical": result.identical,
            "gpt_moved": result.gpt_moved,
            "source_digest": result.source_digest,
            "target_digest": result.target_digest,
            "differences": [[o, n] for o, n in result.differences],
        }
        sys.stdout.write(json.dumps(body) + "\n")
    else:
        sys.stdout.write(
            f"source  {result.source_digest}  {result.source} ({human_size(result.source_size)})\n"
            f"target  {result.target_digest}  {result.target} (first {human_size(result.compared)})\n"
        )
        if result.identical:
            sys.stdout.write(f"identical over {result.compared} bytes\n")
        elif result.matches:
            sys.stdout.write(
                f"the same over {result.compared} bytes but for the GPT, whose backup the clone moved to the "
                "target's end (its first two sectors)\n"
            )
        else:
            for off, n in result.differences[:20]:
                sys.stdout.write(f"differs  bytes {off}..{off + n} ({human_size(n)})\n")
            if len(result.differences) > 20:
                sys.stdout.write(f"... and {len(result.differences) - 20} more ranges\n")
    if not result.matches:
        raise VerificationError(
            f"{args.target} differs from {args.source}"
            + (
                f" in {len(result.differences)} range(s)"
                if result.differences
                else f": sizes {result.source_size} and {result.target_size}"
            )
        )
    return 0
