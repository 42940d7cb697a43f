"""A wizard's session over one PeerLink: drive clones from here, or serve the peer.

Both machines run the same loop, :meth:`CloneSession.serve`, on one thread
that owns the control link. Which side drives was settled by the pairing:
the side whose user typed the other's code drives, the other serves. While
the link is idle the loop

- on the driving side, runs what the local user chose
  (:meth:`CloneSession.submit`): send a local disk onto a disk of the peer (a
  ``plan`` whose ``target`` pins it), or ask the peer for one of its disks (a
  ``request``) and receive it onto a local disk;
- on the serving side, serves the peer: a ``plan`` is received onto the local
  disk its ``target`` pins (found by identity, :mod:`recovery.disks.match`),
  a ``request`` is answered by sending the disk it names; after each clone it
  sends its disks again (:class:`~recovery.protocol.messages.Inventory`), as
  they are now.

The driving user proved the pairing code shown here and typed the target's
name, so the serving side writes a pinned target with ``overwrite=True``; a
plan that pins nothing is refused. Every job the peer starts is announced
(:class:`JobStarted` says in plain words what the peer does to which disk)
and can be stopped here with :meth:`CloneSession.cancel`. Between clones the
driver says what its user is doing (:meth:`CloneSession.tell`, an optional
``activity`` message, with the review its user is asked to confirm), which
the serving side reports as :class:`PeerActivity` (text to show: it decides
nothing by it, its own checks of the target stay). A clone that fails ends the connection on both sides
(the engine aborts the link), except a refusal that crossed before anything
was written: the session stays for another try. When both list
"keep-pairing", such a failure (an abort, a read error, any clone's error;
not a lost link, nor the peer leaving) does not end the *pairing*: the
session ends, its :class:`JobEnded` says ``pairing_kept``, and
:meth:`CloneSession.rejoin_after` gives the secret by which the two pair
again at once on a new connection (the driver drives, no code). Closing the
session says ``bye`` when idle, or stops the running clone with a ``cancel``
that says this side leaves the pairing (``ends_pairing``); either way the
peer's session ends with :class:`~recovery.errors.PeerLeftError`.
Each clone is logged to its own file (:mod:`recovery.engine.joblog`), with
the peer's identity and the link's security first; an internal error adds
its traceback there.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NoReturn, TypeVar

from recovery import events
from recovery.disks import identity, match
from recovery.engine import imagedir
from recovery.engine.api import ReceiveOptions, SendOptions, default_workers
from recovery.engine.clone.level import parse_level
from recovery.engine.clone.pipeline import TICK
from recovery.engine.clone.receive import run_receive
from recovery.engine.clone.send import run_send
from recovery.engine.joblog import JobLog
from recovery.engine.peer import imagepass
from recovery.engine.peer.jobs import (
    CloneChoice,
    ImagesFound,
    JobEnded,
    JobStarted,
    PeerActivity,
    PeerDisks,
    describe_info,
)
from recovery.engine.peer.session import PeerLink
from recovery.errors import (
    LinkError,
    PassphraseError,
    PassphraseRefusedError,
    PeerLeftError,
    RecoveryError,
    RefusedError,
    RemoteProtocolError,
    UnreadableSourceError,
    UsageError,
)
from recovery.protocol import messages as m

CLOSE_WAIT = 3.0  # seconds a closing session lets a cancelled clone tell the peer
GOODBYE_WAIT = 2.0  # seconds a closing session waits for the peer's bye

T = TypeVar("T")


class _Job:
    """One clone's event sink: the session's sink plus the clone's log file."""

    def __init__(self, session: CloneSession) -> None:
        self.session = session
        self.log: JobLog | None = None

    @property
    def log_path(self) -> str | None:
        return str(self.log.path) if self.log and self.log.path else None

    def sink(self, event: events.Event) -> None:
        if self.log is not None:
            self.log(event)
        self.session.sink(event)

    def started(
        self, role: str, driver: str, source: str, target: str, *, rescue: bool = False, image: bool = False
    ) -> None:
        """``image``: the side without a disk is an image file (saved into, or restored from)."""
        self.log = JobLog(self.session.log_dir, role)
        self.log(self.session.link.peer_event())
        peer = self.session.peer
        if driver == "here":
            action = f"copying {source} to {target}"
        elif role == "sender":
            action = f"{peer} is READING {'the image' if image else 'disk'} {source}"
        elif image:
            action = f"{peer} is SAVING its disk {source} into the image file {target}"
        else:
            action = f"{peer} is OVERWRITING {target} with its disk {source}"
        self.sink(
            JobStarted(
                role=role,
                driver=driver,
                peer=peer,
                source=source,
                target=target,
                log=self.log_path,
                action=action,
                rescue=rescue,
            )
        )

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


