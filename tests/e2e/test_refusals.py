"""The receiver refuses unsafe targets with one line and exit code 3, before
writing anything; the sender learns why."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from recovery.disks.inventory import describe_disk
from recovery.errors import RefusedError
from tests.helpers import CODE, MIB, Recovery, loop_device, mounted, receiver, sh

pytestmark = pytest.mark.root


def refused_at_once(target: str, *extra: str) -> str:
    r = Recovery("receive", "--code", CODE, "--target", target, "--listen", "127.0.0.1:0", *extra)
    assert r.wait(30) == RefusedError.exit_code, r.events
    assert r.event("listening") is None  # refused before waiting for a sender
    assert "Traceback" not in r.stderr
    error = r.event("error")
    assert error is not None
    return str(error["message"])


def clone_refused(source: str, target: str, *extra: str) -> tuple[str, str]:
    rx, port = receiver(target, *extra)
    tx = Recovery("send", "--code", CODE, "--source", source, "--to", f"127.0.0.1:{port}")
    assert tx.wait() == RefusedError.exit_code, tx.stderr
    assert rx.wait() == RefusedError.exit_code, rx.stderr
    tx_err, rx_err = tx.event("error"), rx.event("error")
    assert tx_err and rx_err and tx.event("summary") is None and rx.event("summary") is None
    return str(tx_err["message"]), str(rx_err["message"])


def test_mounted_target(blank_loop: str) -> None:
    sh("mkfs.ext4", "-q", "-F", blank_loop)
    with mounted(blank_loop):
        assert "mounted at" in refused_at_once(blank_loop, "--yes")


def test_target_with_data_needs_yes(blank_loop: str) -> None:
    sh("mkfs.ext4", "-q", "-F", blank_loop)
    message = refused_at_once(blank_loop)
    assert "ext4" in message and "--yes" in message


def test_missing_device_is_not_created() -> None:
    assert "does not exist" in refused_at_once("/dev/no-such-disk")
    assert not Path("/dev/no-such-disk").exists()


def test_running_system_disk() -> None:
    source = subprocess.run(["findmnt", "-n", "-o", "SOURCE", "/"], capture_output=True, text=True).stdout.strip()
    if not source.startswith("/dev/") or not Path(source).is_block_device():
        pytest.skip(f"the root filesystem is not on a block device here ({source!r})")
    message = refused_at_once(source, "--yes")
    assert "running system" in message or "mounted" in message


def test_boot_medium(tmp_path: Path) -> None:
    image = tmp_path / "stick.img"
    with open(image, "wb") as f:
        f.truncate(64 * MIB)
    sh("sfdisk", "--quiet", str(image), input='label: gpt\nsize=32M, type=U, name="USB4-RECOVERY"\n')
    with loop_device(image) as dev:
        assert "boot stick" in refused_at_once(dev, "--yes")


def test_too_small(source_loop: str, tmp_path: Path) -> None:
    small = tmp_path / "small.img"
    with open(small, "wb") as f:
        f.truncate(64 * MIB)
    with loop_device(small, partitions=False) as dev:
        tx_msg, rx_msg = clone_refused(source_loop, dev)
        assert "too small" in rx_msg and "too small" in tx_msg
        with open(dev, "rb") as f:
            assert f.read(MIB) == bytes(MIB)  # untouched


def test_target_is_the_source(source_loop: str) -> None:
    _, rx_msg = clone_refused(source_loop, source_loop, "--yes")
    assert "is the source" in rx_msg


def test_target_is_a_partition_of_the_source(source_loop: str) -> None:
    _, rx_msg = clone_refused(source_loop, f"{source_loop}p2", "--yes")
    assert "is the source" in rx_msg


def test_target_is_the_file_behind_the_source_loop(gpt_image: Path, tmp_path: Path) -> None:
    copy = tmp_path / "disk.img"
    shutil.copyfile(gpt_image, copy)
    with loop_device(copy) as dev:
        _, rx_msg = clone_refused(dev, str(copy), "--yes")
    assert "is the source" in rx_msg


def test_target_changed_while_waiting_for_the_sender(source_loop: str, blank_loop: str) -> None:
    """The receiver pins the target when started; a new partition table written
    while it waits makes it refuse the plan, and nothing is written."""
    rx, port = receiver(blank_loop, "--yes")
    sh("sfdisk", "--quiet", blank_loop, input="label: gpt\nsize=8M, type=L\n")
    before = open(blank_loop, "rb").read(MIB)
    tx = Recovery("send", "--code", CODE, "--source", source_loop, "--to", f"127.0.0.1:{port}")
    assert tx.wait() == RefusedError.exit_code, tx.stderr
    assert rx.wait() == RefusedError.exit_code, rx.stderr
    error = rx.event("error")
    assert error and "changed since it was chosen" in error["message"]
    with open(blank_loop, "rb") as f:
        assert f.read(MIB) == before


@pytest.mark.parametrize("mode", ["used", "exact"])
def test_other_logical_sector_size(source_loop: str, tmp_path: Path, mode: str) -> None:
    """A 512-byte-sector disk onto a 4Kn one: its GPT would be unreadable there."""
    image = tmp_path / "4kn.img"
    with open(image, "wb") as f:
        f.truncate(160 * MIB)
    dev = sh("losetup", "--find", "--show", "--sector-size", "4096", str(image)).stdout.strip()
    try:
        assert describe_disk(dev).sector_size == 4096  # `recovery disks` shows it
        rx, port = receiver(dev, "--yes")
        tx = Recovery("send", "--code", CODE, "--source", source_loop, "--to", f"127.0.0.1:{port}", "--mode", mode)
        assert tx.wait() == RefusedError.exit_code, tx.stderr
        assert rx.wait() == RefusedError.exit_code, rx.stderr
        for side in (tx, rx):
            error = side.event("error")
            assert error and "logical sectors are 4096 bytes, the source's are 512" in error["message"]
        with open(dev, "rb") as f:
            assert f.read(MIB) == bytes(MIB)  # untouched
    finally:
        sh("losetup", "--detach", dev, check=False)
