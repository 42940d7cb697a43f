"""thunderbolt-net for real: two namespaces joined by a veth pair named like thunderbolt interfaces.

Each side is a real `recovery` process in its own namespace; neither is
given an address. The veth ends have no XDomain device behind them, so the
lone ``thunderbolt*`` interface is used (see docs/links.md).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.errors import LinkError, MissingToolError, NoPeerError, RefusedError
from tests.e2e.relay import Relay
from tests.helpers import CODE, loop_device, same_bytes
from tests.links.netns import Proc, cable, enter, link_info, sh

pytestmark = pytest.mark.root
MIB = 1 << 20
TIMEOUT = "5"  # the engine's liveness timeout, small for tests


def make_image(path: Path, mib: int, *, seed: int) -> None:
    import random

    rng = random.Random(seed)
    with open(path, "wb") as f:
        for i in range(mib):
            f.write(rng.randbytes(MIB) if i % 4 != 3 else bytes(MIB))  # some zero runs too


@pytest.fixture
def disks(tmp_path: Path) -> Iterator[tuple[str, str]]:
    source, target = tmp_path / "source.img", tmp_path / "target.img"
    make_image(source, 24, seed=3)
    with open(target, "wb") as f:
        f.truncate(24 * MIB)
    with loop_device(source, partitions=False) as src, loop_device(target, partitions=False) as dst:
        yield src, dst


@pytest.mark.smoke
def test_peers_find_each_other_and_clone_with_no_address(disks: tuple[str, str]) -> None:
    src, dst = disks
    with cable() as (a, b):
        receiver = Proc(a, "receive", "--code", CODE, "--target", dst, "--timeout", TIMEOUT)  # --link auto
        sender = None
        try:
            sender = Proc(b, "send", "--code", CODE, "--source", src, "--timeout", TIMEOUT)
            listening = receiver.wait_event("listening")
            assert listening["link"] == "tbnet" and listening["address"].startswith("fe80:")
            assert listening["address"].endswith("%thunderbolt0")
            peer = sender.wait_event("peer")
            assert peer["link"] == "tbnet"
            assert peer["speed"] == "10 Gb/s (thunderbolt0)"  # what veth reports; a real one may say nothing
            assert sender.wait() == 0, sender.stderr
            assert receiver.wait() == 0, receiver.stderr
        finally:
            receiver.kill()
            if sender:
                sender.kill()
        summaries = [p.event("summary") for p in (sender, receiver)]
        assert all(s and s["verified"] is True for s in summaries)
        # An IP link a network can reach: the data was sealed, and both sides say so.
        assert all(p.event("plan")["encrypted"] is True for p in (sender, receiver))  # type: ignore[index]
        assert sender.event("peer")["security"] == "paired; data encrypted by default on this link"  # type: ignore[index]
        summary = summaries[0]
        assert summary is not None and same_bytes(src, dst)
        # Thunderbolt interfaces get their largest MTU: the default one costs two thirds of the speed.
        assert link_info(a, "thunderbolt0")["mtu"] == link_info(a, "thunderbolt0")["max_mtu"] == 65535
        print(
            f"\npeer found {peer['_at']:.2f} s after the sender started; "
            f"clone took {summary['seconds']:.2f} s for {summary['size'] >> 20} MiB"
        )


def test_cutting_the_cable_mid_transfer_is_link_lost_on_both_sides(disks: tuple[str, str]) -> None:
    src, dst = disks
    with cable() as (a, b):
        # ~5 MB/s from the sender, so the transfer is still running when the cable goes.
        sh(
            "ip",
            "netns",
            "exec",
            b,
            "tc",
            "qdisc",
            "add",
            "dev",
            "thunderbolt0",
            "root",
            "tbf",
            "rate",
            "40mbit",
            "burst",
            "64kb",
            "latency",
            "200ms",
        )
        receiver = Proc(a, "receive", "--code", CODE, "--target", dst, "--link", "tbnet", "--timeout", TIMEOUT)
        sender = Proc(
            b, "send", "--code", CODE, "--source", src, "--link", "tbnet", "--mode", "exact", "--timeout", TIMEOUT
        )
        try:
            sender.wait_event("progress", phase="transfer", timeout=30)
            sh("ip", "-n", a, "link", "del", "thunderbolt0")  # both ends go
            codes = sender.wait(30), receiver.wait(30)
        finally:
            sender.kill()
            receiver.kill()
        assert codes == (LinkError.exit_code, LinkError.exit_code), (sender.stderr, receiver.stderr)
        for p in (sender, receiver):
            assert len(p.error_lines()) == 1, p.stderr
            assert "link lost" in p.error_lines()[0] and "thunderbolt0" in p.error_lines()[0], p.stderr
            assert "Traceback" not in p.stderr
            error = p.event("error")
            assert error and error["code"] == "link_lost"
        assert receiver.event("summary") is None, "the receiver must not report success"


def test_after_a_pulled_cable_the_same_commands_resume_the_clone(disks: tuple[str, str]) -> None:
    """The veth pair is deleted mid-transfer (once something is durable) and made again: the second
    run sends only what the receiver's journal does not hold, and the copy verifies."""
    src, dst = disks
    with cable() as (a, b):
        # ~5 MB/s; a burst above the 64 KiB segments of the cable's MTU, or nothing passes at all
        sh(
            "ip",
            "netns",
            "exec",
            b,
            "tc",
            "qdisc",
            "add",
            "dev",
            "thunderbolt0",
            "root",
            "tbf",
            "rate",
            "40mbit",
            "burst",
            "512kb",
            "latency",
            "200ms",
        )
        argv_rx = ("receive", "--code", CODE, "--target", dst, "--link", "tbnet", "--timeout", TIMEOUT)
        argv_tx = (
            "send",
            "--code",
            CODE,
            "--source",
            src,
            "--link",
            "tbnet",
            "--mode",
            "exact",
            "--timeout",
            TIMEOUT,
            "--chunk-size",
            "1M",
        )
        receiver, sender = Proc(a, *argv_rx), Proc(b, *argv_tx)
        try:
            deadline = time.monotonic() + 60
            while not any(e.get("durable") for e in sender.events if e.get("event") == "progress"):
                assert time.monotonic() < deadline and sender.proc.poll() is None, sender.stderr
                time.sleep(0.05)
            sh("ip", "-n", a, "link", "del", "thunderbolt0")  # the cable is pulled ...
            assert (sender.wait(30), receiver.wait(30)) == (LinkError.exit_code, LinkError.exit_code)
            sh(
                "ip",
                "link",
                "add",
                "thunderbolt0",
                "netns",
                a,
                "type",
                "veth",
                "peer",
                "name",
                "thunderbolt0",
                "netns",
                b,
            )  # ... and plugged in again
            receiver, sender = Proc(a, *argv_rx), Proc(b, *argv_tx)
            assert sender.wait() == 0, sender.stderr
            assert receiver.wait() == 0, receiver.stderr
        finally:
            sender.kill()
            receiver.kill()
        resumed = receiver.event("resume")
        summary = receiver.event("summary")
        assert resumed and summary and summary["verified"] is True
        assert 0 < resumed["bytes"] == summary["resumed"] < 24 * MIB
        assert summary["bytes_sent"] < 24 * MIB - resumed["bytes"] + (1 << 20)  # only the rest crossed
        assert same_bytes(src, dst)


