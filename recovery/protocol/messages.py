"""Control-channel messages and their codec (pure: bytes in, messages out).

Theory of operation
-------------------
Each side opens the control channel with an 8-byte preamble (magic, major,
minor protocol version), then sends records, each a 4-byte big-endian
length and a body. Until the pairing succeeds a body is a UTF-8 JSON object
with a ``type`` field; after it, the JSON is sealed (see
:mod:`recovery.protocol.pake` and :mod:`recovery.protocol.state`). Message
types are the frozen dataclasses below; every field is checked on the way in
(see :mod:`recovery.protocol.schema`), unknown fields are ignored.

Compatibility rule: the major version must match exactly, and a side that
meets another major refuses with a message naming both (an older peer is
told to upgrade). Within a major, minor versions only add optional fields,
capabilities (listed in the hello; a feature is used only when both sides
list it) and message types. A message of a type this side does not know is
ignored when it says ``"optional": true`` and a protocol error otherwise;
every message type added after 2.0 says so (:attr:`Message.optional`).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from recovery.errors import RemoteProtocolError
from recovery.protocol.limits import CHUNK_ALIGN, MAX_CHUNK_SIZE, MAX_PASSPHRASE_CHARS, MAX_REPAIR
from recovery.protocol.records import RecordReader
from recovery.protocol.schema import SchemaError, bounded, from_json, to_json
from recovery.protocol.values import (
    FILES_HIT_ENTRIES,
)
from recovery.protocol.values import (
    HEX_DIGEST as HEX_DIGEST,
)
from recovery.protocol.values import (
    DiskInfo as DiskInfo,
)
from recovery.protocol.values import (
    FilesHit as FilesHit,
)
from recovery.protocol.values import (
    FsCheck as FsCheck,
)
from recovery.protocol.values import (  # re-exported: the messages carry them
    HostInfo as HostInfo,
)
from recovery.protocol.values import (
    Identity as Identity,
)
from recovery.protocol.values import (
    MapPart as MapPart,
)
from recovery.protocol.values import (
    MapSummary as MapSummary,
)
from recovery.protocol.values import (
    PartitionInfo as PartitionInfo,
)
from recovery.protocol.values import (
    Range as Range,
)
from recovery.protocol.values import (
    Unfinished as Unfinished,
)

CONTROL_MAGIC = b"U4RC"
PROTOCOL_VERSION = (2, 1)

# The preamble each side sends first.
PREAMBLE = struct.Struct(
    "!"
    "4s"  # magic, b"U4RC"
    "H"  # major protocol version
    "H"  # minor protocol version
)
# Then messages: a length, then that many bytes of UTF-8 JSON.
MESSAGE_LENGTH = struct.Struct("!I")
MAX_MESSAGE = 4 << 20
MAX_CLEAR_MESSAGE = 16 << 10  # before the pairing: hello, pake, confirm, errors

Mode = Literal["used", "exact"]


class VersionMismatch(RemoteProtocolError):
    """The peer speaks a different major protocol version."""


# --- messages --------------------------------------------------------------


class Message:
    type: ClassVar[str]
    optional: ClassVar[bool] = False  # encoded with "optional": true, so a peer without it skips it


Role = Literal["sender", "receiver", "agent", "wizard"]


@dataclass(frozen=True, slots=True)
class Hello(Message):
    """Sent in the clear, first: what this is and what it can do. Its ``host`` names the machine
    only (no boot or machine id: those go in :class:`Introduce`, no disks: :class:`Inventory`,
    both after the pairing)."""

    type: ClassVar[str] = "hello"
    host: HostInfo
    role: Role
    nonce: str = field(metadata=bounded(max_len=64))  # random hex, makes every transcript unique
    caps: tuple[str, ...] = field(default=(), metadata=bounded(max_len=64))


@dataclass(frozen=True, slots=True)
class Pake(Message):
    """One side's SPAKE2 message of pairing attempt ``attempt``; the driver's comes first."""

    type: ClassVar[str] = "pake"
    role: Literal["driver", "server"]
    attempt: int = field(metadata=bounded(lo=1, hi=1_000_000))
    msg: str = field(metadata=bounded(max_len=2 * 33))  # hex
    # Optional (capability "rejoin"): the driver's secret is the lost pairing's rejoin secret, not a code.
    rejoin: bool = False


@dataclass(frozen=True, slots=True)
class Confirm(Message):
    """Proof that this side has the attempt's key: the server's first, then the driver's."""

    type: ClassVar[str] = "confirm"
    attempt: int = field(metadata=bounded(lo=1, hi=1_000_000))
    mac: str = field(metadata=bounded(max_len=HEX_DIGEST))


