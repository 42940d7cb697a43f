"""Options shared by several commands."""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from recovery import events
from recovery.engine.joblog import JobLog
from recovery.engine.peer.control import DEFAULT_TIMEOUT
from recovery.errors import PairingError, RecoveryError, UsageError
from recovery.protocol import codes
from recovery.units import parse_size


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON event per line (see docs/cli.md)")


def add_timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"declare the link lost after this long without a word from the peer (default {DEFAULT_TIMEOUT:.0f})",
    )


def add_workers(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="hashing and compressing threads (default: one per core of this machine)",
    )


def add_log_dir(p: argparse.ArgumentParser, what: str = "each clone's JSON log") -> None:
    p.add_argument(
        "--log-dir",
        metavar="DIR",
        help=f"where {what} go (default /var/log/usb4-recovery, or ~/.local/state/usb4-recovery "
        "when that is not writable)",
    )


def add_fit(p: argparse.ArgumentParser, whose: str = "the source") -> None:
    """--fit, --size and --scratch: a layout fitted to the target's size (docs/fitting.md)."""
    p.add_argument(
        "--fit",
        choices=("keep", "shrink", "grow"),
        default="keep",
        help=f"keep: {whose}'s layout (a smaller target is refused); shrink: shrink the filesystems to fit a "
        "smaller target; grow: grow them to fill a larger one. The resizing happens on a copy-on-write view: "
        f"{whose} is never written (docs/fitting.md)",
    )
    p.add_argument(
        "--size",
        action="append",
        type=part_size,
        default=[],
        metavar="N=SIZE",
        help="--fit: partition N gets SIZE (e.g. 2=40G); the others shrink or grow around it (repeatable)",
    )
    p.add_argument(
        "--scratch",
        metavar="DIR",
        help="--fit: the folder for the copy-on-write overlay, which holds what the resizing moves "
        "(default: the temporary folder; on the stick, its RAM)",
    )


def part_size(text: str) -> tuple[int, int]:
    """``2=40G`` -> (2, 40 GiB)."""
    number, sep, size = text.partition("=")
    if not sep or not number.strip().isdigit() or not 1 <= int(number) <= 256:
        raise argparse.ArgumentTypeError(f"{text!r}: give a partition number and a size, as 2=40G")
    try:
        return int(number), parse_size(size)
    except UsageError as e:
        raise argparse.ArgumentTypeError(e.message) from None


def fit_sizes(pairs: list[tuple[int, int]]) -> dict[int, int]:
    """--size's pairs, each partition once."""
    sizes = dict(pairs)
    if len(sizes) != len(pairs):
        raise UsageError("--size names a partition twice")
    return sizes


@contextmanager
def job_log(
    directory: str | None, role: str, out: Callable[[events.Event], None]
) -> Iterator[Callable[[events.Event], None]]:
    """``out`` and this clone's job log (a headless clone logs like a wizard's)."""
    log = JobLog(Path(directory) if directory else None, role)

    def both(event: events.Event) -> None:
        log(event)
        out(event)

    try:
        yield both
    except RecoveryError as e:
        log(events.Failed(code=e.code, message=e.message, exit_code=e.exit_code, hint=e.hint, peer=e.peer))
        raise
    finally:
        log.close()


def add_link(p: argparse.ArgumentParser) -> None:
    p.add_argument("--link", metavar="LINK", help="auto (default), tcp:HOST:PORT, stdio, tbstream, or tbnet[:IFACE]")


def add_code(p: argparse.ArgumentParser, *, serving: bool) -> None:
    if serving:
        text = (
            "the pairing code the other machine must type (any text of 6 or more letters or digits; "
            "default: a new random code, printed)"
        )
    else:
        text = "the pairing code shown on the other machine (asked for on a terminal when left out)"
    p.add_argument("--code", metavar="CODE", type=_code, help=text)


def add_encrypt(p: argparse.ArgumentParser, *, receiving: bool = False) -> None:
    group = p.add_mutually_exclusive_group()
    if receiving:
        group.add_argument(
            "--encrypt",
            dest="encrypt",
            action="store_true",
            default=None,
            help="take only encrypted data, on a direct USB4STREAM cable and on loopback too "
            "(on every other link, as seen from this side, that is the default)",
        )
        group.add_argument(
            "--no-encrypt",
            dest="encrypt",
            action="store_false",
            help="also take data that is authenticated but not encrypted, on any link",
        )
        return
    group.add_argument(
        "--encrypt",
        dest="encrypt",
        action="store_true",
        default=None,
        help="encrypt the data on a direct USB4STREAM cable and on loopback too (every other "
        "link encrypts it by default, and so does any link the receiver sees crossing a "
        "network)",
    )
    group.add_argument(
        "--no-encrypt",
        dest="encrypt",
        action="store_false",
        help="send the data authenticated but not encrypted (a receiver that sees a network "
        "between us refuses it unless it was given --no-encrypt too)",
    )


def _code(text: str) -> str:
    return codes.check_given(text)


def ask_code(peer_hint: str) -> str:
    """The code the user reads off the other machine, typed on this terminal."""
    try:
        tty = open("/dev/tty", "r+", encoding="utf-8")
    except OSError:
        raise PairingError(
            "no pairing code: give --code CODE (the code the other machine shows)",
            hint=f"{peer_hint} prints its code when it starts",
        ) from None
    with tty:
        tty.write("Pairing code shown on the other machine: ")
        tty.flush()
        line = tty.readline()
    if not codes.normalise(line):
        raise PairingError("no pairing code was typed", hint="give --code CODE")
    return line.strip()


def stdin_is_terminal() -> bool:
    return os.isatty(0)


class Interrupts:
    """Ctrl-C and SIGTERM.

    During a session the first one sets :attr:`cancel`: the engine stops at
    its next step, tells the peer and raises ``Interrupted``. Outside a
    session, or the second time, the signal stops the program at once.
    """

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.signal: int | None = None
        self._in_session = False

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum
        if self._in_session and not self.cancel.is_set():
            self.cancel.set()
            return
        raise KeyboardInterrupt

    @contextmanager
    def session(self) -> Iterator[threading.Event]:
        self._in_session = True
        try:
            yield self.cancel
        finally:
            self._in_session = False


INTERRUPTS = Interrupts()
