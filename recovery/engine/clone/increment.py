"""A save next to an earlier image of the same disk: an increment that stores only what changed.

The receiver looks in the new image's folder for the newest complete image of the same source and
layout (its manifest: the disk's hardware, mode, size, chunk size), offers that parent's chunk digests
as a delta (docs/protocol.md, *Cloning again*), and the image target records each SAME frame as the
parent's chunk (docs/image-format.md, *Increments*). The parent is only read, never changed.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

from recovery import events
from recovery.diskimage import format as f
from recovery.diskimage.reader import ImageReader, image_header
from recovery.engine.clone.framelist import FrameList
from recovery.engine.clone.imagesource import is_image, saved_from
from recovery.engine.resume import journal
from recovery.errors import RecoveryError, RefusedError
from recovery.protocol import messages as m
from recovery.protocol.frames import Kind

MAX_SCANNED = 4096  # directory entries looked at
GLANCE = 1 << 20  # bytes of a candidate's manifest read to judge it, at most
MAX_TRIED = 4  # candidates opened whole (each its index and chain), at most: then the save is a full image


@dataclass(frozen=True)
class ParentImage:
    """The image an increment is saved on: what its header names, and the digests offered of it."""

    named: f.Parent
    offered: FrameList
    offer: m.DeltaOffer


def find_parent(path: str, fd: int, plan: m.Plan, sink: events.EventSink) -> ParentImage | None:
    """The newest complete image of ``plan``'s source and layout in the folder of ``path`` (the new image,
    open as ``fd``: never itself), its chunks' digests to offer; None when there is none to build on among
    the :data:`MAX_TRIED` newest (a crafted folder cannot make a save open its whole folder, chains and all)."""
    folder = os.path.dirname(os.path.abspath(path))
    own = os.fstat(fd)
    found: list[tuple[str, str]] = []  # (created, name)
    try:
        with os.scandir(folder) as listing:
            for entry in itertools.islice(listing, MAX_SCANNED):
                created = _same_clone(entry, (own.st_dev, own.st_ino), plan)
                if created is not None:
                    found.append((created, entry.name))
    except OSError:
        return None
    for created, name in sorted(found, reverse=True)[:MAX_TRIED]:
        parent = _opened(os.path.join(folder, name), created, sink)
        if parent is not None:
            return parent
    return None


def dependents(path: str, fd: int) -> list[str]:
    """The increments in the folder of ``path`` (open as ``fd``) whose parent is the image that file holds
    now: replacing it would leave them unreadable. Their headers only are read."""
    try:
        held = f.decode_header(os.pread(fd, f.HEADER_SIZE, 0)).image_id
        folder = os.path.dirname(os.path.abspath(path))
        with os.scandir(folder) as listing:
            entries = list(itertools.islice(listing, MAX_SCANNED))
    except (RecoveryError, OSError):
        return []
    return sorted(e.name for e in entries if _parent_id(e) == held)


def refuse_replacing_a_parent(path: str, fd: int, hint: str) -> None:
    """Refused when the file at ``path`` (open as ``fd``) is an image that increments of its folder build on:
    replacing it (a save, an export, even with --yes) would leave them unreadable."""
    children = dependents(path, fd)
    if children:
        raise RefusedError(
            f"{path} is the parent of {', '.join(children[:3])}: replacing it would leave "
            f"{'them' if len(children) > 1 else 'it'} unreadable",
            hint=hint,
        )


def _parent_id(entry: os.DirEntry[str]) -> bytes | None:
    """The image id of the parent the image ``entry`` is an increment of (None: not an increment)."""
    try:
        if not entry.is_file(follow_symlinks=False) or not is_image(entry.path):
            return None
        named = image_header(entry.path).parent
    except (RecoveryError, OSError):
        return None
    return named.image_id if named is not None else None


def _same_clone(entry: os.DirEntry[str], own: tuple[int, int], plan: m.Plan) -> str | None:
    """When ``entry`` is a finished, unencrypted image of ``plan``'s source and layout, owned by the user this
    save runs as (in a shared folder, another's file may be deleted under the increment): its manifest's
    created time (None otherwise). Only its header and manifest are read."""
    if f.parent_name_problem(entry.name) or not entry.is_file(follow_symlinks=False):
        return None
    try:
        st = entry.stat(follow_symlinks=False)
        if (st.st_dev, st.st_ino) == own or st.st_uid != os.geteuid():
            return None
        if not is_image(entry.path) or image_header(entry.path).encrypted:
            return None
        with ImageReader(entry.path, glance=GLANCE) as glanced:
            header, manifest = glanced.header, glanced.manifest
    except (RecoveryError, OSError):
        return None
    source = saved_from(manifest)
    layout = (manifest.get("mode"), header.size, header.chunk_size)
    if source is None or layout != (plan.mode, plan.size, plan.chunk_size):
        return None
    if journal.hardware(source) != journal.hardware(plan.source):
        return None
    return str(manifest.get("created", ""))


def _opened(path: str, created: str, sink: events.EventSink) -> ParentImage | None:
    """The image at ``path`` opened whole (its index, root and its own chain checked): what to offer of it;
    None, said in a warning, when it cannot be built on."""
    name = os.path.basename(path)
    try:
        with ImageReader(path) as image:
            if len(image.chain) >= f.MAX_CHAIN:
                sink(events.Warning(f"{name} ends a chain of {f.MAX_CHAIN} images: this save is a full image"))
                return None
            offered = FrameList()
            for e in image.entries():
                if e.codec is not f.Codec.ZERO:
                    offered.append(e.offset, e.length, e.digest, Kind.DATA)
            named = f.Parent(image.header.image_id, image.root, name)
    except RecoveryError as e:
        sink(events.Warning(f"the earlier image {name} cannot be built on ({e.message}): it is not used"))
        return None
    offer = m.DeltaOffer(
        frames=len(offered),
        bytes=offered.covered,
        since=created[:64],
        source_desc=f"the image {name}"[:255],
        trusted=True,
    )
    return ParentImage(named, offered, offer)
