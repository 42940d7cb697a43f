"""How one wizard runs: who it is, which disks it offers, how it finds its peer."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from recovery.engine.peer.control import DEFAULT_TIMEOUT
from recovery.link import tcp
from recovery.link.base import Connection
from recovery.protocol.messages import DiskInfo
from recovery.tui.links import LinkReport


def _default_listen() -> tcp.Endpoint | None:
    return tcp.Endpoint("", tcp.DEFAULT_PORT)


@dataclass
class WizardConfig:
    hostname: str | None = None  # this machine's name in the hello (None: the real one)
    disks: tuple[str, ...] = ()  # offer only these disks or image files (): every disk
    listen: tcp.Endpoint | None = field(default_factory=_default_listen)  # None: do not listen
    connect: tcp.Endpoint | None = None  # reach this peer at start (it is driven once its code is typed)
    code: str | None = None  # this machine's pairing code (None: a new random one per pairing)
    # A line under the code; a callable is asked again every moment (the demo says the simulated peer's
    # code, which changes after each pairing and after wrong tries).
    code_hint: str | Callable[[], str] = ""
    log_dir: Path | None = None  # None: recovery.engine.joblog.default_dir()
    timeout: float = DEFAULT_TIMEOUT
    cable: bool = True  # look for the peer on the USB4/Thunderbolt cable too
    demo: bool = False  # both machines' disks are local images: compare them after a clone
    ansi: bool | None = None  # 16 ANSI colours (None: when TERM is "linux")
    # Tests replace what reads the machine:
    inventory: Callable[[], tuple[DiskInfo, ...]] | None = None
    links: Callable[[], LinkReport] | None = None
    cable_opener: Callable[[threading.Event], Connection] | None = None
    link_rate: float | None = None  # hold every paired link to this many bytes/s each way (a slow cable)
