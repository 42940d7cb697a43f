"""Which HopIDs a stream uses: the rule both hosts follow without talking.

The rule (docs/links.md, "HopIDs"): after the stream is attached to the peer,
write the same HopID H to both ``in_hopid`` and ``out_hopid``. The in and out
pools are separate, so this host's out H reaches the peer's in H. H is taken
from the top of the range down (:func:`ladder`), never 8: thunderbolt-net
must get exactly the peer's transmit HopID, normally 8, as its receive
HopID, and it allocates from the bottom. A candidate the kernel refuses is
skipped (EBUSY or ENOSPC: taken on this side; EINVAL: above this host's or
the peer's maximum). Refusals for a maximum are the same on both hosts, and
HopIDs taken by a link both hosts set up alike are taken on both, so both
hosts end at the same H; the open handshake confirms it.

Nothing here relies on the kernel adopting the peer's values: each host names
its streams differently (:func:`stream_names`), so the kernel never adopts.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable

from recovery.errors import LinkError
from recovery.link.sysfs import uuid_key
from recovery.link.tbstream.configfs import StreamTree

TBNET_HOPID = 8  # thunderbolt-net's HopID in both directions on an otherwise idle cable
FLOOR = TBNET_HOPID + 1  # the lowest HopID a stream may take
DEFAULT_CEILING = 31  # where to start when the peer's maximum is not shown (refusals step down)
TAKEN = {errno.EBUSY, errno.ENOSPC}
TOO_HIGH = {errno.EINVAL}
CONTROL_BASE, DATA_BASE = "rcvctl", "rcvdat"


def ladder(ceiling: int | None) -> list[int]:
    """The candidates, best first: from the top of the range down to :data:`FLOOR`."""
    top = ceiling if ceiling is not None and ceiling >= FLOOR else DEFAULT_CEILING
    return list(range(top, FLOOR - 1, -1))


def stream_names(local_uuid: str, peer_uuid: str) -> tuple[str, str]:
    """(control, data) stream names for this host: ``a`` suffix on the smaller UUID, ``b`` on the other.

    The kernel adopts a peer's published HopIDs only into a stream of the same
    name; different names on the two hosts mean it never does, so the HopIDs
    are always the explicit ones of :func:`claim`.
    """
    if uuid_key(local_uuid) == uuid_key(peer_uuid):
        raise LinkError(f"this host and the peer have the same UUID {local_uuid}")
    tag = "a" if uuid_key(local_uuid) < uuid_key(peer_uuid) else "b"
    return CONTROL_BASE + tag, DATA_BASE + tag


def claim(tree: StreamTree, group: str, name: str, candidates: Iterable[int], attached: Callable[[], bool]) -> int:
    """Give stream ``group/name`` the first candidate H the kernel grants both ways; returns H.

    The stream must be attached (``attached()``): while detached the kernel
    stores any number unchecked and later requests it blindly. Whatever the
    stream held is released first; a half-granted candidate is released
    before the next is tried. The values are read back before they count.
    """
    if not attached():
        raise LinkError(f"stream {group}/{name} is not attached to the peer: its HopIDs cannot be set yet")
    held = tree.info(group, name)
    if held.in_hopid or held.out_hopid:
        tree.zero_hopids(group, name)
    refused: list[str] = []
    for h in candidates:
        try:
            tree.write(group, name, "in_hopid", h)
        except OSError as e:
            if e.errno in TAKEN | TOO_HIGH:
                refused.append(f"{h}: {_reason(e.errno)}")
                continue
            raise _failed(group, name, "in_hopid", h, e) from None
        try:
            tree.write(group, name, "out_hopid", h)
        except OSError as e:
            tree.zero_hopids(group, name)
            if e.errno in TAKEN | TOO_HIGH:
                refused.append(f"{h}: {_reason(e.errno)}")
                continue
            raise _failed(group, name, "out_hopid", h, e) from None
        info = tree.info(group, name)
        if (info.in_hopid, info.out_hopid) != (h, h) or not attached():
            tree.zero_hopids(group, name)
            raise LinkError(
                f"stream {group}/{name}: wrote HopID {h} both ways, the kernel shows "
                f"in {info.in_hopid} out {info.out_hopid}" + ("" if attached() else " (the peer detached meanwhile)")
            )
        return h
    raise LinkError(
        f"no free HopID for stream {group}/{name} (tried {'; '.join(refused) or 'none'})",
        hint="other streams to this peer hold them: `recovery stream list`; remove the ones nobody uses",
    )


def agree_step(ours: int, theirs: int) -> int | None:
    """The bound for the next round of the data-HopID agreement, or None once both sides agree.

    Each side proposes the best HopID it could take; when they differ, both
    retry at or below the lower proposal, which the higher side failed to get
    (or skipped), and propose again.
    """
    return None if ours == theirs else min(ours, theirs)


def manual_rule(name: str, hopid: int) -> str:
    """Plain shell that sets up the other end of a stream by hand, following the rule.

    The other end gets another stream name than ``name``, so its kernel does
    not copy this side's published values at mkdir (it would then refuse the
    explicit writes as taken).
    """
    other = name[:7] + ("2" if not name.endswith("2") else "3")
    d = f"/sys/kernel/config/thunderbolt/stream/$svc/{other}"
    return "\n".join(
        [
            "# On the other machine, as root, with the cable in:",
            'svc=$(basename "$(dirname "$(grep -lx stream /sys/bus/thunderbolt/devices/*/key | head -n1)")")',
            f"mkdir -p {d}",
            f"echo {hopid} > {d}/in_hopid && echo {hopid} > {d}/out_hopid   # the same HopID both ways",
            f"cat {d}/in_hopid {d}/out_hopid   # both must read {hopid}",
            f"echo /dev/tbstream$(cat {d}/index)   # start the reader first",
            f"# afterwards: echo 0 > {d}/in_hopid; echo 0 > {d}/out_hopid; rmdir {d}",
        ]
    )


def _reason(code: int) -> str:
    return "taken" if code in TAKEN else "above the maximum"


def _failed(group: str, name: str, attr: str, h: int, e: OSError) -> LinkError:
    return LinkError(f"cannot write {h} to {attr} of stream {group}/{name}: {e.strerror}")
