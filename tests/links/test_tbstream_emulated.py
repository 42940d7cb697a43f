"""The USB4STREAM link against an emulated kernel (no Thunderbolt hardware here).

What this emulation covers: the sysfs lookups (XDomain, services, this
host's UUID, names that differ between the hosts), the ConfigFS steps as the
kernel reacts to them (group and stream mkdir, the index and the
/dev/tbstreamN node appearing, HopID allocation with -1, adoption of the
peer's published HopIDs after a propagation delay, the adopter's
remove-and-retry loop, rmdir), the ledger that limits cleanup to what we made
(also after a killed run), the non-blocking open retried until the peer is
attached, the SYNC/READY handshake when bytes written before the peer opens
are lost, a whole clone through the engine, and a pulled cable (the open
device breaks, the XDomain disappears from sysfs).

What only hardware (or the real kernel in the boot-image VM test) can show:
that the real ConfigFS accepts exactly these writes, real DMA rings and
HopID paths carrying data, ENXIO and POLLHUP|POLLERR from a pulled cable
(the emulation gives end of stream or EPIPE, which map to the same
LinkError), XDomain property exchange timing, throughput, and the
wedged-path failure the open-once rule avoids.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from recovery.cli import stream as stream_cli
from recovery.engine.api import ReceiveOptions, SendOptions
from recovery.engine.receive import receive_disk
from recovery.engine.send import send_disk
from recovery.errors import CancelledError, LinkError, NoPeerError, UsageError
from recovery.link.base import Connection
from recovery.link.discovery import choose_link
from recovery.link.select import LinkSpec
from recovery.link.tbstream import CONTROL_NAME, DATA_NAME, open_link
from recovery.link.tbstream.ledger import Entry
from tests.helpers import CODE
from tests.links.fakekernel import Fabric, FakeHost

SMALL = "00000000-0000-0000-0000-00000000000a"  # alpha: allocates
LARGE = "ffffffff-0000-0000-0000-00000000000b"  # beta: adopts


@pytest.fixture
def fabric(tmp_path: Path) -> Iterator[Fabric]:
    f = Fabric(tmp_path, a_uuid=SMALL, b_uuid=LARGE)
    yield f
    f.unplug()


def in_thread(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Start ``fn``; the returned callable joins it and returns its result or raises its error."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()

    def join() -> Any:
        t.join(30)
        assert not t.is_alive(), "opener hung"
        if "error" in box:
            raise box["error"]
        return box["value"]

    return join


def connect_pair(fabric: Fabric, *, adopter_first: float = 0.5, timeout: float = 10) -> tuple[Connection, Connection]:
    """alpha receives, beta sends; beta (the adopter) starts first so it must retry."""
    listening: list[tuple[str, int, str]] = []
    beta = in_thread(lambda: open_link(LinkSpec("tbstream"), "send", timeout=timeout, on_listening=None,
                                       host=fabric.b.host()))
    time.sleep(adopter_first)
    alpha = in_thread(lambda: open_link(LinkSpec("tbstream"), "receive", timeout=timeout,
                                        on_listening=lambda *a: listening.append(a), host=fabric.a.host()))
    a, b = alpha(), beta()
    assert listening == [("0-1.0", 0, "tbstream")]
    return a, b


def assert_clean(*hosts: FakeHost) -> None:
    for h in hosts:
        assert h.our_dirs() == [], f"{h.name} kept ConfigFS directories"
        assert h.nodes() == [], f"{h.name} kept device nodes"
        assert h.host().ledger.entries() == []


def test_two_hosts_agree_and_clean_up(fabric: Fabric) -> None:
    fabric.plug()
    a, b = connect_pair(fabric)
    # Both hosts made the two streams in the group named after *their* view of the peer's service.
    assert sorted(fabric.a.streams) == [("0-1.0", CONTROL_NAME), ("0-1.0", DATA_NAME)]
    assert sorted(fabric.b.streams) == [("0-3.1", CONTROL_NAME), ("0-3.1", DATA_NAME)]
    for name in (CONTROL_NAME, DATA_NAME):
        sa, sb = fabric.a.streams[("0-1.0", name)], fabric.b.streams[("0-3.1", name)]
        assert (sa.in_hopid, sa.out_hopid) == (sb.out_hopid, sb.in_hopid) != (0, 0)
    assert fabric.dropped > 0, "the emulation should have lost the SYNCs sent before the peer opened"
    with a, b:
        a.control.send(b"ping")
        assert b.control.recv_some(4) == b"ping"
        b.data.send(b"x" * 100_000)
        got = bytearray(100_000)
        a.data.recv_exact(memoryview(got))
        assert got == b"x" * 100_000
        assert a.kind == b.kind == "tbstream"
        assert "beta box" in a.peer and "/tbstream" in a.peer
    assert_clean(fabric.a, fabric.b)


def test_clone_through_the_engine(fabric: Fabric, tmp_path: Path) -> None:
    fabric.plug()
    source = tmp_path / "source.img"
    data = os.urandom(3 << 20) + bytes(2 << 20) + os.urandom(1 << 20)
    source.write_bytes(data)
    target = tmp_path / "target.img"
    a, b = connect_pair(fabric)
    with a, b:
        recv = in_thread(lambda: receive_disk(a, ReceiveOptions(target=str(target), timeout=10, code=CODE)))
        sent = send_disk(b, SendOptions(source=str(source), mode="exact", timeout=10, chunk_size=1 << 20,
                                        code=CODE))
        got = recv()
    assert sent.verified and got.verified
    assert target.read_bytes() == data
    assert_clean(fabric.a, fabric.b)


def test_pulled_cable_is_link_lost_and_cleans_up(fabric: Fabric) -> None:
    fabric.plug()
    a, b = connect_pair(fabric)
    fabric.unplug()
    with pytest.raises(LinkError, match="left the cable"):
        b.data.send(b"y" * (8 << 20))  # the pump is gone: the write fails once buffers fill
    with pytest.raises(LinkError, match="left the cable"):
        a.control.recv_some(16)  # end of stream with the peer gone from sysfs is a pulled cable
    a.close()
    b.close()
    assert_clean(fabric.a, fabric.b)


def test_adopter_gives_up_cleanly_without_a_peer(fabric: Fabric) -> None:
    fabric.plug()
    with pytest.raises(NoPeerError, match=f"did not offer stream {CONTROL_NAME}"):
        open_link(LinkSpec("tbstream"), "send", timeout=1.0, on_listening=None, host=fabric.b.host())
    assert_clean(fabric.b)


def test_allocator_gives_up_cleanly_when_the_peer_never_opens(fabric: Fabric) -> None:
    fabric.plug()
    with pytest.raises(NoPeerError, match="did not answer on the control stream"):
        open_link(LinkSpec("tbstream"), "send", timeout=1.0, on_listening=None, host=fabric.a.host())
    assert_clean(fabric.a)


@pytest.mark.parametrize("side", ["adopter", "allocator"])
def test_a_stop_ends_the_wait_for_the_peer_and_cleans_up(fabric: Fabric, side: str) -> None:
    """The wizard quitting: the adopter waits for HopIDs, the allocator for the handshake."""
    fabric.plug()
    fake = fabric.b if side == "adopter" else fabric.a
    stop = threading.Event()
    opener = in_thread(lambda: open_link(LinkSpec("tbstream"), "send", timeout=60, on_listening=None,
                                         stop=stop, host=fake.host()))
    time.sleep(0.5)
    stop.set()
    stopped = time.monotonic()
    with pytest.raises(CancelledError):
        opener()
    assert time.monotonic() - stopped < 5, "the opener kept waiting after the stop"
    assert_clean(fake)


def test_equal_uuids_are_refused(fabric: Fabric) -> None:
    fabric.b.uuid = SMALL  # the rule could not pick an allocator
    fabric.plug()
    with pytest.raises(LinkError, match="same UUID"):
        open_link(LinkSpec("tbstream"), "send", timeout=1.0, on_listening=None, host=fabric.a.host())
    assert_clean(fabric.a)


def test_no_peer_on_the_cable(fabric: Fabric) -> None:
    with pytest.raises(NoPeerError, match="no peer is on the cable"):
        open_link(LinkSpec("tbstream"), "send", timeout=1.0, on_listening=None, host=fabric.a.host())


def test_peer_with_an_older_kernel(fabric: Fabric) -> None:
    fabric.without_stream_module(fabric.b)
    fabric.plug()
    with pytest.raises(NoPeerError, match="offer no stream service"):
        open_link(LinkSpec("tbstream"), "send", timeout=1.0, on_listening=None, host=fabric.a.host())
    assert choose_link(fabric.a.host().sysfs) == "tbnet"  # auto falls back on both sides alike
    assert choose_link(fabric.b.host().sysfs) == "tbnet"


def test_auto_prefers_streams_when_both_have_them(fabric: Fabric) -> None:
    fabric.plug()
    assert choose_link(fabric.a.host().sysfs) == "tbstream"
    assert choose_link(fabric.b.host().sysfs) == "tbstream"


def test_a_group_made_by_someone_else_is_kept(fabric: Fabric) -> None:
    fabric.plug()
    fabric.a.host().tree.ops.mkdir(fabric.a.config / "0-1.0")
    a, b = connect_pair(fabric)
    a.close()
    b.close()
    assert fabric.a.our_dirs() == ["0-1.0"]
    assert fabric.b.our_dirs() == []


def test_a_stream_we_did_not_make_is_refused_and_left_alone(fabric: Fabric) -> None:
    fabric.plug()
    ops = fabric.a.host().tree.ops
    ops.mkdir(fabric.a.config / "0-1.0")
    ops.mkdir(fabric.a.config / "0-1.0" / CONTROL_NAME)
    with pytest.raises(LinkError, match="not made by usb4-recovery"):
        open_link(LinkSpec("tbstream"), "send", timeout=1.0, on_listening=None, host=fabric.a.host())
    assert fabric.a.our_dirs() == ["0-1.0", f"0-1.0/{CONTROL_NAME}"]


def test_streams_of_a_killed_run_are_swept(fabric: Fabric) -> None:
    fabric.plug()
    host = fabric.a.host()
    group = fabric.a.config / "0-1.0"
    host.tree.ops.mkdir(group)
    host.tree.ops.mkdir(group / CONTROL_NAME)
    dead = _dead_pid()
    with host.ledger.edit() as entries:
        entries += [Entry(str(group), "group", "link", dead), Entry(str(group / CONTROL_NAME), "stream", "link", dead)]
    a, b = connect_pair(fabric)
    a.close()
    b.close()
    assert_clean(fabric.a, fabric.b)


def test_stream_up_list_and_down(fabric: Fabric) -> None:
    fabric.plug()
    beta = in_thread(lambda: stream_cli.up(fabric.b.host(), "backup", None, 10))
    alpha = in_thread(lambda: stream_cli.up(fabric.a.host(), "backup", None, 10))
    (ia, allocated_a), (ib, allocated_b) = alpha(), beta()
    assert (allocated_a, allocated_b) == (True, False)
    assert ia.device.exists() and ia.device.parent == fabric.a.dev
    assert (ia.in_hopid, ia.out_hopid) == (ib.out_hopid, ib.in_hopid)
    assert stream_cli.up(fabric.a.host(), "backup", None, 1) == (ia, True)  # up again: the same device
    # a stream someone else made in the same group
    fabric.a.host().tree.ops.mkdir(fabric.a.config / "0-1.0" / "other")
    rows = {r.info.name: r.made_by for r in stream_cli.list_streams(fabric.a.host())}
    assert rows == {"backup": "stream up", "other": ""}
    with pytest.raises(UsageError, match="not made by `recovery stream up`"):
        stream_cli.down(fabric.a.host(), "other", None)
    assert stream_cli.down(fabric.a.host(), "backup", None) == [str(fabric.a.config / "0-1.0" / "backup")]
    assert fabric.a.our_dirs() == ["0-1.0", "0-1.0/other"]  # the group is not empty: kept
    stream_cli.down(fabric.b.host(), "backup", None)
    assert_clean(fabric.b)
    with pytest.raises(UsageError, match="there is no stream"):
        stream_cli.down(fabric.b.host(), "backup", None)


def test_stream_names_are_checked_before_the_kernel_sees_them(fabric: Fabric) -> None:
    fabric.plug()
    with pytest.raises(UsageError, match="1 to 8 letters"):
        stream_cli.up(fabric.a.host(), "toolongname", None, 1)
    with pytest.raises(OSError, match="too long"):  # and the emulated kernel agrees
        fabric.a.host().tree.ops.mkdir(fabric.a.config / "0-1.0" / "toolongname")


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid
