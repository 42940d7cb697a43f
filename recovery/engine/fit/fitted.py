"""The fitted disk: the source as the target will hold it, made on a copy-on-write view of the source.

Shrinking: each filesystem that must shrink is shrunk where it lies, then every partition that moves is
moved down (its used blocks only), then the new partition table is written on a device of the target's
size. Growing: the partitions that move are moved up first (from the end), the table is written, then
each filesystem grows into its partition. The source is opened read-only throughout; the sender then
reads this device instead of the source.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

from recovery import events, run
from recovery.disks import fitplan, gpt, partdev, partitions, usedmap
from recovery.disks.fitplan import Facts, Fit, Layout, Placed
from recovery.engine.fit import filecopy, resize
from recovery.engine.fit.view import View, cow_view, default_scratch
from recovery.errors import CancelledError, RecoveryError, RefusedError, SourceReadError, ToolError, UsageError
from recovery.units import human_size

COPY = 4 << 20  # bytes moved per read and write
# What fitting runs besides the view's own (view.check_tools), with the Debian package of each.
TOOLS = {
    "sfdisk": "fdisk",
    "losetup": "util-linux",
    "resize2fs": "e2fsprogs",
}


def measure(
    source: str,
    table: partitions.Table,
    fit: Fit,
    say: Callable[[str], None],
    *,
    foreign: bool = False,
    shrinks: bool = True,
) -> list[Facts]:
    """Each partition's facts (read-only): its filesystem, how small it can become, whether it grows; a
    filesystem that is to be resized is checked clean first. ``foreign``: the disk of an image file, whose
    bytes came from elsewhere: nothing of it is handed to the kernel to mount (an XFS grows only mounted).
    ``shrinks``: some partition may shrink (else how small each can become is not always measured)."""
    facts = []
    for p in table.partitions:
        fstype = partitions.probe(source, p.start, p.size).fstype
        system = fitplan.system_reason(Facts(p.number, p.start, p.size, p.type, fstype))
        kept = system or resize.why_kept(fstype)
        grows = fstype in resize.GROWS and not system
        if foreign and fstype in resize.MOUNTED:
            kept = f"an image's {fstype} is not mounted here to resize it (its bytes came from elsewhere)"
            grows = False
        low = used = None
        if not kept or (grows and fit == "grow"):
            say(f"measuring partition {p.number} ({fstype})")
            with partdev.region_device(source, p.start, p.size, kernel=False, sector_size=table.sector_size) as dev:
                if dev is None:
                    raise RefusedError("fitting a disk needs loop devices (run as root)")
                try:
                    low, used = resize.measure(dev, fstype, p.number, shrinks=shrinks)
                except (RefusedError, ToolError) as e:  # kept at its size, and the plan says why
                    kept, grows, low = _words(e), False, None
        copies, regrows = fstype in filecopy.COPIED, fstype in filecopy.GROWN
        facts.append(Facts(p.number, p.start, p.size, p.type, fstype, used, low, grows, copies, regrows, kept))
    return facts


def _words(e: RecoveryError) -> str:
    if isinstance(e, run.CommandError):
        return f"it could not be measured: {_said(e)[-200:] or e.message}"
    return e.message


def _said(e: run.CommandError) -> str:
    """A failed tool's own words, on one line."""
    return " ".join((e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else str(e.stderr or "")).split())


def check_table(table: partitions.Table | None, source: str) -> partitions.Table:
    """A table this can rewrite: GPT, or MBR (its logical partitions in one extended partition, numbered in
    their order on the disk), on 512- or 4096-byte sectors."""
    if table is None or table.label not in ("gpt", "dos"):
        raise RefusedError(f"{source} has no partition table to fit: only its own size can be cloned")
    if table.extended:
        logical = sorted((p for p in table.partitions if p.number > 4), key=lambda p: p.number)
        (start, size), *more = table.extended
        if more or not logical or [p.start for p in logical] != sorted(p.start for p in logical):
            raise RefusedError(
                f"{source}'s extended partitions are not laid out as fitting expects: one extended partition "
                "whose logical partitions are numbered in their order on the disk"
            )
        if any(not start <= p.start < p.start + p.size <= start + size for p in logical):
            raise RefusedError(f"{source} has a logical partition outside its extended partition")
    if table.sector_size not in (512, 4096):
        raise RefusedError(f"{source} has {table.sector_size}-byte sectors: fitting it is not built")
    return table


