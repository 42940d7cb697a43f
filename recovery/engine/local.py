"""A clone inside one machine: both sides in this process, joined by socket pairs.

Saving a disk to an image on a local drive, or restoring one onto a local disk, is a clone whose two
sides run here: the same pairing, plan, stream, read-back and filesystem checks as between two
machines, so there is one way to copy a disk and one way to verify it. The link is private (nothing
crosses a network): the data is authenticated, not sealed on the way.
"""

from __future__ import annotations

import os
import socket
import threading

from recovery import events
from recovery.engine.api import ReceiveOptions, SendOptions
from recovery.engine.clone.receive import receive_disk
from recovery.engine.clone.send import send_disk
from recovery.engine.peer.guard import CodeGuard
from recovery.errors import CancelledError, LinkError, RecoveryError
from recovery.link.base import Connection, FdChannel
from recovery.protocol import codes


def local_pair(*, private: bool = True) -> tuple[Connection, Connection]:
    """Two ends of a link inside this process (the first sends, the second receives).
    ``private``: no network reaches it (tests may pretend one does)."""
    c1, c2 = socket.socketpair()
    d1, d2 = socket.socketpair()
    binding = os.urandom(16)

    def end(c: socket.socket, d: socket.socket, peer: str) -> Connection:
        return Connection(
            FdChannel(c.fileno(), name="control", owner=c),
            FdChannel(d.fileno(), name="data", owner=d),
            kind="local",
            peer=peer,
            binding=binding,
            private=private,
        )

    return end(c1, d1, "this machine (receiving)"), end(c2, d2, "this machine (sending)")


def clone_locally(
    send: SendOptions, receive: ReceiveOptions, sink: events.EventSink, sender_sink: events.EventSink = events.ignore
) -> events.Summary:
    """Run both sides of one clone here; the receiving side's summary (what the target itself showed).
    ``sink`` gets the receiving side's events, ``sender_sink`` the sending side's. The first error
    either side met is raised (not the lost link it then caused on the other)."""
    code = codes.generate()
    sending, receiving = local_pair()
    receive.code = send.code = code
    receive.cancel = send.cancel
    got: list[events.Summary] = []
    failed: list[RecoveryError] = []

    def receiver() -> None:
        try:
            got.append(receive_disk(receiving, receive, sink, CodeGuard(code)))
        except RecoveryError as e:
            failed.append(e)
            sending.abort()
        finally:
            receiving.close()

    thread = threading.Thread(target=receiver, name="local-receiver", daemon=True)
    thread.start()
    try:
        send_disk(sending, send, sender_sink)
    except RecoveryError as e:
        receiving.abort()
        thread.join()
        raise _first(e, failed) from None
    finally:
        sending.close()
    thread.join()
    if failed:
        raise failed[0]
    return got[0]


def _first(sender: RecoveryError, receiver: list[RecoveryError]) -> RecoveryError:
    """The error to report: the receiving side's own, when the sender only saw the link it broke."""
    if receiver and isinstance(sender, LinkError | CancelledError) and not isinstance(receiver[0], LinkError):
        return receiver[0]
    return sender
