"""Pilot drives the wizard: the demo to a verified summary, the passive side, the error screens."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Static

from recovery.engine.compare import compare
from recovery.engine.jobs import CloneChoice
from recovery.errors import SourceReadError
from recovery.tui.app import WizardApp
from recovery.tui.config import WizardConfig
from recovery.tui.demo import DemoWorld
from recovery.tui.screens.dialogs import ConfirmScreen
from recovery.tui.screens.home import HomeScreen
from recovery.tui.screens.pair import PairScreen, PassiveScreen
from recovery.tui.screens.progress import ProgressScreen
from recovery.tui.screens.results import ErrorScreen, SummaryScreen
from recovery.tui.screens.steps import DirectionScreen, DiskScreen, OptionsScreen, ReviewScreen
from recovery.tui.widgets import DiskList
from tests.tui.helpers import Peer, run, wait_for

MIB = 1 << 20
SIZE = (80, 24)


def topbar(app: WizardApp) -> str:
    return str(app.screen.query_one("#topbar", Static).content)


def shows(app: WizardApp, screen: type) -> bool:
    """``screen`` is on top and composed (its top bar is there to read)."""
    return isinstance(app.screen, screen) and bool(app.screen.query("#topbar"))


async def type_code(pilot: Pilot, code: str) -> None:
    """Wait until the other machine has reached this one, then type its code on the first screen."""
    app = pilot.app
    assert isinstance(app, WizardApp)
    await wait_for(pilot, lambda: any(s.drivable for s in app.state.seen), 30, "the other machine to reach us")
    await pilot.press("c", *code, "enter")
    await wait_for(pilot, lambda: shows(app, PairScreen), 30, "the pairing screen")


async def walk_to_review(pilot: Pilot, code: str, target_index: int = 0) -> None:
    """Pairing, direction (this machine sends), source, target, options: up to the review."""
    app = pilot.app
    await type_code(pilot, code)
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(app.screen, DirectionScreen), what="the direction")
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(app.screen, DiskScreen), what="the source")
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(app.screen, DiskScreen) and "overwrite" in app.screen.step_title,
                   what="the target")
    for _ in range(target_index):
        await pilot.press("down")
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(app.screen, OptionsScreen), what="the options")
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen), what="the review")


def test_demo_runs_from_the_first_screen_to_a_verified_summary() -> None:
    async def scenario() -> None:
        with DemoWorld(64) as world:
            world.start()
            app = WizardApp(world.config())
            async with app.run_test(size=SIZE) as pilot:
                await walk_to_review(pilot, world.code)
                await pilot.press("x", "enter")  # the wrong name: nothing starts
                assert isinstance(app.screen, ReviewScreen)
                await pilot.press("backspace", *"new-disk.img", "enter")
                await wait_for(pilot, lambda: isinstance(app.screen, SummaryScreen), 60, "the summary")
                assert isinstance(app.screen, SummaryScreen)
                job = app.screen.job
                assert job.summary is not None and job.summary.verified is True
                screen = app.screen
                await wait_for(pilot, lambda: screen.demo_check, 30, "the demo's own check")
                assert "byte-identical" in screen.demo_check
                assert job.started.log and Path(job.started.log).is_file()
            assert compare(str(world.source), str(world.blank)).identical
            agent = world.agent
        assert agent is not None and agent.poll() is not None  # the simulated peer is gone
        assert not world.workdir.exists()

    run(scenario)


def test_the_demo_shows_a_too_small_target_disabled_with_the_reason() -> None:
    async def scenario() -> None:
        with DemoWorld(64) as world:
            world.start()
            app = WizardApp(world.config())
            async with app.run_test(size=SIZE) as pilot:
                await type_code(pilot, world.code)
                await pilot.press("enter", "enter", "enter")
                await wait_for(pilot, lambda: isinstance(app.screen, DiskScreen)
                               and "overwrite" in app.screen.step_title)
                screen = app.screen
                assert isinstance(screen, DiskScreen)
                disks = screen.query_one(DiskList)
                assert disks.get_option_at_index(1).disabled
                assert "too small" in (screen.refusals[str(world.small)] or "")
                assert not disks.get_option_at_index(0).disabled

    run(scenario)


def test_the_passive_side_shows_the_clone_and_can_abort_it(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path
) -> None:
    peer = make_peer([source_image], name="old-laptop", rate=2 * MIB)

    async def scenario() -> None:
        app = WizardApp(WizardConfig(hostname="new-laptop", disks=(str(blank_image),), listen=None,
                                     connect=peer.endpoint, log_dir=tmp_path / "logs", timeout=10))
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: bool(app.state.seen), 30, "the peer to be reached")
            peer.drive(app.state.code)
            await wait_for(pilot, lambda: peer.ready.is_set() and shows(app, PassiveScreen), 30)
            assert "Controlled from old-laptop" in topbar(app)
            assert peer.link is not None and peer.session is not None
            peer.session.submit(CloneChoice(send=True, source=peer.offered[0], target=peer.link.inventory[0]))
            await wait_for(pilot, lambda: shows(app, ProgressScreen)
                           and app.screen.job.done > 0,  # type: ignore[attr-defined]
                           30, "progress on the passive side")
            assert isinstance(app.screen, ProgressScreen) and app.screen.job.passive
            assert "Controlled from old-laptop" in topbar(app)
            assert "old-laptop is OVERWRITING" in app.screen.job.started.action
            await pilot.press("escape")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await wait_for(pilot, lambda: isinstance(app.screen, ErrorScreen), 30, "the error screen")
            assert isinstance(app.screen, ErrorScreen) and app.screen.advice.code == "cancelled"
            await wait_for(pilot, peer.ended.is_set, 30, "the peer's session to end")
        assert peer.error is not None and peer.error.code == "cancelled"
        assert "the peer cancelled" in peer.error.message

    run(scenario)


def test_a_lost_peer_is_a_screen_that_waits_for_it(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path
) -> None:
    peer = make_peer([source_image], name="old-laptop", rate=2 * MIB)

    async def scenario() -> None:
        app = WizardApp(WizardConfig(hostname="new-laptop", disks=(str(blank_image),), listen=None,
                                     connect=peer.endpoint, log_dir=tmp_path / "logs", timeout=10))
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: bool(app.state.seen), 30, "the peer to be reached")
            peer.drive(app.state.code)
            await wait_for(pilot, lambda: peer.ready.is_set() and shows(app, PassiveScreen), 30)
            assert peer.link is not None and peer.session is not None
            peer.session.submit(CloneChoice(send=True, source=peer.offered[0], target=peer.link.inventory[0]))
            await wait_for(pilot, lambda: isinstance(app.screen, ProgressScreen) and app.screen.job.done > 0, 30)
            peer.link.conn.abort()  # the cable is pulled
            await wait_for(pilot, lambda: isinstance(app.screen, ErrorScreen), 30, "the error screen")
            screen = app.screen
            assert isinstance(screen, ErrorScreen) and screen.advice.waiting
            assert screen.advice.title == "The link to old-laptop was lost"
            await wait_for(pilot, lambda: screen.is_mounted and screen.query("#error-status"))
            assert "Waiting for old-laptop" in str(screen.query_one("#error-status", Static).content)

    run(scenario)


def test_a_refused_target_is_a_screen_that_says_what_to_do(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path
) -> None:
    peer = make_peer([blank_image], name="new-laptop", candidates=[])  # the target vanished there

    async def scenario() -> None:
        app = WizardApp(WizardConfig(hostname="old-laptop", disks=(str(source_image),), listen=None,
                                     connect=peer.endpoint, log_dir=tmp_path / "logs", timeout=10))
        async with app.run_test(size=SIZE) as pilot:
            await walk_to_review(pilot, peer.code)
            await pilot.press(*"blank.img", "enter")
            await wait_for(pilot, lambda: isinstance(app.screen, ErrorScreen), 30, "the error screen")
            screen = app.screen
            assert isinstance(screen, ErrorScreen) and screen.advice.code == "refused"
            assert screen.advice.title == "The clone was refused"
            assert "no disk of new-laptop" in screen.advice.message
            assert any("another target" in s for s in screen.advice.steps)
        assert blank_image.stat().st_blocks == 0

    run(scenario)


def _drive_failing_read(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path
) -> tuple[Peer, list[ErrorScreen]]:
    peer = make_peer([blank_image], name="new-laptop")
    shown: list[ErrorScreen] = []

    async def scenario() -> None:
        app = WizardApp(WizardConfig(hostname="old-laptop", disks=(str(source_image),), listen=None,
                                     connect=peer.endpoint, log_dir=tmp_path / "logs", timeout=10))
        async with app.run_test(size=SIZE) as pilot:
            await walk_to_review(pilot, peer.code)
            await pilot.press(*"blank.img", "enter")
            await wait_for(pilot, lambda: isinstance(app.screen, ErrorScreen), 60, "the error screen")
            assert isinstance(app.screen, ErrorScreen)
            shown.append(app.screen)
            await wait_for(pilot, peer.ended.is_set, 30)

    run(scenario)
    return peer, shown


def _read_error(path: str, offset: int) -> SourceReadError:
    return SourceReadError(f"cannot read the source {path} at byte {offset}: Input/output error",
                           hint="the disk may be failing")


def test_a_source_read_error_is_a_screen_on_both_sides(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from recovery.engine import send

    def unreadable(path: str, **kwargs: object) -> object:
        raise _read_error(path, 0)

    monkeypatch.setattr(send, "Source", unreadable)
    peer, (screen,) = _drive_failing_read(make_peer, source_image, blank_image, tmp_path)
    assert screen.advice.code == "source_read"
    assert screen.advice.title == "The source disk cannot be read"
    assert "Input/output error" in screen.advice.message
    assert screen.advice.steps[0] == "The disk may be failing"
    assert screen.log_path and Path(screen.log_path).is_file()
    assert peer.error is not None and peer.error.code == "source_read"  # the peer was told why
    assert "Input/output error" in peer.error.message


def test_a_read_error_mid_stream_names_the_disk_not_the_link(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from recovery.engine import source

    real = source.Source.read_into

    def failing(self: source.Source, view: memoryview, offset: int) -> None:
        if offset >= 8 * MIB:
            raise _read_error(self.path, offset)
        real(self, view, offset)

    monkeypatch.setattr(source.Source, "read_into", failing)
    peer, (screen,) = _drive_failing_read(make_peer, source_image, blank_image, tmp_path)
    assert screen.advice.code == "source_read"
    assert peer.error is not None and peer.error.code == "source_read"


def test_a_wrong_code_either_way_pairs_nothing(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path
) -> None:
    peer = make_peer([blank_image], name="new-laptop")

    async def scenario() -> None:
        app = WizardApp(WizardConfig(hostname="old-laptop", disks=(str(source_image),), listen=None,
                                     connect=peer.endpoint, log_dir=tmp_path / "logs", timeout=10))
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: any(s.drivable for s in app.state.seen), 30, "the peer to be reached")
            await pilot.press("c", *"1111-2222", "enter")  # typed here, wrong
            await wait_for(pilot, lambda: "does not match" in app.state.status.get("peer", ""), 30)
            peer.drive("3333-4444")  # the peer guesses ours, wrong
            await wait_for(pilot, lambda: "wrong pairing code" in app.state.status.get("peer", ""), 30)
            await pilot.pause(0.5)
            assert isinstance(app.screen, HomeScreen)
            assert app.state.session is None and peer.link is None
            await pilot.press("c", *peer.code, "enter")  # the right code still works
            await wait_for(pilot, lambda: isinstance(app.screen, PairScreen), 30)

    run(scenario)


def test_a_peer_whose_name_is_markup_is_shown_as_plain_text(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path
) -> None:
    """``[/x]`` once crashed the wizard: every screen that names the peer shows it as it is."""
    name = "[/x][b]evil[/b][link=http://x]"
    peer = make_peer([blank_image], name=name)

    async def scenario() -> None:
        app = WizardApp(WizardConfig(hostname="old-laptop", disks=(str(source_image),), listen=None,
                                     connect=peer.endpoint, log_dir=tmp_path / "logs", timeout=10))
        async with app.run_test(size=SIZE) as pilot:
            await type_code(pilot, peer.code)
            assert name in topbar(app)
            await pilot.press("enter")
            await wait_for(pilot, lambda: shows(app, DirectionScreen), what="the direction")
            await pilot.press("enter", "enter")
            await wait_for(pilot, lambda: shows(app, DiskScreen) and "overwrite" in app.screen.step_title,
                           what="the target")
            assert name in topbar(app)
            await pilot.press("enter", "enter")
            await wait_for(pilot, lambda: shows(app, ReviewScreen), what="the review")
            review = str(app.screen.query_one("#review", Static).content)
            assert name in review

    run(scenario)