@dataclass(frozen=True, slots=True)
class PairFailed(Message):
    """A pairing attempt ends without keys; the connection stays, unpaired."""

    type: ClassVar[str] = "pair_failed"
    attempt: int = field(metadata=bounded(lo=1, hi=1_000_000))
    reason: Literal["wrong_code", "locked", "stale", "conflict", "no_code"]
    message: str = field(metadata=bounded(max_len=512))
    # Optional (2.1), after a wrong code: the wrong codes the driver has left before the code shown
    # changes (or, for a code given with --code, before tries must wait), and whether the server shows
    # a new code now (the tries ran out). Words for the driver's screen; nothing depends on them.
    tries_left: int | None = field(default=None, metadata=bounded(lo=0, hi=1000))
    new_code: bool = False


@dataclass(frozen=True, slots=True)
class Introduce(Message):
    """Who this side is, in full (boot id, machine id): sealed, so only the paired peer learns it.
    Both sides send it first after the pairing."""

    type: ClassVar[str] = "introduce"
    host: HostInfo
    # Optional (2.1): chunk data sent to this side must be sealed (its link to the peer is one a network
    # can reach, or its user asked for it); it refuses a plan that does not seal the payloads.
    sealed: bool = False


@dataclass(frozen=True, slots=True)
class Inventory(Message):
    """The disks a serving side offers (sealed: only a paired driver sees them)."""

    type: ClassVar[str] = "inventory"
    disks: tuple[DiskInfo, ...] = field(default=(), metadata=bounded(max_len=256))


@dataclass(frozen=True, slots=True)
class Bye(Message):
    """This side ends the session on purpose; the peer answers with its own bye, then both close."""

    type: ClassVar[str] = "bye"
    reason: str = field(default="", metadata=bounded(max_len=512))


MAX_REVIEW_LINES = 16
PASSPHRASE = bounded(min_len=1, max_len=MAX_PASSPHRASE_CHARS)  # an image's (an older one's may be short)


@dataclass(frozen=True, slots=True)
class ReviewLine:
    """One line of a review: ``DESTROYS`` and what it says."""

    label: str = field(metadata=bounded(max_len=16))
    text: str = field(metadata=bounded(max_len=600))


@dataclass(frozen=True, slots=True)
class Activity(Message):
    """The driver says what its user is doing between clones ("choosing the disk to copy"), so the
    serving screen keeps in step. Optional: a peer without the ``activity`` capability ignores it."""

    type: ClassVar[str] = "activity"
    what: str = field(metadata=bounded(max_len=200))  # in plain words, shown as text
    step: int = field(default=0, metadata=bounded(lo=0, hi=99))  # the driver's wizard step (0: none)
    steps: int = field(default=0, metadata=bounded(lo=0, hi=99))  # of how many
    # Optional (2.1): the review the driver's user is asked to confirm, so the serving screen shows what
    # will happen before it does. Shown as text only; the serving side decides nothing by it.
    review: tuple[ReviewLine, ...] = field(default=(), metadata=bounded(max_len=MAX_REVIEW_LINES))
    optional: ClassVar[bool] = True


MAX_SIZED_PARTS = 128  # a GPT's usual entries: more partitions than a request sizes


@dataclass(frozen=True, slots=True)
class PartSize:
    """A partition the driver's user sized (capability "fit-sizes"): its number, its size in bytes."""

    number: int = field(metadata=bounded(lo=1, hi=1 << 16))
    size: int = field(metadata=bounded(lo=1))


