"""`recovery receive`: wait for a sender and write its disk onto a target."""

from __future__ import annotations

import argparse
import os

from recovery import events
from recovery.cli.common import INTERRUPTS, add_json, add_link, add_timeout, add_workers
from recovery.disks import safety
from recovery.disks.identity import identify
from recovery.engine.api import ReceiveOptions
from recovery.engine.receive import receive_disk
from recovery.errors import RefusedError
from recovery.link.select import accept_receiver, receiver_spec
from recovery.link.tcp import DEFAULT_PORT


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("receive", help="receive a disk from a sending peer and write it to a target",
                       description="Wait for one sender and write what it sends onto TARGET.")
    p.add_argument("--target", required=True, metavar="PATH",
                   help="the disk to overwrite, or an image file to create")
    p.add_argument("--listen", metavar="[ADDR]:PORT",
                   help=f"listen for a sender over TCP (default port {DEFAULT_PORT}, all addresses)")
    p.add_argument("--from", dest="from_", metavar="-", help="'-': the sender talks on stdin/stdout")
    add_link(p)
    p.add_argument("--yes", action="store_true",
                   help="overwrite a target that holds a partition table or filesystem, without asking")
    p.add_argument("--no-verify", action="store_true", help="skip reading the target back after the copy")
    p.add_argument("--no-fs-check", action="store_true",
                   help="used mode: skip running each filesystem's read-only checker on the target")
    add_workers(p)
    add_timeout(p)
    add_json(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    spec = receiver_spec(args.link, args.listen, args.from_)
    out = args.output
    # Fail before waiting for a sender if the target can never be written,
    # and pin it as it is now: the clone refuses it if it changes meanwhile.
    safety.check_target_path(args.target, overwrite=args.yes)
    expect = None
    if os.path.exists(args.target):
        try:
            expect = identify(args.target)
        except OSError as e:
            raise RefusedError(f"cannot inspect {args.target}: {e.strerror}") from None
    opts = ReceiveOptions(target=args.target, overwrite=args.yes, verify=not args.no_verify,
                          timeout=args.timeout, expect=expect, fs_check=not args.no_fs_check)
    if args.workers:
        opts.workers = max(1, args.workers)

    def listening(address: str, port: int, link: str) -> None:
        out(events.Listening(address=address, port=port, link=link))

    with accept_receiver(spec, timeout=None, on_listening=listening) as conn, INTERRUPTS.session() as cancel:
        opts.cancel = cancel
        receive_disk(conn, opts, out)
    return 0
