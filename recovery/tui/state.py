"""What the wizard knows right now: one plain object the app updates and the screens read."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from recovery.engine.peer.clones import CloneSession
from recovery.engine.peer.seen import Pin, Seen
from recovery.engine.peer.session import PeerLink
from recovery.protocol.messages import DiskInfo
from recovery.tui.job import JobView
from recovery.tui.links import LinkReport
from recovery.tui.model import Choice


@dataclass(frozen=True)
class PeerView:
    """The paired machine as the screens show it."""

    hostname: str
    software: str
    machine_id: str | None
    link: str  # "tcp", "tbstream", ...
    address: str
    speed: str | None  # as the link reports it, when it does
    security: str  # "paired; data encrypted by default on this link", ...
    session: str  # the key fingerprint, the same on both screens
    drives: bool  # this machine drives (its user typed the peer's code)
    disks: int
    choice: str | None = None  # why this link (both cable links measured: their rates)
    speed_pending: bool = False  # the speed is still being asked of the link (see :meth:`of`)

    @classmethod
    def of(cls, link: PeerLink) -> PeerView:
        """What the pairing screen shows at once, without I/O: the speed is pending. Asking the link
        for it (the network card's may take ``ip`` seconds) is a worker's job; :meth:`with_speed` follows."""
        host = link.peer or link.theirs.host  # its introduction once paired (with the machine id)
        return cls(
            hostname=link.peer_name,
            software=host.software,
            machine_id=host.machine_id,
            link=link.conn.kind,
            address=link.conn.peer,
            speed=None,
            speed_pending=True,
            security=link.security,
            session=link.fingerprint,
            drives=link.role == "driver",
            disks=len(link.inventory),
            choice=link.conn.choice,
        )

    def with_speed(self, speed: str | None) -> PeerView:
        """The same view, with the speed the link reported (None: it does not say)."""
        return dataclasses.replace(self, speed=speed, speed_pending=False)


@dataclass
class WizardState:
    host: str
    code: str = ""  # this machine's pairing code, shown on the first screen
    disks: tuple[DiskInfo, ...] | None = None  # None: still reading them
    links: LinkReport | None = None
    status: dict[str, str] = field(default_factory=dict)  # link status by way
    notice: str = ""  # what the first screen says until dismissed: a wrong code, a new code
    unpaired_why: str = ""  # why the last pairing ended, said on its last result before the new code
    listening: tuple[str, int] | None = None  # (host or "" for every address, port) of the TCP listener
    seen: list[Seen] = field(default_factory=list)  # machines that reached us, not paired
    link: PeerLink | None = None
    peer: PeerView | None = None
    session: CloneSession | None = None
    step: str = "pair"  # the driver's step
    choice: Choice = field(default_factory=Choice)
    job: JobView | None = None
    job_choice: Choice | None = None  # what the last clone driven from here was
    job_link: PeerLink | None = None  # the link the last clone ran on
    activity: str = ""  # the passive side: what the driver's user does now
    review: tuple[tuple[str, str], ...] = ()  # the passive side: the review the driver's user confirms now
    last_result: str = ""  # the passive side: how the last clone ended
    pin: Pin | None = None  # the machine the last pairing was with
    retry: Choice | None = None  # a clone to retry once paired with ``pin`` again
    changes: tuple[str, ...] = ()  # what changed in the chosen disks since they were chosen
    rejoin: bytes | None = None  # the lost pairing's rejoin secret (this machine drove it)
    auto_resume: bool = False  # the user allowed: pair again by itself with that machine, and resume
    repairing: bool = False  # a failed clone kept the pairing: the two pair again by its secret now (no code)
    image_folder: str = ""  # the folder last chosen for an image (saved into, or restored from)
    passphrase_problem: str = ""  # why the image's passphrase was refused: the options step says it, once
    choose_again: bool = False  # the driver's user chose another clone meanwhile: the direction step follows

    @property
    def paired(self) -> bool:
        return self.link is not None

    @property
    def drives(self) -> bool:
        return self.link is not None and self.link.role == "driver"
