"""`recovery receive`: show a pairing code, wait for the sender that types it, write its disk onto a target."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from recovery import events
from recovery.cli.common import (
    INTERRUPTS,
    add_code,
    add_encrypt,
    add_json,
    add_link,
    add_log_dir,
    add_timeout,
    add_workers,
    job_log,
)
from recovery.cli.passphrase import add_passphrase, passphrase
from recovery.disks import safety
from recovery.disks.identity import identify
from recovery.engine.api import ReceiveOptions
from recovery.engine.clone.receive import receive_on
from recovery.engine.peer.guard import CodeGuard
from recovery.engine.peer.lobby import Lobby
from recovery.errors import RefusedError, UsageError
from recovery.link.opening import listen, receiver_spec
from recovery.link.tcp import DEFAULT_PORT
from recovery.protocol import messages as m


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "receive",
        help="receive a disk from a sending peer and write it to a target",
        description="Show a pairing code, wait for the sender whose user types it, and write "
        "what it sends onto TARGET.",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--target", metavar="PATH", help="the disk to overwrite, or a raw image file (the disk's bytes) to create"
    )
    where.add_argument(
        "--image",
        metavar="PATH",
        help="save the disk as an image file (compressed, checkable, mountable; docs/image-format.md)",
    )
    add_passphrase(p, new=True)
    p.add_argument(
        "--listen",
        metavar="[ADDR]:PORT",
        help=f"listen for a sender over TCP (default port {DEFAULT_PORT}, all addresses)",
    )
    p.add_argument("--from", dest="from_", metavar="-", help="'-': the sender talks on stdin/stdout (no code)")
    add_link(p)
    add_code(p, serving=True)
    p.add_argument(
        "--yes",
        action="store_true",
        help="overwrite a target that holds a partition table or filesystem, without asking",
    )
    p.add_argument("--no-verify", action="store_true", help="skip reading the target back after the copy")
    p.add_argument(
        "--no-fs-check",
        action="store_true",
        help="used mode: skip running each filesystem's read-only checker on the target",
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="start from the beginning even if the target holds an interrupted clone of the same source",
    )
    p.add_argument(
        "--no-delta",
        action="store_true",
        help="do not offer the target's earlier clone of the same source (with --image: an earlier image in "
        "its folder): the whole clone is sent",
    )
    p.add_argument(
        "--no-journal", action="store_true", help="keep no resume journal (an interrupted clone then starts over)"
    )
    add_encrypt(p, receiving=True)
    add_log_dir(p, "each clone's JSON log and the resume journals")
    add_workers(p)
    add_timeout(p)
    add_json(p)
    p.set_defaults(run=run)


def only_senders(hello: m.Hello) -> str | None:
    """A receiver pairs with `recovery send` only."""
    if hello.role == "sender":
        return None
    return (
        f"{hello.host.hostname} runs `recovery {hello.role}`, this machine runs `recovery receive`: "
        "start `recovery send` there"
    )


def run(args: argparse.Namespace) -> int:
    spec = receiver_spec(args.link, args.listen, args.from_)
    out = args.output
    target = args.image or args.target
    if (args.passphrase or args.passphrase_file) and not args.image:
        raise UsageError("--passphrase encrypts an image: give --image PATH")
    # Fail before waiting for a sender if the target can never be written,
    # and pin it as it is now: the clone refuses it if it changes meanwhile.
    safety.check_target_path(target, overwrite=args.yes, image=bool(args.image))
    expect = None
    if os.path.exists(target):
        try:
            expect = identify(target)
        except OSError as e:
            raise RefusedError(f"cannot inspect {target}: {e.strerror}") from None
    opts = ReceiveOptions(
        target=target,
        image=bool(args.image),
        passphrase=passphrase(args, new=True),
        overwrite=args.yes,
        verify=not args.no_verify,
        timeout=args.timeout,
        expect=expect,
        code=args.code,
        fs_check=not args.no_fs_check,
        restart=args.restart,
        delta=not args.no_delta,
        journal=not args.no_journal,
        encrypt=args.encrypt,
        log_dir=Path(args.log_dir) if args.log_dir else None,
    )
    if args.workers:
        opts.workers = max(1, args.workers)

    def listening(address: str, port: int, link: str) -> None:
        out(events.Listening(address=address, port=port, link=link))

    guard = CodeGuard(args.code, on_new_code=lambda code, why: out(events.PairingCode(code, why)))
    with INTERRUPTS.session() as cancel:
        lobby = Lobby(guard, "receiver", refuse=only_senders, sink=out, timeout=args.timeout, encrypt=args.encrypt)
        source = listen(spec, on_listening=listening, stop=cancel)
        if spec.kind != "stdio":
            out(events.PairingCode(guard.code))
        lobby.serve(source)
        try:
            link = lobby.wait(cancel)
        finally:
            lobby.close()
        opts.cancel = cancel
        with link.conn, job_log(args.log_dir, "receiver", out) as sink:
            sink(link.peer_event())
            receive_on(link, opts, sink)
    return 0