class CloneSession:
    """Clones over one PeerLink, driven from either side; see the module's doc."""

    def __init__(
        self,
        link: PeerLink,
        *,
        candidates: Callable[[], Iterable[str]],
        offered: Callable[[], tuple[m.DiskInfo, ...]] = lambda: (),
        sink: events.EventSink = events.ignore,
        log_dir: Path | None = None,
        workers: int | None = None,
    ) -> None:
        self.link = link
        self.offered = offered  # the disks to send the driver again after each clone
        self.peer = link.peer_name
        self.host = link.our_name
        self.candidates = candidates  # paths where a pinned local disk may be
        self.sink = sink
        self.log_dir = log_dir
        self.workers = workers or default_workers()
        self._choices: queue.Queue[CloneChoice] = queue.Queue()
        self._told: queue.Queue[m.Activity] = queue.Queue()
        self._browse: queue.Queue[tuple[str, bool]] = queue.Queue()
        self._closing = threading.Event()
        self._close_reason = ""
        self._kept_after: RecoveryError | None = None  # the clone's error the pairing outlives
        self._finished = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._requested = False  # the clone driven now asked the peer for its disk (it answers with its disks)

    # --- called from other threads ---

    def submit(self, choice: CloneChoice) -> None:
        """Run this clone as soon as the link is idle."""
        self._choices.put(choice)

    def tell(self, what: str, step: int = 0, steps: int = 0, review: Sequence[tuple[str, str]] = ()) -> None:
        """Say what this (driving) side's user is doing, when the peer listens (its ``activity``), and the
        review the user is asked to confirm, if any (only the lines the message carries)."""
        if self.drives and "activity" in self.link.ctl.state.shared_caps:
            lines = tuple(m.ReviewLine(label[:16], text[:600]) for label, text in review[: m.MAX_REVIEW_LINES])
            self._told.put(m.Activity(what=what[:200], step=step, steps=steps, review=lines))

    def find_images(self, folder: str, *, here: bool) -> None:
        """List the image files of ``folder`` on this machine (``here``) or the peer's, once the link is
        idle; :class:`ImagesFound` follows (``""``: only the folders to suggest)."""
        self._browse.put((folder, here))

    @property
    def images(self) -> bool:
        """The peer saves and restores images in its folders (both list "images")."""
        return "images" in self.link.ctl.state.shared_caps

    @property
    def image_passphrases(self) -> bool:
        """The peer takes an image's passphrase (both list "image-passphrase"): it encrypts an image it saves,
        and restores an encrypted one."""
        return imagepass.CAPABILITY in self.link.ctl.state.shared_caps

    def cancel(self) -> None:
        """Stop the running clone (either role); the peer is told, and the link ends (with
        "keep-pairing", not the pairing)."""
        if self.busy:
            self.link.ctl.stop(f"{self.host}'s user aborted the clone")

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    @property
    def drives(self) -> bool:
        """This side drives (its user typed the peer's code); the other serves."""
        return self.link.role == "driver"

    def rejoin_after(self, error: BaseException | None) -> bytes | None:
        """The secret by which the peer may pair again after the session ended with ``error``: after a
        lost link (the driving user allows waiting for it), and after a clone that failed but kept the
        pairing (:meth:`kept_pairing`: the two pair again at once); None after a goodbye, a quit, or an
        end on purpose."""
        if self.kept_pairing(error):
            return self.link.rejoin_secret()
        return self.link.rejoin_after(error)

    def kept_pairing(self, error: BaseException | None) -> bool:
        """Did the session end with a failed clone that keeps the pairing (see the module's doc)?"""
        return error is not None and error is self._kept_after

    def _keeps_pairing(self, error: RecoveryError) -> bool:
        """Does the pairing outlive this failed clone: both list "keep-pairing", it was not a lost link
        (the peer may be gone) nor the peer leaving, and nobody here closes the session?"""
        return (
            "keep-pairing" in self.link.ctl.state.shared_caps
            and not isinstance(error, LinkError | PeerLeftError)
            and not self._closing.is_set()
            and self.link.rejoin_secret() is not None
        )

    def close(self, reason: str = "the other side closed the session") -> None:
        """End the session: cancel a running clone, say bye (or cancel), unblock :meth:`serve`."""
        self._close_reason = reason
        self._closing.set()
        if self.busy:
            self.link.ctl.stop(reason, ends_pairing=True)
        self._idle.wait(CLOSE_WAIT)
        if not self._finished.wait(GOODBYE_WAIT + 2 * TICK):  # serve() says bye and returns
            self.link.ctl.try_send(m.Cancel(reason=reason[:1000], ends_pairing=True))
        self.link.conn.abort()

    # --- the session's own thread ---

    def serve(self, max_clones: int | None = None) -> None:
        """Run clones until the link ends; raise what ended it (nothing after :meth:`close`).

        With ``max_clones``, return after that many clones succeeded.
        """
        done = 0
        try:
            while max_clones is None or done < max_clones:
                if self._closing.is_set():
                    self._goodbye()
                    return
                try:
                    choice = self._choices.get_nowait()
                except queue.Empty:
                    self._say_told()
                    self._look_in_folders()
                    msg = self.link.ctl.poll(TICK)
                    if isinstance(msg, m.Plan):
                        done += self._run(self._serve_plan, msg)
                        self._send_disks()
                    elif isinstance(msg, m.Request):
                        done += self._run(self._serve_request, msg)
                        self._send_disks()
                    elif isinstance(msg, m.Inventory):
                        self.link.inventory = msg.disks
                        self.sink(PeerDisks(count=len(msg.disks)))
                    elif isinstance(msg, m.Activity):
                        review = tuple((line.label, line.text) for line in msg.review)
                        self.sink(PeerActivity(what=msg.what, step=msg.step, steps=msg.steps, review=review))
                    elif isinstance(msg, m.FindImages):
                        self.link.ctl.send(imagedir.find_images(msg.folder))
                    elif isinstance(msg, m.Measure):
                        self.link.ctl.send(m.Measured(refused="this machine's wizard does not fit clones yet"))
                    elif isinstance(msg, m.Bye):
                        self._ended_by_peer(msg)
                    continue
                if not self.drives:
                    raise UsageError(
                        f"{self.host} serves {self.peer} and cannot drive a clone",
                        hint=f"drive from {self.peer}, or pair again from here",
                    )
                planned, self._requested = self.link.ctl.state.clones, False
                done += self._run(self._drive, choice)
                if self.link.ctl.state.clones != planned or self._requested:  # the peer answers with its disks
                    self._take_disks()
        except RecoveryError:
            if not self._closing.is_set():
                raise
        finally:
            self.link.close()
            self.link.conn.close()
            self._finished.set()

    def _say_told(self) -> None:
        while True:
            try:
                activity = self._told.get_nowait()
            except queue.Empty:
                return
            if self.link.idle:
                self.link.ctl.send(activity)

    def _look_in_folders(self) -> None:
        """The folders this side's user asked about, each answered by the machine that holds it."""
        while True:
            try:
                folder, here = self._browse.get_nowait()
            except queue.Empty:
                return
            if here:
                found = imagedir.find_images(folder)
            elif not self.images:
                found = m.Images(folder=folder, refused=f"{self.peer} runs a usb4-recovery without images")
            else:
                self.link.ctl.send(m.FindImages(folder=folder[:4096]))
                answer = self.link.ctl.expect(m.Images)
                assert isinstance(answer, m.Images)
                found = answer
            self.sink(ImagesFound(here=here, found=found))

    def _goodbye(self) -> None:
        """This side ends the idle session: our bye, the peer's answer (briefly), then the link closes."""
        if not self.link.idle:
            return
        try:
            self.link.say_goodbye(self._close_reason, wait=GOODBYE_WAIT)
        except RecoveryError:
            pass  # the link went first: nobody to say it to

    def _run(self, clone: Callable[[T, _Job], events.Summary], arg: T) -> int:
        """One clone; 1 if it succeeded, 0 if it was refused with the link kept (raises otherwise)."""
        job = _Job(self)
        self._idle.clear()
        try:
            trace = None
            try:
                clone(arg, job)
            except UnreadableSourceError as e:
                # It completed: what could be read is on the target and verified; the summary lists the rest.
                job.sink(JobEnded(ok=True, code=e.code, message=e.message, hint=e.hint, log=job.log_path))
                return 1
            except RecoveryError as e:
                error = e
            except Exception as e:  # noqa: BLE001 - a bug ends the clone on a screen, not in a thread
                trace = traceback.format_exc()
                error = RecoveryError(
                    f"internal error: {type(e).__name__}: {e}",
                    hint="the clone's log has the details: keep it and report it",
                )
            else:
                job.sink(JobEnded(ok=True, log=job.log_path))
                return 1
            # A failed clone ends the connection on both sides (the engine did so
            # already for its own errors; abandoning twice is harmless); a refusal
            # that left the session idle keeps it.
            reason = self.link.abandon(error)
            error = reason if isinstance(reason, RecoveryError) else error
            refused = isinstance(error, RefusedError) and self.link.idle
            kept = refused or self._keeps_pairing(error)
            job.sink(
                events.Failed(
                    code=error.code,
                    message=error.message,
                    exit_code=error.exit_code,
                    hint=error.hint,
                    traceback=trace,
                    peer=error.peer,
                )
            )
            job.sink(
                JobEnded(
                    ok=False,
                    code=error.code,
                    message=error.message,
                    hint=error.hint,
                    peer=error.peer,
                    log=job.log_path,
                    pairing_kept=kept,
                    peer_left=isinstance(error, PeerLeftError),
                )
            )
            if refused:
                return 0
            self._kept_after = error if kept else None
            raise error
        finally:
            job.close()
            self._idle.set()

    def _ended_by_peer(self, bye: m.Bye) -> NoReturn:
        self.link.ctl.try_send(m.Bye(reason="goodbye"))
        raise PeerLeftError(f"{self.peer} ended the session: {bye.reason or 'no reason given'}")

    def _take_disks(self) -> None:
        """After a clone driven from here: the peer's disks as they are now."""
        msg = self.link.ctl.expect(m.Inventory)
        assert isinstance(msg, m.Inventory)
        self.link.inventory = msg.disks
        self.sink(PeerDisks(count=len(msg.disks)))

    def _send_disks(self) -> None:
        """After a clone that the peer drove: our disks as they are now."""
        self.link.offered = self.offered()
        self.link.ctl.send(m.Inventory(disks=self.link.offered))

    def _refuse(self, message: str, hint: str | None = None, code: str = RefusedError.code) -> NoReturn:
        """Tell the peer no (while it waits for our answer) and end this clone."""
        self.link.refuse(message, hint, code)
        raise refusal(code)(message, hint=hint)

    def _local_path(self, disk: m.DiskInfo, *, unchanged: bool) -> str:
        """Where the chosen local disk is now; with ``unchanged``, refuse if it changed."""
        if disk.identity is None:
            raise RefusedError(f"{disk.path} could not be identified when it was listed", hint="choose another disk")
        found = match.find_disk(disk.identity, self.candidates())
        if found is None:
            raise RefusedError(
                f"{describe_info(disk)} is gone (unplugged or renamed)",
                hint="plug it back in, or start again and choose another disk",
            )
        why = identity.mismatch(disk.identity, found[1]) if unchanged else None
        if why:
            raise RefusedError(
                f"{disk.path} changed since it was listed: {why}",
                hint="start again so that the wizard shows it as it is now",
            )
        return found[0]

    # --- driven from here ---

    def _fit(self, choice: CloneChoice) -> str:
        """The choice's fit, when both sides can do it (and the sizes chosen, when that is asked of the peer)."""
        caps = self.link.ctl.state.shared_caps
        if choice.fit != "keep" and "fit" not in caps:
            raise UsageError(
                f"{self.peer} runs a usb4-recovery that cannot fit a clone to a smaller disk",
                hint=f"upgrade it on {self.peer}, or choose a target at least the source's size",
            )
        if choice.sizes and not choice.send and "fit-sizes" not in caps:
            raise UsageError(
                f"{self.peer} runs a usb4-recovery that cannot take the partition sizes chosen here",
                hint=f"upgrade it on {self.peer}, or go back to the automatic layout (c on the layout step)",
            )
        return choice.fit

    def _drive(self, choice: CloneChoice, job: _Job) -> events.Summary:
        src, tgt = choice.source, choice.target
        image = choice.image_source is not None or choice.image_target is not None
        if choice.send:
            job.started("sender", "here", describe_info(src), f"{self.peer}:{describe_info(tgt)}", rescue=choice.rescue)
            if choice.image_target is None and tgt.identity is None:
                raise UsageError(
                    f"{self.peer} did not identify {tgt.path}, so it cannot be pinned",
                    hint=f"run the same version of usb4-recovery on {self.peer}",
                )
            if image and not self.images:
                raise UsageError(f"{self.peer} runs a usb4-recovery without images", hint=f"upgrade it on {self.peer}")
            send = SendOptions(
                source=self._source_here(choice),
                target=None if choice.image_target else tgt.identity,
                image=choice.image_target,
                image_passphrase=self._passphrase_for_peer(choice) if choice.image_target else None,
                passphrase=imagepass.secret(choice.passphrase) if choice.image_source else None,
                mode=choice.mode,
                level=choice.level,
                verify=choice.verify,
                workers=self.workers,
                rescue=choice.rescue,
                restart=choice.restart,
                log_dir=self.log_dir,
                fit=self._fit(choice),
                sizes=dict(choice.sizes),
            )
            return run_send(self.link, send, job.sink)
        job.started("receiver", "here", f"{self.peer}:{describe_info(src)}", describe_info(tgt), rescue=choice.rescue)
        if choice.image_source is None and src.identity is None:
            raise UsageError(
                f"{self.peer} did not identify {src.path}, so it cannot be pinned",
                hint=f"run the same version of usb4-recovery on {self.peer}",
            )
        if choice.image_source is not None and not self.images:
            raise UsageError(f"{self.peer} runs a usb4-recovery without images", hint=f"upgrade it on {self.peer}")
        path = imagedir.new_image(choice.image_target) if choice.image_target else self._local_path(tgt, unchanged=True)
        level = "auto" if choice.level is None else str(choice.level)
        self._requested = True
        self.link.ctl.send(
            m.Request(
                source=choice.image_source or src.path,
                mode=choice.mode,  # type: ignore[arg-type]
                level=level,
                source_identity=None if choice.image_source else src.identity,
                rescue=choice.rescue,
                image=choice.image_source is not None,
                fit=self._fit(choice),  # type: ignore[arg-type]
                target=tgt.identity if choice.fit != "keep" else None,
                sizes=tuple(m.PartSize(n, size) for n, size in sorted(choice.sizes.items())),
                passphrase=self._passphrase_for_peer(choice) if choice.image_source else None,
            )
        )
        job.sink(events.Phase("map", f"waiting for {self.peer} to find what to copy on {src.path}"))
        plan = self._await_plan()
        offered = plan.source
        if src.identity and choice.fit != "keep":  # fitted: its size and its tables are the fitted disk's
            offered = dataclasses.replace(offered, size=src.identity.size, fingerprint=src.identity.fingerprint)
        why = identity.mismatch(src.identity, offered) if src.identity and not choice.image_source else None
        if why:
            self._refuse(f"{self.peer} offered another disk than the one chosen: {why}")
        opts = ReceiveOptions(
            target=path,
            overwrite=choice.image_target is None,
            verify=choice.verify,
            workers=self.workers,
            restart=choice.restart,
            log_dir=self.log_dir,
            image=choice.image_target is not None,
            no_links=choice.image_target is not None,
            passphrase=imagepass.secret(choice.passphrase) if choice.image_target else None,
        )
        return run_receive(self.link, plan, opts, job.sink)

    def _passphrase_for_peer(self, choice: CloneChoice) -> str | None:
        """The image's passphrase, for the peer that holds the image (see :mod:`.imagepass`)."""
        return imagepass.for_peer(self.link.ctl.state, choice.passphrase, self.peer)

    def _source_here(self, choice: CloneChoice) -> str:
        """Where this side's source is now: the image file chosen (in a folder this machine allows), or the disk."""
        if choice.image_source is not None:
            return imagedir.saved_image(choice.image_source)
        return self._local_path(choice.source, unchanged=False)

    def _await_plan(self) -> m.Plan:
        while True:
            msg = self.link.ctl.poll(TICK)  # raises Interrupted once cancel() was called
            if isinstance(msg, m.Plan):
                return msg
            if isinstance(msg, m.Refuse):
                raise refusal(msg.code)(msg.message, hint=msg.hint, peer=self.peer)
            if msg is not None and not isinstance(msg, m.Progress):
                raise RemoteProtocolError(f"unexpected {msg.type!r} message from the peer")

    # --- driven from the peer ---

    def _serve_plan(self, plan: m.Plan, job: _Job) -> events.Summary:
        if plan.image is not None:
            return self._serve_image_plan(plan, plan.image, job)
        pinned = plan.target
        job.started(
            "receiver",
            "peer",
            f"{self.peer}:{identity.describe(plan.source)}",
            identity.describe(pinned) if pinned else "(not chosen)",
            rescue=plan.rescue,
        )
        if pinned is None:
            self._refuse(
                f"{self.host} only writes a disk the sender's user chose in the wizard",
                hint=f"start `recovery tui` on {self.peer} and choose a disk of {self.host}",
            )
        found = match.find_disk(pinned, self.candidates())
        if found is None:
            self._refuse(
                f"no disk of {self.host} is {identity.describe(pinned)} any more",
                hint=f"check the disks of {self.host} and choose the target again",
            )
        return self._receive(plan, found[0], job)

    def _serve_image_plan(self, plan: m.Plan, path: str, job: _Job) -> events.Summary:
        """Save the peer's disk into a new image file, only in a folder this machine allows."""
        job.started("receiver", "peer", f"{self.peer}:{identity.describe(plan.source)}", path, image=True)
        try:
            imagedir.new_image(path)
        except RefusedError as e:
            self._refuse(f"{self.host} does not save an image there: {e.message}", hint=e.hint)
        return self._receive(plan, path, job, image=True)

    def _receive(self, plan: m.Plan, target: str, job: _Job, *, image: bool = False) -> events.Summary:
        # The peer decides what is written, never whether this machine checks its own disk afterwards.
        opts = ReceiveOptions(
            target=target,
            overwrite=not image,  # a new image file: never one that exists (but an unfinished save of it)
            verify=True,
            workers=self.workers,
            restart=plan.restart and not image,  # a peer never makes this machine drop an unfinished image
            log_dir=self.log_dir,
            image=image,
            no_links=image,  # a folder's image file: imagedir's rule, held to the open
            passphrase=imagepass.secret(plan.passphrase) if image else None,
        )
        return run_receive(self.link, plan, opts, job.sink)

    def _serve_request(self, req: m.Request, job: _Job) -> events.Summary:
        named = identity.describe(req.source_identity) if req.source_identity else req.source
        job.started("sender", "peer", named, f"{self.peer}: a disk chosen there", rescue=req.rescue, image=req.image)
        try:
            level = parse_level(req.level)
        except UsageError as e:
            self._refuse(e.message)
        if req.image:
            try:
                path = imagedir.saved_image(req.source)
            except RefusedError as e:
                self._refuse(f"{self.host} does not restore that image: {e.message}", hint=e.hint)
            try:
                imagepass.check(path, req.passphrase)  # before the plan: a wrong one keeps the link
            except PassphraseError as e:
                self._refuse(f"{self.host} cannot open that image: {e.message}", hint=e.hint, code=e.code)
        elif req.source_identity is not None:
            found = match.find_disk(req.source_identity, self.candidates())
            if found is None:
                self._refuse(
                    f"no disk of {self.host} is {named} any more",
                    hint=f"check the disks of {self.host} and choose the source again",
                )
            path = found[0]
        elif req.source in set(self.candidates()):
            path = req.source
        else:
            self._refuse(f"{req.source} is not one of the disks {self.host} offers")
        if req.fit != "keep" and req.target is None:
            self._refuse("a request to fit the disk to a target must name the target")
        sizes = {s.number: s.size for s in req.sizes}
        if len(sizes) != len(req.sizes):
            self._refuse("a request names a partition's size twice")
        if sizes and req.fit == "keep":
            self._refuse("partition sizes come only with a fit (shrink or grow)")
        opts = SendOptions(
            source=path,
            mode=req.mode,
            level=level,
            workers=self.workers,
            rescue=req.rescue,
            log_dir=self.log_dir,
            image_only=req.image,
            passphrase=imagepass.secret(req.passphrase) if req.image else None,
            fit=req.fit,
            sizes=sizes,
            target=req.target if req.fit != "keep" else None,
        )
        return run_send(self.link, opts, job.sink)


def refusal(code: str) -> type[RefusedError]:
    """The error of a refusal by its code: a refused passphrase may be typed again."""
    return PassphraseRefusedError if code == PassphraseRefusedError.code else RefusedError
