"""A peer that sends garbage, damaged or oversized frames, or disappears:
the run ends with one clear line and the documented exit code, the damaged
chunk is never written, nothing is reported as a success."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest

from recovery.errors import IntegrityError, LinkError, ProtocolError, RefusedError
from recovery.link import tcp
from recovery.protocol import messages as m
from recovery.protocol.channels import CONTROL, DATA
from recovery.protocol.linkhello import encode_link_hello
from recovery.protocol.state import Paired
from tests.e2e.fake_peer import CHUNK, FakeSender
from tests.helpers import CODE, MIB, Recovery, loop_device, receiver


def assert_one_clean_line(r: Recovery) -> str:
    assert "Traceback" not in r.stderr
    errors = [e for e in r.events if e.get("event") == "error"]
    assert len(errors) == 1, r.events
    assert r.event("summary") is None
    return str(errors[0]["message"])


@pytest.fixture
def patterned_target(tmp_path: Path) -> Path:
    """A 16 MiB target file full of 0xAA: anything written to it shows."""
    path = tmp_path / "target.img"
    path.write_bytes(b"\xaa" * (16 * MIB))
    return path


@pytest.mark.root  # the target is a loop device
def test_corrupted_chunk_is_not_written(patterned_target: Path) -> None:
    with loop_device(patterned_target, partitions=False) as dev:
        rx, port = receiver(dev, "--yes")
        peer = FakeSender(port)
        peer.hello()
        assert isinstance(peer.pair(), Paired)
        assert isinstance(peer.plan(16 * MIB), m.Accept)
        good = os.urandom(CHUNK)
        peer.frame(0, 0, good)
        bad = os.urandom(CHUNK)
        peer.frame(1, 8 * MIB, bad, digest=bytes(32))  # wrong BLAKE3
        assert rx.wait() == IntegrityError.exit_code
        message = assert_one_clean_line(rx)
        assert "BLAKE3" in message and "not written" in message
        peer.close()
        with open(dev, "rb") as f:
            f.seek(8 * MIB)
            assert f.read(CHUNK) == b"\xaa" * CHUNK


def test_garbage_on_the_control_channel_is_turned_away_and_the_wait_goes_on(tmp_path: Path) -> None:
    rx, port = receiver(str(tmp_path / "t.img"))
    token = os.urandom(16)
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    socks[0].sendall(encode_link_hello(CONTROL, token))
    socks[1].sendall(encode_link_hello(DATA, token))
    socks[0].sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 10)
    failed = rx.wait_event("pairing_attempt", ok=False)
    assert "not usb4-recovery" in failed["message"]
    assert rx.proc.poll() is None and not (tmp_path / "t.img").exists()  # still waiting, nothing made
    for s in socks:
        s.close()
    rx.kill()


def test_an_older_peer_is_told_to_upgrade(tmp_path: Path) -> None:
    rx, port = receiver(str(tmp_path / "t.img"))
    conn = tcp.connect(tcp.Endpoint("127.0.0.1", port))
    conn.control.send(m.encode_preamble((1, 0)))
    failed = rx.wait_event("pairing_attempt", ok=False)
    ours = "{}.{}".format(*m.PROTOCOL_VERSION)
    assert "1.0" in failed["message"] and ours in failed["message"] and "older" in failed["message"]
    decoder = m.ControlDecoder()
    told: list[m.Message] = []
    while not any(isinstance(t, m.Error) for t in told):
        data = conn.control.recv_some()
        assert data, f"closed without saying why; told {told}"
        decoder.receive_data(data)
        while (msg := decoder.next_message()) is not None:
            told.append(msg)
    assert decoder.peer_version == m.PROTOCOL_VERSION  # it says which version it speaks, and why it stops:
    error = next(t for t in told if isinstance(t, m.Error))
    assert "older" in error.message and "1.0" in error.message
    assert rx.proc.poll() is None
    conn.close()
    rx.kill()


def test_oversized_frame_is_refused(patterned_target: Path) -> None:
    rx, port = receiver(str(patterned_target), "--yes")
    peer = FakeSender(port)
    peer.hello()
    assert isinstance(peer.pair(), Paired)
    assert isinstance(peer.plan(16 * MIB), m.Accept)
    peer.frame(0, 0, b"x" * 4096, raw_len=2 * CHUNK)  # claims more than the chunk size
    assert rx.wait() == ProtocolError.exit_code
    assert "outside" in assert_one_clean_line(rx)
    peer.close()


def test_frame_past_the_planned_size_is_refused(patterned_target: Path) -> None:
    rx, port = receiver(str(patterned_target), "--yes")
    peer = FakeSender(port)
    peer.hello()
    assert isinstance(peer.pair(), Paired)
    assert isinstance(peer.plan(4 * MIB), m.Accept)
    peer.frame(0, 4 * MIB - 4096, os.urandom(8192))
    assert rx.wait() == ProtocolError.exit_code
    assert "past the planned size" in assert_one_clean_line(rx)
    peer.close()


def test_sender_disappearing_mid_transfer(patterned_target: Path) -> None:
    rx, port = receiver(str(patterned_target), "--yes")
    peer = FakeSender(port)
    peer.hello()
    assert isinstance(peer.pair(), Paired)
    assert isinstance(peer.plan(16 * MIB), m.Accept)
    peer.frame(0, 0, os.urandom(CHUNK))
    peer.conn.data.send(os.urandom(40))  # half a header, then gone
    peer.close()
    assert rx.wait() == LinkError.exit_code
    assert "link" in assert_one_clean_line(rx).lower()


def _stream_until_progress(source: str, target: str) -> tuple[Recovery, Recovery]:
    rx, port = receiver(target, "--yes")
    tx = Recovery(
        "send",
        "--code",
        CODE,
        "--source",
        source,
        "--to",
        f"127.0.0.1:{port}",
        "--mode",
        "exact",
        "--level",
        "0",
        "--chunk-size",
        "256K",
    )
    tx.wait_event("phase", name="transfer")
    return tx, rx


@pytest.mark.root
def test_sender_killed_mid_transfer(source_loop: str, blank_loop: str) -> None:
    tx, rx = _stream_until_progress(source_loop, blank_loop)
    rx.proc.send_signal(signal.SIGSTOP)  # freeze the receiver so the kill lands mid-stream
    tx.proc.kill()
    tx.wait()
    rx.proc.send_signal(signal.SIGCONT)
    assert rx.wait() == LinkError.exit_code
    assert_one_clean_line(rx)


@pytest.mark.root
def test_receiver_killed_mid_transfer(source_loop: str, blank_loop: str) -> None:
    tx, rx = _stream_until_progress(source_loop, blank_loop)
    tx.proc.send_signal(signal.SIGSTOP)
    rx.proc.kill()
    rx.wait()
    tx.proc.send_signal(signal.SIGCONT)
    assert tx.wait() == LinkError.exit_code
    assert_one_clean_line(tx)


@pytest.mark.root  # the target is a loop device
def test_refused_plan_tells_the_sender(tmp_path: Path) -> None:
    small = tmp_path / "small.img"
    with open(small, "wb") as f:
        f.truncate(4 * MIB)
    with loop_device(small, partitions=False) as dev:
        rx, port = receiver(dev)
        peer = FakeSender(port)
        peer.hello()
        assert isinstance(peer.pair(), Paired)
        reply = peer.plan(16 * MIB)
        assert isinstance(reply, m.Refuse) and "too small" in reply.message
        assert rx.wait() == RefusedError.exit_code
        peer.close()


def test_unreadable_areas_claimed_outside_a_rescue_are_refused(tmp_path: Path) -> None:
    """Only a rescue may end with unreadable areas: a sender that claims some otherwise would keep the
    receiver's journal as a finished rescue and excuse failed filesystem checks."""
    rx, port = receiver(str(tmp_path / "t.img"), "--yes")
    peer = FakeSender(port)
    peer.hello()
    assert isinstance(peer.pair(), Paired)
    assert isinstance(peer.plan(2 * CHUNK), m.Accept)
    for seq in range(2):
        peer.frame(seq, seq * CHUNK, os.urandom(CHUNK))
    peer.finish(2, unreadable=4096, unreadable_ranges=(m.Range(offset=0, length=4096),))
    assert rx.wait() == ProtocolError.exit_code
    assert "not a rescue" in assert_one_clean_line(rx)
    peer.close()
