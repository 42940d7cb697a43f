"""Agent sessions over an in-memory pair: the side that typed the code drives, the other serves."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from recovery import events
from recovery.engine.clone.compare import compare
from recovery.engine.peer.clones import CloneSession
from recovery.engine.peer.guard import CodeGuard
from recovery.engine.peer.jobs import CloneChoice, JobEnded, JobStarted, PeerActivity, offered_disks
from recovery.engine.peer.session import PeerLink, handshake
from recovery.errors import LinkError, PeerLeftError, RecoveryError, RefusedError, UsageError
from tests.tui.helpers import connection_pair

CODE = "1357-2468"  # the serving side's code, typed on the driving side


class Side:
    def __init__(self, name: str, disks: list[Path], tmp: Path, candidates: list[str] | None = None) -> None:
        self.name = name
        self.paths = [str(d) for d in disks]
        self.infos = offered_disks(self.paths)
        self.candidates = self.paths if candidates is None else candidates
        self.tmp = tmp
        self.events: list[events.Event] = []
        self.error: RecoveryError | None = None
        self.link: PeerLink | None = None
        self.session: CloneSession | None = None
        self.thread: threading.Thread | None = None
        self.on_event = lambda e: None

    def sink(self, event: events.Event) -> None:
        self.events.append(event)
        self.on_event(event)

    def start(self, link: PeerLink) -> None:
        self.link = link
        self.session = CloneSession(
            link,
            candidates=lambda: self.candidates,
            sink=self.sink,
            offered=lambda: offered_disks(self.paths),
            log_dir=self.tmp / f"{self.name}-logs",
        )
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        assert self.session is not None
        try:
            self.session.serve()
        except RecoveryError as e:
            self.error = e

    def ended(self) -> list[JobEnded]:
        return [e for e in self.events if isinstance(e, JobEnded)]


def pair(tmp: Path, left: list[Path], right: list[Path], **kw: list[str]) -> tuple[Side, Side]:
    """``left`` drives (its user typed ``right``'s code), ``right`` serves."""
    a, b = Side("left", left, tmp, kw.get("left_candidates")), Side("right", right, tmp, kw.get("right_candidates"))
    ca, cb = connection_pair()
    links: dict[str, PeerLink] = {}

    def drive() -> None:
        links["left"] = handshake(ca, "wizard", code=CODE, hostname="left")

    def serve() -> None:
        links["right"] = handshake(cb, "agent", guard=CodeGuard(CODE), offered=lambda: b.infos, hostname="right")

    threads = [threading.Thread(target=drive), threading.Thread(target=serve)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    a.start(links["left"])
    b.start(links["right"])
    return a, b


def wait_ended(side: Side, count: int = 1, timeout: float = 60) -> JobEnded:
    import time

    deadline = time.monotonic() + timeout
    while len(side.ended()) < count:
        assert time.monotonic() < deadline, f"{side.name}: no end of clone; events {side.events[-5:]}"
        time.sleep(0.05)
    return side.ended()[count - 1]


def close(*sides: Side) -> None:
    for s in sides:
        if s.session is not None:
            s.session.close("test over")
    for s in sides:
        if s.thread is not None:
            s.thread.join(10)
            assert not s.thread.is_alive()


def test_the_server_sends_its_disks_after_the_pairing(tmp_path: Path, source_image: Path, blank_image: Path) -> None:
    a, b = pair(tmp_path, [source_image], [blank_image])
    try:
        assert a.link is not None and b.link is not None
        assert (a.link.role, b.link.role) == ("driver", "server")
        assert a.link.fingerprint == b.link.fingerprint and len(a.link.fingerprint) == 12
        assert a.link.security == b.link.security == "paired; data encrypted by default on this link"
        theirs = a.link.inventory[0]
        assert theirs.path == str(blank_image) and theirs.identity is not None
        assert theirs.identity.kind == "file"
        assert b.link.inventory == ()  # the driver sends no disks
    finally:
        close(a, b)


def test_the_serving_side_cannot_drive(tmp_path: Path, source_image: Path, blank_image: Path) -> None:
    a, b = pair(tmp_path, [blank_image], [source_image])
    try:
        assert b.session is not None and b.link is not None
        b.session.submit(CloneChoice(send=True, source=b.infos[0], target=b.infos[0]))
        assert b.thread is not None
        b.thread.join(10)
        assert isinstance(b.error, UsageError) and "cannot drive" in b.error.message
        assert blank_image.stat().st_blocks == 0
    finally:
        close(a, b)


def test_controller_sends_to_pinned_target(tmp_path: Path, source_image: Path, blank_image: Path) -> None:
    a, b = pair(tmp_path, [source_image], [blank_image])
    try:
        assert a.link is not None and a.session is not None
        a.session.submit(CloneChoice(send=True, source=a.infos[0], target=a.link.inventory[0]))
        assert wait_ended(a).ok and wait_ended(b).ok
        started = next(e for e in b.events if isinstance(e, JobStarted))
        assert (started.role, started.driver, started.peer) == ("receiver", "peer", "left")
        assert compare(str(source_image), str(blank_image)).identical
        assert started.log and Path(started.log).is_file()
    finally:
        close(a, b)


def test_the_driver_cannot_turn_off_the_read_back_of_the_side_that_writes(
    tmp_path: Path, source_image: Path, blank_image: Path
) -> None:
    a, b = pair(tmp_path, [source_image], [blank_image])
    try:
        assert a.link is not None and a.session is not None
        a.session.submit(CloneChoice(send=True, source=a.infos[0], target=a.link.inventory[0], verify=False))
        assert wait_ended(a).ok and wait_ended(b).ok
        written = next(e for e in b.events if isinstance(e, events.Summary))
        assert written.verified is True
        assert any(isinstance(e, events.Phase) and e.name == "verify" for e in b.events)
    finally:
        close(a, b)


def test_controller_requests_the_peers_disk(tmp_path: Path, source_image: Path, blank_image: Path) -> None:
    a, b = pair(tmp_path, [blank_image], [source_image])
    try:
        assert a.link is not None and a.session is not None
        a.session.submit(CloneChoice(send=False, source=a.link.inventory[0], target=a.infos[0], mode="exact"))
        assert wait_ended(a).ok and wait_ended(b).ok
        summary = next(e for e in a.events if isinstance(e, events.Summary))
        assert summary.role == "receiver" and summary.verified
        same = compare(str(source_image), str(blank_image))
        assert same.identical and summary.image_digest == same.source_digest
    finally:
        close(a, b)


def test_a_target_that_is_gone_is_refused_and_the_session_stays(
    tmp_path: Path, source_image: Path, blank_image: Path
) -> None:
    """The refusal crosses before anything is written: the link stays, and the next clone runs on it."""
    right_candidates: list[str] = []
    a, b = pair(tmp_path, [source_image], [blank_image], right_candidates=right_candidates)
    try:
        assert a.link is not None and a.session is not None and b.link is not None
        a.session.submit(CloneChoice(send=True, source=a.infos[0], target=a.link.inventory[0], mode="exact"))
        mine, theirs = wait_ended(a), wait_ended(b)
        assert (mine.ok, mine.code, theirs.code) == (False, "refused", "refused")
        assert "no disk of right" in theirs.message
        assert blank_image.stat().st_blocks == 0  # nothing written
        assert a.link.idle and b.link.idle and a.error is None and b.error is None
        right_candidates.append(str(blank_image))  # plugged back in
        a.session.submit(CloneChoice(send=True, source=a.infos[0], target=a.link.inventory[0], mode="exact"))
        assert wait_ended(a, 2).ok and wait_ended(b, 2).ok
        assert compare(str(source_image), str(blank_image)).identical
    finally:
        close(a, b)


def test_a_plan_that_pins_nothing_is_refused(tmp_path: Path, source_image: Path, blank_image: Path) -> None:
    from recovery.engine.api import SendOptions
    from recovery.engine.clone.send import run_send

    left, right = connection_pair()
    b = Side("right", [blank_image], tmp_path)
    links: dict[str, PeerLink] = {}
    t = threading.Thread(target=lambda: links.setdefault("a", handshake(left, "sender", code=CODE)))
    t.start()
    b.start(handshake(right, "agent", guard=CodeGuard(CODE), offered=lambda: b.infos, hostname="right"))
    t.join(10)
    with pytest.raises(RefusedError, match="only writes a disk"):
        run_send(links["a"], SendOptions(source=str(source_image), mode="exact"))
    assert wait_ended(b).code == "refused"
    close(b)


def test_cancel_on_the_serving_side_stops_both(tmp_path: Path, source_image: Path, blank_image: Path) -> None:
    a, b = pair(tmp_path, [source_image], [blank_image])
    try:
        assert a.link is not None and a.session is not None and b.session is not None
        serving = b.session
        b.on_event = lambda e: serving.cancel() if isinstance(e, events.PlanMade) else None
        a.session.submit(CloneChoice(send=True, source=a.infos[0], target=a.link.inventory[0]))
        mine, theirs = wait_ended(a), wait_ended(b)
        assert (mine.code, theirs.code) == ("cancelled", "cancelled")
        assert "the peer cancelled" in mine.message
    finally:
        close(a, b)


def test_the_peer_closing_ends_an_idle_session(tmp_path: Path, source_image: Path, blank_image: Path) -> None:
    a, b = pair(tmp_path, [source_image], [blank_image])
    assert a.session is not None and b.thread is not None
    a.session.close("left quits")
    b.thread.join(10)
    assert isinstance(b.error, PeerLeftError) and "left ended the session: left quits" in b.error.message
    close(a, b)
    assert a.error is None  # closed here: no error


def test_the_driver_says_what_its_user_does(tmp_path: Path, source_image: Path, blank_image: Path) -> None:
    a, b = pair(tmp_path, [source_image], [blank_image])
    try:
        assert a.session is not None
        a.session.tell("choosing the disk to copy", 3, 6)
        deadline = time.monotonic() + 10
        while not [e for e in b.events if isinstance(e, PeerActivity)]:
            assert time.monotonic() < deadline, b.events
            time.sleep(0.05)
        told = next(e for e in b.events if isinstance(e, PeerActivity))
        assert (told.what, told.step, told.steps) == ("choosing the disk to copy", 3, 6)
        assert b.session is not None
        b.session.tell("a server cannot say it")  # only the driver's words count
        a.session.submit(CloneChoice(send=True, source=a.infos[0], target=a.link.inventory[0]))  # type: ignore[union-attr]
        assert wait_ended(a).ok and wait_ended(b).ok  # and the link is still in order
    finally:
        close(a, b)


def test_a_lost_link_ends_the_clone(tmp_path: Path, source_image: Path, blank_image: Path) -> None:
    a, b = pair(tmp_path, [source_image], [blank_image])
    try:
        assert a.link is not None and a.session is not None and b.link is not None
        link_b = b.link
        b.on_event = lambda e: link_b.conn.abort() if isinstance(e, events.PlanMade) else None
        a.session.submit(CloneChoice(send=True, source=a.infos[0], target=a.link.inventory[0]))
        assert wait_ended(a).code in ("link_lost", "cancelled")
        assert wait_ended(b).code == "link_lost"
        close(a, b)
        assert isinstance(b.error, LinkError)
    finally:
        close(a, b)
