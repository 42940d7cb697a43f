"""Reading an image file: any byte of the disk in a few reads, and every chunk checked as it is read.

Opening reads the header, the footer, the manifest and the index once (checking their digests, seals
and order) and keeps in memory only the first offset of each index page (8 bytes per 64 chunks); a
read then finds its page (one pread, cached) and its chunk's record (one pread), opens and
decompresses it, and checks its BLAKE3 before a byte of it is handed out.
"""

from __future__ import annotations

import array
import bisect
import hmac
import itertools
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import blake3
import zstandard

from recovery.diskimage import format as f
from recovery.diskimage.seal import OVERHEAD, Sealer, chunk_aad, manifest_aad, page_aad, unwrap
from recovery.errors import ImageError, PassphraseError, UsageError

PAGE_BYTES = f.PAGE_ENTRIES * f.ENTRY_SIZE
PAGES_CACHED = 64
PAGE_DIGEST = 16  # bytes of each index page's BLAKE3 kept to check it when it is read again
CHUNKS_CACHED = 8


class OtherImage(ImageError):
    """The file under a parent's name holds another image than the one its increment names (by its header)."""


class BadChunk(ImageError):
    """A chunk whose stored bytes do not give its digest (or cannot be opened or decompressed)."""

    def __init__(self, entry: f.Entry, why: str) -> None:
        super().__init__(f"the chunk at byte {entry.offset} ({entry.length} bytes) is damaged: {why}")
        self.entry = entry


@dataclass(frozen=True)
class Opened:
    """What opening an image found: its header, footer and manifest."""

    header: f.Header
    footer: f.Footer
    manifest: dict[str, Any]


def open_image_fd(path: str) -> int:
    """The image file, opened read-only without following a link; a directory or any special file is refused
    before it is opened for reading (a parent's name in a crafted folder may be a FIFO or a device node,
    which opening alone may act on: a watchdog, a tape)."""
    try:
        held = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist") from None
    except OSError as e:
        raise UsageError(f"cannot open the image {path}: {e.strerror}") from None
    try:
        mode = os.fstat(held).st_mode
        if stat.S_ISLNK(mode):
            raise UsageError(f"cannot open the image {path}: a symbolic link (give the image itself)")
        if not stat.S_ISREG(mode):
            raise UsageError(f"{path} is not an image file (it is a directory, a device or a FIFO)")
        return os.open(f"/proc/self/fd/{held}", os.O_RDONLY | os.O_CLOEXEC)  # the very file checked
    except OSError as e:
        raise UsageError(f"cannot open the image {path}: {e.strerror}") from None
    finally:
        os.close(held)


