"""How one wizard runs: who it is, which disks it offers, how it finds its peer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from recovery.engine.control import DEFAULT_TIMEOUT
from recovery.link import tcp
from recovery.protocol.messages import DiskInfo
from recovery.tui.links import LinkReport


def _default_listen() -> tcp.Endpoint | None:
    return tcp.Endpoint("", tcp.DEFAULT_PORT)


@dataclass
class WizardConfig:
    hostname: str | None = None  # this machine's name in the hello (None: the real one)
    disks: tuple[str, ...] = ()  # offer only these disks or image files (): every disk
    listen: tcp.Endpoint | None = field(default_factory=_default_listen)  # None: do not listen
    connect: tcp.Endpoint | None = None  # connect to this peer at start
    log_dir: Path | None = None  # None: recovery.engine.joblog.default_dir()
    timeout: float = DEFAULT_TIMEOUT
    cable: bool = True  # look for the peer on the USB4/Thunderbolt cable too
    demo: bool = False  # both machines' disks are local images: compare them after a clone
    ansi: bool | None = None  # 16 ANSI colours (None: when TERM is "linux")
    # Tests replace what reads the machine:
    inventory: Callable[[], tuple[DiskInfo, ...]] | None = None
    links: Callable[[], LinkReport] | None = None
