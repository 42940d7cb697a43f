"""The wizard's own widgets: disk tables, a bar that fits its width, the rate graph, stage bars.

Glyphs are limited to what a Linux console font has (box drawing, block
elements, Latin-1), so the wizard reads the same on the first console of a
rescue machine as in a desktop terminal. Every string that may come from the
other machine (host names, disk models, labels) goes into a ``Text``, never
through markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from recovery.protocol.messages import DiskInfo
from recovery.tui.job import STAGE_BARS
from recovery.tui.model import contents, short_name
from recovery.units import human_rate, human_size, shown

COLUMNS = ((15, "Disk"), (20, "Model"), (16, "Serial"), (10, "Size"))


def plain(text: str, style: str = "") -> Text:
    """A string for the screen as it is: never markup (a peer's ``[/x]``), never an escape."""
    return Text(shown(text, lines=True), style=style)


def facts(rows: Sequence[tuple[str, str]], label_width: int = 8) -> Table:
    """Label and value rows; long values wrap under their value, not under the label, and a name longer
    than a line (a path) folds onto the next one: never cut."""
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", width=label_width, no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in rows:
        table.add_row(label, plain(value))  # a peer's strings (host, disk names) are never markup
    return table


SPARK = " ▁▂▃▄▅▆▇█"


def columns(width: int) -> tuple[tuple[int, str], ...]:
    """The table's columns for a screen ``width`` wide: the model column gives way first."""
    spare = width - sum(w for w, _ in COLUMNS) - len(COLUMNS) - 5  # padding, a scrollbar
    if spare >= 0:
        return COLUMNS
    model = max(12, 20 + spare)
    spare += 20 - model
    disk = max(9, 15 + spare)
    spare += 15 - disk
    return ((disk, "Disk"), (model, "Model"), (max(10, 16 + spare), "Serial"), (10, "Size"))


def _cell(text: str, width: int) -> str:
    return (text[: width - 1] + "~" if len(text) > width else text).ljust(width)


def _row_text(disk: DiskInfo, cols: tuple[tuple[int, str], ...] = COLUMNS) -> str:
    values = (short_name(disk), disk.model or "-", disk.serial or "-", human_size(disk.size))
    return " ".join(_cell(v, w) for v, (w, _) in zip(values, cols, strict=True))


def header_text(cols: tuple[tuple[int, str], ...] = COLUMNS) -> str:
    return " ".join(_cell(name, w) for w, name in cols)


def mark(disk: DiskInfo) -> str:
    """What sets a disk apart on the first screen: the boot stick, in use (a disk that cannot be read says
    so once, as what is on it)."""
    if disk.unreadable:
        return ""
    if disk.boot_medium:
        return "the boot stick of this appliance: never a target"
    if disk.refusal:
        return f"cannot be a target: {disk.refusal}"
    return ""


class PickList(OptionList):
    """A list answered with Enter, which the footer shows."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select", "Choose", key_display="Enter")]


class DiskList(PickList):
    """Disks to choose from; the ones that cannot be used are shown, disabled, with why."""

    def __init__(
        self,
        disks: Sequence[DiskInfo],
        refusals: dict[str, str | None],
        *,
        cols: tuple[tuple[int, str], ...] = COLUMNS,
        notes: dict[str, str] | None = None,
        **kwargs: object,
    ) -> None:
        """``notes``: what a usable disk's line says before what it holds ("smaller: shrunk to fit")."""
        self.disks = {str(i): d for i, d in enumerate(disks)}
        options = []
        for key, disk in self.disks.items():
            why, note = refusals.get(disk.path), (notes or {}).get(disk.path)
            held = f"{note}; {contents(disk)}" if note else contents(disk)
            second = plain(f"cannot be used: {why}", style="italic") if why else plain(held)
            prompt = Group(plain(_row_text(disk, cols)), Padding(second, (0, 0, 0, 2)))
            options.append(Option(prompt, id=key, disabled=why is not None))
        super().__init__(*options, compact=True, **kwargs)  # type: ignore[arg-type]

    def disk_at(self, index: int | None) -> DiskInfo | None:
        if index is None:
            return None
        option = self.get_option_at_index(index)
        return self.disks.get(option.id or "")

    def index_of(self, disk: DiskInfo | None) -> int | None:
        if disk is None:
            return None
        return next((int(k) for k, d in self.disks.items() if d.path == disk.path), None)


class DiskTable(Static):
    """A read-only table of disks (the first screen), its columns fitted to its width."""

    disks: Sequence[DiskInfo] | None = None

    def show(self, disks: Sequence[DiskInfo] | None) -> None:
        self.disks = disks
        self.refresh(layout=True)

    def render(self) -> RenderableType:
        disks = self.disks
        if disks is None:
            return Text("Reading this machine's disks...")
        if not disks:
            return Text("No disks found on this machine.")
        cols = columns(self.size.width + 5)
        rows: list[RenderableType] = [Text(header_text(cols), style="bold")]
        for disk in disks:
            rows.append(plain(_row_text(disk, cols)))
            rows.append(Padding(plain(contents(disk), style="dim"), (0, 0, 0, 2)))
            if mark(disk):
                rows.append(Padding(plain(mark(disk), style="italic"), (0, 0, 0, 2)))
        return Group(*rows)


def bar(fraction: float, width: int) -> str:
    """``██████░░░░`` for ``fraction`` of ``width`` cells."""
    fraction = min(1.0, max(0.0, fraction))
    full = round(fraction * width)
    return "█" * full + "░" * (width - full)


class Bar(Static):
    """A bar as wide as the screen allows, the percentage after it."""

    fraction = 0.0

    def set(self, fraction: float) -> None:
        self.fraction = fraction
        self.refresh()

    def render(self) -> RenderableType:
        width = max(10, self.size.width - 8)
        return Text(f"{bar(self.fraction, width)} {self.fraction * 100:5.1f}%")


class RateGraph(Static):
    """The throughput of the last minute as block characters, with its scale written beside it."""

    rates: Sequence[float] = ()

    def set(self, rates: Sequence[float]) -> None:
        self.rates = list(rates)
        self.refresh()

    def render(self) -> RenderableType:
        label_width = 12
        width = max(8, self.size.width - label_width)
        rates = list(self.rates)[-width:]
        top = max(rates, default=0.0)
        rows = 3
        text = Text()
        for row in range(rows):
            level_low = (rows - 1 - row) / rows
            line = ""
            for r in rates:
                share = r / top if top else 0.0
                fill = min(1.0, max(0.0, (share - level_low) * rows))
                line += SPARK[round(fill * (len(SPARK) - 1))]
            label = human_rate(top) if row == 0 else ("0 B/s" if row == rows - 1 else "")
            text.append(f"{label:>{label_width - 1}} ", style="dim")
            text.append(line.ljust(width) + ("\n" if row < rows - 1 else ""))
        return text


class StageBars(Static):
    """How busy each stage of the whole pipeline is, on which machine, and which one limits the clone."""

    def show(self, names: dict[str, str], shares: dict[str, float], bottleneck: str, width: int = 20) -> None:
        text = Text()
        for i, stage in enumerate(STAGE_BARS):
            share = shares.get(stage)
            if i:
                text.append("\n")
            label = f"{shown(names[stage]):<24}"[:24]
            if share is None:
                text.append(f"{label} {'':>{width}}   -")
                continue
            style = "bold underline" if stage == bottleneck else ""
            text.append(label, style=style)
            text.append(f" {bar(share, width)} {share * 100:3.0f}%")
            if stage == bottleneck:
                text.append(" <- limit", style="bold")
        self.update(text)


def stage_names(sending: str, receiving: str) -> dict[str, str]:
    """Each stage with the machine it runs on: ``disk read (office-pc)``."""
    return {
        "read": f"read ({sending})",
        "compress": f"compress ({sending})",
        "link": "link",
        "decompress": f"decompress ({receiving})",
        "write": f"disk write ({receiving})",
    }
