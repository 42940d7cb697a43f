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
from textual.css.query import NoMatches

from recovery import events
from recovery.engine.agent import AgentSession
from recovery.engine.cable import cable_source, watch
from recovery.engine.compare import compare
from recovery.engine.guard import CodeGuard
from recovery.engine.jobs import JobEnded, JobStarted, PeerDisks, disk_paths, offered_disks
from recovery.engine.lobby import DRIVABLE, Lobby, Seen
from recovery.engine.session import PeerLink
from recovery.errors import RecoveryError, UsageError
from recovery.link import tcp
from recovery.link.discovery import CableMonitor
from recovery.link.select import LinkSpec, listen
from recovery.protocol.messages import DiskInfo, Hello
from recovery.tui.advice import Advice, advise
from recovery.tui.config import WizardConfig
from recovery.tui.links import LinkReport, read_report
from recovery.tui.messages import (
    DemoChecked,
    EngineEvent,
    InventoryLoaded,
    LinksRead,
    LinkStatus,
    LobbyChanged,
    LobbyEvent,
    PeerConnected,
    SessionEnded,
)
from recovery.tui.model import Choice, JobView, source_refusal, target_refusal
from recovery.tui.screens.dialogs import ConfirmScreen, HelpScreen
from recovery.tui.screens.home import HomeScreen
from recovery.tui.screens.pair import PairScreen, PassiveScreen, PeerView
from recovery.tui.screens.progress import ProgressScreen
from recovery.tui.screens.results import ErrorScreen, SummaryScreen
from recovery.tui.screens.steps import DirectionScreen, DiskScreen, OptionsScreen, ReviewScreen


@dataclass
class WizardState:
    host: str
    code: str = ""  # this machine's pairing code, shown on the first screen
    disks: tuple[DiskInfo, ...] | None = None  # None: still reading them
    links: LinkReport | None = None
    status: dict[str, str] = field(default_factory=dict)  # link status by source
    seen: list[Seen] = field(default_factory=list)  # machines that reached us, not paired
    link: PeerLink | None = None
    peer: PeerView | None = None
    session: AgentSession | None = None
    paired: bool = False  # the driving user went on from the pairing screen
    choice: Choice = field(default_factory=Choice)
    job: JobView | None = None
    job_link: PeerLink | None = None  # the link the last clone ran on


