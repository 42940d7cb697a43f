"""`recovery peers`: the hosts on the cable, what they offer, and (``--watch``) plugs and unplugs."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from recovery import events
from recovery.cli.common import add_json
from recovery.engine.peer.cable import describe_event
from recovery.link import discovery as d
from recovery.link.sysfs import CORE_MODULE, NET_MODULE, STREAM_MODULE, Sysfs


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "peers",
        help="list the peers on the USB4/Thunderbolt cable",
        description="List the hosts connected by a USB4/Thunderbolt cable: name, host UUID, "
        "the services they offer, link speed and lanes, and their network interface.",
    )
    p.add_argument("--watch", action="store_true", help="keep running and report peers as they come and go")
    add_json(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    sysfs = Sysfs()
    out = sys.stdout
    monitor = d.CableMonitor() if args.watch else None  # listen first, so no event falls between
    peers = d.snapshot(sysfs)
    for peer in peers:
        _show(out, peer, args.json)
    if not args.json:
        _explain_empty(out, sysfs, peers, watching=monitor is not None)
    if monitor is None:
        return 0
    try:
        while True:
            event = monitor.poll(None)
            if event is not None:
                _show(out, event, args.json)
    except KeyboardInterrupt:
        return 0


def _show(out: TextIO, event: d.CableEvent, json_mode: bool) -> None:
    out.write((events.to_json(event) if json_mode else describe_event(event, details=True)) + "\n")
    out.flush()


def _explain_empty(out: TextIO, sysfs: Sysfs, peers: list[d.PeerAppeared], *, watching: bool) -> None:
    loose = [i.name for i in sysfs.interfaces() if i.peer is None]
    if loose:
        out.write(
            f"interfaces named like thunderbolt with no peer device behind them: {', '.join(loose)} "
            "(usable with --link tbnet)\n"
        )
    if peers:
        return
    if not sysfs.thunderbolt_present():
        out.write(f"No Thunderbolt/USB4 support on this machine (module {CORE_MODULE} not loaded).\n")
    else:
        out.write("No peers on the cable.\n")
    missing = [m for m in (STREAM_MODULE, NET_MODULE) if not sysfs.module_loaded(m)]
    if missing:
        out.write(f"Not loaded here: {', '.join(missing)}.\n")
    if watching:
        out.write("Watching for peers (Ctrl-C to stop)...\n")
    out.flush()
