"""The driver behaviours the USB4STREAM link depends on, one test each, on the emulated 7.2 kernel.

Each test shows the behaviour as the driver source has it (docs/links.md,
"What the kernel does"), so the emulation the other tests run on is the
driver as it is, and where the link layer has a rule against it, that the
rule holds. They run against tests/links/fakekernel, not real hardware: its
head says what it does not model.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from recovery.errors import LinkError
from recovery.link.tbstream.channel import StreamChannel
from recovery.link.tbstream.configfs import StreamTree
from recovery.link.tbstream.device import POLLERR, POLLHUP, POLLIN, POLLOUT
from recovery.link.tbstream.hopids import claim
from recovery.link.tbstream.link import attached
from tests.links.fakekernel import Fabric, FakeDevice, FakeHost


def tree(h: FakeHost) -> StreamTree:
    return h.host().tree


def stream(h: FakeHost, name: str, hopid: int | None = None) -> StreamTree:
    """Make ``name`` in ``h``'s group; with ``hopid``, write it both ways (the rule, while attached)."""
    t = tree(h)
    t.make_group(h.stream_service)
    t.make_stream(h.stream_service, name)
    if hopid is not None:
        t.write(h.stream_service, name, "in_hopid", hopid)
        t.write(h.stream_service, name, "out_hopid", hopid)
    return t


def device(h: FakeHost, name: str) -> FakeDevice:
    t = tree(h)
    dev = t.ops.open_device(t.info(h.stream_service, name).device)
    assert isinstance(dev, FakeDevice)
    return dev


def pair(fabric: Fabric, hopid: int = 15) -> tuple[FakeDevice, FakeDevice]:
    """One stream each way between the two hosts, both HopIDs ``hopid``, both devices open."""
    fabric.plug()
    stream(fabric.a, "sa", hopid)
    stream(fabric.b, "sb", hopid)
    return device(fabric.a, "sa"), device(fabric.b, "sb")


class Published:
    """Waits for the ``change`` uevent the peer's service device sends when this host's properties reach it."""

    def __init__(self, peer: FakeHost) -> None:
        self.monitor = peer.udev()

    def wait(self, what: Callable[[], bool]) -> None:
        """Until ``what()`` holds, looking again at each ``change`` (every write to a HopID sends one)."""
        while not what():
            event = self.monitor.poll(2)
            assert event is not None, "no change uevent"

    def settle(self) -> None:
        """Until no ``change`` has come for a while: what was sent has arrived."""
        while self.monitor.poll(0.3) is not None:
            pass


def read_all(dev: FakeDevice, n: int, timeout: float = 5.0) -> bytes:
    out = bytearray()
    end = time.monotonic() + timeout
    buf = memoryview(bytearray(65536))
    while len(out) < n and time.monotonic() < end:
        dev.poll(POLLIN, 100)
        try:
            k = dev.readinto(buf[: n - len(out)])
        except BlockingIOError:
            continue
        if k == 0:
            break
        out += buf[:k]
    return bytes(out)


def test_hopids_are_unchecked_while_detached(fabric: Fabric) -> None:
    """Written before attach, any number is stored; at attach it is requested blindly and the failure
    ignored, so the stream holds a HopID it never got and frees it at detach (ida_free's warning).
    The link writes HopIDs only once attached."""
    t = stream(fabric.a, "early")
    g = fabric.a.stream_service
    t.write(g, "early", "in_hopid", 99)  # far above any maximum: accepted
    t.write(g, "early", "out_hopid", -5)
    assert (t.info(g, "early").in_hopid, t.info(g, "early").out_hopid) == (99, -5)
    with pytest.raises(LinkError, match="not attached"):
        claim(t, g, "early", [15], lambda: attached(fabric.a.host().sysfs, g))
    fabric.plug()  # attach: 99 is refused silently, -5 means "any": it takes the lowest, 8
    info = t.info(g, "early")
    assert info.in_hopid == 99 and info.out_hopid == 8
    assert fabric.a.xd is not None and 99 not in fabric.a.xd.in_pool
    fabric.unplug()
    assert "ida_free called for id=99 which is not allocated." in fabric.a.log


