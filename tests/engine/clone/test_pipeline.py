"""The pipelines' building blocks, with real threads: a crew whose first error stops the others and
reaches its owner, bounded pipes that give up once the crew stops, a fixed pool of reused buffers,
and results that workers finish in any order taken in key order."""

from __future__ import annotations

import ctypes
import mmap
import threading

import pytest

from recovery.engine.clone import pipeline
from recovery.engine.clone.pipeline import BufferPool, Crew, Pipe, Reorder, Stopped, pool_count
from tests.helpers import wait_until

HELD = 3 * pipeline.TICK  # several of a blocked call's wake-ups: long enough to show it stays blocked


class Boom(Exception):
    """A worker's own error."""


def test_the_first_error_stops_every_thread_and_is_raised_by_check() -> None:
    crew = Crew("test")
    hooks: list[str] = []
    crew.on_fail.append(lambda: hooks.append("unblock"))
    inbox: Pipe[int] = Pipe(crew, 4)
    got: list[int] = []
    go = threading.Event()

    def consume() -> None:  # blocked on an empty pipe until the crew stops
        while True:
            got.append(inbox.get())

    def fail_first() -> None:
        go.wait(10)
        raise Boom("the first")

    def fail_later() -> None:  # fails because the others stopped: not what the owner hears
        crew.stop.wait(10)
        raise ValueError("the second")

    for i in range(2):
        crew.spawn(consume, name=f"consume{i}")
    crew.spawn(fail_later, name="later")
    crew.spawn(fail_first, name="first")
    inbox.put(7)
    wait_until(lambda: got == [7], 5, "a consumer to take the item")
    crew.check()  # nothing failed yet
    assert crew.alive()
    go.set()
    crew.join(5)
    assert not crew.alive()
    with pytest.raises(Boom, match="the first"):
        crew.check()
    assert hooks == ["unblock"]  # once, for the first error only
    assert [t.name for t in crew.threads] == ["test-consume0", "test-consume1", "test-later", "test-first"]


def test_every_on_fail_hook_runs_even_if_one_raises() -> None:
    crew = Crew("test")
    ran: list[str] = []

    def broken() -> None:
        ran.append("broken")
        raise OSError("already closed")

    crew.on_fail += [broken, lambda: ran.append("second")]

    def fail() -> None:
        raise Boom("worker")

    crew.spawn(fail, name="worker")
    crew.join(5)
    assert ran == ["broken", "second"]
    with pytest.raises(Boom):
        crew.check()


def test_a_thread_that_stops_with_stopped_is_no_error() -> None:
    crew = Crew("test")

    def stop() -> None:
        raise Stopped

    crew.spawn(stop, name="quits")
    crew.join(5)
    assert not crew.alive() and crew.error is None and not crew.stop.is_set()
    crew.check()


def test_shutdown_ends_blocked_threads_without_an_error() -> None:
    crew = Crew("test")
    pipe: Pipe[int] = Pipe(crew, 1)
    crew.spawn(pipe.get, name="waits")
    crew.shutdown()
    assert not crew.alive()
    crew.check()


def test_a_full_pipe_holds_the_putter_until_there_is_room() -> None:
    crew = Crew("test")
    pipe: Pipe[int] = Pipe(crew, 2)
    pipe.put(1)
    pipe.put(2)
    put = threading.Event()

    def put_third() -> None:
        pipe.put(3)
        put.set()

    crew.spawn(put_third, name="putter")
    assert not put.wait(HELD)
    assert pipe.qsize() == 2
    assert pipe.get() == 1
    assert put.wait(5)
    assert [pipe.get(), pipe.get()] == [2, 3]
    crew.shutdown()
    crew.check()


@pytest.mark.parametrize("call", ["put", "get"])
@pytest.mark.parametrize("how", ["stop", "fail"])
def test_a_blocked_call_gives_up_with_stopped_when_the_crew_stops(call: str, how: str) -> None:
    crew = Crew("test")
    pipe: Pipe[int] = Pipe(crew, 1)
    if call == "put":
        pipe.put(0)  # full: a put waits
    blocked = threading.Event()
    outcome: list[BaseException] = []

    def block() -> None:
        blocked.set()
        try:
            pipe.put(1) if call == "put" else pipe.get()
        except BaseException as e:
            outcome.append(e)
            raise

    thread = crew.spawn(block, name="blocked")
    assert blocked.wait(5)
    assert not outcome  # still waiting
    if how == "stop":
        crew.stop.set()
    else:
        crew.fail(Boom("elsewhere"))
    thread.join(5)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], Stopped)
    assert pipe.qsize() == (1 if call == "put" else 0)  # nothing went in or out


