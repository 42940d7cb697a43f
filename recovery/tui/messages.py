"""What workers post back to the app: small messages, handled on the UI thread."""

from __future__ import annotations

from textual.message import Message

from recovery import events
from recovery.engine.agent import AgentSession
from recovery.engine.lobby import Seen
from recovery.engine.session import PeerLink
from recovery.errors import RecoveryError
from recovery.protocol.messages import DiskInfo
from recovery.tui.links import LinkReport


class InventoryLoaded(Message):
    def __init__(self, disks: tuple[DiskInfo, ...], links: LinkReport, error: RecoveryError | None) -> None:
        super().__init__()
        self.disks = disks
        self.links = links
        self.error = error


class LinksRead(Message):
    def __init__(self, links: LinkReport) -> None:
        super().__init__()
        self.links = links


class LinkStatus(Message):
    def __init__(self, source: str, text: str) -> None:
        super().__init__()
        self.source = source
        self.text = text


class LobbyChanged(Message):
    """The machines that reached this one (not paired yet) changed."""

    def __init__(self, seen: list[Seen]) -> None:
        super().__init__()
        self.seen = seen


class LobbyEvent(Message):
    """What the search for the peer says: a new code, a failed pairing, a connect attempt."""

    def __init__(self, event: events.Event) -> None:
        super().__init__()
        self.event = event


class PeerConnected(Message):
    def __init__(self, link: PeerLink) -> None:
        super().__init__()
        self.link = link


class EngineEvent(Message):
    def __init__(self, event: events.Event) -> None:
        super().__init__()
        self.event = event


class SessionEnded(Message):
    """A session's worker returned: ``error`` ended it (None: closed here)."""

    def __init__(self, session: AgentSession, error: RecoveryError | None) -> None:
        super().__init__()
        self.session = session
        self.error = error


class DemoChecked(Message):
    """The demo compared the target image with the source, byte for byte."""

    def __init__(self, identical: bool, digest: str, error: str | None = None) -> None:
        super().__init__()
        self.identical = identical
        self.digest = digest
        self.error = error
