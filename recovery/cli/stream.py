"""`recovery stream up|down|list`: USB4STREAM devices for plain tools (dd, tar, GStreamer).

``up NAME`` makes stream NAME to the peer on the cable, gives it a HopID by
the same rule as the clone (the same explicit HopID both ways, from the top
of the range, once the stream is attached) and prints the
``/dev/tbstreamN`` path; run it on both machines. ``--hopid H`` uses H, for
a peer that does not run recovery: the rule for setting up that side by
hand is printed. ``down NAME`` removes only what ``up`` made (recorded in
``/run/usb4-recovery/streams.json``), HopIDs zeroed first.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from recovery.cli.common import add_json
from recovery.errors import LinkError, NoPeerError, UsageError
from recovery.link.deadline import Deadline
from recovery.link.tbstream.agree import DATA_TUNING, StreamSession, release_quietly, remove_empty_groups
from recovery.link.tbstream.configfs import MIN_HOPID, StreamInfo, check_name
from recovery.link.tbstream.hopids import FLOOR, TBNET_HOPID, claim, ladder, manual_rule
from recovery.link.tbstream.ledger import Entry
from recovery.link.tbstream.link import Host, attached, check_ready, pick_peer

NODE_TIMEOUT = 5.0  # seconds for /dev/tbstreamN to appear after mkdir (devtmpfs makes it at once)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "stream",
        help="make or remove USB4STREAM devices for other tools",
        description="Manage USB4STREAM streams to the peer on the cable. "
        "`up NAME` on both machines prints a /dev/tbstreamN path that dd, tar or "
        "GStreamer can use directly; `down NAME` removes what `up` made.",
    )
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    up_p = verbs.add_parser("up", help="make stream NAME and print its device")
    up_p.add_argument("name", metavar="NAME", help="stream name, at most 8 characters; the same on both machines")
    up_p.add_argument("--peer", metavar="XDOMAIN", help="the peer's device (e.g. 0-1) if several are connected")
    up_p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the peer to attach (default 30)",
    )
    up_p.add_argument(
        "--hopid",
        type=int,
        metavar="H",
        help="use HopID H both ways (for a peer that does not run recovery; the commands for that side are printed)",
    )
    down_p = verbs.add_parser("down", help="remove stream NAME made by `up`")
    down_p.add_argument("name", metavar="NAME")
    down_p.add_argument("--peer", metavar="XDOMAIN", help="only the stream to this peer")
    list_p = verbs.add_parser("list", help="show the streams in ConfigFS")
    for q in (up_p, down_p, list_p):
        add_json(q)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    host = Host()
    if args.verb == "up":
        info = up(host, args.name, args.peer, args.timeout, args.hopid)
        rule = manual_rule(args.name, info.in_hopid) if args.hopid is not None else None
        if not args.json:
            sys.stderr.write(
                f"{info.group}/{info.name}: HopID {info.in_hopid} both ways"
                + (
                    " (the other machine's `recovery stream list` must show the same)\n"
                    if rule is None
                    else "\n" + rule + "\n"
                )
            )
        _emit(args, {"event": "stream", **_info_json(info), "rule": rule}, str(info.device))
    elif args.verb == "down":
        for path in down(host, args.name, args.peer):
            _emit(args, {"event": "stream_removed", "path": path}, f"removed {path}")
    else:
        rows = list_streams(host)
        if args.json:
            sys.stdout.write(json.dumps({"streams": [r.to_json() for r in rows]}, indent=2) + "\n")
        elif not rows:
            sys.stdout.write("No streams.\n")
        else:
            sys.stdout.write("".join(r.line() + "\n" for r in rows))
    return 0


def up(host: Host, name: str, peer_name: str | None, timeout: float, hopid: int | None = None) -> StreamInfo:
    """Make stream ``name`` with the rule's HopID (or ``hopid``) both ways; its info."""
    check_name(name)
    if hopid is not None and hopid < MIN_HOPID:
        raise UsageError(f"--hopid {hopid}: HopIDs start at {MIN_HOPID}")
    if hopid == TBNET_HOPID:
        sys.stderr.write(
            f"warning: HopID {TBNET_HOPID} is the one thunderbolt-net needs; "
            "IP over this cable will fail while the stream holds it\n"
        )
    check_ready(host)
    peer, service = pick_peer(host.sysfs, peer_name)
    existing = host.ledger.find(host.tree.stream_path(service.name, name))
    if existing is not None and existing.owner == "up" and Path(existing.path).is_dir():
        info = host.tree.info(service.name, name)
        if info.configured and (hopid is None or info.hopid == hopid):
            return info  # already up: say where it is again
    session = StreamSession(host.tree, host.ledger, service.name, owner="up")
    deadline = Deadline(timeout)
    uevents = host.watch()
    try:
        session.make(name, DATA_TUNING)
        is_attached = lambda: attached(host.sysfs, service.name)  # noqa: E731
        if not uevents.wait(is_attached, deadline):
            raise NoPeerError(f"the stream service {service.name} did not attach in time")
        adopted = host.tree.info(service.name, name)
        if hopid is not None and adopted.hopid != hopid:
            claim(host.tree, service.name, name, [hopid], is_attached)
        elif hopid is None and not adopted.configured:
            current = host.sysfs.peer(peer.name) or peer
            claim(host.tree, service.name, name, ladder(current.max_hopid), is_attached)
        elif hopid is None and (adopted.hopid is None or adopted.hopid < FLOOR):
            raise LinkError(
                f"the peer's stream {name} uses HopIDs in {adopted.out_hopid} out {adopted.in_hopid} "
                "(its kernel allocated them itself), which this side took over",
                hint=f"remove it there and use `recovery stream up {name}` on both machines, "
                "or give both sides the same --hopid",
            )
        info = host.tree.info(service.name, name)  # the kernel took the peer's published values when equal
        if not uevents.wait(info.device.exists, Deadline(NODE_TIMEOUT)):
            raise LinkError(f"{info.device} did not appear", hint="is udev or devtmpfs managing /dev?")
    except BaseException:
        release_quietly(session)
        raise
    finally:
        uevents.close()
    session.keep()
    return info