@dataclass(frozen=True, slots=True)
class Request(Message):
    """A controlling side asks the peer to send one of its disks."""

    type: ClassVar[str] = "request"
    source: str  # path of a disk on the peer
    mode: Mode
    level: str = field(metadata=bounded(max_len=8))  # "auto" or a zstd level
    source_identity: Identity | None = None
    rescue: bool = False  # optional: send it in rescue mode (capability "rescue")
    # Optional (2.1, capability "images"): ``source`` is this image file in a folder the peer allows;
    # the peer restores it (sends the disk it holds).
    image: bool = False
    # Optional (2.1, capability "fit"): fit the source to ``target`` (the driver's disk it is sent onto).
    fit: Literal["keep", "shrink", "grow"] = "keep"
    target: Identity | None = None
    # Optional (2.1, capability "fit-sizes", only with a fit): partitions sized by the user, each once.
    sizes: tuple[PartSize, ...] = field(default=(), metadata=bounded(max_len=MAX_SIZED_PARTS))
    # Optional (2.1, capability "image-passphrase"): the passphrase of the encrypted image ``source``.
    # Only ever sent sealed (after the pairing); never shown, logged or kept.
    passphrase: str | None = field(default=None, repr=False, metadata=PASSPHRASE)


@dataclass(frozen=True, slots=True)
class Plan(Message):
    type: ClassVar[str] = "plan"
    session: str = field(metadata=bounded(max_len=64))
    source: Identity
    size: int  # bytes the target must hold
    mode: Mode
    chunk_size: int = field(metadata=bounded(lo=CHUNK_ALIGN, hi=MAX_CHUNK_SIZE))
    codecs: tuple[str, ...] = field(metadata=bounded(max_len=8))
    map: MapSummary
    frames: int = field(metadata=bounded(hi=1 << 40))  # chunk frames before END
    encrypted: bool = True  # payloads sealed with the clone's payload key
    verify: bool = True  # the driver's wish, for its own records: a receiver reads back unless its own --no-verify
    target: Identity | None = None  # set when the sender's user chose the target
    # Optional: rescue mode (capability "rescue"): PASS frames may follow the
    # first pass, each pass replacing frames whose areas more reads recovered.
    rescue: bool = False
    # Optional: on a resume, the sender compares every chunk the target holds (capability "resume").
    rescan: bool = False
    # Optional: the driving user chose to start over: the receiver ignores a journal of the target.
    restart: bool = False
    # Optional (2.1, capability "images"): save the clone as a new image file at this path on the
    # receiver, in a folder it allows (instead of a pinned ``target``).
    image: str | None = field(default=None, metadata=bounded(max_len=4096))
    # Optional (2.1, capability "delta"): the sender takes a delta offer (the driving user did not refuse
    # it): the receiver may offer what its target holds of an earlier clone of this source.
    delta: bool = False
    # Optional (2.1, capability "image-passphrase", only with ``image``): encrypt the new image under
    # this passphrase. Only ever sent sealed (after the pairing); never shown, logged or kept.
    passphrase: str | None = field(default=None, repr=False, metadata=PASSPHRASE)


@dataclass(frozen=True, slots=True)
class ResumeOffer:
    """What the target already holds of an interrupted clone of the same plan (capability "resume")."""

    seq: int = field(metadata=bounded(hi=1 << 40))  # the first frame that is not durable on the target
    bytes: int  # bytes the frames before it cover
    since: str = field(default="", metadata=bounded(max_len=64))  # when that clone started, for people
    complete: bool = False  # it had finished (with unreadable areas that a rescue run may patch)
    rescued: bool = False  # a rescue wrote some of it: frames may hold filled areas the sender's mapfile lists
    # Optional (2.1): where the receiver keeps the journal, for the words a sender prints after a lost link.
    journal: str | None = field(default=None, metadata=bounded(max_len=4096))