def only_wizards_and_agents(hello: Hello) -> str | None:
    """The wizard pairs with another wizard or an agent; headless send/receive have their own partners."""
    if hello.role in ("wizard", "agent"):
        return None
    command = {"sender": "send", "receiver": "receive"}.get(hello.role, hello.role)
    return (f"{hello.host.hostname} runs `recovery {command}`; start `recovery tui` or `recovery agent` "
            "there instead")


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
        self.guard = CodeGuard(self.config.code, on_new_code=self._new_code)
        self.state.code = self.guard.code
        self.lobby: Lobby | None = None
        self.reconnect = self.config.connect  # a peer to reach (again) when none is paired
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
        if self.lobby is not None:
            self.lobby.close()
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
        if self.lobby is None and self.state.link is None:
            self._open_lobby()

    def _refresh_home(self) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, HomeScreen) and screen.is_mounted:
                try:
                    screen.refresh_view()
                except NoMatches:
                    pass  # not composed yet, or being torn down: it refreshes when it shows again

    # --- finding the peer ---

    def _new_code(self, code: str, why: str) -> None:  # any thread
        self.post_message(LobbyEvent(events.PairingCode(code, why)))

    def _lobby_event(self, event: events.Event) -> None:  # a lobby thread
        self.post_message(LobbyEvent(event))

    def _lobby_changed(self, seen: list[Seen]) -> None:  # a lobby thread
        self.post_message(LobbyChanged(seen))

    def _open_lobby(self) -> None:
        """Wait for the other machine: on the cable, on TCP, at an address given at start."""
        config = self.config
        if self.closing or self.state.disks is None:
            return
        lobby = Lobby(self.guard, "wizard", offered=lambda: self.state.disks or (), refuse=only_wizards_and_agents,
                      sink=self._lobby_event, found=self._found, changed=self._lobby_changed,
                      timeout=config.timeout, hostname=config.hostname, drives=DRIVABLE)
        self.lobby = lobby
        self.state.seen = []
        if config.cable:
            self._in_thread(partial(self._cable, lobby), "lobby")
        if config.listen is not None:
            self._in_thread(partial(self._listen, lobby, config.listen), "lobby")
        if self.reconnect is not None:
            lobby.hold(self.reconnect)

    def _cable(self, lobby: Lobby) -> None:  # a worker thread
        opener = self.config.cable_opener
        source = cable_source(self._status, opener) if opener else cable_source(self._status)
        lobby.serve(source, hold=None)
        try:
            monitor = CableMonitor()
        except RecoveryError as e:
            self._status("cable", f"cannot watch the cable: {e.message}")
            return
        watch(monitor, self._status, lobby.done)

    def _listen(self, lobby: Lobby, ep: tcp.Endpoint) -> None:  # a worker thread
        while not lobby.done.is_set():
            try:
                source = listen(LinkSpec("tcp", ep), on_listening=lambda host, port, link: self._status(
                    "tcp", f"listening on port {port}" + ("" if host in ("*", "::", "0.0.0.0") else f" on {host}")))
                break
            except RecoveryError as e:  # the port is busy (maybe our last listener, still closing)
                self._status("tcp", f"cannot listen: {e.message}; trying again...")
                if lobby.done.wait(2.0):
                    return
        lobby.serve(source)
        lobby.done.wait()
        self._status("tcp", "not listening")

    def _in_thread(self, work: Callable[[], None], group: str) -> None:
        self.run_worker(work, thread=True, group=group, exit_on_error=False)

    def _found(self, link: PeerLink) -> None:  # a lobby thread
        if not self.post_message(PeerConnected(link)):
            link.close()
            link.conn.close()

    def _status(self, source: str, text: str) -> None:  # any thread
        self.post_message(LinkStatus(source, text))

    def on_link_status(self, msg: LinkStatus) -> None:
        self.state.status[msg.source] = msg.text
        if msg.source == "cable" and self.config.links is None:
            self._in_thread(self._reread_links, "links")  # a host came or went: modules, speeds
        self._refresh_home()

    def on_lobby_changed(self, msg: LobbyChanged) -> None:
        self.state.seen = msg.seen
        self._refresh_home()

    def on_lobby_event(self, msg: LobbyEvent) -> None:
        event = msg.event
        if isinstance(event, events.PairingCode):
            self.state.code = event.code
            if event.why:
                self.notify(f"{event.why}. This machine's new code is {event.code}.", title="New pairing code",
                            severity="warning", markup=False)
            self._refresh_home()
        elif isinstance(event, events.PairingAttempt) and not event.ok:
            self.notify(f"{event.peer}: {event.message or event.reason}", title="Not paired", severity="error",
                        markup=False)
            self.state.status["peer"] = f"{event.peer}: {event.message or event.reason}"
            self._refresh_home()
        elif isinstance(event, events.Phase) and event.name == "connect":
            self.state.status["connect"] = event.message
            self._refresh_home()

    def _reread_links(self) -> None:  # a worker thread
        self.post_message(LinksRead(read_report()))

    def on_links_read(self, msg: LinksRead) -> None:
        self.state.links = msg.links
        self._refresh_home()

    def drive(self, code: str, address: str = "") -> None:
        """The user typed the other machine's code (and maybe its address): pair from here."""
        if self.state.link is not None:
            self.notify(f"Already paired with {self.state.link.theirs.host.hostname}", markup=False)
            return
        if self.lobby is None:
            self.notify("Still reading this machine's disks; try again in a moment.", severity="warning")
            return
        if address.strip():
            try:
                ep = tcp.parse_endpoint(address)
            except UsageError as e:
                self.notify(e.message, severity="error", markup=False)
                return
            if not ep.host:
                self.notify("Give the other machine's address, e.g. 192.168.1.20", severity="error")
                return
            if not self.lobby.drive(code, peer=str(ep)):  # not reached yet: connect there now
                self.state.status["connect"] = f"connecting to {ep}..."
                self.lobby.connect(ep, code)
        elif not self.lobby.drive(code):
            self.notify("No other machine has reached this one yet. Join the cable, or give its address too.",
                        severity="warning")
            return
        self._refresh_home()

    def on_peer_connected(self, msg: PeerConnected) -> None:
        link = msg.link
        if self.closing or self.state.link is not None:
            link.close()
            link.conn.close()
            return
        self.lobby = None  # it is done: the paired peer came through it
        self.state.status.pop("peer", None)
        self.state.seen = []
        session = AgentSession(link, candidates=lambda: disk_paths(self.config.disks),
                               offered=lambda: offered_disks(self.config.disks), sink=self._engine_sink,
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
        """Show who we paired with, unless the user is reading something else."""
        state = self.state
        if state.link is None or state.paired or state.peer is None or state.link is state.job_link:
            return
        top = self.screen
        waiting = isinstance(top, ErrorScreen) and top.advice.waiting
        if isinstance(top, HomeScreen) or waiting:
            self._reset_to_home()
            self.push_screen(PairScreen(state.peer) if state.peer.drives else PassiveScreen(state.peer))
        elif isinstance(top, ErrorScreen):
            top.set_status(f"Paired with {state.peer.hostname} again: press Enter to start over.")

    def home_shown(self) -> None:
        self.offer_pairing()

    def _drop_session(self, reason: str) -> None:
        """Close the current session in the background; a new lobby opens when it ends."""
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
        if self.lobby is None and self.state.link is None and not self.closing:
            self.state.code = self.guard.renew("a new pairing")
            self._open_lobby()
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
        if state.peer is None or state.link is None or not state.peer.drives:
            return
        state.paired = True
        self.push_screen(DirectionScreen(state.host, state.peer.hostname), self._on_direction)

    def end_pairing(self) -> None:
        self.reconnect = None  # not this peer again, by itself
        self._drop_session(f"{self.state.host} ended the pairing")
        self._reset_to_home()

    def _machines(self) -> tuple[tuple[DiskInfo, ...], tuple[DiskInfo, ...]]:
        """(this machine's disks, the peer's disks): ours as read here, the peer's as it sent them."""
        link = self.state.link
        return (self.state.disks or (), link.inventory) if link else ((), ())

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
        if isinstance(event, PeerDisks):
            return  # the session keeps them (link.inventory); the next choice reads them
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
