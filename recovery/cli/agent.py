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
from collections.abc import Callable
from pathlib import Path

from recovery import events
from recovery.cli.common import INTERRUPTS, add_code, add_json, add_link, add_timeout
from recovery.engine.peer.clones import CloneSession
from recovery.engine.peer.guard import REJOIN_FOR, CodeGuard
from recovery.engine.peer.jobs import JobEnded, JobStarted, disk_paths, offered_disks
from recovery.engine.peer.lobby import Lobby
from recovery.engine.peer.meeting import Meeting, Ways
from recovery.errors import Interrupted, RecoveryError, UsageError
from recovery.link import tcp
from recovery.link.paced import pace
from recovery.link.spec import parse_link
from recovery.protocol import messages as m
from recovery.units import parse_size


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "agent",
        help="let a wizard on the other machine drive clones (no screen here)",
        description="Offer this machine's disks to the wizard (`recovery tui`) on the other "
        "machine, which then drives clones in either direction. Waits for the next session "
        "after each one, until stopped.",
    )
    p.add_argument(
        "--listen",
        metavar="[ADDR]:PORT",
        help=f"wait for the wizard over TCP (the default: all addresses, port {tcp.DEFAULT_PORT})",
    )
    p.add_argument(
        "--connect", metavar="HOST[:PORT]", help="connect to a wizard that listens, trying again until it answers"
    )
    add_link(p)
    p.add_argument(
        "--disk",
        action="append",
        default=[],
        metavar="PATH",
        help="offer only this disk or image file (repeat for more; default: every disk)",
    )
    p.add_argument("--name", metavar="NAME", help="the name the wizard shows for this machine")
    add_code(p, serving=True)
    p.add_argument("--once", action="store_true", help="exit after one clone, or when the first session ends")
    p.add_argument(
        "--log-dir",
        metavar="DIR",
        help="where each clone's JSON log goes (default /var/log/usb4-recovery or ~/.local/state/usb4-recovery)",
    )
    # For a parent that starts the agent (the demo): exit when our stdin closes,
    # so the agent never outlives it, however the parent ends.
    p.add_argument("--stop-on-eof", action="store_true", help=argparse.SUPPRESS)
    # For the demo, which runs both machines on one: a link as slow as a cable can be.
    p.add_argument("--link-rate", type=parse_size, metavar="BYTES/S", help=argparse.SUPPRESS)
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


def _ways(args: argparse.Namespace) -> Ways:
    """Where sessions come from: TCP (the default), a wizard's address, or a link (the cable's by
    the same role rule as the wizard's, so the two never both listen)."""
    given = [x for x in (args.listen, args.connect, args.link) if x is not None]
    if len(given) > 1:
        raise UsageError("give one of --listen, --connect and --link")
    if args.connect is not None:
        ep = tcp.parse_endpoint(args.connect)
        if not ep.host:
            raise UsageError("--connect needs the wizard's address: HOST or HOST:PORT")
        return Ways(connect=ep)
    if args.link is None:
        return Ways(listen=tcp.parse_endpoint(args.listen or "", default_host=""))
    spec = parse_link(args.link)
    if spec.kind == "tcp":
        return Ways(listen=spec.endpoint)
    if spec.kind == "stdio":
        return Ways(other=spec)
    return Ways(cable=spec, watch_cable=False)


def only_wizards(hello: m.Hello) -> str | None:
    if hello.role == "wizard":
        return None
    return (
        f"{hello.host.hostname} runs `recovery {hello.role}`; an agent is driven by the wizard "
        "(`recovery tui`) on the other machine"
    )


def _sink(out: events.EventSink, json_mode: bool) -> events.EventSink:
    """The CLI's output, plus one line per clone for people."""
    if json_mode:
        return out

    def sink(event: events.Event) -> None:
        if isinstance(event, JobStarted):
            out(
                events.Phase(
                    "clone", f"{event.action}" + (f" (log {event.log})" if event.log else "") + "; Ctrl-C here stops it"
                )
            )
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
    ways = _ways(args)
    guard = CodeGuard(args.code, on_new_code=lambda code, why: out(events.PairingCode(code, why)))

    log_dir = None if args.log_dir is None else Path(args.log_dir)

    def offered() -> tuple[m.DiskInfo, ...]:
        return offered_disks(paths, log_dir)

    def listening(way: str, host: str, port: int) -> None:
        out(events.Listening(address=host or "*", port=port, link=way))

    def status(way: str, text: str) -> None:
        if not args.json:
            out(events.Phase(way, text))

    meeting = Meeting(ways, status=status, listening=listening)
    try:
        meeting.listen_now()
        out(events.PairingCode(guard.code))
        _sessions(args, meeting, guard, offered, paths, out)
    finally:
        meeting.close()
    return 0


def lost_pairing(guard: CodeGuard, session: CloneSession, error: RecoveryError, out: events.EventSink) -> None:
    """A lost link, or a failed clone that keeps the pairing (not a goodbye, not a quit): the same peer
    may pair again once without a code."""
    secret = session.rejoin_after(error)
    guard.session_ended(secret)
    if secret is None:
        return
    if session.kept_pairing(error):
        said = f"{session.peer} pairs again without a code, at once: a failed clone keeps the pairing"
    else:
        said = (
            f"{session.peer} may pair again without a code for {REJOIN_FOR / 60:.0f} minutes "
            "(the lost pairing's key vouches for it)"
        )
    out(events.Phase("session", said))


def _sessions(
    args: argparse.Namespace,
    meeting: Meeting,
    guard: CodeGuard,
    offered: Callable[[], tuple[m.DiskInfo, ...]],
    paths: list[str],
    out: events.EventSink,
) -> None:
    """One session after another (one only with --once), each found by a new lobby."""
    sink = _sink(out, args.json)
    log_dir = None if args.log_dir is None else Path(args.log_dir)
    while True:
        # Ctrl-C or SIGTERM during a session: the clone stops, the peer is told why.
        with INTERRUPTS.session() as cancel:
            lobby = Lobby(
                guard, "agent", offered=offered, refuse=only_wizards, sink=out, timeout=args.timeout, hostname=args.name
            )
            meeting.feed(lobby)
            try:
                link = lobby.wait(cancel)
            finally:
                lobby.close()
            if args.link_rate:
                pace(link.conn, args.link_rate)
            session = CloneSession(
                link, candidates=lambda: disk_paths(paths), offered=offered, sink=sink, log_dir=log_dir
            )
            try:
                session.serve(max_clones=1 if args.once else None)
            except RecoveryError as e:
                if args.once or isinstance(e, Interrupted):
                    raise
                out(events.Phase("session", f"the session with {session.peer} ended: {e.message}"))
                lost_pairing(guard, session, e, out)
            finally:
                link.conn.close()
        if args.once:
            return
        guard.renew("a new pairing")
