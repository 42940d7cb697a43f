"""`recovery agent`: the passive side of a wizard, without a screen.

It prints a pairing code and offers this machine's disks (or only ``--disk``
paths) to the wizard on the other machine whose user types that code; the
wizard then drives clones in either direction over the link. Between
sessions it waits for the next one with a new code, until stopped (or
``--once``).
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from recovery import events
from recovery.cli.common import INTERRUPTS, add_code, add_json, add_link, add_timeout
from recovery.engine.agent import AgentSession, JobEnded, JobStarted, disk_paths, offered_disks
from recovery.engine.guard import CodeGuard
from recovery.engine.lobby import HOLD_LIMIT, PAIR_LIMIT, Lobby
from recovery.errors import Interrupted, LinkError, RecoveryError, UsageError
from recovery.link import tcp
from recovery.link.base import Connection
from recovery.link.select import LinkSpec, OneAtATime, Source, listen, parse_link
from recovery.protocol import messages as m

RETRY = 2.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agent", help="let a wizard on the other machine drive clones (no screen here)",
                       description="Offer this machine's disks to the wizard (`recovery tui`) on the other "
                       "machine, which then drives clones in either direction. Waits for the next session "
                       "after each one, until stopped.")
    p.add_argument("--listen", metavar="[ADDR]:PORT",
                   help=f"wait for the wizard over TCP (the default: all addresses, port {tcp.DEFAULT_PORT})")
    p.add_argument("--connect", metavar="HOST[:PORT]",
                   help="connect to a wizard that listens, trying again until it answers")
    add_link(p)
    p.add_argument("--disk", action="append", default=[], metavar="PATH",
                   help="offer only this disk or image file (repeat for more; default: every disk)")
    p.add_argument("--name", metavar="NAME", help="the name the wizard shows for this machine")
    add_code(p, serving=True)
    p.add_argument("--once", action="store_true", help="exit after one clone, or when the first session ends")
    p.add_argument("--log-dir", metavar="DIR",
                   help="where each clone's JSON log goes (default /var/log/usb4-recovery or "
                        "~/.local/state/usb4-recovery)")
    # For a parent that starts the agent (the demo): exit when our stdin closes,
    # so the agent never outlives it, however the parent ends.
    p.add_argument("--stop-on-eof", action="store_true", help=argparse.SUPPRESS)
    add_timeout(p)
    add_json(p)
    p.set_defaults(run=run)


def _stop_on_eof() -> None:
    """Terminate this process (cleanly, through SIGTERM) once stdin reaches end of file."""

    def watch() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stop-on-eof", daemon=True).start()


def _connecting(ep: tcp.Endpoint, timeout: float, out: events.EventSink) -> OneAtATime:
    """Connections to a listening wizard, one at a time: the next only once the last has ended."""

    def connect(_slice: float | None) -> Connection:
        while not source.stop.is_set():
            try:
                return tcp.connect(ep, timeout=timeout)
            except LinkError as e:
                out(events.Phase("connect", f"{e.message}; trying again"))
                if source.stop.wait(RETRY):
                    break
        raise LinkError("stopped connecting")

    source = OneAtATime(connect)
    return source


def _source(args: argparse.Namespace, out: events.EventSink) -> tuple[Source, float]:
    """Where sessions come from, and how long a connection may take to pair."""
    given = [x for x in (args.listen, args.connect, args.link) if x is not None]
    if len(given) > 1:
        raise UsageError("give one of --listen, --connect and --link")
    if args.connect is not None:
        ep = tcp.parse_endpoint(args.connect)
        if not ep.host:
            raise UsageError("--connect needs the wizard's address: HOST or HOST:PORT")
        return _connecting(ep, args.timeout, out), HOLD_LIMIT  # a person types our code there first

    def listening(address: str, port: int, link: str) -> None:
        out(events.Listening(address=address, port=port, link=link))

    if args.link is not None:
        spec = parse_link(args.link)
    else:
        spec = LinkSpec("tcp", tcp.parse_endpoint(args.listen or "", default_host=""))
    return listen(spec, on_listening=listening), PAIR_LIMIT


def only_wizards(hello: m.Hello) -> str | None:
    if hello.role == "wizard":
        return None
    return (f"{hello.host.hostname} runs `recovery {hello.role}`; an agent is driven by the wizard "
            "(`recovery tui`) on the other machine")


def _sink(out: events.EventSink, json_mode: bool) -> events.EventSink:
    """The CLI's output, plus one line per clone for people."""
    if json_mode:
        return out

    def sink(event: events.Event) -> None:
        if isinstance(event, JobStarted):
            out(events.Phase("clone", f"{event.action}" + (f" (log {event.log})" if event.log else "")
                             + "; Ctrl-C here stops it"))
        elif isinstance(event, JobEnded):
            out(events.Phase("clone", "clone finished" if event.ok else f"clone failed: {event.message}"))
        else:
            out(event)

    return sink


def run(args: argparse.Namespace) -> int:
    out = args.output
    paths = [os.path.abspath(p) for p in args.disk]
    for path in paths:
        if not os.path.exists(path):
            raise UsageError(f"{path} does not exist", hint="give a disk (/dev/...) or an image file")
    if args.stop_on_eof:
        _stop_on_eof()
    source, limit = _source(args, out)
    sink = _sink(out, args.json)
    log_dir = None if args.log_dir is None else Path(args.log_dir)
    guard = CodeGuard(args.code, on_new_code=lambda code, why: out(events.PairingCode(code, why)))
    out(events.PairingCode(guard.code))

    def offered() -> tuple[m.DiskInfo, ...]:
        return offered_disks(paths)

    try:
        while True:
            # Ctrl-C or SIGTERM during a session: the clone stops, the peer is told why.
            with INTERRUPTS.session() as cancel:
                lobby = Lobby(guard, "agent", offered=offered, refuse=only_wizards, sink=out, timeout=args.timeout,
                              hostname=args.name)
                lobby.serve(source, limit=limit)
                try:
                    link = lobby.wait(cancel)
                finally:
                    lobby.close()
                session = AgentSession(link, candidates=lambda: disk_paths(paths), offered=offered, sink=sink,
                                       log_dir=log_dir)
                try:
                    session.serve(max_clones=1 if args.once else None)
                except RecoveryError as e:
                    if args.once or isinstance(e, Interrupted):
                        raise
                    out(events.Phase("session", f"the session with {session.peer} ended: {e.message}"))
                finally:
                    link.conn.close()
            if args.once:
                return 0
            guard.renew("a new pairing")
    finally:
        source.close()
