"""Resume as a hostile receiver (or a planted file) would bend it: an offer beyond the plan is refused
before a single digest is read (they would be held in memory), the chunks of the target sampled
cannot be known beforehand, and only a journal this machine wrote, under its own key, is trusted."""

from __future__ import annotations

import dataclasses
import os
import random
import stat
from pathlib import Path
from types import SimpleNamespace

import blake3
import pytest

from recovery import events
from recovery.disks import identity
from recovery.engine.clone.chunks import plan_chunks
from recovery.engine.clone.framelist import UNKNOWN, FrameList
from recovery.engine.clone.recvpipe import DurablePoint
from recovery.engine.resume import agree, journal
from recovery.errors import RemoteProtocolError
from recovery.protocol import messages as m
from recovery.protocol.frames import Kind

MIB = 1 << 20


class NoDigestsLink:
    """A link whose control channel must not be read: the offer alone is enough to refuse."""

    class ctl:
        @staticmethod
        def expect(*_: object) -> m.Message:
            raise AssertionError("a digest page was read for an offer beyond the plan")

        @staticmethod
        def send(_: m.Message) -> None:
            raise AssertionError("nothing is sent for an offer beyond the plan")


@pytest.mark.parametrize(("seq", "nbytes"), [(2**40, 4 * MIB), (4, 2**50), (5, 4 * MIB)])
def test_an_offer_beyond_the_plan_is_refused_before_any_digest(seq: int, nbytes: int) -> None:
    chunks = list(plan_chunks([(0, 4 * MIB)], MIB))  # 4 chunks, 4 MiB
    offer = m.ResumeOffer(seq=seq, bytes=nbytes, since="", complete=False, rescued=False)
    with pytest.raises(RemoteProtocolError, match="beyond this plan"):
        agree.sender_agree(
            NoDigestsLink(),
            offer,
            chunks,
            lambda c, v: True,  # type: ignore[arg-type]
            planned=len(chunks),
            planned_bytes=4 * MIB,
            chunk_size=MIB,
        )


