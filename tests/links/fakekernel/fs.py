"""ConfigFS and the character device as the code under test sees them: mkdir, rmdir, writes, open.

:class:`FakeOps` is handed to the code as its
:class:`~recovery.link.tbstream.configfs.FsOps`; :class:`FakeDevice` is what
opening ``/dev/tbstreamN`` gives (a :class:`~recovery.link.tbstream.device.Device`).
Both do what ``drivers/thunderbolt/stream.c`` does; the attribute files and
device nodes are real files in the host's tree, kept in step.
"""

from __future__ import annotations

import errno
import os
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from recovery.link.tbstream.configfs import FsOps
from recovery.link.tbstream.device import POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT
from tests.links.fakekernel import model
from tests.links.fakekernel.fabric import FakeHost
from tests.links.fakekernel.model import Frame, Sdev

GROUP_SSCANF = re.compile(r"^\d+-[0-9a-fA-F]+\.\d+")  # "%u-%llx.%u": trailing junk is accepted
MAX_NAME = 8  # TB_PROPERTY_KEY_SIZE
FRAME = 4096
FLUSH_MS = 500  # tb_ring_flush(ring, 500) at the last close
MAX_THROTTLING = 16_776_960


def _err(code: int, path: object = None) -> OSError:
    return OSError(code, os.strerror(code), None if path is None else str(path))


def _kstrtoint(text: str, *, unsigned: bool = False) -> int:
    body = text[:-1] if text.endswith("\n") else text
    try:
        value = int(body, 0) if body.strip() == body and body else None
    except ValueError:
        value = None
    if value is None or (unsigned and value < 0):
        raise _err(errno.EINVAL)
    return value


class FakeOps(FsOps):
    """What the kernel does on mkdir, rmdir, attribute writes and open."""

    def __init__(self, host: FakeHost) -> None:
        self.host = host
        self.fabric = host.fabric

    def _rel(self, path: Path) -> tuple[str, ...]:
        return Path(path).relative_to(self.host.config).parts

    def read(self, path: Path) -> str:
        with open(path, "rb") as f:
            return f.read(4096).decode(errors="replace").strip()

    def mkdir(self, path: Path) -> None:
        parts = self._rel(path)
        h = self.host
        with self.fabric.lock:
            if len(parts) == 1:
                if not GROUP_SSCANF.match(parts[0]):
                    raise _err(errno.EINVAL, path)
                os.mkdir(path)  # FileExistsError as the real one
                peer = h.peer
                h.groups[parts[0]] = (
                    self.fabric.plugged
                    and parts[0] == h.stream_service
                    and h.stream_module
                    and peer is not None
                    and peer.stream_module
                )
                return
            group, name = parts
            if len(name) > MAX_NAME:
                raise _err(errno.ENAMETOOLONG, path)
            os.mkdir(path)
            index = min(set(range(len(h.indices) + 1)) - h.indices)
            h.indices.add(index)
            s = Sdev(group, name, index, threading.Condition(self.fabric.lock), busy_poll=0 if h.busy_poll else None)
            h.streams[(group, name)] = s
            h.sync(s)
            if h.groups.get(group):
                model.attach(h, s)  # adopts the peer's values if it publishes a stream of this name
                h.sync(s)
            (h.dev / f"tbstream{index}").write_text("")  # misc_register: the node appears at once
            h.emit("add", f"tbstream{index}", subsystem="misc")

    def rmdir(self, path: Path) -> None:
        parts = self._rel(path)
        h = self.host
        with self.fabric.lock:
            if len(parts) == 1:
                os.rmdir(path)  # ENOTEMPTY while streams are in it
                h.groups.pop(parts[0], None)
                return
            s = h.streams.pop((parts[0], parts[1]), None)
            if s is None:
                raise _err(errno.ENOENT, path)
            for f in path.iterdir():
                f.unlink()
            os.rmdir(path)
            s.removed = True  # tbstream_dev_drop_item; the advertisement stays published
            (h.dev / f"tbstream{s.index}").unlink()
            h.emit("remove", f"tbstream{s.index}", subsystem="misc")
            if not s.users:
                model.release_dev(h, s)  # else at the last close
            s.wake.notify_all()

    def write(self, path: Path, text: str) -> None:
        parts = self._rel(path)
        h = self.host
        with self.fabric.lock:
            s = h.streams.get((parts[0], parts[1])) if len(parts) == 3 else None
            attr = parts[-1]
            if s is None or attr not in ("in_hopid", "out_hopid", "ring_size", "throttling", "busy_poll"):
                raise _err(errno.EACCES, path)
            if attr == "busy_poll" and s.busy_poll is None:
                raise _err(errno.ENOENT, path)
            value = _kstrtoint(text, unsigned=attr not in ("in_hopid", "out_hopid"))
            if attr == "ring_size" and not 32 <= value <= 4096:
                raise _err(errno.EINVAL, path)
            if attr == "throttling" and value > MAX_THROTTLING:
                raise _err(errno.EINVAL, path)
            if attr == "busy_poll" and value not in (0, 1):
                raise _err(errno.EINVAL, path)
            if s.users:
                raise _err(errno.EBUSY, path)
            if attr in ("in_hopid", "out_hopid"):
                self._store_hopid(s, attr[:-6], value)
            else:
                setattr(s, attr, value)
            h.sync(s)

    def _store_hopid(self, s: Sdev, direction: str, value: int) -> None:
        """``tbstream_dev_in_hopid_store``: checked only while attached, stored as is otherwise."""
        h = self.host
        if not s.attached:
            setattr(s, f"{direction}_hopid", value)
            return
        ret = model.alloc_hopid(h, s, direction, value)
        if ret:
            raise _err(-ret)
        model.update_properties(h, s.name, s.in_hopid, s.out_hopid)

    def open_device(self, path: Path) -> FakeDevice:
        """``tbstream_dev_fops_open`` with O_NONBLOCK (the only way the project opens)."""
        h = self.host
        with self.fabric.lock:
            s = next((s for s in h.streams.values() if Path(path) == h.dev / f"tbstream{s.index}"), None)
            if s is None or not Path(path).exists():
                raise _err(errno.ENOENT, path)
            ret = model.valid(h, s)
            if ret:
                raise _err(-ret, path)
            if not s.users:
                pinned = sum(2 * o.ring_size for o in h.streams.values() if o.open)
                if pinned + 2 * s.ring_size > h.dma_pages:
                    raise _err(errno.ENOMEM, path)  # tb_ring_alloc / alloc_page failed
                s.tx.clear()
                s.rx.clear()
                s.rx_offset = 0
                s.closed = False
                s.running = True
            s.users += 1
            return FakeDevice(h, s, str(path))


