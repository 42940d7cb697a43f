"""The state of the links, as the first screen shows it (sysfs and `ip`; no Textual).

Which kernel modules for the cable are loaded, the hosts on the cable and the
speed the bus reports, and this machine's addresses so a user can type one
on the other machine.
"""

from __future__ import annotations

from dataclasses import dataclass

from recovery.engine.peer import cable
from recovery.link import nic
from recovery.link.sysfs import CORE_MODULE, NET_MODULE, STREAM_MODULE, Sysfs

MODULES = (
    (CORE_MODULE, "USB4/Thunderbolt bus"),
    (NET_MODULE, "IP over the cable"),
    (STREAM_MODULE, "USB4STREAM"),
)


@dataclass(frozen=True)
class LinkReport:
    modules: tuple[tuple[str, str, bool], ...]  # (module, what it is, loaded)
    hosts_on_cable: tuple[str, ...]  # "Vendor Host (0-1), 40.0 Gb/s x 2 lanes"
    addresses: tuple[str, ...]  # this machine's global addresses (IPv4 first), to be typed on the other


def _addresses() -> tuple[str, ...]:
    found = [a for a in nic.local_addresses() if a.family in ("inet", "inet6") and a.scope == "global"]
    return tuple(a.address for a in sorted(found, key=lambda a: a.family != "inet"))


def read_report(sysfs: Sysfs | None = None) -> LinkReport:
    """Look at this machine now (a few sysfs reads and one `ip` call)."""
    sysfs = sysfs or Sysfs()
    peers = sysfs.peers()
    return LinkReport(
        modules=tuple((name, what, sysfs.module_loaded(name)) for name, what in MODULES),
        hosts_on_cable=tuple(cable.describe(p) for p in peers),
        addresses=_addresses(),
    )
