"""Which step or result the wizard shows, and what each answer, Back, Retry or result leads to.

The app owns the state and the screens; the stepper decides, and sees of the
app only the little :class:`Wizard` names (it never imports the app). On the driving
side every step is built from the answers so far (Esc shows the previous
one with them kept) and the other machine is told which step its user is on.
Before a clone starts, and before a retry, this machine's disks are read
again and the chosen disks looked up by identity (:func:`recovery.tui.flow.recheck`):
what changed is shown and must be confirmed again. The serving side follows
what the driver says it does.
"""

from __future__ import annotations

import dataclasses
import datetime
import posixpath
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from textual.notifications import SeverityLevel
from textual.screen import Screen

from recovery import report
from recovery.engine import imagedir
from recovery.engine.peer import imagepass
from recovery.engine.peer.jobs import ImagesFound, JobEnded, PeerActivity, earlier_copy, unfinished
from recovery.engine.peer.seen import Pin
from recovery.errors import RecoveryError
from recovery.tui import flow
from recovery.tui.advice import SOURCE_SAFE, advise, peer_left
from recovery.tui.config import WizardConfig
from recovery.tui.job import JobView
from recovery.tui.messages import AutoResumeAsked, Dismissed, RetryAsked, StartOverAsked
from recovery.tui.model import (
    Choice,
    image_name,
    restore_refusal,
    short_name,
    source_refusal,
    target_note,
    target_refusal,
)
from recovery.tui.screens.folder import FolderScreen
from recovery.tui.screens.layout import LayoutScreen
from recovery.tui.screens.pair import PairScreen, PassiveScreen
from recovery.tui.screens.results import ErrorScreen, Offer, ResultScreen, SummaryScreen
from recovery.tui.screens.resume import RescueScreen, ResumeScreen, UpdateScreen, update_question
from recovery.tui.screens.steps import DirectionScreen, DiskScreen, OptionsScreen, ReviewScreen, Step
from recovery.tui.state import WizardState
from recovery.units import human_size

Answer = TypeVar("Answer")


class Wizard(Protocol):
    """The little of the app the stepper uses: what the wizard knows, its screens, and a few requests.

    :class:`~recovery.tui.app.WizardApp` is one; the stepper never imports it.
    """

    @property
    def state(self) -> WizardState: ...

    @property
    def config(self) -> WizardConfig: ...

    @property
    def peer_name(self) -> str: ...

    @property
    def top(self) -> Screen[object] | None: ...

    def show(self, screen: Screen[None]) -> None:
        """The first screen, and ``screen`` over it."""

    def push_screen(self, screen: Screen[Answer], callback: Callable[[Answer | None], None]) -> object:
        """``screen`` over the one on top; ``callback`` gets its answer."""

    def reset_to_home(self) -> None:
        """Back to the first screen."""

    def notify(
        self, message: str, *, severity: SeverityLevel = ..., timeout: float | None = ..., markup: bool = ...
    ) -> None:
        """A toast."""

    def load_inventory(self, why: str) -> None:
        """Read this machine's disks again (in a worker); :meth:`Stepper.disks_read` follows with ``why``."""

    def check_demo(self, source: str, target: str) -> None:
        """Compare the demo's two images (in a worker); the summary screen shows the verdict."""

    def rejoin(self, secret: bytes | None) -> None:
        """Pair again by itself with the last machine by this secret when it is back (None: never)."""

    def waiting_line(self) -> str:
        """What a screen says while the wizard waits to be paired again."""


