"""Run ``recovery`` (or a Pilot script) as if this host sat on a Thunderbolt bus with one peer.

``python -m tests.links.fakebus ROOT UUID PEER_UUID -- ARGS...`` writes a
sysfs tree under ROOT that has what the cable's role rule reads (this
host's root switch and one XDomain peer, each with its UUID) and links
``class`` and ``module`` to the real ``/sys``, so the network interfaces are
this namespace's own; then makes :class:`recovery.link.sysfs.Sysfs` read it
by default and runs ``recovery ARGS`` (or ``--script FILE ARGS``).

What it does not cover: everything a real bus adds (the property exchange,
USB4STREAM, hotplug events). thunderbolt-net itself is real (a veth pair
between two network namespaces, named like the cable's interfaces).
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path


def make_bus(root: Path, uuid: str, peer_uuid: str) -> None:
    devices = root / "bus" / "thunderbolt" / "devices"
    (devices / "0-0").mkdir(parents=True, exist_ok=True)
    (devices / "0-0" / "unique_id").write_text(uuid + "\n")
    peer = devices / "0-1"
    peer.mkdir(exist_ok=True)
    for name, value in (
        ("uevent", "DEVTYPE=thunderbolt_xdomain"),
        ("unique_id", peer_uuid),
        ("device_name", "Test Host"),
        ("vendor_name", "Loopback"),
    ):
        (peer / name).write_text(value + "\n")
    for real in ("class", "module", "dev", "block", "devices", "kernel", "firmware"):
        link = root / real
        if not link.exists():
            os.symlink(f"/sys/{real}", link)


def main(argv: list[str]) -> None:
    root, uuid, peer_uuid, sep, *rest = argv
    assert sep == "--", "usage: fakebus ROOT UUID PEER_UUID -- ARGS..."
    make_bus(Path(root), uuid, peer_uuid)
    from recovery.link import sysfs

    sysfs.Sysfs.__init__.__defaults__ = (root,)  # type: ignore[attr-defined]
    if rest[:1] == ["--script"]:
        sys.argv = rest[1:]
        runpy.run_path(rest[1], run_name="__main__")
        return
    from recovery.cli.main import main as recovery

    sys.exit(recovery(rest))


if __name__ == "__main__":
    main(sys.argv[1:])
