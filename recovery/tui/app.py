"""The wizard app: state, workers, and which screen shows when.

Blocking work runs in thread workers (reading the disks, finding the peer,
the session with its clones); they post small messages back, and the
handlers here only update :class:`WizardState` and switch screens. The
engine's events reach the progress screen through :class:`EngineEvent`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar

from textual.app import App
from textual.binding import Binding, BindingType

from recovery import events
from recovery.engine.agent import AgentSession, JobEnded, JobStarted, disk_paths, offered_disks
from recovery.engine.compare import compare
from recovery.engine.session import PeerLink
from recovery.errors import RecoveryError, UsageError
from recovery.link import tcp
from recovery.link.discovery import CableMonitor
from recovery.protocol.messages import DiskInfo
from recovery.tui.advice import Advice, advise
from recovery.tui.cable import describe_event, open_cable
from recovery.tui.config import WizardConfig
from recovery.tui.finder import PeerFinder
from recovery.tui.links import LinkReport, read_report
from recovery.tui.messages import (
    DemoChecked,
    EngineEvent,
    InventoryLoaded,
    LinksRead,
    LinkStatus,
    PeerConnected,
    SessionEnded,
)
from recovery.tui.model import Choice, JobView, source_refusal, target_refusal
from recovery.tui.screens.dialogs import ConfirmScreen, HelpScreen
from recovery.tui.screens.home import HomeScreen
from recovery.tui.screens.pair import PairScreen, PeerView
from recovery.tui.screens.progress import ProgressScreen
from recovery.tui.screens.results import ErrorScreen, SummaryScreen
from recovery.tui.screens.steps import DirectionScreen, DiskScreen, OptionsScreen, ReviewScreen


@dataclass
class WizardState:
    host: str
    disks: tuple[DiskInfo, ...] | None = None  # None: still reading them
    links: LinkReport | None = None
    status: dict[str, str] = field(default_factory=dict)  # link status by source
    link: PeerLink | None = None
    peer: PeerView | None = None
    session: AgentSession | None = None
    paired: bool = False  # the user confirmed this link's pairing code
    choice: Choice = field(default_factory=Choice)
    job: JobView | None = None
    job_link: PeerLink | None = None  # the link the last clone ran on


class WizardApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "usb4-recovery"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "help", "Help"),
        Binding("ctrl+q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(self, config: WizardConfig | None = None) -> None:
        self.config = config or WizardConfig()
        ansi = self.config.ansi
        super().__init__(ansi_color=bool(ansi))
        self.state = WizardState(host=self.config.hostname or socket.gethostname())
        self.finder: PeerFinder | None = None
        self.reconnect = self.config.connect  # where to connect (again) when no peer is there
        self.closing = False

    # --- start and stop ---

    def on_mount(self) -> None:
        if self.config.ansi:
            self.theme = "ansi-dark"
        self.push_screen(HomeScreen())
        self.load_inventory()

    def on_unmount(self) -> None:
        """Stop every worker's I/O so the app never waits on a blocked thread."""
        self.closing = True
        if self.finder is not None:
            self.finder.stop()
        session = self.state.session
        if session is not None:
            session.close(f"{self.state.host} closed the wizard")

    def action_quit(self) -> None:  # type: ignore[override]
        session = self.state.session
        if isinstance(self.screen, ConfirmScreen):
            return  # already asking
        if session is not None and session.busy:
            self.push_screen(ConfirmScreen("A clone is running. Abort it and quit?\n"
                                           "The target will hold an incomplete copy."),
                             lambda yes: self.exit(0) if yes else None)
        else:
            self.exit(0)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    # --- this machine ---

    def load_inventory(self) -> None:
        self.run_worker(self._read_machine, thread=True, group="inventory", exclusive=True, exit_on_error=False)

    def _read_machine(self) -> None:
        error = None
        try:
            disks = self.config.inventory() if self.config.inventory else offered_disks(self.config.disks)
        except RecoveryError as e:
            disks, error = (), e
        except Exception as e:  # noqa: BLE001 - udev or sysfs surprises: say so on screen, keep going
            disks, error = (), RecoveryError(f"cannot read the disks: {type(e).__name__}: {e}")
        links = self.config.links() if self.config.links else read_report()
        self.post_message(InventoryLoaded(disks, links, error))

    def on_inventory_loaded(self, msg: InventoryLoaded) -> None:
        self.state.disks, self.state.links = msg.disks, msg.links
        if msg.error is not None:
            self.notify(msg.error.message, title="Reading the disks failed", severity="error")
        self._refresh_home()
        if self.finder is None and self.state.link is None:
            self._start_finder()

    def _refresh_home(self) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, HomeScreen) and screen.is_mounted:
                screen.refresh_view()

    # --- finding the peer ---

    def _start_finder(self) -> None:
        config = self.config
        if self.closing or self.state.disks is None or not (config.listen or self.reconnect or config.cable):
            return
        finder = PeerFinder(disks=lambda: self.state.disks or (), found=self._found, status=self._status,
                            hostname=config.hostname, timeout=config.timeout)
        self.finder = finder
        if config.cable:
            self._in_thread(partial(finder.use, "cable", open_cable), "finder")
            self._in_thread(partial(self._watch_cable, finder), "finder")
        if config.listen is not None:
            self._in_thread(partial(finder.listen, config.listen), "finder")
        if self.reconnect is not None:
            self._in_thread(partial(finder.connect, self.reconnect), "finder")

    def _watch_cable(self, finder: PeerFinder) -> None:  # a worker thread
        try:
            monitor = CableMonitor()
        except RecoveryError as e:
            self._status("cable", f"cannot watch the cable: {e.message}")
            return
        finder.watch("cable", monitor, describe_event)

    def _in_thread(self, work: Callable[[], None], group: str) -> None:
        self.run_worker(work, thread=True, group=group, exit_on_error=False)

    def _found(self, link: PeerLink) -> None:  # a finder's thread
        if not self.post_message(PeerConnected(link)):
            link.close()
            link.conn.close()

    def _status(self, source: str, text: str) -> None:  # a finder's thread
        self.post_message(LinkStatus(source, text))

    def on_link_status(self, msg: LinkStatus) -> None:
        self.state.status[msg.source] = msg.text
        if msg.source == "cable" and self.config.links is None:
            self._in_thread(self._reread_links, "links")  # a host came or went: modules, speeds
        self._refresh_home()

    def _reread_links(self) -> None:  # a worker thread
        self.post_message(LinksRead(read_report()))

    def on_links_read(self, msg: LinksRead) -> None:
        self.state.links = msg.links
        self._refresh_home()

    def connect_to(self, text: str) -> None:
        """The user typed the other machine's address."""
        try:
            ep = tcp.parse_endpoint(text)
        except UsageError as e:
            self.notify(e.message, severity="error")
            return
        if not ep.host:
            self.notify("Give the other machine's address, e.g. 192.168.1.20", severity="error")
            return
        self.reconnect = ep
        if self.state.link is not None:
            self.notify(f"Already connected to {self.state.link.theirs.host.hostname}")
        elif self.finder is None:
            self._start_finder()
        else:
            self._in_thread(partial(self.finder.connect, ep), "finder")

    def on_peer_connected(self, msg: PeerConnected) -> None:
        link = msg.link
        if self.closing or self.state.link is not None:
            link.close()
            link.conn.close()
            return
        if self.finder is not None:
            self.finder.stop()
            self.finder = None
        self.state.status.pop("peer", None)
        session = AgentSession(link, candidates=lambda: disk_paths(self.config.disks), sink=self._engine_sink,
                               log_dir=self.config.log_dir)
        self.state.link, self.state.session, self.state.paired = link, session, False
        self.state.peer = PeerView.of(link)
        self._in_thread(partial(self._serve, session), "session")
        self.offer_pairing()

    def _engine_sink(self, event: events.Event) -> None:  # the session's thread
        self.post_message(EngineEvent(event))

    def _serve(self, session: AgentSession) -> None:  # the session's thread
        error: RecoveryError | None = None
        try:
            session.serve()
        except RecoveryError as e:
            error = e
        except Exception as e:  # noqa: BLE001 - a bug ends the session on a screen, not as a traceback
            error = RecoveryError(f"internal error: {type(e).__name__}: {e}")
        self.post_message(SessionEnded(session, error))

    def offer_pairing(self) -> None:
        """Show the pairing screen, unless the user is reading something else."""
        state = self.state
        if state.link is None or state.paired or state.peer is None or state.link is state.job_link:
            return
        top = self.screen
        waiting = isinstance(top, ErrorScreen) and top.advice.waiting
        if isinstance(top, HomeScreen) or waiting:
            self._reset_to_home()
            self.push_screen(PairScreen(state.peer))
        elif isinstance(top, ErrorScreen):
            top.set_status(f"{state.peer.hostname} is connected again: press Enter to start over.")

    def home_shown(self) -> None:
        self.offer_pairing()

    def _drop_session(self, reason: str) -> None:
        """Close the current session in the background; the finder starts again when it ends."""
        session = self.state.session
        self.state.link = self.state.session = self.state.peer = None
        self.state.paired = False
        if session is not None:
            self._in_thread(partial(session.close, reason), "closing")

    def on_session_ended(self, msg: SessionEnded) -> None:
        current = msg.session is self.state.session
        if current:
            peer = self.state.peer.hostname if self.state.peer else "the other machine"
            self.state.link = self.state.session = self.state.peer = None
            self.state.paired = False
        if self.finder is None and self.state.link is None:
            self._start_finder()
        if not current or msg.error is None:
            return
        if isinstance(self.screen, (ErrorScreen, SummaryScreen, ProgressScreen)):
            return  # a clone's own result is on screen; reconnecting runs in the background
        self._show(ErrorScreen(self._lost(msg.error, peer), peer=peer))

    @staticmethod
    def _lost(error: RecoveryError, peer: str) -> Advice:
        if error.code == "cancelled":
            reason = error.message.removeprefix("the peer cancelled: ")
            return Advice(title=f"{peer} closed the connection", message=reason,
                          steps=(f"The wizard connects again by itself when {peer} is ready.",),
                          waiting=True, code=error.code)
        advice = advise(error.code, error.message, error.hint, peer=peer)
        return Advice(advice.title, advice.message, advice.steps, True, advice.code)

    # --- the wizard's steps ---

    def confirm_pairing(self) -> None:
        state = self.state
        if state.peer is None or state.link is None:
            return
        state.paired = True
        self.push_screen(DirectionScreen(state.host, state.peer.hostname), self._on_direction)

    def reject_pairing(self) -> None:
        self.reconnect = None  # not this peer again, by itself
        self._drop_session(f"the pairing code did not match on {self.state.host}")
        self._reset_to_home()

    def _machines(self) -> tuple[tuple[DiskInfo, ...], tuple[DiskInfo, ...]]:
        """(this machine's disks, the peer's disks) as the peer's hello and our inventory say."""
        link = self.state.link
        return (link.ours.disks, link.theirs.disks) if link else ((), ())

    def _on_direction(self, send: object) -> None:
        if not isinstance(send, bool) or self.state.peer is None:
            return
        ours, theirs = self._machines()
        holder = self.state.host if send else self.state.peer.hostname
        disks = ours if send else theirs
        self.state.choice = Choice(send=send)
        self.push_screen(DiskScreen(
            f"The disk to copy (on {holder})",
            f"Choose the disk of {holder} to copy. It is only read, never changed.",
            disks, {d.path: source_refusal(d) for d in disks}), self._on_source)

    def _on_source(self, disk: object) -> None:
        if not isinstance(disk, DiskInfo) or self.state.peer is None:
            return
        choice = self.state.choice
        choice.source = disk
        ours, theirs = self._machines()
        holder = self.state.peer.hostname if choice.send else self.state.host
        disks = theirs if choice.send else ours
        self.push_screen(DiskScreen(
            f"The disk to overwrite (on {holder})",
            f"Choose the disk of {holder} that becomes the copy. EVERYTHING ON IT WILL BE LOST.",
            disks, {d.path: target_refusal(disk, d) for d in disks}), self._on_target)

    def _on_target(self, disk: object) -> None:
        if not isinstance(disk, DiskInfo):
            return
        self.state.choice.target = disk
        self.push_screen(OptionsScreen(self.state.choice), self._on_options)

    def _on_options(self, choice: object) -> None:
        if not isinstance(choice, Choice) or self.state.peer is None:
            return
        self.state.choice = choice
        self.push_screen(ReviewScreen(choice, self.state.host, self.state.peer.hostname), self._on_review)

    def _on_review(self, confirmed: object) -> None:
        session = self.state.session
        if confirmed is not True:
            return
        if session is None:
            self.notify("The other machine is gone; the clone did not start.", severity="error")
            self._reset_to_home()
            return
        session.submit(self.state.choice.complete())

    # --- a clone runs ---

    def on_engine_event(self, msg: EngineEvent) -> None:
        event = msg.event
        if isinstance(event, JobStarted):
            self.state.job = JobView(event)
            self.state.job_link = self.state.link
            self._show(ProgressScreen(self.state.job))
            return
        job = self.state.job
        if job is None:
            return
        if isinstance(event, JobEnded):
            self._job_ended(job, event)
            return
        job.apply(event)
        if isinstance(self.screen, ProgressScreen) and self.screen.job is job:
            self.screen.refresh_view()

    def _job_ended(self, job: JobView, ended: JobEnded) -> None:
        if ended.ok and job.summary is not None:
            self._show(SummaryScreen(job, self.state.host))
            choice = self.state.choice
            if self.config.demo and not job.passive and choice.source and choice.target:
                self._in_thread(partial(self._demo_check, choice.source.path, choice.target.path), "demo")
            return
        advice = advise(ended.code or "internal", ended.message, ended.hint, peer=job.started.peer)
        self._show(ErrorScreen(advice, log=ended.log, peer=job.started.peer))

    def ask_abort(self) -> None:
        def answer(yes: bool | None) -> None:
            if yes and self.state.session is not None:
                self.state.session.cancel()

        self.push_screen(ConfirmScreen("Abort the clone?\nThe target will hold an incomplete copy."), answer)

    def _demo_check(self, source: str, target: str) -> None:  # a worker thread
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
        if isinstance(self.screen, SummaryScreen):
            self.screen.show_demo_check(text)

    def start_over(self) -> None:
        """Back to the first screen; a link that carried a clone is closed for fresh hellos."""
        if self.state.link is not None and self.state.link is self.state.job_link:
            self._drop_session(f"{self.state.host} starts a new clone")
        self._reset_to_home()

    # --- screens ---

    def _reset_to_home(self) -> None:
        while len(self.screen_stack) > 1 and not isinstance(self.screen, HomeScreen):
            self.pop_screen()

    def _show(self, screen: ProgressScreen | SummaryScreen | ErrorScreen) -> None:
        self._reset_to_home()
        self.push_screen(screen)
