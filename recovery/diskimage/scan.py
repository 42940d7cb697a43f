"""What an interrupted save left: its plan and the chunks it wrote, each checked, up to the first
torn or damaged record (a resume goes on from there).

An image without its footer is read record by record from the start: the plan record, then each
chunk's record in the order the save wrote them (the first pass in disk order, then the chunks a
later pass replaced). A record counts only if its bytes give its digest (an encrypted one: if its
seal opens); the first that does not, and everything after it, is cut off by the resume.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import blake3
import zstandard

from recovery.diskimage import format as f
from recovery.diskimage.seal import Sealer, chunk_aad, meta_aad, unwrap
from recovery.errors import ImageError, PassphraseError
from recovery.protocol.frames import zero_digest


@dataclass
class Scanned:
    header: f.Header
    sealer: Sealer | None  # an encrypted image's, its data key unwrapped
    plan: dict[str, Any]  # the save's plan record
    first: int  # where the first chunk record starts
    entries: list[f.Entry] = field(default_factory=list)  # first-pass chunks, as their latest record has them
    originals: list[f.Entry] = field(default_factory=list)  # as the first pass wrote them
    ends: list[int] = field(default_factory=list)  # where each first-pass record ends
    end: int = 0  # where the last good record ends
    by_offset: dict[int, int] = field(default_factory=dict)  # a first-pass chunk's offset: its index

    def cut(self, keep: int) -> tuple[list[f.Entry], int]:
        """The chunks a resume keeps when it goes on after the first ``keep``, and where the file is cut:
        all of them with what later passes replaced, or fewer as the first pass wrote them."""
        if keep >= len(self.entries):
            return self.entries, self.end
        return self.originals[:keep], self.ends[keep - 1] if keep else self.first


def unfinished(fd: int) -> bool:
    """The file open as ``fd`` starts as an image of this tool and has no footer (a save that stopped)."""
    size = os.fstat(fd).st_size
    if size < f.HEADER_SIZE:
        return False
    tail = os.pread(fd, len(f.FOOTER_MAGIC), size - f.FOOTER_SIZE) if size >= f.FOOTER_SIZE else b""
    return os.pread(fd, len(f.MAGIC), 0) == f.MAGIC and tail != f.FOOTER_MAGIC


def unfinished_at(path: str) -> bool:
    """:func:`unfinished` of the file at ``path`` (False if it cannot be read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return unfinished(fd)
    except OSError:
        return False
    finally:
        os.close(fd)


def scan(fd: int, passphrase: bytes | None) -> Scanned:
    """The unfinished image open as ``fd``: its plan and good chunks. ImageError if it is not an image
    of this tool or has no readable plan; PassphraseError for a wrong or missing passphrase."""
    header = f.decode_header(os.pread(fd, f.HEADER_SIZE, 0))
    sealer = _sealer(fd, header, passphrase)
    plan, first = _plan(fd, header, sealer)
    found = Scanned(header, sealer, plan, first, end=first)
    size = os.fstat(fd).st_size
    dctx = zstandard.ZstdDecompressor()
    pos = first
    while pos + f.RECORD_SIZE <= size:
        entry = _chunk(fd, pos, size, header, sealer, dctx)
        if entry is None or not _take(found, entry):
            break
        pos += f.RECORD_SIZE + entry.stored
        found.end = pos
        if len(found.ends) < len(found.originals):
            found.ends.append(pos)
    return found


def _sealer(fd: int, header: f.Header, passphrase: bytes | None) -> Sealer | None:
    if header.keys is None:
        return None
    if passphrase is None:
        raise PassphraseError("the unfinished image is encrypted", hint="give its passphrase to resume it")
    return Sealer(unwrap(passphrase, header.keys, f.header_aad(os.pread(fd, f.HEADER_SIZE, 0))))


def _plan(fd: int, header: f.Header, sealer: Sealer | None) -> tuple[dict[str, Any], int]:
    raw = os.pread(fd, f.RECORD_SIZE, f.HEADER_SIZE)
    record = f.decode_record(raw, header)
    if record.codec is not f.Codec.META:
        raise ImageError("the image has no plan record where its first record should be")
    body = os.pread(fd, record.stored, f.HEADER_SIZE + f.RECORD_SIZE)
    if len(body) != record.stored:
        raise ImageError("the image's plan record is cut short")
    if sealer is not None:
        body = sealer.open(body, meta_aad(header.image_id), "the image's plan record")
    try:
        plan = json.loads(body.decode())
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ImageError("the image's plan record is not readable") from None
    if not isinstance(plan, dict):
        raise ImageError("the image's plan record is not readable")
    return plan, f.HEADER_SIZE + f.RECORD_SIZE + record.stored


def _chunk(
    fd: int, pos: int, size: int, header: f.Header, sealer: Sealer | None, dctx: zstandard.ZstdDecompressor
) -> f.Entry | None:
    """The chunk whose record starts at ``pos``, checked; None where the good records end."""
    try:
        record = f.decode_record(os.pread(fd, f.RECORD_SIZE, pos), header)
    except ImageError:
        return None
    if record.codec is f.Codec.META or pos + f.RECORD_SIZE + record.stored > size:
        return None
    if record.codec is f.Codec.ZERO:
        return f.Entry(record.offset, record.length, zero_digest(record.length), 0, 0, f.Codec.ZERO)
    if record.codec is f.Codec.PARENT:  # the parent's bytes: checked when the finished image is read back
        return f.Entry(record.offset, record.length, record.digest, 0, 0, f.Codec.PARENT)
    body = os.pread(fd, record.stored, pos + f.RECORD_SIZE)
    try:
        if sealer is not None:
            aad = chunk_aad(header.image_id, record.offset, record.length, record.codec)
            body = sealer.open(body, aad, "a chunk")
        if record.codec is f.Codec.ZSTD:
            if zstandard.frame_content_size(body) != record.length:
                return None
            body = dctx.decompress(body, max_output_size=record.length)
    except (ImageError, zstandard.ZstdError):
        return None
    digest = blake3.blake3(body).digest()
    if len(body) != record.length or (sealer is None and digest != record.digest):
        return None
    return f.Entry(record.offset, record.length, digest, pos, record.stored, record.codec)


def _take(found: Scanned, entry: f.Entry) -> bool:
    """Count ``entry``: the next chunk of the first pass, or a later pass's for one of them."""
    if not found.originals or entry.offset >= found.originals[-1].end:
        found.by_offset[entry.offset] = len(found.originals)
        found.originals.append(entry)
        found.entries.append(entry)
        return True
    i = found.by_offset.get(entry.offset)
    if i is not None and found.originals[i].length == entry.length:
        found.entries[i] = entry
        return True
    return False
