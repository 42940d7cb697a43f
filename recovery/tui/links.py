"""The state of the links, as the first screen shows it (read from sysfs; no Textual).

Which kernel modules for the cable are loaded, which cable links this build
has, hosts seen on the Thunderbolt bus, and this machine's addresses so a
user can type one on the other machine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from recovery import run
from recovery.errors import RecoveryError
from recovery.link import select

MODULES = (
    ("thunderbolt", "USB4/Thunderbolt bus"),
    ("thunderbolt_net", "IP over the cable"),
    ("thunderbolt_stream", "USB4STREAM"),
)
SYS_MODULE = Path("/sys/module")
TB_DEVICES = Path("/sys/bus/thunderbolt/devices")


@dataclass(frozen=True)
class LinkReport:
    modules: tuple[tuple[str, str, bool], ...]  # (module, what it is, loaded)
    cable_links: tuple[str, ...]  # cable link kinds this build can open
    hosts_on_cable: tuple[str, ...]  # XDomain peers the bus sees
    addresses: tuple[str, ...]  # this machine's global addresses


def _hosts_on_cable(root: Path = TB_DEVICES) -> tuple[str, ...]:
    """Other hosts on the cable: the bus's XDomain devices (``0-1``, not their services)."""
    out = []
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return ()
    for dev in entries:
        try:
            if "DEVTYPE=thunderbolt_xdomain" not in (dev / "uevent").read_text():
                continue
            name = (dev / "device_name").read_text().strip() if (dev / "device_name").exists() else ""
        except OSError:
            continue
        out.append(name or dev.name)
    return tuple(out)


def _addresses() -> tuple[str, ...]:
    try:
        text = run.output(["ip", "-j", "address", "show", "scope", "global"], timeout=5)
        data = json.loads(text or "[]")
    except (RecoveryError, ValueError):
        return ()
    out = []
    for iface in data:
        for a in iface.get("addr_info", []):
            if a.get("family") == "inet" and a.get("local"):
                out.append(str(a["local"]))
    return tuple(out)


def read_report() -> LinkReport:
    """Look at this machine now (a few sysfs reads and one `ip` call)."""
    modules = tuple((name, what, (SYS_MODULE / name).is_dir()) for name, what in MODULES)
    return LinkReport(
        modules=modules,
        cable_links=tuple(sorted(select._cable_links())),
        hosts_on_cable=_hosts_on_cable(),
        addresses=_addresses(),
    )