class Stepper:
    def __init__(self, wizard: Wizard) -> None:
        self.wizard = wizard
        self.pending = ""  # "plan" or "retry": waiting for this machine's disks to be read again

    @property
    def state(self) -> WizardState:
        return self.wizard.state

    # --- pairing ---

    def paired(self, pin: Pin) -> None:
        state = self.state
        assert state.peer is not None
        again, state.repairing = state.repairing, False
        if state.link is None or not state.link.rejoined:
            state.auto_resume = False  # paired by a code: the user is here, the review shows
        elif again and state.pin == pin:
            self.paired_again()
            return
        state.choose_again = False
        if not state.drives:
            self.wizard.show(PassiveScreen(state.peer))
            return
        if state.retry is not None and state.pin is not None and state.pin != pin:
            self.wizard.notify(
                f"Paired with {pin.hostname}, not {state.pin.hostname}: the clone to retry was with "
                f"{state.pin.hostname}, so it is not retried. Choose what to copy.",
                markup=False,
                severity="warning",
                timeout=10,
            )
            state.retry, state.auto_resume = None, False
        if state.retry is not None:
            state.choice, state.retry = state.retry, None
            self.pending = "retry"
            self.wizard.load_inventory("retry")
            return
        state.step = "pair"
        self.show_step("pair")

    def paired_again(self) -> None:
        """The pairing a failed clone kept is back (by its secret): the result stays on screen, and what
        the driver's user asked for meanwhile (retry, another clone) runs now."""
        state, wizard = self.state, self.wizard
        choose_again, state.choose_again = state.choose_again, False
        if not state.drives:
            if not isinstance(wizard.top, ResultScreen | RescueScreen):
                self.dismissed()
        elif state.retry is not None:
            state.choice, state.retry = state.retry, None
            self.pending = "retry"
            wizard.load_inventory("retry")
        elif choose_again:
            self.show_step("direction")

    @staticmethod
    def kept_line(job: JobView) -> str:
        """What a failed clone's result screen says when the pairing stays (made again by itself)."""
        if job.passive:
            return f"Still paired with {job.started.peer}: its user chooses what comes next."
        return f"Still paired with {job.started.peer}: r retries this clone, Enter chooses another (no code needed)."

    # --- steps ---

    def show_step(self, step: str) -> None:
        state = self.state
        state.step = step
        screen = self.build(step)
        self.tell(step, screen.rows if isinstance(screen, ReviewScreen | LayoutScreen) else ())
        self.wizard.show(screen)

    def tell(self, step: str, review: Sequence[tuple[str, str]] = ()) -> None:
        """Tell the other machine which step its user is on, and what it says (a review, a layout)."""
        if self.state.session is not None:
            self.state.session.tell(flow.activity(step), flow.number(step), len(flow.STEPS), review)

    def build(self, step: str) -> Step | PairScreen:
        state, peer = self.state, self.wizard.peer_name
        choice = state.choice
        ours = state.disks or ()
        theirs = state.link.inventory if state.link else ()
        if step == "pair":
            assert state.peer is not None
            return PairScreen(state.peer)
        if step == "direction":
            return DirectionScreen(state.host, peer, choice.send)
        images = state.session is not None and state.session.images
        if step == "source":
            holder, disks = (state.host, ours) if choice.send else (peer, theirs)
            return DiskScreen(
                "source",
                f"The disk to copy (on {holder})",
                f"Choose the disk of {holder} to copy. It is only read, never changed.",
                disks,
                {d.path: source_refusal(d) for d in disks},
                choice.source,
                image=f"restore an image file of {holder} instead" if images else None,
            )
        if step == "target":
            assert choice.source is not None
            holder, disks = (peer, theirs) if choice.send else (state.host, ours)
            return DiskScreen(
                "target",
                f"The disk to overwrite (on {holder})",
                f"Choose the disk of {holder} that becomes the copy. EVERYTHING ON IT WILL BE LOST.",
                disks,
                {d.path: target_refusal(choice.source, d) or restore_refusal(choice.image_source, d) for d in disks},
                choice.target,
                image=f"save an image of {short_name(choice.source)} into a folder of {holder} instead"
                if images
                else None,
                notes={d.path: target_note(choice.source, d) for d in disks},
            )
        if step in ("image", "folder"):
            return self.folder_screen(step)
        if step == "options":
            problem, state.passphrase_problem = state.passphrase_problem, ""
            old = (
                choice.send
                and choice.image_target is not None
                and not (state.session and state.session.image_passphrases)
            )
            return OptionsScreen(choice, problem, old_peer=peer if old else "")
        if step == "layout":
            return LayoutScreen(choice, state.host, peer)
        changes, state.changes = state.changes, ()
        return ReviewScreen(choice, state.host, peer, changes)

    def folder_screen(self, step: str) -> FolderScreen:
        """The folder where an image is saved ("folder"), or whose images may be restored ("image")."""
        state, peer = self.state, self.wizard.peer_name
        choice, session = state.choice, state.session
        assert session is not None
        save = step == "folder"
        here = not choice.send if save else bool(choice.send)  # the folder is on the machine of this side
        holder = state.host if here else peer
        old_peer = "" if here or session.image_passphrases else peer

        def ask(folder: str) -> None:
            session.find_images(folder, here=here)

        if save:
            assert choice.source is not None
            folder, name = posixpath.split(choice.image_target or "")
            return FolderScreen(
                "folder",
                f"Save an image (on {holder})",
                f"The image of {short_name(choice.source)} is saved as one new file in a folder of {holder}: "
                "nothing else there is changed. Enter looks in the folder typed; Tab moves to the name.",
                here=here,
                ask=ask,
                folder=folder or state.image_folder,
                name=name or image_name(choice.source, datetime.date.today()),
            )
        return FolderScreen(
            "image",
            f"The image to restore (on {holder})",
            f"Choose an image file in a folder of {holder}: it is only read. Enter looks in the folder typed.",
            here=here,
            ask=ask,
            folder=posixpath.dirname(choice.source.path)
            if choice.image_source and choice.source
            else state.image_folder,
            old_peer=old_peer,
        )

    def image_asked(self, step: str) -> None:
        """An image file instead of a disk, on the source step (restore) or the target step (save)."""
        if self.state.session is not None and self.state.drives:
            self.show_step("image" if step == "source" else "folder")

    def images_found(self, found: ImagesFound) -> None:
        top = self.wizard.top
        if isinstance(top, FolderScreen) and top.here == found.here:
            top.show_found(found.found)

    def answered(self, step: str, value: object) -> None:
        state = self.state
        if state.session is None or not state.drives:
            return
        if step == "review":
            self.pending = "plan"
            self.wizard.load_inventory("plan")  # the disks as they are right before the plan
            return
        state.choice = flow.answer(state.choice, step, value)
        if step == "options" and (problem := local_passphrase_problem(state.choice)):
            state.passphrase_problem = problem
            self.show_step("options")  # typed again before the review
            return
        if isinstance(value, tuple):  # an image to restore: (its folder, what it holds)
            state.image_folder = str(value[0])
        elif step == "folder":
            state.image_folder = posixpath.dirname(str(value))
        if step == "target":
            choice = state.choice
            job = unfinished(choice.source, choice.target) if choice.source and choice.target else None
            if job is not None:  # the target's journal: an interrupted clone of this source
                self.wizard.push_screen(ResumeScreen(job), lambda resume: self.resume_answered(resume))
                return
            record = earlier_copy(choice.source, choice.target) if choice.source and choice.target else None
            if record is not None:  # the target's record: a finished clone of this source, to update
                assert choice.target is not None
                question = update_question(short_name(choice.target), record, human_size(choice.target.size))
                self.wizard.push_screen(UpdateScreen(question), lambda update: self.update_answered(update))
                return
        self.show_step(flow.following(step, state.choice))

    def resume_answered(self, resume: bool | None) -> None:
        """Resume the interrupted clone (True), start over (False), or back to the target (None)."""
        state = self.state
        choice = state.choice
        if resume is None or state.session is None or choice.source is None or choice.target is None:
            return
        job = unfinished(choice.source, choice.target) if resume else None
        choice = dataclasses.replace(
            choice, restart=not resume, rescue=choice.rescue or bool(job and (job.complete or job.rescue))
        )
        if job is not None:
            choice = dataclasses.replace(choice, mode=job.mode)  # the interrupted clone's: another is another clone
        state.choice = choice
        self.show_step("options")

    def update_answered(self, update: bool | None) -> None:
        """Update the copy on the target (True: a delta clone, in the copy's mode), overwrite it (False), or
        back to the target (None)."""
        state = self.state
        choice = state.choice
        if update is None or state.session is None or choice.source is None or choice.target is None:
            return
        record = earlier_copy(choice.source, choice.target)
        choice = dataclasses.replace(choice, restart=not update)
        if update and record is not None:
            choice = dataclasses.replace(choice, mode=record.mode)  # another mode would be another clone
        state.choice = choice
        self.show_step("options")

    def back(self, step: str, highlighted: object = None) -> None:
        """Esc: the previous step; what was highlighted here is kept as this step's answer (a disk with
        an interrupted clone asks about it when chosen with Enter, not now)."""
        if self.state.session is None:
            self.wizard.reset_to_home()
            return
        if highlighted is not None and self.state.drives:
            self.state.choice = flow.answer(self.state.choice, step, highlighted)
        self.show_step(flow.previous(step, self.state.choice))

    # --- right before a clone ---

    def disks_read(self, why: str) -> None:
        if why != self.pending or self.state.session is None:
            return
        self.pending = ""
        state = self.state
        choice = state.choice
        ours, theirs = state.disks or (), state.link.inventory if state.link else ()
        src_host, dst_host = (state.host, self.wizard.peer_name) if choice.send else (self.wizard.peer_name, state.host)
        checked = flow.recheck(
            choice, ours if choice.send else theirs, theirs if choice.send else ours, src_host, dst_host
        )
        if checked.choice is None:
            self.wizard.notify(
                "The clone cannot run as chosen: " + "; ".join(checked.changes),
                severity="error",
                markup=False,
                timeout=15,
            )
            self.show_step("source" if any("source" in c for c in checked.changes) else "target")
            return
        state.choice = checked.choice
        auto, state.auto_resume = state.auto_resume, False
        if why == "retry" and auto and checked.written_only:
            # Allowed by the user, and nothing changed but what the clone cut short wrote: no review
            # (the engine checks the source and the target against the journal).
            self.submit()
            return
        if checked.changes or why == "retry":
            state.changes = checked.changes or ("the same disks as before, found again by their identity",)
            self.show_step("review")  # the user confirms again, with what changed in view
            return
        self.submit()

    def submit(self) -> None:
        """Run the clone as chosen. Starting over is for this clone only: a retry of it resumes."""
        state = self.state
        assert state.session is not None
        state.session.submit(state.choice.complete())
        state.choice = state.job_choice = dataclasses.replace(state.choice, restart=False)

    # --- after a clone ---

    def offers(self, *, failed: bool, linked: bool = True, lost: bool = False) -> list[Offer]:
        """``lost``: the link was lost mid-clone, and the peer may pair again by the lost pairing's secret."""
        if not self.state.drives and self.state.session is not None:
            return [Offer("enter", "OK", Dismissed)]
        retry = [Offer("r", "Retry", RetryAsked)] if self.state.job_choice is not None else []
        if lost and retry:
            retry.append(Offer("a", "Resume by itself", AutoResumeAsked))
        again = "Another clone" if not failed else ("Choose again" if linked else "First screen")
        return [Offer("enter", again, StartOverAsked), *retry]

    def job_ended(self, job: JobView, ended: JobEnded) -> None:
        state, wizard = self.state, self.wizard
        linked = ended.pairing_kept
        if ended.ok and job.summary is not None:
            state.last_result = f"{report.headline(job.summary)}: {job.target}"
            wizard.show(SummaryScreen(job, state.host, self.offers(failed=False)))
            chosen = state.job_choice
            if wizard.config.demo and not job.passive and chosen and chosen.source and chosen.target:
                wizard.check_demo(chosen.source.path, chosen.target.path)
            return
        state.last_result = f"failed ({ended.code}): {ended.message}"
        if ended.code == "passphrase" and ended.pairing_kept and not job.passive and state.job_choice is not None:
            # The machine that holds the image refused its passphrase before anything was written: type it again.
            state.choice = dataclasses.replace(state.job_choice, passphrase=None)
            state.passphrase_problem = ended.message
            self.show_step("options")
            return
        written = state.job_choice.target if state.job_choice and not job.passive else None
        name = f"{short_name(written)} on {job.receiving_host}" if written else f"The target ({job.target})"
        lines = [job.target_state(name), job.how_far(), SOURCE_SAFE]
        lost = (
            ended.code == "link_lost"
            and not job.passive
            and state.link is not None
            and state.link.rejoin_secret() is not None
        )
        offers = self.offers(failed=True, linked=linked, lost=lost)
        if ended.peer_left:
            advice = peer_left(job.started.peer, ended.message.split(": ", 1)[-1])
        else:
            advice = advise(
                ended.code or "internal",
                ended.message,
                ended.hint,
                peer=job.started.peer,
                reported_by=ended.peer,
                serving=job.passive,
                keyed=any(o.key == "r" for o in offers),
            )
        screen = ErrorScreen(advice, offers, state=lines, log=ended.log, peer=job.started.peer)
        screen.set_status(self.kept_line(job) if linked else wizard.waiting_line())
        wizard.show(screen)
        chosen = state.job_choice
        if ended.code == "source_read" and not job.passive and chosen is not None and not chosen.rescue:
            wizard.push_screen(RescueScreen(job.started.peer), lambda yes: self.rescue_answered(yes is True))

    def rescue_answered(self, yes: bool) -> None:
        """After a read error: rescue mode for this source (a retry, or the same source chosen again; never
        another disk: choosing another source turns it off, see :func:`recovery.tui.flow.answer`)."""
        state = self.state
        if not yes or state.job_choice is None:
            return
        state.choice = state.job_choice = dataclasses.replace(state.job_choice, rescue=True)
        top = self.wizard.top
        if isinstance(top, ErrorScreen):
            linked = state.session is not None or state.repairing
            source = short_name(state.job_choice.source) if state.job_choice.source else "the source"
            top.set_status(
                f"Rescue mode is on for {source}: press r to retry the same clone. It resumes where it "
                "stopped and copies what can still be read; the review says so before it starts."
                + ("" if linked else " " + self.wizard.waiting_line())
            )

    def start_over(self) -> None:
        """Another clone (the answers stay as defaults), or the first screen when the link is gone."""
        if self.state.repairing:  # a moment: the pairing is being made again
            self.state.choose_again = True
            return
        self.state.auto_resume = False
        self.wizard.rejoin(None)
        if self.state.session is not None and self.state.drives:
            self.show_step("direction")
        else:
            self.wizard.reset_to_home()

    def retry(self) -> None:
        state = self.state
        if state.job_choice is None:
            return
        if state.session is not None and state.drives:
            state.choice = state.job_choice
            self.pending = "retry"
            self.wizard.load_inventory("retry")
            return
        state.retry = state.job_choice
        if not state.repairing:  # else it runs once the pairing is made again
            self.wizard.reset_to_home()

    def auto_resume(self) -> None:
        """The user allows it: when the same machine is back, pair again by the lost pairing's secret
        (no code) and resume the clone at once."""
        state, wizard = self.state, self.wizard
        secret = (state.link.rejoin_secret() if state.link is not None else None) or state.rejoin
        if secret is None or state.job_choice is None:
            wizard.notify("This clone cannot resume by itself: pair again and press r.", markup=False)
            return
        state.retry, state.auto_resume = dataclasses.replace(state.job_choice, restart=False), True
        wizard.rejoin(secret)
        top = wizard.top
        if isinstance(top, ErrorScreen):
            name = state.pin.hostname if state.pin is not None else wizard.peer_name
            top.set_status(
                f"Waiting for {name} to come back: this machine pairs with it again by itself "
                "(the lost pairing's key proves it is the same machine, no code needed) and the clone "
                "resumes where the target's safely written part ends."
            )

    def dismissed(self) -> None:
        state = self.state
        if state.session is not None and state.peer is not None and not state.drives:
            self.wizard.show(PassiveScreen(state.peer, state.activity, state.last_result, state.review))
        else:
            self.wizard.reset_to_home()

    def peer_activity(self, event: PeerActivity) -> None:
        state = self.state
        state.activity = event.what + (f" (step {event.step} of {event.steps})" if event.step else "")
        state.review = event.review
        screen = self.wizard.top
        if isinstance(screen, PassiveScreen):
            screen.show(state.activity, state.last_result, state.review)
        elif isinstance(screen, ResultScreen | SummaryScreen | ErrorScreen) and state.session is not None:
            self.dismissed()  # the driver moved on: so does this screen


def local_passphrase_problem(choice: Choice) -> str:
    """Why the passphrase typed for an encrypted image of this machine does not open it ("": it does, or
    the image is not this machine's, or not encrypted): checked before the review (one key derivation)."""
    entry = choice.image_source
    if not choice.send or entry is None or not entry.encrypted or choice.source is None:
        return ""
    try:
        imagepass.check(imagedir.saved_image(choice.source.path), choice.passphrase)
    except RecoveryError as e:
        return e.message[0].upper() + e.message[1:]
    return ""
