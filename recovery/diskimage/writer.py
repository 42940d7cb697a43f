"""Writing an image file: the header, then chunk records as they come, then index, manifest and footer.

One thread appends (:meth:`ImageWriter.put`, :meth:`ImageWriter.zero`); any number of threads make
what it appends (:func:`stored_form`: compress, seal), each with its own compressor. Until
:meth:`ImageWriter.finish` writes the footer the file is plainly incomplete: readers refuse it,
and a resume scans its records (:mod:`recovery.diskimage.scan`).
"""

from __future__ import annotations

import array
import bisect
import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

import blake3
import zstandard

from recovery.diskimage import format as f
from recovery.diskimage.appender import Appender
from recovery.diskimage.scan import Scanned
from recovery.diskimage.seal import OVERHEAD, Sealer, chunk_aad, manifest_aad, meta_aad, new_keys, page_aad
from recovery.errors import TargetWriteError
from recovery.protocol.frames import zero_digest

STORE_LEVEL = 1  # zstd level for chunks that arrive uncompressed: Clonezilla's partclone | zstd -1
MANIFEST_LEVEL = 9


def stored_form(
    cctx: zstandard.ZstdCompressor,
    header: f.Header,
    sealer: Sealer | None,
    offset: int,
    data: bytes | memoryview,
    compressed: bytes | None = None,
) -> tuple[f.Codec, bytes]:
    """How one chunk's bytes are kept: zstd (``compressed`` when the sender made it, else made here)
    unless that does not shrink them, then sealed if the image is encrypted."""
    packed = compressed if compressed is not None else cctx.compress(data)
    codec, body = (f.Codec.ZSTD, packed) if len(packed) < len(data) else (f.Codec.RAW, bytes(data))
    if sealer is not None:
        body = sealer.seal(body, chunk_aad(header.image_id, offset, len(data), codec))
    return codec, body


