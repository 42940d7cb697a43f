"""Two hosts and the cable between them: sysfs trees, uevents, the kernel log, plug and unplug, the wire.

:class:`FakeHost` keeps one host's driver state (:mod:`.model`) and the
directory trees the code under test reads (``sys/``, ``config/``, ``dev/``,
``run/``). :class:`Fabric` is the cable: it plugs and unplugs, and its wire
thread moves frames from each open stream's transmit ring to the receive
ring of the peer's open stream whose in HopID is this stream's out HopID
(end-to-end flow control: it waits while that ring is full; with no such
stream the frame is lost, as on the wire).
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recovery.link.discovery import DeviceWatch
from recovery.link.sysfs import Sysfs
from recovery.link.tbstream.configfs import StreamTree
from recovery.link.tbstream.ledger import Ledger
from recovery.link.tbstream.link import Host
from tests.links.fakekernel import model
from tests.links.fakekernel.model import Net, Sdev, XDomain


@dataclass
class UdevEvent:
    """What the code under test reads of a pyudev device."""

    action: str
    sys_name: str
    subsystem: str
    device_type: str | None
    attributes: dict[str, bytes] = field(default_factory=dict)
    parent: Any = None


class FakeUdev:
    """A uevent monitor: ``fileno()`` and ``poll(timeout)`` like pyudev's."""

    def __init__(self, host: FakeHost) -> None:
        self.host = host
        self.r, self.w = os.pipe()
        self.queue: deque[UdevEvent] = deque()

    def fileno(self) -> int:
        return self.r

    def push(self, event: UdevEvent) -> None:
        self.queue.append(event)
        os.write(self.w, b"!")

    def poll(self, timeout: float | None = None) -> UdevEvent | None:
        if not select.select([self.r], [], [], timeout)[0]:
            return None
        os.read(self.r, 1)
        return self.queue.popleft()

    def stop(self) -> None:
        with self.host.fabric.lock:
            if self in self.host.monitors:
                self.host.monitors.remove(self)
        os.close(self.r)
        os.close(self.w)


