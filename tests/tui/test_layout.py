"""The layout step: the new layout estimated from the disk list, in words; when the wizard shows it, and
where Enter and Esc lead from it (the stepper with a plain object for the app, no Textual app runs)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest
from textual.app import App

from recovery.engine.fit import filecopy
from recovery.errors import RefusedError, UsageError
from recovery.protocol.messages import DiskInfo, PartitionInfo
from recovery.report import fit_how
from recovery.tui import flow, layout
from recovery.tui.messages import StepAnswered, StepBack, StepChanged
from recovery.tui.model import GPT_TAIL, Choice, partition_facts, shrunk_size, smallest_size, target_refusal
from recovery.tui.review import review_rows
from recovery.tui.screens.layout import LayoutScreen
from recovery.tui.screens.steps import OptionsScreen, ReviewScreen
from recovery.tui.stepper import Stepper
from tests.tui import fakes
from tests.tui.helpers import run
from tests.tui.test_stepper import FakeWizard
from tests.tui.test_wizard import text_of

GIB, MIB = fakes.GIB, fakes.MIB
SOURCE = fakes.LOCAL[0]  # 512 GiB: a 512 MiB ESP, a 480 GiB ext4 (51 GiB used), a 31 GiB swap
SMALLER, LARGER = fakes.PEER[1], fakes.PEER[0]  # 256 GiB, 1 TiB


def shrink() -> Choice:
    return Choice(send=True, source=SOURCE, target=SMALLER)


def grow() -> Choice:
    return Choice(send=True, source=SOURCE, target=LARGER, grow=True)


def test_a_shrunk_layout_says_each_partitions_old_and_new_size_and_what_happens() -> None:
    rows = layout.rows(layout.estimate(shrink()), SOURCE)
    assert [(r.number, r.name, r.used) for r in rows] == [
        (1, 'vfat "EFI"', "31.0 MiB"),
        (2, 'ext4 "root"', "51.0 GiB"),
        (3, "swap", "-"),
    ]
    esp, root, swap = rows
    assert (esp.size, esp.start, esp.new_size, esp.new_start) == ("512.0 MiB", "1.0 MiB", "512.0 MiB", "1.0 MiB")
    assert esp.happens == "kept: a partition under 1.0 GiB keeps its size"
    assert (root.size, root.new_size, root.new_start, root.happens) == ("480.0 GiB", "241.4 GiB", "513.0 MiB", "shrunk")
    assert (swap.start, swap.new_start, swap.happens) == ("481.0 GiB", "242.4 GiB", "shrunk and moved")
    assert layout.headline(shrink()) == (
        "nvme0n1 (512.0 GiB) onto sda (256.0 GiB): the filesystems are shrunk to fit the smaller disk"
    )


def test_a_grown_layout_says_why_a_partition_keeps_its_size() -> None:
    plan = layout.estimate(grow())
    assert plan.parts[-1].new_start + plan.parts[-1].new_size <= LARGER.size - GPT_TAIL
    esp, root, swap = layout.rows(plan, SOURCE)
    assert esp.happens.startswith("kept: a partition under")
    assert (root.new_size, root.happens) == ("992.0 GiB", "grown")
    assert (swap.new_start, swap.happens) == ("993.0 GiB", "moved, same size: swap is not grown")
    f2fs = dataclasses.replace(SOURCE.partitions[1], fstype="f2fs", label="DATA")
    kept = layout.rows(layout.estimate(dataclasses.replace(grow(), source=with_parts(SOURCE, f2fs))), SOURCE)
    assert kept[1].happens == "kept: F2FS is kept at its size (a file-level copy is not built yet)"
    exfat = dataclasses.replace(f2fs, fstype="exfat")
    copied = layout.rows(layout.estimate(dataclasses.replace(grow(), source=with_parts(SOURCE, exfat))), SOURCE)
    assert copied[1].happens == "copied file by file into a new filesystem with its UUID and label"
    fat = dataclasses.replace(SOURCE.partitions[1], fstype="vfat", label="DATA")
    grown = layout.rows(layout.estimate(dataclasses.replace(grow(), source=with_parts(SOURCE, fat))), SOURCE)
    assert grown[1].happens == "grown"  # by fatresize


def with_parts(disk: DiskInfo, *parts: PartitionInfo) -> DiskInfo:
    """``disk`` with ``parts`` in the place of its own of the same numbers."""
    by_number = {p.number: p for p in (*disk.partitions, *parts)}
    return dataclasses.replace(disk, partitions=tuple(by_number.values()))


def test_the_estimate_uses_the_smallest_sizes_that_decide_whether_a_smaller_disk_is_offered() -> None:
    facts = [partition_facts(p) for p in SOURCE.partitions]
    assert [f.smallest for f in facts] == [smallest_size(p) for p in SOURCE.partitions]
    assert facts[1].smallest == int(51 * GIB * 1.1) + 4 * MIB and facts[2].smallest == 64 * MIB
    assert [f.grows for f in facts] == [True, True, False] and facts[0].why_fixed == ""  # FAT: fatresize
    assert facts[0].type == ""  # not told: the planner keeps small partitions (the ESP) at their size
    unknown = dataclasses.replace(SOURCE.partitions[1], used=None)
    assert partition_facts(unknown).why_fixed == "its used space is not known here"
    # The smallest disk the list offers holds the estimated layout; a MiB less is refused there and here.
    least = dataclasses.replace(SMALLER, size=shrunk_size(SOURCE) or 0)
    root = layout.estimate(dataclasses.replace(shrink(), target=least)).parts[1]
    assert root.new_size == -(-(facts[1].smallest or 0) // MIB) * MIB  # at its smallest, on a MiB boundary
    less = dataclasses.replace(least, size=least.size - MIB)
    assert target_refusal(SOURCE, less) is not None
    with pytest.raises(RefusedError):
        layout.estimate(dataclasses.replace(shrink(), target=less))


def test_logical_partitions_and_btrfs_are_estimated_as_the_sender_fits_them() -> None:
    """An MBR disk with its swap and /home in logical partitions is offered a smaller disk; a Btrfs's
    estimate leaves room for its chunks (its smallest device holds more than its used bytes)."""
    root = PartitionInfo(1, MIB, 100 * GIB, "ext4", used=10 * GIB)
    swap = PartitionInfo(5, 100 * GIB + 2 * MIB, 8 * GIB, "swap")
    home = PartitionInfo(6, 108 * GIB + 3 * MIB, 300 * GIB, "btrfs", used=50 * GIB)
    old = dataclasses.replace(SOURCE, ptable="dos", size=409 * GIB, partitions=(root, swap, home))
    least = shrunk_size(old)
    assert least is not None and 60 * GIB < least < 100 * GIB
    assert smallest_size(home) == 50 * GIB + 10 * GIB + 256 * MIB


def test_a_layout_the_estimate_cannot_make_is_a_refusal() -> None:
    tiny = dataclasses.replace(SMALLER, size=32 * GIB)
    with pytest.raises(RefusedError, match="too small even with every filesystem shrunk"):
        layout.estimate(dataclasses.replace(shrink(), target=tiny))
    screen = LayoutScreen(dataclasses.replace(shrink(), target=tiny), fakes.HERE, fakes.THERE)
    assert screen.found == [] and "too small" in screen.refusal
    assert screen.check_action("next", ()) is False and screen.check_action("back", ()) is True
    assert screen.rows[0][1].startswith("cannot be made: the target is")
    no_table = dataclasses.replace(SOURCE, ptable=None)
    with pytest.raises(RefusedError, match="no partition table to fit"):
        layout.estimate(dataclasses.replace(shrink(), source=no_table))


@pytest.mark.parametrize("fstype", ["xfs", "exfat"])
def test_an_xfs_or_exfat_is_shrunk_by_a_copy_estimated_as_the_sender_makes_it(fstype: str) -> None:
    part = dataclasses.replace(SOURCE.partitions[1], fstype=fstype, label="data")
    facts = partition_facts(part)
    assert facts.copies and facts.smallest == filecopy.smallest(51 * GIB, fstype) and not facts.why_fixed
    [_, data, _] = layout.rows(layout.estimate(dataclasses.replace(shrink(), source=with_parts(SOURCE, part))), SOURCE)
    assert data.happens == "copied file by file into a new filesystem with its UUID and label"
    assert data.new_size == "241.4 GiB"


def test_a_method_the_words_do_not_know_still_shows() -> None:
    assert fit_how("resize", 2, 1, moved=False) == "shrunk" and fit_how("resize", 1, 2, moved=True) == "grown and moved"
    assert fit_how("move", 1, 1, moved=True) == "moved" and fit_how("zap", 2, 1, moved=False) == "zap"


def test_a_peers_words_are_shown_as_they_are_never_as_markup() -> None:
    """A label, a filesystem's name, a disk's path and a host name that look like markup (a peer reports
    them) are printed as they are; read as markup, "[/x]" would end the wizard."""
    label, fstype = "[/x][b]x[/b]", "[link=http://x]fs"
    odd = dataclasses.replace(SOURCE.partitions[1], label=label)
    other = dataclasses.replace(SOURCE.partitions[0], fstype=fstype)
    source = dataclasses.replace(with_parts(SOURCE, odd, other), path="/dev/sd[b]x")
    choice = dataclasses.replace(shrink(), source=source, send=False)

    async def scenario() -> None:
        app: App[None] = App()
        async with app.run_test(size=(100, 30)) as pilot:
            await app.push_screen(LayoutScreen(choice, fakes.HERE, "[/x]peer"))
            await pilot.pause()
            assert text_of(app, "#layout-headline").startswith("sd[b]x (512.0 GiB) onto sda")
            assert "[/x]peer, which holds the source" in text_of(app, "#layout-note")
            rows = text_of(app, "#layout")
            assert f'2 ext4 "{label}" 51.0 GiB' in rows and f'1 {fstype} "EFI" 31.0 MiB' in rows

    run(scenario)


def test_the_layout_step_shows_only_when_the_clone_changes_the_layout() -> None:
    keep = Choice(send=True, source=SOURCE, target=LARGER)
    save = dataclasses.replace(shrink(), image_target="/srv/pc.img")
    assert flow.following("options", shrink()) == "layout" and flow.previous("review", shrink()) == "layout"
    assert flow.following("options", grow()) == "layout" and flow.previous("review", grow()) == "layout"
    for other in (keep, save, Choice()):
        assert flow.following("options", other) == "review" and flow.previous("review", other) == "options"
    assert flow.previous("layout", shrink()) == "options" and flow.following("layout", shrink()) == "review"
    assert flow.label("layout") == "Step 5 of 6: the new layout"  # a second page of the options' step
    assert flow.label("review") == "Step 6 of 6: review and confirm"
    assert flow.activity("layout") == "reviewing the new layout of the partitions"
    for fitted, row in ((shrink(), "Shrinks"), (grow(), "Grows")):  # the review keeps its row, and points here
        said = dict(review_rows(fitted, fakes.HERE, fakes.THERE))[row]
        assert "the step before this review estimates the new layout; rescue-laptop measures it exactly" in said


class Told:
    """A session that records what the driver tells the peer."""

    def __init__(self) -> None:
        self.told: list[tuple[str, int, int, tuple[tuple[str, str], ...]]] = []
        self.images = False

    def tell(self, what: str, step: int = 0, steps: int = 0, review: Any = ()) -> None:
        self.told.append((what, step, steps, tuple(review)))


def test_enter_goes_on_to_the_review_and_esc_back_to_the_options() -> None:
    wizard = FakeWizard()
    state, session = wizard.state, Told()
    state.link, state.session = SimpleNamespace(role="driver", inventory=fakes.PEER), session  # type: ignore[assignment]
    state.choice = shrink()
    steps = Stepper(wizard)
    steps.answered("options", shrink())
    [(_, screen)] = wizard.asked
    assert isinstance(screen, LayoutScreen) and state.step == "layout"
    what, number, count, rows = session.told[-1]
    assert (what, number, count) == ("reviewing the new layout of the partitions", 5, 6)
    assert rows[0][0] == "Layout" and "an estimate" in rows[0][1]
    assert rows[2] == (
        "Part 2",
        'ext4 "root", 51.0 GiB used: 480.0 GiB at 513.0 MiB -> 241.4 GiB at 513.0 MiB, shrunk',
    )
    steps.tell("layout", [("Part 2", "sized")])  # a size chosen there: the other machine is told at once
    assert session.told[-1] == ("reviewing the new layout of the partitions", 5, 6, (("Part 2", "sized"),))
    steps.answered("layout", {})
    assert isinstance(wizard.asked[-1][1], ReviewScreen)
    steps.back("review")
    assert isinstance(wizard.asked[-1][1], LayoutScreen)
    steps.back("layout")
    assert isinstance(wizard.asked[-1][1], OptionsScreen) and state.choice == shrink()
    state.choice = Choice(send=True, source=SOURCE, target=LARGER)  # the same layout: no such step
    steps.answered("options", state.choice)
    assert isinstance(wizard.asked[-1][1], ReviewScreen)


def test_a_size_is_typed_as_the_command_line_takes_it_and_laid_out_by_the_planner() -> None:
    sized = layout.with_size(shrink(), 2, "120G")
    assert sized.sizes == {2: 120 * GIB} == layout.with_size(shrink(), 2, " 120GiB ").sizes
    assert layout.with_size(sized, 3, "500M").sizes == {2: 120 * GIB, 3: 500 * MIB}
    _, root, swap = layout.rows(layout.estimate(sized), SOURCE, sized.sizes)
    assert (root.new_size, root.happens) == ("120.0 GiB", "shrunk to the size you chose")
    assert swap.happens == "moved" and swap.new_size == "31.0 GiB"  # the room left keeps it whole
    assert layout.with_size(sized, 2, "").sizes == {}  # empty: the automatic size again
    with pytest.raises(RefusedError, match=r"can be at least 56\.1 GiB, not 500\.0 MiB"):
        layout.with_size(sized, 2, "500M")
    with pytest.raises(UsageError, match="bad size 'lots'"):
        layout.with_size(sized, 2, "lots")
    assert sized.sizes == {2: 120 * GIB}  # a refusal changes nothing
    assert layout.with_size(shrink(), 2, str(120 * GIB + 5)).sizes == {2: 120 * GIB}  # whole MiB, as laid out


def test_only_partitions_that_can_be_resized_are_offered_with_what_their_numbers_mean() -> None:
    assert layout.sizable(shrink()) == [2, 3]  # not the ESP (small), kept at its size
    assert layout.range_line(shrink(), 2) == (
        "Partition 2: smallest possible 56.1 GiB (its data), available 254.9 GiB (with the others at their smallest)."
    )
    assert layout.range_line(grow(), 2).endswith("available 992.0 GiB (with the others at their size).")
    least, most = layout.size_range(shrink(), 2) or (0, 0)
    with_swap = layout.size_range(layout.with_size(shrink(), 3, "10G"), 2)  # the swap at 10 GiB, not its smallest
    assert with_swap == (least, most - (10 * GIB - 64 * MIB))
    tiny = dataclasses.replace(SMALLER, size=32 * GIB)
    assert layout.sizable(dataclasses.replace(shrink(), target=tiny)) == []  # no layout: nothing to size
    said = dict(review_rows(layout.with_size(shrink(), 2, "120G"), fakes.HERE, fakes.THERE))["Shrinks"]
    assert "shrunk to fit (partition 2 at 120.0 GiB as chosen, the others around it) on a" in said


class Host(App[None]):
    """An app that records what its step answers."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[tuple[str, object]] = []
        self.told: list[tuple[tuple[str, str], ...]] = []  # what the other machine is told the step says

    def on_step_answered(self, message: StepAnswered) -> None:
        self.answers.append((message.step, message.value))

    def on_step_back(self, message: StepBack) -> None:
        self.answers.append(("back", message.value))

    def on_step_changed(self, message: StepChanged) -> None:
        self.told.append(message.rows)


