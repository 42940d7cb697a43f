"""Two hosts joined by a pretend USB4 cable: sysfs, ConfigFS and /dev trees that react like the kernel.

Each :class:`FakeHost` has a temp directory with ``sys/`` (thunderbolt bus,
modules), ``config/thunderbolt/stream`` (ConfigFS), ``dev/`` and ``run/``.
Its :class:`FakeOps` is handed to the code under test as its
:class:`~recovery.link.tbstream.configfs.FsOps`: mkdir, rmdir and attribute
writes do what ``drivers/thunderbolt/stream.c`` does (attribute files and the
device node appear, names are checked, HopIDs are allocated, adopted from the
peer's published stream of the same name, released), and ``open_device``
returns one end of a socket pair whose other end a pump thread connects to the
peer's stream when the HopIDs match (see /work/shared/docs/usb4stream.md).
"""

from __future__ import annotations

import errno
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from recovery.link.sysfs import Sysfs
from recovery.link.tbstream.configfs import FsOps, StreamTree
from recovery.link.tbstream.ledger import Ledger
from recovery.link.tbstream.link import Host

PUBLISH_DELAY = 0.3  # seconds for a stream's XDomain properties to reach the peer
GROUP = re.compile(r"^\d+-[0-9a-f]+\.\d+$")
FIRST_HOPID = 8


@dataclass
class FakeStream:
    group: str
    name: str
    index: int
    in_hopid: int = 0
    out_hopid: int = 0
    valid_since: float | None = None  # when both HopIDs became valid (published from then on)
    kern: socket.socket | None = None  # our side of the open device
    pump: threading.Thread | None = None

    @property
    def open(self) -> bool:
        return self.kern is not None


@dataclass
class FakeHost:
    name: str
    uuid: str
    root: Path
    peer_xdomain: str  # how this host names the peer's XDomain, e.g. "0-1"
    stream_service: str  # how it names the peer's stream service, e.g. "0-1.0"
    streams: dict[tuple[str, str], FakeStream] = field(default_factory=dict)
    stream_module: bool = True
    peer: FakeHost | None = None
    fabric: Fabric | None = None

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
        return Host(sysfs=Sysfs(self.sys), tree=StreamTree(self.config, self.dev, ops=FakeOps(self)),
                    ledger=Ledger(self.root / "run"))

    def our_dirs(self) -> list[str]:
        return sorted(str(p.relative_to(self.config)) for p in self.config.rglob("*") if p.is_dir())

    def nodes(self) -> list[str]:
        return sorted(p.name for p in self.dev.iterdir())


class Fabric:
    """The cable between host ``a`` and host ``b``."""

    def __init__(self, tmp: Path, *, a_uuid: str, b_uuid: str) -> None:
        self.lock = threading.RLock()
        self.plugged = False
        self.dropped = 0  # bytes written while the peer's end was not open (lost, as on the wire)
        # The two hosts name each other differently: nothing may be hard-coded.
        self.a = FakeHost("alpha", a_uuid, tmp / "alpha", "0-1", "0-1.0")
        self.b = FakeHost("beta", b_uuid, tmp / "beta", "0-3", "0-3.1")
        self.a.peer, self.b.peer = self.b, self.a
        for h in (self.a, self.b):
            h.fabric = self
            _root_switch(h)
            h.config.mkdir(parents=True)
            h.dev.mkdir()
            for module in ("thunderbolt", "thunderbolt_net") + (("thunderbolt_stream",) if h.stream_module else ()):
                (h.sys / "module" / module).mkdir(parents=True, exist_ok=True)

    def without_stream_module(self, h: FakeHost) -> None:
        """``h`` runs a kernel without thunderbolt_stream (call before :meth:`plug`)."""
        h.stream_module = False
        (h.sys / "module" / "thunderbolt_stream").rmdir()

    def plug(self) -> None:
        with self.lock:
            for h in (self.a, self.b):
                assert h.peer is not None
                _xdomain(h, h.peer)
            self.plugged = True

    def unplug(self) -> None:
        """Pull the cable: the XDomain goes, open streams break."""
        with self.lock:
            self.plugged = False
            for h in (self.a, self.b):
                _remove_tree(h.sys / "devices" / "domain0" / "0-0" / h.peer_xdomain)
                _remove_tree(h.sys / "class" / "net" / "thunderbolt0")
                for link in (h.sys / "bus" / "thunderbolt" / "devices").iterdir():
                    if link.name.startswith(h.peer_xdomain):
                        link.unlink()
                for s in h.streams.values():
                    if s.kern is not None:
                        s.kern.shutdown(socket.SHUT_RDWR)

    def peer_stream(self, host: FakeHost, s: FakeStream) -> FakeStream | None:
        """The peer's stream of the same name in its group for ``host``."""
        peer = host.peer
        assert peer is not None
        if not self.plugged or s.group != host.stream_service:
            return None
        return peer.streams.get((peer.stream_service, s.name))

    def matched(self, host: FakeHost, s: FakeStream) -> FakeStream | None:
        p = self.peer_stream(host, s)
        if p is None or not s.in_hopid or not s.out_hopid:
            return None
        return p if (p.in_hopid, p.out_hopid) == (s.out_hopid, s.in_hopid) else None


