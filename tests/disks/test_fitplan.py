"""The fitted layout (pure): what shrinks, grows, keeps its size and moves; every layout inside the
target, in the source's order, on 1 MiB boundaries, no partition below its smallest; a refusal that says
by how much and names what cannot shrink."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recovery.disks.fitplan import (
    MIB,
    Facts,
    Layout,
    Placed,
    move_order,
    plan_layout,
    size_range,
    smallest_target,
    usable_end,
)
from recovery.errors import RefusedError

GIB = 1024 * MIB
ESP = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
MSR = "e3c9e316-0b5c-4db8-817d-f92df00215ae"
WINRE = "de94bba4-06d1-4d40-a16a-bfd50179d6ac"
DATA = "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"
LINUX = "0fc63daf-8483-4772-8e79-3d69d8477de4"
TAIL = 33 * 512


def windows(disk: int = 1024 * GIB) -> list[Facts]:
    """ESP, MSR, C: (200 GiB used of most of the disk), then the recovery partition at the end."""
    c_size = disk - 2 * GIB
    return [
        Facts(1, MIB, 100 * MIB, ESP, "vfat"),
        Facts(2, 101 * MIB, 16 * MIB, MSR),
        Facts(3, 117 * MIB, c_size, DATA, "ntfs", smallest=200 * GIB, grows=True),
        Facts(4, 117 * MIB + c_size, 700 * MIB, WINRE, "ntfs", smallest=500 * MIB, grows=True),
    ]


def fit(parts: list[Facts], source: int, target: int, how: str, label: str = "gpt") -> Layout:
    end = usable_end(target, label, TAIL)
    return plan_layout(parts, source, target, end, how, label)  # type: ignore[arg-type]


def test_a_windows_disk_onto_half_its_size_shrinks_c_and_moves_the_recovery_partition_down() -> None:
    layout = fit(windows(), 1024 * GIB, 512 * GIB, "shrink")
    esp, msr, c, winre = layout.parts
    assert (esp.method, msr.method) == ("keep", "keep")
    assert c.method == "resize" and 200 * GIB <= c.new_size < c.size
    assert winre.method == "move" and winre.new_size == winre.size and winre.new_start < winre.start
    assert winre.new_start + winre.new_size <= 512 * GIB - TAIL
    assert "recovery partition keeps its size" in winre.note


def test_growing_fills_the_disk_in_proportion_and_keeps_the_small_ones() -> None:
    layout = fit(windows(512 * GIB), 512 * GIB, 2048 * GIB, "grow")
    esp, msr, c, winre = layout.parts
    assert esp.new_size == esp.size and msr.new_size == msr.size and winre.new_size == winre.size
    assert c.new_size > 3 * c.size
    assert winre.new_start + winre.new_size > 2047 * GIB  # the last one moved up to the end


def linux(disk: int = 1024 * GIB) -> list[Facts]:
    """ESP, a root (20 GiB used) and /home (100 GiB used) sharing the rest."""
    half = (disk - 2 * GIB) // 2 // MIB * MIB
    return [
        Facts(1, MIB, 512 * MIB, ESP, "vfat"),
        Facts(2, 513 * MIB, half, LINUX, "ext4", smallest=20 * GIB, grows=True),
        Facts(3, 513 * MIB + half, half, LINUX, "ext4", smallest=100 * GIB, grows=True),
    ]


def sized(parts: list[Facts], source: int, target: int, how: str, sizes: dict[int, int]) -> Layout:
    return plan_layout(parts, source, target, usable_end(target, "gpt", TAIL), how, "gpt", sizes)  # type: ignore[arg-type]


def test_a_chosen_size_is_kept_and_the_others_share_the_rest() -> None:
    esp, root, home = sized(linux(), 1024 * GIB, 400 * GIB, "shrink", {2: 50 * GIB + 123}).parts
    assert root.new_size == 50 * GIB and esp.new_size == esp.size  # whole MiB
    assert home.new_start + home.new_size > 399 * GIB  # /home takes what is left
    esp, root, home = sized(linux(256 * GIB), 256 * GIB, 2048 * GIB, "grow", {3: 200 * GIB}).parts
    assert home.new_size == 200 * GIB and root.new_size > 1800 * GIB  # the root grows into the rest


@pytest.mark.parametrize(
    ("sizes", "said"),
    [
        ({2: 10 * GIB}, r"partition 2 \(ext4\) can be at least 20\.0 GiB, not 10\.0 GiB"),
        ({1: 1 * GIB}, "partition 1 .* keeps its size: an EFI system partition keeps its size"),
        ({9: 1 * GIB}, "no partition 9"),
        ({2: 300 * GIB, 3: 300 * GIB}, "too small even with every filesystem shrunk"),
    ],
)
def test_a_size_the_partition_cannot_take_is_refused(sizes: dict[int, int], said: str) -> None:
    with pytest.raises(RefusedError, match=said):
        sized(linux(), 1024 * GIB, 400 * GIB, "shrink", sizes)


def test_a_partition_grown_by_choice_while_shrinking_moves_the_next_one_up() -> None:
    """--fit shrink with one partition made larger: the one after it moves up, never under it."""
    parts = [
        Facts(1, MIB, 10 * GIB, LINUX, "ext4", smallest=1 * GIB, grows=True),
        Facts(2, MIB + 10 * GIB, 10 * GIB, LINUX, "ext4", smallest=1 * GIB, grows=True),
    ]
    one, two = sized(parts, 20 * GIB + 2 * MIB, 16 * GIB, "shrink", {1: 12 * GIB}).parts
    assert one.new_size == 12 * GIB and two.new_start >= one.new_start + one.new_size
    assert two.new_start + two.new_size <= 16 * GIB - TAIL and two.new_size < two.size
    assert [p.number for p in move_order([one, two])] == [2]  # it moves up: from the last


def test_a_partition_made_smaller_while_growing_lets_the_next_one_move_down_into_its_room() -> None:
    """--fit grow with one partition sized smaller: the one after it moves down (its gap kept) and grows
    into the room, never left where it was past the target's end."""
    parts = [
        Facts(1, MIB, 5 * MIB, LINUX, "ext4", smallest=MIB, grows=True),
        Facts(2, 6 * MIB, MIB, LINUX, "ext4", smallest=MIB, grows=True),
    ]
    one, two = sized(parts, 8 * MIB, 16 * MIB, "grow", {1: MIB}).parts
    assert one.new_size == MIB and two.new_start == 2 * MIB and two.moved
    assert two.new_start + two.new_size <= usable_end(16 * MIB, "gpt", TAIL) and two.new_size > 10 * MIB
    assert [p.number for p in move_order([one, two])] == [2]