class ImageWriter:
    """Appends chunk records to an image file opened for writing (``fd``), keeping its index."""

    def __init__(
        self, fd: int, path: str, header: f.Header, sealer: Sealer | None, direct_fd: int | None = None
    ) -> None:
        self.fd, self.path, self.header, self.sealer = fd, path, header, sealer
        self.direct_fd = direct_fd  # an O_DIRECT twin of ``fd``: the records go past the page cache
        self.appender: Appender | None = None  # once started or resumed
        self.entries = bytearray()  # the index, in disk order
        self.offsets = array.array("Q")
        self.pos = f.HEADER_SIZE
        self.stored_bytes = 0  # chunk bytes written (records' payloads)

    def start(self, plan: dict[str, Any]) -> None:
        """An empty image: the header, then the save's plan (what a resume is judged by)."""
        try:
            os.ftruncate(self.fd, 0)
        except OSError as e:
            raise TargetWriteError(f"cannot empty {self.path}: {e.strerror}") from None
        self.appender = Appender(self.fd, self.path, 0, self.direct_fd)
        self._write(f.encode_header(self.header), 0)
        body = f.encode_manifest(plan)
        if self.sealer is not None:
            body = self.sealer.seal(body, meta_aad(self.header.image_id))
        record = f.encode_record(f.RecordHeader(f.Codec.META, 0, 0, len(body), bytes(32)))
        self._write(record, f.HEADER_SIZE)
        self._write(body, f.HEADER_SIZE + len(record))
        self.pos = f.HEADER_SIZE + len(record) + len(body)

    def resume(self, found: Scanned, keep: int) -> None:
        """Go on after the first ``keep`` chunks an interrupted save left (``found``): the rest of the
        file is cut off, and those chunks are the index so far."""
        kept, self.pos = found.cut(keep)
        for e in kept:
            self._enter(e)
            self.stored_bytes += e.stored
        try:
            os.ftruncate(self.fd, self.pos)
        except OSError as e:
            raise TargetWriteError(f"cannot cut {self.path} back: {e.strerror}") from None
        self.appender = Appender(self.fd, self.path, self.pos, self.direct_fd)

    def put(self, offset: int, length: int, digest: bytes, codec: f.Codec, stored: bytes) -> None:
        """Append one chunk's record; it becomes the index's entry for ``offset``."""
        record = f.encode_record(
            f.RecordHeader(codec, offset, length, len(stored), bytes(32) if self.sealer else digest)
        )
        self._write(record, self.pos)  # two appends: joining them first would copy the chunk once more
        self._write(stored, self.pos + len(record))
        self._enter(f.Entry(offset, length, digest, self.pos, len(stored), codec))
        self.pos += len(record) + len(stored)
        self.stored_bytes += len(stored)

    def zero(self, offset: int, length: int) -> None:
        """A chunk of zeros: nothing stored; a record says so (for a resume) and the index too."""
        self._write(f.encode_record(f.RecordHeader(f.Codec.ZERO, offset, length, 0, bytes(32))), self.pos)
        self._enter(f.Entry(offset, length, zero_digest(length), 0, 0, f.Codec.ZERO))
        self.pos += f.RECORD_SIZE

    def parent(self, offset: int, length: int, digest: bytes) -> None:
        """An increment's chunk that its parent holds as the source has it (``digest``): nothing stored; a
        record says so (for a resume) and the index too."""
        if self.header.parent is None:
            raise TargetWriteError(f"{self.path} is not an increment: it has no parent to name a chunk of")
        self._write(f.encode_record(f.RecordHeader(f.Codec.PARENT, offset, length, 0, digest)), self.pos)
        self._enter(f.Entry(offset, length, digest, 0, 0, f.Codec.PARENT))
        self.pos += f.RECORD_SIZE

    def _enter(self, entry: f.Entry) -> None:
        """Append in disk order, or replace the entry of the same chunk (a later pass)."""
        n = len(self.offsets)
        if n == 0 or entry.offset >= self.offsets[-1] + self._length(n - 1):
            self.entries += f.encode_entry(entry)
            self.offsets.append(entry.offset)
            return
        i = bisect.bisect_left(self.offsets, entry.offset)
        if i == n or self.offsets[i] != entry.offset or self._length(i) != entry.length:
            raise TargetWriteError(f"a chunk at byte {entry.offset} overlaps the image's chunks without replacing one")
        self.entries[i * f.ENTRY_SIZE : (i + 1) * f.ENTRY_SIZE] = f.encode_entry(entry)

    def _length(self, i: int) -> int:
        return int.from_bytes(self.entries[i * f.ENTRY_SIZE + 8 : i * f.ENTRY_SIZE + 16], "little")

    def root(self) -> bytes:
        """The list digest of the chunks as the index holds them."""
        return f.list_digest(self.entries)

    def flush(self) -> None:
        """Every record appended so far on the disk."""
        self._appender.flush()

    def close(self) -> None:
        if self.appender is not None:
            self.appender.close()
            self.appender = None

    @property
    def _appender(self) -> Appender:
        if self.appender is None:
            raise TargetWriteError(f"{self.path} was not started as an image")
        return self.appender

    def finish(self, manifest: dict[str, Any], room: Callable[[int], None] | None = None) -> str:
        """Index, manifest and footer after the records: the image is whole. Its root, as hex.
        ``room``: told how many bytes these take before they are written (it may refuse them)."""
        root = self.root()
        count = len(self.offsets)
        index_pos = self.pos
        body = f.encode_manifest({**manifest, "root": root.hex(), "chunks": count})
        stored = zstandard.ZstdCompressor(level=MANIFEST_LEVEL).compress(body)
        if self.sealer is not None:
            stored = self.sealer.seal(stored, manifest_aad(self.header.image_id))
        if room is not None:
            pages = -(-len(self.entries) // (f.PAGE_ENTRIES * f.ENTRY_SIZE))
            room(len(self.entries) + pages * OVERHEAD + len(stored) + f.FOOTER_SIZE)
        index_len, index_digest = self._write_index(count, index_pos)
        footer = f.Footer(
            self.header.image_id,
            data_end=index_pos,
            index_pos=index_pos,
            entries=count,
            manifest_pos=index_pos + index_len,
            manifest_len=len(stored),
            index_digest=index_digest,
            manifest_digest=blake3.blake3(stored).digest(),
            root=bytes(32) if self.sealer else root,
        )
        self._write(stored + f.encode_footer(footer), index_pos + index_len)
        end = index_pos + index_len + len(stored) + f.FOOTER_SIZE
        self.flush()
        try:
            os.ftruncate(self.fd, end)  # nothing after the footer: an earlier, longer file's, or the padding
            os.fsync(self.fd)
        except OSError as e:
            raise TargetWriteError(f"cannot end {self.path}: {e.strerror}") from None
        return root.hex()

    def _write_index(self, count: int, at: int) -> tuple[int, bytes]:
        """The index at ``at``, page by page (each sealed, with a passphrase): its length and BLAKE3. Never
        a second copy of it in memory (a 2 TB disk's index is 32 MiB)."""
        digest = blake3.blake3()
        if self.sealer is None:
            self._write(self.entries, at)
            digest.update(self.entries)
            return len(self.entries), digest.digest()
        page = f.PAGE_ENTRIES * f.ENTRY_SIZE
        pos = at
        for first in range(0, len(self.entries), page):
            aad = page_aad(self.header.image_id, first // page, count)
            sealed = self.sealer.seal(bytes(self.entries[first : first + page]), aad)
            self._write(sealed, pos)
            digest.update(sealed)
            pos += len(sealed)
        return pos - at, digest.digest()

    def _write(self, data: bytes | bytearray, at: int) -> None:
        appender = self._appender
        if at != appender.end:
            raise TargetWriteError(f"an image is written front to back: byte {at} of {self.path} is not its end")
        appender.append(data)


def new_header(
    size: int, chunk_size: int, sector_size: int, passphrase: bytes | None = None, parent: f.Parent | None = None
) -> tuple[f.Header, Sealer | None]:
    """A new image's header, and (with a passphrase) the sealer of its new data key. ``parent``: the image
    it is an increment of (format 2.0; never encrypted)."""
    if parent is not None and passphrase is not None:
        raise TargetWriteError("an encrypted image is saved whole: it is never an increment")
    flags = f.Flag.ENCRYPTED if passphrase is not None else f.Flag.NONE
    header = f.Header(
        image_id=os.urandom(16),
        size=size,
        chunk_size=chunk_size,
        sector_size=sector_size,
        created=int(time.time()),
        flags=flags | (f.Flag.INCREMENT if parent is not None else f.Flag.NONE),
        major=f.INCREMENT_MAJOR if parent is not None else f.MAJOR,
        parent=parent,
    )
    if passphrase is None:
        return header, None
    data_key, keys = new_keys(passphrase, f.header_aad(f.encode_header(header)))
    return dataclasses.replace(header, keys=keys), Sealer(data_key)
