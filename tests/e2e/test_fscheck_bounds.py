"""The receiving machine checks what a peer wrote without trusting it: no kernel mount of its bytes,
a bounded number of partitions, and a checker that fails on the source too is not a failed copy.

Real processes on loop devices. `mount`, `losetup` and the checkers are counted through wrappers
first on PATH (each logs its name, then runs the real program).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.engine.clone import fscheck
from recovery.errors import RefusedError
from recovery.protocol import messages as m
from recovery.protocol.state import Paired
from tests.e2e.fake_peer import FakeSender
from tests.e2e.relay import Relay
from tests.fsdisks import BASIC_DATA, Part, make_disk
from tests.helpers import CODE, MIB, Recovery, loop_device, sh

pytestmark = pytest.mark.root
COUNTED = ("mount", "losetup", "e2fsck", "btrfs", "ntfsfix")


@pytest.fixture
def counted() -> Iterator[tuple[dict[str, str], Path]]:
    """An environment whose PATH logs every call of the COUNTED programs to the returned file (in a folder
    anyone may read and a log anyone may append to: the checkers run as the unprivileged user)."""
    bin_dir = Path(tempfile.mkdtemp(prefix="counted-"))
    bin_dir.chmod(0o755)
    log = bin_dir / "calls.log"
    log.touch()
    log.chmod(0o666)
    for name in COUNTED:
        real = sh("sh", "-c", f"PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v {name}").stdout.strip()
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\necho {name} >> {log}\nexec {real} "$@"\n')
        wrapper.chmod(0o755)
    yield {"PATH": f"{bin_dir}:{os.environ['PATH']}"}, log
    shutil.rmtree(bin_dir)


def calls(log: Path, name: str) -> int:
    return log.read_text().split().count(name)


def clone(source: str, target: str, env: dict[str, str] | None = None) -> tuple[Recovery, Recovery]:
    rx = Recovery("receive", "--code", CODE, "--target", target, "--listen", "127.0.0.1:0", "--yes", env=env)
    port = rx.wait_event("listening")["port"]
    tx = Recovery("send", "--code", CODE, "--source", source, "--to", f"127.0.0.1:{port}", "--mode", "used")
    return rx, tx


def test_a_btrfs_with_dup_chunks_is_checked_without_a_mount(
    tmp_path: Path, counted: tuple[dict[str, str], Path]
) -> None:
    env, log = counted
    source, target = tmp_path / "source.img", tmp_path / "target.img"
    make_disk(source, [Part("btrfs", 130)])  # big enough for DUP metadata (not --mixed)
    with open(target, "wb") as f:
        f.truncate(source.stat().st_size)
    with loop_device(source) as src, loop_device(target, partitions=False) as dst:
        assert "|DUP" in sh("btrfs", "inspect-internal", "dump-tree", "-t", "chunk", f"{src}p1").stdout
        rx, tx = clone(src, dst, env)
        assert (tx.wait(300), rx.wait(300)) == (0, 0), (tx.stderr, rx.stderr)
    summary = rx.event("summary")
    assert summary and summary["verified"] is True
    assert [c["check"] for c in summary["checks"]] == ["blkid -p", "btrfs check --readonly"]
    assert calls(log, "mount") == 0 and calls(log, "btrfs") == 1  # the checker; no dump-tree, no scrub


def test_a_plan_with_more_partitions_than_a_table_holds_is_refused_before_any_check(
    tmp_path: Path, counted: tuple[dict[str, str], Path]
) -> None:
    env, log = counted
    target = tmp_path / "copy.img"
    rx = Recovery("receive", "--code", CODE, "--target", str(target), "--listen", "127.0.0.1:0", env=env)
    peer = FakeSender(rx.wait_event("listening")["port"])
    peer.hello()
    assert isinstance(peer.pair(), Paired)
    size = 256 * MIB
    parts = tuple(
        m.MapPart(number=i + 1, start=MIB + i * MIB, size=MIB, fstype="ext4", method="whole", bytes=MIB)
        for i in range(fscheck.MAX_PARTS + 1)
    )
    identity = m.Identity(path="/dev/fake", size=size, kind="disk", host_id="fake-host", fingerprint="00" * 32)
    plan = m.Plan(
        session="s",
        source=identity,
        size=size,
        mode="used",
        chunk_size=MIB,
        codecs=("raw",),
        map=m.MapSummary(extents=1, bytes=size, digest="00" * 32, parts=parts),
        frames=256,
        encrypted=False,
    )
    peer.send_control(peer.state.send(plan))
    reply = peer.next_event()
    assert isinstance(reply, m.Refuse) and "more than a partition table holds" in reply.message
    peer.close()
    assert rx.wait() == RefusedError.exit_code
    assert calls(log, "e2fsck") == 0 and calls(log, "losetup") == 0 and not target.exists()


def make_short_ntfs(image: Path) -> None:
    """A GPT disk whose NTFS is smaller than its partition (as after a partition was grown and the
    filesystem was not): ntfsfix -n finds the alternate boot sector bad, on the source itself."""
    with open(image, "wb") as f:
        f.truncate(64 * MIB)
    sh("sfdisk", "--quiet", str(image), input=f"label: gpt\nsize=60MiB, type={BASIC_DATA}\n")
    with loop_device(image) as dev:
        sh("mkntfs", "-q", "-F", "-f", "-L", "short", f"{dev}p1", "40960")
        assert sh("ntfsfix", "-n", f"{dev}p1", check=False).returncode != 0


def test_an_ntfs_smaller_than_its_partition_clones_as_it_is_and_says_why_its_check_fails(tmp_path: Path) -> None:
    source, target = tmp_path / "source.img", tmp_path / "target.img"
    make_short_ntfs(source)
    with open(target, "wb") as f:
        f.truncate(64 * MIB)
    with loop_device(source) as src, loop_device(target, partitions=False) as dst:
        rx, tx = clone(src, dst)
        assert (tx.wait(300), rx.wait(300)) == (0, 0), (tx.stderr, rx.stderr)
    for side in (tx, rx):
        summary = side.event("summary")
        assert summary and summary["verified"] is True
        [ntfs] = [c for c in summary["checks"] if c["check"] == "ntfsfix -n"]
        assert ntfs["ok"] is False and ntfs["source_fails"] is True
        assert "the source fails the same check (ntfsfix): copied as it is" in ntfs["message"]


def test_the_target_disk_stays_locked_against_udev_until_the_clone_and_its_checks_end(tmp_path: Path) -> None:
    """udev re-reads a disk's partition table when a writable descriptor of it closes, and probes what it
    finds, unless the disk is locked (BSD flock): it is, from the first look at it to the last check."""
    source, target = tmp_path / "source.img", tmp_path / "target.img"
    make_disk(source, [Part("ext4", 24)])
    with open(target, "wb") as f:
        f.truncate(source.stat().st_size)
    with loop_device(source) as src, loop_device(target, partitions=False) as dst:
        rx = Recovery("receive", "--code", CODE, "--target", dst, "--listen", "127.0.0.1:0", "--yes")
        relay = Relay(rx.wait_event("listening")["port"])
        relay.rate = 4e6  # slow enough to look at the disk while it is written
        tx = Recovery("send", "--code", CODE, "--source", src, "--to", f"127.0.0.1:{relay.port}", "--mode", "used")
        rx.wait_event("phase", name="transfer", timeout=60)
        fd = os.open(dst, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            assert (tx.wait(300), rx.wait(300)) == (0, 0), (tx.stderr, rx.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # given back at the end
        finally:
            os.close(fd)
            relay.close()
