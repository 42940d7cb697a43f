"""What ``--link`` names (pure): ``auto``, ``tcp:HOST:PORT``, ``stdio``, ``tbstream[:PEER]``,
``tbnet[:IFACE]``, as a :class:`LinkSpec` the link modules open."""

from __future__ import annotations

from dataclasses import dataclass

from recovery.errors import UsageError
from recovery.link import tcp

KINDS = ("auto", "tcp", "stdio", "tbstream", "tbnet")


@dataclass(frozen=True)
class LinkSpec:
    kind: str
    endpoint: tcp.Endpoint | None = None
    interface: str | None = None  # tbnet: the interface; tbstream: the peer's XDomain (e.g. 0-1)
    command: tuple[str, ...] = ()  # stdio: run this and talk over its stdin/stdout (--via)

    def __str__(self) -> str:
        if self.kind == "tcp" and self.endpoint:
            return f"tcp:{self.endpoint}"
        if self.interface:
            return f"{self.kind}:{self.interface}"
        return self.kind


def parse_link(text: str) -> LinkSpec:
    kind, _, rest = text.partition(":")
    if kind not in KINDS:
        raise UsageError(
            f"unknown link {text!r}: use one of auto, tcp:HOST:PORT, stdio, tbstream[:PEER], tbnet[:IFACE]"
        )
    if kind == "tcp":
        if not rest:
            raise UsageError("--link tcp needs an address: tcp:HOST:PORT")
        return LinkSpec("tcp", tcp.parse_endpoint(rest))
    if kind in ("tbnet", "tbstream"):
        return LinkSpec(kind, interface=rest or None)
    if rest:
        raise UsageError(f"--link {kind} takes no argument")
    return LinkSpec(kind)