@dataclass
class FakeHost:
    name: str
    uuid: str
    root: Path
    fabric: Fabric
    peer_xdomain: str  # how this host names the peer's XDomain, e.g. "0-1"
    stream_service: str  # how it names the peer's stream service, e.g. "0-1.0"
    net_service: str  # and its network service
    local_max_hopid: int  # the lane adapter's Max Input HopID
    stream_module: bool = True
    net_module: bool = True
    busy_poll: bool = False  # a 7.3-like driver with the busy_poll attribute
    dma_pages: int = 12288  # pages the rings of open streams may pin (two streams of 4096 need 16384)
    peer: FakeHost | None = None
    xd: XDomain | None = None
    groups: dict[str, bool] = field(default_factory=dict)  # name -> attached
    streams: dict[tuple[str, str], Sdev] = field(default_factory=dict)
    indices: set[int] = field(default_factory=set)  # the global index pool (ida)
    local_props: dict[str, tuple[int, int]] = field(default_factory=dict)  # published stream directories
    remote_props: dict[str, tuple[int, int]] = field(default_factory=dict)  # the peer's, as last read
    net: Net = field(default_factory=Net)
    log: list[str] = field(default_factory=list)
    monitors: list[FakeUdev] = field(default_factory=list)
    kmsg_fds: list[int] = field(default_factory=list)

    @property
    def sys(self) -> Path:
        return self.root / "sys"

    @property
    def config(self) -> Path:
        return self.root / "config" / "thunderbolt" / "stream"

    @property
    def dev(self) -> Path:
        return self.root / "dev"

    def host(self) -> Host:
        """The code under test's view of this host."""
        from tests.links.fakekernel.fs import FakeOps

        return Host(
            sysfs=Sysfs(self.sys),
            tree=StreamTree(self.config, self.dev, ops=FakeOps(self)),
            ledger=Ledger(self.root / "run"),
            watch=lambda: DeviceWatch(self.udev()),
        )

    def udev(self) -> FakeUdev:
        monitor = FakeUdev(self)
        with self.fabric.lock:
            self.monitors.append(monitor)
        return monitor

    def emit(self, action: str, sys_name: str, subsystem: str = "thunderbolt", devtype: str | None = None) -> None:
        for m in list(self.monitors):
            m.push(UdevEvent(action, sys_name, subsystem, devtype))

    def kmsg(self, line: str) -> None:
        """A kernel log record, in /dev/kmsg's format to every reader of :meth:`kmsg_reader`."""
        self.log.append(line)
        record = f"4,{len(self.log)},{int(time.monotonic() * 1e6)},-;{line}\n".encode()
        for fd in list(self.kmsg_fds):
            try:
                os.write(fd, record)
            except OSError:
                self.kmsg_fds.remove(fd)

    def kmsg_reader(self) -> int:
        """A descriptor that reads this host's kernel log from now on (like /dev/kmsg after SEEK_END)."""
        r, w = os.pipe()
        os.set_blocking(w, False)
        self.kmsg_fds.append(w)
        return r

    def properties_changed(self) -> None:
        """``tb_service_properties_changed``: the peer reads our properties again a little later."""
        if not self.fabric.plugged:
            return
        threading.Timer(model.PUBLISH_DELAY, self.fabric.deliver_properties, (self,)).start()

    def sync(self, s: Sdev) -> None:
        """Keep the attribute files in step with the driver's values (what ``cat`` shows)."""
        d = self.config / s.group / s.name
        if not d.is_dir():
            return
        values = {
            "index": s.index,
            "in_hopid": s.in_hopid,
            "out_hopid": s.out_hopid,
            "ring_size": s.ring_size,
            "throttling": s.throttling,
        }
        if s.busy_poll is not None:
            values["busy_poll"] = s.busy_poll
        for attr, value in values.items():
            (d / attr).write_text(f"{value}\n")

    def our_dirs(self) -> list[str]:
        return sorted(str(p.relative_to(self.config)) for p in self.config.rglob("*") if p.is_dir())

    def nodes(self) -> list[str]:
        return sorted(p.name for p in self.dev.iterdir())

    def net_up(self) -> None:
        """Bring thunderbolt-net's interface up (``ip link set up``): its HopIDs, then the login."""
        with self.fabric.lock:
            assert self.xd is not None and self.peer is not None
            model.net_open(self)
            self.fabric.net_login()
            self.fabric.write_net(self)


