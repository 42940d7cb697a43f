"""An image file as a clone's source: its disk read through :class:`~recovery.diskimage.reader.ImageReader`.

Restoring an image is a clone whose source is the image: the same plan, stream, read-back and
filesystem checks on the target. The map is the image's own (what it holds, and its partitions as
the save found them), so nothing is probed in the image file itself; a damaged chunk is a read error
of the source, named by its offset.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from recovery import report
from recovery.diskimage import format as f
from recovery.diskimage.info import ImageDescription
from recovery.diskimage.reader import BadChunk, ImageReader
from recovery.disks import blockdev, identity, usedmap
from recovery.engine.clone.source import Source, check_source
from recovery.errors import ImageError, RefusedError, SourceReadError, UsageError
from recovery.protocol import schema
from recovery.protocol.messages import Identity, MapPart
from recovery.units import human_size


def is_image(path: str) -> bool:
    """Does ``path`` hold an image of this tool (a regular file that starts with its header's mark)?"""
    try:
        if not Path(path).is_file():
            return False
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO put there never blocks it
        try:
            return os.pread(fd, len(f.MAGIC), 0) == f.MAGIC
        finally:
            os.close(fd)
    except OSError:
        return False


def open_source(
    path: str, *, allow_mounted: bool, passphrase: bytes | None, rescue: bool = False, image_only: bool = False
) -> Source:
    """The source at ``path``: an image of this tool read through its index, else the disk or file itself
    (``image_only``: never that, whatever ``path`` names by the time it is opened)."""
    if not is_image(path):
        if image_only:
            raise RefusedError(f"{path} is not an image file (any more)")
        return Source(path, allow_mounted=allow_mounted)
    if rescue:
        raise UsageError(
            f"{path} is an image, not a failing disk: it is restored without --rescue",
            hint="check it with `recovery image verify` first",
        )
    return ImageSource(path, passphrase)


class ImageSource(Source):
    """Reads the disk an image holds (it never calls :class:`Source`'s opening: there is no device)."""

    def __init__(self, path: str, passphrase: bytes | None = None) -> None:
        check_source(path)
        self.reader = ImageReader(path, passphrase)
        self.path = os.path.realpath(path)
        self.size = self.reader.size
        self.manifest = self.reader.manifest
        self.fd = self.reader.fd
        self.bytes_read = 0
        self.identity = self._identity()

    def _identity(self) -> Identity:
        """The image file's own identity (its storage and its parents', so none is its own target), with the disk's
        size, partition-table fingerprint and sector size, and the saved disk's name."""
        saved = self.saved_from()
        return Identity(
            path=self.path,
            size=self.size,
            kind="file",
            host_id=identity.host_id(),
            fingerprint=identity.fingerprint_of(self.reader.read, self.size),
            model=f"image of {identity.describe(saved)}" if saved else "image",
            storage=self._storage(),
            sector_size=self.reader.header.sector_size,
        )

    def _storage(self) -> tuple[str, ...]:
        """The storage keys of the image file and, an increment's, of its parents: none of them is written."""
        keys = (k for r in self.reader.chain for k in identity.storage_keys(blockdev.inspect(r.path)))
        return tuple(dict.fromkeys(keys))

    def saved_from(self) -> Identity | None:
        """The disk the image was saved from, as its manifest says (None: it does not say)."""
        return saved_from(self.manifest)

    @property
    def mode(self) -> str:
        return "exact" if self.manifest.get("mode") == "exact" else "used"

    def rescued_words(self) -> str:
        """What a rescued source could not give when the image was saved, in one line ("" for an image
        of a healthy disk): its disk holds zeros there, and so will the disk it is restored to."""
        unreadable, ranges, hits = ImageDescription(self.reader.header, self.manifest, "").rescued()
        if not unreadable:
            return ""
        named = [name for h in hits for name in h["files"]]
        files = f"; files hit: {', '.join(named[:5])}" + (" and more" if len(named) > 5 else "") if named else ""
        return (
            f"the disk this image was saved from could not be read in {human_size(unreadable)} "
            f"({report.areas(ranges, 3)}): those areas hold zeros in the image and on the restored disk{files}"
        )

    def used_map(self, mode: str) -> usedmap.UsedMap:
        """What to copy: in used mode what the image holds (its chunks, zero ones too); in exact mode
        the whole disk (what it does not hold reads as zeros)."""
        parts = [p for p in (_field(MapPart, d) for d in self.manifest.get("parts") or ()) if p is not None]
        if mode == "exact":
            return usedmap.UsedMap(size=self.size, extents=[(0, self.size)], parts=parts)
        extents: list[tuple[int, int]] = []
        for e in self.reader.entries():
            if extents and extents[-1][0] + extents[-1][1] == e.offset:
                extents[-1] = (extents[-1][0], extents[-1][1] + e.length)
            else:
                extents.append((e.offset, e.length))
        return usedmap.UsedMap(size=self.size, extents=extents, parts=parts)

    def read_into(self, view: memoryview, offset: int) -> None:
        """Fill ``view`` from the image's disk at ``offset`` or raise :class:`SourceReadError`."""
        try:
            view[:] = self.reader.read(offset, len(view))
        except BadChunk as e:
            raise SourceReadError(
                f"the image {self.path} is damaged: {e.message}",
                hint="check it with `recovery image verify`; a copy of the image may be intact",
            ) from None
        except ImageError as e:
            raise SourceReadError(f"cannot read the image {self.path}: {e.message}") from None
        self.bytes_read += len(view)

    def close(self) -> None:
        self.reader.close()
        self.fd = -1


def saved_from(manifest: dict[str, Any]) -> Identity | None:
    """The disk an image was saved from, as its ``manifest`` says (None: it does not say)."""
    saved: Identity | None = _field(Identity, manifest.get("source"))
    return saved


def _field(cls: type, value: Any) -> Any:
    """``value`` from a manifest as a ``cls``, checked as a peer's message is; None if it does not fit."""
    if not isinstance(value, dict):
        return None
    try:
        return schema.from_json(cls, value)
    except schema.SchemaError:
        return None
