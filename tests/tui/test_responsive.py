"""The wizard's screen never waits on the link: the pairing shows before the link has said its speed
(asking it may run `ip` for seconds), and quitting does not wait for the other machine to hear bye."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from textual.worker import NoActiveWorker, get_current_worker

from recovery.link.base import Connection
from recovery.tui.app import WizardApp
from recovery.tui.screens.pair import SPEED_PENDING, PairScreen
from tests.tui.helpers import Peer, run, wait_for
from tests.tui.test_wizard import SIZE, config, on, text_of, type_code


def test_the_pairing_shows_at_once_and_the_speed_once_the_link_says_it(
    make_peer: type[Peer],
    source_image: Path,
    blank_image: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_speed = Connection.speed
    answer = threading.Event()  # the link answers the wizard's worker once this is set
    asked_from: list[threading.Thread] = []

    def slow_speed(conn: Connection) -> str | None:
        asked_from.append(threading.current_thread())
        try:
            get_current_worker()
        except NoActiveWorker:
            return real_speed(conn)  # the pairing's own threads (the peer's event)
        answer.wait(30)  # a wizard's worker: as slow as `ip` can be
        return "9 Gb/s (test0)"

    monkeypatch.setattr(Connection, "speed", slow_speed)
    peer = make_peer([blank_image], name="new-laptop")

    async def scenario() -> None:
        app = WizardApp(config(peer, tmp_path, source_image))
        async with app.run_test(size=SIZE) as pilot:
            await type_code(pilot, peer.code)
            await on(pilot, PairScreen)
            assert f"Speed {SPEED_PENDING}" in text_of(app, "#pair-facts")
            answer.set()
            await wait_for(pilot, lambda: "9 Gb/s (test0)" in text_of(app, "#pair-facts"), 30, "the speed")
            assert app.state.peer is not None and app.state.peer.speed == "9 Gb/s (test0)"
        assert threading.main_thread() not in asked_from  # never the UI thread

    run(scenario)


def test_quitting_does_not_wait_for_the_other_machine_to_hear_bye(
    make_peer: type[Peer],
    source_image: Path,
    blank_image: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    peer = make_peer([blank_image], name="new-laptop")
    let_close = threading.Event()

    async def scenario() -> None:
        app = WizardApp(config(peer, tmp_path, source_image))
        async with app.run_test(size=SIZE) as pilot:
            await type_code(pilot, peer.code)
            await on(pilot, PairScreen)
            session = app.state.session
            assert session is not None
            real_close = session.close

            def slow_close(reason: str = "") -> None:  # a peer that takes its time (up to 5.5 s for real)
                let_close.wait(30)
                real_close(reason)

            monkeypatch.setattr(session, "close", slow_close)
            started = time.monotonic()
        assert time.monotonic() - started < 5, "the wizard waited for the session to close"
        let_close.set()
        assert peer.ended.wait(10), "the peer's session did not end after the wizard closed"
        assert [str(e) for e in peer.errors] == ["old-laptop ended the session: old-laptop's user quit the wizard"]

    run(scenario)
