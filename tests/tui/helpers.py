"""Helpers for the wizard's tests: link pairs, a peer in this process."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from textual.pilot import Pilot

from recovery import events
from recovery.cli.agent import lost_pairing
from recovery.engine.local import local_pair
from recovery.engine.peer.clones import CloneSession
from recovery.engine.peer.guard import CodeGuard
from recovery.engine.peer.jobs import offered_disks
from recovery.engine.peer.session import PeerLink, meet
from recovery.errors import RecoveryError
from recovery.link import tcp
from recovery.link.base import Connection
from recovery.link.paced import pace
from recovery.tui.app import WizardApp
from recovery.tui.config import WizardConfig

SAMPLE_MIB = 64


def connection_pair() -> tuple[Connection, Connection]:
    """Two connected Connections over socket pairs (control, data), as a network link (not private)."""
    return local_pair(private=False)


class Peer:
    """The other machine, in this process: wizard-like sessions behind a TCP listener, one after another.

    The wizard under test connects to it (``endpoint``); then either the test
    types ``code`` in the wizard (the wizard drives), or calls :meth:`drive`
    with the wizard's code (this peer drives). ``candidates`` are the paths
    where it looks for a pinned disk (default: ``disks``); ``rate`` holds its
    data channel to that many bytes per second each way (for sessions from
    then on). After a session ends it waits for the next one, with a new code
    (``code`` then says it), as a wizard does; after a failed clone that keeps the pairing, the next
    session is that pairing again (by its secret), as with a wizard.
    """

    def __init__(
        self,
        disks: Sequence[Path],
        tmp: Path,
        *,
        name: str = "peer",
        candidates: list[str] | None = None,
        rate: float | None = None,
        code: str = "2468-1357",
        port: int = 0,
    ) -> None:
        self.disks = [str(d) for d in disks]
        self.name, self.rate, self.log_dir = name, rate, tmp / f"{name}-logs"
        self.offered = offered_disks(self.disks, self.log_dir)
        self.candidates = self.disks if candidates is None else candidates  # the caller's list: it may change
        self.guard = CodeGuard(code)
        self.codes = [code, "1357-8642", "9753-1864", "8642-9753"]  # one per session, in turn
        self.listener = tcp.Listener(tcp.Endpoint("127.0.0.1", port))  # a port: the same machine restarted
        self.endpoint = tcp.Endpoint("127.0.0.1", self.listener.port)
        self.events: list[events.Event] = []
        self.link: PeerLink | None = None
        self.session: CloneSession | None = None
        self.error: RecoveryError | None = None
        self.errors: list[RecoveryError | None] = []  # how each session ended
        self.ready = threading.Event()  # a session is paired
        self.ended = threading.Event()  # a session ended
        self._drive_code: str | bytes | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"peer-{name}", daemon=True)
        self.thread.start()

    @property
    def code(self) -> str:
        return self.guard.code

    def drive(self, code: str) -> None:
        """Pair from this side with the wizard's code (the wizard then serves)."""
        self._drive_code = code

    def _take_code(self) -> str | bytes | None:
        code, self._drive_code = self._drive_code, None
        return code

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn = self.listener.accept(0.5)
            except tcp.AcceptTimeout:
                continue
            except RecoveryError:
                return
            self._session(conn)

    def _session(self, conn: Connection) -> None:
        self.link = self.session = None
        try:
            if self.rate:
                pace(conn, self.rate)  # both ways, as a slow cable
            contact = meet(conn, "wizard", hostname=self.name, sink=self.events.append)
            self.offered = offered_disks(self.disks, self.log_dir)  # as they are now
            self.link = contact.await_pairing(
                self.guard, offered=lambda: self.offered, wants_drive=self._take_code, stop=self._stop
            )
            self.session = CloneSession(
                self.link,
                candidates=lambda: self.candidates,
                offered=lambda: offered_disks(self.disks, self.log_dir),
                sink=self.events.append,
                log_dir=self.log_dir,
            )
            self.ended.clear()
            self.ready.set()
            self.session.serve()
            self.error = None
        except RecoveryError as e:
            self.error = e
        finally:
            self.errors.append(self.error)
            self.ready.clear()
            # The next code (a new one per session), ready before anyone hears this one ended.
            self.guard = CodeGuard(self.codes[min(len(self.errors), len(self.codes) - 1)])
            if self.session is not None and self.error is not None:  # as `recovery agent` does
                lost_pairing(self.guard, self.session, self.error, self.events.append)
                if self.session.kept_pairing(self.error) and self.session.drives:  # as a driving wizard does
                    self._drive_code = self.session.rejoin_after(self.error)
            self.ended.set()
            conn.close()

    def close(self) -> None:
        self._stop.set()
        if self.session is not None:
            self.session.close("the test is over")
        self.listener.close()
        self.thread.join(10)


