"""What an image holds, in a technician's words: the disk it came from, its partitions, sizes, digests."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from recovery import events, report
from recovery.diskimage import format as f
from recovery.diskimage.reader import ImageReader
from recovery.units import area, human_size, shown


@dataclass
class ImageDescription:
    header: f.Header
    manifest: dict[str, Any]
    root: str
    totals: f.Totals = field(default_factory=f.Totals)
    file_bytes: int = 0
    parts: list[dict[str, Any]] = field(default_factory=list)
    chain: list[str] = field(default_factory=list)  # an increment's parent, its parent ... (file names)

    @property
    def source(self) -> str:
        """The disk it was saved from: ``/dev/nvme0n1, Samsung 980 S123, 1.0 TiB``."""
        src = self.manifest.get("source")
        if not isinstance(src, dict):
            return "a disk it does not name"
        bits = [shown(str(src.get("path", "?")))[:255]]
        hw = " ".join(shown(str(src[k]))[:255] for k in ("model", "serial") if src.get(k))
        if hw:
            bits.append(hw)
        bits.append(human_size(self.header.size))
        return ", ".join(bits)

    @property
    def source_host(self) -> str:
        src = self.manifest.get("source")
        return shown(str(src.get("host", "")))[:255] if isinstance(src, dict) else ""

    def partition_of(self, offset: int) -> str:
        """Where byte ``offset`` of the disk lies, in words."""
        for p in self.parts:
            if p["start"] <= offset < p["start"] + p["size"]:
                return f"partition {p['number']} ({p.get('fstype') or 'unknown'})"
        return "outside the partitions (partition tables, boot code)"

    def rescued(self) -> tuple[int | None, list[list[int]], list[dict[str, Any]]]:
        """A rescued source: the bytes it could not read, those areas and the files they hit, as the
        manifest says (each value checked: a manifest is read, not trusted); (None, [], []) otherwise."""
        rescue = self.manifest.get("rescue")
        if not isinstance(rescue, dict):
            return None, [], []
        try:
            unreadable = max(0, int(rescue.get("unreadable", 0)))
            ranges = [[int(o), int(n)] for o, n in rescue.get("ranges", ())[:1024]]
        except (TypeError, ValueError):
            return 0, [], []
        ranges = [[o, n] for o, n in ranges if 0 <= o and 0 < n and o + n <= self.header.size]
        hits = [h for h in (_hit(x) for x in rescue.get("files_hit", ())[:256] if isinstance(x, dict)) if h]
        return unreadable, ranges, hits

    def event(self, path: str) -> events.ImageInfo:
        unreadable, ranges, hits = self.rescued()
        return events.ImageInfo(
            path=path,
            format=f"{self.header.major}.{self.header.minor}",
            tool=shown(str(self.manifest.get("tool", "")))[:100],
            created=shown(str(self.manifest.get("created", "")))[:40],
            mode="exact" if self.manifest.get("mode") == "exact" else "used",
            size=self.header.size,
            sector_size=self.header.sector_size,
            chunk_size=self.header.chunk_size,
            source=self.source,
            source_host=self.source_host,
            parts=self.parts,
            chunks=self.totals.chunks,
            data_bytes=self.totals.data_bytes,
            zero_bytes=self.totals.zero_bytes,
            stored_bytes=self.totals.stored_bytes,
            file_bytes=self.file_bytes,
            encrypted=self.header.encrypted,
            root=self.root,
            disk_digest=_hex(self.manifest.get("disk_digest")),
            unreadable=unreadable,
            unreadable_ranges=ranges,
            files_hit=hits,
            parent=self.header.parent.name if self.header.parent else None,
            chain=self.chain,
            parent_bytes=self.totals.parent_bytes,
        )


def describe_image(image: ImageReader, *, file_bytes: int = 0) -> ImageDescription:
    """Walk the index once (entries only, no chunk is read)."""
    d = ImageDescription(image.header, image.manifest, image.root.hex(), file_bytes=file_bytes)
    d.chain = [os.path.basename(r.path) for r in image.chain[1:]]
    for e in image.entries():
        d.totals.add(e)
    d.parts = [_part(p) for p in image.manifest.get("parts") or () if _part(p) is not None]  # type: ignore[misc]
    return d


def _part(p: Any) -> dict[str, Any] | None:
    """A manifest's partition, its fields checked (a manifest is read, not trusted)."""
    if not isinstance(p, dict):
        return None
    try:
        return {
            "number": int(p["number"]),
            "start": int(p["start"]),
            "size": int(p["size"]),
            "fstype": shown(str(p["fstype"]))[:64] if p.get("fstype") else None,
            "method": "used" if p.get("method") == "used" else "whole",
            "bytes": int(p.get("bytes", 0)),
            "blkid": [shown(str(x))[:255] for x in p.get("blkid", ())][:32],
        }
    except (KeyError, TypeError, ValueError):
        return None


