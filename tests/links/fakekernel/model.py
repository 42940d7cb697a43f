"""The driver's state for one host: XDomain HopID pools, stream devices, properties, thunderbolt-net.

Each function here follows one function of the 7.2 sources (named in its
docstring), including their flaws: HopIDs stored unchecked while detached,
allocation failures ignored at attach, releases of HopIDs never granted,
advertisements left behind by rmdir. Callers hold the fabric's lock.
"""

from __future__ import annotations

import errno
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.links.fakekernel.fabric import FakeHost

FIRST_HOPID = 8  # TB_PATH_MIN_HOPID
PUBLISH_DELAY = 0.05  # xdomain.c sends changed properties 50 ms after the change
NET_OWNER = "thunderbolt-net"


@dataclass
class Frame:
    """One ring slot: up to 4 KiB of DATA, or a CLOSE."""

    data: bytes
    close: bool = False
    crc: bool = False  # the hardware flagged it (RING_DESC_CRC_ERROR); delivered anyway


@dataclass
class Sdev:
    """``struct tbstream_dev``: one stream directory and its character device."""

    group: str
    name: str
    index: int
    wake: threading.Condition  # the device's wait queue
    in_hopid: int = 0
    out_hopid: int = 0
    ring_size: int = 256
    throttling: int = 8192
    busy_poll: int | None = None  # only on the 7.3-like driver
    attached: bool = False
    users: int = 0
    running: bool = False  # rings allocated and paths enabled: from the first open to the end of the last close
    closed: bool = False  # a CLOSE frame was read
    removed: bool = False  # the directory was removed
    tx: deque[Frame] = field(default_factory=deque)
    rx: deque[Frame] = field(default_factory=deque)
    rx_offset: int = 0  # bytes of rx[0] already read

    @property
    def open(self) -> bool:
        return self.running

    def tx_free(self) -> bool:
        """``tbstream_ring_available``: only ring_size - 1 frames fit in the transmit ring."""
        return len(self.tx) < self.ring_size - 1


class XDomain:
    """The connection to the peer as one host sees it: its two HopID pools (``xd->in_hopids``, ``out_hopids``)."""

    def __init__(self, host: FakeHost, local_max: int, remote_max: int) -> None:
        self.host = host
        self.local_max = local_max
        self.remote_max = remote_max
        self.in_pool: dict[int, str] = {}  # HopID -> who allocated it
        self.out_pool: dict[int, str] = {}

    def alloc(self, direction: str, hopid: int, owner: str) -> int:
        """``tb_xdomain_alloc_in_hopid``/``_out_``: the lowest free HopID >= ``hopid`` up to the maximum."""
        pool, maximum = (self.in_pool, self.local_max) if direction == "in" else (self.out_pool, self.remote_max)
        if hopid < 0:
            hopid = FIRST_HOPID
        if hopid < FIRST_HOPID or hopid > maximum:
            return -errno.EINVAL
        for h in range(hopid, maximum + 1):  # ida_alloc_range
            if h not in pool:
                pool[h] = owner
                return h
        return -errno.ENOSPC

    def release(self, direction: str, hopid: int) -> None:
        """``tb_xdomain_release_*_hopid`` is ``ida_free``: it frees whatever owns ``hopid``, or warns."""
        pool = self.in_pool if direction == "in" else self.out_pool
        if hopid in pool:
            del pool[hopid]
        else:
            self.host.kmsg(f"ida_free called for id={hopid} which is not allocated.")


def stream_owner(s: Sdev) -> str:
    return f"stream {s.group}/{s.name}"


def alloc_hopid(host: FakeHost, s: Sdev, direction: str, hopid: int) -> int:
    """``tbstream_dev_alloc_in_hopid``/``_out_``: 0 or a negative errno, with the driver's side effects."""
    xd = host.xd
    assert xd is not None
    attr = f"{direction}_hopid"
    current = getattr(s, attr)
    if current > 0 and current != hopid:
        xd.release(direction, current)  # released even if the new value then fails
    if not hopid:
        setattr(s, attr, 0)
        return 0
    ret = xd.alloc(direction, hopid, stream_owner(s))
    if ret < 0:
        return ret
    if hopid > 0 and ret != hopid:
        xd.release(direction, ret)
        return -errno.EBUSY
    setattr(s, attr, ret)
    return 0


