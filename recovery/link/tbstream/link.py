"""The USB4STREAM link: two streams over the cable, set up from sysfs and ConfigFS.

One connection is a control stream and a data stream in the group named
after the peer's ``stream`` service. Steps, each resolved afresh:

1. find the peer offering the ``stream`` service, and this host's UUID;
2. if thunderbolt-net is up to this peer, wait for its carrier (it holds its
   HopIDs from then on);
3. create both streams (named per host, :func:`.hopids.stream_names`), set
   their rings, wait until they are attached to the peer (uevents);
4. give each the same explicit HopID both ways, from the top down
   (:func:`.hopids.claim`);
5. open each ``/dev/tbstreamN`` once, non-blocking, retrying under the
   deadline while the peer is not attached;
6. handshake on the control stream (confirms both HopIDs and settles the
   data stream's, :mod:`.wire`), then on the data stream, before any
   session byte.

Whatever fails, and when the connection closes, the directories this run
made are removed (HopIDs zeroed first) and nothing else.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from recovery.errors import LinkError, MissingToolError, NoPeerError, UsageError
from recovery.link.base import Connection
from recovery.link.deadline import Deadline
from recovery.link.discovery import DeviceWatch
from recovery.link.sysfs import NET_MODULE, STREAM_KEY, STREAM_MODULE, Peer, Service, Sysfs
from recovery.link.tbstream import handshake as hs
from recovery.link.tbstream.agree import (
    CONTROL_TUNING,
    DATA_TUNING,
    RING_FALLBACK,
    StreamSession,
    Tuning,
    release_quietly,
    sweep,
)
from recovery.link.tbstream.channel import StreamChannel
from recovery.link.tbstream.configfs import StreamInfo, StreamTree
from recovery.link.tbstream.device import Device
from recovery.link.tbstream.hopids import agree_step, claim, ladder, stream_names
from recovery.link.tbstream.ledger import Ledger
from recovery.link.tbstream.wire import exchange, run_handshake
from recovery.link.watch import watch
from recovery.protocol.channels import CONTROL, DATA

OPEN_RETRY = 0.5  # seconds at least between two opens of one device (never a tight loop)
CARRIER_WAIT = 5.0  # seconds to wait for thunderbolt-net's carrier before taking HopIDs anyway


@dataclass
class Host:
    """Where this host's sysfs, ConfigFS, /dev, ledger and uevents are (tests point them elsewhere)."""

    sysfs: Sysfs = field(default_factory=Sysfs)
    tree: StreamTree = field(default_factory=StreamTree)
    ledger: Ledger = field(default_factory=Ledger)
    watch: Callable[[], DeviceWatch] = DeviceWatch.start


@dataclass(frozen=True)
class Agreement:
    """What the two hosts settled while opening the streams."""

    control_hopid: int
    data_hopid: int
    rounds: int  # HOPS rounds the data HopID took (0: both chose alike at once)
    peer_measures_tbnet: bool  # the peer has thunderbolt-net up to us too


def check_ready(host: Host) -> None:
    """Fail with what is missing if this host cannot make streams."""
    if not host.sysfs.module_loaded(STREAM_MODULE):
        raise MissingToolError(
            f"the {STREAM_MODULE} kernel module is not loaded",
            hint=f"modprobe {STREAM_MODULE}, or use --link tbnet / --to HOST:PORT",
        )
    if not host.tree.available():
        raise MissingToolError(
            f"ConfigFS has no USB4STREAM tree at {host.tree.root}",
            hint="mount ConfigFS (mount -t configfs none /sys/kernel/config)",
        )


def pick_peer(sysfs: Sysfs, where: str | None) -> tuple[Peer, Service]:
    """The peer (and its stream service) to use; ``where`` names its XDomain or service."""
    found = [(p, s) for p in sysfs.peers() if (s := p.service(STREAM_KEY)) is not None]
    if where:
        found = [(p, s) for p, s in found if where in (p.name, s.name)]
    if not found:
        on = f" at {where}" if where else ""
        others = [p.label for p in sysfs.peers()]
        detail = (
            f"peer(s) {', '.join(others)} offer no stream service (older kernel, or thunderbolt_stream "
            "not loaded there)"
            if others
            else "no peer is on the cable"
        )
        raise NoPeerError(
            f"no USB4STREAM peer{on}: {detail}",
            hint="check the cable and that the other machine runs recovery; or --link tbnet",
        )
    if len(found) > 1:
        names = ", ".join(f"{p.label} [{p.name}]" for p, _ in found)
        raise UsageError(
            f"several peers offer USB4STREAM: {names}", hint=f"choose one with --link tbstream:{found[0][0].name}"
        )
    return found[0]


