"""Strangers on the network, as an attacker would try: without the code, with a wrong one,
as a relay in the middle, as a squatter. Real processes, real sockets; nothing is
written or read for a peer that has not proved the code shown on the receiver."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from recovery.errors import IntegrityError, PairingError, ProtocolError, RecoveryError
from recovery.link import tcp
from recovery.protocol import messages as m
from recovery.protocol.limits import RESENDS_PER_FRAME
from recovery.protocol.state import PairingFailed
from tests.e2e.fake_peer import FakeSender
from tests.e2e.relay import Relay
from tests.helpers import CODE, MIB, REPO, Recovery, receiver


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    from recovery.demo import build_sample_disk

    path = tmp_path / "sample.img"
    build_sample_disk(str(path), 64)
    return path


@pytest.fixture
def patterned(tmp_path: Path) -> Path:
    path = tmp_path / "target.img"
    path.write_bytes(b"\xaa" * (64 * MIB))
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def send(sample: Path, port: int, *extra: str, code: str = CODE) -> Recovery:
    return Recovery("send", "--code", code, "--source", str(sample), "--to", f"127.0.0.1:{port}", *extra)


def test_a_wrong_code_writes_nothing_and_the_receiver_keeps_waiting(sample: Path, patterned: Path) -> None:
    before = digest(patterned)
    rx, port = receiver(str(patterned), "--yes")
    for _ in range(2):
        tx = send(sample, port, code="wrong-code-1")
        assert tx.wait() == PairingError.exit_code
        assert "does not match" in tx.error_lines()[0]
        assert tx.event("plan") is None and tx.event("peer") is None
    failed = [e for e in rx.events if e.get("event") == "pairing_attempt" and e["ok"] is False]
    assert failed and failed[-1]["tries_left"] == 1
    assert rx.proc.poll() is None and digest(patterned) == before
    tx = send(sample, port)  # the right code still gets in
    assert tx.wait() == 0, tx.stderr
    assert rx.wait() == 0, rx.stderr
    assert rx.event("summary")["verified"] is True  # type: ignore[index]


def test_a_stranger_that_connects_and_stays_silent_blocks_nobody(sample: Path, tmp_path: Path) -> None:
    """From another address (one behind the sender's own is a flood from its network: see below)."""
    target = tmp_path / "copy.img"
    rx, port = receiver(str(target))
    squatters = []
    for _ in range(5):
        peer = FakeSender(port, source="127.0.0.2")
        peer.hello()  # and then nothing: no code
        squatters.append(peer)
    raw = [socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0)) for _ in range(40)]
    tx = send(sample, port)
    assert tx.wait() == 0, tx.stderr
    assert rx.wait() == 0, rx.stderr
    for s in raw:
        s.close()
    for p in squatters:
        p.close()


def test_strangers_that_start_pairing_and_stall_do_not_hold_up_the_real_sender(sample: Path, tmp_path: Path) -> None:
    """Each attempt is its own: one left hanging halfway through does not keep the code busy."""
    from recovery.protocol import codes
    from recovery.protocol.state import Reply

    target = tmp_path / "copy.img"
    rx, port = receiver(str(target))
    stallers = []
    for _ in range(3):
        peer = FakeSender(port)
        peer.hello()
        peer.send_control(peer.state.drive(codes.secret("1111-2222")))
        assert isinstance(peer.next_event(), Reply)  # the receiver's part came; our proof never goes
        stallers.append(peer)
    tx = send(sample, port)
    assert tx.wait() == 0, tx.stderr
    assert rx.wait() == 0, rx.stderr
    attempts = [e for e in rx.events if e.get("event") == "pairing_attempt"]
    assert attempts and attempts[0]["ok"] is True  # no stalled attempt ended (or counted) before it
    for p in stallers:
        p.close()


class Squatter:
    """A stranger that opens connection after connection from ``origins``, each starting a pairing
    attempt it never finishes (its SPAKE2 message, never its proof), to hold every place."""

    def __init__(self, port: int, origins: list[str], every: float = 0.05, *, silent: bool = False) -> None:
        """``silent``: link hellos only, then nothing (not even a control hello)."""
        self.port, self.origins, self.every, self.silent = port, origins, every, silent
        self.stop = threading.Event()
        self.held: list[FakeSender] = []
        self.turned_away: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from recovery.protocol import codes

        n = 0
        while not self.stop.wait(self.every):
            origin = self.origins[n % len(self.origins)]
            n += 1
            try:
                peer = FakeSender(self.port, source=origin)
                self.held.append(peer)
                if self.silent:
                    continue
                peer.hello()
                peer.send_control(peer.state.drive(codes.secret("0000-0000")))
            except (AssertionError, RecoveryError, OSError) as e:
                self.turned_away.append(str(e))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        for peer in self.held:
            peer.close()


