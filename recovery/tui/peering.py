"""The wizard's side of the connection lifecycle (no Textual): waiting, driving, pinning, reconnecting.

One :class:`~recovery.engine.peer.meeting.Meeting` serves the whole run (the cable,
the TCP listener, an address to reach). While no peer is paired a
:class:`~recovery.engine.peer.lobby.Lobby` is open; its findings are posted as
the app's messages. When a pairing ends, the next lobby carries that
machine's pin (so a screen can say "the machine you were paired with" or
"NOT the machine you were paired with") and holds the address it was reached
at (after the user here ended the pairing, only the one it was started
with), so the side that connected connects again by itself. Nothing pairs without a code typed on one side, but for one
case the user allows on purpose: after a lost link, pairing again with the
same machine by the lost pairing's secret, to resume the clone.
"""

from __future__ import annotations

from collections.abc import Callable

from textual.message import Message

from recovery import events
from recovery.engine.peer.guard import CodeGuard
from recovery.engine.peer.lobby import Lobby
from recovery.engine.peer.meeting import Meeting, Ways
from recovery.engine.peer.seen import DRIVABLE, Pin, Seen
from recovery.engine.peer.session import PeerLink
from recovery.errors import UsageError
from recovery.link import tcp
from recovery.link.spec import LinkSpec
from recovery.protocol.messages import DiskInfo, Hello
from recovery.tui.config import WizardConfig
from recovery.tui.messages import LinkStatus, ListeningOn, LobbyChanged, LobbyEvent, PeerConnected


def only_wizards_and_agents(hello: Hello) -> str | None:
    """The wizard pairs with another wizard or an agent; headless send/receive have their own partners."""
    if hello.role in ("wizard", "agent"):
        return None
    command = {"sender": "send", "receiver": "receive"}.get(hello.role, hello.role)
    return f"{hello.host.hostname} runs `recovery {command}`; start `recovery tui` or `recovery agent` there instead"


class Peering:
    """Finds the peer for the wizard; every callback may come from any thread and only posts."""

    def __init__(
        self,
        config: WizardConfig,
        guard: CodeGuard,
        offered: Callable[[], tuple[DiskInfo, ...]],
        post: Callable[[Message], object],
    ) -> None:
        self.config, self.guard, self.offered, self._post = config, guard, offered, post
        ways = Ways(
            cable=LinkSpec("auto") if config.cable else None, listen=config.listen, cable_opener=config.cable_opener
        )
        self.meeting = Meeting(
            ways,
            status=lambda way, text: self.post(LinkStatus(way, text)),
            listening=lambda way, host, port: self.post(ListeningOn(way, host, port)),
        )
        self.lobby: Lobby | None = None
        self.reach = config.connect  # the address to hold in the next lobby (None: wait to be reached)
        self.rejoin_secret: bytes | None = None  # a lost pairing to resume by itself (the user allowed it)
        self.closing = False

    def post(self, msg: Message) -> None:
        self._post(msg)

    # --- waiting ---

    def open(self, pin: Pin | None = None) -> None:
        """Wait for a peer (again), unless already waiting."""
        if self.closing or self.lobby is not None:
            return
        lobby = Lobby(
            self.guard,
            "wizard",
            offered=self.offered,
            refuse=only_wizards_and_agents,
            sink=lambda e: self.post(LobbyEvent(e)),
            found=self._found,
            changed=lambda seen: self._changed(lobby, seen),
            timeout=self.config.timeout,
            hostname=self.config.hostname,
            pin=pin,
            drives=DRIVABLE,
        )
        self.lobby = lobby
        lobby.rejoin(self.rejoin_secret)
        self.meeting.feed(lobby, connect=self.reach)

    def _changed(self, lobby: Lobby, seen: list[Seen]) -> None:
        if lobby is self.lobby:
            self.post(LobbyChanged(seen))

    def _found(self, link: PeerLink) -> None:  # a lobby thread
        if not self._post(PeerConnected(link)):
            link.close()
            link.conn.close()

    def paired(self) -> None:
        """The lobby's winner became the session: the lobby is over."""
        self.lobby = None
        self.rejoin_secret = None

    def forget(self) -> None:
        """The user here ended the pairing: no pairing by itself with that machine, and no holding an
        address typed for it (an address this wizard was started with is held again: ``--connect``, the
        demo's peer, which then waits to be paired again)."""
        self.reach = self.config.connect
        self.rejoin(None)

    def rejoin(self, secret: bytes | None) -> None:
        """The user allowed it: pair again with the pinned machine, by itself, when it is back."""
        self.rejoin_secret = secret
        if self.lobby is not None:
            self.lobby.rejoin(secret)

    # --- codes typed here ---

    def drive(self, code: str, address: str) -> str | None:
        """Pair from here with the other machine's ``code`` (at ``address``, when given); why not, or None."""
        if self.lobby is None:
            return "Still reading this machine's disks; try again in a moment."
        if address.strip():
            try:
                ep = tcp.parse_endpoint(address)
            except UsageError as e:
                return e.message
            if not ep.host:
                return "Give the other machine's address, e.g. 192.168.1.20"
            self.reach = ep  # after a lost link, connect there again
            if not self.lobby.drive(code, peer=str(ep)):  # not reached yet: connect there now
                self.post(LinkStatus("connect", f"connecting to {ep}..."))
                self.lobby.connect(ep, code)
            return None
        if not self.lobby.drive(code):
            return "No other machine has reached this one yet. Join the cable, or give its address too."
        return None

    # --- the end ---

    def close(self) -> None:
        self.closing = True
        if self.lobby is not None:
            self.lobby.close()
        self.meeting.close()


def new_code(post: Callable[[Message], object]) -> Callable[[str, str], None]:
    """A guard's announcer that posts each new code as the app's message."""

    def announce(code: str, why: str) -> None:
        post(LobbyEvent(events.PairingCode(code, why)))

    return announce
