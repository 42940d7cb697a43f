"""Finding the local disk a peer pinned by its identity, never by its /dev name.

A wizard on one machine picks a disk of the other from that machine's hello;
the pick travels back as an :class:`~recovery.protocol.messages.Identity`.
This module finds which local disk it names now: by WWN, then serial, then
the device's own storage keys, on this host only. Whether the disk is still
in the state it was picked in (size, partition table) is checked later by
:func:`recovery.disks.identity.mismatch`, right before writing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from recovery.disks import identity
from recovery.protocol.values import Identity


def _own_keys(ident: Identity) -> set[str]:
    return {k for k in ident.storage if k.startswith("=")}


def same_disk(expected: Identity, found: Identity) -> bool:
    """True when ``found`` is the device (or file) ``expected`` names."""
    if expected.host_id != found.host_id or expected.kind != found.kind:
        return False
    if expected.wwn and found.wwn:
        return expected.wwn == found.wwn
    if expected.serial and found.serial and expected.kind != "partition":
        return expected.serial == found.serial
    # Partitions share their disk's serial; files and bare devices have none.
    return bool(_own_keys(expected) & _own_keys(found))


def find_disk(
    expected: Identity,
    paths: Iterable[str],
    identify: Callable[[str], Identity] = identity.identify,
) -> tuple[str, Identity] | None:
    """The one path among ``paths`` that holds ``expected`` now, with its identity.

    None when no path matches, or when more than one does and the device's
    own storage keys cannot tell them apart.
    """
    found: list[tuple[str, Identity]] = []
    for path in dict.fromkeys(paths):
        try:
            ident = identify(path)
        except OSError:
            continue  # vanished or unreadable: cannot be the disk we look for
        if same_disk(expected, ident):
            found.append((path, ident))
    if len(found) > 1:
        found = [(p, i) for p, i in found if _own_keys(expected) & _own_keys(i)]
    return found[0] if len(found) == 1 else None