def test_a_stranger_holding_every_place_from_four_origins_cannot_keep_the_real_sender_out(
    sample: Path, tmp_path: Path
) -> None:
    """4 addresses x 4 connections fill the lobby with attempts that never finish, and keep opening
    more: the oldest unproven connection gives way, the stalls count against their origins, and
    the real sender (the newest connection, pairing in a few round trips) gets in."""
    rx, port = receiver(str(tmp_path / "copy.img"))
    squatter = Squatter(port, [f"127.0.0.{i}" for i in range(2, 6)])
    try:
        time.sleep(1.5)  # every place is held by now
        tx = send(sample, port)
        assert tx.wait() == 0, tx.stderr
        assert rx.wait() == 0, rx.stderr
    finally:
        squatter.close()


def test_unfinished_attempts_from_fresh_addresses_and_a_silent_flood_cannot_keep_the_real_sender_out(
    sample: Path, tmp_path: Path
) -> None:
    """As an attacker reviewing the lobby tried: 15 places held by attempts that never finish, each from
    an address of its own (so none is ever made to wait), renewed as they time out, and a steady flood of
    silent connections from 8 more addresses: a newcomer from an origin with no place gets one anyway."""
    rx, port = receiver(str(tmp_path / "copy.img"))
    holders = Squatter(port, [f"127.1.{n // 250}.{n % 250 + 1}" for n in range(2000)], every=0.25)
    flood = Squatter(port, [f"127.0.0.{i}" for i in range(2, 10)], every=0.02, silent=True)
    try:
        time.sleep(4)  # every place is held, the first attempts timing out and renewed
        tx = send(sample, port)
        assert tx.wait() == 0, tx.stderr
        assert rx.wait() == 0, rx.stderr
    finally:
        holders.close()
        flood.close()


def test_a_burst_of_wrong_codes_from_many_origins_never_keeps_the_right_code_out(sample: Path, tmp_path: Path) -> None:
    """21 wrong codes from 7 addresses in a moment used to lock everyone out for a minute."""
    rx, port = receiver(str(tmp_path / "copy.img"))
    for i in range(21):
        peer = FakeSender(port, source=f"127.0.0.{2 + i % 7}")
        peer.hello()
        outcome = peer.pair("0000-0000")
        assert isinstance(outcome, PairingFailed) and outcome.reason in ("wrong_code", "locked")
        peer.close()
    tx = send(sample, port)
    assert tx.wait() == 0, tx.stderr
    assert rx.wait() == 0, rx.stderr


def test_a_flood_from_the_senders_own_network_is_named_as_such(sample: Path, tmp_path: Path) -> None:
    """Behind one NAT with a stranger: the real sender cannot pair while that address must wait, and
    it is told so (not 'wrong code', not a lost link)."""
    rx, port = receiver(str(tmp_path / "copy.img"))
    squatter = Squatter(port, ["127.0.0.1"])
    try:
        time.sleep(1.5)
        tx = send(sample, port)
        assert tx.wait() == PairingError.exit_code, tx.stderr
    finally:
        squatter.close()
    said = tx.error_lines()[0]  # its address must wait, or its neighbour holds every place it may
    assert "no pairing attempts for now" in said and "127.0.0.1" in said, tx.stderr
    rx.kill()


def test_a_stranger_without_the_code_gets_no_disk_and_no_plan_through(tmp_path: Path) -> None:
    target = tmp_path / "copy.img"
    rx, port = receiver(str(target))
    peer = FakeSender(port)
    peer.hello()
    peer.send_control(m.encode_message(m.Request(source="/dev/sda", mode="used", level="auto")))
    failed = rx.wait_event("pairing_attempt", ok=False)
    assert "before the pairing" in failed["message"]
    peer = FakeSender(port)
    peer.hello()
    outcome = peer.pair("1234-5678")
    assert isinstance(outcome, PairingFailed) and outcome.reason == "wrong_code"
    assert rx.proc.poll() is None and not target.exists()
    rx.kill()


