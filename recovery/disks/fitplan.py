"""A partition layout fitted to another disk's size (pure: numbers in, a layout or a refusal out).

The engine measures each partition (:class:`Facts`: how small its filesystem can become, whether it can
grow) and this module lays the partitions out on the target: in their order, each gap before a partition
kept, every start and every resized size on a 1 MiB boundary, the GPT's backup at the new end. Partitions
that must stay as they are (the ESP, Microsoft's reserved and recovery partitions, BIOS boot,
anything whose filesystem cannot be resized) keep their size and may move; the others shrink in
proportion to what each can give, or grow in proportion to their size.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from recovery.errors import RefusedError
from recovery.units import human_size

MIB = 1 << 20
GIB = 1 << 30
FITS = ("keep", "shrink", "grow")
Fit = Literal["keep", "shrink", "grow"]
Method = Literal["keep", "move", "resize", "copy"]  # copy: into a new filesystem of the new size, file by file

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
    copies: bool = False  # it shrinks by a copy into a new filesystem (same UUID and label), not in place
    copies_to_grow: bool = False  # it grows the same way (no tool grows it in place: exFAT)
    why_fixed: str = ""  # why it cannot shrink (for a refusal): "XFS cannot shrink"


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
        """Anything differs from the source's layout, or the disk is smaller (its table is rewritten for it);
        else the clone is a plain one."""
        return self.target_size < self.source_size or any(p.moved or p.resized for p in self.parts)

    @property
    def size(self) -> int:
        """The bytes the fitted disk has: the target's when anything changed, else the source's."""
        return self.target_size if self.changed else self.source_size


def usable_end(disk_size: int, label: str, table_tail: int, sector: int = 512) -> int:
    """Where partitions must end on a disk of ``disk_size``: before the GPT's backup (``table_tail`` bytes:
    its entries and header), or at the disk's end (MBR, which counts at most 2^32 sectors)."""
    if label == "gpt":
        return disk_size - table_tail
    return min(disk_size, (1 << 32) * sector)


def system_reason(facts: Facts) -> str:
    """Why a partition keeps its size whatever its filesystem can do ("" for the others)."""
    system = SYSTEM_TYPES.get(facts.type.lower())
    if system:
        return f"an {system} keeps its size" if system[0] in "AEIOU" else f"a {system} keeps its size"
    return ""


