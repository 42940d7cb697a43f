"""The receiver's resume journal: what of a clone is durable on the target.

The receiver owns the resume point (as ZFS's receive keeps its resume
token): only the side that flushed the target knows what is on it. Next to
the job logs, one journal per target (named by the target's identity) holds

- a heading line: the source's identity, the plan's digest (mode, size,
  chunk grid, map), the target's identity and its partition-table
  fingerprint once it was prepared (the edges are zero while a clone runs);
- one line per acknowledgement, written and flushed *before* the ack goes
  out: the first-pass frames that became durable (offset, length, BLAKE3,
  kind; runs of ZERO frames as one entry each, as their digest is known, so
  the journal grows with the data), and the frames a later pass replaced;
- a last line when the clone ended with areas the source could not read (a
  rescue run may patch them later); a clean, verified clone ends it with a
  ``kept`` line instead (the target's fingerprint after the clone, the date):
  the journal is then the *record* of the copy the target holds, which a
  later clone of the same source offers as a delta (capability "delta",
  :mod:`recovery.engine.resume.agree`).

The frames in the first and last MiB are held back until the end of a clone
(an interrupted clone never looks like a valid disk), so their bytes go to a
side file (``.held``), flushed before the line that counts them.

Every line carries a check: BLAKE3 keyed with this machine's journal key
(``journal.key`` beside the journals, made once, readable by its owner
only), so only the receiver that wrote a journal trusts it: one copied from
elsewhere, edited, or made by anyone else fails its check. A torn last line
(a crash while writing) ends the journal there. A journal that does not
match the target (another disk, or the disk was written since: its
fingerprint or a sample of its chunks read back differs) is ignored, with a
message. Whatever the journal says, the sender checks every chunk it counts
against the source before skipping it (:mod:`recovery.engine.resume.agree`).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hmac
import json
import os
import queue
import random
import stat
import struct
import threading
import time
from collections.abc import Callable, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import blake3

from recovery.diskimage import format as imgfmt
from recovery.diskimage.scan import Scanned
from recovery.disks import identity as ident
from recovery.engine.clone.framelist import RECORD, UNKNOWN, FrameList
from recovery.engine.clone.recvpipe import DurablePoint
from recovery.engine.clone.target import EDGE
from recovery.engine.joblog import default_dir
from recovery.protocol import messages as m
from recovery.protocol.frames import ChunkHeader, Codec, Kind

VERSION = 2  # 2: lines checked with the machine's journal key
KEY_FILE = "journal.key"
KEY_SIZE = 32
HELD = struct.Struct("<QQ32sBI")  # offset, length, digest, kind, bytes of data that follow (0 for ZERO)
SAMPLE = 8  # durable chunks read back from the target to check it still holds them


def layout_digest(plan: m.Plan) -> str:
    """How a clone is cut (mode, size, chunk grid): another layout is another clone, not a changed source."""
    return _key({"mode": plan.mode, "size": plan.size, "chunk": plan.chunk_size})


def plan_digest(plan: m.Plan) -> str:
    """What makes two plans of one layout the same clone: the map of what is copied (not the session)."""
    return _key(
        {
            "frames": plan.frames,
            "bytes": plan.map.bytes,
            "extents": plan.map.extents,
            "map": plan.map.digest,
            "layout": layout_digest(plan),
        }
    )


def heading(plan: m.Plan, source_desc: str) -> dict[str, Any]:
    """What a record of an unfinished clone says of it, for a resume to judge (a journal's first line,
    an image's first record): the source, the layout and map, when it began."""
    return {
        "source": hardware(plan.source),
        "source_fp": plan.source.fingerprint,
        "layout": layout_digest(plan),
        "plan": plan_digest(plan),
        "frames": plan.frames,
        "size": plan.size,
        "chunk_size": plan.chunk_size,
        "mode": plan.mode,
        "bytes_planned": plan.map.bytes,
        "rescue": plan.rescue,
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "source_desc": source_desc,
    }


def hardware(i: m.Identity) -> dict[str, Any]:
    """What names a disk across reboots and /dev names: its hardware ids, or its storage."""
    named: dict[str, Any] = {"kind": i.kind, "size": i.size, "wwn": i.wwn, "serial": i.serial}
    if not (i.wwn or i.serial):
        named["storage"] = sorted(k for k in i.storage if k.startswith("="))
    return named


def _key(named: dict[str, Any]) -> str:
    return blake3.blake3(json.dumps(named, sort_keys=True).encode()).hexdigest()[:16]


def target_key(i: m.Identity) -> str:
    """Names a disk's journal (and, for a source, its mapfile) by its hardware."""
    return _key(hardware(i))


def _check(key: bytes, body: dict[str, Any]) -> str:
    return blake3.blake3(json.dumps(body, sort_keys=True).encode(), key=key).hexdigest()[:32]


def journal_key(directory: Path, *, create: bool) -> bytes | None:
    """This machine's journal key in ``directory``, made when ``create`` and missing; None when there is
    none, or it is not a plain file of ours that nobody else may read or write."""
    path = directory / KEY_FILE
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        if not create:
            return None
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileExistsError:  # another receiver made it meanwhile
            return journal_key(directory, create=False)
        try:
            os.write(fd, os.urandom(KEY_SIZE))
            os.fsync(fd)
        finally:
            os.close(fd)
        return journal_key(directory, create=False)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        key = os.read(fd, KEY_SIZE + 1)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077 or len(key) != KEY_SIZE:
        return None
    return key


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Found:
    """A journal read back: the heading and the frames the target holds."""

    path: Path
    head: dict[str, Any]
    frames: FrameList
    held: list[tuple[ChunkHeader, bytes | None]]
    key: bytes = b""  # the journal key its lines were checked with
    complete: bool = False
    kept: bool = False  # a record of a clean clone, not an interrupted one: a delta's, never a resume's
    unreadable: int = 0
    good_size: int = 0  # bytes of the journal up to its last whole line
    problems: list[str] = field(default_factory=list)


def from_image(path: str, found: Scanned) -> Found:
    """What an interrupted save left in an image file (its own records, each checked), as a journal
    would say it: the save's plan record is the heading, nothing is held back."""
    frames = FrameList()
    for chunk in found.entries:
        kind = Kind.ZERO if chunk.codec is imgfmt.Codec.ZERO else Kind.DATA
        frames.append(chunk.offset, chunk.length, chunk.digest, kind)
    return Found(Path(path), found.plan, frames, [])


class Journal:
    """One clone's journal, being written.

    Lines are made at once (:meth:`durable` is called by the receiver's writing thread, which owns
    the frame list) and written and flushed by a thread of their own, in order, each line's
    ``then`` (the ack) called only once it is on the disk: the writing thread never waits for the
    log directory's disk, so the journal costs the clone next to nothing. A journal that cannot be
    written is given up (:attr:`error`); the acks still go out.
    """

    def __init__(self, path: Path, key: bytes, *, append_at: int | None = None) -> None:
        self.path = path
        self.key = key
        self.held_path = path.with_suffix(".held")
        self.fd = _open_log(path, fresh=append_at is None)
        self.held_fd = _open_log(self.held_path, fresh=append_at is None)
        if append_at is not None:
            os.ftruncate(self.fd, append_at)  # drop a torn last line
        os.lseek(self.fd, 0, os.SEEK_END)
        os.lseek(self.held_fd, 0, os.SEEK_END)
        self.done = 0  # first-pass frames counted so far
        self.error: OSError | None = None
        self.busy = 0.0  # seconds the journal's thread spent writing and flushing
        self._jobs: queue.Queue[tuple[bytes, bytes, Callable[[], None] | None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._write_loop, name="journal", daemon=True)
        self._thread.start()

    @classmethod
    def create(
        cls,
        directory: Path | None,
        plan: m.Plan,
        target: m.Identity,
        fingerprint: str,
        source_desc: str,
        target_desc: str,
        source_host: str = "",
    ) -> Journal:
        where = directory or default_dir()
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
        _check_private_dir(where)
        key = journal_key(where, create=True)
        if key is None:
            raise OSError(errno.EPERM, f"{where / KEY_FILE} is not this user's own private key file")
        journal = cls(where / f"resume-{target_key(target)}.journal", key)
        journal._line(
            {
                "journal": VERSION,
                **heading(plan, source_desc),
                "target": hardware(target),
                "target_fp": fingerprint,
                "target_desc": target_desc,
                # what a wizard names the disk by: "incomplete clone of office-pc's nvme0n1 (Samsung 980)"
                "source_host": source_host,
                "source_name": os.path.basename(plan.source.path.rstrip("/")),
                "source_model": plan.source.model or "",
            }
        )
        return journal

    def _encode(self, body: dict[str, Any]) -> bytes:
        return (json.dumps({**body, "check": _check(self.key, body)}, separators=(",", ":")) + "\n").encode()

    def _line(self, body: dict[str, Any], held: bytes = b"", then: Callable[[], None] | None = None) -> None:
        self._jobs.put((held, self._encode(body), then))

    def _write_loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            held, line, then = job
            started = time.monotonic()
            try:
                if self.error is None:
                    for fd, data in ((self.held_fd, held), (self.fd, line)):
                        if data:
                            os.write(fd, data)
                            os.fsync(fd)
            except OSError as e:
                self.error = e
            finally:
                self.busy += time.monotonic() - started
                self._jobs.task_done()
            if then is not None:
                try:
                    then()
                except Exception:  # noqa: BLE001 - the ack of a lost link: the session hears of it itself
                    pass
        self._jobs.task_done()

    def durable(self, point: DurablePoint, frames: FrameList, then: Callable[[], None] | None = None) -> None:
        """Record what the last flush made durable; ``then`` (the ack) runs once that is on the disk."""
        out = bytearray()
        for index, data in point.held:
            offset, length, digest, kind = frames.record(index)
            out += HELD.pack(offset, length, digest, kind, len(data or b"")) + (data or b"")
        records, kinds, zeros = frames.compact(self.done, len(frames))
        replaced = [[i, _b64(frames.packed(i, i + 1)[0]), frames.kinds[i]] for i in point.replaced if i < self.done]
        if not kinds and not replaced and not point.held:
            if then is not None:
                self._jobs.put((b"", b"", then))
            return
        self._line(
            {
                "to": len(frames),
                "bytes": frames.covered,
                "records": _b64(records),
                "kinds": _b64(kinds),
                "zeros": zeros,
                "replaced": replaced,
            },
            bytes(out),
            then,
        )
        self.done = len(frames)

    def drain(self) -> None:
        """Wait until every line so far is on the disk."""
        self._jobs.join()

    def mark_rescue(self) -> None:
        """A rescue continues this clone: from now on its frames may hold filled areas."""
        self._line({"rescue": True})

    def truncate(self, count: int) -> None:
        """The stream starts again at frame ``count``: what follows it no longer counts."""
        self._line({"truncate": count})
        self.done = count

    def finish(self, fingerprint: str, unreadable: int) -> None:
        """The clone ended with unreadable areas: keep the journal for a rescue run that patches them."""
        self._line({"complete": True, "target_fp": fingerprint, "unreadable": unreadable})

    def keep(self, fingerprint: str) -> None:
        """The clone ended clean and verified: keep the journal as the record of the copy on the target."""
        self._line({"kept": True, "target_fp": fingerprint, "at": time.strftime("%Y-%m-%d %H:%M:%S")})

    def close(self) -> None:
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
        for fd in (self.fd, self.held_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.held_fd = -1

    def remove(self) -> None:
        """A clean clone: nothing to resume."""
        self.close()
        for p in (self.path, self.held_path):
            try:
                p.unlink()
            except FileNotFoundError:
                pass


def read(directory: Path | None, target: m.Identity) -> Found | None:
    """The journal of ``target`` in ``directory``, read up to its last whole line; None if there is none."""
    where = directory or default_dir()
    path = where / f"resume-{target_key(target)}.journal"
    try:
        with _open_private(path) as f:
            raw = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        return Found(path, {}, FrameList(), [], problems=[f"cannot read {path}: {e.strerror}"])
    key = journal_key(where, create=False)
    if key is None:
        return Found(
            path,
            {},
            FrameList(),
            [],
            problems=[f"{path} was not made by this machine (no journal key of its own beside it): it is not trusted"],
        )
    found = Found(path, {}, FrameList(), [], key=key)
    pos = 0
    for line in raw.splitlines(keepends=True):
        try:
            body = json.loads(line)
            check = body.pop("check")
            if not isinstance(body, dict) or not hmac.compare_digest(str(check), _check(key, body)):
                raise ValueError("check")
            _take(found, body)
        except Exception:  # noqa: BLE001 - a torn, damaged or tampered line: the journal ends before it
            break
        pos += len(line)
    found.good_size = pos
    if not found.head or found.head.get("journal") != VERSION:
        return Found(
            path,
            {},
            FrameList(),
            [],
            problems=[f"{path} is not a journal this machine wrote, or not one this version reads"],
        )
    found.held = _read_held(path.with_suffix(".held"), found.frames)
    return found


def peek(directory: Path | None, target: m.Identity, *, kept: bool = False) -> m.Unfinished | None:
    """What a journal of ``target`` says, cheaply (its heading and its last lines), for a wizard's offer
    and for naming the disk; None if there is none, this machine's key does not vouch for it (as
    :func:`read`: only lines it checks count), or the target was written since (its partition-table
    fingerprint is not the journal's). ``kept``: the record of a clean clone (a delta's), else an
    unfinished clone's journal."""
    where = directory or default_dir()
    key = journal_key(where, create=False)
    if key is None:
        return None
    try:
        return _peek(where / f"resume-{target_key(target)}.journal", key, target.fingerprint, kept)
    except Exception:  # noqa: BLE001 - a damaged or tampered journal offers nothing
        return None


def _text(value: object, limit: int) -> str:
    return "".join(ch for ch in str(value) if ch.isprintable())[:limit]


def _checked(line: bytes, key: bytes) -> dict[str, Any] | None:
    """A journal line's body if its check is this key's, else None (torn, damaged, or not ours)."""
    try:
        body = json.loads(line)
        check = body.pop("check")
    except (ValueError, AttributeError, KeyError, TypeError):
        return None
    if not isinstance(body, dict) or not hmac.compare_digest(str(check), _check(key, body)):
        return None
    return body


def _peek(path: Path, key: bytes, fingerprint: str, kept: bool) -> m.Unfinished | None:
    try:
        with _open_private(path) as f:
            head = _checked(f.readline(), key)
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - (256 << 10)))
            tail = [body for line in f.read().splitlines() if (body := _checked(line, key)) is not None]
    except OSError:
        return None
    if head is None or head.get("journal") != VERSION:
        return None
    done, complete, target_fp, record, since = 0, False, head.get("target_fp"), False, head.get("since", "")
    for body in tail:
        if "bytes" in body and "to" in body:
            done = int(body["bytes"])
        elif body.get("complete"):
            complete, target_fp = True, body.get("target_fp")
        elif "truncate" in body:
            complete = False
        elif body.get("kept"):
            record, target_fp, since = True, body.get("target_fp"), body.get("at", "")
    mode = head.get("mode", "used")
    if done <= 0 or mode not in ("used", "exact") or target_fp != fingerprint or record != kept:
        return None
    source = head.get("source", {})
    total = int(head.get("bytes_planned", 0))
    return m.Unfinished(
        source=_key(source) if isinstance(source, dict) else "",
        source_desc=_text(head.get("source_desc", ""), 255),
        done=done,
        total=total if total >= done else done,
        since=_text(since, 64),
        complete=complete,
        rescue=bool(head.get("rescue")),
        mode=mode,
        source_host=_text(head.get("source_host", ""), 255),
        source_name=_text(head.get("source_name", ""), 255),
        source_model=_text(head.get("source_model", ""), 255),
    )


def _take(found: Found, body: dict[str, Any]) -> None:
    if "journal" in body:
        found.head = body
    elif "to" in body:
        records, kinds = base64.b64decode(body["records"]), base64.b64decode(body["kinds"])
        if len(found.frames) + len(kinds) != body["to"]:
            raise ValueError("gap")
        found.frames.extend_compact(records, kinds, [[int(x) for x in run] for run in body["zeros"]])
        for index, record, kind in body["replaced"]:
            _, _, digest = RECORD.unpack(base64.b64decode(record))
            found.frames.replace(int(index), digest, int(kind))
    elif "rescue" in body and "journal" not in body:
        found.head["rescue"] = True
    elif "truncate" in body:
        found.frames.truncate(int(body["truncate"]))
        found.complete = False
    elif body.get("kept"):
        found.kept = True
        found.head["target_fp"], found.head["kept_at"] = body["target_fp"], str(body["at"])
    elif body.get("complete"):
        found.complete, found.unreadable = True, int(body["unreadable"])
        found.head["target_fp"] = body["target_fp"]


def _open_log(path: Path, *, fresh: bool) -> int:
    """A journal file to append to; a fresh one is made anew, so nothing left at the path (a link,
    a fifo, another user's file) is ever written through."""
    flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    if not fresh:
        fd = os.open(path, flags | os.O_NONBLOCK)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, f"{path} is not a plain file")
        return fd
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)


