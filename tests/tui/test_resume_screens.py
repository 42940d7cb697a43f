"""The resume and rescue questions show the peer's words as text: a journal's date or a host name that
looks like markup is printed as it is, never read as markup (which would end the wizard)."""

from __future__ import annotations

from textual.app import App
from textual.widgets import Static

from recovery.protocol.messages import Unfinished
from recovery.tui.screens.resume import RescueScreen, ResumeScreen
from tests.tui.helpers import run

MARKUP = "[/x][b]x[/b][link=http://x]"


def test_the_questions_show_markup_from_the_peer_as_text() -> None:
    job = Unfinished(source="ab" * 16, source_desc=MARKUP, done=1 << 20, total=4 << 20, since=MARKUP)

    async def scenario() -> None:
        app: App[None] = App()
        async with app.run_test(size=(80, 24)) as pilot:
            await app.push_screen(ResumeScreen(job))
            await pilot.pause()
            assert MARKUP in str(app.screen.query_one("#resume-question", Static).render())
            app.pop_screen()
            await app.push_screen(RescueScreen(f"evil{MARKUP}"))
            await pilot.pause()
            assert f"evil{MARKUP}" in str(app.screen.query_one("#rescue-question", Static).render())

    run(scenario)
