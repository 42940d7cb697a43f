"""Progress events: what the engine tells the CLI (``--json``) and the TUI.

Every event is a frozen dataclass; :func:`to_json` gives the documented
JSON form (one object per line, ``"event"`` names the type). The schema is
stable: fields may be added, never renamed or removed (docs/cli.md).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    kind: ClassVar[str] = "event"


@dataclass(frozen=True)
class Phase(Event):
    """A step of the run begins, or a status line; ``name`` is one of:

    connect, handshake, fit (``--fit``: measuring, resizing, moving on the copy-on-write view),
    map, resume, transfer, rescue, verify (a clone);
    demo (``recovery demo``); export (``recovery image export``); unmount
    (``recovery image mount`` and ``unmount``: all of it taken down);
    session (``recovery agent``: a session ended);
    clone, tcp, cable (``recovery agent`` without ``--json`` only: a clone
    starts or ends, its listener, the cable).
    """

    kind: ClassVar[str] = "phase"
    name: str
    message: str = ""


@dataclass(frozen=True)
class Listening(Event):
    kind: ClassVar[str] = "listening"
    address: str
    port: int
    link: str


@dataclass(frozen=True)
class PairingCode(Event):
    """This machine serves: the code a person must type on the other machine."""

    kind: ClassVar[str] = "pairing"
    code: str
    why: str = ""  # why a new code replaced the old one ("" for the first)


@dataclass(frozen=True)
class PairingAttempt(Event):
    """A peer tried to pair (or this side tried); ``ok`` false says why not."""

    kind: ClassVar[str] = "pairing_attempt"
    peer: str  # where it came from
    ok: bool
    reason: str = ""  # "wrong_code", "locked", "busy", "conflict", "malformed", "timeout"
    message: str = ""
    tries_left: int | None = None  # a wrong code: tries left before the code changes or tries must wait
    new_code: bool = False  # a wrong code, the last try: the serving side shows a new code now
    drove: bool = False  # this side drove the attempt (its user typed the other machine's code)
    host: str = ""  # the other machine's name, as its hello gave it (when it got that far)


@dataclass(frozen=True)
class RejoinRefused(Event):
    """The machine a pairing was with will not pair again by that pairing's secret (it restarted, ended
    that pairing, or cannot): waiting for it is over, only its code pairs now."""

    kind: ClassVar[str] = "rejoin_refused"
    peer: str  # its name
    message: str  # why, in its words or ours: "new-pc restarted since that pairing: type the code it shows now"


@dataclass(frozen=True)
class PeerFound(Event):
    """Paired with a peer: who it is, over what, and how safe the link is."""

    kind: ClassVar[str] = "peer"
    hostname: str  # the peer's name in this pairing (tagged when both machines have the same one)
    link: str
    address: str
    software: str
    pairing_code: str = ""  # unused since protocol 2 (the code is never derived from the hellos): empty
    speed: str | None = None  # as the link reports it: the bus's for the cable, the card's for TCP
    machine_id: str | None = None  # the peer's /etc/machine-id, as it says
    role: str = ""  # this side's part in the pairing: "driver" (typed the code) or "server" (showed it)
    security: str = ""  # "paired; data encrypted by default on this link", ... (the same on both sides)
    session: str = ""  # a short fingerprint of the session keys, the same on both machines
    link_choice: str | None = None  # why this link (auto on the cable: the rates measured at the start)
    link_rates: dict[str, float] | None = None  # bytes/s each cable link measured, when both were
    name: str = ""  # this machine's name in this pairing, as the peer's screen shows it


@dataclass(frozen=True)
class PlanMade(Event):
    kind: ClassVar[str] = "plan"
    role: str  # "sender" or "receiver"
    source: str
    target: str
    mode: str
    size: int  # bytes of the source (and needed on the target)
    to_send: int  # bytes covered by frames
    chunk_size: int
    parts: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0  # used mode: bytes outside the partitions that are not copied
    encrypted: bool = False  # the chunks' payloads are sealed on the link
    verify: bool = True  # the target is to be read back after the copy


@dataclass(frozen=True)
class Progress(Event):
    kind: ClassVar[str] = "progress"
    phase: str  # "transfer" or "verify"
    done: int  # bytes of the plan done
    total: int
    rate: float  # bytes per second, recent
    eta: float | None  # seconds, None when unknown
    wire: int = 0  # bytes on the data channel so far
    durable: int = 0  # bytes acknowledged as flushed on the target
    level: str = ""  # current compression level ("raw", "1", ...)
    # busy share per stage, both machines' (recovery.engine.clone.progress.STAGES): read, compress, link,
    # decompress, write
    stages: dict[str, float] = field(default_factory=dict)
    # the stage that sets the pace now (recovery.engine.clone.progress.limit), or "": read (the source disk),
    # compress (the sending machine's processors), link, decompress (the receiving machine's), write
    bottleneck: str = ""
    # of the disk stages' busy time (read, write), the share on a processor or waiting for one
    cpu: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Warning(Event):  # noqa: A001 - the event is called "warning" in the schema
    kind: ClassVar[str] = "warning"
    message: str


@dataclass(frozen=True)
class TableMoved(Event):
    """A target larger than its source: the GPT's backup now on the target's last sector."""

    kind: ClassVar[str] = "gpt_moved"
    target: str
    backup_lba: int  # the backup header's sector (the disk's last)
    last_usable_lba: int  # the end of the area partitions may use now
    free_bytes: int  # after the last partition, up to that end: room a partition can grow into


@dataclass(frozen=True)
class Failed(Event):
    kind: ClassVar[str] = "error"
    code: str
    message: str
    exit_code: int
    hint: str | None = None
    traceback: str | None = None  # an internal error (a bug): where it happened, for the report
    peer: str | None = None  # the other machine's name, when it happened there (it told us)


@dataclass(frozen=True)
class Summary(Event):
    kind: ClassVar[str] = "summary"
    role: str
    mode: str
    source: str
    target: str
    size: int
    bytes_read: int  # sender: bytes read from the source
    bytes_sent: int  # bytes on the data channel in this clone (after compression)
    bytes_written: int  # bytes the receiver wrote as data in this run (zeros excluded)
    zero_bytes: int  # bytes the receiver made as zeros (ZERO frames) in this run
    seconds: float  # the receiver's: from the start of its transfer to the verdict
    list_digest: str  # BLAKE3 over every frame's range and digest: equal on both sides
    image_digest: str | None  # exact mode: BLAKE3 of the whole device (== b3sum)
    verified: bool | None  # None: read-back skipped
    mismatches: list[list[int]] = field(default_factory=list)  # [offset, length]
    # used mode: the filesystem checks of the target, [{number, check, ok, message}]
    checks: list[dict[str, Any]] = field(default_factory=list)
    kernel_log: dict[str, int] | None = None  # counted kernel messages during the clone (recovery.engine.clone.health)
    resends: int = 0  # frames that arrived damaged and were sent again
    resumed: int = 0  # bytes the target held already (an interrupted clone resumed), not sent again
    unreadable: int = 0  # rescue: bytes of the plan the source could not read (filled on the target)
    unreadable_ranges: list[list[int]] = field(default_factory=list)  # [offset, length], at most 1024
    # [{partition, fstype, bytes, files, more (named but not listed), note}]: the sender's, told to the receiver
    files_hit: list[dict[str, Any]] = field(default_factory=list)
    mapfile: str | None = None  # rescue: the ddrescue mapfile of the source (sender)
    # image_digest is the source's whole-disk BLAKE3, read from the source in this run (a resumed clone
    # reads the part it skips too), and on the receiver the target read back gave the same
    source_digest: bool = False
    rescue: bool = False  # a rescue (a resume compared only a sample of what it skipped with the failing source)
    planned: int = 0  # bytes of the plan (what the clone covers: the used blocks, or the whole disk)
    unchanged: int = 0  # delta: bytes of the plan the target held already as the source has them (not sent)
    parent: str | None = None  # an increment: the earlier image (its file name) the new image builds on


@dataclass(frozen=True)
class Resent(Event):
    """A frame arrived damaged and is asked for (receiver) or sent (sender) again."""

    kind: ClassVar[str] = "resend"
    seq: int
    epoch: int
    reason: str = ""


@dataclass(frozen=True)
class Resumed(Event):
    """The target holds part of an interrupted clone of the same plan: only the rest is sent."""

    kind: ClassVar[str] = "resume"
    role: str
    seq: int  # the first frame sent in this run
    bytes: int  # bytes already on the target, not sent again
    total: int  # bytes of the plan
    since: str = ""  # when the interrupted clone started
    replaced: int = 0  # of the chunks on the target, how many differed from the source and are sent again


@dataclass(frozen=True)
class DeltaOffered(Event):
    """The target holds an earlier clone of this source (capability "delta"): chunks it holds as the
    source has them now are not sent."""

    kind: ClassVar[str] = "delta"
    role: str
    since: str  # when the earlier clone was made
    source: str  # what it was a copy of, as the receiver's record says
    trusted: bool  # the receiver's record was used (True) or the target's chunks hashed now (False)
    bytes: int  # bytes of the target offered (their digests), all chunks the sender may skip


EventSink = Callable[[Event], None]


def to_json(event: Event) -> str:
    body = {"event": event.kind, "time": round(time.time(), 3)}
    body.update(dataclasses.asdict(event))
    return json.dumps(body, separators=(",", ":"))


def ignore(event: Event) -> None:
    """An event sink that drops everything."""


def parse_line(line: str | bytes) -> dict[str, Any] | None:
    """One line of ``--json`` output read back: the object, with its ``event`` name (None when
    the line is not an event: a plain message, or broken JSON)."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or not isinstance(value.get("event"), str):
        return None
    return value