def in_step(
    name: str,
    disk: Path,
    tmp_path: Path,
    *,
    listen: int | None = None,
    connect: int | None = None,
    rate: float | None = None,
) -> WizardConfig:
    """One of two wizards in this process over loopback TCP: it waits on port ``listen`` (0: any), or
    reaches the other at port ``connect``; ``rate`` holds the link to a slow cable's pace."""
    return WizardConfig(
        link_rate=rate,
        hostname=name,
        disks=(str(disk),),
        cable=False,
        listen=None if listen is None else tcp.Endpoint("127.0.0.1", listen),
        connect=None if connect is None else tcp.Endpoint("127.0.0.1", connect),
        log_dir=tmp_path / name,
        timeout=10,
    )


def free_port() -> int:
    """A port nobody listens on now, so one wizard can be told where before the other one runs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@asynccontextmanager
async def two_in_step(
    source: Path,
    target: Path,
    tmp_path: Path,
    size: tuple[int, int],
    *,
    rate: float | None = None,
    names: tuple[str, str] = ("office-pc", "new-pc"),
) -> AsyncIterator[tuple[WizardApp, Pilot, WizardApp, Pilot]]:
    """Two wizards in step over loopback TCP: office-pc, with ``source``, reaches new-pc, with ``target``,
    which serves (``rate``: its links at a slow cable's pace; ``names``: other names for the two). The
    driving wizard and its pilot, then the serving one and its pilot."""
    serving = WizardApp(in_step(names[1], target, tmp_path / "serving", listen=0, rate=rate))
    async with serving.run_test(size=size) as pb:
        port = await listening(pb, serving)
        driving = WizardApp(in_step(names[0], source, tmp_path / "driving", connect=port))
        async with driving.run_test(size=size) as pa:
            yield driving, pa, serving, pb


async def listening(pilot: Pilot, app: WizardApp) -> int:
    """The port a wizard listens on, once it does."""
    await wait_for(pilot, lambda: app.state.listening is not None, 30, f"{app.state.host} to listen")
    assert app.state.listening is not None
    return app.state.listening[1]


async def wait_for(pilot: Pilot, condition: Callable[[], object], timeout: float = 60.0, what: str = "") -> None:
    """Let the app run until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}; screen: {pilot.app.screen!r}")
        await pilot.pause(0.05)


async def confirm_review(pilot: Pilot, word: str, timeout: float = 60.0) -> None:
    """Type ``word`` into the review's confirmation once it has the focus (keys pressed before the
    screen is mounted would be lost), then Enter."""
    from recovery.tui.screens.steps import ReviewScreen

    def ready() -> bool:
        screen = pilot.app.screen
        return isinstance(screen, ReviewScreen) and getattr(screen.focused, "id", None) == "confirm"

    await wait_for(pilot, ready, timeout, "the review's confirmation")
    await pilot.press(*word, "enter")


def run(scenario: Callable[[], object]) -> None:
    """Run an async test scenario (no pytest-asyncio here)."""
    asyncio.run(scenario())  # type: ignore[arg-type]
