"""`recovery image`: save a disk to an image file, restore one, check it, say what it holds."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import stat
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from recovery import events
from recovery.cli.common import INTERRUPTS, add_fit, add_json, add_log_dir, add_workers, fit_sizes, job_log
from recovery.cli.passphrase import add_passphrase, passphrase
from recovery.diskimage.export import FORMATS, export_image
from recovery.diskimage.info import describe_image, info_lines
from recovery.diskimage.reader import ImageReader, image_header
from recovery.diskimage.verify import check_image
from recovery.disks import inventory, safety
from recovery.disks.identity import identify
from recovery.engine import imagedir, imagemount
from recovery.engine.api import ReceiveOptions, SendOptions
from recovery.engine.clone import increment
from recovery.engine.clone.progress import RateMeter
from recovery.engine.imagefiles import files_in_damaged
from recovery.engine.local import clone_locally
from recovery.errors import RefusedError, UsageError, VerificationError
from recovery.units import human_size, parse_size


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "image",
        help="save a disk to an image file, restore it, check it, see what it holds",
        description="Image files of whole disks: compressed, each chunk checkable, readable at any offset "
        "(docs/image-format.md). `recovery receive --image` saves one from another machine.",
    )
    commands = p.add_subparsers(dest="image_command", metavar="ACTION", required=True, parser_class=type(p))

    save = commands.add_parser("save", help="save a disk of this machine to an image file")
    save.add_argument("--source", required=True, metavar="DISK", help="the disk or partition to save")
    save.add_argument("--output", dest="image", required=True, metavar="PATH", help="the image file to create")
    save.add_argument(
        "--mode",
        choices=("used", "exact"),
        default="used",
        help="used: the partition tables and the blocks the filesystems use (default); exact: every block",
    )
    save.add_argument("--chunk-size", default="4M", metavar="SIZE", help="the image's chunk size (default 4M)")
    save.add_argument("--allow-mounted", action="store_true", help="save even if the disk is mounted read-write")
    save.add_argument("--yes", action="store_true", help="replace an existing file at PATH")
    save.add_argument(
        "--no-delta",
        action="store_true",
        help="save a full image even when the folder holds an earlier image of this disk (default: an "
        "increment that stores only the chunks that changed)",
    )
    add_passphrase(save, new=True)
    _common(save)
    save.set_defaults(run=run_save)

    restore = commands.add_parser("restore", help="write an image onto a disk of this machine")
    restore.add_argument("image", metavar="IMAGE")
    restore.add_argument("--target", required=True, metavar="DISK", help="the disk to overwrite")
    restore.add_argument("--yes", action="store_true", help="overwrite a disk that holds data, without asking")
    restore.add_argument("--no-verify", action="store_true", help="skip reading the disk back after the copy")
    restore.add_argument("--no-fs-check", action="store_true", help="skip the filesystem checks of the disk")
    add_fit(restore, "the image")
    add_passphrase(restore, new=False)
    _common(restore)
    restore.set_defaults(run=run_restore)

    verify = commands.add_parser("verify", help="check every chunk of an image and its digests")
    verify.add_argument("image", metavar="IMAGE")
    verify.add_argument(
        "--whole", action="store_true", help="also compute the disk's whole BLAKE3 (what `b3sum` of the disk gives)"
    )
    add_passphrase(verify, new=False)
    add_workers(verify)
    add_json(verify)
    verify.set_defaults(run=run_verify)

    export = commands.add_parser(
        "export", help="write an image's disk as a sparse raw file (with a bmaptool map), qcow2 or VHDX"
    )
    export.add_argument("image", metavar="IMAGE")
    export.add_argument("--output", dest="output_path", required=True, metavar="PATH", help="the file to create")
    export.add_argument(
        "--format",
        choices=FORMATS,
        default="raw",
        help="raw: a sparse file, and PATH.bmap for `bmaptool copy` (default); qcow2: for QEMU and libvirt; "
        "vhdx: for Hyper-V and Windows",
    )
    export.add_argument("--yes", action="store_true", help="replace an existing file at PATH")
    add_passphrase(export, new=False)
    add_workers(export)
    add_json(export)
    export.set_defaults(run=run_export)

    info = commands.add_parser("info", help="what an image holds: its disk, partitions, sizes, digests")
    info.add_argument("image", metavar="IMAGE")
    add_passphrase(info, new=False)
    add_json(info)
    info.set_defaults(run=run_info)

    mount = commands.add_parser(
        "mount", help="look inside an image without restoring it: its disk and filesystems, read-only"
    )
    mount.add_argument("image", metavar="IMAGE")
    mount.add_argument("directory", metavar="DIR", help="an empty directory: DIR/disk, DIR/p1, DIR/p2 ...")
    add_passphrase(mount, new=False)
    add_json(mount)
    mount.set_defaults(run=run_mount)

    places = commands.add_parser(
        "places", help="where an image can be saved on this machine, and external drives to mount for it"
    )
    places.add_argument(
        "--mount", metavar="DEVICE", help=f"mount this external drive's partition read-write under {imagedir.MEDIA}"
    )
    add_json(places)
    places.set_defaults(run=run_places)

    unmount = commands.add_parser("unmount", help="take down what `recovery image mount` put under DIR")
    unmount.add_argument("directory", metavar="DIR")
    add_json(unmount)
    unmount.set_defaults(run=run_unmount)


def _common(p: argparse.ArgumentParser) -> None:
    add_log_dir(p, "each save's or restore's JSON log")
    add_workers(p)
    add_json(p)


def _open(args: argparse.Namespace) -> ImageReader:
    """The image, its passphrase asked only if it is encrypted."""
    secret = passphrase(args, new=False, needed=image_header(args.image).encrypted)
    return ImageReader(args.image, secret)


def run_save(args: argparse.Namespace) -> int:
    safety.check_target_path(args.image, overwrite=args.yes, image=True)
    send = SendOptions(
        source=args.source,
        mode=args.mode,
        chunk_size=parse_size(args.chunk_size),
        allow_mounted=args.allow_mounted,
        delta=not args.no_delta,
    )
    receive = ReceiveOptions(
        target=args.image,
        image=True,
        overwrite=args.yes,
        delta=not args.no_delta,
        passphrase=passphrase(args, new=True),
        log_dir=Path(args.log_dir) if args.log_dir else None,
    )
    return _clone(args, send, receive)


def run_restore(args: argparse.Namespace) -> int:
    _open(args).close()  # a damaged image or a wrong passphrase is refused before the disk is touched
    secret = passphrase(args, new=False, needed=image_header(args.image).encrypted)
    safety.check_target_path(args.target, overwrite=args.yes)
    try:
        expect = identify(args.target)
    except OSError as e:
        raise RefusedError(f"cannot inspect {args.target}: {e.strerror}") from None
    send = SendOptions(
        source=args.image, passphrase=secret, fit=args.fit, sizes=fit_sizes(args.size), scratch=args.scratch
    )
    receive = ReceiveOptions(
        target=args.target,
        overwrite=args.yes,
        expect=expect,
        verify=not args.no_verify,
        fs_check=not args.no_fs_check,
        log_dir=Path(args.log_dir) if args.log_dir else None,
    )
    return _clone(args, send, receive)


def _clone(args: argparse.Namespace, send: SendOptions, receive: ReceiveOptions) -> int:
    if args.workers:
        send.workers = receive.workers = max(1, args.workers)
    with (
        INTERRUPTS.session() as cancel,
        job_log(args.log_dir, "receiver", args.output) as sink,
        job_log(args.log_dir, "sender", _warnings_only(args.output)) as sender_sink,
    ):
        send.cancel = cancel
        clone_locally(send, receive, sink, sender_sink)
    return 0


def _warnings_only(out: events.EventSink) -> events.EventSink:
    """The sending side's events: only its warnings and its fitting reach the user (the receiving side tells
    the rest)."""

    def sink(event: events.Event) -> None:
        if isinstance(event, (events.Warning, events.FitPlanned, events.Fitted)):
            out(event)

    return sink


def _progress(out: events.EventSink, phase: str, total: int) -> Callable[[int, int], None]:
    """A reader's progress callback: ``progress`` events with rate and time left."""
    rate = RateMeter(total)

    def progress(done: int, total: int) -> None:
        rate.update(done)
        out(events.Progress(phase=phase, done=done, total=total, rate=rate.rate, eta=rate.eta(done)))

    return progress


