"""The wizard on the cable: both ends choose the same roles, and the bus's speed is shown."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from recovery.engine.peer import cable
from recovery.errors import NoPeerError
from recovery.link import discovery
from recovery.link.sysfs import Sysfs
from recovery.tui.links import read_report


def _host(root: Path, local: str, peers: dict[str, str]) -> Sysfs:
    """A sysfs tree: this host's root switch and XDomain peers (name -> UUID)."""
    devices = root / "bus" / "thunderbolt" / "devices"
    switch = devices / "0-0"
    switch.mkdir(parents=True)
    (switch / "unique_id").write_text(local + "\n")
    for name, uuid in peers.items():
        d = devices / name
        d.mkdir()
        (d / "uevent").write_text("DEVTYPE=thunderbolt_xdomain\n")
        (d / "unique_id").write_text(uuid + "\n")
        (d / "device_name").write_text("XPS 13\n")
        (d / "vendor_name").write_text("Dell\n")
        (d / "rx_speed").write_text("20.0 Gb/s\n")
        (d / "rx_lanes").write_text("2\n")
    (root / "module" / "thunderbolt").mkdir(parents=True)
    return Sysfs(root)


A = "0b7f4a3c-0000-0000-0000-000000000001"
B = "d2c81e55-0000-0000-0000-000000000002"


def test_the_two_ends_take_opposite_roles_when_thunderbolt_net_is_up(tmp_path: Path) -> None:
    here = _host(tmp_path / "a", A, {"0-1": B})
    there = _host(tmp_path / "b", B, {"0-1": A})
    assert {cable.role(here, ("tbnet",)), cable.role(there, ("tbnet",))} == {"send", "receive"}
    both = ("tbstream", "tbnet")  # measured at the start: the sending side measures
    assert cable.role(here, both) == cable.role(here, ("tbnet",)) != cable.role(there, both)
    assert cable.role(here, ("tbstream",)) == cable.role(there, ("tbstream",)) == "receive"


def test_an_attempt_over_usb4stream_waits_until_stopped() -> None:
    """Its devices are opened once and kept open: no open/close every few seconds against a peer
    that is not ready yet (it has wedged router paths)."""
    assert cable.attempt_timeout(("tbstream",), 10) is None
    assert cable.attempt_timeout(("tbstream", "tbnet"), 10) is None
    assert cable.attempt_timeout(("tbnet",), 10) == 10


def test_more_than_one_host_on_the_cable_is_refused(tmp_path: Path) -> None:
    crowded = _host(tmp_path, A, {"0-1": B, "0-3": "e0000000-0000-0000-0000-000000000003"})
    with pytest.raises(NoPeerError, match="2 hosts on the cable"):
        cable.role(crowded, ("tbnet",))


def test_the_report_shows_the_bus_speed(tmp_path: Path) -> None:
    sysfs = _host(tmp_path, A, {"0-1": B})
    report = read_report(sysfs)
    assert report.hosts_on_cable == ("Dell XPS 13 (0-1), 20.0 Gb/s x 2 lanes",)
    assert [p.speed for p in sysfs.peers()] == ["20.0 Gb/s x 2 lanes"]
    assert ("thunderbolt", "USB4/Thunderbolt bus", True) in report.modules
    assert ("thunderbolt_stream", "USB4STREAM", False) in report.modules


def test_no_peer_on_the_cable_says_so(tmp_path: Path) -> None:
    with pytest.raises(NoPeerError, match="no peer on the cable"):
        cable.open_cable(threading.Event(), _host(tmp_path, A, {}))


def test_discovery_events_read_as_status_lines() -> None:
    appeared = discovery.PeerAppeared(name="0-1", unique_id=B, device_name="XPS 13", vendor_name="Dell")
    assert cable.describe_event(appeared) == "Dell XPS 13 (0-1) is on the cable"
    assert cable.describe_event(discovery.PeerGone(name="0-1")) == "0-1 left the cable"
    service = discovery.ServiceAppeared(name="0-1.0", peer="0-1", key="stream")
    assert cable.describe_event(service) == "0-1 offers service 0-1.0 (stream)"
    assert cable.describe_event(discovery.ServiceGone("0-1.0", "0-1")) == "0-1 withdrew service 0-1.0"
    assert (
        cable.describe_event(discovery.InterfaceAppeared("thunderbolt0", "0-1"))
        == "network interface thunderbolt0 appeared (to 0-1)"
    )
    assert cable.describe_event(discovery.InterfaceGone("thunderbolt0")) == "network interface thunderbolt0 went away"
