"""A target that holds an earlier clone of the source (its record): the wizard names it, asks "update it"
or "overwrite it", and the review promises what the engine does (pure: no peer, no disk)."""

from __future__ import annotations

import dataclasses

from textual.app import App
from textual.widgets import Static

from recovery.engine.resume.journal import target_key
from recovery.protocol.messages import DiskInfo, Identity, Unfinished
from recovery.tui.model import Choice, contents
from recovery.tui.review import start_text
from recovery.tui.screens.resume import UpdateScreen, update_question
from tests.tui.helpers import run

MARKUP = "[/x][b]x[/b]"
SOURCE = Identity(path="/dev/nvme0n1", size=1 << 30, kind="disk", host_id="h", fingerprint="00" * 32, serial="S1")
RECORD = Unfinished(
    source=target_key(SOURCE),
    source_desc="office-pc:/dev/nvme0n1",
    done=400 << 20,
    total=400 << 20,
    since="2026-12-01 10:02:03",
    mode="used",
    source_host="office-pc",
    source_name="nvme0n1",
    source_model="Samsung 980",
)


def _choice(record: Unfinished | None, **kw: object) -> Choice:
    source = DiskInfo(path="/dev/nvme0n1", size=1 << 30, identity=SOURCE)
    target = DiskInfo(path="/dev/sdb", size=1 << 30, copy=record)
    return dataclasses.replace(Choice(send=True, source=source, target=target), **kw)


def test_the_review_says_the_copy_is_updated_or_overwritten() -> None:
    assert start_text(_choice(RECORD)) == (
        "updates the copy of office-pc's nvme0n1 (Samsung 980) from 2026-12-01 10:02 on the target: "
        "only the changes are sent"
    )
    assert "is overwritten, all of it is sent" in start_text(_choice(RECORD, restart=True))
    assert start_text(_choice(RECORD, mode="exact")) == "from the beginning"  # another mode: another clone
    other = dataclasses.replace(RECORD, source="ff" * 8)  # a copy of another disk
    assert start_text(_choice(other)) == "from the beginning"
    assert start_text(_choice(None)) == "from the beginning"


def test_the_disk_is_named_by_its_copy() -> None:
    target = _choice(RECORD).target
    assert target is not None
    assert contents(target).startswith("copy of office-pc's nvme0n1 (Samsung 980) from 2026-12-01 10:02")


def test_the_question_names_the_copy_and_shows_markup_as_text() -> None:
    assert update_question("sdb", RECORD, "512.0 GiB") == (
        "sdb holds a copy of this disk from 2026-12-01 (Samsung 980, 512.0 GiB).\n"
        "Update it (only the changes are sent), or overwrite it (everything is sent)?"
    )
    question = update_question("sdb", dataclasses.replace(RECORD, source_model=MARKUP), "1 GiB")

    async def scenario() -> None:
        app: App[None] = App()
        async with app.run_test(size=(80, 24)) as pilot:
            answers: list[bool | None] = []
            await app.push_screen(UpdateScreen(question), answers.append)
            await pilot.pause()
            assert MARKUP in str(app.screen.query_one("#update-question", Static).render())
            await pilot.press("o")
            await pilot.pause()
            assert answers == [False]

    run(scenario)
