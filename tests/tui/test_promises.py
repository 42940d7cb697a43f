"""What the review promises is what the engine does (issue 21): no hidden state.

The wizard drives a peer in this process (tests/tui/helpers.Peer) whose target is a loop device. The
review lists the mode, rescue mode, resuming or starting over, and what is checked at the end; each
line is compared with what the clone then did (its summary), in both modes, through an aborted clone
that is resumed. Rescue mode, chosen after a read error, belongs to that source: the next clone of
another (healthy) disk runs without it, and its review says so. The serving side is told the same
review before the driver confirms.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot

from recovery.engine.clone.compare import compare
from recovery.engine.peer.jobs import PeerActivity
from recovery.tui.app import WizardApp
from recovery.tui.screens.pair import PairScreen
from recovery.tui.screens.progress import ProgressScreen
from recovery.tui.screens.results import ErrorScreen, SummaryScreen
from recovery.tui.screens.resume import RescueScreen, ResumeScreen
from recovery.tui.screens.steps import DirectionScreen, DiskScreen, OptionsScreen, ReviewScreen
from recovery.tui.widgets import DiskList
from recovery.units import human_size
from tests.helpers import loop_device
from tests.tui.helpers import Peer, run, wait_for
from tests.tui.test_wizard import SIZE, _read_error, config, confirm, on, text_of, type_code

pytestmark = pytest.mark.root  # loop devices

MIB = 1 << 20


@pytest.fixture
def target_device(blank_image: Path) -> Iterator[Path]:
    """The target: a real block device (a loop device over the blank image)."""
    with loop_device(blank_image, partitions=False) as dev:
        yield Path(dev)


def review(app: WizardApp) -> dict[str, str]:
    screen = app.screen
    assert isinstance(screen, ReviewScreen)
    return dict(screen.rows)


async def told_the_peer(pilot: Pilot, peer: Peer, rows: list[tuple[str, str]]) -> None:
    """The serving side was told this review (before the driver confirms it)."""
    await wait_for(
        pilot,
        lambda: any(isinstance(e, PeerActivity) and list(e.review) == rows for e in peer.events),
        30,
        "the serving side to be told the review",
    )


async def to_the_target(pilot: Pilot, *, source_index: int = 0) -> None:
    """From the pairing (or the direction) to the disk to overwrite, this machine sending."""
    if isinstance(pilot.app.screen, PairScreen):
        await pilot.press("enter")
    await on(pilot, DirectionScreen)
    await pilot.press("home", "enter")
    await on(pilot, DiskScreen, "copy")
    await pilot.press(*["down"] * source_index, "enter")
    await on(pilot, DiskScreen, "overwrite")


async def paired_again(pilot: Pilot, peer: Peer, failures: int) -> None:
    """After the ``failures``-th failed clone (each keeps the pairing): that pairing is made again, no
    code typed."""
    app = pilot.app
    assert isinstance(app, WizardApp)
    await wait_for(
        pilot,
        lambda: (
            len(peer.errors) >= failures
            and peer.ready.is_set()
            and app.state.link is not None
            and app.state.link.rejoined
            and not app.state.repairing
        ),
        30,
        "the pairing made again",
    )


async def choose_again(pilot: Pilot, peer: Peer, failures: int) -> None:
    """After a failed clone: choose again on the pairing it kept."""
    await paired_again(pilot, peer, failures)
    await pilot.press("enter")


async def abort_once_durable(pilot: Pilot) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: isinstance(app.screen, ProgressScreen) and app.screen.job.durable > 0, 60)
    await pilot.press("escape", "y")
    await on(pilot, ErrorScreen)


@pytest.mark.parametrize("mode", ["exact", "used"])
def test_the_review_promises_what_the_clone_does_and_a_resume_sends_only_the_rest(
    make_peer: type[Peer], source_image: Path, target_device: Path, tmp_path: Path, mode: str
) -> None:
    """Issue 21 item 2: "Resume it (only the rest is sent)", then everything was sent again (exact mode,
    onto a disk). Item 8: the aborted copy is named as the wizard's own incomplete clone."""
    peer = make_peer([target_device], name="new-laptop", rate=2 * MIB)
    word = target_device.name

    async def scenario() -> None:
        app = WizardApp(config(peer, tmp_path, source_image))
        async with app.run_test(size=SIZE) as pilot:
            await type_code(pilot, peer.code)
            await to_the_target(pilot)
            await pilot.press("enter")
            await on(pilot, OptionsScreen)
            await pilot.press(*(["down"] if mode == "exact" else []), "enter")
            await on(pilot, ReviewScreen)
            said = review(app)
            assert said["Mode"].startswith(f"{mode}:") and said["Rescue"] == "off"
            assert said["Start"] == "from the beginning"
            assert said["DESTROYS"].startswith(f"everything on {word} of new-laptop: ")
            checks = "its BLAKE3 must be the source's" if mode == "exact" else "checks each filesystem"
            assert said["Verify"].startswith("new-laptop reads") and checks in said["Verify"]
            await told_the_peer(pilot, peer, list(said.items()))
            await confirm(pilot, word)
            await abort_once_durable(pilot)
            peer.rate = None
            await choose_again(pilot, peer, 1)
            await to_the_target(pilot)
            incomplete = "incomplete clone of old-laptop's source.img"
            assert incomplete in text_of(app, "#disks")  # not "data nothing here recognises"
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen), 30, "the resume offer")
            await pilot.press("r")
            await on(pilot, OptionsScreen)
            await pilot.press("enter")  # the interrupted clone's mode, as the resume set it
            await on(pilot, ReviewScreen)
            said = review(app)
            assert said["Mode"].startswith(f"{mode}:") and said["Rescue"] == "off"
            assert said["Start"].startswith("resumes at ") and said["Start"].endswith("only the rest is sent")
            assert incomplete in said["DESTROYS"]
            await told_the_peer(pilot, peer, list(said.items()))
            await confirm(pilot, word)
            await on(pilot, SummaryScreen, timeout=90)
            summary = app.screen.job.summary  # type: ignore[attr-defined]
            assert summary is not None and summary.verified is True
            assert summary.mode == mode and not summary.rescue and summary.mapfile is None
            assert summary.resumed > 0 and said["Start"].startswith(f"resumes at {human_size(summary.resumed)} of ")
            if mode == "exact":
                assert summary.image_digest is not None
            else:
                assert summary.checks and all(c["ok"] for c in summary.checks)
        if mode == "exact":
            assert compare(str(source_image), str(target_device)).identical

    run(scenario)


