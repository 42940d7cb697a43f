"""A partition layout fitted to another disk's size (pure: numbers in, a layout or a refusal out).

The engine measures each partition (:class:`Facts`: how small its filesystem can become, whether it can
grow) and this module lays the partitions out on the target: in their order, each gap before a partition
kept, every start and every resized size on a 1 MiB boundary, the GPT's backup at the new end. Partitions
that must stay as they are (the ESP, Microsoft's reserved and recovery partitions, BIOS boot, swap,
anything whose filesystem cannot be resized) keep their size and may move; the others shrink in
proportion to what each can give, or grow in proportion to their size.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from recovery.errors import RefusedError
from recovery.units import human_size

MIB = 1 << 20
FITS = ("keep", "shrink", "grow")
Fit = Literal["keep", "shrink", "grow"]
Method = Literal["keep", "move", "resize"]

# Partition types kept at their size whatever the fit (GPT type GUIDs, lower case; MBR types).
SYSTEM_TYPES = {
    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b": "EFI system partition",
    "e3c9e316-0b5c-4db8-817d-f92df00215ae": "Microsoft reserved partition",
    "de94bba4-06d1-4d40-a16a-bfd50179d6ac": "Windows recovery partition",
    "21686148-6449-6e6f-744e-656564454649": "BIOS boot partition",
    "ef": "EFI system partition",
    "27": "Windows recovery partition",
}


@dataclass(frozen=True)
class Facts:
    """One source partition as the engine measured it."""

    number: int
    start: int  # bytes
    size: int
    type: str  # GPT type GUID or MBR type, as sfdisk names it
    fstype: str | None = None
    used: int | None = None  # bytes its filesystem uses, when known
    smallest: int | None = None  # the smallest size its filesystem can be resized to; None: it cannot shrink
    grows: bool = False  # its filesystem can be grown to a larger partition
    why_fixed: str = ""  # why it cannot be resized (for a refusal): "XFS cannot shrink"


@dataclass(frozen=True)
class Placed:
    """One partition in the fitted layout."""

    number: int
    fstype: str | None
    start: int  # on the source
    size: int
    new_start: int  # on the target
    new_size: int
    method: Method
    smallest: int | None
    used: int | None
    note: str = ""  # why it keeps its size

    @property
    def moved(self) -> bool:
        return self.new_start != self.start

    @property
    def resized(self) -> bool:
        return self.new_size != self.size


@dataclass(frozen=True)
class Layout:
    fit: Fit
    source_size: int
    target_size: int
    usable_end: int  # bytes: where the partitions must end (the GPT's backup follows)
    parts: tuple[Placed, ...]

    @property
    def changed(self) -> bool:
        """Anything differs from the source's layout (else the clone is a plain one)."""
        return any(p.moved or p.resized for p in self.parts)

    @property
    def size(self) -> int:
        """The bytes the fitted disk has: the target's when anything changed, else the source's."""
        return self.target_size if self.changed else self.source_size


def usable_end(disk_size: int, label: str, table_tail: int) -> int:
    """Where partitions must end on a disk of ``disk_size``: before the GPT's backup (``table_tail`` bytes:
    its entries and header), or at the disk's end (MBR)."""
    return disk_size - (table_tail if label == "gpt" else 0)


def fixed_reason(facts: Facts) -> str:
    """Why a partition keeps its size ("" when it may be resized)."""
    system = SYSTEM_TYPES.get(facts.type.lower())
    if system:
        return f"an {system} keeps its size" if system[0] in "AEIOU" else f"a {system} keeps its size"
    if facts.fstype == "swap":
        return "swap keeps its size"
    return facts.why_fixed


