"""Which files the damaged chunks of an image hold: the question after "a chunk is damaged".

The image's disk is served as a read-only FUSE file (:mod:`recovery.diskimage.fusedisk`) for as long as
it takes, and each partition the damaged ranges touch is handed to the filesystem's own tool
(:mod:`recovery.engine.rescue.fsnames`), confined, as the filesystems were written elsewhere. A damaged
chunk reads as EIO through the file, never as wrong bytes: where the metadata that names a file is
itself damaged, the entry says the tool could not tell.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from recovery.diskimage.info import describe_image
from recovery.diskimage.reader import ImageReader
from recovery.engine.imagemount import served_disk
from recovery.engine.rescue import fsnames
from recovery.errors import RecoveryError
from recovery.protocol.values import MapPart


def files_in_damaged(image: ImageReader, ranges: Sequence[tuple[int, int]]) -> tuple[list[dict[str, Any]], str]:
    """The files each partition's damaged ranges hold (entries as a rescue's ``files_hit``), and why none
    could be named ("" when the tools ran)."""
    if not ranges:
        return [], ""
    if os.geteuid() != 0:
        return [], "run as root to name the files they hold"
    parts = [
        MapPart(number=p["number"], start=p["start"], size=p["size"], fstype=p["fstype"])
        for p in describe_image(image).parts
    ]
    try:
        with served_disk(image) as disk:
            return fsnames.files_hit(disk, parts, ranges, confine=True), ""
    except RecoveryError as e:
        return [], f"the files could not be named: {e.message}"