def test_adoption_happens_only_at_attach(fabric: Fabric) -> None:
    """A stream takes the peer's published values only when it attaches with both HopIDs <= 0;
    a stream that exists already never does. The link names its streams differently on the two
    hosts, so it never adopts at all."""
    fabric.plug()
    stream(fabric.b, "same")  # attached, HopIDs 0, nothing published yet
    seen = Published(fabric.b)
    stream(fabric.a, "same", 12)  # published to beta after a delay
    seen.wait(lambda: "same" in fabric.b.remote_props)
    assert fabric.b.remote_props == {"same": (12, 12)}
    late = tree(fabric.b).info(fabric.b.stream_service, "same")
    assert (late.in_hopid, late.out_hopid) == (0, 0)  # no re-adoption
    tree(fabric.b).make_stream(fabric.b.stream_service, "same2")
    stream(fabric.a, "same2", 11)
    seen.wait(lambda: "same2" in fabric.b.remote_props)
    tree(fabric.b).remove(tree(fabric.b).stream_path(fabric.b.stream_service, "same2"))
    tree(fabric.b).make_stream(fabric.b.stream_service, "same2")  # attaches now: adopts, reversed
    adopted = tree(fabric.b).info(fabric.b.stream_service, "same2")
    assert (adopted.in_hopid, adopted.out_hopid) == (11, 11)


def test_open_with_unset_hopids_fails_at_once_with_einval(fabric: Fabric) -> None:
    """Detached: ENXIO (a non-blocking open never waits). Attached with a HopID <= 0: EINVAL at once."""
    t = stream(fabric.a, "unset")
    node = t.info(fabric.a.stream_service, "unset").device
    with pytest.raises(OSError) as e:
        t.ops.open_device(node)
    assert e.value.errno == errno.ENXIO
    fabric.plug()
    started = time.monotonic()
    with pytest.raises(OSError) as e:
        t.ops.open_device(node)
    assert e.value.errno == errno.EINVAL and time.monotonic() - started < 0.1


def test_close_is_lost_when_the_transmit_ring_is_full(fabric: Fabric) -> None:
    """The last close sends CLOSE only if a slot is free, waits 500 ms, drops the rest: a peer that
    was not reading gets the bytes that fitted and then never an end of stream."""
    a, b = pair(fabric)
    ring = a.s.ring_size
    sent = 0
    chunk = memoryview(bytes(1 << 20))
    while True:  # fill beta's receive ring and alpha's transmit ring
        try:
            sent += a.writev([chunk])
        except BlockingIOError:
            if a.poll(POLLOUT, 300) & POLLOUT:
                continue
            break
    assert len(a.s.tx) == ring - 1
    a.close()
    got = read_all(b, sent, timeout=1)
    assert 0 < len(got) < sent and fabric.dropped > 0  # what sat in the ring was dropped, no error
    with pytest.raises(BlockingIOError):
        b.readinto(memoryview(bytearray(10)))  # no CLOSE came: no 0, ever
    assert not b.poll(POLLIN, 200)


def test_write_does_not_fail_after_the_peer_closed(fabric: Fabric) -> None:
    """After the peer's close, write() still succeeds and poll() says nothing; only a read sees it
    (0 once, EAGAIN after). So the link keeps a reader on every stream: a pure writer fails fast."""
    a, b = pair(fabric)
    b.close()
    time.sleep(0.1)
    assert a.writev([memoryview(b"still accepted")]) == 14
    assert a.poll(POLLOUT | POLLIN, 100) == POLLOUT | POLLIN  # writable, and the CLOSE frame waits
    assert a.readinto(memoryview(bytearray(10))) == 0
    with pytest.raises(BlockingIOError):
        a.readinto(memoryview(bytearray(10)))
    # The same situation through the link's channel, which only writes:
    c, d = pair_again(fabric)
    writer = StreamChannel(c, "data")
    d.close()
    started = time.monotonic()
    with pytest.raises(LinkError, match="the peer closed the data stream"):
        for _ in range(10_000):
            writer.send(bytes(1 << 20))
    assert time.monotonic() - started < 5
    writer.close()


def pair_again(fabric: Fabric) -> tuple[FakeDevice, FakeDevice]:
    stream(fabric.a, "sc", 13)
    stream(fabric.b, "sd", 13)
    return device(fabric.a, "sc"), device(fabric.b, "sd")


def test_crc_flagged_frames_are_delivered(fabric: Fabric) -> None:
    """A frame the hardware flags as a CRC error is logged and handed to read() as if good."""
    a, b = pair(fabric)
    fabric.corrupt_next = 1
    a.writev([memoryview(b"A" * 4096 + b"B" * 4096)])
    got = read_all(b, 8192)
    assert len(got) == 8192 and got[2048] != ord("A") and got[4096:] == b"B" * 4096
    assert got[:2048] + got[2049:4096] == b"A" * 4095  # one byte garbled, handed over as if good
    assert fabric.b.log == ["tbstream: RX CRC error"]


