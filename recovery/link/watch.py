"""Naming the cause when a cable link dies, and noticing it before the engine's timeout.

:class:`Watched` wraps a channel: when the channel fails with
:class:`LinkError`, it asks a ``cause`` probe what happened on the cable (the
peer's XDomain device gone, the interface gone) and reports that instead of
a bare errno. :class:`Watchdog` runs the probe twice a second and breaks the
connection as soon as the cable is gone: a TCP socket on a vanished interface
would otherwise stay silent until the engine's liveness timeout.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence

from recovery.errors import LinkError
from recovery.link.base import Buffer, Channel, Connection

Probe = Callable[[], str | None]  # a reason the link is gone, or None while it looks fine
WATCH_INTERVAL = 0.5


class Watched(Channel):
    def __init__(self, inner: Channel, cause: Probe) -> None:
        # No super().__init__(): the counters live in the inner channel.
        self.inner = inner
        self.name = inner.name
        self.cause = cause
        self.reason: str | None = None

    # The engine reads and resets these counters; they live in the inner channel.
    @property
    def last_activity(self) -> float:
        return self.inner.last_activity

    @last_activity.setter
    def last_activity(self, value: float) -> None:
        self.inner.last_activity = value

    @property
    def bytes_in(self) -> int:
        return self.inner.bytes_in

    @bytes_in.setter
    def bytes_in(self, value: int) -> None:
        self.inner.bytes_in = value

    @property
    def bytes_out(self) -> int:
        return self.inner.bytes_out

    @bytes_out.setter
    def bytes_out(self, value: int) -> None:
        self.inner.bytes_out = value

    @property
    def send_seconds(self) -> float:
        return self.inner.send_seconds

    @send_seconds.setter
    def send_seconds(self, value: float) -> None:
        self.inner.send_seconds = value

    def _explain(self, error: LinkError) -> LinkError:
        reason = self.reason or self.cause()
        return LinkError(reason, hint=error.hint) if reason else error

    def recv_into(self, view: memoryview) -> int:
        try:
            n = self.inner.recv_into(view)
        except LinkError as e:
            raise self._explain(e) from None
        if n == 0 and len(view):
            reason = self.reason or self.cause()
            if reason:  # end of stream because the cable went, not because the peer closed
                raise LinkError(reason)
        return n

    def send_parts(self, parts: Sequence[Buffer]) -> None:
        try:
            self.inner.send_parts(parts)
        except LinkError as e:
            raise self._explain(e) from None

    def gone(self) -> str | None:
        why = self.inner.gone()
        return (self.reason or self.cause() or why) if why else self.reason

    def lost(self, reason: str) -> None:
        """The cable is gone: fail blocked and future calls with ``reason``."""
        self.reason = self.reason or reason
        self.inner.abort()

    def abort(self) -> None:
        self.inner.abort()

    def finish_sending(self) -> None:
        self.inner.finish_sending()

    def close(self) -> None:
        self.inner.close()


class Watchdog:
    """Polls ``probe``; on the first reason, breaks both channels of the connection."""

    def __init__(self, channels: tuple[Watched, Watched], probe: Probe, interval: float = WATCH_INTERVAL) -> None:
        self.channels = channels
        self.probe = probe
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="link-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(2 * self.interval + 1)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            reason = self.probe()
            if reason:
                for ch in self.channels:
                    ch.lost(reason)
                return


def watch(conn: Connection, cause: Probe, *, poll: Probe | None = None) -> Connection:
    """``conn`` with watched channels; with ``poll``, a watchdog that stops when it closes."""
    control, data = Watched(conn.control, cause), Watched(conn.data, cause)
    watched = dataclasses.replace(conn, control=control, data=data)  # shares on_close with ``conn``
    if poll is not None:
        dog = Watchdog((control, data), poll)
        dog.start()
        watched.on_close.append(dog.stop)
    return watched