@dataclass(frozen=True, slots=True)
class DeltaOffer:
    """Capability "delta": the target holds an earlier clone of this source; ``digests`` pages with
    ``ranges`` follow, ``frames`` digests covering ``bytes``."""

    frames: int = field(metadata=bounded(hi=1 << 40))
    bytes: int
    since: str = field(default="", metadata=bounded(max_len=64))  # when that clone was made, for people
    source_desc: str = field(default="", metadata=bounded(max_len=255))  # what it was a copy of
    trusted: bool = False  # from the receiver's record (True) or hashed from the target now (False)
    # 2.1, capability "delta-blocks": the receiver takes BLOCKS frames for the chunks it offered that changed
    blocks: bool = False


@dataclass(frozen=True, slots=True)
class Accept(Message):
    type: ClassVar[str] = "accept"
    target: Identity
    # Optional: the target holds the first ``resume.seq`` frames already; the
    # receiver then sends their digests (``digests``) and waits for ``start``.
    resume: ResumeOffer | None = None
    # Optional (2.1, capability "delta", never with ``resume``): the digests of an earlier clone follow.
    delta: DeltaOffer | None = None


@dataclass(frozen=True, slots=True)
class Refuse(Message):
    type: ClassVar[str] = "refuse"
    code: str = field(metadata=bounded(max_len=32))
    message: str = field(metadata=bounded(max_len=1024))
    hint: str | None = field(default=None, metadata=bounded(max_len=1024))  # optional (2.1): what to do


@dataclass(frozen=True, slots=True)
class Ack(Message):
    """Frames up to ``seq`` (exclusive) are durable on the target."""

    type: ClassVar[str] = "ack"
    seq: int
    bytes: int
    # Optional (2.1): the receiver's resume journal holds these frames, at this path on the receiver
    # (None: no journal, or it could not be written): after a lost link the same commands resume.
    journal: str | None = field(default=None, metadata=bounded(max_len=4096))


DIGEST_PAGE = 16384  # digests per ``digests`` message
HEX_RANGE = 24  # a delta digest's range in hex: offset (8 bytes) and length (4)
MAX_CHECKED = 256  # filesystem checks in one message (partitions of a plan, at most 128, once or twice)


@dataclass(frozen=True, slots=True)
class Digests(Message):
    """Capability "resume": the BLAKE3 digests of frames ``first``.. as the target holds them (hex, concatenated)."""

    type: ClassVar[str] = "digests"
    optional: ClassVar[bool] = True
    first: int = field(metadata=bounded(hi=1 << 40))
    digests: str = field(metadata=bounded(max_len=HEX_DIGEST * DIGEST_PAGE))
    # Optional (2.1, capability "delta"): where each digest lies, hex, 24 characters each (offset: 8
    # bytes, length: 4, big-endian); a delta offer's pages carry it, a resume's do not.
    ranges: str | None = field(default=None, metadata=bounded(max_len=HEX_RANGE * DIGEST_PAGE))


@dataclass(frozen=True, slots=True)
class Start(Message):
    """Capability "resume": the sender's frames begin at ``seq`` (at most the offer's)."""

    type: ClassVar[str] = "start"
    optional: ClassVar[bool] = True
    seq: int = field(metadata=bounded(hi=1 << 40))
    # Optional (2.1, capability "replace"): how many of the frames before ``seq`` differ from the
    # source; they follow the first pass as replacements (a PASS frame, then one frame each).
    replace: int = field(default=0, metadata=bounded(hi=1 << 40))


@dataclass(frozen=True, slots=True)
class CheckSource(Message):
    """Capability "source-check" (2.1): these checkers failed on the target; run them on the source."""

    type: ClassVar[str] = "check_source"
    optional: ClassVar[bool] = True
    checks: tuple[FsCheck, ...] = field(default=(), metadata=bounded(max_len=MAX_CHECKED))


@dataclass(frozen=True, slots=True)
class SourceChecked(Message):
    """Capability "source-check" (2.1): how those checkers went on the source's own partitions."""

    type: ClassVar[str] = "source_checked"
    optional: ClassVar[bool] = True
    checks: tuple[FsCheck, ...] = field(default=(), metadata=bounded(max_len=MAX_CHECKED))