def small_size(source_size: int) -> int:
    """Partitions smaller than this keep their size (a boot or recovery partition without its type: Windows'
    "System Reserved" on MBR): 1 GiB, or a 50th of a disk under 50 GiB."""
    return min(GIB, source_size // 50)


def fixed_reason(facts: Facts, small: int = 0) -> str:
    """Why a partition cannot shrink or grow ("" when it may): its kind, its size, or its filesystem."""
    if system_reason(facts):
        return system_reason(facts)
    if facts.size < small:
        return f"a partition under {human_size(small)} keeps its size"
    return facts.why_fixed


def plan_layout(
    parts: Sequence[Facts],
    source_size: int,
    target_size: int,
    end: int,
    fit: Fit,
    label: str = "gpt",
    sizes: Mapping[int, int] | None = None,
) -> Layout:
    """The layout of ``parts`` on a target of ``target_size`` whose partitions end by ``end``; a
    :class:`RefusedError` that says by how much and why when they cannot fit. ``sizes``: partitions the
    user sized (number: bytes, rounded down to whole MiB), the others shrunk or grown around them."""
    if fit not in FITS:
        raise ValueError(fit)
    chosen = {n: _align_down(size) for n, size in (sizes or {}).items()}
    if chosen and fit == "keep":
        raise RefusedError("partition sizes are chosen with --fit shrink or --fit grow")
    ordered = sorted(parts, key=lambda p: p.start)
    for before, after in itertools.pairwise(ordered):
        if before.start + before.size > after.start:
            raise RefusedError(f"the source's partitions {before.number} and {after.number} overlap")
    if any(p.size <= 0 or p.start < 0 or p.start + p.size > source_size for p in ordered):
        raise RefusedError("a partition of the source lies outside the disk: its table is damaged")
    small = small_size(source_size)
    why = {p.number: fixed_reason(p, small) for p in ordered}
    _check_chosen(ordered, chosen, why)
    fits_as_is = not ordered or ordered[-1].start + ordered[-1].size <= end
    if fit == "keep" or (fit == "shrink" and fits_as_is and not chosen) or not ordered:
        if not fits_as_is:
            raise _too_small(ordered, end, target_size, fit)
        kept = (Placed(p.number, p.fstype, p.start, p.size, p.start, p.size, "keep", p.smallest, p.used, why[p.number])
                for p in ordered)  # fmt: skip
        return Layout(fit, source_size, target_size, end, tuple(kept))
    if fit == "grow" and not fits_as_is:
        raise _too_small(ordered, end, target_size, fit)
    fixed = {**why, **{n: f"sized {human_size(size)} as asked" for n, size in chosen.items()}}
    new_sizes = _shrunk(ordered, end, fixed, chosen) if fit == "shrink" else _grown(ordered, end, fixed, chosen)
    placed = _placed(ordered, new_sizes, why)
    if placed[-1].new_start + placed[-1].new_size > end:  # alignment ate the last slack: refused, never written
        raise _too_small(ordered, end, target_size, fit)
    for first, second in itertools.pairwise(placed):
        if first.new_start + first.new_size > second.new_start:
            raise RefusedError(f"partitions {first.number} and {second.number} would overlap in the new layout")
    _check_moves(placed, ordered, label)
    return Layout(fit, source_size, target_size, end, tuple(placed))


def _check_chosen(ordered: Sequence[Facts], chosen: Mapping[int, int], why: dict[int, str]) -> None:
    """Each chosen size is one its partition can take: a partition there, not kept at its size, no smaller
    than its filesystem can become, larger only when its filesystem grows."""
    facts = {p.number: p for p in ordered}
    for number, size in chosen.items():
        p = facts.get(number)
        if p is None:
            raise RefusedError(f"the source has no partition {number} to size")
        if size == p.size:
            continue
        if why[number]:
            raise RefusedError(f"partition {number} ({p.fstype or 'no filesystem'}) keeps its size: {why[number]}")
        if size < p.size and (p.smallest is None or size < _align_up(p.smallest)):
            least = f"at least {_told(_align_up(p.smallest), size)}" if p.smallest is not None else "not smaller"
            raise RefusedError(
                f"partition {number} ({p.fstype}) can be {least}, not {_told(size, _align_up(p.smallest or 0))}"
            )
        if size > p.size and not p.grows:
            raise RefusedError(f"partition {number} ({p.fstype}) cannot grow: {human_size(size)} is larger")


def _told(size: int, other: int) -> str:
    """``size`` in words, with its bytes when it would read as ``other`` does."""
    said = human_size(size)
    return f"{said} ({size} bytes)" if said == human_size(other) else said


def _placed(ordered: Sequence[Facts], sizes: Sequence[int], why: dict[int, str]) -> list[Placed]:
    """Each partition at its new start: where it was when the ones before leave it room (nothing moves only
    to be aligned), else right after them (its gap kept) on a 1 MiB boundary."""
    placed: list[Placed] = []
    at, prev_end = 0, 0
    for p, size in zip(ordered, sizes, strict=True):
        gap = p.start - prev_end
        prev_end = p.start + p.size
        if not placed:
            start = p.start
        elif at + gap > p.start:  # the one before grew into it: it moves up
            start = _align_up(at + gap)
        else:  # one before it was made smaller: it moves down as far as it can go (else it stays)
            start = min(p.start, _align_up(at + gap))
        method: Method = "resize" if size != p.size else ("move" if start != p.start else "keep")
        if (size < p.size and p.copies) or (size > p.size and p.copies_to_grow):
            method = "copy"
        note = "" if size != p.size else why[p.number]  # why it keeps its size (an XFS that grows has none)
        placed.append(Placed(p.number, p.fstype, p.start, p.size, start, size, method, p.smallest, p.used, note))
        at = start + size
    return placed


def _check_moves(placed: Sequence[Placed], ordered: Sequence[Facts], label: str) -> None:
    """What must never move: a BIOS boot partition (GRUB's boot code names its sectors), and on an MBR disk
    an NTFS partition (Windows there names its partitions by their offset)."""
    for p, f in zip(placed, ordered, strict=True):
        if not p.moved:
            continue
        if SYSTEM_TYPES.get(f.type.lower()) == "BIOS boot partition":
            raise RefusedError(f"partition {p.number} is a BIOS boot partition, which GRUB finds by its sectors: it "
                               "cannot move, and the layout would move it")  # fmt: skip
        if label == "dos" and p.fstype == "ntfs":
            raise RefusedError(
                f"partition {p.number} (ntfs) would move: Windows on an MBR disk finds its partitions by their "
                "offset, so it would not boot; fitting it is not built yet",
                hint="clone it onto a disk at least the source's size",
            )


def move_order(parts: Sequence[Placed]) -> list[Placed]:
    """The partitions that move, in an order in which none is written over before it is read: those moving
    down from the first, then those moving up from the last. Each moves its data as the resizing left it
    (its smaller size); a :class:`RefusedError` if some move would still overwrite what is yet to move."""
    down = [p for p in parts if p.new_start < p.start]
    up = [p for p in reversed(parts) if p.new_start > p.start]
    order = sorted(down, key=lambda p: p.start) + up
    pending = {p.number: (p.start, p.start + min(p.size, p.new_size)) for p in parts}
    for p in order:
        del pending[p.number]
        dest = (p.new_start, p.new_start + min(p.size, p.new_size))
        for number, (a, b) in pending.items():
            if dest[0] < b and a < dest[1]:
                raise RefusedError(f"moving partition {p.number} would overwrite partition {number} before it moves")
        pending[-p.number - 1] = dest  # where it now lies: nothing may move onto it either
    return order


def _gaps(ordered: Sequence[Facts]) -> int:
    """Room the gaps between partitions keep, each rounded up to whole MiB, plus a MiB per partition for
    the starts' alignment."""
    total, prev_end = 0, ordered[0].start
    for p in ordered:
        total += _align_up(p.start - prev_end) + MIB
        prev_end = p.start + p.size
    return total


def smallest_target(parts: Sequence[Facts], source_size: int, table_tail: int) -> int:
    """The size of the smallest disk :func:`plan_layout` shrinks ``parts`` onto: they fit as they are, or each
    that can shrink is at its smallest, their gaps kept; ``table_tail``: bytes after them (the GPT's backup)."""
    ordered = sorted(parts, key=lambda p: p.start)
    if not ordered:
        return table_tail
    small = small_size(source_size)
    floor = _floors(ordered, {p.number: fixed_reason(p, small) for p in ordered}, [p.size for p in ordered])
    as_is = ordered[-1].start + ordered[-1].size
    return min(as_is, ordered[0].start + _gaps(ordered) + sum(floor)) + table_tail


def size_range(
    parts: Sequence[Facts], source_size: int, end: int, fit: Fit, number: int, sizes: Mapping[int, int] | None = None
) -> tuple[int, int] | None:
    """The least and the most :func:`plan_layout` lets the user size partition ``number`` (whole MiB), the other
    ``sizes`` chosen kept and the other partitions at their least; None when it keeps its size whatever the fit."""
    ordered = sorted(parts, key=lambda p: p.start)
    part = next((p for p in ordered if p.number == number), None)
    small = small_size(source_size)
    if part is None or fit == "keep" or fixed_reason(part, small) or (part.smallest is None and not part.grows):
        return None
    chosen = {n: _align_down(size) for n, size in (sizes or {}).items() if n != number}
    why = {p.number: fixed_reason(p, small) or ("chosen" if p.number in chosen else "") for p in ordered}
    others = [p for p in ordered if p.number != number]
    size = [chosen.get(p.number, p.size) for p in others]
    least_others = _floors(others, why, size) if fit == "shrink" else size  # growing, the others only grow
    most = _align_down(end - ordered[0].start - _gaps(ordered) - sum(least_others))
    least = part.size if part.smallest is None else min(part.size, _align_up(part.smallest))
    return least, most if part.grows else min(most, part.size)


def _floors(ordered: Sequence[Facts], why: dict[int, str], size: Sequence[int]) -> list[int]:
    """Each partition's least size: a resizable one's smallest on a 1 MiB boundary, the others' ``size``."""
    return [
        s if why[p.number] or p.smallest is None else min(s, _align_up(p.smallest))
        for p, s in zip(ordered, size, strict=True)
    ]


def _shrunk(ordered: Sequence[Facts], end: int, why: dict[int, str], chosen: Mapping[int, int]) -> list[int]:
    """Each partition's size: the chosen ones as chosen, the other resizable ones between their smallest and
    their size, all in the same proportion of what they can give."""
    room = end - ordered[0].start - _gaps(ordered)
    size = [chosen.get(p.number, p.size) for p in ordered]
    floor = _floors(ordered, why, size)
    if sum(floor) > room:
        raise _cannot_shrink(ordered, floor, room, why, chosen)
    give = sum(s - f for s, f in zip(size, floor, strict=True))
    share = min(1.0, (room - sum(floor)) / give) if give else 1.0
    return [s if f == s else max(f, _align_down(f + int((s - f) * share))) for s, f in zip(size, floor, strict=True)]


def _grown(ordered: Sequence[Facts], end: int, why: dict[int, str], chosen: Mapping[int, int]) -> list[int]:
    """Each partition that can grow grows in proportion to its size; the chosen ones are as chosen, the
    others keep theirs."""
    room = end - ordered[0].start - _gaps(ordered)
    size = [chosen.get(p.number, p.size) for p in ordered]
    growing = [
        p.grows and not system_reason(p) and not ordered_small(p, why) and p.number not in chosen for p in ordered
    ]
    extra = room - sum(size)
    base = sum(s for s, g in zip(size, growing, strict=True) if g)
    if extra < 0 and chosen:
        raise RefusedError(f"the sizes chosen leave no room: {human_size(-extra)} too much for the target")
    if extra <= 0 or not base:
        return size
    return [max(s, _align_down(s + extra * s // base)) if g else s for s, g in zip(size, growing, strict=True)]


def ordered_small(p: Facts, why: dict[int, str]) -> bool:
    """Kept at its size for being small (the reason says so)."""
    return why[p.number].startswith("a partition under")


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


def _cannot_shrink(
    ordered: Sequence[Facts], floor: Sequence[int], room: int, why: dict[int, str], chosen: Mapping[int, int]
) -> RefusedError:
    short = sum(floor) - room
    fixed = [
        f"{p.number} ({p.fstype or 'no filesystem'}, {human_size(p.size)}): {why[p.number] or 'cannot shrink'}"
        for p, f in zip(ordered, floor, strict=True)
        if f == p.size and p.number not in chosen
    ][:8]
    kept = f"; kept at their size: {'; '.join(fixed)}" if fixed else ""
    sized = "; ".join(f"partition {n} at {human_size(size)}" for n, size in chosen.items())
    return RefusedError(
        f"the target is {human_size(short)} ({short} bytes) too small even with every filesystem shrunk "
        f"to its smallest ({human_size(sum(floor))} needed, {human_size(room)} of room)"
        + (f"; sized as chosen: {sized}" if sized else "")
        + kept,
        hint="choose smaller sizes, or a larger target disk"
        if chosen
        else "choose a larger target disk, or free space on the source's filesystems",
    )


def _align_up(n: int) -> int:
    return -(-n // MIB) * MIB


def _align_down(n: int) -> int:
    return n // MIB * MIB
