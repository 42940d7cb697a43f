"""The key screens at 80x24, so layout regressions show (pytest-textual-snapshot).

Update after an intended change with ``pytest tests/tui --snapshot-update``
and look at the SVGs in ``__snapshots__`` before committing them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from textual.pilot import Pilot
from textual.screen import Screen

from recovery.tui.advice import advise
from recovery.tui.app import WizardApp
from recovery.tui.messages import LinkStatus
from recovery.tui.model import target_refusal
from recovery.tui.screens.dialogs import HelpScreen
from recovery.tui.screens.pair import PairScreen, PassiveScreen
from recovery.tui.screens.progress import ProgressScreen
from recovery.tui.screens.results import ErrorScreen, SummaryScreen
from recovery.tui.screens.steps import DiskScreen, OptionsScreen, ReviewScreen
from tests.tui import fakes

SnapCompare = Callable[..., bool]


def showing(make: Callable[[], Screen[Any]]) -> Callable[[Pilot], Awaitable[None]]:
    """Wait for the first screen, then push the one under test."""

    async def before(pilot: Pilot) -> None:
        app = pilot.app
        assert isinstance(app, WizardApp)
        while app.state.disks is None:
            await pilot.pause(0.02)
        app.push_screen(make())
        await pilot.pause()

    return before


async def home_ready(pilot: Pilot) -> None:
    app = pilot.app
    assert isinstance(app, WizardApp)
    while app.state.disks is None:
        await pilot.pause(0.02)
    app.post_message(LinkStatus("tcp", "listening on port 7554"))
    await pilot.pause(0.1)


def test_home(snap_compare: SnapCompare) -> None:
    assert snap_compare(WizardApp(fakes.config()), run_before=home_ready)


def test_pairing(snap_compare: SnapCompare) -> None:
    assert snap_compare(WizardApp(fakes.config()), run_before=showing(lambda: PairScreen(fakes.PEER_VIEW)))


def test_pairing_passive(snap_compare: SnapCompare) -> None:
    assert snap_compare(WizardApp(fakes.config()), run_before=showing(lambda: PassiveScreen(fakes.PASSIVE_VIEW)))


def test_target_with_refused_disks(snap_compare: SnapCompare) -> None:
    source = fakes.LOCAL[0]

    def make() -> DiskScreen:
        return DiskScreen(f"The disk to overwrite (on {fakes.THERE})",
                          f"Choose the disk of {fakes.THERE} that becomes the copy. EVERYTHING ON IT WILL BE LOST.",
                          fakes.PEER, {d.path: target_refusal(source, d) for d in fakes.PEER})

    assert snap_compare(WizardApp(fakes.config()), run_before=showing(make))


def test_options(snap_compare: SnapCompare) -> None:
    assert snap_compare(WizardApp(fakes.config()), run_before=showing(lambda: OptionsScreen(fakes.choice())))


def test_review(snap_compare: SnapCompare) -> None:
    assert snap_compare(WizardApp(fakes.config()), run_before=showing(
        lambda: ReviewScreen(fakes.choice(), fakes.HERE, fakes.THERE)), press=["n", "v", "m"])


def test_progress(snap_compare: SnapCompare) -> None:
    assert snap_compare(WizardApp(fakes.config()), run_before=showing(lambda: ProgressScreen(fakes.job())))


def test_progress_passive_in_16_colours(snap_compare: SnapCompare) -> None:
    assert snap_compare(WizardApp(fakes.config(ansi=True)),
                        run_before=showing(lambda: ProgressScreen(fakes.job(passive=True))))


def test_summary(snap_compare: SnapCompare) -> None:
    assert snap_compare(WizardApp(fakes.config()),
                        run_before=showing(lambda: SummaryScreen(fakes.job(finished=True), fakes.HERE)))


def test_peer_lost(snap_compare: SnapCompare) -> None:
    advice = advise("link_lost", "link lost on the data channel: Connection reset by peer", peer=fakes.THERE)
    assert snap_compare(WizardApp(fakes.config()), run_before=showing(
        lambda: ErrorScreen(advice, log="/var/log/usb4-recovery/clone-20261125-101500-sender.jsonl",
                            peer=fakes.THERE)))


def test_help(snap_compare: SnapCompare) -> None:
    assert snap_compare(WizardApp(fakes.config()), run_before=showing(HelpScreen))