def _check_private_dir(where: Path) -> None:
    """Refuse a log directory that another user owns or may write to: they could swap our files."""
    st = os.stat(where)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise OSError(errno.EPERM, f"{where} is not this user's own private directory")


def _open_private(path: Path) -> BinaryIO:
    """``path`` opened for reading, never through a symbolic link."""
    return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC), "rb")


def _read_held(path: Path, frames: FrameList) -> list[tuple[ChunkHeader, bytes | None]]:
    """The held edge frames whose bytes are whole and match a durable frame's digest (latest wins)."""
    try:
        with _open_private(path) as f:
            raw = f.read()
    except OSError:
        return []
    held: dict[int, tuple[ChunkHeader, bytes | None]] = {}
    pos = 0
    while pos + HELD.size <= len(raw):
        offset, length, digest, kind, n = HELD.unpack_from(raw, pos)
        data = raw[pos + HELD.size : pos + HELD.size + n]
        pos += HELD.size + n
        if len(data) != n:
            break
        index = frames.find(offset, length)
        if index is None or frames.digest(index) != digest:
            continue
        if n and blake3.blake3(data).digest() != digest:
            continue
        h = ChunkHeader(index, offset, length, 0, Kind(kind), Codec.RAW, digest)
        held[offset] = (h, data if n else None)
    return [held[o] for o in sorted(held)]


