"""The new layout a fitted clone writes, as the wizard estimates it (pure: no Textual, no I/O).

The partitions the disk list reports, each filesystem's smallest size estimated from its used bytes
(:func:`recovery.tui.model.partition_facts`, as for offering a smaller target), laid out by the planner the
sending machine uses (:func:`recovery.disks.fitplan.plan_layout`). That machine measures each filesystem
exactly before anything is written and shows the final layout.
"""

from __future__ import annotations

from dataclasses import dataclass

from recovery.disks import fitplan
from recovery.engine.fit import resize
from recovery.errors import RefusedError
from recovery.protocol.messages import DiskInfo, PartitionInfo
from recovery.report import fit_how
from recovery.tui.model import FS_NAMES, GPT_TAIL, Choice, partition_facts, short_name
from recovery.units import human_size


@dataclass(frozen=True)
class Row:
    """One partition, before and after, in words."""

    number: int
    name: str  # its filesystem and label: 'ext4 "root"'
    used: str  # "-": not known
    size: str
    start: str
    new_size: str
    new_start: str
    happens: str  # "shrunk", "kept: a partition under 1.0 GiB keeps its size", "moved, same size: ..."


def estimate(choice: Choice) -> fitplan.Layout:
    """The layout ``choice`` would write; a :class:`RefusedError` when the estimate does not fit."""
    source, target = choice.source, choice.target
    assert source is not None and target is not None
    label = source.ptable or ""
    if label not in ("gpt", "dos"):
        raise RefusedError(f"{short_name(source)} has no partition table to fit: only its own size can be cloned")
    end = fitplan.usable_end(target.size, label, GPT_TAIL if label == "gpt" else 0)
    parts = [partition_facts(p) for p in source.partitions]
    return fitplan.plan_layout(parts, source.size, target.size, end, choice.fit, label)


def rows(layout: fitplan.Layout, source: DiskInfo) -> list[Row]:
    """Each partition of ``layout`` (of the disk ``source``) in words."""
    told = {p.number: p for p in source.partitions}
    return [_row(p, told.get(p.number), layout.fit) for p in layout.parts]


def _row(p: fitplan.Placed, part: PartitionInfo | None, fit: str) -> Row:
    fs = FS_NAMES.get(p.fstype or "", p.fstype or "no filesystem")
    name = f'{fs} "{part.label}"' if part is not None and part.label else fs
    happens = fit_how(p.method, p.size, p.new_size, p.moved)
    why = (p.note or _why_same(p, fit)) if p.new_size == p.size else ""
    if why:
        happens += f", same size: {why}" if p.moved else f": {why}"
    return Row(
        p.number,
        name,
        "-" if p.used is None else human_size(p.used),
        human_size(p.size),
        human_size(p.start),
        human_size(p.new_size),
        human_size(p.new_start),
        happens,
    )


def _why_same(p: fitplan.Placed, fit: str) -> str:
    """Why a partition the planner gave no reason for keeps its size."""
    if fit == "grow" and p.fstype not in resize.GROWS:
        return f"{p.fstype or 'what it holds'} is not grown"
    if fit == "shrink" and p.smallest is not None and p.smallest >= p.size:
        return "its data leaves no room to shrink it"
    return ""


def headline(choice: Choice) -> str:
    """What the layout step is about, in one line."""
    source, target = choice.source, choice.target
    assert source is not None and target is not None
    sizes = f"{short_name(source)} ({human_size(source.size)}) onto {short_name(target)} ({human_size(target.size)})"
    if choice.fit == "grow":
        return f"{sizes}: the filesystems that can grow fill the larger disk"
    return f"{sizes}: the filesystems are shrunk to fit the smaller disk"


def lines(found: list[Row]) -> list[tuple[str, str]]:
    """The rows as label and text, for the other machine's screen."""
    return [
        (
            f"Part {r.number}",
            f"{r.name}{'' if r.used == '-' else f', {r.used} used'}: {r.size} at {r.start} -> {r.new_size} at "
            f"{r.new_start}, {r.happens}",
        )
        for r in found
    ]