def plan(
    source: str,
    size: int,
    target_size: int,
    fit: Fit,
    say: Callable[[str], None],
    *,
    foreign: bool = False,
    sizes: Mapping[int, int] | None = None,
) -> Layout:
    """The fitted layout for a target of ``target_size`` (nothing written; the partitions are measured only
    when some must be resized). ``foreign``: see :func:`measure`; ``sizes``: partitions the user sized."""
    table = check_table(partitions.read_table(source), source)
    ss = table.sector_size
    tail = (_gpt_header(source, table).entries_sectors(ss) + 1) * ss if table.label == "gpt" else 0
    end = fitplan.usable_end(target_size, table.label, tail, ss)
    fits = all(p.start + p.size <= end for p in table.partitions)
    if fit == "keep" or (fit == "shrink" and fits and not sizes):
        facts = [Facts(p.number, p.start, p.size, p.type) for p in table.partitions]
    else:
        facts = measure(source, table, fit, say, foreign=foreign, shrinks=fit == "shrink" or bool(sizes))
    layout = fitplan.plan_layout(facts, size, target_size, end, fit, table.label, sizes)
    if layout.changed:
        try_table(source, table, layout)
    return layout


def try_table(source: str, table: partitions.Table, layout: Layout) -> None:
    """Write the new table once on a blank sparse file of the target's size: what sfdisk refuses (an EBR
    with no room before its logical partition, say) is refused now, before anything is resized."""
    script = new_table(source, table, layout)
    with tempfile.NamedTemporaryFile(prefix="recovery-table-") as blank:
        blank.truncate(layout.target_size)
        with partdev.region_device(
            blank.name, 0, layout.target_size, writable=True, kernel=False, sector_size=table.sector_size
        ) as dev:
            if dev is None:
                raise RefusedError("fitting a disk needs loop devices (run as root)")
            quiet = ["--quiet", "--no-reread", "--no-tell-kernel"]
            proc = run.run(["sfdisk", *quiet, dev], input=script.encode(), check=False)
    if proc.returncode != 0:
        words = " ".join(proc.stderr.decode(errors="replace").split())[-300:]
        raise RefusedError(f"the new partition table cannot be written ({words}): nothing was changed")


def new_table(source: str, table: partitions.Table, layout: Layout) -> str:
    """The sfdisk script of the source's table with the layout's starts and sizes (:func:`table_script`),
    the table read in the source's own sector size."""
    entries = _gpt_header(source, table).entry_count if table.label == "gpt" else 0
    with partdev.region_device(source, 0, layout.source_size, kernel=False, sector_size=table.sector_size) as dev:
        if dev is None:
            raise RefusedError("fitting a disk needs loop devices (run as root)")
        return table_script(_dump(dev), layout, table.label, entries, table.sector_size)