def test_an_explicit_interface_of_any_name(disks: tuple[str, str]) -> None:
    """What the two-VM test does: point the clone at eth0; the beacon works there the same."""
    src, dst = disks
    with cable("eth0") as (a, b):
        receiver = Proc(a, "receive", "--code", CODE, "--target", dst, "--link", "tbnet:eth0", "--timeout", TIMEOUT)
        sender = Proc(b, "send", "--code", CODE, "--source", src, "--link", "tbnet:eth0", "--timeout", TIMEOUT)
        try:
            assert sender.wait() == 0, sender.stderr
            assert receiver.wait() == 0, receiver.stderr
        finally:
            sender.kill()
            receiver.kill()
        assert same_bytes(src, dst)
        assert link_info(a, "eth0")["mtu"] == 1500  # not a thunderbolt interface: its MTU is left alone


def test_no_receiver_is_no_peer(disks: tuple[str, str]) -> None:
    src, _ = disks
    with cable() as (a, b):
        sender = Proc(b, "send", "--code", CODE, "--source", src, "--link", "tbnet", "--timeout", "3")
        assert sender.wait() == NoPeerError.exit_code
        assert sender.error_lines() == [
            "error: nobody is on thunderbolt0 (no carrier: the other side's interface is down)"
        ], sender.stderr
        sh("ip", "-n", a, "link", "set", "thunderbolt0", "up")  # the other host is there, but not receiving
        sender = Proc(b, "send", "--code", CODE, "--source", src, "--link", "tbnet", "--timeout", "4")
        assert sender.wait() == NoPeerError.exit_code
        assert sender.error_lines() == ["error: no receiver answered on thunderbolt0"], sender.stderr
        assert "--to HOST:PORT" in sender.stderr


