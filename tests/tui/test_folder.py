"""The folder step of a save into a folder of the other machine: what the user types is theirs."""

from __future__ import annotations

from textual.widgets import Input

from recovery.protocol.messages import Images
from recovery.tui.app import WizardApp
from recovery.tui.screens.folder import FolderScreen
from tests.tui import fakes
from tests.tui.helpers import run, wait_for


def test_a_folder_typed_before_the_suggestions_come_is_never_replaced() -> None:
    """Found in a loaded CI run: the other machine's suggested folders came after the user had typed one,
    replaced it, and Enter then saved into the suggestion (the wizard went on to the options)."""
    asked: list[str] = []
    screen = FolderScreen("folder", "Save an image", "Choose.", here=False, ask=asked.append, name="disk.img")

    async def scenario() -> None:
        app = WizardApp(fakes.config())
        async with app.run_test() as pilot:
            await wait_for(pilot, lambda: app.state.disks is not None, 30, "the disks to be read")
            app.push_screen(screen)
            await pilot.pause()
            assert asked == [""]  # which folders it suggests
            box = screen.query_one("#folder", Input)
            box.value = "/srv/images"
            screen.show_found(Images(folder="", places=("/media/usb",)))  # the suggestions, late
            await pilot.pause()
            assert box.value == "/srv/images" and asked == [""]
            box.focus()
            await pilot.press("enter")
            assert asked == ["", "/srv/images"] and app.screen is screen

    run(scenario)
