"""A clone's health: the sleep inhibitor and the kernel-log counters, around real clones.

The clones run over the emulated USB4STREAM kernel (tests/links/fakekernel),
whose kernel log is what :class:`~recovery.engine.clone.health.KernelLog` reads in
place of /dev/kmsg. This machine has no logind (systemd is not PID 1), so
the real ``systemd-inhibit`` fails here and the clone goes on with a warning;
a stand-in ``systemd-inhibit`` on PATH (it runs its command, as the real one
does once logind grants the lock) shows the inhibitor is held for the
clone's length and released after. Whether logind then blocks a suspend is
only checked on real systems.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recovery import events
from recovery.engine.api import ReceiveOptions, SendOptions
from recovery.engine.clone import health
from recovery.engine.clone.receive import receive_disk
from recovery.engine.clone.send import send_disk
from tests.helpers import CODE
from tests.links.conftest import LARGE, SMALL
from tests.links.fakekernel import Fabric, FakeHost
from tests.links.test_tbstream_emulated import connect_pair, in_thread

MIB = 1 << 20


class Sink(list[events.Event]):
    def __call__(self, event: events.Event) -> None:
        self.append(event)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self if isinstance(e, kind)]


@pytest.fixture
def fabric(tmp_path: Path) -> Iterator[Fabric]:
    f = Fabric(tmp_path / "cable", a_uuid=SMALL, b_uuid=LARGE)
    yield f
    f.close()


@pytest.fixture
def kernel_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[int, FakeHost]]:
    """Each clone's health reads the emulated kernel log of the host its sink belongs to."""
    hosts: dict[int, FakeHost] = {}

    def make(sink: events.EventSink) -> health.Health:
        host = hosts[id(sink)]
        return health.Health(sink, log=health.KernelLog(opener=host.kmsg_reader))

    monkeypatch.setattr(health, "HEALTH", make)
    yield hosts


def clone(
    fabric: Fabric, tmp_path: Path, hosts: dict[int, FakeHost], *, during: Any = None, size: int = 6 * MIB
) -> tuple[Sink, Sink, Any, Any]:
    """beta sends a random image to alpha over the emulated streams; ``during()`` once the plan is made."""
    source, target = tmp_path / "source.img", tmp_path / "target.img"
    source.write_bytes(os.urandom(size))
    rx, tx = Sink(), Sink()
    hosts[id(rx)], hosts[id(tx)] = fabric.a, fabric.b
    fired = threading.Event()

    def sender_sink(event: events.Event) -> None:
        tx(event)
        if during is not None and isinstance(event, events.PlanMade | events.Progress) and not fired.is_set():
            fired.set()
            during()

    hosts[id(sender_sink)] = fabric.b
    a, b = connect_pair(fabric)
    with a, b:
        recv = in_thread(lambda: receive_disk(a, ReceiveOptions(target=str(target), timeout=10, code=CODE), rx))
        try:
            sent: Any = send_disk(
                b, SendOptions(source=str(source), mode="exact", timeout=10, chunk_size=MIB, code=CODE), sender_sink
            )
        except Exception as e:  # noqa: BLE001 - returned to the test
            sent = e
        try:
            got: Any = recv()
        except Exception as e:  # noqa: BLE001
            got = e
    return rx, tx, sent, got


def test_kernel_messages_during_a_clone_reach_the_log_and_the_summary(
    fabric: Fabric, tmp_path: Path, kernel_logs: dict[int, FakeHost]
) -> None:
    """A stream left over from an older run holds HopID 8 on alpha; thunderbolt-net comes up during the
    clone and fails to get its receive HopID. alpha's summary says so; beta's has nothing to say."""
    fabric.plug()
    stale = fabric.a.host().tree
    stale.make_group(fabric.a.stream_service)
    stale.make_stream(fabric.a.stream_service, "old")
    for attr in ("in_hopid", "out_hopid"):
        stale.write(fabric.a.stream_service, "old", attr, -1)  # the old rule: "any", it took 8

    def net_up() -> None:
        fabric.a.net_up()
        fabric.b.net_up()

    rx, tx, sent, got = clone(fabric, tmp_path, kernel_logs, during=net_up)
    assert sent.verified and got.verified
    assert got.kernel_log == {"rx_hopid_failures": 1} and sent.kernel_log is None
    [note] = rx.of(health.KernelLogNote)
    assert note.counters["rx_hopid_failures"] == 1 and "failed to allocate Rx HopID" in note.message
    assert rx.of(events.Summary)[0].kernel_log == {"rx_hopid_failures": 1}
    assert not tx.of(health.KernelLogNote)
    stale.remove_stream(fabric.a.stream_service, "old")


