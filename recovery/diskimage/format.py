"""The image file's parts as bytes (pure: no I/O): header, chunk records, index, footer, manifest.

docs/image-format.md is the specification; this module is its one implementation. Every decoder
takes bytes that may come from a damaged or hostile file and either returns a value whose fields
are in range or raises :class:`~recovery.errors.ImageError` naming what is wrong. Nothing here
allocates more than the bytes it was given.
"""

from __future__ import annotations

import enum
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import blake3

from recovery.errors import ImageError
from recovery.protocol.limits import MAX_CHUNK_SIZE, MAX_FRAMES

MAJOR, MINOR = 1, 0  # a full image's version (and what an encrypted image's seals bind)
INCREMENT_MAJOR = 2  # an increment's: a reader of 1.x would misread its parent's chunks
MAX_CHAIN = 16  # images in a chain at most: an increment, its parent, the parent's parent ...
HEADER_SIZE = 4096
MAGIC = b"U4RIMAGE"
RECORD_MAGIC = b"U4CK"
FOOTER_MAGIC = b"U4RFOOT1"
ENTRY_SIZE = 64
PAGE_ENTRIES = 64  # entries per index page: what one random read fetches (and what one seal covers)
MAX_MANIFEST = 64 << 20  # a manifest's stored bytes, at most
MAX_MANIFEST_JSON = 256 << 20  # and once decompressed
DIGEST_SIZE = 32


class Codec(enum.IntEnum):
    RAW = 0
    ZSTD = 1
    ZERO = 2  # the chunk is all zeros: nothing is stored (its record says so, for a resume)
    META = 3  # a record only, the first: the save's plan as JSON (what a resume is judged by)
    PARENT = 4  # an increment's: the chunk is its parent image's (nothing stored; the digest is kept)


MAX_META = 64 << 10  # a META record's stored bytes, at most


class Flag(enum.IntFlag):
    NONE = 0
    ENCRYPTED = 1
    INCREMENT = 2  # the header names a parent image (format 2.0)


# --- header ---

_HEADER = struct.Struct("<8sHHI16sQIIQ")  # magic, major, minor, flags, image id, size, chunk size, sector, created
_KEYBLOCK = struct.Struct("<BBBB16s12s48s")  # kdf, log2 n, r, p, salt, nonce, wrapped key + tag
_HEADER_CHECKED = HEADER_SIZE - DIGEST_SIZE  # the header's last 32 bytes are BLAKE3 of those before


@dataclass(frozen=True)
class KeyBlock:
    """How the data key is derived from a passphrase and unwrapped (encrypted images)."""

    log2_n: int
    r: int
    p: int
    salt: bytes
    nonce: bytes
    wrapped: bytes  # the data key sealed with the passphrase's key: 32 bytes + 16 of tag


KDF_SCRYPT = 1

_PARENT = struct.Struct("<16s32sH")  # the parent's image id, its root, its name's length (the name follows)
_PARENT_AT = _HEADER.size + _KEYBLOCK.size
MAX_PARENT_NAME = 255  # bytes of a file name


@dataclass(frozen=True)
class Parent:
    """The image an increment is of: its id and root (what it must still have), its file's bare name."""

    image_id: bytes
    root: bytes
    name: str


def parent_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a parent image (one plain file name in the increment's folder), or None."""
    if not name or name in (".", "..") or "/" in name or not name.isprintable():
        return "is not a plain file name in the image's folder"
    if len(name.encode()) > MAX_PARENT_NAME:
        return f"is longer than {MAX_PARENT_NAME} bytes"
    return None


@dataclass(frozen=True)
class Header:
    image_id: bytes
    size: int  # the disk's size in bytes
    chunk_size: int
    sector_size: int  # the source's logical sector size
    created: int  # unix seconds
    flags: Flag = Flag.NONE
    keys: KeyBlock | None = None
    major: int = MAJOR
    minor: int = MINOR
    parent: Parent | None = None  # an increment's (flag INCREMENT, major 2)

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & Flag.ENCRYPTED)