def attached(sysfs: Sysfs, service: str) -> bool:
    """Streams in the group of service ``service`` are attached: it is there and our driver is bound to it."""
    return sysfs.service(service) is not None and sysfs.service_driver(service) == STREAM_MODULE


def settle_tbnet(sysfs: Sysfs, peer: Peer, deadline: Deadline) -> bool:
    """If thunderbolt-net is up to ``peer``, wait (a while) for its carrier; True when it has one.

    thunderbolt-net takes its HopIDs when its interface comes up and when it
    logs in to the peer; streams take theirs only after that. An interface
    that is down holds none and takes them from the bottom later.
    """
    iface = sysfs.interface_to(peer.name) if sysfs.module_loaded(NET_MODULE) else None
    if iface is None or not sysfs.admin_up(iface.name):
        return False
    wait = Deadline(min(CARRIER_WAIT, deadline.left(CARRIER_WAIT)), deadline.stop)
    while not sysfs.carrier(iface.name):
        if wait.expired():
            return False
        wait.pause(0.2)  # a carrier change sends no uevent; a short local wait
    return True


def open_link(
    spec: object,
    role: str,
    *,
    timeout: float | None,
    on_listening: Callable[[str, int, str], None] | None,
    stop: threading.Event | None = None,
    host: Host | None = None,
) -> Connection:
    """The link opener for ``--link tbstream[:PEER]`` (see :mod:`recovery.link.opening`)."""
    conn, _ = open_streams(
        host or Host(), getattr(spec, "interface", None), Deadline(timeout, stop), on_listening=on_listening
    )
    return conn


def open_streams(
    host: Host,
    where: str | None,
    deadline: Deadline,
    *,
    on_listening: Callable[[str, int, str], None] | None = None,
    measure_tbnet: bool = False,
) -> tuple[Connection, Agreement]:
    """Both streams to the peer, agreed and handshaken; ``measure_tbnet`` is announced to the peer."""
    check_ready(host)
    peer, service = pick_peer(host.sysfs, where)
    local = host.sysfs.local_uuid(peer.domain)
    if not local:
        raise LinkError(f"cannot read this host's UUID on domain {peer.domain}")
    names = stream_names(local, peer.unique_id)
    settle_tbnet(host.sysfs, peer, deadline)
    if on_listening is not None:
        on_listening(service.name, 0, "tbstream")
    sweep(host.tree, host.ledger)
    session = StreamSession(host.tree, host.ledger, service.name, owner="link")
    uevents = host.watch()
    devices: list[Device] = []
    try:
        for name, tuning in zip(names, (CONTROL_TUNING, DATA_TUNING), strict=True):
            session.make(name, tuning)
        is_attached = lambda: attached(host.sysfs, service.name)  # noqa: E731
        if not uevents.wait(is_attached, deadline):
            raise NoPeerError(
                f"the stream service {service.name} of {peer.label} did not attach in time",
                hint=f"is {STREAM_MODULE} bound to it? see /sys/bus/thunderbolt/devices/{service.name}",
            )
        current = host.sysfs.peer(peer.name) or peer
        candidates = ladder(current.max_hopid)
        hop_c = claim(host.tree, service.name, names[0], candidates, is_attached)
        hop_d = claim(host.tree, service.name, names[1], [h for h in candidates if h < hop_c], is_attached)
        infos = [host.tree.info(service.name, n) for n in names]
        devices.append(_open(host, session, uevents, infos[0], CONTROL_TUNING, hop_c, is_attached, deadline))
        nonce = os.urandom(16)
        flags = hs.FLAG_TBNET if measure_tbnet else 0
        theirs = run_handshake(devices[0], hs.Record(hs.SYNC, CONTROL, nonce, hop_c, hop_d, flags), deadline, "control")
        hop_d, rounds = _agree_data(
            host, service, names[1], devices[0], nonce, hop_c, hop_d, theirs, candidates, is_attached, deadline
        )
        infos[1] = host.tree.info(service.name, names[1])
        devices.append(_open(host, session, uevents, infos[1], DATA_TUNING, hop_d, is_attached, deadline))
        data_peer = run_handshake(devices[1], hs.Record(hs.SYNC, DATA, nonce, hop_d), deadline, "data")
        if data_peer.nonce != theirs.nonce:
            raise LinkError("the control and data streams reach different peers")
    except BaseException:
        for dev in devices:
            dev.close()
        release_quietly(session)
        raise
    finally:
        uevents.close()
    control, data = StreamChannel(devices[0], "control"), StreamChannel(devices[1], "data")
    control.on_lost.append(lambda _: data.abort())  # one stream detached: so is the other
    data.on_lost.append(lambda _: control.abort())
    desc = f"{peer.label} over {infos[0].device} and {infos[1].device} (HopIDs {hop_c}, {hop_d})"
    conn = Connection(
        control=control,
        data=data,
        kind="tbstream",
        peer=desc,
        on_close=[lambda: release_quietly(session)],
        speed_probe=lambda: peer.speed,
        binding=b"tbstream " + b"".join(sorted((nonce, theirs.nonce))),
        private=True,
    )
    agreement = Agreement(hop_c, hop_d, rounds, bool(theirs.flags & hs.FLAG_TBNET))

    def cause() -> str | None:
        if host.sysfs.peer(peer.name) is None:
            return f"link lost: the peer {peer.label} left the cable (unplugged?)"
        if host.sysfs.service(service.name) is None:
            return f"link lost: the peer {peer.label} withdrew its stream service"
        return None

    return watch(conn, cause), agreement


