"""``--link auto`` over the cable: USB4STREAM, thunderbolt-net, or both measured and the faster kept.

Both hosts see the same links (:func:`recovery.link.discovery.available_links`).
With only one, it is used. With both, USB4STREAM opens first; its handshake
says whether each side also brought thunderbolt-net up, and only if both did
is thunderbolt-net opened too. Then, over the USB4STREAM control stream,
both sides say which links they have (HAVE), the sending side streams blocks
over each for :data:`MEASURE_SECONDS` (START), the other times them
(RESULT), and the sender keeps the faster (CHOICE). The other link is closed
(its streams or sockets released). The kept connection says why it was
chosen (:attr:`Connection.choice`, :attr:`Connection.rates`), which the
``peer`` event and the wizard show. ``--link`` skips all of this.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from recovery.errors import LinkError, RecoveryError
from recovery.link import measure as ms
from recovery.link.base import Channel, Connection
from recovery.link.deadline import Deadline
from recovery.link.discovery import available_links, choose_link
from recovery.link.spec import LinkSpec

MEASURE_SECONDS = 1.0  # per link
TBNET_OPEN = 15.0  # seconds thunderbolt-net may take to come up once USB4STREAM is open
RECORD_WAIT = TBNET_OPEN + 5  # seconds to wait for the peer's next measurement record
LinkOpener = Callable[..., Connection]  # (spec, role, *, timeout, on_listening, stop) -> Connection
NAMES = {"tbstream": "USB4STREAM", "tbnet": "thunderbolt-net"}


def open_auto(
    role: str,
    *,
    timeout: float | None,
    on_listening: Callable[[str, int, str], None] | None,
    stop: threading.Event | None,
    host: object = None,
    tbnet_opener: LinkOpener | None = None,
    prepare_tbnet: Callable[[], bool] | None = None,
) -> Connection:
    """The cable link for ``--link auto``; ``role`` "send" measures and decides."""
    from recovery.link import tbnet
    from recovery.link.tbstream.link import Host, open_streams

    stream_host = host if isinstance(host, Host) else Host()
    kinds = available_links(stream_host.sysfs)
    if not kinds:
        choose_link(stream_host.sysfs)  # raises, saying what is missing
    open_tbnet = tbnet_opener or tbnet.open_link
    deadline = Deadline(timeout, stop)
    if "tbstream" not in kinds:
        wait = TBNET_OPEN if timeout is None and role == "send" else timeout  # a sender always has a deadline
        conn = open_tbnet(LinkSpec("tbnet"), role, timeout=wait, on_listening=on_listening, stop=stop)
        conn.choice = "thunderbolt-net: the only link both machines offer (no USB4STREAM on one of them)"
        return conn
    ready = "tbnet" in kinds and (prepare_tbnet or (lambda: _bring_up(stream_host.sysfs)))()
    conn, agreement = open_streams(stream_host, None, deadline, on_listening=on_listening, measure_tbnet=ready)
    if not (ready and agreement.peer_measures_tbnet):
        why = "the only link both machines offer" if "tbnet" not in kinds else "thunderbolt-net is not up on both"
        conn.choice = f"USB4STREAM: {why}"
        return conn
    try:
        return _measure_both(conn, role, deadline, open_tbnet)
    except BaseException:
        conn.abort()
        conn.close()
        raise


def _bring_up(sysfs: object) -> bool:
    """Bring thunderbolt-net's interface up, so it can be measured; False if that fails."""
    from recovery.link import tbnet

    try:
        tbnet.bring_up(tbnet.choose_interface(sysfs, None))  # type: ignore[arg-type]
    except RecoveryError:
        return False
    return True