def plan_layout(parts: Sequence[Facts], source_size: int, target_size: int, end: int, fit: Fit) -> Layout:
    """The layout of ``parts`` on a target of ``target_size`` whose partitions end by ``end``; a
    :class:`RefusedError` that says by how much and why when they cannot fit."""
    if fit not in FITS:
        raise ValueError(fit)
    ordered = sorted(parts, key=lambda p: p.start)
    for before, after in itertools.pairwise(ordered):
        if before.start + before.size > after.start:
            raise RefusedError(f"the source's partitions {before.number} and {after.number} overlap")
    if any(p.size <= 0 or p.start < 0 or p.start + p.size > source_size for p in ordered):
        raise RefusedError("a partition of the source lies outside the disk: its table is damaged")
    fits_as_is = not ordered or ordered[-1].start + ordered[-1].size <= end
    if fit == "keep" or (fit == "shrink" and fits_as_is) or not ordered:
        if not fits_as_is:
            raise _too_small(ordered, end, target_size, fit)
        return Layout(fit, source_size, target_size, end, tuple(_kept(p) for p in ordered))
    if fit == "grow" and not fits_as_is:
        raise _too_small(ordered, end, target_size, fit)
    sizes = _shrunk(ordered, end) if fit == "shrink" else _grown(ordered, end)
    placed: list[Placed] = []
    at = ordered[0].start
    prev_end = 0
    for p, size in zip(ordered, sizes, strict=True):
        gap = p.start - prev_end
        at = ordered[0].start if not placed else _align_up(at + gap)
        prev_end = p.start + p.size
        method: Method = "resize" if size != p.size else ("move" if at != p.start else "keep")
        note = fixed_reason(p)
        placed.append(Placed(p.number, p.fstype, p.start, p.size, at, size, method, p.smallest, p.used, note))
        at += size
    if at > end:  # alignment ate the last slack: never expected, refused rather than written past the end
        raise _too_small(ordered, end, target_size, fit)
    return Layout(fit, source_size, target_size, end, tuple(placed))


def _kept(p: Facts) -> Placed:
    return Placed(p.number, p.fstype, p.start, p.size, p.start, p.size, "keep", p.smallest, p.used, fixed_reason(p))


def _gaps(ordered: Sequence[Facts]) -> int:
    """Room the gaps between partitions keep, each rounded up to whole MiB, plus a MiB per partition for
    the starts' alignment."""
    total, prev_end = 0, ordered[0].start
    for p in ordered:
        total += _align_up(p.start - prev_end) + MIB
        prev_end = p.start + p.size
    return total


def _shrunk(ordered: Sequence[Facts], end: int) -> list[int]:
    """Each partition's size: the resizable ones between their smallest and their size, all in the same
    proportion of what they can give."""
    room = end - ordered[0].start - _gaps(ordered)
    floor = [p.size if fixed_reason(p) or p.smallest is None else min(p.size, _align_up(p.smallest)) for p in ordered]
    if sum(floor) > room:
        raise _cannot_shrink(ordered, floor, room)
    give = sum(p.size - f for p, f in zip(ordered, floor, strict=True))
    share = min(1.0, (room - sum(floor)) / give) if give else 1.0
    return [
        p.size if f == p.size else max(f, _align_down(f + int((p.size - f) * share)))
        for p, f in zip(ordered, floor, strict=True)
    ]


def _grown(ordered: Sequence[Facts], end: int) -> list[int]:
    """Each partition that can grow grows in proportion to its size; the others keep theirs."""
    room = end - ordered[0].start - _gaps(ordered)
    growing = [p for p in ordered if p.grows and not fixed_reason(p)]
    extra = room - sum(p.size for p in ordered)
    base = sum(p.size for p in growing)
    if extra <= 0 or not base:
        return [p.size for p in ordered]
    return [max(p.size, _align_down(p.size + extra * p.size // base)) if p in growing else p.size for p in ordered]


def _too_small(ordered: Sequence[Facts], end: int, target_size: int, fit: Fit) -> RefusedError:
    needed = ordered[-1].start + ordered[-1].size + (target_size - end)
    hint = {
        "keep": "send with --fit shrink to shrink the source's filesystems onto it",
        "grow": "--fit grow fills a larger disk; send with --fit shrink for a smaller one",
        "shrink": "",
    }[fit]
    return RefusedError(
        f"the target is too small for the source's layout: it needs {human_size(needed)} ({needed} bytes), "
        f"the target has {human_size(target_size)} ({target_size} bytes)",
        hint=hint or None,
    )


def _cannot_shrink(ordered: Sequence[Facts], floor: Sequence[int], room: int) -> RefusedError:
    short = sum(floor) - room
    fixed = [
        f"{p.number} ({p.fstype or 'no filesystem'}, {human_size(p.size)}): {fixed_reason(p) or 'cannot shrink'}"
        for p, f in zip(ordered, floor, strict=True)
        if f == p.size and p.size > 64 * MIB
    ]
    why = f"; kept at their size: {'; '.join(fixed)}" if fixed else ""
    return RefusedError(
        f"the target is {human_size(short)} ({short} bytes) too small even with every filesystem shrunk "
        f"to its smallest ({human_size(sum(floor))} needed, {human_size(room)} of room){why}",
        hint="choose a larger target disk, or free space on the source's filesystems",
    )


def _align_up(n: int) -> int:
    return -(-n // MIB) * MIB


def _align_down(n: int) -> int:
    return n // MIB * MIB
