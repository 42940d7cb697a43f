"""The fitted disk: the source as the target will hold it, made on a copy-on-write view of the source.

Shrinking: each filesystem that must shrink is shrunk where it lies, then every partition that moves is
moved down (its used blocks only), then the new partition table is written on a device of the target's
size. Growing: the partitions that move are moved up first (from the end), the table is written, then
each filesystem grows into its partition. The source is opened read-only throughout; the sender then
reads this device instead of the source.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from recovery import events, run
from recovery.disks import fitplan, gpt, partdev, partitions, usedmap
from recovery.disks.fitplan import Facts, Fit, Layout, Placed
from recovery.engine.fit import resize
from recovery.engine.fit.view import View, cow_view
from recovery.errors import RecoveryError, RefusedError, ToolError

COPY = 4 << 20  # bytes moved per read and write


@dataclass(frozen=True)
class Fitted:
    path: str  # a read-only device of the fitted disk
    layout: Layout
    view: View


def measure(source: str, size: int, table: partitions.Table, say: Callable[[str], None]) -> list[Facts]:
    """Each partition's facts (read-only): its filesystem, how small it can become, whether it grows."""
    facts = []
    for p in table.partitions:
        fstype = partitions.probe(source, p.start, p.size).fstype
        kept = fitplan.fixed_reason(Facts(p.number, p.start, p.size, p.type, fstype)) or resize.why_kept(fstype)
        low = used = None
        if not kept:
            say(f"measuring partition {p.number} ({fstype})")
            with partdev.region_device(source, p.start, p.size) as dev:
                if dev is None:
                    raise RefusedError("fitting a disk needs loop devices (run as root)")
                low, used = resize.measure(dev, fstype, p.number)
        facts.append(Facts(p.number, p.start, p.size, p.type, fstype, used, low, grows=not kept, why_fixed=kept))
    return facts


def check_table(table: partitions.Table | None, source: str) -> partitions.Table:
    """A table this can rewrite: GPT, or MBR with primary partitions only."""
    if table is None or table.label not in ("gpt", "dos"):
        raise RefusedError(f"{source} has no partition table to fit: only its own size can be cloned")
    if table.extended:
        raise RefusedError(f"{source} has logical partitions (MBR): fitting them is not built yet")
    return table


def plan(source: str, size: int, target_size: int, fit: Fit, say: Callable[[str], None]) -> tuple[Layout, list[Facts]]:
    """The fitted layout for a target of ``target_size`` (nothing written)."""
    table = check_table(partitions.read_table(source), source)
    facts = measure(source, size, table, say) if fit != "keep" else []
    tail = _gpt_tail(source, table) if table.label == "gpt" else 0
    end = fitplan.usable_end(target_size, table.label, tail)
    if fit == "keep":
        facts = [Facts(p.number, p.start, p.size, p.type) for p in table.partitions]
    return fitplan.plan_layout(facts, size, target_size, end, fit), facts


