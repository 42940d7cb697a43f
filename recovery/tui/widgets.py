"""The wizard's own widgets: disk tables, a text progress bar, stage bars.

Glyphs are limited to what a Linux console font has (box drawing, block
elements, Latin-1), so the wizard reads the same on the first console of a
rescue machine as in a desktop terminal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from recovery.protocol.messages import DiskInfo
from recovery.tui.model import contents, short_name
from recovery.units import human_size, shown

COLUMNS = ((15, "Disk"), (20, "Model"), (16, "Serial"), (10, "Size"))


def plain(text: str, style: str = "") -> Text:
    """A string for the screen as it is: never markup (a peer's ``[/x]``), never an escape."""
    return Text(shown(text, lines=True), style=style)


def _cell(text: str, width: int) -> str:
    return (text[: width - 1] + "~" if len(text) > width else text).ljust(width)


def _row_text(disk: DiskInfo) -> str:
    model = disk.model or "-"
    values = (short_name(disk), model, disk.serial or "-", human_size(disk.size))
    return " ".join(_cell(v, w) for v, (w, _) in zip(values, COLUMNS, strict=True))


def header_text() -> str:
    return " ".join(_cell(name, w) for w, name in COLUMNS)


class PickList(OptionList):
    """A list answered with Enter, which the footer shows."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select", "Choose", key_display="Enter")]


class DiskList(PickList):
    """Disks to choose from; the ones that cannot be used are shown, disabled, with why."""

    def __init__(self, disks: Sequence[DiskInfo], refusals: dict[str, str | None], **kwargs: object) -> None:
        self.disks = {str(i): d for i, d in enumerate(disks)}
        options = []
        for key, disk in self.disks.items():
            why = refusals.get(disk.path)
            second = plain(f"cannot be used: {why}", style="italic") if why else plain(contents(disk))
            prompt = Group(plain(_row_text(disk)), Padding(second, (0, 0, 0, 2)))
            options.append(Option(prompt, id=key, disabled=why is not None))
        super().__init__(*options, compact=True, **kwargs)  # type: ignore[arg-type]

    def disk_at(self, index: int | None) -> DiskInfo | None:
        if index is None:
            return None
        option = self.get_option_at_index(index)
        return self.disks.get(option.id or "")


class DiskTable(Static):
    """A read-only table of disks (the first screen)."""

    def show(self, disks: Sequence[DiskInfo] | None) -> None:
        if disks is None:
            self.update("Reading this machine's disks...")
            return
        if not disks:
            self.update("No disks found on this machine.")
            return
        rows: list[RenderableType] = [Text(header_text(), style="bold")]
        for disk in disks:
            rows.append(plain(_row_text(disk)))
            rows.append(Padding(plain(contents(disk), style="dim"), (0, 0, 0, 2)))
        self.update(Group(*rows))


def bar(fraction: float, width: int) -> str:
    """``██████░░░░`` for ``fraction`` of ``width`` cells."""
    fraction = min(1.0, max(0.0, fraction))
    full = round(fraction * width)
    return "█" * full + "░" * (width - full)


class StageBars(Static):
    """How busy each stage of the pipeline is, and which one limits the clone."""

    def show(self, order: Sequence[tuple[str, str]], shares: dict[str, float], bottleneck: str) -> None:
        text = Text()
        for i, (stage, label) in enumerate(order):
            share = shares.get(stage)
            if i:
                text.append("\n")
            name = f"{label:<11}"
            if share is None:
                text.append(f"{name}{'':>20}   -")
                continue
            style = "bold reverse" if stage == bottleneck else ""
            text.append(name, style=style)
            text.append(f" {bar(share, 20)} {share * 100:3.0f}%")
            if stage == bottleneck:
                text.append("  <- the limit now", style="bold")
        self.update(text)