def test_the_sample_is_spread_random_and_always_holds_the_last_two() -> None:
    count = 1000
    picks = [journal.sample_indexes(count, rng=random.Random(seed)) for seed in range(20)]
    for p in picks:
        assert {count - 2, count - 1} <= set(p) and journal.SAMPLE + 1 <= len(p) <= journal.SAMPLE + 2
        stretches = {i * journal.SAMPLE // count for i in p}
        assert stretches == set(range(journal.SAMPLE))  # one in each stretch
    assert len({tuple(p) for p in picks}) > 15  # not the same chunks every time
    assert journal.sample_indexes(3) == [0, 1, 2] and journal.sample_indexes(0) == []
    assert 5 not in journal.sample_indexes(10, {5}, want=10)


TARGET = m.Identity(path="/dev/fake", size=64 * MIB, kind="disk", host_id="h", fingerprint="00" * 32, serial="S1")


def a_plan(source: m.Identity = TARGET) -> m.Plan:
    return m.Plan(
        session="s",
        source=source,
        size=64 * MIB,
        mode="exact",
        chunk_size=MIB,
        codecs=("raw",),
        map=m.MapSummary(extents=1, bytes=64 * MIB, digest="00" * 32),
        frames=64,
        encrypted=False,
    )


def a_journal(where: Path, fingerprint: str = "fp", source: m.Identity = TARGET, host: str = "") -> journal.Journal:
    jrnl = journal.Journal.create(where, a_plan(source), TARGET, fingerprint, "src", "dst", host)
    frames = FrameList()
    for i in range(4):
        frames.append(16 * MIB + i * MIB, MIB, os.urandom(32), 0)
    jrnl.durable(DurablePoint(4, frames.covered, 0), frames)
    jrnl.drain()
    jrnl.close()
    return jrnl


def test_only_a_journal_made_under_this_machines_key_is_trusted(tmp_path: Path) -> None:
    a_journal(tmp_path)
    key = tmp_path / journal.KEY_FILE
    assert key.stat().st_mode & 0o777 == 0o600
    found = journal.read(tmp_path, TARGET)
    assert found is not None and not found.problems and len(found.frames) == 4
    key.write_bytes(os.urandom(journal.KEY_SIZE))  # another machine's key (or a journal copied here)
    found = journal.read(tmp_path, TARGET)
    assert found is not None and found.problems and not len(found.frames)
    key.unlink()
    found = journal.read(tmp_path, TARGET)
    assert found is not None and "not trusted" in found.problems[0]


def test_a_wizard_is_told_of_a_journal_only_when_this_machines_key_vouches_for_it(tmp_path: Path) -> None:
    """Issue 21: the disk list names the wizard's own incomplete copy by its journal, never by a journal
    another machine (or anyone) made, nor when the target was written since."""
    source = m.Identity(
        path="/dev/nvme0n1", size=64 * MIB, kind="disk", host_id="o", fingerprint="11" * 32, model="Samsung 980"
    )
    a_journal(tmp_path, TARGET.fingerprint, source, "office-pc")
    told = journal.peek(tmp_path, TARGET)
    assert told is not None and (told.source_host, told.source_name, told.source_model) == (
        "office-pc",
        "nvme0n1",
        "Samsung 980",
    )
    assert (told.done, told.total, told.mode, told.complete) == (4 * MIB, 64 * MIB, "exact", False)
    assert journal.peek(tmp_path, dataclasses.replace(TARGET, fingerprint="22" * 32)) is None  # written since
    path = next(tmp_path.glob("resume-*.journal"))
    text = path.read_bytes()
    path.write_bytes(text.replace(b"office-pc", b"evil-pc!!", 1))  # an edited heading fails its check
    assert journal.peek(tmp_path, TARGET) is None
    path.write_bytes(text)
    assert journal.peek(tmp_path, TARGET) is not None
    (tmp_path / journal.KEY_FILE).write_bytes(os.urandom(journal.KEY_SIZE))  # another machine's key
    assert journal.peek(tmp_path, TARGET) is None


@pytest.mark.parametrize("how", ["link", "readable", "short"])
def test_a_key_file_that_is_not_private_is_no_key(tmp_path: Path, how: str) -> None:
    key = tmp_path / journal.KEY_FILE
    if how == "link":
        (tmp_path / "elsewhere").write_bytes(os.urandom(journal.KEY_SIZE))
        key.symlink_to(tmp_path / "elsewhere")
    else:
        key.write_bytes(os.urandom(journal.KEY_SIZE if how == "readable" else 8))
        key.chmod(0o644 if how == "readable" else 0o600)
    assert journal.journal_key(tmp_path, create=True) is None
    with pytest.raises(OSError):
        a_journal(tmp_path)


@pytest.mark.parametrize("planted", ["link", "fifo", "file"])
def test_a_fresh_journal_never_writes_through_what_was_left_at_its_path(tmp_path: Path, planted: str) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    first = a_journal(tmp_path)
    for path in (first.path, first.held_path):
        path.unlink()
        if planted == "link":
            path.symlink_to(victim)
        elif planted == "fifo":
            os.mkfifo(path)  # opening a fifo to write would hang the receiver
        else:
            path.write_bytes(b"x" * 100)
            path.chmod(0o666)
    again = a_journal(tmp_path)
    assert victim.read_bytes() == b"keep me"
    for path in (again.path, again.held_path):
        st = path.lstat()
        assert stat.S_ISREG(st.st_mode) and st.st_mode & 0o777 == 0o600
    assert journal.read(tmp_path, TARGET) is not None


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o770])
def test_a_log_directory_others_may_write_keeps_no_journal(tmp_path: Path, mode: int) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    with pytest.raises(OSError, match="not this user's own private directory"):
        a_journal(shared)
    assert not list(shared.iterdir())


def test_a_clean_clones_journal_is_a_record_never_an_unfinished_clone(tmp_path: Path) -> None:
    """Issue 23: a clean clone ends its journal with a 'kept' line: a wizard is told of a copy (to update),
    not of an interrupted clone (to resume), and a resume is never offered from it."""
    made = a_journal(tmp_path, TARGET.fingerprint)
    kept = journal.Journal(made.path, made.key, append_at=made.path.stat().st_size)
    kept.keep(TARGET.fingerprint)
    kept.drain()
    kept.close()
    assert journal.peek(tmp_path, TARGET) is None
    copy = journal.peek(tmp_path, TARGET, kept=True)
    assert copy is not None and copy.done == 4 * MIB and copy.since.startswith("20")
    found = journal.read(tmp_path, TARGET)
    assert found is not None and found.kept and not found.problems
    assert agree.receiver_offer(a_plan(), found, -1, 0, events.ignore) is None


