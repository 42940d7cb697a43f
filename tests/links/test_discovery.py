"""Discovery: events from a udev monitor stand-in at the pyudev boundary only."""

from __future__ import annotations

import os
import queue
from dataclasses import dataclass, field
from typing import Any

from recovery import events
from recovery.engine.peer.cable import describe_event
from recovery.link.discovery import (
    CableMonitor,
    InterfaceAppeared,
    InterfaceGone,
    PeerAppeared,
    PeerGone,
    ServiceAppeared,
    ServiceGone,
)


@dataclass
class FakeAttributes:
    values: dict[str, bytes]

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)


@dataclass
class FakeDevice:
    """The parts of a pyudev.Device the adapter reads."""

    action: str
    subsystem: str
    sys_name: str
    device_type: str | None = None
    attrs: dict[str, bytes] = field(default_factory=dict)
    parent: FakeDevice | None = None

    @property
    def attributes(self) -> FakeAttributes:
        return FakeAttributes(self.attrs)


class FakeMonitor:
    """Stands in for a started pyudev.Monitor: a queue and a readable descriptor."""

    def __init__(self) -> None:
        self.devices: queue.Queue[FakeDevice] = queue.Queue()
        self.r, self.w = os.pipe()

    def fileno(self) -> int:
        return self.r

    def push(self, *devices: FakeDevice) -> None:
        for d in devices:
            self.devices.put(d)
            os.write(self.w, b"!")

    def poll(self, timeout: float | None = None) -> FakeDevice | None:
        try:
            device = self.devices.get(timeout=timeout)
        except queue.Empty:
            return None
        os.read(self.r, 1)
        return device


XD = {
    "unique_id": b"b8f0a3c2-0000-1111-2222-333344445555\n",
    "device_name": b"MacBook Pro\n",
    "vendor_name": b"Apple Inc.\n",
    "rx_speed": b"20.0 Gb/s\n",
    "rx_lanes": b"2\n",
}
SERVICE = FakeDevice(
    "add", "thunderbolt", "0-1.0", "thunderbolt_service", {"key": b"stream\n", "prtcid": b"1\n", "prtcvers": b"1\n"}
)


def test_plug_and_unplug_become_events() -> None:
    mon = FakeMonitor()
    cable = CableMonitor(mon)
    assert cable.fileno() == mon.r
    mon.push(
        FakeDevice("add", "thunderbolt", "0-0", "thunderbolt_device"),  # a switch: not a peer
        FakeDevice("add", "thunderbolt", "0-1", "thunderbolt_xdomain", XD),
        SERVICE,
        FakeDevice("add", "net", "thunderbolt0", parent=SERVICE),
        FakeDevice("add", "net", "eth0"),  # not on the cable
        FakeDevice("remove", "net", "thunderbolt0"),
        FakeDevice("remove", "thunderbolt", "0-1.0", "thunderbolt_service"),
        FakeDevice("remove", "thunderbolt", "0-1", "thunderbolt_xdomain"),
    )
    got = []
    while (e := cable.poll(0.2)) is not None:
        got.append(e)
    assert got == [
        PeerAppeared(
            name="0-1",
            unique_id="b8f0a3c2-0000-1111-2222-333344445555",
            device_name="MacBook Pro",
            vendor_name="Apple Inc.",
            rx_speed="20.0 Gb/s",
            rx_lanes=2,
        ),
        ServiceAppeared(name="0-1.0", peer="0-1", key="stream", prtcid=1, prtcvers=1),
        InterfaceAppeared("thunderbolt0", "0-1"),
        InterfaceGone("thunderbolt0"),
        ServiceGone("0-1.0", "0-1"),
        PeerGone("0-1"),
    ]


def test_poll_times_out_with_nothing() -> None:
    assert CableMonitor(FakeMonitor()).poll(0.05) is None


def test_an_interface_named_like_thunderbolt_without_a_peer_device() -> None:
    mon = FakeMonitor()
    mon.push(FakeDevice("add", "net", "thunderbolt1"), FakeDevice("remove", "net", "thunderbolt1"))
    cable = CableMonitor(mon)
    assert cable.poll(0.1) == InterfaceAppeared("thunderbolt1", None)
    assert cable.poll(0.1) == InterfaceGone("thunderbolt1")


def test_events_have_json_and_text() -> None:
    e = PeerAppeared(
        name="0-1",
        unique_id="u",
        device_name="MacBook Pro",
        vendor_name="Apple Inc.",
        services=("stream", "network"),
        rx_speed="20.0 Gb/s",
        rx_lanes=2,
        interfaces=("thunderbolt0",),
    )
    line = events.to_json(e)
    assert '"event":"cable_peer"' in line and '"services":["stream","network"]' in line
    text = describe_event(e, details=True)
    assert text.startswith("Apple Inc. MacBook Pro (0-1) is on the cable\n    host u\n")
    assert "stream, network" in text and "rx 20.0 Gb/s x 2 lanes" in text and "thunderbolt0" in text
    assert describe_event(e) == "Apple Inc. MacBook Pro (0-1) is on the cable"
    assert describe_event(PeerGone("0-1")) == "0-1 left the cable"