@pytest.mark.parametrize("mode", ["exact", "used"])
def test_rescue_mode_is_for_the_source_that_failed_and_resumes_only_the_rest_never_the_next_disk(
    make_peer: type[Peer],
    source_image: Path,
    target_device: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    """Issue 21 items 1, 2 and 4: rescue mode carried over to the next clone, of a healthy disk, which its
    review never said; an interrupted rescue "resumed" by sending everything again; after "yes" the
    screen advised "--rescue" and its status was below the fold."""
    from recovery.engine.clone import source as source_module

    healthy = tmp_path / "healthy.img"
    shutil.copyfile(source_image, healthy)
    real = source_module.Source.read_into

    def failing(self: source_module.Source, view: memoryview, offset: int) -> None:
        if self.path == str(source_image) and offset >= 8 * MIB:
            raise _read_error(self.path, offset)
        real(self, view, offset)

    monkeypatch.setattr(source_module.Source, "read_into", failing)  # a rescue reads past it, as a disk allows
    peer = make_peer([target_device], name="new-laptop", rate=2 * MIB)  # slow: a rescue is cut short part way
    word = target_device.name

    async def to_the_review(pilot: Pilot, source_index: int = 0) -> dict[str, str]:
        await to_the_target(pilot, source_index=source_index)
        await pilot.press("enter")
        await on(pilot, OptionsScreen)
        await pilot.press(*(["down"] if mode == "exact" else []), "enter")
        await on(pilot, ReviewScreen)
        return review(pilot.app)  # type: ignore[arg-type]

    async def scenario() -> None:
        app = WizardApp(config(peer, tmp_path, source_image, disks=(str(source_image), str(healthy))))
        async with app.run_test(size=SIZE) as pilot:
            await type_code(pilot, peer.code)
            assert (await to_the_review(pilot))["Rescue"] == "off"
            await confirm(pilot, word)
            await wait_for(pilot, lambda: isinstance(app.screen, RescueScreen), 60, "the rescue question")
            await pilot.press("y")
            await on(pilot, ErrorScreen)
            status = app.screen.query_one("#error-status").region
            assert status.height and status.bottom <= SIZE[1] - 1  # on screen at 80x24, above the footer
            assert "Rescue mode is on for source.img" in text_of(app, "#error-status")
            shown = " ".join(text_of(app, n) for n in ("#error-status", "#error-steps", "#error-message"))
            assert "--rescue" not in shown and "run the same command" not in shown
            await paired_again(pilot, peer, 1)
            await pilot.press("r")  # retry: the pairing stayed, no code to type
            await on(pilot, ReviewScreen)
            said = review(app)
            assert said["Rescue"].startswith("on:") and said["Mode"].startswith(f"{mode}:")
            await confirm(pilot, word)
            await abort_once_durable(pilot)  # the rescue is cut short within seconds
            peer.rate = None
            await choose_again(pilot, peer, 2)
            await to_the_target(pilot)
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen), 30, "the resume offer")
            await pilot.press("r")
            await on(pilot, OptionsScreen)
            await pilot.press("enter")
            await on(pilot, ReviewScreen)
            said = review(app)
            assert said["Rescue"].startswith("on:") and said["Start"].startswith("resumes at ")
            await confirm(pilot, word)
            await on(pilot, SummaryScreen, timeout=90)
            rescued = app.screen.job.summary  # type: ignore[attr-defined]
            assert rescued is not None and rescued.rescue and rescued.mapfile and rescued.mode == mode
            assert rescued.resumed > 0 and said["Start"].startswith(f"resumes at {human_size(rescued.resumed)} of ")
            await pilot.press("enter")  # another clone: of the healthy disk this time
            said = await to_the_review(pilot, source_index=1)
            assert said["Copy"].startswith(f"{healthy} of old-laptop") and said["Rescue"] == "off"
            await confirm(pilot, word)
            await on(pilot, SummaryScreen, timeout=90)
            summary = app.screen.job.summary  # type: ignore[attr-defined]
            assert summary is not None and summary.verified and not summary.rescue and summary.mapfile is None

    run(scenario)


