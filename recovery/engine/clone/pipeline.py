"""Building blocks of the threaded pipelines: a crew of threads, bounded
queues that honour a stop signal, and a pool of reusable buffers.

The first exception in any thread of a :class:`Crew` stops every other
thread (each blocking call wakes up at least every :data:`TICK` seconds to
check) and is re-raised by :meth:`Crew.check` in the thread that owns the
crew, so a worker's error travels to the caller instead of vanishing.
"""

from __future__ import annotations

import mmap
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
K = TypeVar("K")
TICK = 0.2
POOL_BUDGET = 64 << 20  # bytes one buffer pool may hold, whatever the chunk size and the cores


def pool_count(workers: int, size: int) -> int:
    """How many buffers of ``size`` a pool gets: enough to keep ``workers`` busy, within the budget,
    so what the peer chose (the chunk size) and the cores here cannot make memory grow without end."""
    return max(4, min(2 * workers + 4, POOL_BUDGET // max(1, size)))


class Stopped(Exception):
    """The crew was stopped; the thread should just return."""


class Crew:
    def __init__(self, name: str) -> None:
        self.name = name
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.on_fail: list[Callable[[], None]] = []

    def spawn(self, fn: Callable[..., Any], *args: Any, name: str) -> threading.Thread:
        def body() -> None:
            try:
                fn(*args)
            except Stopped:
                pass
            except BaseException as e:  # noqa: BLE001 - handed to the owner via check()
                self.fail(e)

        t = threading.Thread(target=body, name=f"{self.name}-{name}", daemon=True)
        t.start()
        self.threads.append(t)
        return t

    def fail(self, error: BaseException) -> None:
        with self._lock:
            if self.error is not None:
                return
            self.error = error
        self.stop.set()
        for hook in self.on_fail:
            try:
                hook()
            except Exception:  # noqa: BLE001 - best-effort unblocking
                pass

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def join(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def shutdown(self) -> None:
        self.stop.set()
        self.join()


class Pipe(Generic[T]):
    """A bounded queue whose blocking calls give up when the crew stops."""

    def __init__(self, crew: Crew, size: int) -> None:
        self.crew = crew
        self.q: queue.Queue[T] = queue.Queue(size)

    def put(self, item: T) -> None:
        while True:
            if self.crew.stop.is_set():
                raise Stopped
            try:
                self.q.put(item, timeout=TICK)
                return
            except queue.Full:
                continue

    def get(self) -> T:
        while True:
            if self.crew.stop.is_set():
                raise Stopped
            try:
                return self.q.get(timeout=TICK)
            except queue.Empty:
                continue

    def qsize(self) -> int:
        return self.q.qsize()


class BufferPool:
    """A fixed set of page-aligned buffers, reused for the whole run.

    Page alignment lets the same buffers serve O_DIRECT reads. Memory use is
    ``count * size`` whatever the disk size.
    """

    def __init__(self, crew: Crew, count: int, size: int) -> None:
        self.size = size
        self.free: Pipe[mmap.mmap] = Pipe(crew, count)
        for _ in range(count):
            self.free.put(mmap.mmap(-1, size))

    def get(self) -> mmap.mmap:
        return self.free.get()

    def put(self, buf: mmap.mmap) -> None:
        self.free.q.put_nowait(buf)


class Reorder(Generic[K, T]):
    """Results that workers finish out of order, taken out in sequence order.

    Keys are frame numbers, or (epoch, frame number) where a stream may go
    back: :meth:`take` then drops the items of older epochs as they come.
    """

    def __init__(self, crew: Crew) -> None:
        self.crew = crew
        self.cond = threading.Condition()
        self.items: dict[K, T] = {}
        self.waiting = 0.0  # seconds the consumer spent waiting

    def put(self, key: K, item: T) -> None:
        with self.cond:
            self.items[key] = item
            self.cond.notify_all()

    def take(self, key: K) -> T:
        item = self.take_unless(key)
        assert item is not None
        return item

    def take_unless(
        self,
        key: K,
        *,
        stale: Callable[[K], bool] | None = None,
        drop: Callable[[T], None] = lambda item: None,
        unless: Callable[[], bool] = lambda: False,
    ) -> T | None:
        """The item for ``key``, or None once ``unless()`` is true (:meth:`wake` makes it look).

        Meanwhile every item whose key is ``stale`` is handed to ``drop``.
        """
        start = time.monotonic()
        with self.cond:
            while True:
                if stale is not None:
                    for old in [k for k in self.items if stale(k)]:
                        drop(self.items.pop(old))
                if key in self.items:
                    break
                if unless():
                    return None
                if self.crew.stop.is_set():
                    raise Stopped
                self.cond.wait(TICK)
            self.waiting += time.monotonic() - start
            return self.items.pop(key)

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()


SCHEDSTAT = "/proc/thread-self/schedstat"  # time on a processor, time waiting in the run queue (ns)


class _SchedStat:
    """This thread's schedstat, kept open: a pread of it costs a microsecond; closed with the thread."""

    def __init__(self) -> None:
        try:
            self.fd = os.open(SCHEDSTAT, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self.fd = -1

    def run_delay(self) -> float:
        """Seconds this thread was ready to run but waited for a processor (0.0 when the kernel does not say)."""
        if self.fd < 0:
            return 0.0
        try:
            fields = os.pread(self.fd, 128, 0).split()
            return int(fields[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return 0.0

    def __del__(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)


_thread = threading.local()


def processor_seconds() -> float:
    """This thread's time on a processor plus its time waiting for one (other programs, a cgroup's CPU
    limit): what a stage spends because processors are short, as opposed to waiting for a disk or a peer."""
    stat = getattr(_thread, "schedstat", None)
    if stat is None:
        stat = _thread.schedstat = _SchedStat()
    return time.thread_time() + stat.run_delay()


class Meter:
    """Busy time of one pipeline stage, summed over its threads; work under way counts as it goes,
    so a chunk that takes seconds (a high zstd level) shows as busy while it runs, not at the end.
    Of each finished piece it also sums the processor time (:func:`processor_seconds`)."""

    def __init__(self) -> None:
        self._done = 0.0
        self._cpu = 0.0
        self._open: dict[int, tuple[float, float]] = {}
        self._next = 0
        self._lock = threading.Lock()

    def begin(self) -> int:
        """A piece of work starts (on the calling thread); give the token to :meth:`end`, on that thread."""
        started = (time.monotonic(), processor_seconds())
        with self._lock:
            token = self._next
            self._next += 1
            self._open[token] = started
            return token

    def end(self, token: int) -> None:
        ended = (time.monotonic(), processor_seconds())
        with self._lock:
            wall, cpu = self._open.pop(token)
            self._done += ended[0] - wall
            self._cpu += max(0.0, ended[1] - cpu)

    def add(self, seconds: float) -> None:
        with self._lock:
            self._done += seconds

    @property
    def busy(self) -> float:
        with self._lock:
            now = time.monotonic()
            return self._done + sum(now - t for t, _ in self._open.values())

    def spent(self) -> tuple[float, float]:
        """The finished pieces' wall time and, of it, processor time (seconds, summed)."""
        with self._lock:
            return self._done, self._cpu