def _address(buf: mmap.mmap) -> int:
    view = ctypes.c_char.from_buffer(buf)
    try:
        return ctypes.addressof(view)
    finally:
        del view


def test_the_pool_has_a_fixed_number_of_aligned_buffers_and_hands_the_same_ones_out_again() -> None:
    crew = Crew("test")
    size = (1 << 20) + 512
    pool = BufferPool(crew, 3, size)
    bufs = [pool.get() for _ in range(3)]
    assert len({id(b) for b in bufs}) == 3
    assert all(len(b) == size and _address(b) % mmap.PAGESIZE == 0 for b in bufs)  # fit for O_DIRECT
    got: list[mmap.mmap] = []
    fourth = threading.Event()

    def take() -> None:
        got.append(pool.get())
        fourth.set()

    crew.spawn(take, name="taker")
    assert not fourth.wait(HELD)  # the pool never grows
    pool.put(bufs[1])
    assert fourth.wait(5)
    assert got[0] is bufs[1]  # the same buffer, reused
    crew.shutdown()
    crew.check()


def test_pool_count_keeps_the_workers_busy_within_the_budget() -> None:
    assert pool_count(2, 1 << 20) == 8  # two a worker, and four more
    assert pool_count(64, 1 << 20) == pipeline.POOL_BUDGET >> 20  # the budget bounds many workers
    assert pool_count(2, 1 << 30) == 4  # never fewer than four, however large the chunks


def test_results_finished_out_of_order_are_taken_in_key_order() -> None:
    crew = Crew("test")
    reorder: Reorder[int, str] = Reorder(crew)
    finished = [5, 2, 7, 0, 3, 6, 1, 4]
    taken: list[str] = []

    def take_all() -> None:
        for key in range(len(finished)):
            taken.append(reorder.take(key))

    def finish() -> None:
        for key in finished:
            reorder.put(key, f"frame {key}")

    consumer = crew.spawn(take_all, name="consumer")
    crew.spawn(finish, name="workers")
    consumer.join(5)
    crew.check()
    assert taken == [f"frame {key}" for key in range(len(finished))]
    assert reorder.items == {}


def test_items_of_an_older_epoch_are_dropped_while_the_new_one_is_awaited() -> None:
    crew = Crew("test")
    reorder: Reorder[tuple[int, int], str] = Reorder(crew)
    for seq in range(3):
        reorder.put((0, seq), f"old {seq}")
    dropped: list[str] = []
    result: list[str | None] = []

    def take() -> None:
        result.append(reorder.take_unless((1, 2), stale=lambda key: key[0] < 1, drop=dropped.append))

    consumer = crew.spawn(take, name="consumer")
    wait_until(lambda: len(dropped) == 3, 5, "the old epoch's items to be dropped")
    assert not result  # dropped while it waits for the new epoch's item
    reorder.put((1, 3), "new 3")
    reorder.put((0, 3), "old 3")  # a late result of the old epoch
    reorder.put((1, 2), "new 2")
    consumer.join(5)
    crew.check()
    assert result == ["new 2"]
    assert sorted(dropped) == ["old 0", "old 1", "old 2", "old 3"]
    assert reorder.items == {(1, 3): "new 3"}  # the new epoch's next one stays


def test_a_waiting_take_gives_up_when_woken_to_look_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "TICK", 60.0)  # only wake() makes it look again within the test
    crew = Crew("test")
    reorder: Reorder[int, str] = Reorder(crew)
    rewind = threading.Event()
    result: list[str | None] = []
    consumer = crew.spawn(lambda: result.append(reorder.take_unless(0, unless=rewind.is_set)), name="consumer")
    rewind.set()
    reorder.wake()
    consumer.join(5)
    assert not consumer.is_alive() and result == [None]
    crew.check()


def test_a_waiting_take_ends_with_stopped_when_the_crew_fails() -> None:
    crew = Crew("test")
    reorder: Reorder[int, str] = Reorder(crew)
    outcome: list[BaseException] = []

    def take() -> None:
        try:
            reorder.take(0)
        except BaseException as e:
            outcome.append(e)
            raise

    consumer = crew.spawn(take, name="consumer")
    crew.fail(Boom("elsewhere"))
    consumer.join(5)
    assert len(outcome) == 1 and isinstance(outcome[0], Stopped)
    with pytest.raises(Boom):
        crew.check()
