"""The network interface a TCP connection runs over, and its speed as the kernel reports it.

For the wizard's "which link, how fast": the cable links have the bus's
speed; a TCP connection has its network card's (``/sys/class/net/IF/speed``,
in Mb/s, which virtual and wireless interfaces often do not report).
"""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass
from pathlib import Path

from recovery.errors import RecoveryError
from recovery.run import output

SYS_NET = Path("/sys/class/net")
LOOPBACK = "lo"  # Linux names its loopback interface so


@dataclass(frozen=True)
class LocalAddress:
    ifname: str
    family: str  # "inet" or "inet6", as `ip` words it
    address: str
    scope: str  # "global", "link", "host"


def local_addresses() -> tuple[LocalAddress, ...]:
    """This machine's addresses (from `ip -j address show`); empty if `ip` cannot say."""
    try:
        links = json.loads(output(["ip", "-j", "address", "show"], timeout=5) or "[]")
    except (RecoveryError, ValueError):
        return ()
    return tuple(
        LocalAddress(str(link.get("ifname", "")), str(a.get("family", "")), str(a["local"]), str(a.get("scope", "")))
        for link in links
        for a in link.get("addr_info", ())
        if a.get("local")
    )


def interface_of(address: str, scope_id: int = 0) -> str | None:
    """The local interface that holds ``address`` (an IPv4-mapped IPv6 address counts as IPv4)."""
    if scope_id:
        try:
            return socket.if_indextoname(scope_id)
        except OSError:
            return None
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for local in local_addresses():
        try:
            if ipaddress.ip_address(local.address) == ip:
                return local.ifname
        except ValueError:
            continue
    return None


def speed_mbps(ifname: str, sys_net: Path = SYS_NET) -> int | None:
    """The negotiated speed in Mb/s, or None where the interface does not say."""
    try:
        value = int((sys_net / ifname / "speed").read_text().strip())
    except (OSError, ValueError):
        return None
    return value if value > 0 else None


def format_speed(ifname: str, mbps: int | None) -> str | None:
    """``1 Gb/s (eth0)``, ``100 Mb/s (eno1)``, ``loopback (no network card in between)``, or None."""
    if ifname == LOOPBACK:
        return "loopback (no network card in between)"
    if mbps is None:
        return None
    rate = f"{mbps / 1000:g} Gb/s" if mbps >= 1000 else f"{mbps} Mb/s"
    return f"{rate} ({ifname})"


def describe(sock: socket.socket, sys_net: Path = SYS_NET) -> str | None:
    """The speed of the interface ``sock`` is bound to, for people; None when unknown."""
    try:
        local = sock.getsockname()
    except OSError:
        return None
    if not isinstance(local, tuple):
        return None
    ifname = interface_of(str(local[0]), local[3] if len(local) >= 4 else 0)
    return None if ifname is None else format_speed(ifname, speed_mbps(ifname, sys_net))
