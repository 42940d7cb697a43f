"""Issue 24 in the wizard: a target smaller than the source, whose data fits once its filesystems are
shrunk, is offered; the layout step shows the new layout beside the old, the review says it is shrunk
to fit (the source never written); the clone fits the source on the sending machine, whichever drives.
Real peers over loopback TCP, a loop device as the smaller target, the 64 MiB sample disk (ext4 and FAT)
as the source."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot

from recovery.tui import layout
from recovery.tui.app import WizardApp
from recovery.tui.job import JobView
from recovery.tui.screens.layout import LayoutScreen
from recovery.tui.screens.pair import PairScreen
from recovery.tui.screens.results import ErrorScreen, SummaryScreen
from recovery.tui.screens.steps import DirectionScreen, DiskScreen, OptionsScreen, ReviewScreen
from tests.helpers import MIB, b3sum, loop_device, sh
from tests.tui.helpers import SAMPLE_MIB, Peer, run, wait_for
from tests.tui.test_wizard import SIZE, config, confirm, on, text_of, type_code, walk_to_options, walk_to_review

pytestmark = pytest.mark.root  # loop devices
SMALLER = 56  # MiB: less than the sample's 64, more than its data once the ext4 is shrunk


@pytest.fixture
def smaller(tmp_path: Path) -> Iterator[Path]:
    image = tmp_path / "smaller.img"
    with open(image, "wb") as f:
        f.truncate(SMALLER * MIB)
    with loop_device(image, partitions=False) as dev:
        yield Path(dev)


def size_of(shown: str) -> float:
    """Bytes of a size as the wizard shows it: ``40.0 MiB``."""
    number, unit = shown.split()
    return float(number) * 1024 ** ["B", "KiB", "MiB", "GiB", "TiB"].index(unit)


def check_fitted(target: Path, source: Path) -> None:
    assert "No problems found" in sh("sgdisk", "-v", str(target)).stdout
    old = sh("sfdisk", "--dump", str(source)).stdout
    new = sh("sfdisk", "--dump", str(target)).stdout
    uuids = [line.split("uuid=")[1].split(",")[0] for line in old.splitlines() if "uuid=" in line]
    assert uuids and all(u in new for u in uuids)


async def confirmed_and_checked(pilot: Pilot[None], app: WizardApp, target: Path) -> JobView:
    """Confirm the review; the clone ends verified, every filesystem's check passed on ``target``."""
    await confirm(pilot, target.name)
    await wait_for(pilot, lambda: isinstance(app.screen, (SummaryScreen, ErrorScreen)), 90, "the end")
    assert not isinstance(app.screen, ErrorScreen), app.screen.advice
    job: JobView = app.screen.job  # type: ignore[attr-defined]
    assert job.summary is not None and job.summary.verified is True
    assert job.summary.checks and all(c["ok"] for c in job.summary.checks)
    return job


def wizard_and_peer(
    make_peer: type[Peer], source_image: Path, smaller: Path, tmp_path: Path, receive: bool
) -> tuple[Peer, WizardApp, Path]:
    """The peer and this machine's wizard: the source here and the smaller disk on the peer, or (``receive``)
    a copy of the source on the peer and the smaller disk here; and that source."""
    if receive:
        source = tmp_path / "peer-source.img"
        shutil.copyfile(source_image, source)
        peer = make_peer([source], name="old-laptop")
        return peer, WizardApp(config(peer, tmp_path, smaller, name="new-laptop")), source
    peer = make_peer([smaller], name="new-laptop")
    return peer, WizardApp(config(peer, tmp_path, source_image)), source_image


