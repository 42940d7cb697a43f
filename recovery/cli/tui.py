"""`recovery tui`: the clone wizard (and `recovery` alone, on a terminal)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from recovery.cli.common import add_code, add_timeout
from recovery.errors import UsageError
from recovery.link import tcp

if TYPE_CHECKING:
    from recovery.tui.config import WizardConfig


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "tui",
        help="open the clone wizard (what `recovery` alone does on a terminal)",
        description="The clone wizard: finds the other machine, shows both machines' "
        "disks, and drives a clone in either direction from this screen.",
    )
    p.add_argument(
        "--connect",
        metavar="HOST[:PORT]",
        help="reach the other machine's wizard or agent at start (then type its code)",
    )
    p.add_argument(
        "--listen",
        metavar="[ADDR]:PORT",
        help=f"where to wait for the other machine (default: all addresses, port {tcp.DEFAULT_PORT})",
    )
    p.add_argument("--no-listen", action="store_true", help="do not wait for the other machine; only connect")
    p.add_argument(
        "--disk",
        action="append",
        default=[],
        metavar="PATH",
        help="offer only this disk or image file (repeat for more; default: every disk)",
    )
    p.add_argument("--name", metavar="NAME", help="the name the other machine shows for this one")
    add_code(p, serving=True)
    p.add_argument("--log-dir", metavar="DIR", help="where each clone's JSON log goes")
    p.add_argument("--ansi", action="store_true", help="use the 16 terminal colours (the default on the Linux console)")
    add_timeout(p)
    p.set_defaults(run=run)


def need_terminal() -> None:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError(
            "the wizard needs a terminal",
            hint="on a machine without a screen run `recovery agent`; "
            "scripts use `recovery send` and `recovery receive`",
        )


def console_colours() -> bool:
    """The Linux console has 16 colours; so does anything that says so."""
    return os.environ.get("TERM", "") in ("linux", "vt100", "vt220", "ansi")


def run_wizard(config: WizardConfig) -> int:
    """Run the wizard until the user quits; a hang-up or SIGTERM quits it cleanly too."""
    from recovery.tui.app import WizardApp  # Textual loads only for the wizard

    need_terminal()
    app = WizardApp(config)

    def stop(signum: int, frame: FrameType | None) -> None:
        app.exit(128 + signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGHUP, signal.SIGTERM)}
    try:
        code = app.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return int(code or 0)


def run_default() -> int:
    """`recovery` with no arguments on a terminal."""
    from recovery.tui.config import WizardConfig

    return run_wizard(WizardConfig(ansi=console_colours()))


def run(args: argparse.Namespace) -> int:
    from recovery.tui.config import WizardConfig

    paths = tuple(os.path.abspath(p) for p in args.disk)
    for path in paths:
        if not os.path.exists(path):
            raise UsageError(f"{path} does not exist", hint="give a disk (/dev/...) or an image file")
    listen = None if args.no_listen else tcp.parse_endpoint(args.listen or "", default_host="")
    connect = tcp.parse_endpoint(args.connect) if args.connect else None
    if connect is not None and not connect.host:
        raise UsageError("--connect needs the other machine's address: HOST or HOST:PORT")
    if listen is None and connect is None:
        raise UsageError("with --no-listen, give --connect HOST[:PORT]")
    config = WizardConfig(
        hostname=args.name,
        disks=paths,
        listen=listen,
        connect=connect,
        code=args.code,
        log_dir=Path(args.log_dir) if args.log_dir else None,
        timeout=args.timeout,
        ansi=args.ansi or console_colours(),
    )
    return run_wizard(config)