def test_no_interface_at_all_says_so(tmp_path: Path) -> None:
    source = tmp_path / "small.img"  # a real source, so the link is what fails
    source.write_bytes(bytes(1 << 20))
    with cable() as (a, _):
        sh("ip", "-n", a, "link", "del", "thunderbolt0")
        p = Proc(a, "send", "--code", CODE, "--source", str(source), "--timeout", "3")
        assert p.wait() == MissingToolError.exit_code  # nothing on the thunderbolt bus, no interface
        assert p.error_lines() == ["error: no Thunderbolt/USB4 support here (the thunderbolt module is not loaded)"]
        assert "--to HOST:PORT" in p.stderr, p.stderr


STOP_AFTER = 1.0
STOPPED_OPENER = f"""
import sys, threading, time
from recovery.errors import CancelledError
from recovery.link import tbnet
from recovery.link.spec import LinkSpec
stop = threading.Event()
threading.Timer({STOP_AFTER}, stop.set).start()
started = time.monotonic()
try:
    tbnet.open_link(LinkSpec("tbnet"), sys.argv[1], timeout=60, on_listening=None, stop=stop)
except CancelledError:
    print(f"cancelled {{time.monotonic() - started - {STOP_AFTER}:.2f}}")
"""


@pytest.mark.parametrize("role", ["receive", "send"])
def test_a_stop_ends_the_wait_for_the_peer(role: str) -> None:
    """The wizard quitting while the other machine is on the cable but not running recovery:
    the receiver waits in accept(), the sender queries the beacon; both end at once."""
    with cable() as (a, b):
        for ns in (b, a):  # the other host is there, idle; ours is ready, so the stop lands in the wait
            sh("ip", "-n", ns, "link", "set", "thunderbolt0", "up")
        deadline = time.monotonic() + 20
        while sh("ip", "-n", a, "-6", "addr", "show", "dev", "thunderbolt0", "tentative").stdout.strip():
            assert time.monotonic() < deadline, "duplicate address detection did not finish"
            time.sleep(0.1)
        p = sh("ip", "netns", "exec", a, sys.executable, "-c", STOPPED_OPENER, role, check=False)
        assert p.returncode == 0 and p.stdout.startswith("cancelled "), p.stdout + p.stderr
        assert float(p.stdout.split()[1]) < 3, f"the opener kept waiting after the stop: {p.stdout}"


@pytest.fixture(autouse=True)
def _clean_namespaces() -> Iterator[None]:
    yield
    leftovers = [n for n in sh("ip", "netns", "list").stdout.split() if n.startswith(f"u4r-{os.getpid()}-")]
    assert leftovers == []