def test_chosen_sizes_that_overfill_a_larger_disk_are_refused() -> None:
    with pytest.raises(RefusedError, match="the sizes chosen leave no room"):
        sized(linux(256 * GIB), 256 * GIB, 512 * GIB, "grow", {2: 300 * GIB, 3: 300 * GIB})
    with pytest.raises(RefusedError, match="with --fit shrink or --fit grow"):
        sized(linux(256 * GIB), 256 * GIB, 512 * GIB, "keep", {2: 100 * GIB})


def test_keep_refuses_a_smaller_target_with_the_numbers_and_the_hint() -> None:
    with pytest.raises(RefusedError, match=r"needs 1022\.8 GiB.*has 512\.0 GiB") as e:
        fit(windows(), 1024 * GIB, 512 * GIB, "keep")
    assert e.value.hint is not None and "--fit shrink" in e.value.hint


def test_shrink_onto_a_disk_that_cannot_hold_the_used_data_says_by_how_much() -> None:
    with pytest.raises(RefusedError, match=r"too small even with every filesystem shrunk") as e:
        fit(windows(), 1024 * GIB, 150 * GIB, "shrink")
    assert "GiB" in str(e.value)


def test_an_xfs_that_must_shrink_is_refused_by_name() -> None:
    parts = [
        Facts(1, MIB, 100 * MIB, ESP, "vfat"),
        Facts(2, 101 * MIB, 100 * GIB, "0fc63daf-8483-4772-8e79-3d69d8477de4", "xfs", why_fixed="XFS cannot shrink"),
    ]
    with pytest.raises(RefusedError, match="XFS cannot shrink"):
        fit(parts, 101 * GIB, 50 * GIB, "shrink")
    moved = fit(parts, 101 * GIB, 200 * GIB, "grow")  # kept, not grown: it has no grow here
    assert moved.parts[1].new_size == 100 * GIB and not moved.changed