class Fabric:
    """The cable between host ``a`` and host ``b``."""

    def __init__(self, tmp: Path, *, a_uuid: str, b_uuid: str, a_max: int = 15, b_max: int = 19) -> None:
        self.lock = threading.RLock()
        self.work = threading.Condition(self.lock)  # the wire waits on it
        self.plugged = False
        self.dropped = 0  # bytes lost: written with no receiving path, or left in a ring at close
        self.corrupt_next = 0  # flag (and garble) this many of the next frames as CRC errors
        self.rate: float | None = None  # bytes/s the wire carries (None: as fast as it can)
        self._stop = False
        # The two hosts name each other differently: nothing may be hard-coded.
        self.a = FakeHost("alpha", a_uuid, tmp / "alpha", self, "0-1", "0-1.0", "0-1.1", a_max)
        self.b = FakeHost("beta", b_uuid, tmp / "beta", self, "0-3", "0-3.1", "0-3.0", b_max)
        self.a.peer, self.b.peer = self.b, self.a
        for h in (self.a, self.b):
            _root_switch(h)
            h.config.mkdir(parents=True)
            h.dev.mkdir()
            for module in ("thunderbolt", "thunderbolt_net", "thunderbolt_stream"):
                (h.sys / "module" / module).mkdir(parents=True, exist_ok=True)
                (h.sys / "bus" / "thunderbolt" / "drivers" / module).mkdir(parents=True, exist_ok=True)
        self._wire = threading.Thread(target=self._run_wire, name="fake-wire", daemon=True)
        self._wire.start()

    def without_stream_module(self, h: FakeHost) -> None:
        """``h`` runs a kernel without thunderbolt_stream (call before :meth:`plug`)."""
        h.stream_module = False
        (h.sys / "module" / "thunderbolt_stream").rmdir()

    def close(self) -> None:
        self.unplug()
        with self.lock:
            self._stop = True
            self.work.notify_all()
        self._wire.join(5)

    # --- plugging ---

    def plug(self) -> None:
        with self.lock:
            self.plugged = True
            for h in (self.a, self.b):
                assert h.peer is not None
                h.xd = XDomain(h, h.local_max_hopid, h.peer.local_max_hopid)
                h.remote_props = {}
                _xdomain(h, h.peer)
            for h in (self.a, self.b):
                if h.stream_module and h.peer is not None and h.peer.stream_module:
                    for group in h.groups:
                        h.groups[group] = group == h.stream_service  # tbstream_group_attach_stream
                    for s in list(h.streams.values()):
                        if h.groups.get(s.group):
                            model.attach(h, s)
                            h.sync(s)

    def unplug(self) -> None:
        """Pull the cable: the XDomain goes, streams detach, open devices fail with ENXIO."""
        with self.lock:
            if not self.plugged:
                return
            for h in (self.a, self.b):
                for s in reversed(list(h.streams.values())):
                    model.detach(h, s)
                    h.sync(s)
            self.plugged = False
            for h in (self.a, self.b):
                h.groups = dict.fromkeys(h.groups, False)
                h.xd = None
                h.net = Net()
                h.remote_props = {}
                _remove_xdomain(h)
            self.work.notify_all()

    def deliver_properties(self, sender: FakeHost) -> None:
        """The peer of ``sender`` reads its properties again; its service device sends ``change``."""
        with self.lock:
            peer = sender.peer
            if not self.plugged or peer is None:
                return
            peer.remote_props = dict(sender.local_props)
            if sender.stream_module:
                peer.emit("change", peer.stream_service, devtype="thunderbolt_service")

    # --- thunderbolt-net ---

    def net_login(self) -> None:
        a, b = self.a, self.b
        if not (a.net.up and b.net.up) or a.net.carrier:
            return
        ok_a, ok_b = model.net_login(a, b), model.net_login(b, a)
        a.net.carrier = b.net.carrier = ok_a and ok_b
        for h in (a, b):
            self.write_net(h)

    def write_net(self, h: FakeHost) -> None:
        net = h.sys / "class" / "net" / "thunderbolt0"
        if not net.is_dir():
            return
        (net / "flags").write_text("0x1003\n" if h.net.up else "0x1002\n")
        (net / "operstate").write_text(("up" if h.net.carrier else "down") + "\n")
        carrier = net / "carrier"
        if h.net.up:
            carrier.write_text("1\n" if h.net.carrier else "0\n")
        elif carrier.exists():
            carrier.unlink()  # the kernel refuses to read a down interface's carrier

    # --- the wire ---

    def _target(self, h: FakeHost, s: Sdev) -> Sdev | None:
        peer = h.peer
        assert peer is not None
        return next((p for p in peer.streams.values() if p.open and p.attached and p.in_hopid == s.out_hopid), None)

    def _run_wire(self) -> None:
        budget_at = time.monotonic()
        with self.lock:
            while not self._stop:
                moved = False
                for h in (self.a, self.b):
                    for s in list(h.streams.values()):
                        while s.tx and s.open and model.valid(h, s) == 0:
                            if self.rate and time.monotonic() < budget_at:
                                break
                            target = self._target(h, s)
                            if target is not None and len(target.rx) >= target.ring_size:
                                break  # end-to-end flow control: no credits until the peer reads
                            frame = s.tx.popleft()
                            moved = True
                            if self.rate:
                                budget_at = max(budget_at, time.monotonic()) + len(frame.data) / self.rate
                            if target is None:
                                self.dropped += len(frame.data)
                            else:
                                self._deliver(h, target, frame)
                            s.wake.notify_all()  # a transmit slot is free again
                if not moved:
                    wait = max(0.001, budget_at - time.monotonic()) if self.rate else 0.2
                    self.work.wait(min(wait, 0.2))

    def _deliver(self, sender: FakeHost, target: Sdev, frame: model.Frame) -> None:
        receiver = sender.peer
        assert receiver is not None
        if self.corrupt_next and not frame.close:
            self.corrupt_next -= 1
            garbled = bytearray(frame.data)
            garbled[len(garbled) // 2] ^= 0xFF  # one byte in the middle of the frame
            frame = model.Frame(bytes(garbled), crc=True)
            receiver.kmsg("tbstream: RX CRC error")
        target.rx.append(frame)
        if not frame.crc:  # tbstream_dev_rx_callback wakes readers only for good frames
            target.wake.notify_all()


# --- sysfs trees ---


def _root_switch(h: FakeHost) -> None:
    sw = h.sys / "devices" / "domain0" / "0-0"
    sw.mkdir(parents=True)
    (sw / "uevent").write_text("DEVTYPE=thunderbolt_device\n")
    (sw / "unique_id").write_text(h.uuid + "\n")
    bus = h.sys / "bus" / "thunderbolt" / "devices"
    bus.mkdir(parents=True)
    (bus / "0-0").symlink_to(sw)


def _xdomain(h: FakeHost, peer: FakeHost) -> None:
    xd = h.sys / "devices" / "domain0" / "0-0" / h.peer_xdomain
    xd.mkdir()
    attrs = {
        "uevent": "DEVTYPE=thunderbolt_xdomain",
        "unique_id": peer.uuid,
        "device_name": f"{peer.name} box",
        "vendor_name": "Example",
        "rx_speed": "20.0 Gb/s",
        "rx_lanes": "2",
        "tx_speed": "20.0 Gb/s",
        "tx_lanes": "2",
        "maxhopid": str(peer.local_max_hopid),
    }
    for k, v in attrs.items():
        (xd / k).write_text(v + "\n")
    bus = h.sys / "bus" / "thunderbolt" / "devices"
    (bus / h.peer_xdomain).symlink_to(xd)
    h.emit("add", h.peer_xdomain, devtype="thunderbolt_xdomain")
    services = [
        (h.stream_service, "stream", peer.stream_module, h.stream_module, "thunderbolt_stream"),
        (h.net_service, "network", peer.net_module, h.net_module, "thunderbolt_net"),
    ]
    for name, key, offered, bound, driver in services:
        if not offered:
            continue
        svc = xd / name
        svc.mkdir()
        for k, v in {"uevent": "DEVTYPE=thunderbolt_service", "key": key, "prtcid": "1", "prtcvers": "1"}.items():
            (svc / k).write_text(v + "\n")
        (bus / name).symlink_to(svc)
        h.emit("add", name, devtype="thunderbolt_service")
        if bound:
            (svc / "driver").symlink_to(h.sys / "bus" / "thunderbolt" / "drivers" / driver)
            h.emit("bind", name, devtype="thunderbolt_service")
        if key == "network" and bound:  # thunderbolt_net makes its interface under the service device, down
            net = h.sys / "class" / "net" / "thunderbolt0"
            net.mkdir(parents=True)
            (net / "device").symlink_to(svc)
            h.fabric.write_net(h)


def _remove_xdomain(h: FakeHost) -> None:
    _remove_tree(h.sys / "devices" / "domain0" / "0-0" / h.peer_xdomain)
    _remove_tree(h.sys / "class" / "net" / "thunderbolt0")
    for link in (h.sys / "bus" / "thunderbolt" / "devices").iterdir():
        if link.name.startswith(h.peer_xdomain):
            link.unlink()
            h.emit("remove", link.name)


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    for p in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if p.is_dir() and not p.is_symlink():
            p.rmdir()
        else:
            p.unlink()
    path.rmdir()