def test_a_stranger_claiming_a_lost_pairing_gets_nothing(tmp_path: Path) -> None:
    """A rejoin (no code, the lost pairing's secret instead) is answered only where a pairing was lost,
    once, by the machine that held it: here nothing was lost, so it is turned away without a try."""
    target = tmp_path / "copy.img"
    rx, port = receiver(str(target))
    peer = FakeSender(port)
    peer.hello()
    outcome = peer.pair(rejoin=os.urandom(32))
    assert isinstance(outcome, PairingFailed) and outcome.reason == "stale"
    assert "restarted: type the code it shows now" in outcome.message  # it knows of no lost pairing
    outcome = peer.pair("1234-5678")  # and the code is still asked for
    assert isinstance(outcome, PairingFailed) and outcome.reason == "wrong_code"
    assert rx.proc.poll() is None and not target.exists()
    rx.kill()


def test_a_relay_passing_bytes_unchanged_is_only_a_longer_cable(sample: Path, tmp_path: Path) -> None:
    target = tmp_path / "copy.img"
    rx, port = receiver(str(target))
    relay = Relay(port)
    tx = send(sample, relay.port, "--mode", "exact")
    assert tx.wait() == 0, tx.stderr
    assert rx.wait() == 0, rx.stderr
    assert target.read_bytes() == sample.read_bytes()
    relay.close()


SEALINGS = [("--encrypt", "failed its authentication"), ("--no-encrypt", "failed its BLAKE3 check")]


@pytest.mark.parametrize("sealing, words", SEALINGS, ids=["sealed", "authenticated-only"])
def test_a_relay_that_changes_a_chunk_once_gets_it_sent_again(
    sample: Path, patterned: Path, sealing: str, words: str
) -> None:
    """As the USB4STREAM driver does with a CRC-flagged frame: the changed chunk breaks its seal (or,
    authenticated only, the digest its MAC'd header names), is asked for again under fresh keys, and
    the copy verifies."""
    rx, port = receiver(str(patterned), "--yes")
    relay = Relay(port)
    relay.flip_data_at = 3 * MIB + 100  # inside a chunk's payload
    tx = send(sample, relay.port, "--mode", "exact", "--level", "0", sealing)
    assert tx.wait() == 0, (tx.stderr, tx.events[-5:])  # the sender first: its own words if it failed early
    assert rx.wait() == 0, rx.stderr
    for side in (rx, tx):
        summary = side.event("summary")
        assert summary and summary["verified"] is True and summary["resends"] == 1
    [asked] = [e for e in rx.events if e["event"] == "resend"]
    assert words in asked["reason"] and asked["epoch"] == 1
    assert rx.event("plan")["encrypted"] is (sealing == "--encrypt")  # type: ignore[index]
    assert patterned.read_bytes()[: sample.stat().st_size] == sample.read_bytes()
    relay.close()


@pytest.mark.parametrize("sealing, words", SEALINGS, ids=["sealed", "authenticated-only"])
def test_a_relay_that_changes_a_chunk_every_time_ends_the_clone_after_the_bound(
    sample: Path, patterned: Path, sealing: str, words: str
) -> None:
    rx, port = receiver(str(patterned), "--yes")
    relay = Relay(port)
    relay.flip_frame = 5  # the first data frame from frame 5 on, each time it passes
    tx = send(sample, relay.port, "--mode", "exact", "--level", "0", "--chunk-size", "1M", sealing)
    assert rx.wait() == IntegrityError.exit_code, rx.stderr
    assert tx.wait() == IntegrityError.exit_code, tx.stderr
    assert rx.event("summary") is None and tx.event("summary") is None
    asked = [e for e in rx.events if e["event"] == "resend"]
    assert len(asked) == RESENDS_PER_FRAME and relay.flips == RESENDS_PER_FRAME + 1
    assert words in rx.error_lines()[0] and "4 times" in rx.error_lines()[0]
    damaged = slice(relay.flipped_seq * MIB, (relay.flipped_seq + 1) * MIB)  # type: ignore[operator]
    assert patterned.read_bytes()[damaged] == bytes(MIB) != sample.read_bytes()[damaged]  # emptied, never written
    relay.close()


