"""The pairing survives what ends a clone on purpose or by a fault: an abort on either side, a source
that cannot be read, a rescue answer; only a lost link, a quit or a restarted process ends it, and the
screens say which (issue 21, items 3, 9 and 10). Two wizards in one process over loopback TCP, or a
wizard and a peer in this process; a restarted peer is a new one on the same port, with a new code."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot

from recovery.engine.clone.compare import compare
from recovery.tui.app import WizardApp
from recovery.tui.screens.home import HomeScreen
from recovery.tui.screens.progress import ProgressScreen
from recovery.tui.screens.results import ErrorScreen, SummaryScreen
from recovery.tui.screens.resume import RescueScreen
from recovery.tui.screens.steps import ReviewScreen
from tests.helpers import wait_until
from tests.tui.helpers import Peer, free_port, in_step, listening, run, two_in_step, wait_for
from tests.tui.test_wizard import MIB, SIZE, confirm, on, text_of, walk_to_review

RATE = 4 * MIB  # a slow cable: there is time to abort mid-copy


def status(app: WizardApp) -> str:
    return text_of(app, ".result-status")


async def paired_again(pilot: Pilot, app: WizardApp) -> None:
    """The pairing the failed clone kept is back, no code typed, and the result stays on screen."""
    await wait_for(pilot, lambda: app.state.session is not None and not app.state.repairing, 30, "the pairing again")
    assert app.state.link is not None and app.state.link.rejoined
    assert isinstance(app.screen, ErrorScreen)


async def mid_copy(pilot: Pilot, app: WizardApp) -> None:
    await wait_for(pilot, lambda: isinstance(app.screen, ProgressScreen) and app.screen.job.done > 0, 30)


@pytest.mark.parametrize("aborts", ["driver", "server"])
def test_an_abort_on_either_side_keeps_the_pairing_and_retry_needs_no_code(
    source_image: Path, blank_image: Path, tmp_path: Path, aborts: str
) -> None:
    async def scenario() -> None:
        async with two_in_step(source_image, blank_image, tmp_path, SIZE, rate=RATE) as (driving, pa, serving, pb):
            codes = serving.state.code, driving.state.code
            await walk_to_review(pa, serving.state.code)
            await confirm(pa, "blank.img")
            await mid_copy(pa, driving)
            await mid_copy(pb, serving)
            aborting = pa if aborts == "driver" else pb
            await aborting.press("escape", "y")
            await on(pa, ErrorScreen)
            await on(pb, ErrorScreen)
            assert "Still paired with new-pc: r retries this clone" in status(driving)
            assert "Still paired with office-pc: its user chooses what comes next" in status(serving)
            said = driving if aborts == "server" else serving  # the other side says who aborted
            who = "new-pc" if aborts == "server" else "office-pc"
            assert f"{who}'s user aborted the clone" in text_of(said, "#error-message")
            await paired_again(pa, driving)
            await paired_again(pb, serving)
            assert (serving.state.code, driving.state.code) == codes  # nobody had to show or type one
            await pa.press("r")
            await on(pa, ReviewScreen)  # no code, no first screen: straight to the review
            await confirm(pa, "blank.img")
            await on(pa, SummaryScreen, timeout=90)
            await on(pb, SummaryScreen, timeout=30)
        assert compare(str(source_image), str(blank_image)).identical

    run(scenario)


def test_a_read_error_and_the_rescue_answer_keep_the_pairing(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recovery.engine.clone import source
    from recovery.errors import SourceReadError

    real = source.Source.read_into
    failing = [True]

    def read_into(self: source.Source, view: memoryview, offset: int) -> None:
        if failing[0] and offset >= 8 * MIB:
            raise SourceReadError(f"cannot read the source {self.path} at byte {offset}: Input/output error")
        real(self, view, offset)

    monkeypatch.setattr(source.Source, "read_into", read_into)
    peer = make_peer([blank_image], name="new-pc")

    async def scenario() -> None:
        app = WizardApp(in_step("office-pc", source_image, tmp_path, connect=peer.endpoint.port))
        async with app.run_test(size=SIZE) as pilot:
            await walk_to_review(pilot, peer.code)
            await confirm(pilot, "blank.img")
            await on(pilot, RescueScreen, timeout=60)
            await pilot.press("n")  # not in rescue mode: a retry may do
            await on(pilot, ErrorScreen)
            assert app.screen.advice.code == "source_read"  # type: ignore[attr-defined]
            assert "Still paired with new-pc" in status(app)
            await paired_again(pilot, app)
            assert peer.errors[0] is not None and peer.errors[0].code == "source_read"
            failing[0] = False  # the disk woke up
            await pilot.press("r")
            await on(pilot, ReviewScreen)
            await confirm(pilot, "blank.img")
            await on(pilot, SummaryScreen, timeout=90)
        assert compare(str(source_image), str(blank_image)).identical
        wait_until(lambda: len(peer.errors) == 2, 30, "the peer's second session to end")
        assert peer.errors[1] is not None and "office-pc's user quit the wizard" in peer.errors[1].message  # a bye

    run(scenario)


@pytest.mark.parametrize("quits", ["office-pc", "new-pc"])
def test_a_quit_mid_clone_ends_the_pairing_and_the_other_screen_says_the_user_quit(
    source_image: Path, blank_image: Path, tmp_path: Path, quits: str
) -> None:
    port = free_port()
    serving = WizardApp(in_step("new-pc", blank_image, tmp_path, listen=port, rate=RATE))
    driving = WizardApp(in_step("office-pc", source_image, tmp_path, connect=port))
    quitting, staying = (driving, serving) if quits == "office-pc" else (serving, driving)

    async def scenario() -> None:
        async with staying.run_test(size=SIZE) as stays:
            async with quitting.run_test(size=SIZE) as quits_now:
                pa, pb = (quits_now, stays) if quitting is driving else (stays, quits_now)
                await walk_to_review(pa, serving.state.code)
                await confirm(pa, "blank.img")
                await mid_copy(pa, driving)
                await mid_copy(pb, serving)
                await quits_now.press("ctrl+q", "y")
            await wait_for(stays, lambda: staying.state.session is None and not staying.state.repairing, 30)
            await on(stays, ErrorScreen)
            assert text_of(staying, "#topbar").endswith(f"{quits} ended the pairing")
            assert f"{quits}'s user quit the wizard" in text_of(staying, "#error-message")
            assert "is now INCOMPLETE" in text_of(staying, "#error-state")
            assert staying.state.code in status(staying)  # pairing again needs a code

    run(scenario)


def test_a_quit_after_verified_is_said_on_the_other_summary(
    source_image: Path, blank_image: Path, tmp_path: Path
) -> None:
    serving = WizardApp(in_step("new-pc", blank_image, tmp_path, listen=0))

    async def scenario() -> None:
        async with serving.run_test(size=SIZE) as pb:
            driving = WizardApp(in_step("office-pc", source_image, tmp_path, connect=await listening(pb, serving)))
            async with driving.run_test(size=SIZE) as pa:  # closed when the block ends, after its ctrl+q
                await walk_to_review(pa, serving.state.code)
                await confirm(pa, "blank.img")
                await on(pa, SummaryScreen, timeout=60)
                await on(pb, SummaryScreen, timeout=30)
                await pa.press("ctrl+q")
            await wait_for(pb, lambda: serving.state.session is None, 30, "the pairing to end")
            assert isinstance(serving.screen, SummaryScreen)  # the verdict stays, with what happened since
            said = status(serving)
            assert "office-pc ended the pairing (office-pc's user quit the wizard)" in said
            assert serving.state.code in said

    run(scenario)


def test_resume_by_itself_stops_waiting_when_the_other_machine_restarted(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path
) -> None:
    """Item 3: after a pulled cable the user allowed resuming by itself; the other machine's process
    then restarted (a new code, no secret of the lost pairing): waiting is over, and the screen says why."""
    peer = make_peer([source_image], name="old-pc", rate=RATE)
    port = peer.endpoint.port

    async def scenario() -> None:
        app = WizardApp(in_step("new-pc", blank_image, tmp_path, connect=port))
        async with app.run_test(size=SIZE) as pilot:
            await walk_to_review(pilot, peer.code, receive=True)
            await confirm(pilot, "blank.img")
            await wait_for(pilot, lambda: isinstance(app.screen, ProgressScreen) and app.screen.job.durable > 0, 30)
            assert peer.link is not None
            peer.link.conn.abort()  # the cable is pulled ...
            await on(pilot, ErrorScreen)
            await wait_for(pilot, lambda: app.state.link is None and peer.ended.is_set(), 30)
            peer.close()  # ... and old-pc's process ends; it starts again, on the same port, with a new code
            again = make_peer([source_image], name="old-pc", port=port, code="7777-1111")
            await pilot.press("a")
            await wait_for(pilot, lambda: "old-pc restarted: type the code it shows now" in status(app), 30)
            assert not app.state.auto_resume and app.state.link is None
            await pilot.press("enter")
            await on(pilot, HomeScreen)
            assert "old-pc restarted" in text_of(app, "#home-notice")
            assert "pair with old-pc again" in text_of(app, "#home-retry")  # the clone to retry is kept
            await pilot.press("c", *again.code, "enter")
            await on(pilot, ReviewScreen)

    run(scenario)
