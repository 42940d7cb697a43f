"""A folder of one machine, instead of a disk: where an image of the source is saved, or the images in it
to restore (capability "images").

The machine that holds the folder looks in it (:meth:`CloneSession.find_images`) and says what it holds,
or why it does not take that folder; this screen only shows its answer (:meth:`FolderScreen.show_found`)
and never reads a folder itself. A save answers the image file's path, a restore ``(folder, entry)``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Footer, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from recovery.protocol.messages import ImageEntry, Images
from recovery.tui.model import image_refusal, image_text
from recovery.tui.screens.steps import Step
from recovery.tui.widgets import PickList, plain
from recovery.units import human_size


class FolderScreen(Step):
    def __init__(
        self,
        step: str,
        title: str,
        help_text: str,
        *,
        here: bool,
        ask: Callable[[str], None],
        folder: str = "",
        name: str = "",
        old_peer: str = "",
    ) -> None:
        """``step``: "folder" (a save: a file name too) or "image" (a restore); ``here``: the folder is this
        machine's; ``ask(folder)`` asks that machine what the folder holds; ``old_peer``: the folder's machine,
        when it cannot take an image's passphrase (its encrypted images cannot be restored)."""
        super().__init__(title)
        self.step, self.help_text, self.here, self.ask = step, help_text, here, ask
        self.save = step == "folder"
        self.folder, self.file_name = folder, name
        self.old_peer = old_peer
        self.asked: str | None = None  # the folder last asked about
        self.found: Images | None = None  # its answer
        self.submitted = False  # a save's Enter waits for the folder's answer

    def compose(self) -> ComposeResult:
        yield from self.top()
        with VerticalScroll(classes="body"):
            yield self.step_line()
            yield Static(plain(self.help_text), classes="help")
            with Horizontal(classes="field-row"):
                yield Label("Folder: ")
                yield Input(self.folder, id="folder", compact=True)
            yield Static(id="folder-state")
            yield PickList(id="images", compact=True)
            if self.save:
                with Horizontal(classes="field-row"):
                    yield Label("File name: ")
                    yield Input(self.file_name, id="name", compact=True)
            yield Static(id="image-detail")
        yield Footer()

    def on_mount(self) -> None:
        self.look()
        self.query_one("#name" if self.save and self.folder else "#folder", Input).focus()

    def folder_typed(self) -> str:
        text = self.query_one("#folder", Input).value.strip()
        return text.rstrip("/") or text

    def look(self) -> None:
        """Ask the machine that holds it what the typed folder holds (empty: which folders it suggests)."""
        self.asked = self.folder_typed()
        self.found = None
        self._state(f"Looking in {self.asked}..." if self.asked else "Asking where images may go...")
        self.ask(self.asked)

    def show_found(self, found: Images) -> None:
        """The holding machine's answer; an answer about another folder than the one asked is stale."""
        if found.folder != self.asked:
            return
        if not found.folder:
            box = self.query_one("#folder", Input)
            if found.places and not box.value.strip():  # nothing typed yet: its first suggestion
                box.value = found.places[0]
                self.look()
            elif not box.value.strip():
                self._state("Type a folder on a disk of that machine, then Enter.")
            return  # a folder typed while the suggestions came is the user's: never replaced
        self.found = found
        images = self.query_one("#images", PickList)
        images.clear_options()
        for i, entry in enumerate(found.images):
            why = image_refusal(entry, self.old_peer) if not self.save else "already there"
            second = image_text(entry)
            if self.save or (why and not entry.problem):
                second = f"({why})" if self.save else f"{second} ({why})"
            images.add_option(Option(plain(f"{entry.name}  {second}"), id=str(i), disabled=why is not None))
        usable = [i for i, e in enumerate(found.images) if not self.save and image_refusal(e, self.old_peer) is None]
        if usable:
            images.highlighted = usable[0]
        if found.refused:
            self._state(f"Cannot use this folder: {found.refused}")
        else:
            more = f" (and {found.more} more)" if found.more else ""
            free = f", {human_size(found.free)} free" if found.free is not None else ""
            self._state(f"{len(found.images)} image file(s){more}{free}.")
        if self.submitted:
            self.submitted = False
            self.submit_save()

    def _state(self, text: str) -> None:
        self.query_one("#folder-state", Static).update(plain(text))

    def _detail(self, text: str) -> None:
        self.query_one("#image-detail", Static).update(plain(text))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "folder" and self.folder_typed() != self.asked:
            self.look()
        elif event.input.id == "folder" and not self.save:
            self.query_one("#images", PickList).focus()
        else:
            self.submit_save()

    def submit_save(self) -> None:
        """A save's Enter: the file's path, once its folder is known to be usable and the name free."""
        folder, name = self.folder_typed(), self.query_one("#name", Input).value.strip()
        found = self.found
        if found is None or found.folder != folder:
            self.submitted = True
            if self.asked != folder:
                self.look()
            return
        if found.refused:
            self._detail("Choose another folder: that machine does not save images there.")
        elif not name.endswith(".img") or "/" in name or name.startswith("."):
            self._detail("The file name is one name ending in .img (no '/', not starting with '.').")
        elif any(e.name == name for e in found.images):
            self._detail(f"{name} is already there: choose another name.")
        else:
            self.answer(posixpath.join(folder, name))

    def entry_at(self, index: int | None) -> ImageEntry | None:
        if index is None or self.found is None or self.save:
            return None
        entry = self.found.images[int(self.query_one("#images", PickList).get_option_at_index(index).id or 0)]
        return entry if image_refusal(entry, self.old_peer) is None else None

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if self.found is not None and not self.save:
            entry = self.found.images[int(event.option.id or 0)]
            self._detail(f"{entry.name}: {image_text(entry)}")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        entry = self.entry_at(event.option_index)
        if entry is not None and self.found is not None:
            self.answer((self.found.folder, entry))

    def highlighted(self) -> object:
        if self.save:
            return None
        entry = self.entry_at(self.query_one("#images", PickList).highlighted)
        return (self.found.folder, entry) if entry is not None and self.found is not None else None
