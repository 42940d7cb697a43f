"""The wizard app: state, workers, and which screen shows when.

Blocking work runs in thread workers (reading the disks, asking the link
its speed, the session with its clones); finding the peer runs in
:mod:`recovery.tui.peering`. They post small messages back, and screens
post requests (:mod:`recovery.tui.messages`); the handlers here only update
:class:`WizardState` and switch screens. A worker that fails is never
dropped: its traceback goes to a log and the screen says where.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from functools import partial
from typing import ClassVar

from textual.app import App
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.message import Message
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from recovery import events
from recovery.disks import machinename
from recovery.engine import joblog
from recovery.engine.clone.compare import compare
from recovery.engine.peer.clones import CloneSession
from recovery.engine.peer.guard import CodeGuard
from recovery.engine.peer.jobs import (
    ImagesFound,
    JobEnded,
    JobStarted,
    PeerActivity,
    PeerDisks,
    disk_paths,
    offered_disks,
)
from recovery.engine.peer.seen import Pin
from recovery.engine.peer.session import PeerLink
from recovery.errors import PeerLeftError, RecoveryError
from recovery.link.paced import pace
from recovery.protocol.messages import DiskInfo
from recovery.tui.advice import advise, pairing_notice, peer_left
from recovery.tui.config import WizardConfig
from recovery.tui.job import JobView
from recovery.tui.links import read_report
from recovery.tui.messages import (
    AbortAsked,
    AutoResumeAsked,
    DemoChecked,
    Dismissed,
    DriveAsked,
    EndPairingAsked,
    EngineEvent,
    ImageAsked,
    InventoryLoaded,
    LinksRead,
    LinkStatus,
    ListeningOn,
    LobbyChanged,
    LobbyEvent,
    PeerConnected,
    PeerSpeed,
    ReloadAsked,
    RetryAsked,
    SessionEnded,
    StartOverAsked,
    StepAnswered,
    StepBack,
    StepChanged,
)
from recovery.tui.peering import Peering, new_code
from recovery.tui.screens.dialogs import ConfirmScreen, HelpScreen
from recovery.tui.screens.home import HomeScreen
from recovery.tui.screens.pair import PeerScreen
from recovery.tui.screens.progress import ProgressScreen
from recovery.tui.screens.results import ErrorScreen, Offer, ResultScreen, SummaryScreen
from recovery.tui.state import PeerView, WizardState
from recovery.tui.stepper import Stepper

REPAIR_WAIT = 30.0  # seconds for a failed clone's pairing to be made again before it counts as over


class WizardApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "usb4-recovery"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "help", "Help"),
        Binding("ctrl+q", "quit", "Quit", show=False),  # in the help (F1): the footer keeps to 60 columns
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(self, config: WizardConfig | None = None) -> None:
        self.config = config or WizardConfig()
        super().__init__(ansi_color=bool(self.config.ansi))
        self.machine_name = self.config.hostname or machinename.this_machine().name
        self.state = WizardState(host=self.machine_name)  # state.host: this name, tagged while paired with a namesake
        self.guard = CodeGuard(self.config.code, on_new_code=new_code(self.post_message))
        self.state.code = self.guard.code
        self.peering = Peering(self.config, self.guard, self.read_disks, self.post_message)
        self.steps = Stepper(self)
        self.closing = False
        self._repair_of: CloneSession | None = None  # the session whose failed clone kept the pairing

    # --- start and stop ---

    def on_mount(self) -> None:
        if self.config.ansi:
            self.theme = "ansi-dark"
        self.push_screen(HomeScreen(self.state, hint=self.config.code_hint, listens=self.config.listen is not None))
        self.load_inventory("start")

    def on_unmount(self) -> None:
        """Stop every worker's I/O so the app never waits on a blocked thread.

        The session closes in a thread of its own, not here: telling the peer bye can take seconds (a
        clone to cancel, a slow peer). Not in a worker: the app is ending, and a worker started now
        might never run. Not a daemon: the process waits for it, so the peer is still told.
        """
        self.closing = True
        self.peering.close()
        session = self.state.session
        if session is not None:
            stopped = self.return_code not in (None, 0)  # a hang-up or SIGTERM (tui.run_wizard)
            why = (
                f"the wizard on {self.state.host} was stopped"
                if stopped
                else f"{self.state.host}'s user quit the wizard"
            )
            threading.Thread(target=session.close, args=(why,), name="wizard-close", daemon=False).start()

    def action_quit(self) -> None:  # type: ignore[override]
        session = self.state.session
        if isinstance(self.top, ConfirmScreen):
            return  # already asking
        if session is not None and session.busy:
            self.ask(
                "A clone is running. Abort it and quit?\nThe target will hold an incomplete copy.", lambda: self.exit(0)
            )
        else:
            self.exit(0)

    def action_help(self) -> None:
        if not isinstance(self.top, HelpScreen):
            self.push_screen(HelpScreen())

    def ask(self, question: str, then: Callable[[], object]) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                then()

        self.push_screen(ConfirmScreen(question), answered)

    def post(self, msg: Message) -> None:
        """Post from any thread (a callback's shape)."""
        self.post_message(msg)

    # --- workers, and what happens when one fails ---

    def in_thread(self, work: Callable[[], None], group: str) -> None:
        self.run_worker(work, thread=True, group=group, exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is not WorkerState.ERROR or self.closing:
            return
        error = event.worker.error
        log = self.internal_error(error)
        offers = self.steps.offers(failed=True)
        said = f"internal error in {event.worker.group}: {type(error).__name__}: {error}"
        serving = self.state.session is not None and not self.state.drives
        advice = advise("internal", said, peer=self.peer_name, serving=serving, keyed=any(o.key == "r" for o in offers))
        self.show(ErrorScreen(advice, offers, log=log))

    def internal_error(self, error: BaseException | None) -> str | None:
        """Write the traceback of a bug where logs go; the path, or None where nothing is writable."""
        text = "".join(traceback.format_exception(error)) if error else traceback.format_exc()
        directory = self.config.log_dir or joblog.default_dir()
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = directory / "wizard-internal-errors.log"
            with open(path, "a", encoding="utf-8") as f:
                f.write(text + "\n")
        except OSError:
            return None
        return str(path)

    @property
    def top(self) -> Screen[object] | None:
        """The screen on top (None while the app is ending)."""
        return self.screen_stack[-1] if self.screen_stack else None

    @property
    def peer_name(self) -> str:
        return self.state.peer.hostname if self.state.peer else "the other machine"

    # --- this machine ---

    def load_inventory(self, why: str) -> None:
        self.run_worker(partial(self._read_machine, why), thread=True, group="inventory", exit_on_error=False)

    def read_disks(self) -> tuple[DiskInfo, ...]:
        """This machine's disks as they are now (any thread): what a pairing or a plan offers."""
        if self.config.inventory:
            return self.config.inventory()
        return offered_disks(self.config.disks, self.config.log_dir)

    def _read_machine(self, why: str) -> None:
        error = None
        try:
            disks = self.read_disks()
        except RecoveryError as e:
            disks, error = (), e
        links = self.config.links() if self.config.links else read_report()
        self.post_message(InventoryLoaded(disks, links, error, why))

    def on_inventory_loaded(self, msg: InventoryLoaded) -> None:
        self.state.disks, self.state.links = msg.disks, msg.links
        if msg.error is not None:
            self.notify(msg.error.message, title="Reading the disks failed", severity="error", markup=False)
        self.refresh_home()
        if self.state.link is None:
            self.peering.open(self.state.pin)
        self.steps.disks_read(msg.why)

    def on_reload_asked(self, _msg: ReloadAsked) -> None:
        self.load_inventory("reload")

    def refresh_home(self) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, HomeScreen) and screen.is_mounted:
                try:
                    screen.refresh_view()
                except NoMatches:
                    pass  # not composed yet: it refreshes when it shows

    # --- finding the peer ---

    def on_link_status(self, msg: LinkStatus) -> None:
        self.state.status[msg.source] = msg.text
        if msg.source == "cable" and self.config.links is None:
            self.in_thread(lambda: self.post(LinksRead(read_report())), "links")
        self.refresh_home()

    def on_listening_on(self, msg: ListeningOn) -> None:
        self.state.listening = (msg.host, msg.port)
        self.refresh_home()

    def on_links_read(self, msg: LinksRead) -> None:
        self.state.links = msg.links
        self.refresh_home()

    def on_lobby_changed(self, msg: LobbyChanged) -> None:
        self.state.seen = msg.seen
        self.refresh_home()

    def on_lobby_event(self, msg: LobbyEvent) -> None:
        event = msg.event
        if isinstance(event, events.PairingCode):
            self.state.code = event.code
            if event.why and event.why != "a new pairing":
                self.state.notice = f"{event.why}. This machine's new code is {event.code}."
            self.refresh_home()
            if self.state.link is None and not self.state.repairing:
                self.say_unpaired()
        elif isinstance(event, events.PairingAttempt) and not event.ok:
            text = f"{event.peer}: {event.message or event.reason}"
            notice = pairing_notice(event, self.state.code)
            if notice is None:
                self.notify(text, title="Not paired", severity="error", markup=False)
            else:
                self.state.notice = notice  # on the first screen until dismissed
            self.state.status["peer"] = text
            self.refresh_home()
        elif isinstance(event, events.RejoinRefused):
            if self.state.repairing or self.state.auto_resume:
                self.pairing_not_kept(event.message)
        elif isinstance(event, events.Phase) and event.name == "connect":
            self.state.status["connect"] = event.message
            self.refresh_home()

    def waiting_line(self) -> str:
        why = f"{self.state.unpaired_why}. " if self.state.unpaired_why else ""
        return (
            f"{why}This machine's new code is {self.state.code}: to pair again, type it on the other machine, "
            "or type that machine's code here on the first screen (Enter)."
        )

    def say_unpaired(self, why: str | None = None) -> ResultScreen | None:
        """The pairing is over (``why``, when given): the latest result on screen says so, and how to
        pair again; that result, if one is up."""
        if why is not None:
            self.state.unpaired_why = why
        result = next((s for s in reversed(self.screen_stack) if isinstance(s, ResultScreen)), None)
        if result is not None:
            result.set_status(self.waiting_line())
        return result

    def on_drive_asked(self, msg: DriveAsked) -> None:
        if self.state.link is not None:
            self.notify(f"Already paired with {self.peer_name}", markup=False)
            return
        why = self.peering.drive(msg.code, msg.address)
        if why:
            self.notify(why, severity="warning", markup=False)
        self.refresh_home()

    def on_peer_connected(self, msg: PeerConnected) -> None:
        link = msg.link
        if self.closing or self.state.link is not None:
            link.close()
            link.conn.close()
            return
        if self.config.link_rate:
            pace(link.conn, self.config.link_rate)
        self.peering.paired()
        self.state.status.pop("peer", None)
        self.state.notice = self.state.unpaired_why = ""
        self.state.seen = []
        session = CloneSession(
            link,
            candidates=lambda: disk_paths(self.config.disks),
            offered=self.read_disks,
            sink=lambda e: self.post(EngineEvent(e)),
            log_dir=self.config.log_dir,
        )
        self.state.link, self.state.session, self.state.peer = link, session, PeerView.of(link)
        self.state.host = link.our_name
        if not (self.state.repairing and link.rejoined):  # the same pairing goes on: so does what it said
            self.state.activity = self.state.last_result = ""
            self.state.review = ()
        self.in_thread(partial(self._serve, session), "session")
        self.in_thread(partial(self._ask_speed, link), "speed")
        self.steps.paired(Pin.of(link))

    def _ask_speed(self, link: PeerLink) -> None:  # a worker thread: a TCP link asks `ip`, for seconds at worst
        self.post_message(PeerSpeed(link, link.conn.speed()))

    def on_peer_speed(self, msg: PeerSpeed) -> None:
        if msg.link is not self.state.link or self.state.peer is None:
            return  # that pairing is over
        self.state.peer = self.state.peer.with_speed(msg.speed)
        for screen in self.screen_stack:
            if isinstance(screen, PeerScreen):
                screen.set_peer(self.state.peer)

    def _serve(self, session: CloneSession) -> None:  # the session's thread
        error: RecoveryError | None = None
        try:
            session.serve()
        except RecoveryError as e:
            error = e
        except Exception as e:  # noqa: BLE001 - a bug ends the session on a screen, with its traceback logged
            log = self.internal_error(e)
            error = RecoveryError(
                f"internal error: {type(e).__name__}: {e}", hint=f"the traceback is in {log}" if log else None
            )
        self.post_message(SessionEnded(session, error))

    def on_session_ended(self, msg: SessionEnded) -> None:
        session, error = msg.session, msg.error
        if session is not self.state.session:
            return
        peer = self.peer_name
        self.state.link = self.state.session = self.state.peer = None
        self.state.host = self.machine_name
        self.state.pin = Pin.of(session.link)
        kept = session.kept_pairing(error) and not self.closing
        self.lost_pairing(session, error, kept)
        if self.closing:
            return
        if kept:  # the result on screen says the pairing stays; the two pair again by themselves
            self.state.repairing, self._repair_of = True, session
            self.peering.open(self.state.pin)
            self.set_timer(REPAIR_WAIT, partial(self.repair_overdue, session))
            return
        self.state.code = self.guard.renew("a new pairing")
        self.peering.open(self.state.pin)
        if error is not None:
            self.pairing_ended(error, peer, serving=session.link.role == "server")

    def pairing_ended(self, error: RecoveryError, peer: str, *, serving: bool) -> None:
        """Say on screen that the pairing is over and why: on the result of the last clone, if that is
        up (its story stays), else on a screen of its own."""
        left = isinstance(error, PeerLeftError)
        if left:
            why = f"{peer} ended the pairing ({error.message.split(': ', 1)[-1]})"
        else:
            why = f"The pairing with {peer} ended: {error.message}"
        if self.say_unpaired(why) is not None or isinstance(self.top, ProgressScreen):
            return
        self.state.unpaired_why = ""  # the screen below says it all
        if left:
            advice = peer_left(peer, error.message.split(": ", 1)[-1])
        else:
            advice = advise(
                error.code, error.message, error.hint, peer=peer, reported_by=error.peer, serving=serving, keyed=False
            )
        screen = ErrorScreen(advice, [Offer("enter", "First screen", Dismissed)], peer=peer)
        screen.set_status(self.waiting_line())
        self.show(screen)

    def lost_pairing(self, session: CloneSession, error: RecoveryError | None, kept: bool) -> None:
        """A lost link, or a failed clone that keeps the pairing (not a goodbye, not a quit): the serving
        side lets the same peer pair again once without a code; the driving side pairs again at once
        (``kept``), or keeps the secret for when its user allows resuming by itself."""
        secret = session.rejoin_after(error) if not self.closing else None
        if session.link.role == "server":
            self.guard.session_ended(secret)
        elif kept:
            self.peering.rejoin(secret)
        else:
            self.state.rejoin = secret

    def repair_overdue(self, session: CloneSession) -> None:
        """The pairing ``session``'s failed clone kept did not come back in time: it is over."""
        if self.state.repairing and self._repair_of is session and self.state.pin is not None:
            self.pairing_not_kept(f"{self.state.pin.hostname} did not come back to go on with the pairing")

    def pairing_not_kept(self, why: str) -> None:
        """The pairing a failed clone kept (or a lost pairing to resume by itself) cannot be made again
        by its secret: stop waiting, say why, and wait to be paired by a code."""
        self.state.repairing = self.state.choose_again = self.state.auto_resume = False
        self.peering.rejoin(None)
        self.guard.forget_rejoin()
        self.state.code = self.guard.renew("a new pairing")
        self.state.notice = f"{why}."
        self.say_unpaired(why)
        self.refresh_home()

    # --- screens ask ---

    def on_step_answered(self, msg: StepAnswered) -> None:
        self.steps.answered(msg.step, msg.value)

    def on_image_asked(self, msg: ImageAsked) -> None:
        self.steps.image_asked(msg.step)

    def on_step_back(self, msg: StepBack) -> None:
        self.steps.back(msg.step, msg.value)

    def on_step_changed(self, msg: StepChanged) -> None:
        self.steps.tell(msg.step, msg.rows)

    def on_end_pairing_asked(self, _msg: EndPairingAsked) -> None:
        self.ask(f"End the pairing with {self.peer_name}?\nIts screen goes back to its first screen.", self.end_pairing)

    def end_pairing(self) -> None:
        session = self.state.session
        self.peering.forget()
        self.guard.forget_rejoin()  # the user here ended it: that machine may not come back by itself
        self.state.retry, self.state.auto_resume = None, False
        self.reset_to_home()
        if session is not None:
            self.in_thread(partial(session.close, f"{self.state.host} ended the pairing"), "closing")

    def rejoin(self, secret: bytes | None) -> None:
        """Pair again by itself with the last machine by this secret when it is back (None: never)."""
        self.peering.rejoin(secret)

    def on_abort_asked(self, _msg: AbortAsked) -> None:
        def abort() -> None:
            if self.state.session is not None:
                self.state.session.cancel()

        self.ask("Abort the clone?\nThe target will hold an incomplete copy.", abort)

    def on_start_over_asked(self, _msg: StartOverAsked) -> None:
        self.steps.start_over()

    def on_retry_asked(self, _msg: RetryAsked) -> None:
        self.steps.retry()

    def on_auto_resume_asked(self, _msg: AutoResumeAsked) -> None:
        self.steps.auto_resume()

    def on_dismissed(self, _msg: Dismissed) -> None:
        self.steps.dismissed()

    # --- a clone runs ---

    def on_engine_event(self, msg: EngineEvent) -> None:
        event = msg.event
        if isinstance(event, PeerDisks):
            return  # the session keeps them (link.inventory); the next step shows them
        if isinstance(event, PeerActivity):
            self.steps.peer_activity(event)
            return
        if isinstance(event, ImagesFound):
            self.steps.images_found(event)
            return
        if isinstance(event, JobStarted):
            self.state.review = ()  # confirmed: the clone runs
            self.state.job = JobView(event, host=self.state.host)
            self.state.job_link = self.state.link
            self.show(ProgressScreen(self.state.job))
            return
        job = self.state.job
        if job is None:
            return
        if isinstance(event, JobEnded):
            if job.passive:  # what the driver's user does now (until it says more)
                self.state.activity = "looking at how the clone ended"
            self.steps.job_ended(job, event)
            self.load_inventory("job")
            return
        job.apply(event)
        top = self.top
        if isinstance(top, ProgressScreen) and top.job is job:
            top.refresh_view()

    def check_demo(self, source: str, target: str) -> None:
        """The demo compares its two images byte for byte (a worker); DemoChecked says how it went."""
        self.in_thread(partial(self._compare_demo, source, target), "demo")

    def _compare_demo(self, source: str, target: str) -> None:  # a worker thread
        try:
            result = compare(source, target)
        except RecoveryError as e:
            self.post_message(DemoChecked(False, "", e.message))
            return
        self.post_message(DemoChecked(result.identical, result.target_digest))

    def on_demo_checked(self, msg: DemoChecked) -> None:
        if msg.error:
            text = f"Demo check: could not compare the images: {msg.error}"
        elif msg.identical:
            text = f"Demo check: the target image is byte-identical to the source.\n  BLAKE3 {msg.digest}"
        else:
            text = "Demo check: the target image DIFFERS from the source."
        top = self.top
        if isinstance(top, SummaryScreen):
            top.show_demo_check(text, same=msg.identical and not msg.error)

    # --- screens ---

    def reset_to_home(self) -> None:
        while len(self.screen_stack) > 1 and not isinstance(self.top, HomeScreen):
            self.pop_screen()
        self.refresh_home()

    def show(self, screen: Screen[None]) -> None:
        """The first screen, and ``screen`` over it."""
        if self.closing or not self.screen_stack:
            return
        self.reset_to_home()
        self.push_screen(screen)
