"""Two questions a failing or interrupted clone raises: resume it? continue in rescue mode?

Both are small modal screens; the wizard asks them from two hooks
(:mod:`recovery.tui.app`): the first when the disks chosen are those of an
interrupted clone (the target's resume journal says so), the second when a
clone driven from here stopped because the source could not be read. The
engine does the rest: a clone of the same source onto the same target
resumes from the journal by itself, in rescue mode if asked.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from recovery.protocol.messages import Unfinished
from recovery.tui.widgets import plain
from recovery.units import human_size


def resume_question(job: Unfinished) -> str:
    share = f" ({100 * job.done // job.total}%)" if job.total else ""
    since = f" of {job.since}" if job.since else ""
    if job.complete:
        return (
            f"This target holds the clone{since} of this source, finished but for areas the source "
            "could not read.\nTry those areas again (rescue mode), keeping what is there?"
        )
    rescue = "\nIt ran in rescue mode, and continues in it." if job.rescue else ""
    return (
        f"This target holds an interrupted clone{since} of this source: {human_size(job.done)} of "
        f"{human_size(job.total)}{share} are on it.{rescue}\nResume it (only the rest is sent), or start over?"
    )


class ResumeScreen(ModalScreen[bool]):
    """Resume (True) or start over (False); Esc goes back (None)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "answer(True)", "Resume"),
        Binding("enter", "answer(True)", "Resume", show=False),
        Binding("s", "answer(False)", "Start over"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, job: Unfinished) -> None:
        super().__init__()
        self.job = job

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(plain(resume_question(self.job)), id="resume-question")
            yield Static("r or Enter: resume    s: start over    Esc: back", classes="help")

    def action_answer(self, resume: bool) -> None:
        self.dismiss(resume)

    def action_back(self) -> None:
        self.dismiss(None)


RESCUE_QUESTION = (
    "The source has unreadable areas. Continue in rescue mode?\n"
    "Rescue mode copies everything that can still be read, the good areas first, and lists what "
    "cannot be read (and which files it hits). Then Retry the same clone (r; pair with {peer} "
    "again first): it resumes where it stopped."
)


class RescueScreen(ModalScreen[bool]):
    """The question after a read error; No is the safe answer."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Rescue mode"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "No", show=False),
    ]

    def __init__(self, peer: str) -> None:
        super().__init__()
        self.peer = peer

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(plain(RESCUE_QUESTION.format(peer=self.peer)), id="rescue-question")
            yield Static("y: rescue mode    n or Esc: no", classes="help")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
