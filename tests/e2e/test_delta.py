"""Cloning again onto a target that holds an earlier clone of the same source (capability "delta").

Real processes on loop devices over TCP. The first clone leaves the receiver's record; the second
sends only the chunks that differ (counted against the cells that changed on the source), and the
target verifies as after any clone: read back against the source's digests, filesystems checked.
Bad input falls back, saying why: a target written since its copy is hashed, a tampered record is
not trusted, a copy of another disk offers nothing, a SAME frame for a range never offered is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import blake3
import pytest

from recovery.errors import RemoteProtocolError
from recovery.protocol import messages as m
from recovery.protocol.blocks import payload_size as blocks_payload_size
from recovery.protocol.frames import HEADER_SIZE, TAG_SIZE, Kind
from recovery.protocol.limits import DELTA_BLOCK
from recovery.protocol.state import Paired
from tests.e2e.fake_peer import FakeSender
from tests.e2e.relay import RelayedClone
from tests.fsdisks import Part, contents, make_disk, mounted_fs
from tests.helpers import (
    CODE,
    MIB,
    Recovery,
    b3sum,
    fill_random,
    loop_device,
    random_bytes,
    receiver,
    same_bytes,
    sh,
)

pytestmark = pytest.mark.root
SIZE = 64 * MIB
FRAME_COST = HEADER_SIZE + TAG_SIZE  # bytes on the link per chunk, beyond its payload
EDGES = 2  # the partition-table cells (first and last MiB) are always sent


def clone(src: str, dst: str, *extra: str, mode: str = "exact", receive: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """One clone with 1 MiB chunks; both summaries, verified; the receiver's events on ``last_rx``."""
    rx, port = receiver(dst, "--yes", *receive)
    tx = Recovery(
        "send",
        *("--code", CODE, "--source", src, "--to", f"127.0.0.1:{port}", "--mode", mode, "--chunk-size", "1M"),
        *extra,
    )
    clone.last_rx = rx  # type: ignore[attr-defined]
    assert tx.wait(120) == 0, (tx.stderr, rx.stderr, rx.events[-4:])
    assert rx.wait(120) == 0, rx.stderr
    rs, ts = rx.event("summary"), tx.event("summary")
    assert rs and ts and rs["verified"] is True and ts["verified"] is True
    clone.last_rx = rx  # type: ignore[attr-defined]
    return rs, ts


def warnings(rx: Recovery) -> str:
    return " | ".join(e["message"] for e in rx.events if e["event"] == "warning")