def _agree_data(
    host: Host,
    service: Service,
    name: str,
    dev: Device,
    nonce: bytes,
    hop_c: int,
    hop_d: int,
    theirs: hs.Record,
    candidates: list[int],
    is_attached: Callable[[], bool],
    deadline: Deadline,
) -> tuple[int, int]:
    """Settle the data stream's HopID with the peer over the open control stream; (HopID, rounds)."""
    peer_d, rounds = theirs.data_hopid, 0
    while (bound := agree_step(hop_d, peer_d)) is not None:
        rounds += 1
        if rounds > len(candidates):
            raise LinkError(
                f"the two machines found no common free HopID for the data stream "
                f"(this side {hop_d}, the peer {peer_d})"
            )
        hop_d = claim(host.tree, service.name, name, [h for h in candidates if h <= bound and h != hop_c], is_attached)
        peer_d = exchange(dev, hs.Record(hs.HOPS, CONTROL, nonce, hop_c, hop_d), theirs.nonce, deadline).data_hopid
    return hop_d, rounds


def _open(
    host: Host,
    session: StreamSession,
    uevents: DeviceWatch,
    info: StreamInfo,
    tuning: Tuning,
    hopid: int,
    is_attached: Callable[[], bool],
    deadline: Deadline,
) -> Device:
    """Open ``info.device`` once; retry (never faster than :data:`OPEN_RETRY`) while the peer is detached.

    ENOMEM (the rings could not be pinned) retries with a smaller ring; after
    a detach the stream's HopID is claimed again, the same one.
    """
    smaller = [r for r in RING_FALLBACK if r < tuning.ring_size]
    while True:
        try:
            return host.tree.ops.open_device(info.device)
        except OSError as e:
            if e.errno == errno.ENOMEM and smaller:
                session.tune(info.name, Tuning(smaller.pop(0), tuning.throttling))
                continue
            if e.errno == errno.ENOENT:  # the node is made by devtmpfs at mkdir; udev may still be at it
                if not uevents.wait(info.device.exists, deadline):
                    raise LinkError(f"{info.device} did not appear", hint="is devtmpfs mounted on /dev?") from None
                continue
            if e.errno != errno.ENXIO:
                raise LinkError(f"cannot open {info.device}: {e.strerror}") from None
        deadline.pause(OPEN_RETRY)  # ENXIO: the peer detached since the HopIDs were set
        if not uevents.wait(is_attached, deadline):
            raise NoPeerError(
                f"cannot open {info.device}: the peer is not attached",
                hint="start `recovery` on the other machine, or use --link tbnet",
            )
        claim(host.tree, info.group, info.name, [hopid], is_attached)