def test_a_filesystem_that_shrinks_by_a_copy_is_copied_and_grows_in_place() -> None:
    xfs = Facts(2, 101 * MIB, 100 * GIB, "0fc63daf-8483-4772-8e79-3d69d8477de4", "xfs", 10 * GIB, 12 * GIB,
                grows=True, copies=True)  # fmt: skip
    parts = [Facts(1, MIB, 100 * MIB, ESP, "vfat"), xfs]
    assert fit(parts, 101 * GIB, 50 * GIB, "shrink").parts[1].method == "copy"
    assert fit(parts, 101 * GIB, 200 * GIB, "grow").parts[1].method == "resize"
    exfat = dataclasses.replace(xfs, fstype="exfat", copies_to_grow=True)  # no tool grows it in place
    grown = fit([parts[0], exfat], 101 * GIB, 200 * GIB, "grow").parts[1]
    assert grown.method == "copy" and grown.new_size > grown.size
    assert fit([parts[0], exfat], 101 * GIB, 50 * GIB, "shrink").parts[1].method == "copy"


def test_shrink_onto_a_disk_that_holds_the_source_changes_nothing() -> None:
    layout = fit(windows(), 1024 * GIB, 2048 * GIB, "shrink")
    assert not layout.changed and layout.size == 1024 * GIB


def test_shrink_onto_a_smaller_disk_that_holds_the_partitions_only_rewrites_the_table() -> None:
    """A 1 TiB disk with 300 GiB partitioned onto 500 GiB: nothing moves or shrinks, yet it is a fitted
    disk of the target's size (its GPT's backup at the new end), not a plain clone the target refuses."""
    parts = [Facts(1, MIB, 100 * MIB, ESP, "vfat"), Facts(2, 101 * MIB, 300 * GIB, DATA, "ntfs")]
    layout = fit(parts, 1024 * GIB, 500 * GIB, "shrink")
    assert layout.changed and layout.size == 500 * GIB
    assert all(p.method == "keep" for p in layout.parts)


def test_small_partitions_keep_their_size_and_nothing_moves_only_to_be_aligned() -> None:
    """MBR Windows: "System Reserved" (NTFS, 100 MiB, at sector 63) keeps its size and place; C: shrinks
    where it is; on MBR an NTFS partition that would move is refused (Windows names them by offset)."""
    reserved = Facts(1, 63 * 512, 100 * MIB, "7", "ntfs", smallest=30 * MIB, grows=True)
    c = Facts(2, 63 * 512 + 100 * MIB, 400 * GIB, "7", "ntfs", smallest=50 * GIB, grows=True)
    layout = fit([reserved, c], 401 * GIB, 200 * GIB, "shrink", "dos")
    first, second = layout.parts
    assert first.method == "keep" and "under 1.0 GiB keeps its size" in first.note
    assert second.method == "resize" and second.new_start == second.start
    after = Facts(3, 63 * 512 + 100 * MIB + 400 * GIB, 500 * MIB, "27", "ntfs")  # a recovery partition after C:
    with pytest.raises(RefusedError, match="Windows on an MBR disk"):
        fit([reserved, c, after], 402 * GIB, 200 * GIB, "shrink", "dos")


def test_an_mbr_disk_counts_at_most_2_tib() -> None:
    assert usable_end(4096 * GIB, "dos", 0) == 2048 * GIB
    assert usable_end(1024 * GIB, "dos", 0) == 1024 * GIB