def changed_cells(before: Path, after: Path, size: int = MIB) -> set[int]:
    """The cells of ``size`` bytes whose bytes differ between two images."""
    cells = set()
    with open(before, "rb") as a, open(after, "rb") as b:
        for cell in range(os.path.getsize(after) // size):
            if a.read(size) != b.read(size):
                cells.add(cell)
    return cells


@pytest.fixture
def raw_disks(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """A source of random data, a blank target of the same size."""
    source, target = tmp_path / "source.img", tmp_path / "target.img"
    fill_random(source, SIZE, seed=7)
    with open(target, "wb") as f:
        f.truncate(SIZE)
    with loop_device(source, partitions=False) as src, loop_device(target, partitions=False) as dst:
        yield src, dst, source


def test_exact_mode_sends_only_what_changed(raw_disks: tuple[str, str, Path], log_dir: Path) -> None:
    src, dst, source = raw_disks
    first_rx, first_tx = clone(src, dst, "--level", "0")
    assert first_rx["unchanged"] == 0 and first_tx["bytes_sent"] >= SIZE
    [record] = list(log_dir.glob("resume-*.journal"))
    assert json.loads(record.read_text().splitlines()[-1])["kept"] is True
    with open(src, "r+b") as f:  # 4 KiB in three cells, and a cell that became zeros
        for cell in (5, 20, 41):
            f.seek(cell * MIB + 12288)
            f.write(random_bytes(4096, seed=cell))
        f.seek(30 * MIB)
        f.write(bytes(MIB))
    rs, ts = clone(src, dst, "--level", "0", "--encrypt")  # sealed payloads: SAME frames carry none
    [offer] = [e for e in clone.last_rx.events if e["event"] == "delta"]  # type: ignore[attr-defined]
    assert offer["trusted"] is True and offer["bytes"] == SIZE - EDGES * MIB
    assert rs["zero_bytes"] == MIB  # the zeroed cell goes as a ZERO frame, its header only
    sent = EDGES * MIB + 3 * DELTA_BLOCK  # the changed cells as BLOCKS frames: the block of each that differs
    assert rs["unchanged"] == ts["unchanged"] == SIZE - MIB - sent
    costs = (SIZE // MIB) * FRAME_COST + 3 * (blocks_payload_size(MIB) + TAG_SIZE)
    assert sent <= ts["bytes_sent"] <= sent + costs
    assert ts["image_digest"] == rs["image_digest"] == b3sum(src)  # the whole source read, the target read back
    assert same_bytes(source, dst)


def test_no_delta_sends_everything(raw_disks: tuple[str, str, Path]) -> None:
    src, dst, _ = raw_disks
    clone(src, dst, "--level", "0")
    rs, ts = clone(src, dst, "--level", "0", "--no-delta")
    assert rs["unchanged"] == 0 and ts["bytes_sent"] >= SIZE
    assert not [e for e in clone.last_rx.events if e["event"] == "delta"]  # type: ignore[attr-defined]
    rs, ts = clone(src, dst, "--level", "0", receive=("--no-delta",))  # the receiving user refuses it too
    assert rs["unchanged"] == 0 and ts["bytes_sent"] >= SIZE


def test_a_tampered_record_is_not_trusted(raw_disks: tuple[str, str, Path], log_dir: Path) -> None:
    src, dst, source = raw_disks
    clone(src, dst)
    [record] = list(log_dir.glob("resume-*.journal"))
    lines = record.read_text().splitlines()
    body = json.loads(lines[1])
    body["bytes"] += 1  # any edit: the line's keyed check fails
    record.write_text("\n".join([lines[0], json.dumps(body), *lines[2:]]) + "\n")
    rs, ts = clone(src, dst, "--level", "0")
    assert rs["unchanged"] == ts["unchanged"] == 0 and ts["bytes_sent"] >= SIZE
    assert not [e for e in clone.last_rx.events if e["event"] == "delta"]  # type: ignore[attr-defined]
    assert same_bytes(source, dst)


def test_a_copy_of_another_disk_offers_nothing(raw_disks: tuple[str, str, Path], tmp_path: Path) -> None:
    src, dst, _ = raw_disks
    clone(src, dst)
    other = tmp_path / "other.img"
    shutil.copyfile(raw_disks[2], other)  # the same bytes, another disk
    with loop_device(other, partitions=False) as second:
        rs, ts = clone(second, dst, "--level", "0")
    assert "holds a copy of" in warnings(clone.last_rx)  # type: ignore[attr-defined]
    assert rs["unchanged"] == 0 and ts["bytes_sent"] >= SIZE


def test_an_interrupted_delta_clone_resumes_like_any_clone(raw_disks: tuple[str, str, Path], log_dir: Path) -> None:
    src, dst, source = raw_disks
    clone(src, dst)
    with open(src, "r+b") as f:  # most of it changed: the delta clone takes a while through the slow relay
        f.write(random_bytes(48 * MIB, seed=11))
    first = RelayedClone(src, ("--target", dst, "--yes"), rate=8e6)
    first.durable(4 * MIB)
    first.rx.kill()
    first.tx.kill()
    first.relay.close()
    second = RelayedClone(src, ("--target", dst, "--yes"))
    assert second.rx.wait() == 0, second.rx.stderr
    assert second.tx.wait() == 0, second.tx.stderr
    second.relay.close()
    rs, ts = second.rx.event("summary"), second.tx.event("summary")
    assert rs and ts and rs["verified"] is True and ts["verified"] is True
    assert [e for e in second.rx.events if e["event"] == "resume"]
    assert ts["image_digest"] == rs["image_digest"] == b3sum(src)
    assert same_bytes(source, dst)


def test_a_same_frame_for_bytes_never_offered_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "target.img"
    target.write_bytes(b"\xaa" * (16 * MIB))
    with loop_device(target, partitions=False) as dev:
        rx, port = receiver(dev, "--yes")
        peer = FakeSender(port)
        peer.hello(caps=("delta", "resume"))
        assert isinstance(peer.pair(), Paired)
        accept = peer.plan(16 * MIB)
        assert isinstance(accept, m.Accept) and accept.delta is None
        peer.frame(0, 0, os.urandom(1 << 20))
        held = blake3.blake3(b"\xaa" * (1 << 20)).digest()
        peer.frame(1, 8 * MIB, b"", raw_len=1 << 20, digest=held, kind=Kind.SAME)  # "held": never offered
        assert rx.wait() == RemoteProtocolError.exit_code
        assert "did not offer" in rx.stderr
        peer.close()


# --- real filesystems, used mode ---


def _grow(node: str, seed: int, mib: int, fstype: str = "ext4") -> None:
    """Files of random bytes (they do not compress) on the filesystem at ``node``."""
    with mounted_fs(node, fstype) as mnt:
        (mnt / "big").mkdir(exist_ok=True)
        for i in range(mib):
            (mnt / "big" / f"f{seed}-{i}.bin").write_bytes(random_bytes(MIB, seed=seed * 100 + i))


def _disks(tmp_path: Path, fstype: str) -> Iterator[tuple[str, Path, Path]]:
    """A source disk with ``fstype`` full of files (its loop device), and the images of it and of a blank
    target."""
    source, target = tmp_path / "source.img", tmp_path / "target.img"
    make_disk(source, [Part(fstype, 64)], name="src")
    with loop_device(source) as src:
        _grow(f"{src}p1", 1, 24, fstype)
    with open(target, "wb") as f:
        f.truncate(os.path.getsize(source))
    with loop_device(source) as src:
        yield src, source, target


@pytest.fixture
def ext4_disks(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    yield from _disks(tmp_path, "ext4")


@pytest.fixture(params=["ext4", "xfs", "ntfs", "btrfs"])
def fs_disks(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, Path, Path, str]]:
    for disks in _disks(tmp_path, request.param):
        yield (*disks, request.param)


def clone_onto(src: str, target: Path) -> tuple[dict, dict]:
    """A used-mode clone onto the target image's loop device (attached for this clone: the same disk)."""
    with loop_device(target, partitions=False) as dst:
        return clone(src, dst, mode="used")


def _same_files(src: str, target: Path, fstype: str = "ext4") -> None:
    with loop_device(target) as dst:
        assert contents(f"{src}p1", fstype) == contents(f"{dst}p1", fstype)


def test_changed_files_send_only_the_changed_chunks(fs_disks: tuple[str, Path, Path, str], tmp_path: Path) -> None:
    src, source, target, fstype = fs_disks
    _, first = clone_onto(src, target)
    before = tmp_path / "before.img"
    shutil.copyfile(source, before)
    _grow(f"{src}p1", 2, 1, fstype)  # a new file, and an old one rewritten
    with mounted_fs(f"{src}p1", fstype) as mnt:
        (mnt / "big" / "f1-3.bin").write_bytes(random_bytes(MIB, seed=999))
    cells = changed_cells(before, source)
    rs, ts = clone_onto(src, target)
    assert all(c["ok"] is True for c in rs["checks"]), rs["checks"]
    assert rs["unchanged"] == ts["unchanged"] > 0
    # At most the cells that changed on the source (and the partition-table cells) cross the link.
    assert ts["planned"] - ts["unchanged"] <= (len(cells) + EDGES) * MIB
    assert ts["bytes_sent"] <= (len(cells) + EDGES) * MIB + (ts["planned"] // 4096) * FRAME_COST
    assert ts["bytes_sent"] < first["bytes_sent"] // 2
    # The unchanged chunks were read back during the stream: the read-back at the end reads the rest (the
    # chunks written in part, as BLOCKS frames, whole).
    totals = [e["total"] for e in clone.last_rx.events if e["event"] == "progress" and e["phase"] == "verify"]  # type: ignore[attr-defined]
    assert totals and rs["planned"] - rs["unchanged"] <= totals[-1] <= (len(cells) + EDGES) * MIB
    _same_files(src, target, fstype)


def _scatter_after_a_clone(src: str, source: Path, target: Path, before: Path) -> None:
    """A used-mode clone with 4 MiB chunks onto the target, then 4 KiB rewritten in each of 12 files of the
    source (its image as it was kept in ``before``)."""
    with loop_device(target, partitions=False) as dst:
        clone(src, dst, "--chunk-size", "4M", mode="used")
    shutil.copyfile(source, before)
    with mounted_fs(f"{src}p1", "ext4") as mnt:
        for i in range(0, 24, 2):
            with open(mnt / "big" / f"f1-{i}.bin", "r+b") as f:
                f.seek(8192)
                f.write(random_bytes(4096, seed=500 + i))


def test_a_resend_over_blocks_frames_counts_the_same_on_both_sides(
    ext4_disks: tuple[str, Path, Path], tmp_path: Path
) -> None:
    """The first chunk (sent whole) damaged once on the way, while the frames after it, BLOCKS frames among
    them, were sent: the sender goes back over them (their BLOCKS bookkeeping dropped, sent again), the blocks
    that differ still come in the repair, the copy verifies, and both summaries count the same unchanged bytes."""
    src, source, target = ext4_disks
    _scatter_after_a_clone(src, source, target, tmp_path / "before.img")
    with loop_device(target, partitions=False) as dst:
        run = RelayedClone(src, ("--target", dst, "--yes"), "--mode", "used", "--chunk-size", "4M")
        run.relay.flip_frame, run.relay.flip_times = 0, 1
        assert run.tx.wait(120) == 0, (run.tx.stderr, run.rx.stderr)
        assert run.rx.wait(120) == 0, run.rx.stderr
        run.relay.close()
    rs, ts = run.rx.event("summary"), run.tx.event("summary")
    assert rs and ts and rs["verified"] is True and ts["verified"] is True
    assert run.relay.flips == 1 and rs["resends"] == ts["resends"] == 1
    assert rs["unchanged"] == ts["unchanged"] > 0
    _same_files(src, target)


@pytest.mark.parametrize("sealing", ["--no-encrypt", "--encrypt"])
def test_scattered_small_changes_send_only_the_blocks_that_differ(
    ext4_disks: tuple[str, Path, Path], tmp_path: Path, sealing: str
) -> None:
    """Capability "delta-blocks": 4 KiB rewritten in each of 12 files, 4 MiB chunks. Whole chunks would put
    each changed chunk on the link; only the 64 KiB blocks that differ cross (with the partition-table cells,
    which every clone sends), and the copy verifies; encrypted too (the BLOCKS frames sealed)."""
    src, source, target = ext4_disks
    before = tmp_path / "before.img"
    _scatter_after_a_clone(src, source, target, before)
    blocks, chunks = changed_cells(before, source, DELTA_BLOCK), changed_cells(before, source, 4 * MIB)
    with loop_device(target, partitions=False) as dst:
        rs, ts = clone(src, dst, "--chunk-size", "4M", sealing, mode="used")
    assert clone.last_rx.event("plan")["encrypted"] is (sealing == "--encrypt")  # type: ignore[attr-defined]
    assert all(c["ok"] is True for c in rs["checks"]), rs["checks"]
    assert rs["unchanged"] == ts["unchanged"] and rs["resends"] == 0
    # The chunks holding the first and last MiB (the partition tables) are sent whole, as in every clone.
    last = os.path.getsize(source) // (4 * MIB) - 1
    inner = {b for b in blocks if b * DELTA_BLOCK // (4 * MIB) not in (0, last)}
    sent = len(inner) * DELTA_BLOCK + 2 * 4 * MIB
    assert ts["planned"] - ts["unchanged"] <= sent
    assert ts["bytes_sent"] <= sent + (ts["planned"] // 4096) * FRAME_COST + len(chunks) * blocks_payload_size(4 * MIB)
    whole = len(chunks - {0, last}) * 4 * MIB  # what whole chunks would have put on the link, but the edges
    assert len(chunks - {0, last}) >= 6 and ts["bytes_sent"] - 2 * 4 * MIB < whole // 4
    # The unchanged blocks of the changed chunks were compared during the stream: the read-back reads only
    # what was written.
    totals = [e["total"] for e in clone.last_rx.events if e["event"] == "progress" and e["phase"] == "verify"]  # type: ignore[attr-defined]
    assert totals and totals[-1] <= sent
    _same_files(src, target)


def test_ext4_target_mounted_and_written_since_is_hashed(ext4_disks: tuple[str, Path, Path]) -> None:
    src, _, target = ext4_disks
    clone_onto(src, target)
    with loop_device(target) as dst, mounted_fs(f"{dst}p1", "ext4") as mnt:  # someone used the copy
        (mnt / "mine.txt").write_text("written on the copy")
        (mnt / "big" / "f1-5.bin").write_bytes(random_bytes(MIB, seed=55))
    _grow(f"{src}p1", 3, 1)
    rs, _ = clone_onto(src, target)
    assert "changed since it was made" in warnings(clone.last_rx)  # type: ignore[attr-defined]
    [offer] = [e for e in clone.last_rx.events if e["event"] == "delta"]  # type: ignore[attr-defined]
    assert offer["trusted"] is False
    assert rs["unchanged"] > 0 and all(c["ok"] is True for c in rs["checks"]), rs["checks"]
    _same_files(src, target)


def _write_below_the_filesystem(target: Path, name: str) -> int:
    """4 KiB of file ``name``'s data on the target's ext4 changed below the filesystem (no mount, so no new
    fingerprint): where, as a byte of the disk."""
    with loop_device(target) as dst:
        block = int(sh("debugfs", "-R", f"bmap {name} 0", f"{dst}p1").stdout.split()[-1])
        info = sh("tune2fs", "-l", f"{dst}p1").stdout
        block_size = int(next(line for line in info.splitlines() if line.startswith("Block size:")).split()[-1])
        start = int(Path(f"/sys/class/block/{dst.rsplit('/', 1)[1]}p1/start").read_text()) * 512
    at = start + block * block_size
    assert at + 4096 <= os.path.getsize(target)
    with open(target, "r+b") as f:
        f.seek(at)
        f.write(os.urandom(4096))
    return at


def test_a_copy_changed_under_its_record_is_repaired_never_verified_as_it_is(
    ext4_disks: tuple[str, Path, Path],
) -> None:
    """The record may still be trusted (its sample of chunks can miss the change), but the unchanged chunks
    are read back during the stream and compared with the source's digests: the changed chunk is found, sent
    again in a repair pass after the END (capability "delta-repair"), and the copy is verified; both sides
    say so. Where the sample did find the change, the target is hashed and the chunk sent in the stream.
    The sample is random (8 chunks): the change is made again, up to 4 times, until a trusted record is
    repaired, so the test fails only if the repair never happens (the sample misses 1 chunk in 9 of 10)."""
    src, _, target = ext4_disks
    clone_onto(src, target)
    repaired = False
    for attempt in range(4):
        at = _write_below_the_filesystem(target, f"/big/f1-{7 - attempt}.bin")
        rs, ts = clone_onto(src, target)
        rx = clone.last_rx  # type: ignore[attr-defined]
        [offer] = [e for e in rx.events if e["event"] == "delta"]
        assert rs["verified"] is True and ts["verified"] is True
        _same_files(src, target)
        if offer["trusted"]:
            said = warnings(rx)
            assert "differ from the source (the first at byte" in said and "sent again" in said, said
            assert rs["resends"] == 1 and ts["resends"] == 1
            assert not rs["mismatches"] and rs["unchanged"] == ts["unchanged"]
            repaired = True
            break
        assert at  # the hashed target's chunk there was simply sent in the stream
    assert repaired, "in 4 tries the record was never trusted: the repair was not exercised"


def test_an_image_restored_again_onto_its_earlier_restore_sends_only_what_differs(
    ext4_disks: tuple[str, Path, Path], tmp_path: Path
) -> None:
    """The issue's image case: a disk that holds an earlier restore of an image gets only what differs, from
    a local restore and from the other machine alike; the target then holds the image's disk exactly."""
    src, _, target = ext4_disks
    image = tmp_path / "disk.img"
    save = Recovery("image", "save", "--source", src, "--output", str(image), "--mode", "exact")
    assert save.wait() == 0, save.stderr
    with loop_device(target, partitions=False) as dev:
        first = Recovery("image", "restore", str(image), "--target", dev, "--yes")
        assert first.wait() == 0, first.stderr
        again = Recovery("image", "restore", str(image), "--target", dev, "--yes")
        assert again.wait() == 0, again.stderr
        full, local = first.event("summary"), again.event("summary")
        assert full and local and local["verified"] is True
        assert local["unchanged"] > 0 and local["bytes_sent"] < full["bytes_sent"] // 2, (full, local)
        rx, port = receiver(dev, "--yes")
        tx = Recovery("send", "--code", CODE, "--source", str(image), "--to", f"127.0.0.1:{port}")
        assert (tx.wait(), rx.wait()) == (0, 0), (tx.stderr, rx.stderr)
        remote = tx.event("summary")
        assert remote and remote["verified"] is True and remote["unchanged"] == local["unchanged"]
        assert same_bytes(src, dev)


def test_a_delta_with_blocks_killed_midway_resumes_and_verifies(ext4_disks: tuple[str, Path, Path]) -> None:
    """kill -9 of both machines during a used-mode delta whose changed chunks go as BLOCKS frames: the
    journal never claims a chunk whose blocks were not all written, so the same commands again resume,
    send what the target lacks, and verify."""
    src, _, target = ext4_disks
    clone_onto(src, target)
    with mounted_fs(f"{src}p1", "ext4") as mnt:
        for i in range(0, 24, 2):  # scattered small changes: BLOCKS frames
            with open(mnt / "big" / f"f1-{i}.bin", "r+b") as f:
                f.seek(8192)
                f.write(random_bytes(4096, seed=700 + i))
        (mnt / "new.bin").write_bytes(random_bytes(16 * MIB, seed=71))  # the clone takes a while through the relay
    with loop_device(target, partitions=False) as dst:
        first = RelayedClone(src, ("--target", dst, "--yes"), "--mode", "used", rate=4e6)
        first.durable(2 * MIB)
        first.rx.kill()
        first.tx.kill()
        first.rx.wait()
        first.tx.wait()
        first.relay.close()
        second = RelayedClone(src, ("--target", dst, "--yes"), "--mode", "used")
        assert second.rx.wait() == 0, second.rx.stderr
        assert second.tx.wait() == 0, second.tx.stderr
        second.relay.close()
    rs, ts = second.rx.event("summary"), second.tx.event("summary")
    assert rs and ts and rs["verified"] is True and ts["verified"] is True
    assert all(c["ok"] is True for c in rs["checks"]), rs["checks"]
    assert [e for e in second.rx.events if e["event"] == "resume"]
    _same_files(src, target)


def test_exact_mode_sends_only_the_blocks_that_differ(raw_disks: tuple[str, str, Path]) -> None:
    """Capability "delta-blocks" in exact mode: 4 KiB changed in each of 8 chunks of 4 MiB; only their 16 KiB
    blocks cross, and the whole target hashes to the source's BLAKE3."""
    src, dst, source = raw_disks
    clone(src, dst, "--chunk-size", "4M")
    with open(src, "r+b") as f:
        for k in range(1, 9):
            f.seek(k * 7 * MIB + 12288)
            f.write(random_bytes(4096, seed=800 + k))
    rs, ts = clone(src, dst, "--chunk-size", "4M")
    assert ts["image_digest"] == rs["image_digest"] == b3sum(src)
    assert rs["unchanged"] == ts["unchanged"] and rs["resends"] == 0
    # The chunks holding the first and last MiB are sent whole, as in every clone; then 8 blocks.
    assert ts["planned"] - ts["unchanged"] <= 2 * 4 * MIB + 8 * DELTA_BLOCK
    assert ts["bytes_sent"] < 2 * 4 * MIB + 8 * 4 * MIB // 4
    assert same_bytes(source, dst)