def update_properties(host: FakeHost, name: str, in_hopid: int, out_hopid: int) -> None:
    """``service_update_properties`` + ``tb_service_properties_changed``: publish or withdraw ``name``."""
    if in_hopid < FIRST_HOPID or out_hopid < FIRST_HOPID:
        host.local_props.pop(name, None)
    else:
        host.local_props[name] = (in_hopid, out_hopid)
    host.properties_changed()


def attach(host: FakeHost, s: Sdev) -> None:
    """``tbstream_dev_attach_stream``: adopt the peer's values only if both HopIDs are <= 0, request them blindly."""
    s.attached = True
    if s.in_hopid <= 0 and s.out_hopid <= 0:
        published = host.remote_props.get(s.name)
        if published is not None:
            peer_in, peer_out = published
            if peer_in >= FIRST_HOPID:
                s.out_hopid = peer_in  # reversed: the peer's in is our out
            if peer_out >= FIRST_HOPID:
                s.in_hopid = peer_out
    if s.in_hopid:
        alloc_hopid(host, s, "in", s.in_hopid)  # failure ignored: the stream keeps a HopID it never got
    if s.out_hopid:
        alloc_hopid(host, s, "out", s.out_hopid)
    update_properties(host, s.name, s.in_hopid, s.out_hopid)
    s.wake.notify_all()


def detach(host: FakeHost, s: Sdev) -> None:
    """``tbstream_dev_detach_stream``: release (the values are kept, requested again at the next attach)."""
    if not s.attached:
        return
    s.attached = False
    if host.xd is not None:
        if s.out_hopid > 0:
            host.xd.release("out", s.out_hopid)
        if s.in_hopid > 0:
            host.xd.release("in", s.in_hopid)
    update_properties(host, s.name, 0, 0)
    s.wake.notify_all()


def release_dev(host: FakeHost, s: Sdev) -> None:
    """``tbstream_dev_release`` (last reference gone after rmdir): HopIDs freed, the advertisement kept."""
    if s.attached and host.xd is not None:
        if s.out_hopid > 0:
            host.xd.release("out", s.out_hopid)
        if s.in_hopid > 0:
            host.xd.release("in", s.in_hopid)
    host.indices.discard(s.index)


def valid(host: FakeHost, s: Sdev) -> int:
    """``tbstream_dev_valid``: 0, -ENXIO (no plugged peer attached) or -EINVAL (a HopID <= 0)."""
    if not s.attached or not host.fabric.plugged:
        return -errno.ENXIO
    if s.in_hopid <= 0 or s.out_hopid <= 0:
        return -errno.EINVAL
    return 0


@dataclass
class Net:
    """thunderbolt-net's HopIDs on one host (``drivers/net/thunderbolt/main.c``)."""

    up: bool = False
    out_hopid: int | None = None  # its transmit path: auto-allocated when the interface comes up
    in_hopid: int | None = None  # its receive path: exactly the peer's transmit HopID, at login
    carrier: bool = False


def net_open(host: FakeHost) -> None:
    """``tbnet_open``: the transmit HopID is the lowest free one (-1)."""
    assert host.xd is not None
    host.net.up = True
    ret = host.xd.alloc("out", -1, NET_OWNER)
    host.net.out_hopid = ret if ret > 0 else None


def net_login(host: FakeHost, peer: FakeHost) -> bool:
    """``tbnet_connected_work``: the receive HopID must be exactly the peer's transmit HopID."""
    assert host.xd is not None and peer.net.out_hopid is not None
    want = peer.net.out_hopid
    ret = host.xd.alloc("in", want, NET_OWNER)
    if ret != want:  # the driver returns here, keeping whatever it got instead
        host.kmsg(f"thunderbolt_net {host.net_service} thunderbolt0: failed to allocate Rx HopID")
        return False
    host.net.in_hopid = ret
    return True