class PagesLink:
    """A link whose receiver sends these ``digests`` pages."""

    def __init__(self, pages: list[m.Digests]) -> None:
        self.ctl = self
        self.pages = pages

    def expect(self, *_: object) -> m.Message:
        return self.pages.pop(0)


def test_a_delta_offer_keeps_only_the_planned_chunks_and_no_more_than_offered() -> None:
    from recovery.protocol import delta as wire

    chunks = list(plan_chunks([(0, 4 * MIB)], MIB))
    held = [(0, MIB, b"a" * 32), (MIB, 4096, b"b" * 32), (2 * MIB, MIB, b"c" * 32)]  # the second: not planned
    offer = m.DeltaOffer(frames=3, bytes=2 * MIB + 4096)
    kept = agree.receive_offered(PagesLink(wire.encode_pages(held)), offer, chunks, MIB, 64 * MIB)  # type: ignore[arg-type]
    assert [(o, n, d) for o, n, d, _ in kept] == [held[0], held[2]]
    with pytest.raises(RemoteProtocolError, match="more delta digests"):
        agree.receive_offered(
            PagesLink(wire.encode_pages(held)), m.DeltaOffer(frames=2, bytes=0), chunks, MIB, 64 * MIB
        )  # type: ignore[arg-type]
    with pytest.raises(RemoteProtocolError, match="more than"):  # before any page is read
        agree.receive_offered(NoDigestsLink, m.DeltaOffer(frames=2**40, bytes=0), chunks, MIB, 64 * MIB)  # type: ignore[arg-type]


def test_a_record_that_claims_nothing_never_fails_the_sample(tmp_path: Path) -> None:
    """A delta's chunk not yet written whole is journaled with no known digest: the check of an unfinished
    clone's journal against the target skips it (a resume compares it with the source and sends it again)
    instead of calling the whole journal a lie and starting over."""
    disk = tmp_path / "target.img"
    data = os.urandom(8 * MIB)
    disk.write_bytes(data)
    frames = FrameList()
    for i in range(8):
        said = UNKNOWN if i == 3 else blake3.blake3(data[i * MIB : (i + 1) * MIB]).digest()
        frames.append(i * MIB, MIB, said, Kind.DATA)
    fd = os.open(disk, os.O_RDONLY)
    try:
        found = SimpleNamespace(frames=frames, head={"target_fp": identity.fingerprint(fd, 8 * MIB)})
        assert journal.target_changed(found, fd, 8 * MIB, {3 * MIB}) is None  # type: ignore[arg-type]
        frames.replace(3, bytes(31) + b"\x01", Kind.DATA)  # a digest the target does not hold
        assert "no longer holds" in str(journal.target_changed(found, fd, 8 * MIB, {3 * MIB}))  # type: ignore[arg-type]
    finally:
        os.close(fd)


def test_records_that_claim_nothing_do_not_thin_the_sample(tmp_path: Path) -> None:
    """The review's finding: the sample's picks that landed on a record claiming nothing were skipped, not drawn
    again, so the journal of a delta stopped while most of its chunks were still unknown had few or none of its
    other records checked, and a resume went on over a target that no longer holds them (to fail only at the
    end's read-back). The sample is drawn among the records that claim something."""
    disk = tmp_path / "target.img"
    count = 64
    data = os.urandom(count * MIB)
    disk.write_bytes(data)
    frames = FrameList()
    for i in range(count):
        said = blake3.blake3(data[i * MIB : (i + 1) * MIB]).digest() if i == 10 else UNKNOWN
        frames.append(i * MIB, MIB, said, Kind.DATA)
    fd = os.open(disk, os.O_RDWR)
    try:
        found = SimpleNamespace(frames=frames, head={"target_fp": identity.fingerprint(fd, count * MIB)})
        assert journal.target_changed(found, fd, count * MIB) is None  # type: ignore[arg-type]
        os.pwrite(fd, b"\x01" * 512, 10 * MIB + 4096)  # the one record that claims something is now a lie
        for _ in range(8):  # whatever the random picks
            assert "no longer holds" in str(journal.target_changed(found, fd, count * MIB))  # type: ignore[arg-type]
    finally:
        os.close(fd)