def test_esc_keeps_what_is_highlighted_on_the_step_it_leaves(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path
) -> None:
    """Issue 21: Esc lost a choice not yet confirmed with Enter."""
    second = tmp_path / "second.img"
    shutil.copyfile(blank_image, second)
    peer = make_peer([blank_image, second], name="new-laptop")

    async def scenario() -> None:
        app = WizardApp(config(peer, tmp_path, source_image))
        async with app.run_test(size=SIZE) as pilot:
            await type_code(pilot, peer.code)
            await to_the_target(pilot)
            await pilot.press("down", "escape")  # the second disk highlighted, not chosen
            await on(pilot, DiskScreen, "copy")
            await pilot.press("enter")
            await on(pilot, DiskScreen, "overwrite")
            assert app.screen.query_one(DiskList).highlighted == 1
            await pilot.press("enter")
            await on(pilot, OptionsScreen)
            await pilot.press("down", "escape")  # exact highlighted, not confirmed
            await on(pilot, DiskScreen, "overwrite")
            await pilot.press("enter")
            await on(pilot, OptionsScreen)
            assert app.screen.query_one("#mode").value == "exact"  # type: ignore[attr-defined]
            await pilot.press("enter")
            await on(pilot, ReviewScreen)
            assert review(app)["Mode"].startswith("exact:") and str(second) in review(app)["Onto"]

    run(scenario)