def _hit(h: dict[str, Any]) -> dict[str, Any] | None:
    """One entry of a rescue's ``files_hit`` from a manifest, its fields checked and bounded."""
    try:
        files = [shown(str(x))[:512] for x in h.get("files", ())[:200]]
        return {
            "partition": int(h.get("partition", 0)),
            "fstype": shown(str(h["fstype"]))[:64] if h.get("fstype") else None,
            "bytes": int(h.get("bytes", 0)),
            "files": files,
            "more": int(h.get("more", 0)),
            "note": shown(str(h.get("note", "")))[:300],
        }
    except (TypeError, ValueError):
        return None


def _hex(value: Any) -> str | None:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value
    return None


def info_lines(d: ImageDescription, path: str) -> list[str]:
    """``recovery image info`` as text."""
    e = d.event(path)
    made = e.created.replace("T", " ").replace("Z", " UTC") or time.strftime("%Y-%m-%d", time.gmtime(d.header.created))
    own = e.data_bytes - e.parent_bytes  # an increment's parent stores the rest
    ratio = f", {own / e.stored_bytes:.1f}x smaller" if e.stored_bytes else ""
    host = f"{e.source_host}: " if e.source_host else ""
    lines = [
        f"{path}: usb4-recovery image {e.format}, saved {made} by {e.tool or 'an unknown version'}",
        f"  disk      {host}{e.source}, {e.sector_size}-byte sectors",
        f"  mode      {e.mode}: {human_size(e.data_bytes)} of data and {human_size(e.zero_bytes)} of zeros "
        f"in {e.chunks} chunks of up to {human_size(e.chunk_size)}",
        f"  stored    {human_size(e.stored_bytes)} of chunks{ratio}; the file is {human_size(e.file_bytes)}",
    ]
    for p in e.parts:
        how = "used blocks" if p["method"] == "used" else "whole"
        label = next((x.split("=", 1)[1] for x in p["blkid"] if x.startswith("LABEL=")), "")
        lines.append(
            f"  part {p['number']:<3}  {p['fstype'] or 'unknown':<8} {human_size(p['size']):>10} at "
            f"{human_size(p['start'])}, {how}" + (f", label {label}" if label else "")
        )
    if e.parent:
        lines.append(
            f"  parent    an increment of {shown(e.parent)}: {human_size(e.parent_bytes)} of its data read from "
            f"there (the chain: {' <- '.join(shown(n) for n in e.chain)})"
        )
    lines.append(f"  encrypted {'yes (AES-256-GCM per chunk, scrypt passphrase)' if e.encrypted else 'no'}")
    lines.append(f"  root      BLAKE3 {e.root}")
    if e.disk_digest:
        lines.append(f"  disk      BLAKE3 {e.disk_digest} (what b3sum of the source gave)")
    if e.unreadable is not None:
        lines.append(f"  rescued   the source could not be read in {human_size(e.unreadable)} (filled with zeros)")
        lines += [f"  area      {area(o, n)}" for o, n in e.unreadable_ranges[:20]]
        if len(e.unreadable_ranges) > 20:
            lines.append(f"  area      and {len(e.unreadable_ranges) - 20} more")
        lines += [f"  hit       {report.hit_words(h)}" for h in e.files_hit]
    return lines
