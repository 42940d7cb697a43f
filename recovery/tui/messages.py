"""Small messages, handled on the UI thread: what workers post back, and what screens ask for.

Screens never call the app: they post one of the requests below, which
bubbles up to :class:`~recovery.tui.app.WizardApp`.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual.message import Message

from recovery import events
from recovery.engine.peer.clones import CloneSession
from recovery.engine.peer.seen import Seen
from recovery.engine.peer.session import PeerLink
from recovery.errors import RecoveryError
from recovery.protocol.messages import DiskInfo
from recovery.tui.links import LinkReport

# --- from workers ------------------------------------------------------------


class InventoryLoaded(Message):
    def __init__(
        self, disks: tuple[DiskInfo, ...], links: LinkReport, error: RecoveryError | None, why: str = ""
    ) -> None:
        super().__init__()
        self.disks, self.links, self.error, self.why = disks, links, error, why


class LinksRead(Message):
    def __init__(self, links: LinkReport) -> None:
        super().__init__()
        self.links = links


class LinkStatus(Message):
    def __init__(self, source: str, text: str) -> None:
        super().__init__()
        self.source, self.text = source, text


class ListeningOn(Message):
    """This machine listens for the other one: ``host`` "" is every address."""

    def __init__(self, way: str, host: str, port: int) -> None:
        super().__init__()
        self.way, self.host, self.port = way, host, port


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


class PeerSpeed(Message):
    """The paired link's speed, as a worker asked it of the link (None: the link does not say)."""

    def __init__(self, link: PeerLink, speed: str | None) -> None:
        super().__init__()
        self.link, self.speed = link, speed


class EngineEvent(Message):
    def __init__(self, event: events.Event) -> None:
        super().__init__()
        self.event = event


class SessionEnded(Message):
    """A session's worker returned: ``error`` ended it (None: closed here)."""

    def __init__(self, session: CloneSession, error: RecoveryError | None) -> None:
        super().__init__()
        self.session, self.error = session, error


class DemoChecked(Message):
    """The demo compared the target image with the source, byte for byte."""

    def __init__(self, identical: bool, digest: str, error: str | None = None) -> None:
        super().__init__()
        self.identical, self.digest, self.error = identical, digest, error


# --- from screens ------------------------------------------------------------


class DriveAsked(Message):
    """The user typed the other machine's code (and maybe its address) on the first screen."""

    def __init__(self, code: str, address: str) -> None:
        super().__init__()
        self.code, self.address = code, address


class ReloadAsked(Message):
    """Read this machine's disks again."""


class StepAnswered(Message):
    """A wizard step was answered: ``value`` is its answer (a direction, a disk, the options, True)."""

    def __init__(self, step: str, value: object) -> None:
        super().__init__()
        self.step, self.value = step, value


class StepChanged(Message):
    """What a step says changed before it was answered (a partition sized on the layout step): ``rows``, for
    the other machine's screen."""

    def __init__(self, step: str, rows: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self.step, self.rows = step, tuple(rows)


class ImageAsked(Message):
    """On the source or target step: an image file instead of a disk (restore one, or save into one)."""

    def __init__(self, step: str) -> None:
        super().__init__()
        self.step = step


class StepBack(Message):
    """Esc on a step: back one step, the answers stay, and so does what is highlighted there (``value``, an
    answer not yet confirmed with Enter; None: nothing to keep)."""

    def __init__(self, step: str, value: object = None) -> None:
        super().__init__()
        self.step, self.value = step, value


class EndPairingAsked(Message):
    """Leave the pairing (the app asks first)."""


class AbortAsked(Message):
    """Abort the running clone (the app asks first)."""


class StartOverAsked(Message):
    """After a result: another clone (the driver), or back to the first screen."""


class RetryAsked(Message):
    """Run the same clone again, after the disks are looked at once more."""


class AutoResumeAsked(Message):
    """After a lost link: pair again by itself with the same machine when it is back, and resume."""


class Dismissed(Message):
    """A result screen was read (the passive side): back to where the pairing stands."""