def test_a_corrupt_frame_is_caught_by_the_digest_counted_and_sent_again(
    fabric: Fabric, tmp_path: Path, kernel_logs: dict[int, FakeHost]
) -> None:
    """The driver hands a CRC-flagged frame to read() as if good: the chunk's BLAKE3 (or its AES-GCM
    tag) catches it, the receiver asks for it again, the clone verifies, and both summaries count the
    resend next to the kernel's 'RX CRC error'."""
    fabric.plug()

    def corrupt() -> None:
        fabric.corrupt_next = 1

    rx, tx, sent, got = clone(fabric, tmp_path, kernel_logs, during=corrupt, size=24 * MIB)
    assert not isinstance(got, Exception) and not isinstance(sent, Exception), (got, sent)
    assert got.verified and sent.verified
    assert got.resends == sent.resends == 1
    assert got.kernel_log == {"rx_crc_errors": 1}
    [asked] = rx.of(events.Resent)
    assert asked.epoch == 1 and ("BLAKE3" in asked.reason or "authentication" in asked.reason)
    assert [e.seq for e in tx.of(events.Resent)] == [asked.seq]
    assert (tmp_path / "target.img").read_bytes() == (tmp_path / "source.img").read_bytes()
    [note] = rx.of(health.KernelLogNote)
    assert note.counters == {"rx_crc_errors": 1, "rx_hopid_failures": 0, "ida_free_warnings": 0}
    assert fabric.a.log == ["tbstream: RX CRC error"]


def test_without_logind_the_clone_goes_on_with_a_warning(
    fabric: Fabric, tmp_path: Path, kernel_logs: dict[int, FakeHost], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "SYSTEM_BUS", str(tmp_path / "no-bus"))  # as here, and on the appliance today
    fabric.plug()
    rx, tx, sent, got = clone(fabric, tmp_path, kernel_logs, size=2 * MIB)
    assert sent.verified and got.verified
    for side in (rx, tx):
        [warning] = [w for w in side.of(events.Warning) if "sleep inhibitor" in w.message]
        assert warning.message == (
            "no sleep inhibitor held (logind is not running: there is no system D-Bus): "
            "do not let this machine suspend during the clone"
        )


def test_when_systemd_inhibit_fails_its_words_reach_the_warning(
    fabric: Fabric, tmp_path: Path, kernel_logs: dict[int, FakeHost], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real systemd-inhibit, run although no logind answers here: the clone goes on, saying why."""
    if os.path.exists(health.SYSTEM_BUS):
        pytest.skip("a system bus runs here: logind may grant the inhibitor")
    bus = tmp_path / "bus"
    bus.write_text("")
    monkeypatch.setattr(health, "SYSTEM_BUS", str(bus))
    fabric.plug()
    rx, _, sent, got = clone(fabric, tmp_path, kernel_logs, size=2 * MIB)
    assert sent.verified and got.verified
    [warning] = [w for w in rx.of(events.Warning) if "sleep inhibitor" in w.message]
    assert warning.message.startswith("no sleep inhibitor held (") and "Failed" in warning.message


def test_the_inhibitor_is_held_for_the_clone_and_released_after(
    fabric: Fabric, tmp_path: Path, kernel_logs: dict[int, FakeHost], monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "inhibit.txt"
    shim = bin_dir / "systemd-inhibit"
    # Like systemd-inhibit once logind grants the lock: run the command, holding it meanwhile.
    shim.write_text(
        "#!/bin/sh\n"
        f'echo "$$ $*" >> {record}\n'
        "while [ $# -gt 0 ]; do case $1 in --*) shift ;; *) break ;; esac; done\n"
        'exec "$@"\n'
    )
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    bus = tmp_path / "bus"
    bus.write_text("")
    monkeypatch.setattr(health, "SYSTEM_BUS", str(bus))
    fabric.plug()
    alive: list[bool] = []

    def check() -> None:
        deadline = time.monotonic() + 10  # both sides' shims write their line as they start
        while len(record.read_text().splitlines()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        for line in record.read_text().splitlines():
            alive.append(_alive(int(line.split()[0])))

    rx, tx, sent, got = clone(fabric, tmp_path, kernel_logs, during=check)
    assert sent.verified and got.verified
    lines = record.read_text().splitlines()
    assert len(lines) == 2 and all("--what=sleep:idle --who=usb4-recovery" in line for line in lines)
    assert alive == [True, True]
    assert not any(_alive(int(line.split()[0])) for line in lines), "an inhibitor outlived its clone"
    assert not [w for w in rx + tx if isinstance(w, events.Warning) and "inhibitor" in w.message]


def test_the_kernel_log_reader_counts_records_and_skips_the_rest() -> None:
    r, w = os.pipe()
    log = health.KernelLog(opener=lambda: r)
    log.start()
    os.write(
        w,
        b"6,1,10,-;thunderbolt 0-1: new host found\n"
        b"4,2,11,-;tbstream: RX CRC error\n SUBSYSTEM=thunderbolt\n"
        b"4,3,12,-;ida_free called for id=9 which is not allocated.\n"
        b"4,4,13,-;tbstream: RX CRC error\n",
    )
    os.close(w)
    assert log._thread is not None
    log._thread.join(5)  # the pipe's end stops the reader
    assert log.stop() == {"rx_crc_errors": 2, "ida_free_warnings": 1}
    assert [n.message for n in log.take_notes()] == [
        "tbstream: RX CRC error",
        "ida_free called for id=9 which is not allocated.",
        "tbstream: RX CRC error",
    ]


def test_without_dev_kmsg_dmesg_is_read_before_and_after() -> None:
    log = health.KernelLog(path="/nonexistent/kmsg")
    log.start()
    assert log.problem is None or "cannot read the kernel log" in log.problem
    assert log.stop() == {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False