def sample_indexes(
    count: int,
    skip: Set[int] = frozenset(),
    want: int = SAMPLE,
    rng: random.Random | None = None,
) -> list[int]:
    """Frames to check: one at random in each of ``want`` equal stretches of the first ``count`` (so
    nobody can know beforehand which are checked), the last two always, none of ``skip``."""
    rng = rng or random.SystemRandom()
    picks = {count - 2, count - 1}
    for k in range(want):
        lo, hi = count * k // want, count * (k + 1) // want
        if hi > lo:
            picks.add(rng.randrange(lo, hi))
    return sorted(i for i in picks if 0 <= i < count and i not in skip)


def edge_indexes(frames: FrameList, target_size: int) -> list[int]:
    """The frames in the first and last :data:`EDGE` bytes (the partition-table areas), which the
    receiver holds back until the end of a clone; the list is in plan order, so they are at its ends."""
    edge: list[int] = []
    for i in range(len(frames)):
        offset, _, _, _ = frames.record(i)
        if offset >= EDGE:
            break
        edge.append(i)
    for i in range(len(frames) - 1, -1, -1):
        offset, length, _, _ = frames.record(i)
        if offset + length <= target_size - EDGE or offset < EDGE:
            break
        edge.append(i)
    return edge


def _unknown_indexes(frames: FrameList) -> set[int]:
    """The records that claim nothing (their digest :data:`UNKNOWN`)."""
    found: set[int] = set()
    at = frames.records.find(UNKNOWN)
    while at >= 0:
        index, where = divmod(at, RECORD.size)
        if where == RECORD.size - len(UNKNOWN):  # the digest's place in a record (after its offset and length)
            found.add(index)
            at = frames.records.find(UNKNOWN, (index + 1) * RECORD.size)
        else:
            at = frames.records.find(UNKNOWN, at + 1)
    return found