def run_verify(args: argparse.Namespace) -> int:
    out = args.output
    with _open(args) as image:
        out(events.Phase("verify", f"checking every chunk of {args.image}"))

        progress = _progress(out, "verify", image.size)
        with INTERRUPTS.session() as cancel:
            checked = check_image(
                image, whole=args.whole, on_progress=progress, should_stop=cancel.is_set, threads=args.workers
            )
        where = describe_image(image)
        damaged = [(b.entry.offset, b.entry.length) for b in checked.bad]
        if damaged:
            out(events.Phase("verify", "finding which files the damaged chunks hold"))
        hits, files_note = files_in_damaged(image, damaged)
        out(
            events.ImageChecked(
                path=args.image,
                chunks=checked.totals.chunks,
                data_bytes=checked.totals.data_bytes,
                zero_bytes=checked.totals.zero_bytes,
                stored_bytes=checked.totals.stored_bytes,
                root=image.root.hex(),
                disk_digest=checked.disk_digest,
                recorded_disk_digest=image.manifest.get("disk_digest"),
                bad=[[b.entry.offset, b.entry.length] for b in checked.bad],
                bad_where=[where.partition_of(b.entry.offset) for b in checked.bad],
                seconds=round(checked.seconds, 3),
                files_hit=hits,
                files_note=files_note,
            )
        )
    if checked.bad:
        first = checked.bad[0]
        named = [name for hit in hits for name in hit["files"]]
        holds = f"; they hold {', '.join(named[:3])}" + (" and more" if len(named) > 3 else "") if named else ""
        raise VerificationError(
            f"{args.image}: {len(checked.bad)} chunk(s) are damaged, the first at byte {first.entry.offset} "
            f"({human_size(first.entry.offset)}, {where.partition_of(first.entry.offset)}){holds}",
            ranges=damaged,
            hint="a copy of the image may be intact; the rest of this one can still be restored",
        )
    recorded = image.manifest.get("disk_digest")
    if args.whole and recorded and checked.disk_digest != recorded:
        raise VerificationError(f"{args.image}: the disk's BLAKE3 is not the one recorded when it was saved")
    return 0