@dataclass(frozen=True)
class ImageInfo(Event):
    """What an image file holds (`recovery image info`)."""

    kind: ClassVar[str] = "image"
    path: str
    format: str  # the format's version, "1.0"
    tool: str  # the program that saved it
    created: str  # when (UTC, ISO 8601)
    mode: str  # used or exact
    size: int  # the disk's size
    sector_size: int
    chunk_size: int
    source: str  # the disk it was saved from, in words
    source_host: str
    parts: list[dict[str, Any]]  # [{number, start, size, fstype, method, bytes, blkid}]
    chunks: int
    data_bytes: int  # bytes of the disk held as data
    zero_bytes: int  # bytes of the disk held as zero chunks (nothing stored)
    stored_bytes: int  # bytes the chunks take in the file
    file_bytes: int  # the file's size
    encrypted: bool
    root: str  # BLAKE3 over the chunks' list (the clone's list digest)
    disk_digest: str | None  # BLAKE3 of the whole disk, when the save read all of it
    unreadable: int | None  # a rescued source: bytes it could not read (None: not a rescue)
    unreadable_ranges: list[list[int]] = field(default_factory=list)  # [offset, length] of those areas
    files_hit: list[dict[str, Any]] = field(default_factory=list)  # the files they hit, as the rescue said
    parent: str | None = None  # an increment: the image it builds on (a file name in its folder)
    chain: list[str] = field(default_factory=list)  # that image, its own parent ... (file names)
    parent_bytes: int = 0  # of data_bytes, those read from the parent


