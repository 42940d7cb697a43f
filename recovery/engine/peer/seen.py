"""What a lobby knows of each connection it handles, and of the machine the last pairing was with.

:class:`Seen` is a connection as a screen lists it (where it came from, who
its hello says it is, what it waits for); :class:`Pin` is the machine a
pairing was with, so the next lobby can tell it coming back from another.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from recovery.engine.peer.session import Contact, PeerLink
from recovery.link.base import Connection
from recovery.protocol import messages as m
from recovery.protocol.state import State

DRIVABLE = ("agent", "wizard")  # roles a wizard may drive (a person here types their code)
TYPING = ("wizard",)  # roles whose user types the code this side shows: held while a person reads and types

Refuse = Callable[[m.Hello], str | None]  # why a peer may not pair here (None: it may)


@dataclass(frozen=True)
class Pin:
    """The machine a pairing was with: its host name (from its hello) and machine id (from its
    introduction once paired); the pairing covers both."""

    hostname: str
    machine_id: str | None

    @classmethod
    def of(cls, link: PeerLink) -> Pin:
        return cls(link.theirs.host.hostname, link.peer.machine_id if link.peer else None)

    def named(self, hello: m.Hello) -> bool:
        """Before a pairing only the name is known (and unproven): does it say the same?"""
        return hello.host.hostname == self.hostname


@dataclass
class Seen:
    """A connection the lobby handles, as a screen lists it."""

    peer: str  # where it came from, until its hello names it
    link: str  # "tcp", "tbnet", "tbstream", ...
    hostname: str = ""
    role: str = ""
    state: str = "saying hello"
    known: bool | None = None  # with a pin: named like the pinned machine (True), or not (False)
    since: float = field(default_factory=time.monotonic)
    conn: Connection | None = field(default=None, repr=False)
    contact: Contact | None = field(default=None, repr=False)
    drives: tuple[str, ...] = ()  # the roles this lobby may drive
    ours: bool = False  # this side reached it (an address it was given), or the cable did

    @property
    def drivable(self) -> bool:
        return self.role in self.drives

    @property
    def pairing(self) -> bool:
        """An attempt is under way (evicting it would count against the real peer)."""
        contact = self.contact
        return contact is not None and contact.ctl.state.state is State.PAIRING
