"""A block map for bmaptool (bmap-tools): which blocks of a raw disk file hold data, with a SHA256 each.

The XML of format version 2.0, as ``bmaptool create`` writes it and ``bmaptool copy`` (Debian's
bmap-tools 3.6) reads it: ``copy`` writes only the mapped ranges and checks each one's SHA256 as it
goes; the file's own SHA256 is taken with its ``BmapFileChecksum`` set to 64 ASCII zeros. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

BLOCK = 4096  # bmaptool create's block size
_UNSET = "0" * 64


@dataclass
class BlockMap:
    """The mapped ranges of a ``size``-byte raw file, in order: (first block, last block, SHA256 hex)."""

    size: int
    ranges: list[tuple[int, int, str]] = field(default_factory=list)

    @property
    def blocks(self) -> int:
        return -(-self.size // BLOCK)

    @property
    def mapped(self) -> int:
        return sum(last - first + 1 for first, last, _ in self.ranges)

    def add(self, first: int, last: int, sha256: str) -> None:
        if self.ranges and first <= self.ranges[-1][1]:
            raise ValueError(f"block range {first}-{last} overlaps or precedes the one before it")
        self.ranges.append((first, last, sha256))

    def xml(self) -> bytes:
        """The .bmap file's bytes."""
        ranges = "".join(
            f'        <Range chksum="{digest}"> {first if first == last else f"{first}-{last}"} </Range>\n'
            for first, last, digest in self.ranges
        )
        body = (
            '<?xml version="1.0" ?>\n'
            "<!-- The blocks of a raw disk file that hold data, each range with its SHA256: what\n"
            "     `bmaptool copy` writes. Made by usb4-recovery from an image's index. -->\n"
            '<bmap version="2.0">\n'
            f"    <ImageSize> {self.size} </ImageSize>\n"
            f"    <BlockSize> {BLOCK} </BlockSize>\n"
            f"    <BlocksCount> {self.blocks} </BlocksCount>\n"
            f"    <MappedBlocksCount> {self.mapped} </MappedBlocksCount>\n"
            "    <ChecksumType> sha256 </ChecksumType>\n"
            f"    <BmapFileChecksum> {_UNSET} </BmapFileChecksum>\n"
            "    <BlockMap>\n"
            f"{ranges}"
            "    </BlockMap>\n"
            "</bmap>\n"
        )
        return body.replace(_UNSET, hashlib.sha256(body.encode()).hexdigest(), 1).encode()
