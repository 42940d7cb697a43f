"""The questions a failing, interrupted or repeated clone raises: resume it? continue in rescue mode?
update the copy on the target?

All are small modal screens; the wizard asks them from two hooks
(:mod:`recovery.tui.app`): the first (or the update question) when the disks
chosen are those of an interrupted clone (the target's resume journal says so)
or of an earlier clone (its record), the second when a clone driven from here
stopped because the source could not be read. The engine does the rest: a
clone of the same source onto the same target resumes from the journal, or
sends only what changed since the record, by itself.
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


def update_question(target: str, record: Unfinished, size: str) -> str:
    """The wizard's question for a target that holds an earlier clone of the source (its record)."""
    model = f" ({record.source_model}, {size})" if record.source_model else f" ({size})"
    since = f" from {record.since[:10]}" if record.since else ""
    return (
        f"{target} holds a copy of this disk{since}{model}.\n"
        "Update it (only the changes are sent), or overwrite it (everything is sent)?"
    )


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


def _answers(yes_key: str, yes: str, no_key: str, no: str) -> list[BindingType]:
    """The keys of a question that Enter answers yes and Esc goes back from."""
    return [
        Binding(yes_key, "answer(True)", yes),
        Binding("enter", "answer(True)", yes, show=False),
        Binding(no_key, "answer(False)", no),
        Binding("escape", "back", "Back"),
    ]


class Question(ModalScreen[bool]):
    """A question with two answers (True, False), its keys in ``BINDINGS``; ``back`` answers None."""

    NAME: ClassVar[str] = "question"  # the question's widget id: NAME-question
    HELP: ClassVar[str] = ""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(plain(self.text), id=f"{self.NAME}-question")
            yield Static(self.HELP, classes="help")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

    def action_back(self) -> None:
        self.dismiss(None)


class ResumeScreen(Question):
    """Resume (True) or start over (False); Esc goes back (None)."""

    BINDINGS: ClassVar[list[BindingType]] = _answers("r", "Resume", "s", "Start over")
    NAME = "resume"
    HELP = "r or Enter: resume    s: start over    Esc: back"

    def __init__(self, job: Unfinished) -> None:
        super().__init__(resume_question(job))
        self.job = job


class UpdateScreen(Question):
    """Update the copy on the target (True: only the changes are sent) or overwrite it (False); Esc goes
    back (None)."""

    BINDINGS: ClassVar[list[BindingType]] = _answers("u", "Update it", "o", "Overwrite it")
    NAME = "update"
    HELP = "u or Enter: update it    o: overwrite it    Esc: back"


RESCUE_QUESTION = (
    "The source has unreadable areas. Continue in rescue mode?\n"
    "Rescue mode copies everything that can still be read, the good areas first, and lists what "
    "cannot be read (and which files it hits). Then Retry the same clone (r; pair with {peer} "
    "again first): it resumes where it stopped."
)


class RescueScreen(Question):
    """The question after a read error; No is the safe answer."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Rescue mode"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "No", show=False),
    ]
    NAME = "rescue"
    HELP = "y: rescue mode    n or Esc: no"

    def __init__(self, peer: str) -> None:
        super().__init__(RESCUE_QUESTION.format(peer=peer))
        self.peer = peer