def test_a_bios_boot_partition_never_moves() -> None:
    bios = "21686148-6449-6e6f-744e-656564454649"
    parts = [
        Facts(1, MIB, 100 * GIB, DATA, "ext4", smallest=GIB, grows=True),
        Facts(2, MIB + 100 * GIB, 2 * MIB, bios),
        Facts(3, 3 * MIB + 100 * GIB, 10 * GIB, DATA, "ext4", smallest=GIB, grows=True),
    ]
    with pytest.raises(RefusedError, match="BIOS boot partition"):
        fit(parts, 111 * GIB, 50 * GIB, "shrink")


def test_a_move_that_would_overwrite_a_partition_yet_to_move_is_refused() -> None:
    a = Placed(1, "ext4", 10 * MIB, 10 * MIB, 15 * MIB, 10 * MIB, "move", None, None)
    b = Placed(2, "ext4", 20 * MIB, 10 * MIB, 30 * MIB, 10 * MIB, "move", None, None)
    assert [p.number for p in move_order([a, b])] == [2, 1]  # moving up: the last first
    c = Placed(3, "ext4", 20 * MIB, 10 * MIB, 12 * MIB, 10 * MIB, "move", None, None)
    with pytest.raises(RefusedError, match="would overwrite"):
        move_order([a, c])  # a moves up onto where c lies, c moves down onto where a lies


def test_overlapping_or_outside_partitions_are_refused() -> None:
    parts = [Facts(1, MIB, 10 * MIB, DATA, "ntfs"), Facts(2, 5 * MIB, 10 * MIB, DATA, "ntfs")]
    with pytest.raises(RefusedError, match="overlap"):
        fit(parts, GIB, GIB, "shrink")
    with pytest.raises(RefusedError, match="outside the disk"):
        fit([Facts(1, MIB, 2 * GIB, DATA, "ntfs")], GIB, GIB, "keep")


facts_lists = st.lists(
    st.tuples(
        st.integers(0, 64),  # gap before, MiB
        st.integers(1, 4096),  # size, MiB
        st.sampled_from([ESP, DATA, MSR, "83"]),
        st.sampled_from(["ext4", "ntfs", "xfs", "vfat", "swap", None]),
        st.floats(0.0, 1.0),  # smallest, as a share of its size
    ),
    min_size=1,
    max_size=8,
)


def facts_of(spec: list[tuple[int, int, str, str | None, float]]) -> tuple[list[Facts], int]:
    """The partitions ``spec`` describes (ext4 and NTFS shrink to their share and grow), and the disk's size."""
    parts, at = [], MIB
    for number, (gap, size, ptype, fstype, low) in enumerate(spec, start=1):
        at += gap * MIB
        resizable = fstype in ("ext4", "ntfs")
        smallest = max(MIB, int(size * MIB * low)) if resizable else None
        parts.append(Facts(number, at, size * MIB, ptype, fstype, None, smallest, resizable))
        at += size * MIB
    return parts, at + MIB


@settings(max_examples=300, deadline=None)
@given(facts_lists, st.integers(16, 40000), st.sampled_from(["keep", "shrink", "grow"]))
def test_every_layout_fits_keeps_order_and_never_goes_below_the_smallest(
    spec: list[tuple[int, int, str, str | None, float]], target_mib: int, how: str
) -> None:
    parts, source = facts_of(spec)
    target = target_mib * MIB
    try:
        layout = fit(parts, source, target, how)
    except RefusedError:
        return
    end = usable_end(target, "gpt", TAIL)
    placed = layout.parts
    move_order(placed)  # every layout has a safe order of moves
    assert [p.number for p in placed] == [p.number for p in parts]
    for before, after in itertools.pairwise(placed):
        assert before.new_start + before.new_size <= after.new_start
    assert placed[-1].new_start + placed[-1].new_size <= end or not layout.changed
    for p, f in zip(placed, parts, strict=True):
        if p.resized:
            assert p.new_start % MIB == 0 or p.new_start == p.start
            assert p.new_size % MIB == 0
            assert how == "grow" or (f.smallest is not None and p.new_size >= f.smallest)
            assert (p.new_size < p.size) == (how == "shrink")
        if p.moved:
            assert (p.new_start < p.start) == (how == "shrink")  # a shrink moves down, a grow up
        if p.note:  # a partition that keeps its size keeps it
            assert not p.resized


