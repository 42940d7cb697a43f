"""The new layout a fitted clone writes, as the wizard estimates it (pure: no Textual, no I/O).

The partitions the disk list reports, each filesystem's smallest size estimated from its used bytes
(:func:`recovery.tui.model.partition_facts`, as for offering a smaller target), laid out by the planner the
sending machine uses (:func:`recovery.disks.fitplan.plan_layout`). That machine measures each filesystem
exactly before anything is written and shows the final layout. The user may size a partition that can be
resized (:func:`with_size`, as ``--size`` does); the planner lays the others out around it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass

from recovery.disks import fitplan
from recovery.engine.fit import resize
from recovery.errors import RefusedError
from recovery.protocol.messages import DiskInfo, PartitionInfo
from recovery.report import fit_how
from recovery.tui.model import FS_NAMES, GPT_TAIL, Choice, partition_facts, short_name
from recovery.units import human_size, parse_size


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
    """The layout ``choice`` would write, its partitions sized as chosen; a :class:`RefusedError` when the
    estimate does not fit."""
    source, target = choice.source, choice.target
    assert source is not None and target is not None
    parts, end = _facts(choice)
    return fitplan.plan_layout(parts, source.size, target.size, end, choice.fit, source.ptable or "", choice.sizes)


def _facts(choice: Choice) -> tuple[list[fitplan.Facts], int]:
    """The source's partitions as the planner takes them, and where they must end on the target."""
    source, target = choice.source, choice.target
    assert source is not None and target is not None
    label = source.ptable or ""
    if label not in ("gpt", "dos"):
        raise RefusedError(f"{short_name(source)} has no partition table to fit: only its own size can be cloned")
    end = fitplan.usable_end(target.size, label, GPT_TAIL if label == "gpt" else 0)
    return [partition_facts(p) for p in source.partitions], end


def size_range(choice: Choice, number: int) -> tuple[int, int] | None:
    """The least and the most partition ``number`` may be sized to (the other chosen sizes kept); None when
    it keeps its size, or its size is the only one it can have."""
    assert choice.source is not None and choice.target is not None
    parts, end = _facts(choice)
    found = fitplan.size_range(parts, choice.source.size, end, choice.fit, number, choice.sizes)
    size = next((p.size for p in parts if p.number == number), 0)
    return found if found is not None and (found[0] < size or found[1] > size) else None


def sizable(choice: Choice) -> list[int]:
    """The partitions the user may size, in the disk's order (none when the layout cannot be made)."""
    assert choice.source is not None
    try:
        estimate(choice)
    except RefusedError:
        return []
    ordered = sorted(choice.source.partitions, key=lambda p: p.start)
    return [p.number for p in ordered if size_range(choice, p.number)]


def range_line(choice: Choice, number: int) -> str:
    """What the numbers for partition ``number`` mean, in one line."""
    found = size_range(choice, number)
    if found is None:
        return f"Partition {number} keeps the size the layout gives it."
    least, most = found
    others = "the others at their smallest" if choice.fit == "shrink" else "the others at their size"
    return (
        f"Partition {number}: smallest possible {human_size(least)} (its data), available "
        f"{human_size(most)} (with {others})."
    )


def with_size(choice: Choice, number: int, typed: str) -> Choice:
    """``choice`` with partition ``number`` sized as ``typed`` (as ``--size`` takes it: 120G, 120GiB, 500M;
    empty: the automatic size again), laid out by the planner; a :class:`RecoveryError` that says why when the
    text is not a size or the planner refuses it."""
    sizes = dict(choice.sizes)
    if typed.strip():
        sizes[number] = parse_size(typed) // fitplan.MIB * fitplan.MIB  # what the planner lays out
    else:
        sizes.pop(number, None)
    sized = dataclasses.replace(choice, sizes=sizes)
    estimate(sized)
    return sized


def rows(layout: fitplan.Layout, source: DiskInfo, chosen: Collection[int] = ()) -> list[Row]:
    """Each partition of ``layout`` (of the disk ``source``) in words; ``chosen``: those the user sized."""
    told = {p.number: p for p in source.partitions}
    return [_row(p, told.get(p.number), layout.fit, p.number in chosen) for p in layout.parts]


def _row(p: fitplan.Placed, part: PartitionInfo | None, fit: str, chosen: bool) -> Row:
    fs = FS_NAMES.get(p.fstype or "", p.fstype or "no filesystem")
    name = f'{fs} "{part.label}"' if part is not None and part.label else fs
    happens = fit_how(p.method, p.size, p.new_size, p.moved)
    why = (p.note or _why_same(p, fit)) if p.new_size == p.size else ""
    if chosen:
        happens += " to the size you chose" if p.new_size != p.size else ": the size you chose"
    elif why:
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
