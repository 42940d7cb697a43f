"""An image's disk in a format other tools open: a sparse raw file with its bmaptool block map, or a
qcow2 or VHDX file (QEMU and libvirt, Hyper-V and Windows' own disk mounting) that qemu-img makes
from the image's disk served as a file (:mod:`recovery.diskimage.fusedisk`): it asks that file where
its data lies (SEEK_DATA), so it reads only the chunks the image stores, and nothing is written twice.

Every chunk is checked against its digest on the way (a damaged one stops the export: nothing half
right is left under the name asked for). The file is made in a new private folder next to it and
renamed only when whole.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recovery import run
from recovery.diskimage.format import Codec
from recovery.diskimage.reader import ImageReader
from recovery.diskimage.sparse import write_sparse
from recovery.errors import Interrupted, TargetWriteError, ToolError

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
    disk: str | None = None,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Exported:
    """Write the disk ``image`` holds to ``path`` in ``fmt`` (one of :data:`FORMATS`). ``disk``: the image's
    disk served as a file, which qcow2 and VHDX are made from."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}")
    start = time.monotonic()
    final = Path(path)
    try:  # a folder of its own (0700) next to it: nothing planted there can be written through
        work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent))
    except OSError as e:
        raise TargetWriteError(f"cannot write in {final.parent}: {e.strerror}") from None
    part = work / "disk"
    try:
        if fmt == "raw":
            written, bmap = _raw(image, part, f"{final}.bmap", threads, on_progress, should_stop)
        else:
            if disk is None:
                raise ValueError(f"a {fmt} export is made from the image's disk served as a file")
            _convert(image, disk, part, fmt, on_progress, should_stop)
            written, bmap = _data_bytes(image), None
        os.replace(part, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Exported(
        str(final), fmt, image.size, written, os.stat(final).st_blocks * 512, bmap, time.monotonic() - start
    )


def _raw(
    image: ImageReader,
    part: Path,
    bmap: str,
    threads: int,
    on_progress: Callable[[int, int], None],
    should_stop: Callable[[], bool],
) -> tuple[int, str]:
    """The sparse raw file at ``part`` and its block map at ``bmap``: (bytes of data written, bmap)."""
    try:
        fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise TargetWriteError(f"cannot create {part}: {e.strerror}") from None
    try:
        sparse = write_sparse(image, fd, str(part), threads=threads, on_progress=on_progress, should_stop=should_stop)
        os.fsync(fd)
    finally:
        os.close(fd)
    _write_file(bmap, sparse.bmap.xml())
    return sparse.written, bmap


_PERCENT = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
REQUEST = 32 << 20  # bytes qemu-img asks for at once, at most (its buffer is 2 MiB)
_READ_ERROR = re.compile(r"error while reading at byte (\d+)")


def _convert(
    image: ImageReader,
    disk: str,
    part: Path,
    fmt: str,
    on_progress: Callable[[int, int], None],
    should_stop: Callable[[], bool],
) -> None:
    """qemu-img makes ``part`` in ``fmt`` from ``disk``, its progress passed on; a damaged chunk it could not
    read is named as the raw export names it."""
    argv = ["qemu-img", "convert", "-p", "-f", "raw", *_QEMU_OPTIONS[fmt], disk, str(part)]
    proc = run.start(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        said = b""
        while True:
            if should_stop():
                raise Interrupted("interrupted by the user while exporting the image")
            if not select.select([proc.stdout], [], [], 0.5)[0]:
                continue
            out = os.read(proc.stdout.fileno(), 4096)
            if not out:
                break
            said = (said + out)[-64:]
            found = _PERCENT.findall(said)
            if found:
                on_progress(int(float(found[-1]) * image.size / 100), image.size)
        err = proc.stderr.read().decode(errors="replace").strip()
        if proc.wait() != 0:
            _raise_damaged(image, err)
            raise ToolError(f"qemu-img could not make the {fmt} file: {err[-300:]}")
    finally:
        run.stop(proc)
    on_progress(image.size, image.size)


def _raise_damaged(image: ImageReader, said: str) -> None:
    """Where qemu-img says a read failed (the start of a request of up to :data:`REQUEST` bytes), the chunks
    there are read again: a damaged one says so."""
    found = _READ_ERROR.search(said)
    if not found:
        return
    at = int(found.group(1))
    entry = image.find(at) or image.following(at)
    while entry is not None and entry.offset < at + REQUEST:
        if entry.codec is not Codec.ZERO:
            image.chunk(entry)  # raises BadChunk
        entry = image.following(entry.offset)


def _data_bytes(image: ImageReader) -> int:
    """Bytes of the disk the image stores as data (not zeros): what an export writes."""
    return sum(e.length for e in image.entries() if e.codec is not Codec.ZERO)


def _write_file(path: str, data: bytes) -> None:
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        raise TargetWriteError(f"cannot write {path}: {e.strerror}") from None