def _measure_both(coord: Connection, role: str, deadline: Deadline, open_tbnet: LinkOpener) -> Connection:

    started = time.monotonic()
    links: dict[str, Connection] = {"tbstream": coord}
    note = ""
    try:
        links["tbnet"] = open_tbnet(
            LinkSpec("tbnet"),
            role,
            timeout=min(TBNET_OPEN, deadline.left(TBNET_OPEN)),
            on_listening=None,
            stop=deadline.stop,
        )
    except RecoveryError as e:
        note = f" (thunderbolt-net did not come up: {e.message})"
    _send(coord.control, ms.Record(ms.HAVE, None, ms.mask(tuple(links))))
    both = ms.unmask(_recv(coord.control, ms.HAVE).value) & set(links)
    for kind in set(links) - both:
        links.pop(kind).close()
    if len(links) == 1:
        coord.choice = f"USB4STREAM: the only link up on both machines{note}"
        return coord
    rates: dict[str, float]
    if role == "send":
        rates = {kind: _lead(coord.control, kind, links[kind].data) for kind in ms.LINKS if kind in both}
        chosen = ms.pick(rates)
        _send(coord.control, ms.Record(ms.CHOICE, chosen))
    else:
        rates, chosen = _follow(coord.control, links)
    for kind, conn in links.items():
        if kind != chosen:
            conn.close()
    kept = links[chosen]
    kept.rates = rates
    kept.choice = ms.describe(rates, chosen, time.monotonic() - started)
    return kept


def _lead(control: Channel, kind: str, data: Channel) -> float:
    """Stream blocks over ``data`` for the measuring time; the rate the peer timed (bytes/s)."""
    _send(control, ms.Record(ms.START, kind, int(MEASURE_SECONDS * 1000)))
    block = bytearray(ms.BLOCK)
    view = memoryview(block)
    end = time.monotonic() + MEASURE_SECONDS
    seq = 0
    while True:
        last = time.monotonic() >= end
        view[: ms.BLOCK_HEADER.size] = ms.block_header(seq, last)
        data.send(view)
        seq += 1
        if last:
            break
    result = _recv(control, ms.RESULT)
    if result.link != kind:
        raise LinkError(f"the peer timed {result.link} when {kind} was measured")
    return float(result.value)


def _follow(control: Channel, links: dict[str, Connection]) -> tuple[dict[str, float], str]:
    """Time what the peer streams on each link it starts; its choice, and the rates."""
    rates: dict[str, float] = {}
    while True:
        record = _recv(control, None)
        if record.type == ms.CHOICE and record.link in links:
            return rates, record.link
        if record.type != ms.START or record.link not in links:
            raise LinkError("the peer broke the link measurement")
        rate = int(_time_blocks(links[record.link].data))
        rates[record.link] = float(rate)  # as the peer gets it: both sides hold the same numbers
        _send(control, ms.Record(ms.RESULT, record.link, rate))


def _time_blocks(data: Channel) -> float:
    block = memoryview(bytearray(ms.BLOCK))
    first = None
    total = 0
    expect = 0
    while True:
        data.recv_exact(block, "a measurement block")
        now = time.monotonic()
        seq, last = ms.read_block_header(block)
        if seq != expect:
            raise LinkError(f"measurement block {seq} arrived when {expect} was due")
        expect += 1
        if first is None:
            first = now  # the clock starts at the first whole block: set-up latency does not count
        else:
            total += ms.BLOCK
        if last:
            return total / (now - first) if now > first else 0.0


def _send(control: Channel, record: ms.Record) -> None:
    control.send(ms.encode(record))


def _recv(control: Channel, want: int | None) -> ms.Record:
    buf = memoryview(bytearray(ms.RECORD.size))
    timer = threading.Timer(RECORD_WAIT, control.abort)  # a silent peer must not hang the session start
    timer.start()
    try:
        control.recv_exact(buf, "a measurement record")
    finally:
        timer.cancel()
    record = ms.decode(bytes(buf))
    if want is not None and record.type != want:
        raise LinkError(f"the peer sent measurement record {record.type} when {want} was due")
    return record
