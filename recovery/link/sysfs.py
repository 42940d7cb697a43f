"""What sysfs says about the cable: XDomain peers, their services, thunderbolt interfaces.

Everything is read afresh on each call, never cached: service names,
``/dev/tbstreamN`` numbers and interface names change between plugs and
boots. :class:`Sysfs` takes the sysfs root as a parameter so tests can point
it at a directory tree shaped like the kernel's.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from recovery.sysattr import as_int, read_attr

XDOMAIN = "thunderbolt_xdomain"
SERVICE = "thunderbolt_service"
STREAM_KEY = "stream"  # the USB4STREAM service (prtcid 1)
NETWORK_KEY = "network"  # thunderbolt_net
STREAM_MODULE = "thunderbolt_stream"
NET_MODULE = "thunderbolt_net"
CORE_MODULE = "thunderbolt"
_DEVICE_NAME = re.compile(r"^(\d+)-([0-9a-f]+)$")  # <domain>-<route>
IFF_UP = 0x1


@dataclass(frozen=True)
class Service:
    """One protocol a peer offers: ``/sys/bus/thunderbolt/devices/<peer>.<n>``."""

    name: str  # "0-1.0": also the name of its ConfigFS stream group
    peer: str  # "0-1"
    key: str  # "stream", "network", ...
    prtcid: int | None = None
    prtcvers: int | None = None


@dataclass(frozen=True)
class Peer:
    """Another host on the cable: an XDomain device."""

    name: str  # "0-1"
    domain: int
    unique_id: str  # the remote host's UUID
    device_name: str = ""
    vendor_name: str = ""
    services: tuple[Service, ...] = ()
    rx_speed: str | None = None  # per lane, as sysfs words it ("40.0 Gb/s")
    rx_lanes: int | None = None
    tx_speed: str | None = None
    tx_lanes: int | None = None
    max_hopid: int | None = None  # the highest HopID the peer accepts as input (sysfs ``maxhopid``)

    def service(self, key: str) -> Service | None:
        return next((s for s in self.services if s.key == key), None)

    @property
    def label(self) -> str:
        return peer_label(self.name, self.vendor_name, self.device_name)

    @property
    def speed(self) -> str | None:
        """``40.0 Gb/s x 2 lanes``, as the bus reports the cable to this peer."""
        if not self.rx_speed:
            return None
        return self.rx_speed + (f" x {self.rx_lanes} lanes" if self.rx_lanes else "")


def peer_label(name: str, vendor_name: str, device_name: str) -> str:
    """A peer for people: ``Dell XPS 13 (0-1)``, or its XDomain name alone when it gives no names."""
    words = " ".join(w for w in (vendor_name, device_name) if w)
    return f"{words} ({name})" if words else name


@dataclass(frozen=True)
class Interface:
    """A network interface that may carry thunderbolt-net."""

    name: str
    peer: str | None  # the XDomain behind it, None when sysfs shows none (veth, VM NIC)
    service: str | None = None


def _uevent(path: Path) -> dict[str, str]:
    text = read_attr(path / "uevent") or ""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def uuid_key(text: str) -> tuple[int, str]:
    """Order host UUIDs the same way on both hosts (numerically, text as a fallback)."""
    try:
        return (uuid.UUID(text).int, "")
    except ValueError:
        return (-1, text.lower())


class Sysfs:
    def __init__(self, root: Path | str = "/sys") -> None:
        self.root = Path(root)
        self.devices = self.root / "bus" / "thunderbolt" / "devices"
        self.net = self.root / "class" / "net"
        self.modules = self.root / "module"

    # --- modules ---

    def module_loaded(self, name: str) -> bool:
        return (self.modules / name).is_dir()

    def thunderbolt_present(self) -> bool:
        return self.devices.is_dir()

    # --- hosts ---

    def local_uuid(self, domain: int) -> str | None:
        """This host's UUID on ``domain``: its root switch's ``unique_id``."""
        return read_attr(self.devices / f"{domain}-0" / "unique_id")

    def _names(self) -> list[str]:
        try:
            return sorted(os.listdir(self.devices))
        except OSError:
            return []

    def peers(self) -> list[Peer]:
        names = self._names()
        found = []
        for name in names:
            m = _DEVICE_NAME.match(name)
            if m and _uevent(self.devices / name).get("DEVTYPE") == XDOMAIN:
                services = tuple(
                    s for s in (self.service(n) for n in names if n.startswith(name + ".")) if s is not None
                )
                found.append(self._peer(name, int(m.group(1)), services))
        return found

    def peer(self, name: str) -> Peer | None:
        return next((p for p in self.peers() if p.name == name), None)

    def _peer(self, name: str, domain: int, services: tuple[Service, ...]) -> Peer:
        d = self.devices / name
        return Peer(
            name=name,
            domain=domain,
            unique_id=read_attr(d / "unique_id") or "",
            device_name=read_attr(d / "device_name") or "",
            vendor_name=read_attr(d / "vendor_name") or "",
            services=services,
            rx_speed=read_attr(d / "rx_speed"),
            rx_lanes=as_int(read_attr(d / "rx_lanes")),
            tx_speed=read_attr(d / "tx_speed"),
            tx_lanes=as_int(read_attr(d / "tx_lanes")),
            max_hopid=as_int(read_attr(d / "maxhopid")),
        )

    def service(self, name: str) -> Service | None:
        d = self.devices / name
        if _uevent(d).get("DEVTYPE") != SERVICE:
            return None
        key = read_attr(d / "key")
        if key is None:
            return None
        return Service(
            name=name,
            peer=name.rsplit(".", 1)[0],
            key=key,
            prtcid=as_int(read_attr(d / "prtcid")),
            prtcvers=as_int(read_attr(d / "prtcvers")),
        )

    def service_driver(self, name: str) -> str | None:
        """The driver bound to service ``name`` (``thunderbolt_stream``...), None if none is."""
        try:
            return (self.devices / name / "driver").resolve(strict=True).name
        except OSError:
            return None

    # --- network interfaces ---

    def interface(self, name: str) -> Interface | None:
        path = self.net / name
        if not path.exists():
            return None
        try:
            device = (path / "device").resolve(strict=True)
        except OSError:
            return Interface(name, None)
        if _uevent(device).get("DEVTYPE") != SERVICE:
            return Interface(name, None)
        return Interface(name, device.parent.name, device.name)

    def interfaces(self) -> list[Interface]:
        """Interfaces backed by an XDomain service, and any other named ``thunderbolt*``."""
        try:
            names = sorted(os.listdir(self.net))
        except OSError:
            return []
        found = []
        for name in names:
            iface = self.interface(name)
            if iface is not None and (iface.peer is not None or name.startswith("thunderbolt")):
                found.append(iface)
        return found

    def operstate(self, name: str) -> str | None:
        return read_attr(self.net / name / "operstate")

    def carrier(self, name: str) -> bool | None:
        """Whether ``name`` has a carrier; None when the kernel does not say (interface down or gone)."""
        text = read_attr(self.net / name / "carrier")
        return None if text is None else text == "1"

    def admin_up(self, name: str) -> bool:
        """Whether ``name`` is administratively up (IFF_UP in its ``flags``)."""
        return bool((as_int(read_attr(self.net / name / "flags")) or 0) & IFF_UP)

    def interface_to(self, peer: str) -> Interface | None:
        """The thunderbolt-net interface whose service belongs to XDomain ``peer``."""
        return next((i for i in self.interfaces() if i.peer == peer), None)
