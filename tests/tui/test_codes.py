"""Wrong codes, said on both screens until dismissed: how many tries are left, and when the serving
machine shows a new code (issue 21, item 6). Two wizards in one process, over loopback TCP."""

from __future__ import annotations

from pathlib import Path

from textual.pilot import Pilot

from recovery.tui.app import WizardApp
from recovery.tui.demo import DemoWorld
from recovery.tui.screens.home import HomeScreen
from recovery.tui.screens.pair import PairScreen
from tests.tui.helpers import run, two_in_step, wait_for
from tests.tui.test_wizard import SIZE, on, text_of

WRONG = "1111-2222"


def notice(app: WizardApp) -> str:
    return text_of(app, "#home-notice") if isinstance(app.screen, HomeScreen) else ""


async def type_wrong(pilot: Pilot, said: str) -> None:
    app = pilot.app
    assert isinstance(app, WizardApp)
    await pilot.press("c", *WRONG, "enter")
    await wait_for(pilot, lambda: said in notice(app), 30, f"the first screen to say {said!r}")


def test_wrong_codes_are_counted_down_on_both_screens_and_the_code_really_changes(
    source_image: Path, blank_image: Path, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with two_in_step(source_image, blank_image, tmp_path, SIZE) as (driving, pa, serving, pb):
            await wait_for(pa, lambda: any(s.drivable for s in driving.state.seen), 30, "new-pc to be reached")
            first = serving.state.code
            await type_wrong(pa, "Wrong code: 2 tries left. Check the code new-pc shows")
            await wait_for(pb, lambda: "office-pc typed a wrong code: 2 tries left" in notice(serving), 30)
            await type_wrong(pa, "Wrong code: 1 try left.")
            await wait_for(pb, lambda: "1 try left before this machine's code changes" in notice(serving), 30)
            await type_wrong(pa, "that was the last try: new-pc now shows a new code")
            await wait_for(pb, lambda: serving.state.code != first, 30, "new-pc's code to change")
            new = serving.state.code
            await wait_for(pb, lambda: f"Its new code is {new}" in notice(serving), 30)
            assert new in text_of(serving, "#home-code")
            await pa.press("r")  # another reason to paint the first screen: the notice stays
            await wait_for(pa, lambda: "new-pc now shows a new code" in notice(driving), 30)
            await pa.press("x")  # until dismissed
            await wait_for(pa, lambda: not driving.screen.query_one("#home-notice").display, 30, "the notice to go")
            # The old code no longer pairs (the serving side answers with its new one) ...
            await wait_for(pa, lambda: not serving.guard.locked("127.0.0.1", "127.0.0.1"), 30)
            await pa.press("c", *first, "enter")
            await wait_for(pa, lambda: "Wrong code" in notice(driving), 30)
            assert driving.state.link is None
            # ... and the new one does.
            await wait_for(pa, lambda: not serving.guard.locked("127.0.0.1", "127.0.0.1"), 30)
            await pa.press("c", *new, "enter")
            await on(pa, PairScreen)
            assert driving.state.notice == "" and serving.state.link is not None

    run(scenario)


async def pair_when_allowed(pilot: Pilot, code: str) -> None:
    """Type ``code`` (again while the other machine says to wait after the wrong ones) until paired."""
    app = pilot.app
    assert isinstance(app, WizardApp)
    for _ in range(10):
        await pilot.press("c", *code, "enter")
        await wait_for(pilot, lambda: app.state.link is not None or "wait" in notice(app), 30, "the pairing, or a wait")
        if app.state.link is not None:
            return
        await pilot.press("x")
        await pilot.pause(1.0)  # what the other machine asked for, at most a few seconds after 3 wrong tries
    raise AssertionError(f"never paired: {app.state.notice}")


def test_the_demos_peer_changes_its_code_after_the_tries_and_stays_for_another_pairing() -> None:
    async def scenario() -> None:
        with DemoWorld(64) as world:
            world.start()
            app = WizardApp(world.config())
            async with app.run_test(size=SIZE) as pilot:
                await wait_for(pilot, lambda: any(s.drivable for s in app.state.seen), 30, "the demo's peer")
                first = world.code
                assert first in text_of(app, "#home-code")
                for said in ("2 tries left", "1 try left", "demo-peer now shows a new code"):
                    await type_wrong(pilot, said)
                await wait_for(pilot, lambda: world.code != first, 30, "the demo's peer to show a new code")
                await wait_for(pilot, lambda: world.code in text_of(app, "#home-code"), 30, "the hint to follow")
                await pair_when_allowed(pilot, world.code)
                await on(pilot, PairScreen)
                await pilot.press("escape", "y")  # end the pairing
                await on(pilot, HomeScreen)
                # The demo's peer waits for the next pairing, with the next code, and is reached again.
                await wait_for(pilot, lambda: any(s.drivable for s in app.state.seen), 30, "the demo's peer again")
                await wait_for(pilot, lambda: world.code in text_of(app, "#home-code"), 30, "its code now")
                await pair_when_allowed(pilot, world.code)
                await on(pilot, PairScreen)

    run(scenario)