@settings(max_examples=300, deadline=None)
@given(facts_lists)
def test_the_smallest_target_is_the_least_a_shrunk_layout_fits(
    spec: list[tuple[int, int, str, str | None, float]],
) -> None:
    """What the wizard offers (a smaller disk the source fits once shrunk) is what the planner lays out:
    onto the smallest target it fits, onto a byte less it is refused."""
    parts, at = [], MIB
    for number, (gap, size, ptype, fstype, low) in enumerate(spec, start=1):
        at += gap * MIB
        smallest = max(MIB, int(size * MIB * low)) if fstype in ("ext4", "ntfs") else None
        parts.append(Facts(number, at, size * MIB, ptype, fstype, None, smallest))
        at += size * MIB
    source = at + MIB
    least = smallest_target(parts, source, TAIL)
    layout = fit(parts, source, least, "shrink")
    assert layout.parts[-1].new_start + layout.parts[-1].new_size <= least - TAIL
    with pytest.raises(RefusedError, match="too small"):
        fit(parts, source, least - 1, "shrink")


def test_the_range_a_partition_may_be_sized_to_is_what_the_planner_takes() -> None:
    """The wizard says how small and how large a partition may be made: the planner takes both ends."""
    parts, end = linux(), usable_end(400 * GIB, "gpt", TAIL)
    least, most = size_range(parts, 1024 * GIB, end, "shrink", 2) or (0, 0)
    # the room: 400 GiB less the GPT's backup, the first MiB, a MiB per partition, the ESP, /home's smallest
    assert least == 20 * GIB and most == 300 * GIB - 517 * MIB
    for size in (least, most):
        assert sized(linux(), 1024 * GIB, 400 * GIB, "shrink", {2: size}).parts[1].new_size == size
    with pytest.raises(RefusedError, match="sized as chosen: partition 2 at"):
        sized(linux(), 1024 * GIB, 400 * GIB, "shrink", {2: most + MIB})
    with pytest.raises(RefusedError, match=r"can be at least 20\.0 GiB \(21474836480 bytes\), not 20\.0 GiB \("):
        sized(linux(), 1024 * GIB, 400 * GIB, "shrink", {2: least - MIB})
    # Another size chosen is kept: partition 3 at 150 GiB leaves partition 2 less room.
    assert (size_range(parts, 1024 * GIB, end, "shrink", 2, {3: 150 * GIB}) or (0, 0))[1] == most - 50 * GIB
    assert size_range(parts, 1024 * GIB, end, "shrink", 1) is None  # the ESP keeps its size
    assert size_range(parts, 1024 * GIB, end, "keep", 2) is None  # no fit: no sizes
    assert size_range(parts, 1024 * GIB, end, "shrink", 9) is None  # no such partition


@settings(max_examples=300, deadline=None)
@given(facts_lists, st.integers(16, 40000), st.sampled_from(["shrink", "grow"]), st.integers(0, 7))
def test_both_ends_of_a_partitions_range_are_laid_out_and_a_mib_past_them_is_refused(
    spec: list[tuple[int, int, str, str | None, float]], target_mib: int, how: str, index: int
) -> None:
    parts, source = facts_of(spec)
    target = target_mib * MIB
    try:
        fit(parts, source, target, how)
    except RefusedError:
        return  # no layout: nothing to size
    part = parts[index % len(parts)]
    found = size_range(parts, source, usable_end(target, "gpt", TAIL), how, part.number)  # type: ignore[arg-type]
    if found is None or found[0] > found[1]:
        return
    least, most = found
    for size in (least, most):
        placed = sized(parts, source, target, how, {part.number: size}).parts[index % len(parts)]
        assert placed.new_size == size
    for size in (least - MIB, most + MIB):
        with pytest.raises(RefusedError):
            sized(parts, source, target, how, {part.number: size})
