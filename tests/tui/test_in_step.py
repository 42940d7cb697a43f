"""Two wizards in one process, paired over loopback TCP: both screens stay in step.

Issue 4: after "Another clone" one side showed a new code while the other
still showed "Done"; when one side quit, the other quietly went on. Here the
serving screen follows every step the driver takes, returns from its summary
when the driver starts another clone, and says clearly when the driver quits.
"""

from __future__ import annotations

from pathlib import Path

from textual.pilot import Pilot

from recovery.engine.clone.compare import compare
from recovery.tui.app import WizardApp
from recovery.tui.screens.home import HomeScreen
from recovery.tui.screens.pair import PassiveScreen
from recovery.tui.screens.progress import ProgressScreen
from recovery.tui.screens.results import ErrorScreen, SummaryScreen
from recovery.tui.screens.steps import DirectionScreen, ReviewScreen
from tests.tui.helpers import free_port, in_step, listening, run, wait_for
from tests.tui.test_wizard import SIZE, confirm, on, text_of, type_code, walk_to_review


def passive_line(app: WizardApp) -> str:
    return text_of(app, "#passive-activity")


def test_both_screens_stay_in_step_through_another_clone_and_a_quit(
    source_image: Path, blank_image: Path, tmp_path: Path
) -> None:
    serving = WizardApp(in_step("new-laptop", blank_image, tmp_path, listen=0))

    async def scenario() -> None:
        async with serving.run_test(size=SIZE) as pb:
            port = await listening(pb, serving)
            driving = WizardApp(in_step("old-laptop", source_image, tmp_path, connect=port))
            first_code = serving.state.code
            async with driving.run_test(size=SIZE) as pa:
                await type_code(pa, first_code)
                await step(pb, serving, "looking at the pairing")
                assert "Controlled from old-laptop" in text_of(serving, "#topbar")
                await pa.press("enter")
                await on(pa, DirectionScreen)
                await step(pb, serving, "choosing which way to copy (step 2 of 6)")
                await walk_to_review(pa, None)
                await step(pb, serving, "reviewing the clone before confirming it (step 6 of 6)")
                await confirm(pa, "blank.img")
                await both(pa, pb, ProgressScreen)
                await both(pa, pb, SummaryScreen, 60)
                assert compare(str(source_image), str(blank_image)).identical
                await pa.press("enter")  # another clone: the serving side leaves its summary too
                await on(pa, DirectionScreen)
                await step(pb, serving, "choosing which way to copy (step 2 of 6)")
                assert "Last clone: Verified: " in text_of(serving, "#passive-last")
                await walk_to_review(pa, None)
                await on(pa, ReviewScreen)
                await pa.press("ctrl+q")  # the driver quits
            await on(pb, ErrorScreen)
            assert text_of(serving, "#topbar").endswith("old-laptop ended the pairing")
            assert "old-laptop's user quit the wizard" in text_of(serving, "#error-message")
            assert serving.state.code != first_code and serving.state.code in text_of(serving, "#error-status")
            assert serving.state.link is None
            await pb.press("enter")
            await on(pb, HomeScreen)

    run(scenario)


async def step(pilot: Pilot, app: WizardApp, doing: str) -> None:
    """The serving screen says what the driver's user does now."""
    await wait_for(
        pilot,
        lambda: isinstance(app.screen, PassiveScreen) and doing in text_of(app, "#passive-activity"),
        30,
        f"the serving screen to say {doing!r} (it says {app.state.activity!r})",
    )


async def both(pa: Pilot, pb: Pilot, kind: type, timeout: float = 30) -> None:
    await on(pa, kind, timeout=timeout)
    await on(pb, kind, timeout=timeout)


def test_when_the_serving_side_quits_the_driver_says_so_and_waits_for_nobody_else(
    source_image: Path, blank_image: Path, tmp_path: Path
) -> None:
    port = free_port()  # so the driver can be told where before the server runs
    serving = WizardApp(in_step("new-laptop", blank_image, tmp_path, listen=port))
    driving = WizardApp(in_step("old-laptop", source_image, tmp_path, connect=port))

    async def scenario() -> None:
        async with driving.run_test(size=SIZE) as pa:
            async with serving.run_test(size=SIZE) as pb:
                await type_code(pa, serving.state.code)
                await pa.press("enter")
                await on(pa, DirectionScreen)
                await step(pb, serving, "choosing which way to copy (step 2 of 6)")
                await pb.press("ctrl+q")  # the serving machine's user quits
            await on(pa, ErrorScreen)
            assert text_of(driving, "#topbar").endswith("new-laptop ended the pairing")
            assert "new-laptop's user quit the wizard" in text_of(driving, "#error-message")
            assert driving.state.link is None and driving.state.session is None
            await pa.press("enter")
            await on(pa, HomeScreen)  # back to the first screen, paired with nobody

    run(scenario)


def test_the_serving_machine_sees_the_review_before_the_driver_confirms(
    source_image: Path, blank_image: Path, tmp_path: Path
) -> None:
    """Issue 21 item 7: the machine whose disk is overwritten saw only "office-pc is reviewing the clone
    before confirming it"; now the same review, as text, before anything is written there."""
    serving = WizardApp(in_step("new-pc", blank_image, tmp_path, listen=0))

    async def scenario() -> None:
        async with serving.run_test(size=SIZE) as pb:
            port = await listening(pb, serving)
            driving = WizardApp(in_step("[b]office-pc[/b]", source_image, tmp_path, connect=port))
            async with driving.run_test(size=SIZE) as pa:
                await walk_to_review(pa, serving.state.code)
                rows = dict(driving.screen.rows)  # type: ignore[attr-defined]
                await wait_for(
                    pb,
                    lambda: (
                        isinstance(serving.screen, PassiveScreen) and "DESTROYS" in text_of(serving, "#passive-review")
                    ),
                    30,
                    "the review on the serving screen",
                )
                shown = "".join(text_of(serving, "#passive-review").split())  # long paths fold onto lines
                for label, value in rows.items():
                    assert label + "".join(value.split()) in shown  # the same words, whole, as text
                assert "[b]office-pc[/b]" in shown  # a peer's markup is text
                region = serving.screen.query_one("#passive-review").region
                assert region.bottom <= SIZE[1] - 1  # all of it on screen, above the footer
                assert "Nothing is written before [b]office-pc[/b] confirms" in text_of(serving, "#passive-review-note")
                await confirm(pa, "blank.img")
                await on(pb, ProgressScreen)
                await on(pa, SummaryScreen, timeout=60)
                await on(pb, SummaryScreen, timeout=60)
                assert "Start this machine from the new disk" in text_of(serving, "#next")  # it is new-pc
                assert "Start new-pc from the new disk" in text_of(driving, "#next")

    run(scenario)


def test_two_machines_with_one_name_are_told_apart_on_both_screens(
    source_image: Path, blank_image: Path, tmp_path: Path
) -> None:
    """Both booted from the stick and nothing else to tell them by: the pairing's tags do, the same
    tag for each machine on both screens, down to the line that says which one is overwritten."""
    serving = WizardApp(in_step("usb4-recovery", blank_image, tmp_path / "b", listen=0))

    async def scenario() -> None:
        async with serving.run_test(size=SIZE) as pb:
            port = await listening(pb, serving)
            driving = WizardApp(in_step("usb4-recovery", source_image, tmp_path / "a", connect=port))
            async with driving.run_test(size=SIZE) as pa:
                assert driving.state.host == serving.state.host == "usb4-recovery"
                assert text_of(serving, "#home-code").startswith("This machine usb4-recovery This machine's code")
                await type_code(pa, serving.state.code)
                await step(pb, serving, "looking at the pairing")
                me, other = driving.state.host, serving.state.host
                assert me != other and me.startswith("usb4-recovery ·") and other.startswith("usb4-recovery ·")
                assert driving.state.peer is not None and serving.state.peer is not None
                assert (driving.state.peer.hostname, serving.state.peer.hostname) == (other, me)
                # The top bar is drawn on the next refresh, which a loaded machine may not have had.
                await wait_for(pa, lambda: f"Paired with {other}" in text_of(driving, "#topbar"), 10, "the top bar")
                await wait_for(pb, lambda: f"Controlled from {me}" in text_of(serving, "#topbar"), 10, "the top bar")
                await pa.press("enter")
                await on(pa, DirectionScreen)
                await walk_to_review(pa, None)
                await confirm(pa, "blank.img")
                await both(pa, pb, ProgressScreen)
                assert f"to {other}:" in pa.app.screen.job.started.action  # type: ignore[attr-defined]
                assert f"{me} is OVERWRITING" in pb.app.screen.job.started.action  # type: ignore[attr-defined]
                await both(pa, pb, SummaryScreen, 60)
                await pa.press("ctrl+q")
            await wait_for(pb, lambda: serving.state.link is None, 30, "the pairing to end")
            assert serving.state.host == "usb4-recovery"  # unpaired: its own name again

    run(scenario)
