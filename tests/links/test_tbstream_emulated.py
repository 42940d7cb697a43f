"""The USB4STREAM link against the emulated 7.2 kernel (no Thunderbolt hardware here).

What this covers: the sysfs lookups (XDomain, services, this host's UUID,
names that differ between the hosts), the ConfigFS steps as the kernel
reacts to them, the HopID rule (the same explicit HopID both ways, from the
top, after attach; never 8; confirmed in the handshake; the data HopID
settled when the hosts differ), zeroing before every rmdir, the ledger that
limits cleanup to what we made (also after a killed run), the non-blocking
open, rings that fall back when the kernel cannot pin them, the SYNC/READY
handshake when bytes written before the peer opens are lost, a whole clone
through the engine, a pulled cable, a peer that closes under a pure writer,
the end of a transfer waiting for the peer's acknowledgement, and
thunderbolt-net next to the streams.

What only hardware (or the real kernel in the boot-image VM test) can show:
that the real ConfigFS accepts exactly these writes with a peer attached,
real DMA rings and HopID paths carrying data, ENXIO and POLLHUP|POLLERR from
a real unplug, property-exchange timing, throughput, and the wedged-path
failure the open-once rule avoids. tests/links/fakekernel says what the
emulation does not model.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from recovery.cli import stream as stream_cli
from recovery.engine.api import ReceiveOptions, SendOptions
from recovery.engine.clone.receive import receive_disk
from recovery.engine.clone.send import send_disk
from recovery.errors import CancelledError, LinkError, NoPeerError, UsageError
from recovery.link.base import Connection
from recovery.link.deadline import Deadline
from recovery.link.discovery import choose_link
from recovery.link.spec import LinkSpec
from recovery.link.tbstream import link as tblink
from recovery.link.tbstream import open_link, open_streams
from recovery.link.tbstream.configfs import StreamTree
from recovery.link.tbstream.hopids import manual_rule
from recovery.link.tbstream.ledger import Entry
from tests.helpers import CODE, wait_until
from tests.links.conftest import SMALL
from tests.links.fakekernel import Fabric, FakeHost
from tests.links.fakekernel.model import Sdev

CTL_A, DATA_A, CTL_B, DATA_B = "rcvctla", "rcvdata", "rcvctlb", "rcvdatb"


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


def waiting_for_the_peer(fabric: Fabric) -> None:
    """Until a host that opened its control stream alone sends SYNCs that nobody receives."""
    wait_until(lambda: fabric.dropped > 0, 10, "a host to wait for its peer in the handshake")


def carrying(stream: Sdev) -> None:
    """Until bytes written to the peer have reached ``stream`` (a transfer is under way)."""
    wait_until(lambda: len(stream.rx) > 0, 10, f"bytes to reach {stream.name}")


def connect_pair(
    fabric: Fabric, *, first: FakeHost | None = None, timeout: float = 10
) -> tuple[Connection, Connection]:
    """alpha receives, beta sends; ``first`` (beta by default) starts first and waits for the other in the
    handshake before it starts."""
    listening: list[tuple[str, int, str]] = []
    first = first or fabric.b

    def opener(h: FakeHost) -> Callable[[], Any]:
        if h is fabric.a:
            return lambda: open_link(
                LinkSpec("tbstream"),
                "receive",
                timeout=timeout,
                on_listening=lambda *a: listening.append(a),
                host=h.host(),
            )
        return lambda: open_link(LinkSpec("tbstream"), "send", timeout=timeout, on_listening=None, host=h.host())

    other = fabric.a if first is fabric.b else fabric.b
    one = in_thread(opener(first))
    waiting_for_the_peer(fabric)
    two = in_thread(opener(other))
    got = {first.name: one(), other.name: two()}
    assert listening == [("0-1.0", 0, "tbstream")]
    return got["alpha"], got["beta"]


def hopids(h: FakeHost) -> dict[str, tuple[int, int]]:
    return {name: (s.in_hopid, s.out_hopid) for (_, name), s in h.streams.items()}


def hold(h: FakeHost, name: str, hopid: int) -> StreamTree:
    """A stream on ``h`` only that holds ``hopid`` both ways (someone's, or left over)."""
    t = h.host().tree
    t.make_group(h.stream_service)
    t.make_stream(h.stream_service, name)
    for attr in ("in_hopid", "out_hopid"):
        t.write(h.stream_service, name, attr, hopid)
    return t


def assert_clean(*hosts: FakeHost) -> None:
    for h in hosts:
        assert h.our_dirs() == [], f"{h.name} kept ConfigFS directories"
        assert h.nodes() == [], f"{h.name} kept device nodes"
        assert h.host().ledger.entries() == []
        assert h.local_props == {}, f"{h.name} still advertises {h.local_props}"
        assert not [line for line in h.log if "ida_free" in line], h.log


def test_two_hosts_agree_and_clean_up(fabric: Fabric) -> None:
    fabric.plug()
    a, b = connect_pair(fabric)
    # Each host names its streams its own way (so the kernel never adopts), in the group named after
    # its view of the peer's service, with the same explicit HopID both ways from the top: alpha's
    # maximum (15) bounds both, beta stepped down to it.
    assert hopids(fabric.a) == {CTL_A: (15, 15), DATA_A: (14, 14)}
    assert hopids(fabric.b) == {CTL_B: (15, 15), DATA_B: (14, 14)}
    assert sorted(fabric.b.streams) == [("0-3.1", CTL_B), ("0-3.1", DATA_B)]
    assert fabric.a.xd is not None and 8 not in fabric.a.xd.in_pool  # thunderbolt-net's is left alone
    assert fabric.dropped > 0, "the emulation should have lost the SYNCs sent before the peer opened"
    assert [s.ring_size for s in fabric.a.streams.values()] == [256, 1024]
    with a, b:
        a.control.send(b"ping")
        assert b.control.recv_some(4) == b"ping"
        b.data.send(b"x" * 3_000_000)
        got = bytearray(3_000_000)
        a.data.recv_exact(memoryview(got))
        assert got == b"x" * 3_000_000
        assert a.kind == b.kind == "tbstream"
        assert "beta box" in a.peer and "HopIDs 15, 14" in a.peer
    assert_clean(fabric.a, fabric.b)


def test_either_host_may_start_first(fabric: Fabric) -> None:
    fabric.plug()
    a, b = connect_pair(fabric, first=fabric.a)
    a.close()
    b.close()
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
        sent = send_disk(b, SendOptions(source=str(source), mode="exact", timeout=10, chunk_size=1 << 20, code=CODE))
        got = recv()
    assert sent.verified and got.verified
    assert target.read_bytes() == data
    assert_clean(fabric.a, fabric.b)


def test_pulled_cable_is_link_lost_at_once_and_cleans_up(fabric: Fabric) -> None:
    fabric.plug()
    a, b = connect_pair(fabric)
    writer = in_thread(lambda: [b.data.send(bytes(1 << 20)) for _ in range(1000)])
    carrying(fabric.a.streams[(fabric.a.stream_service, DATA_A)])
    fabric.unplug()
    pulled = time.monotonic()
    with pytest.raises(LinkError, match="left the cable"):
        writer()
    assert time.monotonic() - pulled < 2, "the writer noticed the unplug late"
    with pytest.raises(LinkError, match="left the cable"):
        a.control.recv_some(16)
    assert a.gone() and b.gone()
    a.close()
    b.close()
    assert_clean(fabric.a, fabric.b)


def test_a_pure_writer_sees_the_peer_close(fabric: Fabric) -> None:
    """On 7.2 a write after the peer's close succeeds and poll says nothing: the channel's reader
    notices the CLOSE frame and the writer fails within a second or two, instead of blocking."""
    fabric.plug()
    a, b = connect_pair(fabric)
    writer = in_thread(lambda: [b.data.send(bytes(1 << 20)) for _ in range(100_000)])
    carrying(fabric.a.streams[(fabric.a.stream_service, DATA_A)])
    a.close()  # the receiver goes away without a word
    closed = time.monotonic()
    with pytest.raises(LinkError, match="closed the data stream"):
        writer()
    assert time.monotonic() - closed < 3
    b.close()
    assert_clean(fabric.a, fabric.b)


def test_the_end_waits_for_the_peers_acknowledgement(fabric: Fabric) -> None:
    fabric.plug()
    a, b = connect_pair(fabric)
    acked = threading.Event()
    threading.Timer(0.3, acked.set).start()
    started = time.monotonic()
    b.close_after_ack(acked, timeout=5)  # the engine saw the peer's "bye": close
    assert 0.25 < time.monotonic() - started < 3
    with pytest.raises(LinkError, match="closed the control stream before it acknowledged"):
        a.close_after_ack(threading.Event(), timeout=5)  # the peer left instead
    c, d = connect_pair(fabric)
    with pytest.raises(LinkError, match=r"did not acknowledge the end of the transfer within 0\.5 s"):
        c.close_after_ack(threading.Event(), timeout=0.5)
    d.close()
    assert_clean(fabric.a, fabric.b)


def test_the_data_hopid_is_settled_when_the_hosts_differ(fabric: Fabric) -> None:
    """A stream only beta has holds HopID 14 there: beta's data stream takes 13, alpha's 14; the
    handshake on the control stream brings both to 13 before the data stream is opened."""
    fabric.plug()
    t = hold(fabric.b, "stale", 14)
    results = {"beta": in_thread(lambda: open_streams(fabric.b.host(), None, Deadline(10)))}
    waiting_for_the_peer(fabric)
    results["alpha"] = in_thread(lambda: open_streams(fabric.a.host(), None, Deadline(10)))
    (a, agreed_a), (b, agreed_b) = results["alpha"](), results["beta"]()
    assert (agreed_a.data_hopid, agreed_b.data_hopid, agreed_a.rounds, agreed_b.rounds) == (13, 13, 1, 1)
    with a, b:
        a.data.send(b"over 13")
        assert b.data.recv_some(7) == b"over 13"
    t.remove_stream(fabric.b.stream_service, "stale")


def test_different_control_hopids_end_with_a_clear_error(fabric: Fabric) -> None:
    """A half-set-up stream only alpha has holds 15 there: the control streams take 14 and 15 and
    can never meet. Both sides stop at the deadline and say what to check."""
    fabric.plug()
    t = hold(fabric.a, "half", 15)
    joins = [
        in_thread(lambda h=h: open_link(LinkSpec("tbstream"), "send", timeout=2, on_listening=None, host=h.host()))
        for h in (fabric.a, fabric.b)
    ]
    for join in joins:
        with pytest.raises(NoPeerError, match=r"did not answer on the control stream \(HopID 1[45]\)") as e:
            join()
        assert e.value.hint and "different HopIDs" in e.value.hint
    t.remove_stream(fabric.a.stream_service, "half")
    t.remove(t.group_path(fabric.a.stream_service))  # the test made it
    assert_clean(fabric.a, fabric.b)


def test_rings_fall_back_when_the_kernel_cannot_pin_them(fabric: Fabric) -> None:
    fabric.a.dma_pages = 1500  # 256 + 1024 slots both ways do not fit; 256 + 256 do
    fabric.plug()
    a, b = connect_pair(fabric)
    assert [s.ring_size for s in fabric.a.streams.values()] == [256, 256]
    assert [s.ring_size for s in fabric.b.streams.values()] == [256, 1024]
    with a, b:
        b.data.send(bytes(1 << 20))
        a.data.recv_exact(memoryview(bytearray(1 << 20)))


def test_thunderbolt_net_and_streams_leave_each_other_their_hopids(fabric: Fabric) -> None:
    """thunderbolt-net up first (8 both ways), then the streams (15, 14); and the other way round:
    streams first, then thunderbolt-net still gets 8 and its carrier."""
    fabric.plug()
    for h in (fabric.a, fabric.b):
        h.net_up()
    assert fabric.a.net.carrier
    a, b = connect_pair(fabric)
    for h in (fabric.a, fabric.b):
        assert h.xd is not None and h.xd.in_pool[8] == h.xd.out_pool[8] == "thunderbolt-net"
        assert h.net.carrier
    assert hopids(fabric.a) == {CTL_A: (15, 15), DATA_A: (14, 14)}
    a.close()
    b.close()
    fabric.unplug()
    fabric.plug()
    a, b = connect_pair(fabric)
    for h in (fabric.a, fabric.b):
        h.net_up()
    assert fabric.a.net.carrier and fabric.a.net.in_hopid == 8
    assert not [line for line in fabric.a.log + fabric.b.log if "Rx HopID" in line]
    a.close()
    b.close()
    assert_clean(fabric.a, fabric.b)


def test_streams_wait_for_thunderbolt_nets_carrier(fabric: Fabric, monkeypatch: pytest.MonkeyPatch) -> None:
    """An interface that is up gets its carrier before streams take HopIDs; one that is down is not waited for."""
    fabric.plug()
    fabric.a.net_up()  # alpha's side up; beta's not yet: no carrier
    sysfs = fabric.a.host().sysfs
    peer = sysfs.peer("0-1")
    assert peer is not None
    threading.Timer(0.5, fabric.b.net_up).start()
    started = time.monotonic()
    assert tblink.settle_tbnet(sysfs, peer, Deadline(10))
    assert 0.4 < time.monotonic() - started < 3
    monkeypatch.setattr(tblink, "CARRIER_WAIT", 0.3)
    fabric.unplug()
    fabric.plug()
    assert not tblink.settle_tbnet(sysfs, sysfs.peer("0-1"), Deadline(10))  # type: ignore[arg-type]


def test_allocator_gives_up_cleanly_when_the_peer_never_opens(fabric: Fabric) -> None:
    fabric.plug()
    with pytest.raises(NoPeerError, match="did not answer on the control stream"):
        open_link(LinkSpec("tbstream"), "send", timeout=1.0, on_listening=None, host=fabric.a.host())
    assert_clean(fabric.a)


@pytest.mark.parametrize("when", ["attach", "handshake"])
def test_a_stop_ends_the_wait_for_the_peer_and_cleans_up(fabric: Fabric, when: str) -> None:
    """The wizard quitting while the stream waits to attach (the peer's driver not bound yet) or
    for the peer's handshake."""
    fabric.plug()
    if when == "attach":  # the service is there but thunderbolt_stream is not bound to it yet
        (fabric.a.sys / "devices" / "domain0" / "0-0" / "0-1" / "0-1.0" / "driver").unlink()
    stop = threading.Event()
    opener = in_thread(
        lambda: open_link(LinkSpec("tbstream"), "send", timeout=60, on_listening=None, stop=stop, host=fabric.a.host())
    )
    if when == "attach":  # its streams are made: it waits for them to attach
        wait_until(lambda: len(fabric.a.streams) == 2, 10, "alpha's streams")
    else:
        waiting_for_the_peer(fabric)
    stop.set()
    stopped = time.monotonic()
    with pytest.raises(CancelledError):
        opener()
    assert time.monotonic() - stopped < 2, "the opener kept waiting after the stop"
    assert_clean(fabric.a)


def test_equal_uuids_are_refused(fabric: Fabric) -> None:
    fabric.b.uuid = SMALL
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
    ops.mkdir(fabric.a.config / "0-1.0" / CTL_A)
    with pytest.raises(LinkError, match="not made by usb4-recovery"):
        open_link(LinkSpec("tbstream"), "send", timeout=1.0, on_listening=None, host=fabric.a.host())
    assert fabric.a.our_dirs() == ["0-1.0", f"0-1.0/{CTL_A}"]


def test_streams_of_a_killed_run_are_swept(fabric: Fabric) -> None:
    fabric.plug()
    host = fabric.a.host()
    group = fabric.a.config / "0-1.0"
    host.tree.ops.mkdir(group)
    host.tree.ops.mkdir(group / CTL_A)
    for attr in ("in_hopid", "out_hopid"):
        host.tree.write("0-1.0", CTL_A, attr, 12)  # it held HopIDs: they are zeroed before the rmdir
    dead = _dead_pid()
    with host.ledger.edit() as entries:
        entries += [Entry(str(group), "group", "link", dead), Entry(str(group / CTL_A), "stream", "link", dead)]
    a, b = connect_pair(fabric)
    a.close()
    b.close()
    assert_clean(fabric.a, fabric.b)


def test_stream_up_list_and_down(fabric: Fabric) -> None:
    fabric.plug()
    beta = in_thread(lambda: stream_cli.up(fabric.b.host(), "backup", None, 10))
    alpha = in_thread(lambda: stream_cli.up(fabric.a.host(), "backup", None, 10))
    ia, ib = alpha(), beta()
    assert (ia.in_hopid, ia.out_hopid) == (ib.in_hopid, ib.out_hopid) == (15, 15)
    assert ia.device.exists() and ia.device.parent == fabric.a.dev
    assert ia.ring_size == 1024
    assert stream_cli.up(fabric.a.host(), "backup", None, 1) == ia  # up again: the same device
    fabric.a.host().tree.ops.mkdir(fabric.a.config / "0-1.0" / "other")  # someone else's
    rows = {r.info.name: (r.made_by, r.line().split()[2:4]) for r in stream_cli.list_streams(fabric.a.host())}
    assert rows == {"backup": ("stream up", ["HopID", "15"]), "other": ("", ["no", "HopIDs"])}
    with pytest.raises(UsageError, match="not made by `recovery stream up`"):
        stream_cli.down(fabric.a.host(), "other", None)
    assert stream_cli.down(fabric.a.host(), "backup", None) == [str(fabric.a.config / "0-1.0" / "backup")]
    assert fabric.a.our_dirs() == ["0-1.0", "0-1.0/other"]  # the group is not empty: kept
    stream_cli.down(fabric.b.host(), "backup", None)
    assert_clean(fabric.b)
    assert "backup" not in fabric.a.local_props  # zeroed before rmdir: no longer advertised
    with pytest.raises(UsageError, match="there is no stream"):
        stream_cli.down(fabric.b.host(), "backup", None)


def test_stream_up_with_a_hopid_pairs_with_a_peer_set_up_by_hand(fabric: Fabric) -> None:
    """The other machine does not run recovery: its side is made with the printed shell rule."""
    fabric.plug()
    info = stream_cli.up(fabric.a.host(), "dd", None, 5, hopid=12)
    assert (info.in_hopid, info.out_hopid) == (12, 12)
    rule = manual_rule("dd", 12)
    ops = fabric.b.host().tree.ops
    lines = [line for line in rule.splitlines() if not line.startswith("#")]
    assert any("mkdir -p" in line for line in lines) and "echo 12 >" in rule and "dd2" in rule
    # What those lines do, on beta's tree (the shell's svc= line finds beta's service name):
    group = fabric.b.config / fabric.b.stream_service
    ops.mkdir(group)
    ops.mkdir(group / "dd2")
    ops.write(group / "dd2" / "in_hopid", "12\n")
    ops.write(group / "dd2" / "out_hopid", "12\n")
    mine = ops.open_device(fabric.b.dev / f"tbstream{fabric.b.streams[(fabric.b.stream_service, 'dd2')].index}")
    theirs = fabric.a.host().tree.ops.open_device(info.device)
    theirs.writev([memoryview(b"plain dd")])
    deadline = time.monotonic() + 5
    while not mine.poll(1, 100) and time.monotonic() < deadline:
        pass
    buf = bytearray(8)
    assert mine.readinto(memoryview(buf)) == 8 and buf == b"plain dd"
    theirs.close()
    mine.close()
    with pytest.raises(UsageError, match="HopIDs start at 8"):
        stream_cli.up(fabric.a.host(), "x", None, 1, hopid=3)


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