@dataclass(frozen=True, slots=True)
class Resend(Message):
    """Capability "resend": frame ``seq`` failed its check; send again from it, under ``epoch``'s keys.
    With ``repair`` (2.1, capability "delta-repair"; ``seq`` is then the END frame's): a delta's chunks,
    sent as SAME, whose bytes on the target differ from the source; they come again in a pass before
    a new END; also, with capability "delta-blocks", blocks of chunks sent as BLOCKS that differ on the
    target. A repair comes in rounds: at each END, the next one."""

    type: ClassVar[str] = "resend"
    optional: ClassVar[bool] = True
    seq: int = field(metadata=bounded(hi=1 << 40))
    epoch: int = field(metadata=bounded(lo=1, hi=(1 << 32) - 1))
    reason: str = field(default="", metadata=bounded(max_len=512))
    repair: tuple[Range, ...] = field(default=(), metadata=bounded(max_len=MAX_REPAIR))


@dataclass(frozen=True, slots=True)
class Progress(Message):
    """How far a phase is; during the transfer each side adds how busy its
    stages are (shares of the last half second): the receiver's feed the
    sender's compression-level controller, and both sides name the stage
    that limits the clone from all of them."""

    type: ClassVar[str] = "progress"
    phase: str = field(metadata=bounded(max_len=32))
    done: int
    total: int
    # receiver: its thread inside recv; sender (optional): its thread blocked in send
    link_busy: float = field(default=0.0, metadata=bounded(hi=1.0))
    # receiver: decompress + verify threads; sender (optional): the compressing workers
    work_busy: float = field(default=0.0, metadata=bounded(hi=1.0))
    write_busy: float = field(default=0.0, metadata=bounded(hi=1.0))  # receiver: writing thread
    read_busy: float = field(default=0.0, metadata=bounded(hi=1.0))  # optional, sender: reading the source
    # Optional (2.1): of the reading (sender) or writing (receiver) thread's busy time, the share on a
    # processor or waiting for one: a busy disk stage that is mostly that is its machine's processors.
    read_cpu: float = field(default=0.0, metadata=bounded(hi=1.0))
    write_cpu: float = field(default=0.0, metadata=bounded(hi=1.0))
    # Optional (2.1): how many of this side's threads waited for a processor, on average (at most 1).
    cpu_wait: float = field(default=0.0, metadata=bounded(hi=1.0))


@dataclass(frozen=True, slots=True)
class Done(Message):
    """The sender has sent every frame (the END frame is on the data channel)."""

    type: ClassVar[str] = "done"
    frames: int
    bytes: int
    list_digest: str = field(metadata=bounded(max_len=HEX_DIGEST))
    source_digest: str | None = field(default=None, metadata=bounded(max_len=HEX_DIGEST))
    # Optional (capability "resend"): the stream this closes; a done of an older epoch is stale.
    epoch: int = field(default=0, metadata=bounded(hi=(1 << 32) - 1))
    # Optional (rescue): bytes of the plan the source could not read (filled on the target), and where.
    unreadable: int = 0
    unreadable_ranges: tuple[Range, ...] = field(default=(), metadata=bounded(max_len=1024))
    # Optional (2.1, rescue): the files those areas hit, so the receiver's summary names them too.
    files_hit: tuple[FilesHit, ...] = field(default=(), metadata=bounded(max_len=FILES_HIT_ENTRIES))


@dataclass(frozen=True, slots=True)
class Summary(Message):
    type: ClassVar[str] = "summary"
    frames: int
    bytes_written: int
    list_digest: str = field(metadata=bounded(max_len=HEX_DIGEST))
    target_digest: str | None = field(default=None, metadata=bounded(max_len=HEX_DIGEST))
    verified: bool | None = None  # None: read-back was skipped
    mismatches: tuple[Range, ...] = field(default=(), metadata=bounded(max_len=1024))
    seconds: float = 0.0
    checks: tuple[FsCheck, ...] = field(default=(), metadata=bounded(max_len=512))  # optional
    resends: int = 0  # optional: frames asked for again because they arrived damaged
    # Optional (2.1): an image file that failed its checks, kept for a look under this name.
    kept_as: str | None = field(default=None, metadata=bounded(max_len=4096))
    # Optional (2.1): bytes of ZERO frames the target made without writing them (absent: not said).
    zero_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class Error(Message):
    type: ClassVar[str] = "error"
    code: str = field(metadata=bounded(max_len=32))
    message: str = field(metadata=bounded(max_len=1024))
    hint: str | None = field(default=None, metadata=bounded(max_len=1024))  # optional (2.1): what to do


