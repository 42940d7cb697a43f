"""Two mounted filesystems hold the same files: the same names, kinds, modes, owners, modification times,
sizes, link targets, device numbers, extended attributes (ACLs and SELinux labels among them), hard links
and contents (BLAKE3, several files at once: it releases the GIL). Access and change times are not
compared: no copy can keep a change time."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import blake3

CHUNK = 1 << 20


class Difference(Exception):
    """The first difference found, in words, naming the file."""


def compare(old: str, new: str, check: Callable[[], None] = lambda: None) -> int:
    """Raise :class:`Difference` at the first difference between the trees under ``old`` and ``new``; the
    number of entries compared when there is none. ``check`` is called for each entry (a cancel)."""
    links_old: dict[int, bytes] = {}
    links_new: dict[int, bytes] = {}
    files: list[tuple[bytes, int]] = []
    count = 0
    for rel in _entries(os.fsencode(old), os.fsencode(new)):
        check()
        count += 1
        a = os.lstat(os.path.join(os.fsencode(old), rel))
        b = os.lstat(os.path.join(os.fsencode(new), rel))
        _same_entry(old, new, rel, a, b)
        if not stat.S_ISDIR(a.st_mode) and (a.st_nlink != b.st_nlink or _relinked(a, b, rel, links_old, links_new)):
            raise Difference(f"{_name(rel)}: its hard links differ")
        if stat.S_ISREG(a.st_mode) and a.st_size and links_old.get(a.st_ino, rel) == rel:
            files.append((rel, a.st_size))
    _same_contents(os.fsencode(old), os.fsencode(new), files, check)
    return count


def _relinked(a: os.stat_result, b: os.stat_result, rel: bytes, old: dict[int, bytes], new: dict[int, bytes]) -> bool:
    """A file of several names whose new inode does not hold the same names: each inode is known by the
    first name found for it, which must be the same on both sides."""
    if a.st_nlink < 2:
        return False
    first = old.setdefault(a.st_ino, rel)
    return new.setdefault(b.st_ino, first) != first


def _entries(old: bytes, new: bytes) -> Iterator[bytes]:
    """Every path under the trees (relative, the root as ``.``), after checking both hold the same names."""
    pending = [b"."]
    while pending:
        rel = pending.pop()
        yield rel
        if not os.path.isdir(os.path.join(old, rel)) or os.path.islink(os.path.join(old, rel)):
            continue
        names_old, names_new = sorted(os.listdir(os.path.join(old, rel))), sorted(os.listdir(os.path.join(new, rel)))
        if names_old != names_new:
            missing = sorted(set(names_old) - set(names_new)) or sorted(set(names_new) - set(names_old))
            raise Difference(f"{_name(os.path.join(rel, missing[0]))}: only in one of them")
        pending.extend(os.path.join(rel, n) for n in reversed(names_old))


def _same_entry(old: str, new: str, rel: bytes, a: os.stat_result, b: os.stat_result) -> None:
    fields = {
        "kind or mode": (a.st_mode, b.st_mode),
        "owner": ((a.st_uid, a.st_gid), (b.st_uid, b.st_gid)),
        "modification time": (a.st_mtime_ns, b.st_mtime_ns),
        "device number": (a.st_rdev, b.st_rdev),
    }
    if not stat.S_ISDIR(a.st_mode):
        fields["size"] = (a.st_size, b.st_size)
    for what, (x, y) in fields.items():
        if x != y:
            raise Difference(f"{_name(rel)}: its {what} differs")
    pa, pb = os.path.join(os.fsencode(old), rel), os.path.join(os.fsencode(new), rel)
    if stat.S_ISLNK(a.st_mode) and os.readlink(pa) != os.readlink(pb):
        raise Difference(f"{_name(rel)}: its link target differs")
    if _xattrs(pa) != _xattrs(pb):
        raise Difference(f"{_name(rel)}: its extended attributes differ")


def _xattrs(path: bytes) -> dict[str, bytes]:
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in os.listxattr(path, follow_symlinks=False)}


def _same_contents(old: bytes, new: bytes, files: list[tuple[bytes, int]], check: Callable[[], None]) -> None:
    def digests(rel: bytes) -> tuple[bytes, bytes, bytes]:
        check()
        return rel, _digest(os.path.join(old, rel)), _digest(os.path.join(new, rel))

    files.sort(key=lambda f: -f[1])  # the largest first: the pool ends together
    pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))
    try:
        for rel, x, y in pool.map(digests, [rel for rel, _ in files]):
            if x != y:
                raise Difference(f"{_name(rel)}: its contents differ")
    finally:
        pool.shutdown(cancel_futures=True)


def _digest(path: bytes) -> bytes:
    hasher = blake3.blake3()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            hasher.update(view[:n])
    return hasher.digest()


def _name(rel: bytes) -> str:
    """A path for a message: printable, whatever bytes the name holds."""
    text = os.fsdecode(rel).removeprefix("./")
    if text == ".":
        return "the top folder"
    return repr(text)[1:-1] if not text.isprintable() else text
