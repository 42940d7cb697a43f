"""Small modal screens: help, and yes/no questions."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from recovery.tui.widgets import plain

HELP = """\
usb4-recovery copies a whole disk from one machine to another over a
USB4/Thunderbolt cable (or a network), and checks the copy.

 1  Connect the machines and start usb4-recovery on both.
 2  On the machine you want to work from, type the code the OTHER
    machine shows (and its address, if they are not on the cable).
 3  Choose the direction, the disk to copy and the disk to overwrite.
 4  Type the target's name to confirm; the clone starts.
 The other machine shows every step and can abort a clone.

Keys
 Enter        continue, choose          Esc     back one step (answers stay)
 Arrows       move in a list            Tab     next field
 F1           this help                 Ctrl+Q  quit
 c / a        type the code / address (first screen)
 r            retry the same clone (after one ended)

Modes: "used" copies only the blocks the filesystems use (fast);
"exact" copies every block (the copy then has the source's b3sum).

Press Esc or F1 to close this help."""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("f1", "close", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box", classes="dialog"):
            yield Static(HELP)

    def action_close(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; No is the safe answer (Esc, n)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "No", show=False),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(plain(self.question))
            yield Static("y: yes    n or Esc: no", classes="help")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