@pytest.mark.parametrize("receive", [False, True], ids=["send", "receive"])
def test_a_smaller_disk_is_offered_and_the_source_is_shrunk_to_fit(
    make_peer: type[Peer], source_image: Path, smaller: Path, tmp_path: Path, receive: bool
) -> None:
    """Driving and sending this machine's disk onto the peer's smaller one, and driving and receiving the
    peer's disk onto this machine's smaller one (the peer fits its disk, as it was asked)."""
    peer, app, source = wizard_and_peer(make_peer, source_image, smaller, tmp_path, receive)
    before = b3sum(str(source))

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await walk_to_options(pilot, peer.code, receive=receive)
            await pilot.press("enter")
            await on(pilot, LayoutScreen)  # the new layout, before the review
            screen = app.screen
            assert isinstance(screen, LayoutScreen) and not screen.refusal
            root, data = screen.found
            assert (root.number, root.name, root.size, root.start) == (1, 'ext4 "demo-root"', "40.0 MiB", "1.0 MiB")
            assert root.happens == "shrunk" and root.new_start == "1.0 MiB"
            assert MIB <= size_of(root.new_size) < 40 * MIB and size_of(root.used) < size_of(root.new_size)
            assert (data.number, data.name.split()[0], data.start) == (2, "vfat", "41.0 MiB")
            assert size_of(data.new_size) < size_of(data.size) and data.happens == "shrunk and moved"  # fatresize
            shown = text_of(app, "#layout")
            assert all(v in shown for v in ("demo-root", "40.0 MiB", root.new_size, "at 41.0 MiB", data.new_start))
            assert "The source is never written" in text_of(app, "#layout-note")
            await pilot.press("enter")
            await on(pilot, ReviewScreen)
            said = dict(app.screen.rows)  # type: ignore[attr-defined]
            assert "is smaller" in said["Shrinks"] and "never written" in said["Shrinks"]
            job = await confirmed_and_checked(pilot, app, smaller)
            if not receive:  # the sending machine's screen showed the layout
                assert job.layout[0].startswith("fit (shrink)") and any(
                    "ext4" in r and "shrunk" in r for r in job.layout
                )

    run(scenario)
    assert b3sum(str(source)) == before
    check_fitted(smaller, source)


