"""The first pass's frames, in order: where each one lies and the digest of its bytes.

Both sides keep one: the sender for the list digest it announces, the
receiver for the read-back, the list digest it answers with and the resume
journal. A record is ``offset, length, digest`` (:data:`RECORD`, the bytes
the list digest hashes), plus the frame's kind. A later pass of a rescue
replaces a record in place, and a resume starts from the records the
journal kept, so the list digest is always that of the frames as the target
holds them, however the clone got there.
"""

from __future__ import annotations

import array
import bisect
import struct
from collections.abc import Iterator

import blake3

from recovery.protocol.frames import Kind, SequenceState, zero_digest

RECORD = struct.Struct("<QQ32s")  # offset, length, BLAKE3 of the raw bytes: one per frame
UNKNOWN = bytes(32)  # a record's digest while the target's bytes there are not known to be the source's
ZeroRun = list[int]  # [offset, length, stride, count]: ZERO frames at offset + k * stride, k < count


class FrameList:
    def __init__(self) -> None:
        self.records = bytearray()
        self.kinds = bytearray()
        self.offsets = array.array("Q")
        self.covered = 0

    def __len__(self) -> int:
        return len(self.offsets)

    def append(self, offset: int, length: int, digest: bytes, kind: int) -> None:
        self.records += RECORD.pack(offset, length, digest)
        self.kinds.append(kind)
        self.offsets.append(offset)
        self.covered += length

    def find(self, offset: int, length: int) -> int | None:
        """The index of the frame at exactly ``offset`` with ``length``, or None."""
        i = bisect.bisect_left(self.offsets, offset)
        if i < len(self.offsets) and self.offsets[i] == offset and self.length(i) == length:
            return i
        return None

    def digest_at(self, offset: int, length: int) -> bytes | None:
        """The digest of the frame at exactly ``offset`` with ``length``, or None (a delta's offer)."""
        i = self.find(offset, length)
        return None if i is None else self.digest(i)

    def covering(self, offset: int) -> int | None:
        """The index of the frame holding byte ``offset``, or None."""
        i = bisect.bisect_right(self.offsets, offset) - 1
        return i if i >= 0 and offset < self.offsets[i] + self.length(i) else None

    def length(self, index: int) -> int:
        return int(RECORD.unpack_from(self.records, index * RECORD.size)[1])

    def digest(self, index: int) -> bytes:
        return bytes(RECORD.unpack_from(self.records, index * RECORD.size)[2])

    def record(self, index: int) -> tuple[int, int, bytes, int]:
        offset, length, digest = RECORD.unpack_from(self.records, index * RECORD.size)
        return offset, length, digest, self.kinds[index]

    def replace(self, index: int, digest: bytes, kind: int) -> None:
        offset, length, _ = RECORD.unpack_from(self.records, index * RECORD.size)
        RECORD.pack_into(self.records, index * RECORD.size, offset, length, digest)
        self.kinds[index] = kind

    def truncate(self, n: int) -> None:
        while len(self.offsets) > n:
            self.covered -= self.length(len(self.offsets) - 1)
            self.offsets.pop()
        del self.records[n * RECORD.size :]
        del self.kinds[n:]

    def packed(self, start: int, stop: int) -> tuple[bytes, bytes]:
        """Records and kinds of frames ``start``..``stop`` (exclusive), for a journal."""
        return bytes(self.records[start * RECORD.size : stop * RECORD.size]), bytes(self.kinds[start:stop])

    def compact(self, start: int, stop: int) -> tuple[bytes, bytes, list[ZeroRun]]:
        """Frames ``start``..``stop`` for a journal, what costs bytes only where there is data: the
        kinds, the records of the DATA frames, and the ZERO frames as runs (their digest is known)."""
        data = bytearray()
        runs: list[ZeroRun] = []
        for i in range(start, stop):
            offset, length, _ = RECORD.unpack_from(self.records, i * RECORD.size)
            if self.kinds[i] != Kind.ZERO:
                data += self.records[i * RECORD.size : (i + 1) * RECORD.size]
                continue
            run = runs[-1] if runs and i > start and self.kinds[i - 1] == Kind.ZERO else None
            if run and run[1] == length and (run[3] == 1 or offset == run[0] + run[2] * run[3]):
                if run[3] == 1:
                    run[2] = offset - run[0]
                run[3] += 1
            else:
                runs.append([offset, length, 0, 1])
        return bytes(data), bytes(self.kinds[start:stop]), runs

    def extend_compact(self, data: bytes, kinds: bytes, runs: list[ZeroRun]) -> None:
        """Append what :meth:`compact` gave; ValueError if its parts do not fit together."""
        if (
            len(data) % RECORD.size
            or len(data) // RECORD.size + sum(r[3] for r in runs) != len(kinds)
            or sum(k == Kind.ZERO for k in kinds) != sum(r[3] for r in runs)
        ):
            raise ValueError("records, runs and kinds do not match")
        records = RECORD.iter_unpack(data)
        zeros = ((o + k * stride, n) for o, n, stride, count in runs for k in range(count))
        for kind in kinds:
            if kind == Kind.ZERO:
                offset, length = next(zeros)
                self.append(offset, length, zero_digest(length), kind)
            else:
                offset, length, digest = next(records)
                self.append(offset, length, digest, kind)

    def __iter__(self) -> Iterator[tuple[int, int, bytes, int]]:
        """(offset, length, digest, kind) of every frame, made one at a time (a list of them all
        would cost a few hundred bytes a frame: the read-back walks millions)."""
        for i, (o, n, d) in enumerate(RECORD.iter_unpack(self.records)):
            yield o, n, d, self.kinds[i]

    def longest(self) -> int:
        """The length of the longest frame."""
        return max((n for _, n, _ in RECORD.iter_unpack(self.records)), default=0)

    def list_digest(self) -> str:
        return blake3.blake3(self.records, max_threads=blake3.blake3.AUTO).hexdigest()

    def state_after(self) -> SequenceState:
        """Where the frame sequence stands after these frames (a resume starts there)."""
        if not self.offsets:
            return SequenceState()
        end = self.offsets[-1] + self.length(len(self.offsets) - 1)
        return SequenceState(next_seq=len(self.offsets), next_offset=end, covered=self.covered, last_end=end)


class Recorded:
    """What a pipeline reports from its frame list."""

    framelist: FrameList

    @property
    def frames(self) -> int:
        return len(self.framelist)

    @property
    def done_bytes(self) -> int:
        return self.framelist.covered

    @property
    def list_digest(self) -> str:
        return self.framelist.list_digest()
