"""`recovery demo`: a real clone of a generated sample disk between two local processes.

On a terminal it opens the wizard against a simulated peer (see
:mod:`recovery.tui.demo`); with ``--headless``, ``--json`` or without a
terminal it clones by itself and prints the digests of both sides.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from recovery import events
from recovery.cli.common import add_json
from recovery.demo import DEMO_RATE, EventLines, build_sample_disk, check_tools, start_recovery
from recovery.engine.api import SendOptions
from recovery.engine.clone.compare import compare
from recovery.engine.clone.send import send_disk
from recovery.errors import LinkError, UsageError, VerificationError, error_from_code
from recovery.link.tcp import Endpoint, connect
from recovery.run import stop
from recovery.units import human_size, parse_size


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="try the wizard on generated sample disks, against a simulated peer",
        description="Make a sample disk image with real ext4 and FAT filesystems and "
        "start a simulated peer (a second local process) with a blank disk. On a "
        "terminal the wizard opens and you walk through a real clone; with --headless "
        "(or without a terminal) the clone runs by itself and prints the verified "
        "digests of both sides. Everything it made is removed at the end.",
    )
    p.add_argument("--mode", choices=("used", "exact"), default="used", help="clone mode (default used)")
    p.add_argument("--size", type=int, default=256, metavar="MIB", help="sample disk size (default 256)")
    p.add_argument("--keep", action="store_true", help="keep the images instead of deleting them")
    p.add_argument("--dir", metavar="DIR", help="where to put the images (default: a new temporary folder)")
    p.add_argument("--headless", action="store_true", help="no wizard: clone by itself and print the digests")
    p.add_argument(
        "--rate",
        type=parse_size,
        default=DEMO_RATE,
        metavar="BYTES/S",
        help=f"the wizard demo's link speed, as a slow cable (default {DEMO_RATE >> 20}M; 0: as fast "
        "as this machine goes)",
    )
    add_json(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.headless or args.json or not (sys.stdin.isatty() and sys.stdout.isatty()):
        return run_headless(args)
    return run_wizard_demo(args)


def run_wizard_demo(args: argparse.Namespace) -> int:
    from recovery.cli.tui import console_colours, run_wizard
    from recovery.tui.demo import DemoWorld

    if args.size < 64:
        raise UsageError("the sample disk needs at least 64 MiB")
    sys.stderr.write(f"Preparing the demo: a {args.size} MiB sample disk and a simulated peer...\n")
    with DemoWorld(args.size, args.dir, keep=args.keep, rate=args.rate or None) as world:
        world.start()
        code = run_wizard(world.config(ansi=console_colours()))
    if world.keep:
        sys.stderr.write(f"The demo's images and logs are kept in {world.workdir}\n")
    else:
        sys.stderr.write("The demo's images, logs and simulated peer are gone.\n")
    return code


def run_headless(args: argparse.Namespace) -> int:
    check_tools()
    out = args.output
    workdir = args.dir or tempfile.mkdtemp(prefix="recovery-demo-")
    os.makedirs(workdir, exist_ok=True)
    source = os.path.join(workdir, "source.img")
    target = os.path.join(workdir, "target.img")
    receiver: subprocess.Popen[bytes] | None = None
    try:
        out(events.Phase("demo", f"making a {args.size} MiB sample disk (GPT, ext4 and FAT) in {workdir}"))
        build_sample_disk(source, args.size)
        if os.path.exists(target):
            os.unlink(target)
        out(events.Phase("demo", "starting the receiving process"))
        receiver = start_recovery(["receive", "--target", target, "--listen", "127.0.0.1:0", "--json"])
        lines = EventLines(receiver, "the receiving process")
        port = int(lines.wait_for("listening", timeout=30)["port"])
        pairing = lines.wait_for("pairing", timeout=30)
        out(
            events.Phase(
                "demo",
                f"the receiving process shows the pairing code {pairing['code']}; "
                "this side types it, as `recovery send --code` does",
            )
        )
        with connect(Endpoint("127.0.0.1", port)) as conn:
            mine = send_disk(conn, SendOptions(source=source, mode=args.mode, code=str(pairing["code"])), out)
        code = receiver.wait(timeout=120)
        lines.thread.join(5)
        theirs = lines.find("summary")
        if code != 0 or theirs is None:
            err = lines.find("error")
            raise (
                error_from_code(err["code"], err["message"], "the receiving process")
                if err
                else LinkError(f"the receiving process ended with exit code {code}")
            )
        same = compare(source, target)
        _report(out, mine, theirs, same.identical, same.target_digest, target)
        if not same.identical:
            raise VerificationError("the target image differs from the sample disk")
        return 0
    finally:
        if receiver is not None:
            stop(receiver)
        if not args.keep and not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)


def _report(out: Any, mine: events.Summary, theirs: dict[str, Any], identical: bool, digest: str, target: str) -> None:
    if out.json:
        return
    agree = theirs["list_digest"] == mine.list_digest
    sys.stdout.write(
        "\nBoth processes agree:\n"
        f"  sender    chunks BLAKE3 {mine.list_digest}\n"
        f"  receiver  chunks BLAKE3 {theirs['list_digest']}  {'(same)' if agree else '(DIFFERENT)'}\n"
        f"  receiver read the target back: {'every chunk verified' if theirs['verified'] else 'NOT verified'}\n"
        f"  target image {'is byte-identical to' if identical else 'DIFFERS from'} the sample disk: "
        f"BLAKE3 {digest}\n"
        f"  ({human_size(mine.bytes_read)} read, {human_size(mine.bytes_sent)} on the link)\n"
    )
