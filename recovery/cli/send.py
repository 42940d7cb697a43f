"""`recovery send`: clone a local disk to a receiving peer."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from recovery import events
from recovery.cli.common import (
    INTERRUPTS,
    add_code,
    add_encrypt,
    add_fit,
    add_json,
    add_link,
    add_log_dir,
    add_timeout,
    add_workers,
    ask_code,
    fit_sizes,
    job_log,
)
from recovery.cli.passphrase import add_passphrase, passphrase
from recovery.diskimage.reader import ImageReader, image_header
from recovery.engine.api import SendOptions
from recovery.engine.clone.chunks import DEFAULT_CHUNK_SIZE
from recovery.engine.clone.imagesource import is_image
from recovery.engine.clone.level import parse_level
from recovery.engine.clone.send import check_options, send_disk
from recovery.errors import PairingError
from recovery.link.opening import connect_sender, sender_spec
from recovery.protocol.limits import MAX_CHUNK_SIZE
from recovery.units import parse_size


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "send",
        help="send a disk of this machine to a receiving peer",
        description="Send a disk (or image file) to a peer running `recovery receive`, "
        "after pairing with the code that peer shows.",
    )
    p.add_argument(
        "--source",
        required=True,
        metavar="PATH",
        help="the disk, partition or file to copy, or an image (`recovery image save`, `receive --image`) to restore",
    )
    add_passphrase(p, new=False)
    p.add_argument("--to", metavar="HOST:PORT", help="the receiver's address, or '-' for stdin/stdout")
    p.add_argument(
        "--via",
        metavar="COMMAND",
        help='run COMMAND (e.g. "ssh HOST recovery receive --target DEV --from -") and talk '
        "to the receiver over its stdin/stdout; no pairing code needed",
    )
    add_link(p)
    add_code(p, serving=False)
    p.add_argument(
        "--mode",
        choices=("used", "exact"),
        default="used",
        help="used (default): only blocks in use by the filesystems; exact: every block",
    )
    p.add_argument(
        "--level",
        default="auto",
        metavar="auto|N",
        help="zstd level: auto (default, adapts to link and CPU), 0 (raw) or 1..19",
    )
    p.add_argument(
        "--chunk-size",
        default=f"{DEFAULT_CHUNK_SIZE >> 20}M",
        metavar="SIZE",
        help=f"bytes per chunk, 4K..{MAX_CHUNK_SIZE >> 20}M (default {DEFAULT_CHUNK_SIZE >> 20}M)",
    )
    p.add_argument(
        "--allow-mounted",
        action="store_true",
        help="copy even if the source is mounted read-write (the copy may be inconsistent)",
    )
    add_encrypt(p)
    rescue = p.add_argument_group("a failing source (see docs/cli.md)")
    rescue.add_argument(
        "--rescue",
        action="store_true",
        help="copy everything that can still be read, ddrescue's way: the good areas first, then "
        "the bad ones sector by sector; unreadable sectors are filled and listed (exit 14)",
    )
    rescue.add_argument(
        "--mapfile",
        metavar="PATH",
        help="the ddrescue mapfile of the source, continued if it exists (default: next to the "
        "job logs, named by the source)",
    )
    rescue.add_argument(
        "--retries",
        type=int,
        metavar="N",
        help="passes over the bad sectors after scraping (default 0, or 1 when continuing a mapfile)",
    )
    rescue.add_argument(
        "--rescue-time",
        type=_duration,
        metavar="SECONDS",
        help="time budget for the passes after the first (default: no limit)",
    )
    rescue.add_argument(
        "--fill",
        type=_fill,
        default=b"\0",
        metavar="TEXT",
        help="what unreadable sectors become on the target (default: zeros), e.g. 'BAD SECTOR '",
    )
    add_fit(p)
    p.add_argument(
        "--no-delta",
        action="store_true",
        help="send every chunk even if the target holds an earlier clone of this source (by default only "
        "the chunks that differ from it are sent)",
    )
    p.add_argument(
        "--rescan",
        action="store_true",
        help="resuming: go on although the source's partition tables changed since the interrupted "
        "clone (every chunk is compared with the source anyway, and what differs sent again)",
    )
    add_log_dir(p, "each clone's JSON log and the rescue's mapfile")
    add_workers(p)
    add_timeout(p)
    add_json(p)
    p.set_defaults(run=run)


def _duration(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the time budget must be more than 0 seconds")
    return value


def _fill(text: str) -> bytes:
    if not text:
        raise argparse.ArgumentTypeError("the fill pattern must not be empty")
    return text.encode()


def run(args: argparse.Namespace) -> int:
    spec = sender_spec(args.link, args.to, args.via)
    opts = SendOptions(
        source=args.source,
        mode=args.mode,
        level=parse_level(args.level),
        chunk_size=parse_size(args.chunk_size),
        allow_mounted=args.allow_mounted,
        timeout=args.timeout,
        encrypt=args.encrypt,
        code=args.code,
        rescue=args.rescue,
        mapfile=args.mapfile,
        retries=args.retries,
        rescue_time=args.rescue_time,
        fill=args.fill,
        rescan=args.rescan,
        delta=not args.no_delta,
        fit=args.fit,
        sizes=fit_sizes(args.size),
        scratch=args.scratch,
        log_dir=Path(args.log_dir) if args.log_dir else None,
    )
    if args.workers:
        opts.workers = max(1, args.workers)
    check_options(opts)  # a typo in --source fails here, not after connecting
    if is_image(opts.source):  # and so does an image that cannot be read, or its wrong passphrase
        opts.passphrase = passphrase(args, new=False, needed=image_header(opts.source).encrypted)
        ImageReader(opts.source, opts.passphrase).close()
    if spec.kind != "stdio" and opts.code is None:
        if not os.isatty(0):
            raise PairingError(
                "no pairing code: give --code CODE, the code `recovery receive` shows on the other machine",
                hint="on the kernel command line: recovery.code=CODE on both machines",
            )
        opts.code = ask_code("`recovery receive`")
    out = args.output
    out(events.Phase("connect", f"connecting over {spec}"))
    with (
        connect_sender(spec, timeout=args.timeout) as conn,
        INTERRUPTS.session() as cancel,
        job_log(args.log_dir, "sender", out) as sink,
    ):
        opts.cancel = cancel
        send_disk(conn, opts, sink)
    return 0