@pytest.mark.smoke
def test_a_tcp_clone_between_two_hosts_is_encrypted_by_default(disks: tuple[str, str]) -> None:
    """Plain TCP across a network (not loopback): the data is sealed unless a user said otherwise."""
    src, dst = disks
    with cable("eth0") as (a, b):
        for ns, address in ((a, "192.0.2.1/24"), (b, "192.0.2.2/24")):
            sh("ip", "-n", ns, "addr", "add", address, "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        receiver = Proc(
            a, "receive", "--code", CODE, "--target", dst, "--listen", "192.0.2.1:7554", "--timeout", TIMEOUT
        )
        sender = None
        try:
            receiver.wait_event("listening")
            sender = Proc(
                b,
                "send",
                "--code",
                CODE,
                "--source",
                src,
                "--to",
                "192.0.2.1:7554",
                "--mode",
                "exact",
                "--timeout",
                TIMEOUT,
            )
            assert sender.wait() == 0, sender.stderr
            assert receiver.wait() == 0, receiver.stderr
        finally:
            receiver.kill()
            if sender:
                sender.kill()
        for side in (sender, receiver):
            assert side.event("plan")["encrypted"] is True  # type: ignore[index]
            assert side.event("summary")["verified"] is True  # type: ignore[index]
        assert same_bytes(src, dst)


def relay_in(ns: str, upstream_host: str, upstream_port: int) -> Relay:
    """A forwarder on loopback in namespace ``ns`` to ``upstream`` (a thread of it lives there)."""
    made: list[Relay] = []

    def make() -> None:
        enter(ns)
        made.append(Relay(upstream_port, host=upstream_host))

    t = threading.Thread(target=make)
    t.start()
    t.join(10)
    return made[0]


@pytest.mark.parametrize(
    "sender_says, receiver_says, sealed",
    [
        ((), (), True),  # the sender sees loopback, the receiver a network: sealed, as the receiver wants
        (("--no-encrypt",), (), None),  # the sender's user said no: the receiver refuses
        (("--no-encrypt",), ("--no-encrypt",), False),  # both users said no
    ],
    ids=["sealed", "refused", "both-said-no"],
)
def test_through_a_local_forwarder_each_side_enforces_its_own_view(
    disks: tuple[str, str], sender_says: tuple[str, ...], receiver_says: tuple[str, ...], sealed: bool | None
) -> None:
    src, dst = disks
    with cable("eth0") as (a, b):
        for ns, address in ((a, "192.0.2.1/24"), (b, "192.0.2.2/24")):
            sh("ip", "-n", ns, "addr", "add", address, "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        receiver = Proc(
            a,
            "receive",
            "--code",
            CODE,
            "--target",
            dst,
            "--listen",
            "192.0.2.1:7554",
            "--timeout",
            TIMEOUT,
            *receiver_says,
        )
        sender = None
        try:
            receiver.wait_event("listening")
            relay = relay_in(b, "192.0.2.1", 7554)
            sender = Proc(
                b,
                "send",
                "--code",
                CODE,
                "--source",
                src,
                "--to",
                f"127.0.0.1:{relay.port}",
                "--timeout",
                TIMEOUT,
                *sender_says,
            )
            codes = sender.wait(), receiver.wait()
        finally:
            receiver.kill()
            if sender:
                sender.kill()
        assert "authenticated, not encrypted" in sender.event("peer")["security"]  # type: ignore[index]
        assert "data encrypted" in receiver.event("peer")["security"]  # type: ignore[index]
        if sealed is None:
            assert codes == (RefusedError.exit_code, RefusedError.exit_code), (sender.stderr, receiver.stderr)
            assert "unencrypted" in sender.error_lines()[0] and "crosses a network" in sender.error_lines()[0]
            return
        assert codes == (0, 0), (sender.stderr, receiver.stderr)
        for side in (sender, receiver):
            assert side.event("plan")["encrypted"] is sealed  # type: ignore[index]
        assert same_bytes(src, dst)
