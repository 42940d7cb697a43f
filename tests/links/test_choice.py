"""Choosing a link and an interface: what --link auto does and what it says when it cannot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.errors import MissingToolError, NoPeerError, UsageError
from recovery.link import tbnet
from recovery.link.discovery import available_links, choose_link, snapshot
from recovery.link.opening import receiver_spec, sender_spec
from recovery.link.spec import LinkSpec, parse_link
from recovery.link.sysfs import Sysfs
from tests.links.fakekernel import Fabric


@pytest.fixture
def fabric(tmp_path: Path) -> Iterator[Fabric]:
    f = Fabric(tmp_path, a_uuid="00000000-0000-0000-0000-000000000001", b_uuid="00000000-0000-0000-0000-000000000002")
    yield f
    f.close()


def test_parse_links() -> None:
    assert parse_link("tbnet") == LinkSpec("tbnet")
    assert parse_link("tbnet:eth0") == LinkSpec("tbnet", interface="eth0")
    assert parse_link("tbstream:0-1") == LinkSpec("tbstream", interface="0-1")
    assert sender_spec(None, None) == LinkSpec("auto")
    assert receiver_spec("tbnet:thunderbolt0", None, None) == LinkSpec("tbnet", interface="thunderbolt0")
    with pytest.raises(UsageError, match="tbstream"):
        parse_link("usb")


def test_no_thunderbolt_at_all(tmp_path: Path) -> None:
    with pytest.raises(MissingToolError, match="no Thunderbolt/USB4 support") as e:
        choose_link(Sysfs(tmp_path))
    assert e.value.hint and "--to HOST:PORT" in e.value.hint


def test_nobody_on_the_cable(fabric: Fabric) -> None:
    with pytest.raises(NoPeerError, match="no peer on the cable") as e:
        choose_link(fabric.a.host().sysfs)
    assert e.value.hint and "--to HOST:PORT" in e.value.hint


def test_stream_module_missing_here_falls_back_to_tbnet(fabric: Fabric) -> None:
    fabric.without_stream_module(fabric.a)
    fabric.plug()
    assert choose_link(fabric.a.host().sysfs) == "tbnet"
    assert choose_link(fabric.b.host().sysfs) == "tbnet"  # b sees no stream service from a
    assert available_links(fabric.a.host().sysfs) == available_links(fabric.b.host().sysfs) == ("tbnet",)


def test_both_links_are_seen_alike_on_both_hosts(fabric: Fabric) -> None:
    fabric.plug()
    assert available_links(fabric.a.host().sysfs) == available_links(fabric.b.host().sysfs) == ("tbstream", "tbnet")


@pytest.mark.parametrize(
    ("old_kernel", "says"),
    [
        ("b", "beta box (0-1) offers no USB4STREAM service (it runs an older kernel"),
        ("a", "the peer offers USB4STREAM but thunderbolt_stream is not loaded here"),
    ],
)
def test_nothing_usable_says_what_is_missing(fabric: Fabric, old_kernel: str, says: str) -> None:
    fabric.without_stream_module(getattr(fabric, old_kernel))
    fabric.plug()
    sysfs = fabric.a.host().sysfs
    for iface in (sysfs.net / "thunderbolt0").iterdir():
        iface.unlink()
    (sysfs.net / "thunderbolt0").rmdir()
    (sysfs.modules / "thunderbolt_net").rmdir()
    with pytest.raises(MissingToolError) as e:
        choose_link(sysfs)
    assert says in e.value.message
    assert "thunderbolt_net is not loaded here" in e.value.message
    assert e.value.hint and "modprobe" in e.value.hint and "--to HOST:PORT" in e.value.hint


def test_peer_without_any_service_we_use(fabric: Fabric) -> None:
    fabric.without_stream_module(fabric.b)
    fabric.plug()
    sysfs = fabric.a.host().sysfs
    for iface in (sysfs.net / "thunderbolt0").iterdir():
        iface.unlink()
    (sysfs.net / "thunderbolt0").rmdir()
    net_service = sysfs.devices / "0-1.1"
    for f in ("key",):
        (net_service / f).write_text("targetdm\n")  # only Apple's target disk mode
    with pytest.raises(NoPeerError, match="offers no network service"):
        choose_link(sysfs)


def test_snapshot_shows_peer_services_speed_and_interface(fabric: Fabric) -> None:
    fabric.plug()
    [peer] = snapshot(fabric.a.host().sysfs)
    assert peer.name == "0-1" and peer.unique_id == fabric.b.uuid
    assert set(peer.services) == {"stream", "network"}
    assert (peer.rx_speed, peer.rx_lanes, peer.interfaces) == ("20.0 Gb/s", 2, ("thunderbolt0",))


def test_interface_backed_by_a_peer_wins(fabric: Fabric) -> None:
    fabric.plug()
    sysfs = fabric.a.host().sysfs
    (sysfs.net / "thunderbolt9").mkdir()  # a stray one with no XDomain behind it
    iface = tbnet.choose_interface(sysfs, None)
    assert (iface.name, iface.peer, iface.service) == ("thunderbolt0", "0-1", "0-1.1")


def test_lone_interface_named_thunderbolt_is_used(tmp_path: Path) -> None:
    (tmp_path / "class" / "net" / "thunderbolt0").mkdir(parents=True)
    (tmp_path / "class" / "net" / "eth0").mkdir()
    iface = tbnet.choose_interface(Sysfs(tmp_path), None)
    assert (iface.name, iface.peer) == ("thunderbolt0", None)
    (tmp_path / "class" / "net" / "thunderbolt1").mkdir()
    with pytest.raises(UsageError, match="several thunderbolt interfaces") as e:
        tbnet.choose_interface(Sysfs(tmp_path), None)
    assert e.value.hint == "choose one with --link tbnet:thunderbolt0"


def test_explicit_interface_must_exist(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no network interface nosuch0"):
        tbnet.choose_interface(Sysfs(tmp_path), "nosuch0")
    assert tbnet.choose_interface(Sysfs("/sys"), "lo").name == "lo"


def test_link_local_parsing(tmp_path: Path) -> None:
    table = tmp_path / "if_inet6"
    table.write_text(
        "00000000000000000000000000000001 01 80 10 80       lo\n"
        "fe800000000000000000000000000abc 04 40 20 c0 thunderbolt0\n"
    )
    assert tbnet.link_local("thunderbolt0", table) == ("fe80::abc", 0xC0)  # tentative: still in DAD
    with table.open("a") as f:
        f.write("fe800000000000000000000000000def 04 40 20 80 thunderbolt0\n")
    assert tbnet.link_local("thunderbolt0", table) == ("fe80::def", 0x80)
    assert tbnet.link_local("lo", table) == (None, 0)