def down(host: Host, name: str, peer_name: str | None) -> list[str]:
    """Remove the stream(s) ``name`` made by ``up``; the paths removed."""
    check_name(name)
    mine = [e for e in host.ledger.entries() if _is_up_stream(e, host, name, peer_name)]
    if not mine:
        present = [s for s in host.tree.streams() if s.name == name]
        if present:
            raise UsageError(
                f"stream {name} was not made by `recovery stream up`; not removing it",
                hint="`recovery stream list` shows who made each stream",
            )
        raise UsageError(f"there is no stream {name}")
    removed = []
    for e in mine:
        path = Path(e.path)
        with host.ledger.edit() as entries:
            if host.tree.remove_stream(path.parent.name, path.name):  # HopIDs zeroed first
                entries[:] = [x for x in entries if x.path != e.path]
                removed.append(e.path)
            else:
                raise LinkError(f"cannot remove {e.path}: it is busy")
    remove_empty_groups(host.tree, host.ledger)
    return removed


def _is_up_stream(e: Entry, host: Host, name: str, peer_name: str | None) -> bool:
    parts = e.path.rsplit("/", 2)
    if e.kind != "stream" or e.owner != "up" or len(parts) != 3 or parts[2] != name:
        return False
    if parts[0] != str(host.tree.root):
        return False
    return peer_name is None or parts[1].rsplit(".", 1)[0] == peer_name or parts[1] == peer_name


@dataclass(frozen=True)
class Row:
    info: StreamInfo
    made_by: str  # "stream up", "clone (pid N)", or "" (not usb4-recovery)

    def to_json(self) -> dict[str, object]:
        return {**_info_json(self.info), "made_by": self.made_by or None}

    def line(self) -> str:
        i = self.info
        hop = (
            f"HopID {i.hopid}"
            if i.hopid is not None
            else f"in {i.in_hopid} out {i.out_hopid}"
            if i.in_hopid or i.out_hopid
            else "no HopIDs"
        )
        return f"{i.group}/{i.name:<8}  {i.device}  {hop:<16}  {self.made_by or 'not made by usb4-recovery'}"


def list_streams(host: Host) -> list[Row]:
    if not host.tree.available():
        check_ready(host)
    owners = {e.path: e for e in host.ledger.entries()}
    rows = []
    for info in host.tree.streams():
        e = owners.get(str(info.path))
        made_by = "" if e is None else "stream up" if e.owner == "up" else f"clone (pid {e.pid})"
        rows.append(Row(info, made_by))
    return rows


def _info_json(info: StreamInfo) -> dict[str, object]:
    return {
        "name": info.name,
        "group": info.group,
        "index": info.index,
        "device": str(info.device),
        "in_hopid": info.in_hopid,
        "out_hopid": info.out_hopid,
        "ring_size": info.ring_size,
        "throttling": info.throttling,
        "busy_poll": info.busy_poll,
    }


def _emit(args: argparse.Namespace, doc: dict[str, object], text: str) -> None:
    sys.stdout.write((json.dumps(doc) if args.json else text) + "\n")
    sys.stdout.flush()