@dataclass(frozen=True, slots=True)
class Cancel(Message):
    type: ClassVar[str] = "cancel"
    reason: str = field(metadata=bounded(max_len=1024))
    # Optional (2.1, capability "keep-pairing"): the sender's user quit or ended the pairing, so the
    # two do not pair again by the pairing's secret (absent: only the clone stops).
    ends_pairing: bool = False


MAX_IMAGES = 64  # image files one ``images`` message describes
MAX_PLACES = 32  # folders one ``images`` message suggests


@dataclass(frozen=True, slots=True)
class ImageEntry:
    """One image file of a folder, as its header and manifest say (for people: shown as text)."""

    name: str = field(metadata=bounded(max_len=255))  # the file's name in the folder
    file_bytes: int  # the file's size
    size: int = 0  # bytes of the disk it holds (0: unknown)
    sector_size: int = field(default=0, metadata=bounded(hi=1 << 16))
    source: str = field(default="", metadata=bounded(max_len=600))  # the disk it was saved from, in words
    source_host: str = field(default="", metadata=bounded(max_len=255))
    created: str = field(default="", metadata=bounded(max_len=40))
    mode: Literal["used", "exact"] = "used"
    encrypted: bool = False  # its manifest is sealed: only its passphrase tells what it holds
    problem: str = field(default="", metadata=bounded(max_len=512))  # why it cannot be restored (empty: it can)


@dataclass(frozen=True, slots=True)
class FindImages(Message):
    """Capability "images" (2.1): the driver asks what a folder of the peer holds (``""``: only where
    the peer allows images)."""

    type: ClassVar[str] = "find_images"
    optional: ClassVar[bool] = True
    folder: str = field(default="", metadata=bounded(max_len=4096))


@dataclass(frozen=True, slots=True)
class Images(Message):
    """Capability "images" (2.1): the answer to ``find_images``: the folder as the peer checked it,
    the image files in it, the folders it suggests, the room there, or why the folder is refused."""

    type: ClassVar[str] = "images"
    optional: ClassVar[bool] = True
    folder: str = field(default="", metadata=bounded(max_len=4096))
    images: tuple[ImageEntry, ...] = field(default=(), metadata=bounded(max_len=MAX_IMAGES))
    places: tuple[str, ...] = field(default=(), metadata=bounded(max_len=MAX_PLACES))
    free: int | None = None  # bytes free on the folder's filesystem
    more: int = 0  # image files beyond those listed
    refused: str = field(default="", metadata=bounded(max_len=1024))  # why the folder cannot be used


@dataclass(frozen=True, slots=True)
class Measure(Message):
    """Capability "fit" (2.1): before it plans a clone fitted to the target (``--fit shrink|grow``), a sender
    that drives and was not told the target asks what it is (a headless receiver's own)."""

    type: ClassVar[str] = "measure"
    optional: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Measured(Message):
    """Capability "fit" (2.1): the answer to ``measure``: the target as the receiver opened it (nothing is
    written), or why it cannot say (the clone is then refused as any plan would be)."""

    type: ClassVar[str] = "measured"
    optional: ClassVar[bool] = True
    target: Identity | None = None
    refused: str = field(default="", metadata=bounded(max_len=1024))


@dataclass(frozen=True, slots=True)
class Ping(Message):
    type: ClassVar[str] = "ping"


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.type: cls
    for cls in (
        Hello,
        Pake,
        Confirm,
        PairFailed,
        Introduce,
        Inventory,
        Request,
        Plan,
        Accept,
        Refuse,
        Ack,
        Progress,
        Done,
        Summary,
        Error,
        Cancel,
        Ping,
        Bye,
        Activity,
        Digests,
        Start,
        Resend,
        CheckSource,
        SourceChecked,
        FindImages,
        Images,
        Measure,
        Measured,
    )
}
# May cross before the pairing, in the clear.
CLEAR_TYPES = frozenset({"hello", "pake", "confirm", "pair_failed", "error", "cancel", "ping"})