class FakeOps(FsOps):
    """What the kernel does on mkdir, rmdir, attribute writes and open."""

    def __init__(self, host: FakeHost) -> None:
        self.host = host
        assert host.fabric is not None
        self.fabric = host.fabric

    def _rel(self, path: Path) -> tuple[str, ...]:
        return Path(path).relative_to(self.host.config).parts

    def mkdir(self, path: Path) -> None:
        parts = self._rel(path)
        with self.fabric.lock:
            if len(parts) == 1:
                if not GROUP.match(parts[0]):
                    raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), str(path))
                os.mkdir(path)
                return
            group, name = parts
            if len(name) > 8:
                raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), str(path))
            os.mkdir(path)
            used = {s.index for s in self.host.streams.values()}
            s = FakeStream(group, name, index=min(set(range(len(used) + 1)) - used))
            self.host.streams[(group, name)] = s
            p = self.fabric.peer_stream(self.host, s)
            if p is not None and p.valid_since is not None and time.monotonic() - p.valid_since >= PUBLISH_DELAY:
                s.in_hopid, s.out_hopid = p.out_hopid, p.in_hopid  # adopted, reversed
                s.valid_since = time.monotonic()
            for attr, value in (("index", s.index), ("ring_size", 256), ("throttling", 8192)):
                (path / attr).write_text(f"{value}\n")
            self._sync_files(s)
            (self.host.dev / f"tbstream{s.index}").write_text("")

    def _sync_files(self, s: FakeStream) -> None:
        d = self.host.config / s.group / s.name
        (d / "in_hopid").write_text(f"{s.in_hopid}\n")
        (d / "out_hopid").write_text(f"{s.out_hopid}\n")

    def write(self, path: Path, text: str) -> None:
        parts = self._rel(path)
        with self.fabric.lock:
            s = self.host.streams.get((parts[0], parts[1])) if len(parts) == 3 else None
            if s is None or parts[2] not in ("in_hopid", "out_hopid"):
                raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            if s.open:
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
            value = int(text)
            attr = parts[2]
            taken = {getattr(o, attr) for o in self.host.streams.values() if o is not s}
            if value == -1:
                value = next(h for h in range(FIRST_HOPID, 1 << 16) if h not in taken)
            elif value and (value < FIRST_HOPID or value in taken):
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
            setattr(s, attr, value)
            s.valid_since = time.monotonic() if s.in_hopid and s.out_hopid else None
            self._sync_files(s)

    def rmdir(self, path: Path) -> None:
        parts = self._rel(path)
        with self.fabric.lock:
            if len(parts) == 1:
                os.rmdir(path)  # ENOTEMPTY while streams are in it
                return
            s = self.host.streams.pop((parts[0], parts[1]), None)
            if s is None:
                raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
            for f in path.iterdir():
                f.unlink()
            os.rmdir(path)
            (self.host.dev / f"tbstream{s.index}").unlink()
            if s.kern is not None:  # removed under an open file: read gives 0
                s.kern.shutdown(socket.SHUT_RDWR)

    def open_device(self, path: Path) -> int:
        with self.fabric.lock:
            s = next((s for s in self.host.streams.values() if path == self.host.dev / f"tbstream{s.index}"), None)
            if s is None:
                raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
            if not s.in_hopid or not s.out_hopid:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), str(path))
            if not self.fabric.plugged:
                raise OSError(errno.ENXIO, os.strerror(errno.ENXIO), str(path))
            if s.open:
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
            user, kern = socket.socketpair()
            s.kern = kern
            s.pump = threading.Thread(target=self._pump, args=(s, kern), daemon=True)
            s.pump.start()
            return user.detach()

    def _pump(self, s: FakeStream, kern: socket.socket) -> None:
        """Carry what the user writes to the peer's open, matching stream; drop it otherwise."""
        try:
            while True:
                try:
                    data = kern.recv(1 << 16)
                except OSError:
                    data = b""
                with self.fabric.lock:
                    peer = self.fabric.matched(self.host, s)
                    target = peer.kern if peer is not None and peer.open else None
                if not data:
                    if target is not None:  # last close: the peer reads end of stream
                        try:
                            target.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
                    return
                if target is None:
                    self.fabric.dropped += len(data)
                    continue
                try:
                    target.sendall(data)
                except OSError:
                    pass
        finally:
            with self.fabric.lock:
                if s.kern is kern:
                    s.kern = None
            kern.close()


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
    attrs = {"uevent": "DEVTYPE=thunderbolt_xdomain", "unique_id": peer.uuid, "device_name": f"{peer.name} box",
             "vendor_name": "Example", "rx_speed": "20.0 Gb/s", "rx_lanes": "2", "tx_speed": "20.0 Gb/s",
             "tx_lanes": "2"}
    for k, v in attrs.items():
        (xd / k).write_text(v + "\n")
    bus = h.sys / "bus" / "thunderbolt" / "devices"
    (bus / h.peer_xdomain).symlink_to(xd)
    stream_index = int(h.stream_service.rsplit(".", 1)[1])
    services = {stream_index: "stream" if peer.stream_module else None, 1 - stream_index: "network"}
    for idx, key in services.items():
        if key is None:
            continue
        svc = xd / f"{h.peer_xdomain}.{idx}"
        svc.mkdir()
        for k, v in {"uevent": "DEVTYPE=thunderbolt_service", "key": key, "prtcid": "1", "prtcvers": "1"}.items():
            (svc / k).write_text(v + "\n")
        (bus / svc.name).symlink_to(svc)
        if key == "network":  # thunderbolt_net makes its interface under the service device
            net = h.sys / "class" / "net" / "thunderbolt0"
            net.mkdir(parents=True)
            (net / "device").symlink_to(svc)
            (net / "operstate").write_text("up\n")


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    for p in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if p.is_dir() and not p.is_symlink():
            p.rmdir()
        else:
            p.unlink()
    path.rmdir()