def test_the_user_sizes_a_partition_with_the_keys_and_a_refused_size_changes_nothing() -> None:
    async def scenario() -> None:
        app = Host()
        async with app.run_test(size=(100, 40)) as pilot:
            screen = LayoutScreen(shrink(), fakes.HERE, fakes.THERE)
            await app.push_screen(screen)
            await pilot.pause()
            automatic = list(screen.found)
            assert screen.picked == 2 and "smallest possible 56.1 GiB" in text_of(app, "#layout-range")
            keys = {b.binding.description for b in screen.active_bindings.values()}
            assert {"Partition", "Resize", "Continue", "Back"} <= keys and "Automatic size" not in keys
            await pilot.press("s", *"120G", "enter")
            assert screen.choice.sizes == {2: 120 * GIB} and not screen.editing
            assert screen.found[1].new_size == "120.0 GiB" and "shrunk to the size you chose" in text_of(app, "#layout")
            assert (
                app.told == [tuple(screen.rows)]
                and "120.0 GiB at 513.0 MiB, shrunk to the size you chose" in (screen.rows[2][1])
            )
            sized = list(screen.found)
            assert "Automatic size" in {b.binding.description for b in screen.active_bindings.values()}
            for typed, said in (("10G", "can be at least 56.1 GiB"), ("300G", "sized as chosen: partition 2")):
                await pilot.press("s", *typed)
                keys = {b.binding.description for b in screen.active_bindings.values()}
                assert {"Apply the size", "Cancel"} <= keys and not {"Continue", "Back", "Partition"} & keys
                await pilot.press("enter")
                assert screen.editing and screen.found == sized and screen.choice.sizes == {2: 120 * GIB}
                shown = text_of(app, "#layout-problem")
                assert shown.startswith("Not applied: ") and said in shown
                await pilot.press("enter")  # the same size again: refused again, nothing answered
                assert app.answers == [] and screen.editing
                await pilot.press("escape")  # leaves the field, not the step
                assert not screen.editing and app.screen is screen and not screen.problem
            assert len(app.told) == 1  # a refused size is not told
            await pilot.press("down")
            assert screen.picked == 3 and "Partition 3: smallest possible 64.0 MiB" in text_of(app, "#layout-range")
            await pilot.press("up", "c")  # partition 2 back to its automatic size
            assert screen.choice.sizes == {} and screen.found == automatic
            await pilot.press("s", *"100G", "enter", "escape")  # back to the options, the size kept
            assert app.answers == [("back", {2: 100 * GIB})]
            await pilot.press("enter")
            assert app.answers[-1] == ("layout", {2: 100 * GIB})

    run(scenario)


def test_the_sizes_chosen_reach_the_clone_and_another_disk_or_fit_drops_them() -> None:
    sized = layout.with_size(shrink(), 2, "120G")
    assert sized.complete().sizes == {2: 120 * GIB}
    assert flow.answer(shrink(), "layout", {2: 120 * GIB}) == sized
    assert flow.answer(sized, "options", sized).sizes == {2: 120 * GIB}  # the same fit keeps them
    assert flow.answer(sized, "target", LARGER).sizes == {}
    assert flow.answer(sized, "source", dataclasses.replace(SOURCE, path="/dev/sdz")).sizes == {}
    assert flow.answer(sized, "source", SOURCE).sizes == {2: 120 * GIB}  # the same disk again
    grown = dataclasses.replace(sized, target=LARGER)
    assert flow.answer(grown, "options", dataclasses.replace(grown, grow=True)).sizes == {}
    assert dataclasses.replace(grown, grow=False).complete().sizes == {}  # no fit: no sizes