# --- codec -----------------------------------------------------------------


def encode_preamble(version: tuple[int, int] = PROTOCOL_VERSION) -> bytes:
    return PREAMBLE.pack(CONTROL_MAGIC, *version)


def decode_preamble(data: bytes) -> tuple[int, int]:
    """The peer's protocol version; refuses a foreign stream or another major."""
    magic, major, minor = PREAMBLE.unpack(data)
    if magic != CONTROL_MAGIC:
        raise RemoteProtocolError("the peer is not usb4-recovery (unexpected bytes on the control channel)")
    if major != PROTOCOL_VERSION[0]:
        ours = f"{PROTOCOL_VERSION[0]}.{PROTOCOL_VERSION[1]}"
        older = major < PROTOCOL_VERSION[0]
        raise VersionMismatch(
            f"the peer speaks protocol {major}.{minor}, this side speaks {ours}"
            + (
                ": the other machine runs an older usb4-recovery"
                if older
                else ": the other machine runs a newer usb4-recovery"
            ),
            hint=("upgrade usb4-recovery on the other machine" if older else "upgrade usb4-recovery on this machine"),
        )
    return major, minor


def encode_body(msg: Message) -> bytes:
    """A message's JSON body (without the length prefix)."""
    head: dict[str, object] = {"type": msg.type, "optional": True} if msg.optional else {"type": msg.type}
    body = json.dumps({**head, **to_json(msg)}, separators=(",", ":")).encode()
    if len(body) > MAX_MESSAGE:
        raise ValueError(f"{msg.type} message of {len(body)} bytes is too large")
    return body


def frame_record(body: bytes) -> bytes:
    return MESSAGE_LENGTH.pack(len(body)) + body


def encode_message(msg: Message) -> bytes:
    return frame_record(encode_body(msg))


def decode_body(body: bytes) -> Message | None:
    """One message from its JSON body; None for an unknown type marked optional."""
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, RecursionError, ValueError):  # ValueError: JSON syntax, 4300+ digit numbers
        raise SchemaError("control message is not valid UTF-8 JSON") from None
    if not isinstance(value, dict):
        raise SchemaError("control message is not a JSON object")
    kind = value.get("type")
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        if value.get("optional") is True:
            return None  # a newer peer's extra; the compatibility rule says to ignore it
        raise SchemaError(f"unknown control message type {str(kind)[:40]!r}")
    return from_json(cls, value)  # type: ignore[no-any-return]


class ControlDecoder:
    """Sans-I/O: feed bytes from the control channel, take record bodies out.

    ``limit`` caps a record before it is buffered (the caller lowers it
    while the peer is not yet paired).
    """

    def __init__(self) -> None:
        self._records = RecordReader(MESSAGE_LENGTH, MAX_MESSAGE, SchemaError, "control message")
        self.peer_version: tuple[int, int] | None = None

    @property
    def limit(self) -> int:
        return self._records.limit

    @limit.setter
    def limit(self, value: int) -> None:
        self._records.limit = value

    def receive_data(self, data: bytes) -> None:
        self._records.receive_data(data)

    def next_record(self) -> bytes | None:
        """The next record's body, or None when more bytes are needed."""
        if self.peer_version is None:
            preamble = self._records.take(PREAMBLE.size)
            if preamble is None:
                return None
            self.peer_version = decode_preamble(preamble)
        record = self._records.next_record()
        return None if record is None else record[1]

    def next_message(self) -> Message | None:
        """The next clear message (unknown optional ones skipped), or None when more bytes are needed."""
        while (body := self.next_record()) is not None:
            msg = decode_body(body)
            if msg is not None:
                return msg
        return None

    @property
    def buffered(self) -> int:
        return self._records.buffered
