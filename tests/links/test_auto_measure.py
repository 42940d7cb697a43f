"""``--link auto`` with USB4STREAM and thunderbolt-net both up: each measured, the faster kept.

USB4STREAM runs on the emulated kernel (tests/links/fakekernel), which also
models thunderbolt-net's HopIDs, so both links' HopIDs are checked side by
side. thunderbolt-net's data path is real TCP between two network namespaces
joined by a veth pair, shaped with tc where the test needs it slow; each
side's opener thread enters its namespace. The interface bring-up, DAD and
the beacon are not repeated here (tests/links/test_tbnet_netns.py runs them
with real processes).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from recovery.errors import LinkError
from recovery.link import tcp
from recovery.link.auto import MEASURE_SECONDS, open_auto
from recovery.link.base import Connection
from recovery.link.deadline import Deadline
from recovery.link.tbstream import link as tblink
from recovery.link.tbstream import open_streams
from tests.links.fakekernel import Fabric, FakeHost
from tests.links.netns import enter, sh
from tests.links.test_tbstream_emulated import assert_clean, hopids, in_thread

pytestmark = pytest.mark.root
ADDR = {"a": "10.77.0.1", "b": "10.77.0.2"}
PORT = 7554


@contextlib.contextmanager
def ip_cable(rate: str | None) -> Iterator[dict[str, str]]:
    """Namespaces for alpha and beta joined by a veth pair (``rate``: tc shaping on both ends)."""
    ns = {k: f"u4r-{os.getpid()}-auto-{k}" for k in ("a", "b")}
    try:
        for k in ns:
            sh("ip", "netns", "add", ns[k])
        sh("ip", "link", "add", "tb0", "netns", ns["a"], "type", "veth", "peer", "name", "tb0", "netns", ns["b"])
        for k in ns:
            sh("ip", "-n", ns[k], "addr", "add", f"{ADDR[k]}/24", "dev", "tb0")
            sh("ip", "-n", ns[k], "link", "set", "tb0", "up")
            if rate:
                sh(
                    "ip",
                    "netns",
                    "exec",
                    ns[k],
                    "tc",
                    "qdisc",
                    "add",
                    "dev",
                    "tb0",
                    "root",
                    "tbf",
                    "rate",
                    rate,
                    "burst",
                    "64kb",
                    "latency",
                    "100ms",
                )
        yield ns
    finally:
        for k in ns:
            sh("ip", "netns", "del", ns[k], check=False)


def tcp_over(ns: str, here: str, there: str) -> Callable[..., Connection]:
    """A thunderbolt-net opener for one side: TCP over the veth, from inside ``ns``."""

    def opener(spec: object, role: str, *, timeout: float | None, on_listening: Any, stop: Any) -> Connection:
        enter(ns)  # this opener's thread only
        deadline = Deadline(timeout, stop)
        if role == "receive":
            with tcp.Listener(tcp.Endpoint(here, PORT)) as listener:
                return listener.accept(timeout, kind="tbnet")
        while True:
            try:
                return tcp.connect(tcp.Endpoint(there, PORT), timeout=2, kind="tbnet")
            except LinkError:
                if deadline.expired():
                    raise
                deadline.pause(0.1)

    return opener


def auto_pair(fabric: Fabric, ns: dict[str, str], *, tbnet_on: tuple[str, ...] = ("a", "b")) -> dict[str, Any]:
    """alpha receives, beta sends (and measures); both with ``--link auto``. Returns both results."""

    def side(h: FakeHost, key: str, role: str) -> Callable[[], Any]:
        other = "b" if key == "a" else "a"

        def prepare() -> bool:
            if key not in tbnet_on:
                return False
            h.net_up()  # thunderbolt-net's HopIDs in the emulated kernel
            return True

        return lambda: open_auto(
            role,
            timeout=20,
            on_listening=None,
            stop=None,
            host=h.host(),
            tbnet_opener=tcp_over(ns[key], ADDR[key], ADDR[other]),
            prepare_tbnet=prepare,
        )

    started = time.monotonic()
    joins = {"a": in_thread(side(fabric.a, "a", "receive")), "b": in_thread(side(fabric.b, "b", "send"))}
    got = {k: j() for k, j in joins.items()}
    got["seconds"] = time.monotonic() - started
    return got


def exchange(a: Connection, b: Connection) -> None:
    b.data.send(b"after the choice")
    assert a.data.recv_some(16) == b"after the choice"


def test_usb4stream_is_kept_when_it_is_faster(fabric: Fabric) -> None:
    fabric.plug()
    with ip_cable("40mbit") as ns:  # thunderbolt-net about 5 MB/s; the emulated streams far more
        got = auto_pair(fabric, ns)
        a, b = got["a"], got["b"]
        with a, b:
            assert a.kind == b.kind == "tbstream"
            assert b.rates is not None and set(b.rates) == {"tbstream", "tbnet"}
            assert b.rates["tbstream"] > 2 * b.rates["tbnet"] > 0
            assert a.rates == b.rates and a.choice == b.choice
            assert b.choice is not None and b.choice.startswith("USB4STREAM: the faster when measured")
            assert "thunderbolt-net 0.0" in b.choice
            exchange(a, b)
            for h in (fabric.a, fabric.b):  # thunderbolt-net came up first and kept HopID 8
                assert h.xd is not None and h.xd.in_pool[8] == h.xd.out_pool[8] == "thunderbolt-net"
                assert h.net.carrier
            assert hopids(fabric.a) == {"rcvctla": (15, 15), "rcvdata": (14, 14)}
    print(f"\nauto with both links measured: {got['seconds']:.2f} s; rates {b.rates}")


def test_thunderbolt_net_is_kept_when_it_is_faster(fabric: Fabric) -> None:
    fabric.rate = 4e6  # the emulated streams at 4 MB/s; the veth unshaped
    fabric.plug()
    with ip_cable(None) as ns:
        got = auto_pair(fabric, ns)
        a, b = got["a"], got["b"]
        with a, b:
            assert a.kind == b.kind == "tbnet"
            assert b.rates is not None and b.rates["tbnet"] > b.rates["tbstream"]
            assert b.choice is not None and b.choice.startswith("thunderbolt-net: the faster")
            exchange(a, b)
            for h in (fabric.a, fabric.b):  # the streams were released; thunderbolt-net keeps its HopID
                assert h.xd is not None and set(h.xd.in_pool) == set(h.xd.out_pool) == {8}
            assert_clean(fabric.a, fabric.b)


def test_no_measuring_when_thunderbolt_net_is_up_on_one_side_only(
    fabric: Fabric, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tblink, "CARRIER_WAIT", 1.0)  # beta waits for a carrier that never comes
    fabric.plug()
    with ip_cable(None) as ns:
        got = auto_pair(fabric, ns, tbnet_on=("b",))
        a, b = got["a"], got["b"]
        with a, b:
            assert a.kind == b.kind == "tbstream"
            assert a.rates is None and b.choice == "USB4STREAM: thunderbolt-net is not up on both"
            exchange(a, b)


def test_what_measuring_costs(fabric: Fabric) -> None:
    """The time to a usable link: USB4STREAM alone, against both opened and measured (same run)."""
    fabric.plug()
    started = time.monotonic()
    joins = [in_thread(lambda h=h: open_streams(h.host(), None, Deadline(10))) for h in (fabric.b, fabric.a)]
    for join in joins:
        conn, _ = join()
        conn.close()
    alone = time.monotonic() - started
    with ip_cable(None) as ns:
        got = auto_pair(fabric, ns)
        got["a"].close()
        got["b"].close()
    both = got["seconds"]
    assert both > alone + 2 * MEASURE_SECONDS * 0.9
    print(
        f"\nto a usable link: USB4STREAM alone {alone:.2f} s; both opened and measured {both:.2f} s "
        f"(+{both - alone:.2f} s, of which {2 * MEASURE_SECONDS:.0f} s measuring)"
    )
