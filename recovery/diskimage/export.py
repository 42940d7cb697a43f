"""An image's disk in a format other tools open: a sparse raw file with its bmaptool block map, or a
qcow2 or VHDX file (QEMU and libvirt, Hyper-V and Windows' own disk mounting) made from it by qemu-img.

Every chunk is checked against its digest on the way (a damaged one stops the export: nothing half
right is left under the name asked for). The file is made under a temporary name next to it and
renamed only when whole; for qcow2 and VHDX the sparse raw file is that temporary file, so the extra
room it takes is the disk's data only, and only until qemu-img has read it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recovery import run
from recovery.diskimage.reader import ImageReader
from recovery.diskimage.sparse import write_sparse
from recovery.errors import TargetWriteError

FORMATS = ("raw", "qcow2", "vhdx")
_QEMU_OPTIONS = {"qcow2": ("-O", "qcow2"), "vhdx": ("-O", "vhdx", "-o", "subformat=dynamic")}


@dataclass(frozen=True)
class Exported:
    path: str
    fmt: str
    disk_bytes: int
    written: int  # bytes of data in the raw file (the rest are holes)
    file_bytes: int  # what the exported file takes on its disk
    bmap: str | None  # the block map's path (raw only)
    seconds: float


def export_image(
    image: ImageReader,
    path: str,
    fmt: str,
    *,
    threads: int,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Exported:
    """Write the disk ``image`` holds to ``path`` in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}")
    start = time.monotonic()
    final = Path(path)
    part = final.with_name(f".{final.name}.part")
    raw = final.with_name(f".{final.name}.raw.part") if fmt != "raw" else part
    made = [raw] if fmt == "raw" else [raw, part]
    try:
        fd = os.open(raw, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise TargetWriteError(f"cannot create {raw}: {e.strerror}") from None
    try:
        try:
            sparse = write_sparse(
                image, fd, str(raw), threads=threads, on_progress=on_progress, should_stop=should_stop
            )
            os.fsync(fd)
        finally:
            os.close(fd)
        bmap = None
        if fmt == "raw":
            bmap = f"{final}.bmap"
            _write_file(bmap, sparse.bmap.xml())
        else:
            run.run(["qemu-img", "convert", "-q", "-f", "raw", *_QEMU_OPTIONS[fmt], str(raw), str(part)])
            raw.unlink()
        os.replace(part, final)
    except BaseException:
        for p in made:
            p.unlink(missing_ok=True)
        raise
    return Exported(
        str(final),
        fmt,
        image.size,
        sparse.written,
        os.stat(final).st_blocks * 512,
        bmap,
        time.monotonic() - start,
    )


def _write_file(path: str, data: bytes) -> None:
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        raise TargetWriteError(f"cannot write {path}: {e.strerror}") from None
