"""An image file as the receiver's target: each chunk stored compressed at its offset (recovery.diskimage).

The receiver's workers make each chunk's stored form (:meth:`ImageTarget.stored_form`: the sender's
zstd bytes as they came, else compressed here, sealed when the image is encrypted) and its writing
thread appends it (:meth:`ImageTarget.put`). After the stream the index, the manifest and the footer
follow (:meth:`ImageTarget.seal`); only then is the image whole, and the read-back reads it through
:class:`~recovery.diskimage.reader.ImageReader` as any later reader would.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import blake3
import zstandard

from recovery import SOFTWARE, events
from recovery.diskimage import format as f
from recovery.diskimage.appender import STAGE
from recovery.diskimage.reader import ImageReader
from recovery.diskimage.scan import Scanned, scan, unfinished
from recovery.diskimage.seal import Sealer
from recovery.diskimage.verify import check_image
from recovery.diskimage.writer import STORE_LEVEL, ImageWriter, new_header, stored_form
from recovery.engine.clone.framelist import FrameList
from recovery.engine.clone.readback import ReadbackResult
from recovery.engine.clone.target import Target
from recovery.engine.rescue import fsnames
from recovery.errors import ImageError, PassphraseError, RefusedError, TargetWriteError, VerificationError
from recovery.protocol import messages as m
from recovery.protocol.frames import zero_digest
from recovery.units import human_size

LEFT_FOR_OTHERS = 16 << 20  # the free space (for other users than root) a save never takes


class ImageTarget(Target):
    stores_chunks = True
    holds_edges = False  # an image without its footer is plainly incomplete: nothing to hold back

    def __init__(
        self,
        path: str,
        chunk_size: int,
        sector_size: int,
        passphrase: bytes | None = None,
        *,
        no_links: bool = False,
    ) -> None:
        super().__init__(path, no_links=no_links)
        self.chunk_size, self.sector_size = chunk_size, sector_size
        if self.is_block:
            self.unlock()
            self.close()
            raise RefusedError(
                f"{path} is a disk: an image is saved into a file", hint="give a file path, or write the disk itself"
            )
        self.passphrase = passphrase
        self.writer: ImageWriter | None = None
        self.sealer: Sealer | None = None
        self.root: str | None = None
        self.heading: dict[str, Any] = {}  # the save's plan, its first record (what a resume is judged by)
        self.scanned: Scanned | None = None  # what an interrupted save left in the file
        self.parent: f.Parent | None = None  # an increment's: the earlier image its SAME frames name
        self._local = threading.local()

    @property
    def writer_(self) -> ImageWriter:
        if self.writer is None:
            raise TargetWriteError(f"{self.path} was not prepared as an image")
        return self.writer

    def prepare(self, size: int) -> None:
        """An empty image of a ``size``-byte disk: its header and its plan record."""
        header, self.sealer = new_header(size, self.chunk_size, self.sector_size, self.passphrase, self.parent)
        self.writer = ImageWriter(self.fd, self.path, header, self.sealer, self._direct())
        self.writer.start(self.heading)
        self.size = size

    def holds_unfinished(self) -> bool:
        """Whether the file holds an unfinished image (usable or not): a save that must not be lost unasked."""
        try:
            return unfinished(self.fd)
        except OSError:
            return True

    def unfinished(self, sink: events.EventSink) -> Scanned | None:
        """What an interrupted save left in this file (None: nothing, or nothing usable)."""
        if not unfinished(self.fd):
            return None
        try:
            self.scanned = scan(self.fd, self.passphrase)
        except (ImageError, PassphraseError, OSError) as e:
            sink(events.Warning(f"{self.path} holds an unfinished image that cannot be resumed: {e}"))
            return None
        return self.scanned

    def resume_at(self, seq: int) -> None:
        """Go on writing after the first ``seq`` chunks the interrupted save left."""
        found = self.scanned
        assert found is not None
        self.sealer = found.sealer
        self.writer = ImageWriter(self.fd, self.path, found.header, found.sealer, self._direct())
        self.writer.resume(found, seq)
        self.size = found.header.size

    @property
    def resumable(self) -> bool:
        """Part of the clone is in the file: keep it for a resume."""
        return self.writer is not None and len(self.writer.offsets) > 0

    def stored_form(self, offset: int, data: memoryview, compressed: bytes | None) -> tuple[f.Codec, bytes]:
        """One chunk as the image keeps it (any thread)."""
        cctx = getattr(self._local, "cctx", None)
        if cctx is None:
            cctx = self._local.cctx = zstandard.ZstdCompressor(level=STORE_LEVEL)
        return stored_form(cctx, self.writer_.header, self.sealer, offset, data, compressed)

    def put(self, offset: int, length: int, digest: bytes, codec: f.Codec, stored: bytes) -> None:
        self._check_range(offset, length)
        self._keep_room(len(stored))
        self.writer_.put(offset, length, digest, codec, stored)
        self.bytes_written += len(stored)

    def write(self, data: memoryview | bytes, offset: int, *, aligned_buffer: bool = False) -> None:
        """A chunk that did not come through the workers: its stored form made here."""
        view = memoryview(data)
        codec, stored = self.stored_form(offset, view, None)
        self.put(offset, len(view), blake3.blake3(view).digest(), codec, stored)

    def _keep_room(self, more: int) -> None:
        """Stop before the image's filesystem is full: a save never takes the space other programs need
        (the system's own, when the folder is on it), nor the blocks ext4 keeps for root. ``more``: the
        bytes about to be stored (besides what the writer gathers before it writes)."""
        vfs = os.fstatvfs(self.fd)
        left = vfs.f_bavail * vfs.f_frsize
        if left < LEFT_FOR_OTHERS + more + STAGE:
            raise TargetWriteError(
                f"the filesystem of {self.path} is nearly full ({human_size(left)} left for other programs): "
                "the save stopped there",
                hint="free space on that drive or save to another one; the same save then goes on where it stopped",
            )

    def zero(self, offset: int, length: int) -> None:
        self._check_range(offset, length)
        self._keep_room(f.RECORD_SIZE)
        self.writer_.zero(offset, length)

    def same(self, offset: int, length: int, digest: bytes) -> None:
        """A SAME frame: the parent image holds the chunk as the source has it (``digest``), so an
        increment's entry names the parent's (a chunk of zeros is a zero chunk)."""
        self._check_range(offset, length)
        self._keep_room(f.RECORD_SIZE)
        if digest == zero_digest(length):
            self.writer_.zero(offset, length)
        else:
            self.writer_.parent(offset, length, digest)

    def flush(self) -> None:
        self.writer_.flush()

    def seal(self, manifest: dict[str, Any]) -> str:
        """Index, manifest (with the format's version, as the header has it) and footer: the image is
        whole. Its root digest (hex)."""
        header = self.writer_.header
        version = {"version": f"{header.major}.{header.minor}"}
        self.root = self.writer_.finish({**manifest, **version}, room=self._keep_room)
        return self.root

    def open_reader(self) -> ImageReader:
        """The image as a reader sees it, from the very file written."""
        fd = os.open(f"/proc/self/fd/{self.fd}", os.O_RDONLY | os.O_CLOEXEC)
        return ImageReader(self.path, self.passphrase, fd=fd)

    def finish(self) -> None:
        """Nothing for the kernel to re-read: an image file has no partition table of its own."""

    def close(self) -> None:
        try:
            if self.writer is not None:
                self.writer.close()
        except BufferError:
            pass  # its writing thread, stopped on an error, still holds the buffer: the collector frees it
        finally:
            super().close()


def image_manifest(plan: m.Plan, done: m.Done, source_host: str, passphrase: bytes | None) -> dict[str, Any]:
    """What an image says of itself: where its disk came from, what was copied and why, its digests."""
    return {
        "format": "usb4-recovery image",  # and its version, the header's (ImageTarget.seal)
        "tool": SOFTWARE,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mode": plan.mode,
        "size": plan.size,
        "chunk_size": plan.chunk_size,
        "source": {**dataclasses.asdict(plan.source), "host": source_host},
        "parts": [dataclasses.asdict(p) for p in plan.map.parts],
        "map": {
            "extents": plan.map.extents,
            "bytes": plan.map.bytes,
            "digest": plan.map.digest,
            "skipped": plan.map.skipped,
        },
        "disk_digest": done.source_digest,
        "rescue": (
            {
                "unreadable": done.unreadable,
                "ranges": [[r.offset, r.length] for r in done.unreadable_ranges],
                "files_hit": fsnames.from_wire(done.files_hit),
            }
            if plan.rescue
            else None
        ),
        "encrypted": passphrase is not None,
    }


def read_back(
    target: ImageTarget,
    frames: FrameList,
    mode: str,
    on_progress: Callable[[int, int], None],
    should_stop: Callable[[], bool],
) -> ReadbackResult:
    """The image as any later reader opens it (header, index, manifest, root), then every chunk read
    back past the cache, decompressed and hashed; exact mode: the disk's whole BLAKE3 too."""
    start = time.monotonic()
    target.drop_cache()
    try:
        with target.open_reader() as image:
            if image.root.hex() != frames.list_digest():
                return ReadbackResult(_differing(image, frames), None, time.monotonic() - start)
            checked = check_image(image, whole=mode == "exact", on_progress=on_progress, should_stop=should_stop)
    except ImageError as e:
        raise VerificationError(f"the image {target.path} cannot be read back: {e.message}") from None
    bad = [(b.entry.offset, b.entry.length) for b in checked.bad]
    return ReadbackResult(bad, checked.disk_digest, time.monotonic() - start)


def _differing(image: ImageReader, frames: FrameList) -> list[tuple[int, int]]:
    """The chunks where the image's index and the frames received disagree."""
    held = {(e.offset, e.length, e.digest) for e in image.entries()}
    return [(o, n) for o, n, d, _ in frames if (o, n, d) not in held] or [(0, image.size)]
