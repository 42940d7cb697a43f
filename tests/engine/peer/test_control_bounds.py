"""A paired peer cannot make this side's control channel grow: a flood of `progress` while the
session thread is busy elsewhere (reading the target back) keeps the inbox bounded, and the session
gets the newest progress, not a backlog. Two real ControlLinks, paired over loopback TCP (the
`paired` fixture, tests/engine/peer/conftest.py)."""

from __future__ import annotations

import threading
import time

from recovery.engine.peer import control
from recovery.engine.peer.session import PeerLink
from recovery.protocol import messages as m

IDENTITY = m.Identity(path="/dev/x", size=1 << 30, kind="disk", host_id="h", fingerprint="00" * 32)


def test_a_progress_flood_nobody_reads_stays_bounded_and_the_newest_one_is_taken(
    paired: tuple[PeerLink, PeerLink],
) -> None:
    driver, server = paired
    plan = m.Plan(
        session="s",
        source=IDENTITY,
        size=1 << 30,
        mode="exact",
        chunk_size=1 << 20,
        codecs=("raw",),
        map=m.MapSummary(extents=1, bytes=1 << 30, digest="00" * 32),
        frames=1024,
        encrypted=False,
    )
    driver.ctl.send(plan)
    assert isinstance(server.ctl.expect(m.Plan), m.Plan)
    sent = 0

    def flood() -> None:
        nonlocal sent
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            driver.ctl.send(m.Progress(phase="transfer", done=sent, total=1 << 40))
            sent += 1

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    flooder.join(10)
    assert sent > 5 * control.INBOX_LIMIT  # far more than the inbox may hold came in
    assert server.ctl.inbox.qsize() <= control.INBOX_LIMIT
    # What is still on its way arrives (on a loaded machine that takes a while): each poll takes the
    # newest progress there is, never a backlog, so a few polls reach the last one sent.
    polls, newest, deadline = 0, None, time.monotonic() + 20
    while time.monotonic() < deadline and not (isinstance(newest, m.Progress) and newest.done == sent - 1):
        newest = server.ctl.poll(1)
        polls += 1
        time.sleep(0.1)
    assert isinstance(newest, m.Progress) and newest.done == sent - 1, newest  # the newest, not the first
    assert polls <= 200 < sent  # taken in a few polls, not one per message sent
    assert server.ctl.poll(0.2) is None  # and no backlog behind it


def test_a_flood_of_other_messages_nobody_reads_stops_the_sender_not_this_sides_memory(
    paired: tuple[PeerLink, PeerLink],
) -> None:
    driver, server = paired
    disks = tuple(m.DiskInfo(path=f"/dev/sd{i}", size=1 << 40, model="x" * 200) for i in range(200))
    sent = 0

    def flood() -> None:  # an inventory is allowed any time the session is idle, as often as the peer likes
        nonlocal sent
        try:
            while True:
                driver.ctl.send(m.Inventory(disks=disks))
                sent += 1
        except Exception:  # noqa: BLE001 - the connection is torn down at the end
            return

    threading.Thread(target=flood, daemon=True).start()
    deadline = time.monotonic() + 30
    last, since = -1, time.monotonic()
    while time.monotonic() - since < 1.5:  # until the sender is held back (the socket buffers are full)
        assert time.monotonic() < deadline, f"the sender was never held back ({sent} sent)"
        if sent != last:
            last, since = sent, time.monotonic()
        time.sleep(0.1)
    assert server.ctl.inbox.qsize() <= control.INBOX_LIMIT
    for _ in range(control.INBOX_LIMIT):  # the session reads again: the messages come, in order
        assert isinstance(server.ctl.poll(2), m.Inventory)