@dataclass(frozen=True)
class ImageExported(Event):
    """`recovery image export`: the image's disk written out in another format."""

    kind: ClassVar[str] = "image_export"
    path: str
    format: str  # raw, qcow2 or vhdx
    disk_bytes: int
    data_bytes: int  # of the disk, written (the rest are holes)
    file_bytes: int  # what the file takes on its disk
    bmap: str | None  # raw: the block map for `bmaptool copy`
    seconds: float


@dataclass(frozen=True)
class ImageChecked(Event):
    """`recovery image verify`: every chunk read, opened, decompressed and hashed."""

    kind: ClassVar[str] = "image_check"
    path: str
    chunks: int
    data_bytes: int
    zero_bytes: int
    stored_bytes: int
    root: str
    disk_digest: str | None  # computed now (--whole)
    recorded_disk_digest: str | None  # recorded when it was saved
    bad: list[list[int]]  # [offset, length] of each damaged chunk
    bad_where: list[str]  # where each lies: "partition 2 (ext4)", ...
    seconds: float
    files_hit: list[dict[str, Any]] = field(default_factory=list)  # as a rescue's: the files the damage holds
    files_note: str = ""  # why no file could be named ("run as root ...")


@dataclass(frozen=True)
class ImagePlaces(Event):
    """`recovery image places`: where this machine can save an image now, and the drives it could mount."""

    kind: ClassVar[str] = "image_places"
    folders: list[dict[str, Any]]  # [{path, free}]: mounted disk filesystems that take an image
    drives: list[dict[str, Any]]  # [{device, fstype, label, size, disk}]: external, not mounted
    mounted: str | None = None  # the folder --mount made


@dataclass(frozen=True)
class ImageMounted(Event):
    """`recovery image mount`: the image's disk and its filesystems, read-only, until it is unmounted."""

    kind: ClassVar[str] = "image_mount"
    path: str
    size: int  # the disk's
    directory: str
    disk: str  # the FUSE file that reads as the whole disk
    loop: str  # the read-only loop device over it
    parts: list[dict[str, Any]]  # [{number, device, fstype, mountpoint (null: not mounted), why}]


@dataclass(frozen=True)
class FitPlanned(Event):
    """The sender fits the source to a target of another size (``--fit``): the layout, before any change."""

    kind: ClassVar[str] = "fit_planned"
    fit: str
    source_size: int
    target_size: int
    parts: list[dict[str, object]]  # per partition: number, fstype, start, size, new_start, new_size, method,
    # smallest (bytes it can shrink to, or None), note (why it keeps its size)


@dataclass(frozen=True)
class Fitted(Event):
    """The fitted disk is ready on the copy-on-write view (the source unchanged)."""

    kind: ClassVar[str] = "fitted"
    overlay_bytes: int  # what the copy-on-write overlay holds: the blocks the resizing and the moves wrote
    moved_bytes: int  # the partitions that moved, their size
    seconds: float
    view: str = ""  # how the view was made: "dm-snapshot" or "qemu-storage-daemon"