def test_a_relay_that_changes_a_sealed_control_message_breaks_the_session(sample: Path, tmp_path: Path) -> None:
    target = tmp_path / "copy.img"
    rx, port = receiver(str(target))
    relay = Relay(port)
    relay.flip_control_after = 1500  # past the hellos and the pairing: in the first sealed record
    tx = send(sample, relay.port)
    assert (tx.wait(), rx.wait()) == (ProtocolError.exit_code, ProtocolError.exit_code), (tx.stderr, rx.stderr)
    assert "control message failed its authentication" in rx.error_lines()[0]
    assert rx.event("summary") is None and tx.event("summary") is None
    relay.close()


@pytest.mark.smoke
def test_send_via_runs_the_receiver_and_talks_over_its_pipes(sample: Path, tmp_path: Path) -> None:
    """The ssh form (`--via 'ssh host recovery receive ... --from -'`), with the command run here."""
    target = tmp_path / "piped.img"
    command = f"{sys.executable} -m recovery receive --target {target} --from -"
    tx = Recovery("send", "--source", str(sample), "--via", command, "--mode", "exact", env={"PYTHONPATH": str(REPO)})
    assert tx.wait() == 0, tx.stderr
    summary = tx.event("summary")
    assert summary and summary["verified"] is True
    assert target.read_bytes() == sample.read_bytes()
    assert "stdio link" in tx.event("peer")["security"]  # type: ignore[index]
    assert tx.event("plan")["encrypted"] is True  # type: ignore[index]  # a pipe ssh carries: sealed


