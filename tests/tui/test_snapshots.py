"""The key screens at 80x24 and at 60x20, so layout regressions show (pytest-textual-snapshot).

Update after an intended change with ``pytest tests/tui --snapshot-update``
and look at the SVGs in ``__snapshots__`` before committing them
(``rsvg-convert`` turns them into PNGs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from textual.css.query import NoMatches
from textual.pilot import Pilot
from textual.screen import Screen

from recovery import events
from recovery.protocol.messages import ImageEntry, Images
from recovery.tui.advice import advise
from recovery.tui.app import WizardApp
from recovery.tui.messages import Dismissed, LinkStatus, ListeningOn, LobbyEvent, RetryAsked, StartOverAsked
from recovery.tui.model import Choice, image_disk, target_note, target_refusal
from recovery.tui.screens.dialogs import HelpScreen
from recovery.tui.screens.folder import FolderScreen
from recovery.tui.screens.layout import LayoutScreen
from recovery.tui.screens.pair import PairScreen, PassiveScreen
from recovery.tui.screens.progress import ProgressScreen
from recovery.tui.screens.results import ErrorScreen, Offer, SummaryScreen
from recovery.tui.screens.steps import DiskScreen, OptionsScreen, ReviewScreen
from tests.tui import fakes
from tests.tui.helpers import wait_for

SnapCompare = Callable[..., bool]
SIZES = pytest.mark.parametrize("size", [(80, 24), (60, 20)], ids=["80x24", "60x20"])
DRIVER_OFFERS = [Offer("enter", "Another clone", StartOverAsked), Offer("r", "Retry", RetryAsked)]
READY = 30.0  # seconds the app has to read the (fake) disks


async def disks_read(pilot: Pilot) -> WizardApp:
    """The app, once it has read its disks (its first screen is up)."""
    app = pilot.app
    assert isinstance(app, WizardApp)
    await wait_for(pilot, lambda: app.state.disks is not None, READY, "the disks to be read")
    return app


def showing(make: Callable[[], Screen[Any]]) -> Callable[[Pilot], Awaitable[None]]:
    """Wait for the first screen, then push the one under test."""

    async def before(pilot: Pilot) -> None:
        app = await disks_read(pilot)
        app.push_screen(make())
        await pilot.pause()

    return before


async def home_ready(pilot: Pilot) -> None:
    app = await disks_read(pilot)
    app.post_message(LinkStatus("tcp", "listening on port 7554"))
    app.post_message(ListeningOn("tcp", "", 7554))
    await wait_for(
        pilot,
        lambda: app.state.listening == ("", 7554) and "tcp" in app.state.status,
        READY,
        "the home screen to hear where it listens",
    )
    await pilot.pause()


def app(**kw: object) -> WizardApp:
    return WizardApp(fakes.config(**kw))


@SIZES
def test_home(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    assert snap_compare(app(), run_before=home_ready, terminal_size=size)


def pairing_failed(**attempt: Any) -> Callable[[Pilot], Awaitable[None]]:
    """The first screen, after a pairing attempt with a code failed as ``attempt`` says."""

    async def before(pilot: Pilot) -> None:
        await home_ready(pilot)
        app = pilot.app
        assert isinstance(app, WizardApp)
        failed = events.PairingAttempt(peer=f"{fakes.THERE} (192.0.2.7:7554)", ok=False, host=fakes.THERE, **attempt)
        app.post_message(LobbyEvent(failed))
        await wait_for(pilot, lambda: bool(app.state.notice), READY, "the notice")
        await pilot.pause()

    return before


@SIZES
def test_a_wrong_code_typed_here(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    said = "the pairing code does not match the one shown on the screen of new-laptop"
    typed = pairing_failed(reason="wrong_code", message=said, tries_left=2, drove=True)
    assert snap_compare(app(), run_before=typed, terminal_size=size)


@SIZES
def test_the_last_wrong_code_typed_there(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    typed = pairing_failed(reason="wrong_code", message="it gave a wrong pairing code", tries_left=0, new_code=True)
    assert snap_compare(app(), run_before=typed, terminal_size=size)


def test_pairing(snap_compare: SnapCompare) -> None:
    assert snap_compare(app(), run_before=showing(lambda: PairScreen(fakes.PEER_VIEW)))


def test_pairing_passive(snap_compare: SnapCompare) -> None:
    assert snap_compare(
        app(),
        run_before=showing(
            lambda: PassiveScreen(
                fakes.PASSIVE_VIEW, "choosing the disk to overwrite (step 4 of 6)", "verified: /dev/sda"
            )
        ),
    )


@SIZES
def test_target_with_refused_disks(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    """The same-size disk; a smaller one the source fits once shrunk (it says so); one too small even then,
    and the boot stick (refused, with why)."""
    source = fakes.LOCAL[0]
    tiny = dataclasses.replace(fakes.PEER[1], path="/dev/sdc", serial="2131E5A1B2C4", size=32 * fakes.GIB)
    disks = (*fakes.PEER, tiny)

    def make() -> DiskScreen:
        return DiskScreen(
            "target",
            f"The disk to overwrite (on {fakes.THERE})",
            f"Choose the disk of {fakes.THERE} that becomes the copy. EVERYTHING ON IT WILL BE LOST.",
            disks,
            {d.path: target_refusal(source, d) for d in disks},
            notes={d.path: target_note(source, d) for d in disks},
        )

    assert snap_compare(app(), run_before=showing(make), terminal_size=size)


FOLDER = Images(
    folder="/media/usb",
    images=(
        ImageEntry(
            name="office-pc-2026-12-01.img",
            file_bytes=21 << 30,
            size=512 << 30,
            sector_size=512,
            source="/dev/nvme0n1, Samsung 980 S123, 512.0 GiB",
            source_host="office-pc",
            created="2026-12-01T14:02:11Z",
            mode="used",
        ),
        ImageEntry(name="[red]vault[/red].img", file_bytes=9 << 30, size=256 << 30, sector_size=512, encrypted=True),
        ImageEntry(name="cut.img", file_bytes=1 << 30, problem="the image is incomplete: it has no index"),
    ),
    places=("/media/usb",),
    free=700 << 30,
)


def folder_screen(step: str) -> FolderScreen:
    """A folder of the peer, its answer shown (the save proposes a name from the disk and the day)."""
    save = step == "folder"
    screen = FolderScreen(
        step,
        f"{'Save an image' if save else 'The image to restore'} (on {fakes.THERE})",
        "Choose.",
        here=False,
        ask=lambda folder: None,
        folder="/media/usb",
        name="Samsung-980-2026-12-06.img" if save else "",
    )
    return screen


def showing_found(step: str) -> Callable[[Pilot], Awaitable[None]]:
    async def before(pilot: Pilot) -> None:
        app = await disks_read(pilot)
        screen = folder_screen(step)
        app.push_screen(screen)
        await pilot.pause()
        screen.show_found(FOLDER)
        await pilot.pause()

    return before


@pytest.mark.parametrize("step", ["folder", "image"])
def test_a_folder_of_the_peer_to_save_an_image_in_or_restore_one_from(snap_compare: SnapCompare, step: str) -> None:
    assert snap_compare(app(), run_before=showing_found(step))


def test_review_of_an_image_save(snap_compare: SnapCompare) -> None:
    source = fakes.LOCAL[0]
    path = "/media/usb/Samsung-980-2026-12-06.img"
    choice = Choice(send=True, source=source, target=image_disk(path, source.size), image_target=path)
    assert snap_compare(app(), run_before=showing(lambda: ReviewScreen(choice, fakes.HERE, fakes.THERE)))


def test_options(snap_compare: SnapCompare) -> None:
    assert snap_compare(app(), run_before=showing(lambda: OptionsScreen(fakes.choice())))


def test_options_of_an_encrypted_image_save_whose_passphrases_differ(snap_compare: SnapCompare) -> None:
    source = fakes.LOCAL[0]
    path = "/media/usb/Samsung-980-2026-12-06.img"
    choice = Choice(
        send=True, source=source, target=image_disk(path, source.size), image_target=path, passphrase="hunter22"
    )
    problem = "The two passphrases differ: type the same one twice"
    assert snap_compare(app(), run_before=showing(lambda: OptionsScreen(choice, problem)))


@SIZES
def test_layout_of_a_shrink(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    """The new layout beside the old one, each partition with what happens to it, at both sizes."""
    choice = Choice(send=True, source=fakes.LOCAL[0], target=fakes.PEER[1])
    screen = showing(lambda: LayoutScreen(choice, fakes.HERE, fakes.THERE))
    assert snap_compare(app(), run_before=screen, terminal_size=size)


def test_layout_with_a_size_chosen_and_another_refused(snap_compare: SnapCompare) -> None:
    """The root sized by the user (the swap fits around it), then a size below its smallest typed: the
    field stays open with why it was not applied, and the footer offers to apply or cancel."""
    choice = Choice(send=True, source=fakes.LOCAL[0], target=fakes.PEER[1])

    async def before(pilot: Pilot) -> None:
        await showing(lambda: LayoutScreen(choice, fakes.HERE, fakes.THERE))(pilot)
        await pilot.press("s", *"120G", "enter", "s", *"10G", "enter")
        await pilot.pause()

    assert snap_compare(app(), run_before=before, terminal_size=(100, 40))


def test_layout_the_estimate_cannot_make(snap_compare: SnapCompare) -> None:
    """Why, and no way on but Esc (the footer has no Continue)."""
    tiny = dataclasses.replace(fakes.PEER[1], size=32 * fakes.GIB)
    choice = Choice(send=True, source=fakes.LOCAL[0], target=tiny)
    assert snap_compare(app(), run_before=showing(lambda: LayoutScreen(choice, fakes.HERE, fakes.THERE)))


@SIZES
def test_review_after_the_disks_changed(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    changes = ["the target nvme0n1 on new-laptop: its partition table changed since it was chosen"]
    assert snap_compare(
        app(),
        run_before=showing(lambda: ReviewScreen(fakes.choice(), fakes.HERE, fakes.THERE, changes)),
        press=["n", "v", "m"],
        terminal_size=size,
    )


def interrupted_rescue() -> Choice:
    """A rescue of LOCAL[0] cut short on PEER[0], to resume: the target named by its journal."""
    choice = fakes.choice()
    assert choice.source is not None and choice.target is not None
    target = fakes.interrupted(choice.target, choice.source, rescue=True)
    return dataclasses.replace(choice, target=target, rescue=True)


@SIZES
def test_review_of_an_interrupted_rescue(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    """Issue 21: everything the clone will do is on the screen at both sizes, names never cut."""
    changes = ["the same disks as before, found again by their identity"]
    assert snap_compare(
        app(),
        run_before=showing(lambda: ReviewScreen(interrupted_rescue(), fakes.HERE, fakes.THERE, changes)),
        terminal_size=size,
    )


@SIZES
def test_review_on_the_serving_side(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    """The serving machine (new-laptop, whose disk is overwritten) is shown the same review before the driver
    confirms it."""
    rows = ReviewScreen(interrupted_rescue(), fakes.HERE, fakes.THERE).rows
    doing = "reviewing the clone before confirming it (step 6 of 6)"
    driver = dataclasses.replace(fakes.PASSIVE_VIEW, hostname=fakes.HERE)
    assert snap_compare(
        app(hostname=fakes.THERE),
        run_before=showing(lambda: PassiveScreen(driver, doing, "", rows)),
        terminal_size=size,
    )


@SIZES
def test_a_target_holding_the_wizards_incomplete_clone(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    source = fakes.LOCAL[0]
    disks = (fakes.interrupted(fakes.PEER[0], source), *fakes.PEER[1:])

    def make() -> DiskScreen:
        return DiskScreen(
            "target",
            f"The disk to overwrite (on {fakes.THERE})",
            f"Choose the disk of {fakes.THERE} that becomes the copy. EVERYTHING ON IT WILL BE LOST.",
            disks,
            {d.path: target_refusal(source, d) for d in disks},
            notes={d.path: target_note(source, d) for d in disks},
        )

    assert snap_compare(app(), run_before=showing(make), terminal_size=size)


@SIZES
def test_progress(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    assert snap_compare(app(), run_before=showing(lambda: ProgressScreen(fakes.job())), terminal_size=size)


def test_progress_reading_back(snap_compare: SnapCompare) -> None:
    assert snap_compare(app(), run_before=showing(lambda: ProgressScreen(fakes.job(stage="verify"))))


def test_progress_passive_in_16_colours(snap_compare: SnapCompare) -> None:
    assert snap_compare(app(ansi=True), run_before=showing(lambda: ProgressScreen(fakes.job(passive=True))))


@SIZES
def test_summary(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    assert snap_compare(
        app(),
        run_before=showing(lambda: SummaryScreen(fakes.job(finished=True), fakes.HERE, DRIVER_OFFERS)),
        terminal_size=size,
    )


@SIZES
def test_peer_lost_mid_clone(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    job = fakes.job(failed=True)
    advice = advise("link_lost", "link lost on the data channel: Connection reset by peer", peer=fakes.THERE)
    state = [job.target_state(f"nvme0n1 on {fakes.THERE}"), job.how_far(), "The source was only read, never changed."]

    def make() -> ErrorScreen:
        screen = ErrorScreen(
            advice,
            [*DRIVER_OFFERS[1:], Offer("enter", "First screen", Dismissed)],
            state=state,
            log="/var/log/usb4-recovery/clone-20261125-101500-sender.jsonl",
            peer=fakes.THERE,
        )
        screen.set_status("This machine's new code is 1234-5678: to pair again, type it on the other machine.")
        return screen

    assert snap_compare(app(), run_before=showing(make), terminal_size=size)


def test_help(snap_compare: SnapCompare) -> None:
    assert snap_compare(app(), run_before=showing(HelpScreen))


def test_the_essentials_are_on_screen_at_60x20_and_the_summary_reads_at_80x24() -> None:
    """Issue 9: at 60x20 the percentage and the bottom rows were cut off; at 80x24 the summary used every row."""
    import asyncio

    from tests.tui.test_wizard import text_of

    async def visible(pilot: Pilot, screen: Screen[Any], size: tuple[int, int], ids: list[str]) -> None:
        """Push ``screen``; once it is laid out, each of ``ids`` must show whole, above the footer."""
        app = pilot.app

        def laid_out() -> bool:
            try:
                return app.screen is screen and all(screen.query_one(n).region for n in ids)
            except NoMatches:  # not composed yet
                return False

        app.push_screen(screen)
        await wait_for(pilot, laid_out, READY, f"{type(screen).__name__} to be laid out")
        await pilot.pause()  # and the refresh its first layout asked for
        for name in ids:
            region = app.screen.query_one(name).region
            assert region.height > 0 and region.bottom <= size[1] - 1, (name, region)  # above the footer
            assert region.right <= size[0], (name, region)

    async def scenario() -> None:
        small, normal = (60, 20), (80, 24)
        async with app().run_test(size=small) as pilot:
            a = await disks_read(pilot)
            await visible(pilot, ProgressScreen(fakes.job()), small, ["#stage", "#bar", "#numbers", "#limit"])
            assert text_of(a, "#bar").endswith("25.0%")
            await visible(
                pilot,
                ReviewScreen(fakes.choice(), fakes.HERE, fakes.THERE, ["the target changed"]),
                small,
                ["#confirm", "#review-changes"],
            )
        async with app().run_test(size=normal) as pilot:
            await disks_read(pilot)
            await visible(
                pilot,
                SummaryScreen(fakes.job(finished=True), fakes.HERE, DRIVER_OFFERS),
                normal,
                ["#verdict", "#checked", "#summary", "#next"],
            )

    asyncio.run(scenario())


def test_every_footer_fits_60_columns_and_the_review_fits_on_screen() -> None:
    """Issue 21: at 60x20 the footer read "f1 He" (its last keys cut off), and the review's lines went
    below the fold."""
    import asyncio

    from textual.widgets._footer import FooterKey

    from recovery.tui.screens.resume import RescueScreen, ResumeScreen
    from recovery.tui.screens.steps import DirectionScreen
    from recovery.tui.stepper import Stepper
    from tests.tui.test_stepper import FakeWizard

    wizard = FakeWizard()
    wizard.state.job_choice = fakes.choice()
    lost = Stepper(wizard).offers(failed=True, linked=False, lost=True)  # the most keys a screen offers
    choice = interrupted_rescue()
    assert choice.target is not None and choice.target.unfinished is not None
    screens: list[Callable[[], Screen[Any]]] = [
        lambda: DirectionScreen(fakes.HERE, fakes.THERE, True),
        lambda: DiskScreen("source", "The disk to copy", "Choose.", fakes.LOCAL, {}, image="restore an image"),
        lambda: folder_screen("folder"),
        lambda: OptionsScreen(choice),
        lambda: LayoutScreen(dataclasses.replace(choice, target=fakes.PEER[1]), fakes.HERE, fakes.THERE),
        lambda: ReviewScreen(choice, fakes.HERE, fakes.THERE, ["the same disks as before"]),
        lambda: PairScreen(fakes.PEER_VIEW),
        lambda: PassiveScreen(fakes.PASSIVE_VIEW, "reviewing", "", ReviewScreen(choice, fakes.HERE, fakes.THERE).rows),
        lambda: ProgressScreen(fakes.job()),
        lambda: SummaryScreen(fakes.job(finished=True), fakes.HERE, DRIVER_OFFERS),
        lambda: ErrorScreen(advise("link_lost", "link lost", peer=fakes.THERE), lost, peer=fakes.THERE),
        lambda: ResumeScreen(choice.target.unfinished),  # type: ignore[union-attr]
        lambda: RescueScreen(fakes.THERE),
    ]

    async def scenario() -> None:
        width = 60
        async with app().run_test(size=(width, 20)) as pilot:
            a = await disks_read(pilot)
            for make in [None, *screens]:
                if make is not None:
                    a.push_screen(make())
                # a dialog's keys show in the footer of the screen under it
                await wait_for(pilot, lambda: any(s.query(FooterKey) for s in a.screen_stack), READY, "the footer")
                await pilot.pause()
                keys = list(next(s for s in reversed(a.screen_stack) if s.query(FooterKey)).query(FooterKey))
                right = max(k.region.right for k in keys)
                assert right <= width, (type(a.screen).__name__, [k.description for k in keys])
                if isinstance(a.screen, ReviewScreen):
                    region = a.screen.query_one("#review").region
                    assert region.y >= 1 and region.bottom <= 19, region  # every line, none scrolled away
                if make is not None:
                    a.pop_screen()

    asyncio.run(scenario())