@contextlib.contextmanager
def fitted_disk(
    source: str,
    size: int,
    layout: Layout,
    scratch: str | None,
    sink: events.EventSink,
    cancel: threading.Event | None = None,
) -> Iterator[str]:
    """The fitted disk as a read-only device (its path), while the context lasts; nothing of it outlives it. Each
    filesystem that shrinks is shrunk where it lies, the partitions that move are moved (:func:`move_order`),
    the table is written, then each filesystem that grows is grown."""
    table = check_table(partitions.read_table(source), source)
    order = fitplan.move_order(layout.parts)
    check_room(layout, scratch or default_scratch())
    started = time.monotonic()
    steps = _Steps(sink, cancel or threading.Event())
    script = new_table(source, table, layout)  # from the source: on the view, a move may write over an EBR
    with cow_view(source, max(size, layout.target_size), scratch, table.sector_size) as view:
        try:
            _shrink(view, source, layout.parts, steps)
            _move(view, [p for p in order if not _remade_larger(p)], steps)
            _write_table(view, table, layout, script)
            _grow(view, source, layout.parts, steps)
            for p in order:
                with _region(view, p.new_start, p.new_size, writable=True) as dev:
                    if not resize.set_hidden_sectors(dev, p.fstype, p.new_start // table.sector_size):
                        steps.warn(p)
            _flush(view)  # what the steps wrote is in the overlay, or the error is here
            if view.exhausted():
                raise _full(view)
        except (OSError, RecoveryError) as e:
            if view.exhausted():
                raise _full(view) from None
            if isinstance(e, OSError):
                raise _view_error(e, view) from None
            raise
        with _loop(view, layout.target_size, writable=False) as dev:
            sink(events.Fitted(
                overlay_bytes=view.overlay_bytes(), seconds=round(time.monotonic() - started, 3),
                moved_bytes=sum(p.new_size for p in layout.parts if p.moved), view=view.kind,
            ))  # fmt: skip
            yield dev


def _flush(view: View) -> None:
    fd = os.open(view.path, os.O_RDWR | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _full(view: View) -> RefusedError:
    return RefusedError(
        f"the copy-on-write overlay in {os.path.dirname(view.overlay)} is full: nothing was written to the target "
        "and the source is unchanged",
        hint="give --scratch a folder on a disk with more room (not the source)",
    )


class _Steps:
    """What the steps say, and the user's cancel, looked at between them."""

    def __init__(self, sink: events.EventSink, cancel: threading.Event) -> None:
        self.sink, self.cancel = sink, cancel

    def check(self) -> None:
        if self.cancel.is_set():
            raise CancelledError("cancelled while the source was fitted: nothing was written to the target")

    def say(self, text: str) -> None:
        self.check()
        self.sink(events.Phase("fit", text))

    def warn(self, p: Placed) -> None:
        if p.fstype in ("ntfs", "vfat"):
            self.sink(events.Warning(f"partition {p.number} moved, and its boot sector could not be told its new "
                                     "first sector: Windows may not boot from it"))  # fmt: skip


def _view_error(e: OSError, view: View) -> RecoveryError:
    """An error of the view's reads and writes in the taxonomy: a full overlay folder, an unreadable source."""
    where = os.path.dirname(view.overlay)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return RefusedError(
            f"the copy-on-write overlay filled its folder {where}: nothing was written to the target",
            hint="give --scratch a folder on a disk with more room (not the source)",
        )
    if e.errno == errno.EIO:
        return SourceReadError(f"the source could not be read while it was fitted: {e.strerror}")
    return ToolError(f"the copy-on-write view failed: {e.strerror or e}; nothing was written to the target")


ACTIVE = 446  # the first MBR entry's boot indicator (its type follows 4 bytes on)
OVERLAY_SLACK = 64 << 20  # qcow2's tables and the new partition table, at most
GROWTH = 64  # a grown filesystem writes about a 64th of its growth (ext4's inode tables, bitmaps)


def check_room(layout: Layout, folder: str) -> None:
    """Refuse before anything is done when the overlay's folder cannot hold what the resizing and the moves
    may write: the used bytes of each partition resized or moved (all of it when not known)."""
    need = OVERLAY_SLACK
    for p in layout.parts:
        data = p.used if p.used is not None else min(p.size, p.new_size)
        need += data * (p.moved + p.resized)  # a shrink can move all of it, and a move copies it again
        need += max(0, p.new_size - p.size) // GROWTH  # a filesystem's new metadata as it grows
    try:
        free = shutil.disk_usage(folder).free
    except OSError as e:
        raise UsageError(f"cannot use {folder} for the copy-on-write overlay: {e.strerror}") from None
    if free < need:
        raise RefusedError(
            f"the copy-on-write overlay may need {human_size(need)}, and {folder} has {human_size(free)} free",
            hint="give --scratch a folder on a disk with more room (not the source)",
        )


def _shrink(view: View, source: str, parts: Sequence[Placed], steps: _Steps) -> None:
    for p in parts:
        if p.method == "copy" and p.new_size < p.size:  # made where it lies, then moved as a shrunk one is
            _copy_files(view, source, p, p.start, steps)
        elif p.new_size < p.size:
            steps.say(f"shrinking partition {p.number} ({p.fstype}) to {p.new_size >> 20} MiB on the copy")
            with _region(view, p.start, p.size, writable=True) as dev:
                _tool(functools.partial(resize.shrink, size=p.new_size, cancel=steps.cancel), dev, p)


def _remade_larger(p: Placed) -> bool:
    """A partition made again larger where it now starts, from the source's files: its move would be lost."""
    return p.method == "copy" and p.new_size > p.size


def _copy_files(view: View, source: str, p: Placed, at: int, steps: _Steps) -> None:
    """Partition ``p`` made again at byte ``at`` of the view, its new size, and filled file by file from the
    source's (:func:`filecopy.copy`)."""
    steps.say(f"copying partition {p.number} ({p.fstype}) file by file into a new {p.new_size >> 20} MiB "
              "filesystem on the copy")  # fmt: skip
    with partdev.region_device(source, p.start, p.size, kernel=False, sector_size=view.sector) as old, \
            _region(view, at, p.new_size, writable=True) as new:  # fmt: skip
        if old is None:
            raise RefusedError("fitting a disk needs loop devices (run as root)")
        _tool(lambda dev, fstype: filecopy.copy(old, dev, fstype, steps.cancel), new, p)


def _grow(view: View, source: str, parts: Sequence[Placed], steps: _Steps) -> None:
    for p in parts:
        if _remade_larger(p):
            _copy_files(view, source, p, p.new_start, steps)
        elif p.new_size > p.size:
            steps.say(f"growing partition {p.number} ({p.fstype}) to {p.new_size >> 20} MiB on the copy")
            with _region(view, p.new_start, p.new_size, writable=True) as dev:
                _tool(functools.partial(resize.grow, cancel=steps.cancel), dev, p)


def _tool(step: Callable[[str, str], None], dev: str, p: Placed) -> None:
    try:
        step(dev, p.fstype or "")
    except run.CommandError as e:
        words = _said(e)[-300:]
        raise ToolError(
            f"resizing partition {p.number} ({p.fstype}) failed on the copy: {words or e}; "
            "nothing was written to the target and the source is unchanged"
        ) from None


def _move(view: View, order: Sequence[Placed], steps: _Steps) -> None:
    """Move each partition's used blocks (all of it when there is no map) to its new start, in ``order``
    (:func:`~recovery.disks.fitplan.move_order`: nothing is written over before it is read)."""
    for p in order:
        size = min(p.size, p.new_size)
        steps.say(f"moving partition {p.number} ({p.fstype or 'no filesystem'}) to byte {p.new_start} on the copy")
        extents = _used(view, p, size)
        down = p.new_start < p.start
        fd = os.open(view.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            for off, n in sorted(extents, reverse=not down):
                steps.check()
                _copy(fd, view.path, off, off - p.start + p.new_start, n, down)
            os.fsync(fd)
        finally:
            os.close(fd)


def _used(view: View, p: Placed, size: int) -> list[tuple[int, int]]:
    part = partitions.Partition(p.number, p.start, size, "")
    warnings: list[str] = []
    _, extents, _ = usedmap.used_extents(view.path, part, p.fstype, warnings, ignore_check=p.resized)
    return usedmap.merge(extents)


def _copy(fd: int, path: str, src: int, dst: int, n: int, down: bool) -> None:
    steps = range(0, n, COPY) if down else reversed(range(0, n, COPY))
    for k in steps:
        length = min(COPY, n - k)
        data = os.pread(fd, length, src + k)
        if len(data) != length:
            raise ToolError(f"the copy-on-write view ended at byte {src + k + len(data)}")
        done = 0
        while done < length:  # an error here is the view's (_view_error), not a target's
            done += os.pwrite(fd, memoryview(data)[done:], dst + k + done)


def _write_table(view: View, table: partitions.Table, layout: Layout, script: str) -> None:
    """The new table (:func:`new_table`: the same disk and partition ids, types, names and attributes),
    written by sfdisk on a device of the target's size (GPT: its backup at the end; MBR: the extended
    partition around the logical ones, their EBRs in the gaps before them)."""
    with _loop(view, layout.target_size, writable=True) as dev:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
        try:
            active = os.pread(fd, 1, ACTIVE)  # the protective MBR's boot flag, which sfdisk clears
            quiet = ["--quiet", "--no-reread", "--no-tell-kernel", "--wipe", "never", "--wipe-partitions", "never"]
            run.run(["sfdisk", *quiet, dev], input=script.encode())
            if table.label == "gpt" and active == b"\x80" and os.pread(fd, 1, ACTIVE + 4) == b"\xee":
                os.pwrite(fd, active, ACTIVE)  # some BIOSes boot a GPT disk only with it set
            os.fsync(fd)
        finally:
            os.close(fd)


def _dump(path: str) -> dict[str, object]:
    return json.loads(run.output(["sfdisk", "--json", path]))["partitiontable"]  # type: ignore[no-any-return]


def table_script(dump: dict[str, object], layout: Layout, label: str, entries: int, sector: int = 512) -> str:
    """An sfdisk script of ``dump`` (sfdisk's JSON) with the layout's starts and sizes (in sectors of
    ``sector`` bytes); a GPT keeps its count of ``entries``."""
    placed = {p.number: p for p in layout.parts}
    entries_found = dump.get("partitions", [])
    found = {partitions.number_from_node(str(e.get("node", ""))) for e in entries_found if not _extended(e)}  # type: ignore[attr-defined]
    if dump.get("label") != label or found != set(placed):
        raise RefusedError("the source's partition table changed while it was fitted: start again")
    lines = [f"label: {label}", f"label-id: {dump['id']}", "unit: sectors", f"sector-size: {sector}"]
    if label == "gpt":
        lines += [f"first-lba: {dump['firstlba']}", f"table-length: {entries}"]
    lines.append("")
    for entry in dump.get("partitions", []):  # type: ignore[attr-defined]
        number = partitions.number_from_node(entry["node"]) or 0
        start, size = _extended_place(entry, layout, sector) if _extended(entry) else (placed[number].new_start,
                                                                               placed[number].new_size)  # fmt: skip
        fields = [f"start={start // sector}", f"size={size // sector}", f"type={entry['type']}"]
        if "uuid" in entry:
            fields.append(f"uuid={entry['uuid']}")
        if "name" in entry:
            fields.append(f'name="{_quoted(entry["name"], number)}"')
        if "attrs" in entry:
            fields.append(f'attrs="{_quoted(entry["attrs"], number)}"')
        if entry.get("bootable"):
            fields.append("bootable")
        lines.append(f"/dev/part{number} : " + ", ".join(fields))
    return "\n".join(lines) + "\n"


def _extended(entry: dict[str, object]) -> bool:
    return str(entry.get("type", "")).lower() in partitions.EXTENDED_TYPES


def _extended_place(entry: dict[str, object], layout: Layout, sector: int) -> tuple[int, int]:
    """The extended partition's new start and size (bytes): as far before the first logical partition as it
    was (that EBR's room), to the end of the last one; never over a primary partition."""
    start = int(entry["start"]) * sector  # type: ignore[call-overload]
    logical = sorted((p for p in layout.parts if p.number > 4), key=lambda p: p.start)
    new_start = logical[0].new_start - (logical[0].start - start)
    new_end = logical[-1].new_start + logical[-1].new_size
    primaries = [p for p in layout.parts if p.number <= 4]
    if (
        any(p.new_start < new_end and new_start < p.new_start + p.new_size for p in primaries)
        or new_end > layout.usable_end
    ):
        raise RefusedError("the extended partition would overlap a primary partition in the new layout: not fitted")
    return new_start, new_end - new_start


def _quoted(text: str, number: int) -> str:
    if '"' in text or "\\" in text or any(ord(c) < 32 for c in text):
        raise RefusedError(f"partition {number}'s name or attributes hold a quote or a control character")
    return text


def _gpt_header(source: str, table: partitions.Table) -> gpt.Header:
    """The primary GPT header (its entry count: the backup's room at the end)."""
    ss = table.sector_size
    try:
        with open(source, "rb") as f:
            f.seek(ss)
            return gpt.decode_header(f.read(ss))
    except gpt.GptError as e:
        raise RefusedError(f"{source}'s GPT cannot be rewritten: {e}") from None
    except OSError as e:
        raise SourceReadError(f"cannot read {source}'s GPT: {e.strerror}") from None


@contextlib.contextmanager
def _region(view: View, start: int, size: int, *, writable: bool) -> Iterator[str]:
    """A loop device over [start, start+size) of the view (never a kernel node: the view may be a disk).
    Buffered: with direct I/O, what a loop device wrote through qemu-storage-daemon's FUSE export (7.2) came
    back corrupt (a resized ext4's journal, in a test here)."""
    with partdev.region_device(view.path, start, size, writable=writable, kernel=False, sector_size=view.sector) as dev:
        if dev is None:
            raise RefusedError("fitting a disk needs loop devices (run as root)")
        yield dev


@contextlib.contextmanager
def _loop(view: View, size: int, *, writable: bool) -> Iterator[str]:
    """The view's first ``size`` bytes as a disk."""
    with _region(view, 0, size, writable=writable) as dev:
        yield dev