class FakeDevice:
    """One open file of ``/dev/tbstreamN`` (O_NONBLOCK): read, write, poll and release as stream.c does."""

    def __init__(self, host: FakeHost, s: Sdev, name: str) -> None:
        self.host = host
        self.s = s
        self.name = name
        self.lock = host.fabric.lock
        self.is_closed = False

    def _valid(self) -> None:
        if self.is_closed:
            raise _err(errno.EBADF)
        ret = model.valid(self.host, self.s)
        if ret:
            raise _err(-ret, self.name)

    def readinto(self, view: memoryview) -> int:
        """``tbstream_dev_fops_read_iter``: EAGAIN while empty; 0 once for the CLOSE frame; partial frames kept."""
        with self.lock:
            self._valid()
            s = self.s
            if not s.rx:
                raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
            n = 0
            while n < len(view) and s.rx:
                frame = s.rx[0]
                if frame.close:
                    if not n:
                        s.rx.popleft()
                        s.closed = True
                    break
                part = frame.data[s.rx_offset : s.rx_offset + len(view) - n]
                view[n : n + len(part)] = part
                n += len(part)
                if s.rx_offset + len(part) < len(frame.data):
                    s.rx_offset += len(part)
                else:
                    s.rx.popleft()
                    s.rx_offset = 0
            self.host.fabric.work.notify_all()  # receive slots are free again
            return n

    def writev(self, views: Sequence[memoryview]) -> int:
        """``tbstream_dev_fops_write_iter``: EAGAIN only if the ring is full on entry, else a short count.

        Each write of n bytes takes ceil(n / 4096) slots. It does not fail after
        the peer closed: the frames just go nowhere.
        """
        with self.lock:
            self._valid()
            s = self.s
            if not s.tx_free():
                raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
            room = (s.ring_size - 1 - len(s.tx)) * FRAME
            data = _gather(views, room)
            for i in range(0, len(data), FRAME):
                s.tx.append(Frame(data[i : i + FRAME]))
            self.host.fabric.work.notify_all()
            return len(data)

    def poll(self, events: int, timeout_ms: int) -> int:
        """``tbstream_dev_fops_poll``: POLLHUP|POLLERR when detached; never a sign of the peer's close."""
        deadline = time.monotonic() + timeout_ms / 1000
        with self.lock:
            while True:
                mask = self._mask()
                ready = mask & (events | POLLHUP | POLLERR | POLLNVAL)
                left = deadline - time.monotonic()
                if ready or left <= 0:
                    return ready
                self.s.wake.wait(left)

    def _mask(self) -> int:
        if self.is_closed:
            return POLLNVAL
        if model.valid(self.host, self.s):
            return POLLHUP | POLLERR
        return (POLLOUT if self.s.tx_free() else 0) | (POLLIN if self.s.rx else 0)

    def close(self) -> None:
        """``tbstream_dev_fops_release``: one CLOSE if a slot is free, 500 ms to drain, the rest dropped."""
        with self.lock:
            if self.is_closed:
                return
            self.is_closed = True
            h, s = self.host, self.s
            s.users -= 1
            s.wake.notify_all()
            if s.users:
                return
            if s.tx_free():
                s.tx.append(Frame(b"", close=True))
            h.fabric.work.notify_all()
            end = time.monotonic() + FLUSH_MS / 1000
            while s.tx and model.valid(h, s) == 0 and time.monotonic() < end:
                s.wake.wait(end - time.monotonic())
            h.fabric.dropped += sum(len(f.data) for f in s.tx)  # dropped without an error
            s.tx.clear()
            s.rx.clear()
            s.running = False  # tbstream_dev_stop: rings freed, paths disabled
            if s.removed:
                model.release_dev(h, s)


def _gather(views: Sequence[memoryview], limit: int) -> bytes:
    out = bytearray()
    for v in views:
        if len(out) >= limit:
            break
        out += v[: limit - len(out)]
    return bytes(out)
