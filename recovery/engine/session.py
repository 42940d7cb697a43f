"""A live connection to a peer after the handshake, shared by both roles.

:func:`handshake` exchanges hellos over a fresh connection; the resulting
:class:`PeerLink` carries the control link and both hellos. One clone (or
several, one after another) then runs over it: see
:func:`recovery.engine.send.run_send` and
:func:`recovery.engine.receive.run_receive`.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import dataclass

from recovery import SOFTWARE, events
from recovery.disks import identity
from recovery.engine.api import CAPABILITIES
from recovery.engine.control import DEFAULT_TIMEOUT, ControlLink
from recovery.engine.pipeline import Crew
from recovery.errors import CancelledError
from recovery.link.base import Connection
from recovery.protocol import messages as m
from recovery.protocol.pairing import pairing_code


@dataclass
class PeerLink:
    conn: Connection
    ctl: ControlLink
    ours: m.Hello
    theirs: m.Hello

    @property
    def pairing_code(self) -> str:
        return pairing_code(self.ours.nonce, self.theirs.nonce)

    def peer_event(self) -> events.PeerFound:
        return events.PeerFound(
            hostname=self.theirs.host.hostname,
            link=self.conn.kind,
            address=self.conn.peer,
            software=self.theirs.host.software,
            pairing_code=self.pairing_code,
            speed=self.conn.speed(),
            link_choice=self.conn.choice,
            link_rates=self.conn.rates,
        )

    def abandon(self, error: BaseException, crew: Crew | None = None) -> BaseException:
        """Stop the pipeline's threads, tell the peer why we stop, unblock
        everything on the link, and return the error to raise: the peer's
        own reason if a lost link was only its echo."""
        if crew is not None:
            crew.fail(CancelledError("stopped"))
            crew.join(2)
        reason = self.ctl.explain(error)
        self.ctl.report(reason)
        self.conn.abort()
        return reason

    def close(self) -> None:
        self.ctl.close()


def make_hello(role: str, disks: tuple[m.DiskInfo, ...] = (), hostname: str | None = None) -> m.Hello:
    host = identity.host_info(SOFTWARE)
    if hostname:
        host = dataclasses.replace(host, hostname=hostname)
    return m.Hello(
        host=host,
        role=role,  # type: ignore[arg-type]
        nonce=os.urandom(16).hex(),
        caps=CAPABILITIES,
        disks=disks,
    )


def handshake(
    conn: Connection,
    role: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    disks: tuple[m.DiskInfo, ...] = (),
    sink: events.EventSink = events.ignore,
    cancel: threading.Event | None = None,
    hostname: str | None = None,
) -> PeerLink:
    """Exchange hellos; on failure the peer is told and the link aborted.

    Setting ``cancel`` later stops whatever runs over the link and tells the peer.
    ``hostname`` replaces this machine's name in our hello (the demo's
    simulated peer calls itself something else than the wizard's host).
    """
    sink(events.Phase("handshake", f"connected to {conn.peer} over {conn.kind}"))
    ctl = ControlLink(conn, timeout, cancel)
    ours = make_hello(role, disks, hostname)
    try:
        theirs = ctl.start(ours)
    except BaseException as e:
        ctl.report(e)
        ctl.close()
        conn.abort()
        raise
    link = PeerLink(conn, ctl, ours, theirs)
    sink(link.peer_event())
    return link
