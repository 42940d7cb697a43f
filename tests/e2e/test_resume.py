"""Clones that survive: the cable pulled, either side killed, both killed (as a reboot would), then
the same commands again. Real processes on loop devices, over real TCP through a relay that plays a
slow cable and can be cut. The receiver's journal says what was durable; the second run sends at
most the rest plus what was in flight, and the target verifies as after an uninterrupted clone:
every chunk the target holds is checked against the source first, and what differs (a source that
changed, what a hostile peer once sent) is sent again. A changed partition table is refused (or,
with --rescan, compared); a changed target's journal is ignored and the clone starts over."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.disks import usedmap
from recovery.engine.clone.source import Source
from recovery.errors import LinkError, RefusedError
from recovery.protocol import messages as m
from recovery.protocol.frames import HEADER_SIZE, TAG_SIZE
from recovery.protocol.state import Paired
from tests.e2e.fake_peer import FakeSender
from tests.e2e.relay import RelayedClone
from tests.helpers import CODE, MIB, Recovery, b3sum, fill_random, loop_device, same_bytes

pytestmark = pytest.mark.root
SIZE = 96 * MIB
CHUNK = MIB
RATE = 24e6  # bytes per second through the relay for the run that is interrupted
FRAME_COST = HEADER_SIZE + TAG_SIZE  # bytes on the link per raw chunk, beyond the chunk


@pytest.fixture
def disks(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """A source disk of random data with zero runs, a blank target disk of the same size."""
    source, target = tmp_path / "source.img", tmp_path / "target.img"
    fill_random(source, SIZE, seed=5)
    with open(source, "r+b") as f:
        for mib in range(8, SIZE // MIB, 16):
            f.seek(mib * MIB)
            f.write(bytes(2 * MIB))
    with open(target, "wb") as f:
        f.truncate(SIZE)
    with loop_device(source, partitions=False) as src, loop_device(target, partitions=False) as dst:
        yield src, dst, source


class Clone(RelayedClone):
    """One run onto the target disk ``dst``."""

    def __init__(
        self, src: str, dst: str, *extra_send: str, rate: float | None = None, extra_receive: tuple[str, ...] = ()
    ) -> None:
        super().__init__(src, ("--target", dst, "--yes"), *extra_send, rate=rate, extra_receive=extra_receive)

    def finish(self) -> tuple[dict, dict]:
        assert self.rx.wait() == 0, self.rx.stderr
        assert self.tx.wait() == 0, self.tx.stderr
        self.relay.close()
        rx, tx = self.rx.event("summary"), self.tx.event("summary")
        assert rx and tx and rx["verified"] is True and tx["verified"] is True
        return rx, tx


def interrupted(src: str, dst: str, how: str) -> int:
    """Run a clone, interrupt it ``how`` once something is durable; the durable bytes the sender knew of."""
    first = Clone(src, dst, rate=RATE)
    durable = first.durable(16 * MIB)
    if how == "cable":
        first.relay.cut()
        assert first.rx.wait(30) == LinkError.exit_code and first.tx.wait(30) == LinkError.exit_code
        for side in (first.rx, first.tx):
            assert "run the same commands again" in side.stderr, side.stderr
    if how in ("receiver", "both"):
        first.rx.kill()
    if how in ("sender", "both"):
        first.tx.kill()
    first.relay.close()
    for side in (first.rx, first.tx):
        side.wait(30)
    return durable


def check_resumed(second: Clone, durable: int, source: Path, dst: str) -> None:
    rx, tx = second.finish()
    [resumed] = [e for e in second.rx.events if e["event"] == "resume"]
    assert resumed["bytes"] >= durable  # the journal holds at least what was acknowledged
    assert resumed["bytes"] < SIZE
    assert rx["resumed"] == tx["resumed"] == resumed["bytes"]
    undone = SIZE - resumed["bytes"]
    frames = undone // CHUNK
    assert second.relay.passed <= undone + frames * FRAME_COST + 64 * 1024  # the rest, and no more
    # The skipped part was read from the source too: the whole-source BLAKE3, equal to the target's.
    assert tx["image_digest"] == rx["image_digest"] == b3sum(str(source))
    assert tx["source_digest"] is rx["source_digest"] is True
    assert same_bytes(source, dst)


@pytest.mark.parametrize("how", ["cable", "receiver", "sender", "both"])
def test_an_interrupted_clone_resumes_where_the_target_is_durable(
    disks: tuple[str, str, Path], how: str, log_dir: Path
) -> None:
    src, dst, source = disks
    durable = interrupted(src, dst, how)
    [journal] = list(log_dir.glob("resume-*.journal"))
    heading = json.loads(journal.read_text().splitlines()[0])
    assert heading["frames"] == SIZE // CHUNK and heading["mode"] == "exact"
    second = Clone(src, dst)
    check_resumed(second, durable, source, dst)
    [record] = list(log_dir.glob("resume-*.journal"))  # a clean clone keeps it as the record of its copy
    assert json.loads(record.read_text().splitlines()[-1]).get("kept") is True


def test_a_source_changed_after_the_kill_gets_the_changed_chunk_sent_again(disks: tuple[str, str, Path]) -> None:
    """Not a sample: any chunk that changed is found (4 KiB in the middle of what the target holds), sent
    again as a replacement, and the clone is verified against the source as a whole."""
    src, dst, source = disks
    interrupted(src, dst, "both")
    journal_chunks = _durable_chunks()
    changed = (journal_chunks // 2) * CHUNK + 8192
    with open(src, "r+b") as f:
        f.seek(changed)
        f.write(os.urandom(4096))
        os.fsync(f.fileno())
    second = Clone(src, dst)
    rx, tx = second.finish()
    [resumed] = [e for e in second.tx.events if e["event"] == "resume"]
    assert resumed["replaced"] == 1 and rx["resumed"] == journal_chunks * CHUNK
    assert tx["image_digest"] == rx["image_digest"] == b3sum(str(source))
    assert same_bytes(source, dst)


def test_a_changed_partition_table_is_refused_unless_rescanned(disks: tuple[str, str, Path]) -> None:
    """The partition-table area is not the same: another disk, or one repartitioned. --rescan compares
    and sends again what differs; the held copy of the first MiB is replaced like any chunk."""
    src, dst, source = disks
    interrupted(src, dst, "cable")
    with open(src, "r+b") as f:
        f.write(b"EFI PART changed")
        os.fsync(f.fileno())
    refused = Clone(src, dst)
    assert refused.tx.wait() == RefusedError.exit_code and refused.rx.wait() == RefusedError.exit_code
    assert "the source changed since the interrupted clone" in refused.tx.error_lines()[0]
    assert "--rescan" in refused.tx.stderr
    refused.relay.close()
    rescanned = Clone(src, dst, "--rescan")
    rx, tx = rescanned.finish()
    assert rx["resumed"] > 0 and tx["image_digest"] == b3sum(str(source))
    assert same_bytes(source, dst)


def test_a_journal_poisoned_by_an_earlier_peer_is_caught_by_the_source(disks: tuple[str, str, Path]) -> None:
    """A paired but hostile sender claimed to be this very source (its identity, its plan) and sent its
    own boot loader as chunk 0, then left. The honest re-run resumes, finds chunk 0 is not the source's
    and sends it again: the target ends as the source, never 'verified' with the hostile bytes."""
    src, dst, source = disks
    rx = Recovery("receive", "--code", CODE, "--target", dst, "--listen", "127.0.0.1:0", "--yes", "--timeout", "5")
    evil = FakeSender(rx.wait_event("listening")["port"])
    evil.hello(caps=("resume",))  # so the receiver keeps a journal of what it sends
    assert isinstance(evil.pair(), Paired)
    plan = honest_plan(src)
    evil.send_control(evil.state.send(plan))
    evil.keys = evil.state.clone_keys(plan.session)
    assert isinstance(evil.next_event(), m.Accept)
    with open(src, "rb") as f:
        for seq in range(25):
            data = f.read(CHUNK)
            if seq == 0:
                data = b"EVIL-BOOTLOADER!" * (CHUNK // 16)
            if seq == 24:
                time.sleep(2.5)  # the receiver flushes and acks on a frame that comes 2 s after the last ack
            evil.frame(seq, seq * CHUNK, data)
    while not isinstance(event := evil.next_event(), m.Ack) or event.seq < 24:
        pass
    evil.close()
    assert rx.wait(30) != 0
    second = Clone(src, dst)
    rx_sum, tx_sum = second.finish()
    [resumed] = [e for e in second.tx.events if e["event"] == "resume"]
    assert resumed["bytes"] >= 24 * CHUNK and resumed["replaced"] == 1
    assert tx_sum["image_digest"] == rx_sum["image_digest"] == b3sum(str(source))
    with open(dst, "rb") as f:
        assert not f.read(16).startswith(b"EVIL")
    assert same_bytes(source, dst)


def honest_plan(src: str) -> m.Plan:
    """The plan `recovery send --mode exact --chunk-size 1M` makes for ``src`` (what a liar copies)."""
    source = Source(src)
    try:
        umap = usedmap.build_map(source.path, source.size, "exact")
        covered = sum(n for _, n in umap.extents)
        return m.Plan(
            session=os.urandom(8).hex(),
            source=source.identity,
            size=source.size,
            mode="exact",
            chunk_size=CHUNK,
            codecs=("zstd", "raw"),
            map=m.MapSummary(
                extents=len(umap.extents),
                bytes=covered,
                digest=umap.digest(),
                parts=tuple(umap.parts),
                skipped=umap.skipped,
            ),
            frames=-(-covered // CHUNK),
            encrypted=False,
        )
    finally:
        source.close()


def test_a_journal_that_no_longer_matches_the_target_is_ignored(disks: tuple[str, str, Path]) -> None:
    src, dst, source = disks
    interrupted(src, dst, "receiver")
    last = _durable_chunks() - 1
    with open(dst, "r+b") as f:  # something wrote the target meanwhile
        f.seek(last * CHUNK + 4096)
        f.write(os.urandom(4096))
        os.fsync(f.fileno())
    second = Clone(src, dst)
    rx, tx = second.finish()
    [warning] = [e["message"] for e in second.rx.events if e["event"] == "warning" and "journal" in e["message"]]
    assert "not resumed, the clone starts from the beginning" in warning
    assert f"the target no longer holds what the clone wrote at byte {last * CHUNK}" in warning
    assert rx["resumed"] == tx["resumed"] == 0
    assert second.relay.passed >= SIZE - 32 * MIB  # the zero runs are not sent, all the rest is
    assert tx["image_digest"] == rx["image_digest"]  # a whole clone again: the source's b3sum
    assert same_bytes(source, dst)


def _durable_chunks() -> int:
    log_dir = Path(os.environ["USB4_RECOVERY_LOG_DIR"])
    [journal] = list(log_dir.glob("resume-*.journal"))
    return max(json.loads(line).get("to", 0) for line in journal.read_text().splitlines())


def test_a_journal_whose_partition_table_bytes_were_not_kept_is_ignored(
    disks: tuple[str, str, Path], log_dir: Path
) -> None:
    """The partition-table areas are written at the end from the journal's held file: without it the
    target would lack them, so the journal is not trusted (rather than found out after a whole transfer)."""
    src, dst, source = disks
    interrupted(src, dst, "receiver")
    for held in log_dir.glob("resume-*.held"):
        held.unlink()
    second = Clone(src, dst)
    rx, tx = second.finish()
    [warning] = [e["message"] for e in second.rx.events if e["event"] == "warning" and "journal" in e["message"]]
    assert "partition-table area at 0 were not kept" in warning and "starts from the beginning" in warning
    assert rx["resumed"] == tx["resumed"] == 0
    assert same_bytes(source, dst)