@contextlib.contextmanager
def fitted_disk(
    source: str, size: int, layout: Layout, scratch: str | None, sink: events.EventSink
) -> Iterator[Fitted]:
    """The fitted disk as a read-only device, while the context lasts; nothing of it outlives it."""
    table = check_table(partitions.read_table(source), source)
    started = time.monotonic()
    with cow_view(source, max(size, layout.target_size), scratch) as view:
        say = lambda text: sink(events.Phase("fit", text))  # noqa: E731
        if layout.target_size < size:
            _shrink(view, layout.parts, say)
            _move(view, [p for p in layout.parts if p.moved], say)
        else:
            _move(view, [p for p in reversed(layout.parts) if p.moved], say)
        _write_table(view, table, layout)
        if layout.target_size > size:
            _grow(view, layout.parts, say)
        for p in layout.parts:
            if p.moved:
                with _region(view, p.new_start, p.new_size, writable=True) as dev:
                    resize.set_hidden_sectors(dev, p.fstype, p.new_start // table.sector_size)
        with _loop(view.path, layout.target_size, writable=False) as dev:
            sink(events.Fitted(
                overlay_bytes=view.overlay_bytes(), seconds=round(time.monotonic() - started, 3),
                moved_bytes=sum(p.new_size for p in layout.parts if p.moved),
            ))  # fmt: skip
            yield Fitted(dev, layout, view)


def _shrink(view: View, parts: Sequence[Placed], say: Callable[[str], None]) -> None:
    for p in parts:
        if p.new_size < p.size:
            say(f"shrinking partition {p.number} ({p.fstype}) to {p.new_size >> 20} MiB on the copy")
            with _region(view, p.start, p.size, writable=True) as dev:
                _tool(resize.shrink, dev, p, p.new_size)


def _grow(view: View, parts: Sequence[Placed], say: Callable[[str], None]) -> None:
    for p in parts:
        if p.new_size > p.size:
            say(f"growing partition {p.number} ({p.fstype}) to {p.new_size >> 20} MiB on the copy")
            with _region(view, p.new_start, p.new_size, writable=True) as dev:
                _tool(resize.grow, dev, p)


def _tool(step: Callable[..., None], dev: str, p: Placed, *size: int) -> None:
    try:
        step(dev, p.fstype or "", *size)
    except run.CommandError as e:
        stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else str(e.stderr or "")
        words = " ".join(stderr.split())[-300:]
        raise ToolError(
            f"resizing partition {p.number} ({p.fstype}) failed on the copy: {words or e}; "
            "nothing was written to the target and the source is unchanged"
        ) from None


def _move(view: View, parts: Sequence[Placed], say: Callable[[str], None]) -> None:
    """Move each partition's used blocks (all of it when there is no map) to its new start, in an order
    that never writes over what is still to be read."""
    for p in parts:
        size = min(p.size, p.new_size)
        say(f"moving partition {p.number} ({p.fstype or 'no filesystem'}) to byte {p.new_start} on the copy")
        extents = _used(view, p, size)
        down = p.new_start < p.start
        fd = os.open(view.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            for off, n in sorted(extents, reverse=not down):
                _copy(fd, off, off - p.start + p.new_start, n, down)
            os.fsync(fd)
        finally:
            os.close(fd)


def _used(view: View, p: Placed, size: int) -> list[tuple[int, int]]:
    part = partitions.Partition(p.number, p.start, size, "")
    warnings: list[str] = []
    _, extents, _ = usedmap.used_extents(view.path, part, p.fstype, warnings)
    return usedmap.merge(extents)


def _copy(fd: int, src: int, dst: int, n: int, down: bool) -> None:
    steps = range(0, n, COPY) if down else reversed(range(0, n, COPY))
    for k in steps:
        length = min(COPY, n - k)
        data = os.pread(fd, length, src + k)
        if len(data) != length:
            raise RecoveryError(f"the copy-on-write view ended at byte {src + k + len(data)}")
        os.pwrite(fd, data, dst + k)


def _write_table(view: View, table: partitions.Table, layout: Layout) -> None:
    """The source's table with the new starts and sizes (same disk and partition ids, types, names and
    attributes), written by sfdisk on a device of the target's size (GPT: its backup at the end)."""
    script = table_script(_dump(view.path), layout, table.sector_size)
    with _loop(view.path, layout.target_size, writable=True) as dev:
        quiet = ["--quiet", "--no-reread", "--no-tell-kernel", "--wipe", "never", "--wipe-partitions", "never"]
        run.run(["sfdisk", *quiet, dev], input=script.encode())


def _dump(path: str) -> dict[str, object]:
    return json.loads(run.output(["sfdisk", "--json", path]))["partitiontable"]  # type: ignore[no-any-return]


def table_script(dump: dict[str, object], layout: Layout, sector: int) -> str:
    """An sfdisk script of ``dump`` (sfdisk's JSON) with the layout's starts and sizes."""
    placed = {p.number: p for p in layout.parts}
    lines = [f"label: {dump['label']}", f"label-id: {dump['id']}", "unit: sectors", f"sector-size: {sector}"]
    if dump["label"] == "gpt" and "firstlba" in dump:
        lines.append(f"first-lba: {dump['firstlba']}")
    lines.append("")
    for entry in dump.get("partitions", []):  # type: ignore[attr-defined]
        number = partitions.number_from_node(entry["node"]) or 0
        p = placed.get(number)
        if p is None:
            raise RefusedError(f"the source's table changed while it was fitted (partition {entry['node']})")
        fields = [f"start={p.new_start // sector}", f"size={p.new_size // sector}", f"type={entry['type']}"]
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


def _quoted(text: str, number: int) -> str:
    if '"' in text or "\\" in text or any(ord(c) < 32 for c in text):
        raise RefusedError(f"partition {number}'s name or attributes hold a quote or a control character")
    return text


def _gpt_tail(source: str, table: partitions.Table) -> int:
    """Bytes the GPT's backup needs at the disk's end: its entries and its header."""
    ss = table.sector_size
    with open(source, "rb") as f:
        f.seek(ss)
        try:
            header = gpt.decode_header(f.read(ss))
        except gpt.GptError as e:
            raise RefusedError(f"{source}'s GPT cannot be rewritten: {e}") from None
    return (header.entries_sectors(ss) + 1) * ss


@contextlib.contextmanager
def _region(view: View, start: int, size: int, *, writable: bool) -> Iterator[str]:
    with partdev.region_device(view.path, start, size, writable=writable) as dev:
        if dev is None:
            raise RefusedError("fitting a disk needs loop devices (run as root)")
        yield dev


@contextlib.contextmanager
def _loop(path: str, size: int, *, writable: bool) -> Iterator[str]:
    with _region(View(path, size, ""), 0, size, writable=writable) as dev:
        yield dev