@pytest.mark.parametrize("receive", [False, True], ids=["send", "receive"])
def test_a_partition_sized_on_the_layout_step_has_that_size_on_the_target(
    make_peer: type[Peer], source_image: Path, smaller: Path, tmp_path: Path, receive: bool
) -> None:
    """The user sizes the ext4 on the layout step (as --size does): the sending machine plans with that size,
    whichever machine drives (the size crosses in the request), and the target's partition has it."""
    peer, app, source = wizard_and_peer(make_peer, source_image, smaller, tmp_path, receive)
    chosen = 0

    async def scenario() -> None:
        nonlocal chosen
        async with app.run_test(size=SIZE) as pilot:
            await walk_to_options(pilot, peer.code, receive=receive)
            await pilot.press("enter")
            await on(pilot, LayoutScreen)
            screen = app.screen
            assert isinstance(screen, LayoutScreen) and screen.picked == 1 and screen.sizable == [1, 2]
            least, most = layout.size_range(screen.choice, 1) or (0, 0)
            automatic = size_of(screen.found[0].new_size)
            # a quarter of the way up: the FAT after it needs more than the wizard can estimate (libparted's
            # own least size, which only the sending machine measures)
            chosen = (least + (most - least) // 4) // MIB * MIB
            assert least < chosen < most and chosen != automatic
            for typed, said in (("1M", "can be at least"), (f"{most // MIB + 1}M", "sized as chosen: partition 1")):
                await pilot.press("s", *typed, "enter", "enter")  # refused: Enter applies again, never goes on
                await pilot.pause()
                assert app.screen is screen and screen.editing and said in screen.problem
                assert screen.choice.sizes == {} and size_of(screen.found[0].new_size) == automatic
                await pilot.press("escape")
            await pilot.press("s", *f"{chosen // MIB}M", "enter")
            assert screen.choice.sizes == {1: chosen} and size_of(screen.found[0].new_size) == chosen
            await pilot.press("enter")
            await on(pilot, ReviewScreen)
            said = dict(app.screen.rows)  # type: ignore[attr-defined]
            assert f"partition 1 at {chosen // MIB}.0 MiB as chosen" in said["Shrinks"]
            await confirmed_and_checked(pilot, app, smaller)

    run(scenario)
    check_fitted(smaller, source)
    table = json.loads(sh("sfdisk", "--json", str(smaller)).stdout)["partitiontable"]
    root, data = table["partitions"]
    assert root["size"] * table["sectorsize"] == chosen  # exactly as typed
    old = json.loads(sh("sfdisk", "--json", str(source)).stdout)["partitiontable"]["partitions"][1]
    # the FAT (fatresize) shrinks around it, after it
    assert data["size"] <= old["size"] and data["start"] >= root["start"] + root["size"]


def on_ext4(image: Path, *argv: str) -> None:
    """Run a tool on the sample disk's ext4 (its first partition: 1 MiB in, 5/8 of the disk)."""
    region = ["--offset", str(MIB), "--sizelimit", str(SAMPLE_MIB * 5 // 8 * MIB)]
    dev = sh("losetup", "--find", "--show", *region, str(image)).stdout.strip()
    try:
        sh(*argv, dev, check=False)
    finally:
        sh("losetup", "--detach", dev)


@pytest.mark.parametrize("receive", [False, True], ids=["send", "receive"])
def test_a_fit_the_source_cannot_make_is_refused_and_the_pairing_stays(
    make_peer: type[Peer], source_image: Path, smaller: Path, tmp_path: Path, receive: bool
) -> None:
    """The list estimated the source fits once shrunk, but its ext4 is not clean (so it keeps its size):
    the sending machine refuses before anything crossed, the wizard says so, the session goes on (a retry
    once the filesystem is repaired clones it)."""
    peer, app, source = wizard_and_peer(make_peer, source_image, smaller, tmp_path, receive)
    on_ext4(source, "debugfs", "-w", "-R", "set_inode_field <2> links_count 7")

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await walk_to_review(pilot, peer.code, receive=receive)
            await confirm(pilot, smaller.name)
            await wait_for(pilot, lambda: isinstance(app.screen, ErrorScreen), 60, "the refusal")
            screen = app.screen
            assert isinstance(screen, ErrorScreen) and screen.advice.code == "refused", screen.advice
            assert "too small even with every filesystem shrunk" in screen.advice.message
            assert "is not clean" in screen.advice.message
            assert app.state.link is not None  # nothing crossed that ends the pairing
            on_ext4(source, "e2fsck", "-f", "-y")
            await pilot.press("r")
            await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen), 30, "the review again")
            await confirm(pilot, smaller.name)
            await wait_for(pilot, lambda: isinstance(app.screen, (SummaryScreen, ErrorScreen)), 90, "the end")
            assert isinstance(app.screen, SummaryScreen), getattr(app.screen, "advice", None)

    run(scenario)


@pytest.fixture
def larger(tmp_path: Path) -> Iterator[Path]:
    image = tmp_path / "larger.img"
    with open(image, "wb") as f:
        f.truncate(2 * SAMPLE_MIB * MIB)
    with loop_device(image, partitions=False) as dev:
        yield Path(dev)


def test_onto_a_larger_disk_the_user_may_grow_the_filesystems(
    make_peer: type[Peer], source_image: Path, larger: Path, tmp_path: Path
) -> None:
    """The options offer to fill a larger disk; the review says the filesystems grow; the ext4 of the copy
    fills its grown partition, the source unchanged."""
    peer = make_peer([larger], name="new-laptop")
    app = WizardApp(config(peer, tmp_path, source_image))
    before = b3sum(str(source_image))

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await type_code(pilot, peer.code)
            if isinstance(app.screen, PairScreen):
                await pilot.press("enter")
            await on(pilot, DirectionScreen)
            await pilot.press("home", "enter")
            await on(pilot, DiskScreen, "copy")
            await pilot.press("enter")
            await on(pilot, DiskScreen, "overwrite")
            await pilot.press("enter")
            await on(pilot, OptionsScreen)
            assert app.screen.grows  # type: ignore[attr-defined]  # the larger disk's choice is offered
            await pilot.press("tab", "tab", "tab", "down", "enter")
            await on(pilot, LayoutScreen)
            root, data = app.screen.found  # type: ignore[attr-defined]
            assert root.happens == "grown" and size_of(root.new_size) > size_of(root.size)
            assert data.happens == "grown and moved" and size_of(data.new_size) > size_of(data.size)  # fatresize
            await pilot.press("escape")  # back to the options, growing still chosen
            await on(pilot, OptionsScreen)
            assert app.state.choice.grow
            await pilot.press("enter")
            await on(pilot, LayoutScreen)
            await pilot.press("enter")
            await on(pilot, ReviewScreen)
            said = dict(app.screen.rows)  # type: ignore[attr-defined]
            assert "is larger" in said["Grows"] and "never written" in said["Grows"]
            await confirm(pilot, larger.name)
            await wait_for(pilot, lambda: isinstance(app.screen, (SummaryScreen, ErrorScreen)), 90, "the end")
            assert isinstance(app.screen, SummaryScreen), getattr(app.screen, "advice", None)

    run(scenario)
    assert b3sum(str(source_image)) == before
    assert "No problems found" in sh("sgdisk", "-v", str(larger)).stdout
    first = json.loads(sh("sfdisk", "--json", str(larger)).stdout)["partitiontable"]["partitions"][0]
    region = ["--offset", str(first["start"] * 512), "--sizelimit", str(first["size"] * 512)]
    dev = sh("losetup", "--find", "--show", "--read-only", *region, str(larger)).stdout.strip()
    try:
        fields = dict(line.split(":", 1) for line in sh("dumpe2fs", "-h", dev).stdout.splitlines() if ":" in line)
        assert int(fields["Block count"]) * int(fields["Block size"]) == first["size"] * 512 > SAMPLE_MIB * 5 // 8 * MIB
    finally:
        sh("losetup", "--detach", dev)
