"""Two network namespaces joined by a veth pair: a stand-in for two hosts on a thunderbolt-net cable."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

from tests.helpers import Recovery


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, text=True, capture_output=True)


@contextlib.contextmanager
def cable(ifname: str = "thunderbolt0") -> Iterator[tuple[str, str]]:
    """Namespaces ``(a, b)`` whose veth ends are both called ``ifname``, down, as a fresh cable's are."""
    a, b = f"u4r-{os.getpid()}-a", f"u4r-{os.getpid()}-b"
    try:
        sh("ip", "netns", "add", a)
        sh("ip", "netns", "add", b)
        sh("ip", "link", "add", ifname, "netns", a, "type", "veth", "peer", "name", ifname, "netns", b)
        yield a, b
    finally:
        sh("ip", "netns", "del", a, check=False)  # takes the veth pair with it
        sh("ip", "netns", "del", b, check=False)


def link_info(ns: str, ifname: str) -> dict[str, Any]:
    return json.loads(sh("ip", "-n", ns, "-d", "-j", "link", "show", "dev", ifname).stdout)[0]  # type: ignore[no-any-return]


class Proc(Recovery):
    """``python -m recovery ... --json`` inside a namespace, its events collected."""

    def __init__(self, ns: str, *args: str) -> None:
        super().__init__(*args, prefix=("ip", "netns", "exec", ns))


def enter(ns: str) -> None:
    """Move the calling thread (only it) into namespace ``ns``: its sockets from now on live there."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), ns)
    finally:
        os.close(fd)


CLONE_NEWNET = 0x40000000