def test_rmdir_keeps_the_advertisement(fabric: Fabric) -> None:
    """rmdir frees the HopIDs but leaves the stream published, so the peer adopts stale values;
    writing 0 to both HopIDs first withdraws it. The link always zeroes before rmdir."""
    fabric.plug()
    seen = Published(fabric.b)
    t = stream(fabric.a, "old", 12)
    seen.wait(lambda: "old" in fabric.b.remote_props)
    t.remove(t.stream_path(fabric.a.stream_service, "old"))  # plain rmdir: nothing is sent
    seen.settle()
    assert fabric.b.remote_props == {"old": (12, 12)}
    tb = stream(fabric.b, "old")
    stale = tb.info(fabric.b.stream_service, "old")
    assert (stale.in_hopid, stale.out_hopid) == (12, 12)  # adopted from a stream that is gone
    tb.remove_stream(fabric.b.stream_service, "old")
    seen = Published(fabric.b)
    t = stream(fabric.a, "new", 12)
    seen.wait(lambda: "new" in fabric.b.remote_props)
    assert t.remove_stream(fabric.a.stream_service, "new")  # zero, then rmdir
    seen.wait(lambda: "new" not in fabric.b.remote_props)


def test_an_auto_allocating_stream_takes_thunderbolt_nets_hopid(fabric: Fabric) -> None:
    """thunderbolt-net's receive HopID must be exactly the peer's transmit HopID (8 on an idle
    cable); a stream that wrote -1 (the old rule's allocating side, before the peer adopted) took
    8 here, and the IP link fails. The rule's HopIDs come from the top and leave 8 alone."""
    fabric.plug()
    stream(fabric.a, "auto", -1)
    fabric.a.net_up()
    fabric.b.net_up()
    assert fabric.a.xd is not None and fabric.a.xd.in_pool[8] == "stream 0-1.0/auto"
    assert not fabric.a.net.carrier
    assert fabric.a.log == ["thunderbolt_net 0-1.1 thunderbolt0: failed to allocate Rx HopID"]
    tree(fabric.a).remove_stream(fabric.a.stream_service, "auto")
    fabric.unplug()
    fabric.plug()
    for h in (fabric.a, fabric.b):
        t = stream(h, "rule")
        service = h.host().sysfs.service(h.stream_service)
        assert service is not None
        assert claim(t, h.stream_service, "rule", range(15, 8, -1), lambda: True) == 15
    fabric.a.net_up()
    fabric.b.net_up()
    assert fabric.a.net.carrier and fabric.a.net.in_hopid == fabric.b.net.out_hopid == 8


def test_a_pulled_cable_is_pollhup_and_enxio(fabric: Fabric) -> None:
    a, _ = pair(fabric)
    threading.Timer(0.1, fabric.unplug).start()
    assert a.poll(POLLIN, 2000) == POLLHUP | POLLERR
    with pytest.raises(OSError) as e:
        a.readinto(memoryview(bytearray(4)))
    assert e.value.errno == errno.ENXIO


def test_ring_limits_and_busy_attributes(fabric: Fabric, tmp_path: Path) -> None:
    """ring_size 32..4096, throttling up to 16776960 ns, all EBUSY while the device is open;
    two open streams of 4096 do not fit (ENOMEM), two of 1024 do."""
    a, _ = pair(fabric)
    t, g = tree(fabric.a), fabric.a.stream_service
    with pytest.raises(OSError) as e:
        t.write(g, "sa", "ring_size", 512)
    assert e.value.errno == errno.EBUSY
    a.close()
    for bad in (31, 5000):
        with pytest.raises(OSError) as e:
            t.write(g, "sa", "ring_size", bad)
        assert e.value.errno == errno.EINVAL
    t.write(g, "sa", "throttling", 16_776_960)
    with pytest.raises(OSError):
        t.write(g, "sa", "throttling", 16_776_961)
    for size, fits in ((4096, False), (1024, True)):
        for name in ("r1", "r2"):
            stream(fabric.a, name, 12 if name == "r1" else 11)
            t.write(g, name, "ring_size", size)
        first = device(fabric.a, "r1")
        try:
            if fits:
                device(fabric.a, "r2").close()
            else:
                with pytest.raises(OSError) as e:
                    device(fabric.a, "r2")
                assert e.value.errno == errno.ENOMEM
        finally:
            first.close()
        for name in ("r1", "r2"):
            t.remove_stream(g, name)