def image_header(path: str) -> f.Header:
    """The header of the image at ``path`` (to know, before opening it, whether it is encrypted)."""
    fd = open_image_fd(path)
    try:
        raw = os.pread(fd, f.HEADER_SIZE, 0)
    except OSError as e:
        raise ImageError(f"cannot read {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    return f.decode_header(raw)


def _summary(entries: list[f.Entry]) -> tuple[bool, bool, int]:
    """A page of the index for SEEK_DATA/SEEK_HOLE: whether it holds data, whether all of it is data with
    no gap between its entries, and where its last entry ends."""
    data = [e for e in entries if e.codec is not f.Codec.ZERO]
    solid = len(data) == len(entries) and all(a.end == b.offset for a, b in itertools.pairwise(entries))
    return bool(data), solid, entries[-1].end


class ImageReader:
    def __init__(
        self,
        path: str,
        passphrase: bytes | None = None,
        *,
        fd: int | None = None,
        glance: int | None = None,
        below: tuple[bytes, ...] = (),
        image_id: bytes | None = None,
    ) -> None:
        """The image at ``path`` (or already open as ``fd``, which the reader then owns). ``glance``: only
        its header, footer and a manifest of at most that many bytes, the index not read (a folder's
        listing, whatever the image holds); such a reader reads no chunk. An increment's parent is opened
        too (not when glancing), by its name in the same folder; ``below``: the ids of the increments that
        led here (a chain is bounded, and never comes back to one of them); ``image_id``: the id the image
        must have (a parent's, as its increment names it), checked before its index or its parent is read."""
        self.path = path
        self.parent: ImageReader | None = None
        self.fd = open_image_fd(path) if fd is None else fd
        try:
            self.header = f.decode_header(self._pread(f.HEADER_SIZE, 0, "the header"))
            if image_id is not None and self.header.image_id != image_id:
                raise OtherImage(f"{path} holds another image (its id is not {image_id.hex()})")
            self.sealer = self._keys(passphrase)
            size = os.fstat(self.fd).st_size
            if size < f.HEADER_SIZE + f.FOOTER_SIZE:
                raise ImageError("the image is incomplete: it has no index (the save that made it did not finish)")
            self.footer = f.decode_footer(
                self._pread(f.FOOTER_SIZE, size - f.FOOTER_SIZE, "the footer"), self.header, size
            )
            self.manifest = self._manifest(glance or f.MAX_MANIFEST_JSON)
            self.page_first = array.array("Q")
            self.page_digests = bytearray()  # each index page's BLAKE3 (its first bytes), checked on each read
            self._summaries: list[tuple[bool, bool, int]] = []  # per page, for SEEK_DATA/SEEK_HOLE: see _jumps
            self._data_page = array.array("I")  # the first page at or after each holding data
            self._open_page_at = array.array("I")  # the first page at or after each where a hole may start
            self.root = self._walk_index() if glance is None else b""
            if glance is None and self.header.parent is not None:
                self.parent = self._open_parent(self.header.parent, below)
        except BaseException:
            os.close(self.fd)
            raise
        self._pages: OrderedDict[int, list[f.Entry]] = OrderedDict()
        self._chunks: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._local = threading.local()

    @property
    def size(self) -> int:
        return self.header.size

    @property
    def count(self) -> int:
        return self.footer.entries

    @property
    def chain(self) -> list[ImageReader]:
        """This image, then its parent, the parent's parent ... (one image for a full one)."""
        out: list[ImageReader] = [self]
        while out[-1].parent is not None:
            out.append(out[-1].parent)
        return out

    def close(self) -> None:
        if self.parent is not None:
            self.parent.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> ImageReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- opening ---

    def _keys(self, passphrase: bytes | None) -> Sealer | None:
        keys = self.header.keys
        if keys is None:
            return None
        if passphrase is None:
            raise PassphraseError(f"{self.path} is encrypted", hint="give its passphrase (--passphrase)")
        raw = self._pread(f.HEADER_SIZE, 0, "the header")
        return Sealer(unwrap(passphrase, keys, f.header_aad(raw)))

    def _manifest(self, limit: int = f.MAX_MANIFEST_JSON) -> dict[str, Any]:
        """The manifest, checked against the footer's digest, opened, at most ``limit`` bytes of JSON."""
        foot = self.footer
        if foot.manifest_len > limit:
            raise ImageError(f"the image's manifest is larger than {limit} bytes")
        stored = self._pread(foot.manifest_len, foot.manifest_pos, "the manifest")
        if blake3.blake3(stored).digest() != foot.manifest_digest:
            raise ImageError("the image's manifest is damaged (its digest does not match)")
        if self.sealer is not None:
            stored = self.sealer.open(stored, manifest_aad(self.header.image_id), "the image's manifest")
        try:
            if not 0 < zstandard.frame_content_size(stored) <= limit:
                raise ImageError(f"the image's manifest declares an impossible size (at most {limit} bytes)")
            body = zstandard.ZstdDecompressor().decompress(stored, max_output_size=limit)
        except zstandard.ZstdError:
            raise ImageError("the image's manifest cannot be decompressed") from None
        return f.decode_manifest(body)

    def _walk_index(self) -> bytes:
        """Read the whole index once: its digest, every entry's sanity and order, the root; keep each
        page's first offset."""
        foot = self.footer
        digest = blake3.blake3()
        records = blake3.blake3()
        end = 0
        for page, stored in enumerate(self._stored_pages()):
            digest.update(stored)
            self.page_digests += blake3.blake3(stored).digest(PAGE_DIGEST)
            entries = self._open_page(page, stored)
            self.page_first.append(entries[0].offset)
            self._summaries.append(_summary(entries))
            for e in entries:
                if e.offset < end:
                    raise ImageError(f"the image's index is out of order at byte {e.offset}")
                end = e.end
                records.update(f.encode_entry(e)[: f.RECORD_PREFIX])
        self._jumps()
        if digest.digest() != foot.index_digest:
            raise ImageError("the image's index is damaged (its digest does not match)")
        root = records.digest()
        expected = foot.root if self.sealer is None else bytes.fromhex(str(self.manifest.get("root", "")))
        if root != expected or (self.sealer is None and self.manifest.get("root") != root.hex()):
            raise ImageError("the image's index does not give its root digest: chunks were added, removed or changed")
        if self.manifest.get("chunks") != foot.entries:
            raise ImageError("the image's manifest and index disagree on the number of chunks")
        return root

    def _stored_pages(self) -> Iterator[bytes]:
        foot = self.footer
        step = PAGE_BYTES + (OVERHEAD if self.sealer else 0)
        total = f.index_length(foot.entries, self.sealer is not None)
        for at in range(0, total, step * 256):  # 256 pages per read
            chunk = self._pread(min(step * 256, total - at), foot.index_pos + at, "the index")
            for i in range(0, len(chunk), step):
                yield chunk[i : i + step]

    def _open_page(self, page: int, stored: bytes) -> list[f.Entry]:
        raw = stored
        if self.sealer is not None:
            aad = page_aad(self.header.image_id, page, self.footer.entries)
            raw = self.sealer.open(stored, aad, f"page {page} of the image's index")
        try:
            return list(f.decode_entries(raw, self.header, self.footer.data_end))
        except ImageError as e:
            raise ImageError(f"the image's index is damaged: {e.message}") from None

    def _open_parent(self, named: f.Parent, below: tuple[bytes, ...]) -> ImageReader:
        """The parent this increment names, from its folder: the very image it was made on (its id and
        root), not too deep a chain, never one of the increments that led here."""
        path = os.path.join(os.path.dirname(self.path), named.name)
        ids = (*below, self.header.image_id)
        if named.image_id in ids:
            raise ImageError(f"{self.path} is an increment of {path}, which is itself again: a chain that loops")
        if len(ids) >= f.MAX_CHAIN:
            raise ImageError(f"{self.path} is an increment at the end of a chain of more than {f.MAX_CHAIN} images")
        try:
            parent = ImageReader(path, below=ids, image_id=named.image_id)
        except OtherImage:
            raise self._other_parent(named, path) from None
        except PassphraseError:  # a passphrase would not help: an increment never builds on an encrypted image
            raise ImageError(
                f"{self.path} is an increment of {named.name}, which is encrypted: no increment is made of one"
            ) from None
        except UsageError as e:
            raise ImageError(
                f"{self.path} is an increment of {named.name}, which cannot be opened: {e.message}",
                hint="put its parent image back next to it, under that name",
            ) from None
        except ImageError as e:
            raise ImageError(
                f"{self.path} is an increment of {named.name}, which cannot be read: {e.message}"
            ) from None
        if parent.root != named.root:
            parent.close()
            raise self._other_parent(named, path)
        return parent

    def _other_parent(self, named: f.Parent, path: str) -> ImageError:
        """The error of a parent's name that holds another image than the increment's parent."""
        return ImageError(
            f"{self.path} is an increment of {named.name}, but {path} is another image now "
            "(its id or root digest is not the one the increment was made on)",
            hint="put the increment's own parent back under that name",
        )

    # --- reading ---

    def _indexed(self) -> None:
        if not self.root:
            raise ImageError(f"{self.path} was only glanced at: its index was not read")

    def entries(self) -> Iterator[f.Entry]:
        """Every entry, in disk order."""
        self._indexed()
        for page in range(len(self.page_first)):
            yield from self._page(page)

    def _page(self, page: int) -> list[f.Entry]:
        with self._lock:
            found = self._pages.get(page)
            if found is not None:
                self._pages.move_to_end(page)
                return found
        step = PAGE_BYTES + (OVERHEAD if self.sealer else 0)
        stored = self._pread(
            min(step, f.index_length(self.footer.entries, self.sealer is not None) - page * step),
            self.footer.index_pos + page * step,
            "the index",
        )
        held = self.page_digests[page * PAGE_DIGEST : (page + 1) * PAGE_DIGEST]
        if not hmac.compare_digest(blake3.blake3(stored).digest(PAGE_DIGEST), bytes(held)):
            raise ImageError(f"page {page} of the image's index changed since the image was opened")
        entries = self._open_page(page, stored)
        with self._lock:
            self._pages[page] = entries
            if len(self._pages) > PAGES_CACHED:
                self._pages.popitem(last=False)
        return entries

    def find(self, offset: int) -> f.Entry | None:
        """The chunk holding byte ``offset``, or None (a byte no chunk holds reads as zero)."""
        page = bisect.bisect_right(self.page_first, offset) - 1
        if page < 0:
            return None
        entries = self._page(page)
        i = bisect.bisect_right([e.offset for e in entries], offset) - 1
        if i >= 0 and entries[i].offset <= offset < entries[i].end:
            return entries[i]
        return None

    def following(self, offset: int) -> f.Entry | None:
        """The first chunk that starts after ``offset``."""
        page = max(0, bisect.bisect_right(self.page_first, offset) - 1)
        while page < len(self.page_first):
            for e in self._page(page):
                if e.offset > offset:
                    return e
            page += 1
        return None

    def next_data(self, offset: int) -> int | None:
        """The first byte at or after ``offset`` that a stored chunk holds (SEEK_DATA); None: only zeros
        follow (holes and zero chunks). Two index pages read at most."""
        self._indexed()
        first = max(0, bisect.bisect_right(self.page_first, offset) - 1)
        pages = [first]
        if first + 1 < len(self.page_first):
            pages.append(self._data_page[first + 1])
        for page in pages:
            for e in self._page(page) if page < len(self.page_first) else ():
                if e.end > offset and e.codec is not f.Codec.ZERO:
                    return max(offset, e.offset)
        return None

    def next_hole(self, offset: int) -> int:
        """The first byte at or after ``offset`` that no stored chunk holds (SEEK_HOLE): the disk's size
        when data runs to its end. Pages of data without a hole that run into the next are jumped over."""
        self._indexed()
        at = offset
        page = max(0, bisect.bisect_right(self.page_first, offset) - 1)
        while page < len(self.page_first):
            for e in self._page(page):
                if e.end <= at:
                    continue
                if e.offset > at or e.codec is f.Codec.ZERO:
                    return at
                at = e.end
            page += 1
            if page == len(self.page_first) or self.page_first[page] > at:
                break
            page = self._open_page_at[page]
            at = max(at, self.page_first[page])
        return min(at, self.size)

    def _jumps(self) -> None:
        """From each page's summary (holds data; all data without a gap or zero chunk; where it ends), the
        tables that let SEEK_DATA and SEEK_HOLE skip pages: the next page with data, and the next page that
        is not all data running into the following one (where a hole may begin)."""
        count = len(self._summaries)
        self._data_page = array.array("I", bytes(4 * count))
        self._open_page_at = array.array("I", bytes(4 * count))
        next_data, next_open = count, count - 1
        for page in range(count - 1, -1, -1):
            has_data, solid, end = self._summaries[page]
            if has_data:
                next_data = page
            runs_on = solid and page + 1 < count and end == self.page_first[page + 1]
            if not runs_on:
                next_open = page
            self._data_page[page] = next_data
            self._open_page_at[page] = next_open
        self._summaries = []

    def read(self, offset: int, length: int) -> bytes:
        """The disk's bytes [offset, offset+length): zeros where no chunk holds them."""
        self._indexed()
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ImageError(f"a read at {offset}+{length} lies outside the disk ({self.size} bytes)")
        out = bytearray(length)
        pos = offset
        while pos < offset + length:
            e = self.find(pos)
            if e is None:
                nxt = self.following(pos)
                pos = min(offset + length, nxt.offset if nxt else offset + length)
                continue
            stop = min(e.end, offset + length)
            if e.codec is not f.Codec.ZERO:
                data = self.chunk(e)
                out[pos - offset : stop - offset] = data[pos - e.offset : stop - e.offset]
            pos = stop
        return bytes(out)

    def chunk(self, e: f.Entry) -> bytes:
        """One chunk's bytes, checked against its digest (cached: reads of one chunk come together)."""
        with self._lock:
            found = self._chunks.get(e.offset)
            if found is not None:
                self._chunks.move_to_end(e.offset)
                return found
        data = self.decode(e)
        with self._lock:
            self._chunks[e.offset] = data
            if len(self._chunks) > CHUNKS_CACHED:
                self._chunks.popitem(last=False)
        return data

    def decode(self, e: f.Entry) -> bytes:
        """Read, open, decompress and check one chunk (any thread); BadChunk if it is not what the index says."""
        if e.codec is f.Codec.ZERO:
            return bytes(e.length)
        if e.codec is f.Codec.PARENT:
            return self._from_parent(e)
        try:
            raw = self._pread(f.RECORD_SIZE + e.stored, e.position, f"the chunk at byte {e.offset}")
        except ImageError as err:
            raise BadChunk(e, err.message) from None
        try:
            record = f.decode_record(raw, self.header)
        except ImageError as err:
            raise BadChunk(e, err.message) from None
        if (record.offset, record.length, record.codec, record.stored) != (e.offset, e.length, e.codec, e.stored):
            raise BadChunk(e, "its record does not match the index")
        body = memoryview(raw)[f.RECORD_SIZE :]
        if self.sealer is not None:
            try:
                body = memoryview(
                    self.sealer.open(body, chunk_aad(self.header.image_id, e.offset, e.length, e.codec), "it")
                )
            except ImageError as err:
                raise BadChunk(e, err.message) from None
        data = self._decompress(e, body) if e.codec is f.Codec.ZSTD else bytes(body)
        if len(data) != e.length or blake3.blake3(data).digest() != e.digest:
            raise BadChunk(e, "its bytes do not give its BLAKE3")
        return data

    def _from_parent(self, e: f.Entry) -> bytes:
        """A chunk the parent holds: read (and checked) by the parent's reader, then checked against this
        image's entry (the source's digest when the increment was saved): the parent's entry must have
        that digest, and the parent checks the bytes give it."""
        if self.parent is None:
            raise BadChunk(e, "its image's parent was not opened")
        held = self.parent.find(e.offset)
        if held is None or (held.offset, held.length) != (e.offset, e.length):
            raise BadChunk(e, f"the parent image {self.parent.path} holds no such chunk")
        if not hmac.compare_digest(held.digest, e.digest):  # the parent checks its bytes give held.digest
            raise BadChunk(e, f"the parent image {self.parent.path} holds other bytes for it")
        try:
            return self.parent.decode(held)
        except BadChunk as bad:
            raise BadChunk(e, f"in the parent image {self.parent.path}: {bad.message}") from None

    def _decompress(self, e: f.Entry, body: memoryview) -> bytes:
        dctx = getattr(self._local, "dctx", None)
        if dctx is None:
            dctx = self._local.dctx = zstandard.ZstdDecompressor()
        try:
            if zstandard.frame_content_size(body) != e.length:  # checked first: it decides the allocation
                raise BadChunk(e, f"its compressed bytes do not declare {e.length} bytes")
            return bytes(dctx.decompress(body, max_output_size=e.length))
        except zstandard.ZstdError as err:
            raise BadChunk(e, f"it cannot be decompressed ({err})") from None

    def _pread(self, n: int, at: int, what: str) -> bytes:
        try:
            data = os.pread(self.fd, n, at)
        except OSError as e:
            raise ImageError(f"cannot read {what} of {self.path}: {e.strerror}") from None
        if len(data) != n:
            raise ImageError(f"{what} of {self.path} is cut short (the file ends early)")
        return data