def test_the_agent_shows_nothing_to_a_stranger(sample: Path, tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    agent = subprocess.Popen(
        [sys.executable, "-m", "recovery", "agent", "--listen", "127.0.0.1:0", "--disk", str(sample), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        assert agent.stdout is not None
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            line = agent.stdout.readline()
            if '"listening"' in line:
                import json

                port = json.loads(line)["port"]
        assert port is not None
        conn = tcp.connect(tcp.Endpoint("127.0.0.1", port))
        stranger = FakeSender.__new__(FakeSender)
        stranger.conn = conn
        from recovery.protocol.state import ControlConnection

        stranger.state = ControlConnection(binding=conn.binding)
        stranger.keys = None
        hello = stranger.hello(role="wizard")
        assert not hasattr(hello, "disks")  # the hello names no disk
        outcome = stranger.pair("0000-0000")
        assert isinstance(outcome, PairingFailed)
        assert agent.poll() is None
        conn.close()
    finally:
        agent.terminate()
        out, _ = agent.communicate(timeout=10)
    assert '"job"' not in out and '"inventory"' not in out


def test_an_agent_told_to_connect_opens_one_connection_at_a_time(sample: Path) -> None:
    """Whoever answers at the address (a stranger too) holds at most one of its connections."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(3)
    port = listener.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    agent = subprocess.Popen(
        [sys.executable, "-m", "recovery", "agent", "--connect", f"127.0.0.1:{port}", "--disk", str(sample), "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    held: list[socket.socket] = []

    def accept_until_quiet() -> int:
        count = 0
        while True:
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                return count
            held.append(sock)
            count += 1

    try:
        listener.settimeout(30)
        held.append(listener.accept()[0])  # the agent is up: its control stream
        listener.settimeout(3)
        assert accept_until_quiet() == 1  # its data stream, and nothing more while we hold them
        for sock in held:
            sock.close()
        listener.settimeout(30)
        held.append(listener.accept()[0])  # the last one ended: it connects again
        listener.settimeout(3)
        assert accept_until_quiet() == 1
    finally:
        agent.terminate()
        agent.wait(timeout=10)
        for sock in held:
            sock.close()
        listener.close()


def test_a_paired_sender_cannot_make_the_receiver_grow_without_end(tmp_path: Path) -> None:
    """Tiny zstd frames that each decompress to the biggest chunk keep the receiver's memory within
    its buffer budget, even with the workers of a 16-core machine."""
    target = tmp_path / "copy.img"
    rx, port = receiver(str(target), "--workers", "16")
    peer = FakeSender(port)
    peer.hello()
    peer.pair()
    chunk = 16 * MIB
    cells = 48
    assert isinstance(peer.plan(cells * chunk, chunk=chunk), m.Accept)
    zeros = bytes(chunk)
    for seq in range(cells):  # about 600 bytes on the wire each
        peer.frame(seq, seq * chunk, zeros, compress=True)
    peer.finish(cells)
    summary = rx.wait_event("summary", timeout=120)
    assert summary["verified"] is True
    peak = int(next(line for line in open(f"/proc/{rx.proc.pid}/status") if line.startswith("VmHWM")).split()[1])
    assert peak < 200 * 1024, f"the receiver's peak RSS was {peak // 1024} MiB"
    peer.close()
    rx.kill()


def test_a_plan_with_more_frames_than_the_receiver_keeps_track_of_is_refused(tmp_path: Path) -> None:
    from recovery.protocol.limits import MAX_FRAMES

    target = tmp_path / "copy.img"
    rx, port = receiver(str(target))
    peer = FakeSender(port)
    peer.hello()
    peer.pair()
    reply = peer.plan(64 << 30, chunk=4096, frames=MAX_FRAMES + 1)
    assert isinstance(reply, m.Refuse) and "larger --chunk-size" not in reply.message
    assert f"more than {MAX_FRAMES}" in reply.message
    assert rx.wait() == 3 and not target.exists()
    peer.close()


def test_a_paired_sender_flooding_zero_frames_costs_memory_and_journal_that_follow_the_data(
    tmp_path: Path, log_dir: Path
) -> None:
    """Many tiny ZERO frames (a 1 GiB plan at 4 KiB chunks: 262144 frames, 20 MiB of headers) used to
    cost the receiver a few hundred bytes of memory and 65 bytes of journal each."""
    from recovery.engine.clone.framelist import RECORD as LIST_RECORD
    from recovery.protocol.frames import ChunkHeader, Codec, Kind, encode_header, zero_digest

    chunk, size = 4096, 1 << 30
    frames = size // chunk
    rx = Recovery("receive", "--code", CODE, "--target", str(tmp_path / "t.img"), "--listen", "127.0.0.1:0")
    peer = FakeSender(rx.wait_event("listening")["port"])
    peer.hello(caps=("resume",))
    peer.pair()
    identity = m.Identity(path="/dev/fake", size=size, kind="disk", host_id="fake-host", fingerprint="00" * 32)
    plan = m.Plan(
        session="s",
        source=identity,
        size=size,
        mode="exact",
        chunk_size=chunk,
        codecs=("raw",),
        map=m.MapSummary(extents=1, bytes=size, digest="00" * 32),
        frames=frames,
        encrypted=False,
    )
    peer.send_control(peer.state.send(plan))
    peer.keys = peer.state.clone_keys(plan.session)
    assert isinstance(peer.next_event(), m.Accept)
    peak, journal = [0], [0]
    done = threading.Event()

    def watch() -> None:  # the receiver's memory high-water mark and its journal's size, as they grow
        while not done.wait(0.05):
            try:
                status = Path(f"/proc/{rx.proc.pid}/status").read_text()
            except OSError:
                return
            hwm = next(line for line in status.splitlines() if line.startswith("VmHWM"))
            peak[0] = max(peak[0], int(hwm.split()[1]))
            for path in log_dir.glob("resume-*.journal"):
                with contextlib.suppress(OSError):
                    journal[0] = max(journal[0], path.stat().st_size)

    threading.Thread(target=watch, daemon=True).start()
    digest = zero_digest(chunk)
    batch = bytearray()
    for seq in range(frames):
        batch += encode_header(ChunkHeader(seq, seq * chunk, chunk, 0, Kind.ZERO, Codec.RAW, digest), peer.keys.header)
        peer.list_hasher.update(LIST_RECORD.pack(seq * chunk, chunk, digest))
        if len(batch) >= 1 << 20 or seq == frames - 1:
            peer.conn.data.send(bytes(batch))
            batch.clear()
    peer.sent = size
    summary = peer.finish(frames)
    while not isinstance(summary, m.Summary):
        summary = peer.next_event()
    done.set()
    assert summary.verified is True
    peer.close()
    rx.wait()
    assert 0 < journal[0] < 4 * frames, f"journal of {journal[0]} bytes for {frames} ZERO frames"
    assert peak[0] < 120 * 1024, f"receiver peaked at {peak[0] >> 10} MiB for {frames} frames"
