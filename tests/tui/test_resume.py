"""The wizard and an interrupted clone: it offers to resume it, and asks about rescue mode after a
read error. The interrupted clone is a real one (headless processes through a slow relay, killed
once part of it is durable); the peer is in this process (tests/tui/helpers.Peer)."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Static

from recovery import report
from recovery.tui.app import WizardApp
from recovery.tui.config import WizardConfig
from recovery.tui.screens.results import ErrorScreen, SummaryScreen
from recovery.tui.screens.resume import RescueScreen, ResumeScreen
from recovery.tui.screens.steps import DirectionScreen, DiskScreen, OptionsScreen, ReviewScreen
from tests.e2e.relay import Relay
from tests.helpers import CODE, MIB, Recovery
from tests.tui.helpers import Peer, confirm_review, run, wait_for
from tests.tui.test_wizard import SIZE, _read_error, type_code

pytestmark = pytest.mark.root  # the used-mode map reads the sample's filesystems through loop devices


def interrupt_a_clone(source: Path, target: Path, log_dir: Path) -> int:
    """A headless clone of ``source`` onto ``target`` (its journal in ``log_dir``), killed part way."""
    rx = Recovery(
        "receive",
        "--code",
        CODE,
        "--target",
        str(target),
        "--listen",
        "127.0.0.1:0",
        "--yes",
        "--log-dir",
        str(log_dir),
    )
    relay = Relay(rx.wait_event("listening")["port"])
    relay.rate = 3e6
    tx = Recovery("send", "--code", CODE, "--source", str(source), "--to", f"127.0.0.1:{relay.port}")
    durable = tx.wait_durable(4 * MIB)
    rx.kill()
    tx.kill()
    relay.close()
    return durable


async def choose_disks(pilot, code: str) -> None:  # type: ignore[no-untyped-def]
    app = pilot.app
    await type_code(pilot, code)
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(app.screen, DirectionScreen), what="the direction")
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(app.screen, DiskScreen), what="the source")
    await pilot.press("enter")
    await wait_for(
        pilot, lambda: isinstance(app.screen, DiskScreen) and "overwrite" in app.screen.step_title, what="the target"
    )
    await pilot.press("enter")


def test_the_wizard_offers_to_resume_an_interrupted_clone_and_resumes_it(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path
) -> None:
    durable = interrupt_a_clone(source_image, blank_image, tmp_path / "new-laptop-logs")
    peer = make_peer([blank_image], name="new-laptop")
    assert peer.offered[0].unfinished is not None and peer.offered[0].unfinished.done >= durable

    async def scenario() -> None:
        app = WizardApp(
            WizardConfig(
                hostname="old-laptop",
                disks=(str(source_image),),
                listen=None,
                connect=peer.endpoint,
                log_dir=tmp_path / "logs",
                timeout=10,
            )
        )
        async with app.run_test(size=SIZE) as pilot:
            await choose_disks(pilot, peer.code)
            await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen), what="the resume offer")
            await wait_for(pilot, lambda: app.screen.query("#resume-question"))
            question = str(app.screen.query_one("#resume-question", Static).content)
            assert "interrupted clone" in question and "Resume it" in question
            await pilot.press("r")
            await wait_for(pilot, lambda: isinstance(app.screen, OptionsScreen), what="the options")
            await pilot.press("enter")
            await confirm_review(pilot, "blank.img")
            await wait_for(pilot, lambda: isinstance(app.screen, SummaryScreen), 90, "the summary")
            job = app.screen.job  # type: ignore[attr-defined]
            summary = job.summary
            assert summary is not None and summary.verified is True
            assert summary.resumed >= durable
            assert any("were on the target already" in text for _, text in report.summary_rows(summary))

    run(scenario)


def test_after_a_read_error_the_wizard_asks_about_rescue_mode(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recovery.engine.clone import source as source_module

    real = source_module.Source.read_into

    def failing(self: source_module.Source, view: memoryview, offset: int) -> None:
        if offset >= 8 * MIB:
            raise _read_error(self.path, offset)
        real(self, view, offset)

    monkeypatch.setattr(source_module.Source, "read_into", failing)
    peer = make_peer([blank_image], name="new-laptop")

    async def scenario() -> None:
        app = WizardApp(
            WizardConfig(
                hostname="old-laptop",
                disks=(str(source_image),),
                listen=None,
                connect=peer.endpoint,
                log_dir=tmp_path / "logs",
                timeout=10,
            )
        )
        async with app.run_test(size=SIZE) as pilot:
            await choose_disks(pilot, peer.code)
            await wait_for(pilot, lambda: isinstance(app.screen, OptionsScreen), what="the options")
            await pilot.press("enter")
            await confirm_review(pilot, "blank.img")
            await wait_for(
                pilot,
                lambda: isinstance(app.screen, RescueScreen) and app.screen.query("#rescue-question"),
                60,
                "the rescue question",
            )
            assert "unreadable areas. Continue in rescue mode?" in str(
                app.screen.query_one("#rescue-question", Static).content
            )
            await pilot.press("y")
            await wait_for(pilot, lambda: isinstance(app.screen, ErrorScreen), what="the error screen")
            assert app.state.job_choice is not None and app.state.job_choice.rescue
            status = str(app.screen.query_one("#error-status", Static).content)
            assert "Rescue mode is on for source.img" in status
            await pilot.press("r")  # retry the same clone: the pairing stayed, no code to type
            await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen), 30, "the review of the retry")
            assert len(peer.errors) == 1  # the clone's session ended there, and the pairing went on
            await confirm_review(pilot, "blank.img", 30)
            await wait_for(pilot, lambda: isinstance(app.screen, SummaryScreen), 90, "the summary")
            job = app.screen.job  # type: ignore[attr-defined]
            assert job.summary is not None and job.summary.verified is True
            assert job.started.source
            assert app.state.job_choice is not None and app.state.job_choice.rescue
            assert job.summary.mapfile and Path(job.summary.mapfile).is_file()  # it ran in rescue mode

    run(scenario)
