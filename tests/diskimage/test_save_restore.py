"""Images end to end, with real processes: saved from another machine over TCP and locally, checked,
described, restored onto loop devices with every check a clone has, encrypted, and refused when bad."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from recovery.engine.clone.compare import compare
from tests.diskimage.helpers import encrypted_sample
from tests.helpers import (
    CODE,
    MIB,
    Recovery,
    b3sum,
    fat_digests,
    mounted,
    same_bytes,
    sh,
    tree_digests,
)

pytestmark = pytest.mark.root


def image_cmd(*args: str) -> Recovery:
    return Recovery("image", *args)


def receive_image(path: Path, *extra: str) -> tuple[Recovery, int]:
    r = Recovery("receive", "--code", CODE, "--image", str(path), "--listen", "127.0.0.1:0", *extra)
    return r, int(r.wait_event("listening")["port"])


def contents_of(dev: str) -> tuple[dict[str, str], dict[str, str]]:
    with mounted(f"{dev}p1", readonly=True) as mnt:
        ext = tree_digests(mnt)
    return ext, fat_digests(f"{dev}p2")


def test_saved_over_tcp_then_restored_onto_a_disk_holds_the_same_files(
    source_loop: str, blank_loop: str, tmp_path: Path
) -> None:
    image = tmp_path / "laptop.img"
    rx, port = receive_image(image)
    tx = Recovery("send", "--code", CODE, "--source", source_loop, "--to", f"127.0.0.1:{port}")
    assert tx.wait() == 0, tx.stderr
    assert rx.wait() == 0, rx.stderr
    saved = rx.event("summary")
    assert saved and saved["verified"] is True
    assert image.stat().st_size < saved["bytes_sent"] + MIB  # compressed, zeros not stored

    info = image_cmd("info", str(image))
    assert info.wait() == 0, info.stderr
    described = info.event("image")
    assert described["mode"] == "used" and described["root"] == saved["list_digest"]
    assert {p["fstype"] for p in described["parts"]} == {"ext4", "vfat"}
    assert source_loop in described["source"]

    check = image_cmd("verify", str(image))
    assert check.wait() == 0, check.stderr
    assert check.event("image_check")["bad"] == []

    restore = image_cmd("restore", str(image), "--target", blank_loop, "--yes")
    assert restore.wait() == 0, restore.stderr
    summary = restore.event("summary")
    assert summary["verified"] is True and summary["list_digest"] == saved["list_digest"]
    assert {c["check"].split()[0] for c in summary["checks"] if c["ok"]} >= {"e2fsck", "fsck.vfat"}
    sh("partx", "--add", blank_loop, check=False)
    assert contents_of(blank_loop) == contents_of(source_loop)


def test_an_exact_image_saved_locally_restores_byte_for_byte_and_knows_the_disks_b3sum(tmp_path: Path) -> None:
    from recovery.demo import build_sample_disk

    source = tmp_path / "disk.raw"
    build_sample_disk(str(source), 80)
    image = tmp_path / "disk.img"
    save = image_cmd("save", "--source", str(source), "--output", str(image), "--mode", "exact")
    assert save.wait() == 0, save.stderr
    assert save.event("summary")["image_digest"] == b3sum(str(source))
    check = image_cmd("verify", "--whole", str(image))
    assert check.wait() == 0, check.stderr
    event = check.event("image_check")
    assert event["disk_digest"] == event["recorded_disk_digest"] == b3sum(str(source))

    target = tmp_path / "restored.raw"
    target.write_bytes(b"")
    os.truncate(target, 80 * MIB)
    restore = image_cmd("restore", str(image), "--target", str(target), "--yes")
    assert restore.wait() == 0, restore.stderr
    assert compare(str(source), str(target)).identical


def test_an_encrypted_image_needs_its_passphrase_and_refuses_a_wrong_one_fast(tmp_path: Path) -> None:
    image, secret, wrong = encrypted_sample(tmp_path)
    assert b"demo-root" not in image.read_bytes()  # not even a label in clear

    started = time.monotonic()
    info = image_cmd("info", str(image), "--passphrase-file", str(wrong))
    assert info.wait() == 17
    assert time.monotonic() - started < 10  # (process start included; the unwrap itself is ~0.1 s)
    assert "wrong passphrase" in info.event("error")["message"]
    info = image_cmd("info", str(image), "--passphrase-file", str(secret))
    assert info.wait() == 0, info.stderr
    assert info.event("image")["encrypted"] is True

    target = tmp_path / "restored.raw"
    target.write_bytes(bytes(64 * MIB))
    restore = image_cmd("restore", str(image), "--target", str(target), "--yes", "--passphrase-file", str(wrong))
    assert restore.wait() == 17
    assert target.read_bytes() == bytes(64 * MIB)  # untouched
    restore = image_cmd("restore", str(image), "--target", str(target), "--yes", "--passphrase-file", str(secret))
    assert restore.wait() == 0, restore.stderr


def test_a_damaged_image_is_refused_before_the_disk_is_touched(tmp_path: Path, blank_loop: str) -> None:
    from recovery.demo import build_sample_disk

    source = tmp_path / "disk.raw"
    build_sample_disk(str(source), 64)
    image = tmp_path / "disk.img"
    assert image_cmd("save", "--source", str(source), "--output", str(image)).wait() == 0
    before = tmp_path / "before.raw"
    sh("dd", f"if={blank_loop}", f"of={before}", "bs=1M", "status=none")
    os.truncate(image, image.stat().st_size - 100)  # the footer cut off
    restore = image_cmd("restore", str(image), "--target", blank_loop, "--yes")
    assert restore.wait() == 16
    error = restore.event("error")
    assert "incomplete" in error["message"] and "Traceback" not in restore.stderr
    assert same_bytes(before, blank_loop)

    for bad, code in ((tmp_path, 2), (tmp_path / "nothing.img", 2)):
        r = image_cmd("verify", str(bad))
        assert r.wait() == code, r.stderr
        assert "Traceback" not in r.stderr


def test_an_image_of_a_4kn_disk_is_not_restored_onto_a_512_byte_disk(tmp_path: Path, blank_loop: str) -> None:
    raw = tmp_path / "4kn.raw"
    with open(raw, "wb") as f:
        f.truncate(64 * MIB)
    dev = sh("losetup", "--find", "--show", "--sector-size", "4096", str(raw)).stdout.strip()
    try:
        sh("sfdisk", "--quiet", dev, input="label: gpt\nstart=256, size=8192, type=linux\n")
        image = tmp_path / "4kn.img"
        save = image_cmd("save", "--source", dev, "--output", str(image))
        assert save.wait() == 0, save.stderr
    finally:
        sh("losetup", "--detach", dev, check=False)
    restore = image_cmd("restore", str(image), "--target", blank_loop, "--yes")
    assert restore.wait() == 3
    assert "4096" in restore.event("error")["message"]


def test_an_existing_file_is_not_replaced_without_yes(tmp_path: Path) -> None:
    keep = tmp_path / "precious.img"
    keep.write_bytes(b"someone's earlier image")
    source = tmp_path / "disk.raw"
    source.write_bytes(bytes(MIB))
    r = image_cmd("save", "--source", str(source), "--output", str(keep))
    assert r.wait() == 3
    assert "without --yes" in r.event("error")["message"]
    assert keep.read_bytes() == b"someone's earlier image"


def test_a_damaged_chunk_is_named_by_the_files_it_holds(tmp_path: Path) -> None:
    """The ext4's own tool, confined, reads the image's disk through FUSE and names the file whose
    data the damaged chunk holds; the damaged chunk itself is never read out."""
    from recovery.demo import build_sample_disk
    from recovery.diskimage import format as f
    from recovery.diskimage.reader import ImageReader
    from tests.diskimage.test_bad_input import flip

    source = tmp_path / "disk.raw"
    build_sample_disk(str(source), 64)
    victim = "/media/photo-001.jpg"
    bmap = sh("debugfs", "-R", f"bmap {victim} 511", f"{source}?offset={MIB}").stdout
    at = MIB + int(bmap.split()[-1]) * 4096  # its last block, on the disk
    image = tmp_path / "disk.img"
    assert image_cmd("save", "--source", str(source), "--output", str(image)).wait() == 0
    with ImageReader(str(image)) as img:
        e = next(e for e in img.entries() if e.offset <= at < e.end)
    assert e.codec is not f.Codec.ZERO
    flip(image, e.position + f.RECORD_SIZE + e.stored // 2)

    r = image_cmd("verify", str(image))
    assert r.wait() == 5, r.stderr
    checked = r.event("image_check")
    assert checked["bad"] == [[e.offset, e.length]]
    hit = checked["files_hit"][0]
    assert hit["partition"] == 1 and hit["fstype"] == "ext4" and victim in hit["files"], hit
    assert victim in r.event("error")["message"]
    assert not Path("/proc/mounts").read_text().count("usb4-recovery-files")  # served only while it looked


def test_an_unfinished_image_that_cannot_be_read_here_is_never_replaced_unasked(tmp_path: Path) -> None:
    """An interrupted encrypted save (the passphrase is not given here, so it cannot be resumed) may be
    the only copy of a dying disk: a clone into that file is refused, and the file stays as it was."""
    from tests.diskimage.helpers import disk_bytes, write_image

    keep = tmp_path / "dying-disk.img"
    write_image(keep, disk_bytes(4 * MIB), passphrase=b"only the owner knows", finish=False)
    before = keep.read_bytes()
    source = tmp_path / "disk.raw"
    source.write_bytes(disk_bytes(8 * MIB, seed=9))
    rx, port = receive_image(keep)
    tx = Recovery("send", "--code", CODE, "--source", str(source), "--to", f"127.0.0.1:{port}")
    assert tx.wait() == 3, tx.stderr
    assert rx.wait() == 3, rx.stderr
    assert "holds an unfinished image" in rx.event("error")["message"]
    assert keep.read_bytes() == before