def _sample(frames: FrameList, edge: Set[int]) -> set[int]:
    """Records to read back at random: drawn among those that claim something, so the records that claim
    nothing (a delta's chunks not yet written whole) never thin the sample out."""
    unknown = _unknown_indexes(frames)
    if not unknown:
        return set(sample_indexes(len(frames), edge))
    claims = [i for i in range(len(frames)) if i not in edge and i not in unknown]
    return {claims[k] for k in sample_indexes(len(claims))}


def target_changed(
    found: Found, target_fd: int, size: int, starts: Set[int] = frozenset(), *, sample: bool = True
) -> str | None:
    """Why the target no longer holds what the journal says (None: it does). The frames in the
    partition-table areas are not sampled: their bytes reach the target only at the end of a clone.
    ``starts``: offsets whose frames are read back too (a partition's first bytes, where mounting
    its filesystem writes); ``sample``: and some at random."""
    fp = ident.fingerprint(target_fd, size)
    if fp != found.head.get("target_fp"):
        return "the target's partition-table areas changed since"
    edge = set(edge_indexes(found.frames, size))
    extra = {i for o in starts if (i := found.frames.covering(o)) is not None and i not in edge}
    for i in sorted((_sample(found.frames, edge) if sample else set()) | extra):
        offset, length, digest, _ = found.frames.record(i)
        if digest == UNKNOWN:
            continue  # it claims nothing (a delta's chunk not yet written whole): a resume sends it again
        try:
            data = os.pread(target_fd, length, offset)
        except OSError as e:
            return f"the target cannot be read back at byte {offset} ({e.strerror})"
        if blake3.blake3(data).digest() != digest:
            return f"the target no longer holds what the clone wrote at byte {offset}"
    return None