def run_export(args: argparse.Namespace) -> int:
    out = args.output
    _check_new_file(args.output_path, args.yes)
    with _open(args) as image:
        out(events.Phase("export", f"writing the disk of {args.image} to {args.output_path} ({args.format})"))
        progress = _progress(out, "export", image.size)
        serving = imagemount.served_disk(image) if args.format != "raw" else nullcontext(None)
        with INTERRUPTS.session() as cancel, serving as disk:
            made = export_image(
                image,
                args.output_path,
                args.format,
                threads=args.workers or os.cpu_count() or 2,
                disk=disk,
                on_progress=progress,
                should_stop=cancel.is_set,
            )
    out(
        events.ImageExported(
            path=made.path,
            format=made.fmt,
            disk_bytes=made.disk_bytes,
            data_bytes=made.written,
            file_bytes=made.file_bytes,
            bmap=made.bmap,
            seconds=round(made.seconds, 3),
        )
    )
    return 0


def _check_new_file(path: str, replace: bool) -> None:
    """``path`` may be made: a new file, or (with ``replace``) an existing regular file."""
    safety.refuse_planted_link(path)
    if not os.path.lexists(path):
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise RefusedError(f"cannot create {path}: {parent} is not a directory")
        return
    if not stat.S_ISREG(os.lstat(path).st_mode):
        raise RefusedError(f"{path} is not a file: an export is written into a file of its own")
    if not replace:
        raise RefusedError(f"{path} exists; refusing to replace it without --yes", hint="give a new file name")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:  # swapped since it was looked at
        raise RefusedError(f"cannot open {path} to replace it: {e.strerror}") from None
    try:
        increment.refuse_replacing_a_parent(path, fd, "give a new file name")
    finally:
        os.close(fd)


def run_info(args: argparse.Namespace) -> int:
    with _open(args) as image:
        described = describe_image(image, file_bytes=os.fstat(image.fd).st_size)
    if args.json:
        args.output(described.event(args.image))
    else:
        for line in info_lines(described, args.image):
            print(line)
    return 0


def run_mount(args: argparse.Namespace) -> int:
    imagemount.check_directory(args.directory)  # before the passphrase is asked
    signal.signal(signal.SIGHUP, INTERRUPTS.handler)  # a closed terminal unmounts too (not libfuse's handler)
    with _open(args) as image, INTERRUPTS.session() as stop:
        imagemount.mount_image(image, args.directory, args.output, stop)
    return 0


def run_places(args: argparse.Namespace) -> int:
    drives = imagedir.mountable(inventory.list_disks())
    mounted = None
    if args.mount:
        if os.geteuid() != 0:
            raise RefusedError("mounting a drive needs root", hint="run it as root")
        mounted = imagedir.mount_drive(args.mount, drives)
        drives = [d for d in drives if d.device != args.mount]
    folders = [{"path": p, "free": imagedir.free_bytes(p)} for p in imagedir.suggested()]
    args.output(events.ImagePlaces(folders=folders, drives=[dataclasses.asdict(d) for d in drives], mounted=mounted))
    return 0


def run_unmount(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise RefusedError("unmounting an image needs root", hint="run it as root")
    if not os.path.isdir(args.directory):
        raise UsageError(f"{args.directory} is not a directory")
    taken, warnings = imagemount.unmount(args.directory)
    for warning in warnings:
        args.output(events.Warning(warning))
    done = f"unmounted {args.directory}" if taken else f"nothing of an image was mounted under {args.directory}"
    args.output(events.Phase("unmount", done))
    return 0
