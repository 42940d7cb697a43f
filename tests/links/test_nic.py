"""A TCP link's speed is its network card's: over loopback, and over a veth pair between namespaces."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from recovery.link import nic, tcp
from recovery.link.base import Connection
from tests.links.netns import cable, sh


def test_loopback_is_this_machine() -> None:
    with tcp.Listener(tcp.Endpoint("127.0.0.1", 0)) as listener:
        box: list[Connection] = []
        t = threading.Thread(target=lambda: box.append(listener.accept(10)))
        t.start()
        ours = tcp.connect(tcp.Endpoint("127.0.0.1", listener.port), timeout=10)
        t.join(10)
    with ours, box[0] as theirs:
        assert ours.speed() == theirs.speed() == "loopback (no network card in between)"


def test_speed_comes_from_sysfs(tmp_path: Path) -> None:
    for name, value in (("eth0", "1000"), ("eno1", "100"), ("wlan0", "-1"), ("tb0", "40000")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "speed").write_text(f"{value}\n")
    assert nic.format_speed("eth0", nic.speed_mbps("eth0", tmp_path)) == "1 Gb/s (eth0)"
    assert nic.format_speed("eno1", nic.speed_mbps("eno1", tmp_path)) == "100 Mb/s (eno1)"
    assert nic.format_speed("tb0", nic.speed_mbps("tb0", tmp_path)) == "40 Gb/s (tb0)"
    assert nic.speed_mbps("wlan0", tmp_path) is None  # unknown speed reads -1
    assert nic.speed_mbps("gone", tmp_path) is None
    assert nic.LocalAddress("lo", "inet", "127.0.0.1", "host") in nic.local_addresses()
    assert nic.interface_of("::ffff:127.0.0.1") == "lo"
    assert nic.interface_of("not an address") is None


ACCEPT = """
from recovery.link import tcp
with tcp.Listener(tcp.Endpoint("10.77.0.1", 7601)) as listener:
    print("listening", flush=True)
    with listener.accept(20) as conn:
        print(conn.speed(), flush=True)
"""
CONNECT = """
from recovery.link import tcp
with tcp.connect(tcp.Endpoint("10.77.0.1", 7601), timeout=20) as conn:
    print(conn.speed(), flush=True)
"""


@pytest.mark.root
def test_a_veth_pair_reports_its_speed() -> None:
    """veth says 10000 Mb/s; a real card says what it negotiated, read the same way."""
    with cable("eth7") as (a, b):
        for ns, address in ((a, "10.77.0.1/24"), (b, "10.77.0.2/24")):
            sh("ip", "-n", ns, "addr", "add", address, "dev", "eth7")
            sh("ip", "-n", ns, "link", "set", "eth7", "up")
        server = subprocess.Popen(
            ["ip", "netns", "exec", a, sys.executable, "-c", ACCEPT],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None and server.stdout.readline() == "listening\n"
            client = sh("ip", "netns", "exec", b, sys.executable, "-c", CONNECT, check=False)
            out, err = server.communicate(timeout=30)
        finally:
            server.kill()
            server.wait()
        assert client.stdout.strip() == "10 Gb/s (eth7)", client.stdout + client.stderr
        assert out.strip() == "10 Gb/s (eth7)", out + err
