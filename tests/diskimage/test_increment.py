"""Increments, with real processes: a disk saved, its ext4 changed, saved again next to the first image;
the second stores only the chunks that changed and names the first, and restore, verify, mount and info
follow the chain. A missing, replaced or badly named parent is refused in one line."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from recovery.diskimage import format as f
from recovery.diskimage.reader import ImageReader
from tests.diskimage.test_save_restore import receive_image
from tests.helpers import (
    CODE,
    MIB,
    Recovery,
    b3sum,
    blank_disk,
    loop_device,
    mounted,
    same_bytes,
    sh,
    tree_digests,
)

pytestmark = pytest.mark.root

IMAGE_ERROR = 16  # docs/cli.md: exit codes
REFUSED = 3


@dataclass(frozen=True)
class Chain:
    folder: Path
    disk: Path  # the source as it is now (changed after the first save)
    base: Path  # the first save: a full image
    increment: Path  # the second: an increment of ``base``
    full: Path  # the changed source saved whole, elsewhere
    saved: dict[str, object]  # the second save's summary
    delta: dict[str, object]  # its delta event
    files: dict[str, str]  # the changed ext4's file digests
    changed: bytes  # the new file's bytes


def save(disk: Path, image: Path, *extra: str) -> Recovery:
    done = Recovery("image", "save", "--source", str(disk), "--output", str(image), "--chunk-size", "1M", *extra)
    assert done.wait() == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, gpt_image: Path) -> Chain:
    folder = tmp_path_factory.mktemp("increment")
    disk = folder.parent / f"{folder.name}-source.raw"  # the images' folder holds images only
    shutil.copyfile(gpt_image, disk)
    base = folder / "laptop-1.img"
    save(disk, base)
    changed = os.urandom(3 * MIB)
    with loop_device(disk) as dev, mounted(f"{dev}p1") as mnt:
        (mnt / "new.bin").write_bytes(changed)
        files = tree_digests(mnt)
    increment = folder / "laptop-2.img"
    second = save(disk, increment)
    full = tmp_path_factory.mktemp("full") / "laptop-2.img"
    save(disk, full, "--no-delta")
    return Chain(folder, disk, base, increment, full, second.event("summary"), second.event("delta"), files, changed)


def entries(path: Path) -> dict[int, f.Entry]:
    with ImageReader(str(path)) as image:
        return {e.offset: e for e in image.entries()}


def test_an_increment_stores_only_the_chunks_that_changed_and_names_its_parent(chain: Chain) -> None:
    assert chain.saved["verified"] is True and chain.saved["parent"] == "laptop-1.img"
    assert chain.delta["source"] == "the image laptop-1.img" and chain.delta["trusted"] is True
    base, new = entries(chain.base), entries(chain.increment)
    differ = {o for o, e in new.items() if o not in base or base[o].digest != e.digest}
    stored = {o for o, e in new.items() if e.codec in (f.Codec.RAW, f.Codec.ZSTD)}
    from_parent = {o for o, e in new.items() if e.codec is f.Codec.PARENT}
    assert stored <= differ and differ - stored == {o for o in differ if new[o].codec is f.Codec.ZERO}
    assert 3 <= len(stored) < 12  # the new file's 3 MiB, the ext4 metadata it touched
    assert from_parent == {o for o, e in new.items() if o in base and base[o].digest == e.digest} - {
        o for o, e in new.items() if e.codec is f.Codec.ZERO
    }
    assert chain.saved["unchanged"] == sum(new[o].length for o in from_parent)  # zeros go as ZERO frames
    # The file: the changed chunks as stored, and per chunk a record and an index entry, a header, a manifest.
    assert chain.increment.stat().st_size < sum(new[o].stored for o in stored) + len(new) * 128 + 64 * 1024
    with ImageReader(str(chain.increment)) as image:
        assert image.header.major == 2 and image.parent is not None
        assert image.manifest["version"] == "2.0" and [os.path.basename(r.path) for r in image.chain] == [
            "laptop-2.img",
            "laptop-1.img",
        ]

    info = Recovery("image", "info", str(chain.increment))
    assert info.wait() == 0, info.stderr
    described = info.event("image")
    assert described["parent"] == "laptop-1.img" and described["chain"] == ["laptop-1.img"]
    assert described["parent_bytes"] == sum(new[o].length for o in from_parent)


@pytest.fixture
def same_size_loop(tmp_path: Path) -> Iterator[str]:
    """A blank disk of the source's size: restored, its partition tables stay as the source's."""
    with blank_disk(tmp_path / "blank.raw", 128) as dev:
        yield dev


def test_an_increment_restores_onto_a_disk_as_the_changed_source(chain: Chain, same_size_loop: str) -> None:
    blank_loop = same_size_loop
    restore = Recovery("image", "restore", str(chain.increment), "--target", blank_loop, "--yes")
    assert restore.wait() == 0, restore.stderr
    summary = restore.event("summary")
    assert summary["verified"] is True
    assert {c["check"].split()[0] for c in summary["checks"] if c["ok"]} >= {"e2fsck", "fsck.vfat"}
    # What a full save of the changed source holds (used mode sends free blocks inside a chunk as zeros).
    with (
        ImageReader(str(chain.full)) as full,
        ImageReader(str(chain.increment)) as image,
        open(blank_loop, "rb") as target,
    ):
        assert full.root == image.root
        for e in image.entries():
            held = os.pread(target.fileno(), e.length, e.offset)
            assert held == image.read(e.offset, e.length) == full.read(e.offset, e.length)
    sh("partx", "--add", blank_loop, check=False)
    with mounted(f"{blank_loop}p1", readonly=True) as mnt:
        assert tree_digests(mnt) == chain.files


def test_an_increment_verifies_and_mounts_through_its_parent(chain: Chain, tmp_path: Path) -> None:
    check = Recovery("image", "verify", "--whole", str(chain.increment))
    assert check.wait() == 0, check.stderr
    event = check.event("image_check")
    assert event["bad"] == [] and event["chunks"] == len(entries(chain.increment))

    look = tmp_path / "look"
    look.mkdir()
    mount = Recovery("image", "mount", str(chain.increment), str(look))
    try:
        mount.wait_event("image_mount", timeout=60)
        assert (look / "p1" / "new.bin").read_bytes() == chain.changed
    finally:
        Recovery("image", "unmount", str(look)).wait()
        mount.wait()
    assert not [line for line in sh("losetup", "-a").stdout.splitlines() if str(look) in line]


def test_a_missing_or_replaced_parent_is_refused_naming_it(chain: Chain, tmp_path: Path) -> None:
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copyfile(chain.increment, alone / "laptop-2.img")
    for action in (("verify",), ("info",)):
        run = Recovery("image", *action, str(alone / "laptop-2.img"))
        assert run.wait() == IMAGE_ERROR
        message = run.event("error")["message"]
        assert "laptop-1.img" in message and "does not exist" in message and "Traceback" not in run.stderr
    restore = Recovery("image", "restore", str(alone / "laptop-2.img"), "--target", str(tmp_path / "t"), "--yes")
    assert restore.wait() == IMAGE_ERROR

    # Never restored onto its own parent: the file it reads from.
    parent = chain.folder / chain.base.name
    kept = parent.read_bytes()
    restore = Recovery("image", "restore", str(chain.increment), "--target", str(parent), "--yes")
    assert restore.wait() == REFUSED and parent.read_bytes() == kept

    # Another image of the same disk under the parent's name (a full one: --no-delta) is not the parent.
    other = save(chain.disk, alone / "laptop-1.img", "--no-delta")
    assert other.event("summary")["parent"] is None and other.event("summary")["unchanged"] == 0
    assert not any(e.codec is f.Codec.PARENT for e in entries(alone / "laptop-1.img").values())
    run = Recovery("image", "verify", str(alone / "laptop-2.img"))
    assert run.wait() == IMAGE_ERROR
    assert "another image" in run.event("error")["message"]


def test_an_increment_of_an_increment_restores_and_a_no_delta_save_is_whole(chain: Chain, tmp_path: Path) -> None:
    folder = tmp_path / "three"
    folder.mkdir()
    for image in (chain.base, chain.increment):
        shutil.copyfile(image, folder / image.name)
    third = save(chain.disk, folder / "laptop-3.img")
    summary = third.event("summary")
    assert summary["parent"] == "laptop-2.img" and summary["verified"] is True
    assert summary["bytes_written"] < MIB  # nothing changed since the second save
    with ImageReader(str(folder / "laptop-3.img")) as image:
        assert [os.path.basename(r.path) for r in image.chain] == ["laptop-3.img", "laptop-2.img", "laptop-1.img"]
    target = tmp_path / "restored.raw"
    with open(target, "wb") as out:
        out.truncate(128 * MIB)
    restore = Recovery("image", "restore", str(folder / "laptop-3.img"), "--target", str(target), "--yes")
    assert restore.wait() == 0, restore.stderr
    assert restore.event("summary")["verified"] is True


def test_a_save_from_another_machine_is_an_increment_and_an_increment_is_a_source(chain: Chain, tmp_path: Path) -> None:
    folder = tmp_path / "kept"
    folder.mkdir()
    shutil.copyfile(chain.base, folder / chain.base.name)
    rx, port = receive_image(folder / "again.img")
    tx = Recovery(
        "send", "--code", CODE, "--source", str(chain.disk), "--to", f"127.0.0.1:{port}", "--chunk-size", "1M"
    )
    assert tx.wait() == 0, tx.stderr
    assert rx.wait() == 0, rx.stderr
    saved = rx.event("summary")
    assert saved["verified"] is True and saved["parent"] == chain.base.name
    assert saved["list_digest"] == chain.saved["list_digest"] and saved["unchanged"] == chain.saved["unchanged"]

    # The increment sent from this machine to another's disk: read through its parent.
    target = tmp_path / "restored.raw"
    with open(target, "wb") as out:
        out.truncate(128 * MIB)
    rx = Recovery("receive", "--code", CODE, "--target", str(target), "--listen", "127.0.0.1:0", "--yes")
    port = int(rx.wait_event("listening")["port"])
    tx = Recovery("send", "--code", CODE, "--source", str(folder / "again.img"), "--to", f"127.0.0.1:{port}")
    assert tx.wait() == 0, tx.stderr
    assert rx.wait() == 0, rx.stderr
    assert rx.event("summary")["verified"] is True


def test_an_exact_increment_gives_the_disks_b3sum_and_exports_whole(tmp_path: Path) -> None:
    from recovery.demo import build_sample_disk

    disk = tmp_path / "disk.raw"
    build_sample_disk(str(disk), 80)
    folder = tmp_path / "images"
    folder.mkdir()
    save(disk, folder / "a.img", "--mode", "exact")
    with loop_device(disk) as dev, mounted(f"{dev}p1") as mnt:
        (mnt / "changed.bin").write_bytes(os.urandom(2 * MIB))
    second = save(disk, folder / "b.img", "--mode", "exact").event("summary")
    assert second["parent"] == "a.img" and second["image_digest"] == b3sum(str(disk))
    assert second["unchanged"] > 16 * MIB and second["bytes_written"] < 6 * MIB  # the 2 MiB file, its metadata

    check = Recovery("image", "verify", "--whole", str(folder / "b.img"))
    assert check.wait() == 0, check.stderr
    event = check.event("image_check")
    assert event["disk_digest"] == event["recorded_disk_digest"] == b3sum(str(disk))
    export = Recovery("image", "export", str(folder / "b.img"), "--output", str(tmp_path / "out.raw"))
    assert export.wait() == 0, export.stderr
    assert same_bytes(tmp_path / "out.raw", disk)


def test_a_save_that_replaces_an_image_never_builds_on_it_nor_replaces_a_parent(chain: Chain, tmp_path: Path) -> None:
    folder = tmp_path / "replace"
    folder.mkdir()
    shutil.copyfile(chain.base, folder / "laptop-1.img")
    summary = save(chain.disk, folder / "laptop-1.img", "--yes").event("summary")
    assert summary["parent"] is None and summary["verified"] is True
    with ImageReader(str(folder / "laptop-1.img")) as image:
        assert image.header.parent is None and image.header.major == f.MAJOR

    # An image an increment of the folder builds on is never replaced, even with --yes.
    kept = chain.base.read_bytes()
    again = Recovery("image", "save", "--source", str(chain.disk), "--output", str(chain.base), "--yes")
    assert again.wait() == REFUSED
    assert "is the parent of laptop-2.img" in again.event("error")["message"]
    assert chain.base.read_bytes() == kept


def test_an_image_another_user_owns_is_never_built_on(chain: Chain, tmp_path: Path) -> None:
    """In a shared folder, another user's image of the same disk could be deleted under the increment: the
    save is a whole image instead."""
    folder = tmp_path / "shared"
    folder.mkdir()
    shutil.copyfile(chain.base, folder / chain.base.name)
    os.chown(folder / chain.base.name, 65534, 65534)
    again = save(chain.disk, folder / "mine.img")
    summary = again.event("summary")
    assert summary["parent"] is None and summary["verified"] is True
