"""What the CLI and the TUI call: options in, events out, a summary back.

    summary = send_disk(connection, SendOptions(source="/dev/nvme0n1", code="4821-0937"), sink)
    summary = receive_disk(connection, ReceiveOptions(target="/dev/sdb", code="4821-0937"), sink)

Both pair first (the sender drives with the code shown on the receiver),
run the whole clone on the calling thread (pipelines in their own threads),
report through ``sink`` (see :mod:`recovery.events`), and raise a
:class:`~recovery.errors.RecoveryError` on failure. Setting ``cancel`` (a
``threading.Event``) stops either side cleanly and tells the peer.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from recovery.engine.clone.chunks import DEFAULT_CHUNK_SIZE
from recovery.engine.peer.control import DEFAULT_TIMEOUT
from recovery.protocol.messages import Identity

# What this version can do; a feature is used only when both hellos list it.
# "stages": the sender tells the receiver how busy its stages are; "activity": the driver says
# what its user does between clones.
CAPABILITIES = (
    "zstd",
    "aes-gcm",
    "zero-frames",
    "readback",
    "activity",
    "stages",
    "resend",  # a damaged frame is asked for again (resend message, REWIND frame)
    "resume",  # a clone continues from the receiver's journal (accept.resume, digests, start)
    "rescue",  # rescue mode: passes after the first (PASS frames), unreadable areas listed
    "rejoin",  # after a lost link, the same peer pairs again with the lost pairing's secret
    "keep-pairing",  # a failed clone ends the connection, not the pairing: the two pair again by its secret
    "replace",  # a pass of replacement frames outside rescue mode (start.replace): a resume's
    # skipped chunks that differ from the source are sent again
    "source-check",  # a checker that failed on the target is run on the source too
    "images",  # a clone saved into, or restored from, an image file in a folder of the peer (plan.image,
    # request.image; find_images answered by images)
    "delta",  # a target holding an earlier clone of the source: only the chunks that differ are sent
    "delta-repair",  # a delta's unchanged chunks found changed on the target are sent again (resend.repair)
    "delta-blocks",  # a delta's changed chunk goes as the digests of its 16 KiB blocks (a BLOCKS frame), and
    # only the blocks that differ on the target are sent, in repair rounds (accept.delta.blocks)
    "fit",  # the sender asks the target's size before it plans (measure, measured): --fit shrink|grow
    "fit-sizes",  # a request to fit a disk carries the partition sizes the driver's user chose (request.sizes)
    "image-passphrase",  # an image saved into, or restored from, a folder of the peer is encrypted: its
    # passphrase goes with it (plan.passphrase, request.passphrase), sealed like every message after pairing
)


def default_workers() -> int:
    """Hashing and compressing threads: one per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass
class SendOptions:
    source: str
    mode: str = "used"  # "used" or "exact"
    level: int | None = None  # None: auto; 0: raw; 1..19: zstd level
    chunk_size: int = DEFAULT_CHUNK_SIZE
    allow_mounted: bool = False
    verify: bool = True  # ask the receiver to read the target back
    target: Identity | None = None  # pin a target the user chose on the peer
    code: str | None = None  # the receiver's pairing code, as the user typed it
    encrypt: bool | None = None  # seal the payloads (AES-256-GCM); None: on every link but USB4STREAM
    timeout: float = DEFAULT_TIMEOUT
    workers: int = field(default_factory=default_workers)
    cancel: threading.Event = field(default_factory=threading.Event)
    # a failing source: copy what can be read, ddrescue's way (recovery.engine.rescue.passes)
    rescue: bool = False
    mapfile: str | None = None  # rescue: the ddrescue mapfile (None: next to the job logs)
    retries: int | None = None  # rescue: passes over the bad sectors after scraping (None: 0, 1 continuing a mapfile)
    rescue_time: float | None = None  # rescue: seconds for the passes after the first (None: no limit)
    fill: bytes = b"\0"  # rescue: what unreadable sectors become on the target
    rescan: bool = False  # resume although the source's partition tables changed (what differs is sent again)
    restart: bool = False  # ask the receiver to start over even if its target holds an interrupted clone
    log_dir: Path | None = None  # job logs and mapfiles (None: recovery.engine.joblog.default_dir())
    passphrase: bytes | None = field(default=None, repr=False)  # the source is an encrypted image: its passphrase
    image: str | None = None  # save the clone as an image file at this path of the receiver (capability "images")
    # an image saved on the receiver: encrypt it under this passphrase (capability "image-passphrase")
    image_passphrase: str | None = field(default=None, repr=False)
    image_only: bool = False  # the source must be an image file (a peer asked to restore one): never raw bytes
    delta: bool = True  # take the receiver's delta offer (False: --no-delta, the wizard's "overwrite it")
    fit: str = "keep"  # "keep" the source's layout, "shrink" it onto a smaller target, "grow" it onto a larger
    sizes: dict[int, int] = field(default_factory=dict)  # fit: partitions sized by the user (number: bytes)
    scratch: str | None = None  # fit: the folder for the copy-on-write overlay (None: recovery.engine.fit default)


@dataclass
class ReceiveOptions:
    target: str
    overwrite: bool = False  # the user agreed to overwrite existing data
    expect: Identity | None = None  # the target as it was when the user named it
    verify: bool = True  # read the target back (only this side decides; the plan cannot turn it off)
    fs_check: bool = True  # used mode: run each filesystem's checker on the target after the read-back
    code: str | None = None  # the pairing code to show (None: a random one)
    encrypt: bool | None = None  # take only sealed data; None: where the link crosses a network (as seen here)
    timeout: float = DEFAULT_TIMEOUT
    workers: int = field(default_factory=default_workers)
    cancel: threading.Event = field(default_factory=threading.Event)
    journal: bool = True  # keep a resume journal of what is durable on the target
    restart: bool = False  # ignore a journal found for the target: start from the beginning
    delta: bool = True  # offer a target's earlier clone of the same source (False: --no-delta)
    log_dir: Path | None = None  # job logs and resume journals (None: recovery.engine.joblog.default_dir())
    image: bool = False  # the target is an image file to create (recovery.diskimage), not a disk's bytes
    passphrase: bytes | None = field(default=None, repr=False)  # an image: encrypt it under this passphrase
    no_links: bool = False  # a path a peer chose: opened with no symbolic link anywhere on it