def encode_header(h: Header) -> bytes:
    out = bytearray(HEADER_SIZE)
    _HEADER.pack_into(
        out, 0, MAGIC, h.major, h.minor, int(h.flags), h.image_id, h.size, h.chunk_size, h.sector_size, h.created
    )
    if h.keys is not None:
        k = h.keys
        _KEYBLOCK.pack_into(out, _HEADER.size, KDF_SCRYPT, k.log2_n, k.r, k.p, k.salt, k.nonce, k.wrapped)
    if h.parent is not None:
        name = h.parent.name.encode()
        _PARENT.pack_into(out, _PARENT_AT, h.parent.image_id, h.parent.root, len(name))
        out[_PARENT_AT + _PARENT.size : _PARENT_AT + _PARENT.size + len(name)] = name
    out[_HEADER_CHECKED:] = blake3.blake3(out[:_HEADER_CHECKED]).digest()
    return bytes(out)


def header_aad(raw: bytes) -> bytes:
    """What a key block's seal binds: the header's fields before it (so none can be changed)."""
    return raw[: _HEADER.size]


def decode_header(raw: bytes) -> Header:
    if len(raw) < HEADER_SIZE:
        raise ImageError("not an image of this tool: the file is shorter than an image's header")
    if raw[:8] != MAGIC:
        raise ImageError("not an image of this tool (its first bytes are not an image header)")
    _, major, minor, flags, image_id, size, chunk, sector, created = _HEADER.unpack_from(raw)
    if major > INCREMENT_MAJOR:
        raise ImageError(
            f"the image is of format {major}.{minor}, made by a newer version of this tool "
            f"(this one reads up to {INCREMENT_MAJOR}.x)",
            hint="use a newer usb4-recovery to read it",
        )
    if blake3.blake3(raw[:_HEADER_CHECKED]).digest() != raw[_HEADER_CHECKED:HEADER_SIZE]:
        raise ImageError("the image's header is damaged (its checksum does not match)")
    if flags & ~int(Flag.ENCRYPTED | Flag.INCREMENT):
        raise ImageError(f"the image's header has flags this version does not know ({flags:#x})")
    _check_geometry(size, chunk, sector)
    parent = _decode_parent(raw, flags, major)
    keys = None
    if flags & Flag.ENCRYPTED:
        kdf, log2_n, r, p, salt, nonce, wrapped = _KEYBLOCK.unpack_from(raw, _HEADER.size)
        if kdf != KDF_SCRYPT or not (14 <= log2_n <= 22) or not (1 <= r <= 32) or not (1 <= p <= 16):
            raise ImageError("the image's key block names a key derivation this version does not accept")
        keys = KeyBlock(log2_n, r, p, salt, nonce, wrapped)
    return Header(image_id, size, chunk, sector, created, Flag(flags), keys, major, minor, parent)


def _decode_parent(raw: bytes, flags: int, major: int) -> Parent | None:
    """The parent an increment's header names (None for a full image), its name checked."""
    increment = bool(flags & Flag.INCREMENT)
    if increment != (major == INCREMENT_MAJOR):
        raise ImageError(f"the image's header is inconsistent (format {major}.x with flags {flags:#x})")
    if not increment:
        return None
    if flags & Flag.ENCRYPTED:
        raise ImageError("the image's header names a parent and encryption: this version makes no such image")
    image_id, root, length = _PARENT.unpack_from(raw, _PARENT_AT)
    start = _PARENT_AT + _PARENT.size
    try:
        name = raw[start : start + length].decode("utf-8") if length <= MAX_PARENT_NAME else ""
    except UnicodeDecodeError:
        name = ""
    why = parent_name_problem(name)
    if why:
        said = _shown_name(raw[start : start + min(length, 64)])
        raise ImageError(f"the image's header names its parent image by {said}, which {why}")
    return Parent(image_id, root, name)


def _shown_name(raw: bytes) -> str:
    """Bytes of a name from a file, as they may be printed."""
    return repr(raw.decode("utf-8", "replace"))[:80]


def _check_geometry(size: int, chunk: int, sector: int) -> None:
    if not 0 < size < 1 << 56:
        raise ImageError(f"the image's header gives an impossible disk size ({size})")
    if chunk <= 0 or chunk > MAX_CHUNK_SIZE or chunk % 4096:
        raise ImageError(f"the image's header gives an impossible chunk size ({chunk})")
    if sector not in (512, 1024, 2048, 4096):
        raise ImageError(f"the image's header gives an impossible sector size ({sector})")
    if -(-size // chunk) > MAX_FRAMES:
        raise ImageError("the image's header describes more chunks than this version handles")


# --- chunk records (the data area) ---

_RECORD = struct.Struct("<4sB3xQQI4x32s")  # magic, codec, offset, length, stored length, digest
RECORD_SIZE = _RECORD.size


@dataclass(frozen=True)
class RecordHeader:
    codec: Codec
    offset: int
    length: int
    stored: int  # bytes that follow the record header
    digest: bytes  # BLAKE3 of the chunk's bytes; zeros in an encrypted image (the sealed index holds it)


def encode_record(r: RecordHeader) -> bytes:
    return _RECORD.pack(RECORD_MAGIC, r.codec, r.offset, r.length, r.stored, r.digest)


def decode_record(raw: bytes | memoryview, header: Header) -> RecordHeader:
    """A record header of ``header``'s image, or ImageError (a torn or damaged record)."""
    if len(raw) < RECORD_SIZE:
        raise ImageError("a chunk record is cut short")
    magic, codec, offset, length, stored, digest = _RECORD.unpack_from(raw)
    if magic != RECORD_MAGIC:
        raise ImageError("a chunk record's marker is missing")
    if codec not in tuple(Codec):
        raise ImageError(f"a chunk record names an unknown codec ({codec})")
    if codec == Codec.META:
        if offset or length or not 0 < stored <= MAX_META:
            raise ImageError("the image's plan record is malformed")
        return RecordHeader(Codec.META, 0, 0, stored, digest)
    _check_chunk(offset, length, header)
    if codec == Codec.PARENT and header.parent is None:
        raise ImageError(f"a chunk record at byte {offset} names a parent image this image does not have")
    if stored > max_stored(length, header) or (codec in (Codec.ZERO, Codec.PARENT) and stored):
        raise ImageError(f"the chunk at byte {offset} claims {stored} stored bytes, more than it may hold")
    return RecordHeader(Codec(codec), offset, length, stored, digest)


def max_stored(length: int, header: Header) -> int:
    """The most bytes a chunk of ``length`` may take in the file (zstd's worst case, a seal's tag)."""
    return length + (length >> 7) + 1024 + (28 if header.encrypted else 0)


def _check_chunk(offset: int, length: int, header: Header) -> None:
    if length <= 0 or length > header.chunk_size or offset < 0 or offset + length > header.size:
        raise ImageError(f"a chunk lies outside the disk (bytes {offset}..{offset + length})")
    if offset // header.chunk_size != (offset + length - 1) // header.chunk_size:
        raise ImageError(f"a chunk crosses the image's grid (bytes {offset}..{offset + length})")


# --- the index ---

_ENTRY = struct.Struct("<QQ32sQIB3x")  # offset, length, digest, position, stored length, codec
RECORD_PREFIX = 48  # an entry's first bytes: offset, length, digest, as the clone's frame list records them


@dataclass(frozen=True, slots=True)
class Entry:
    offset: int
    length: int
    digest: bytes
    position: int  # where the chunk's record starts in the file (0 for ZERO)
    stored: int
    codec: Codec

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass
class Totals:
    """What a run of entries holds: chunks, the disk's bytes as data and as zeros, the stored bytes."""

    chunks: int = 0
    data_bytes: int = 0
    zero_bytes: int = 0
    stored_bytes: int = 0
    parent_bytes: int = 0  # an increment's: of the data bytes, those its parent holds

    def add(self, e: Entry) -> None:
        self.chunks += 1
        if e.codec is Codec.ZERO:
            self.zero_bytes += e.length
        else:
            if e.codec is Codec.PARENT:
                self.parent_bytes += e.length
            self.data_bytes += e.length
            self.stored_bytes += e.stored


def encode_entry(e: Entry) -> bytes:
    return _ENTRY.pack(e.offset, e.length, e.digest, e.position, e.stored, e.codec)


def decode_entries(raw: bytes | memoryview, header: Header, data_end: int) -> Iterator[Entry]:
    """Entries of one index page, each checked against the header and the data area's end."""
    if len(raw) % ENTRY_SIZE:
        raise ImageError("the image's index is cut short")
    codecs = (Codec.RAW, Codec.ZSTD, Codec.ZERO) + ((Codec.PARENT,) if header.parent else ())  # never META
    for offset, length, digest, position, stored, codec in _ENTRY.iter_unpack(raw):
        if codec not in codecs:
            raise ImageError(f"the index names an unknown codec ({codec}) for the chunk at byte {offset}")
        _check_chunk(offset, length, header)
        if codec in (Codec.ZERO, Codec.PARENT):
            if position or stored:
                raise ImageError(f"the index stores bytes for the zero or parent's chunk at byte {offset}")
        elif (
            position < HEADER_SIZE or stored > max_stored(length, header) or position + RECORD_SIZE + stored > data_end
        ):
            raise ImageError(f"the index places the chunk at byte {offset} outside the image's data")
        yield Entry(offset, length, digest, position, stored, Codec(codec))


# --- the footer ---

_FOOTER = struct.Struct("<8s16sQQQQQ32s32s32s")
# magic, image id, data end, index position, entries, manifest position, manifest length,
# index digest, manifest digest, root
FOOTER_SIZE = _FOOTER.size + DIGEST_SIZE  # and BLAKE3 of the fields


@dataclass(frozen=True)
class Footer:
    image_id: bytes
    data_end: int  # where the chunk records end (and the index begins)
    index_pos: int
    entries: int
    manifest_pos: int
    manifest_len: int
    index_digest: bytes  # BLAKE3 of the index's stored bytes
    manifest_digest: bytes  # BLAKE3 of the manifest's stored bytes
    root: bytes  # the list digest of the entries (zeros in an encrypted image: the manifest has it)


def encode_footer(f: Footer) -> bytes:
    body = _FOOTER.pack(
        FOOTER_MAGIC,
        f.image_id,
        f.data_end,
        f.index_pos,
        f.entries,
        f.manifest_pos,
        f.manifest_len,
        f.index_digest,
        f.manifest_digest,
        f.root,
    )
    return body + blake3.blake3(body).digest()


def index_length(entries: int, encrypted: bool) -> int:
    """The index's stored bytes: entries, in sealed pages when encrypted (nonce + tag per page)."""
    if not encrypted:
        return entries * ENTRY_SIZE
    pages = -(-entries // PAGE_ENTRIES)
    return entries * ENTRY_SIZE + pages * 28


def decode_footer(raw: bytes, header: Header, file_size: int) -> Footer:
    """The footer at the end of a file of ``file_size`` bytes; ImageError if there is none (the save
    did not finish) or it does not fit the file."""
    if len(raw) != FOOTER_SIZE or raw[:8] != FOOTER_MAGIC:
        raise ImageError(
            "the image is incomplete: it has no index (the save that made it did not finish)",
            hint="run the same save again to resume it, or save anew",
        )
    body = raw[: _FOOTER.size]
    if blake3.blake3(body).digest() != raw[_FOOTER.size :]:
        raise ImageError("the image's footer is damaged (its checksum does not match)")
    _, image_id, data_end, index_pos, entries, m_pos, m_len, i_digest, m_digest, root = _FOOTER.unpack(body)
    if image_id != header.image_id:
        raise ImageError("the image's footer belongs to another image (its id differs from the header's)")
    end = file_size - FOOTER_SIZE
    if not (
        HEADER_SIZE <= data_end == index_pos
        and entries <= MAX_FRAMES
        and index_pos + index_length(entries, header.encrypted) == m_pos
        and m_pos + m_len == end
        and 0 < m_len <= MAX_MANIFEST
    ):
        raise ImageError("the image's footer does not fit the file (it was cut short or joined to another)")
    return Footer(image_id, data_end, index_pos, entries, m_pos, m_len, i_digest, m_digest, root)


# --- the manifest ---


def encode_manifest(manifest: dict[str, Any]) -> bytes:
    """The manifest as UTF-8 JSON (compressed and, if so, sealed by the writer)."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def decode_manifest(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ImageError(f"the image's manifest is not readable ({type(e).__name__})") from None
    if not isinstance(value, dict) or value.get("format") != "usb4-recovery image":
        raise ImageError("the image's manifest does not describe an image of this tool")
    return value


ROOT_BATCH = 4096  # entries whose prefixes are gathered at once (a 2 TB image has half a million)


def list_digest(entries: bytes | bytearray | memoryview) -> bytes:
    """The root of encoded ``entries`` (the index, in disk order): BLAKE3 of each entry's first
    :data:`RECORD_PREFIX` bytes, the same number a clone of the same frames calls its list digest.
    Gathered a batch at a time, so the memory it takes does not grow with the image."""
    h = blake3.blake3()
    view = memoryview(entries)
    step = ROOT_BATCH * ENTRY_SIZE
    for at in range(0, len(view), step):
        batch = view[at : at + step]
        h.update(b"".join(batch[i : i + RECORD_PREFIX] for i in range(0, len(batch), ENTRY_SIZE)))
    return h.digest()
