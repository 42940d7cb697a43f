"""Pilot drives the wizard against a real peer (in this process, over loopback TCP): the demo to a
verified summary, Back on every step, the address box, the retries, the failure screens."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widgets import Input, Static

from recovery.engine.clone.compare import compare
from recovery.engine.peer.jobs import CloneChoice
from recovery.errors import LinkError, SourceReadError
from recovery.tui.app import WizardApp
from recovery.tui.config import WizardConfig
from recovery.tui.demo import DemoWorld
from recovery.tui.screens.dialogs import ConfirmScreen
from recovery.tui.screens.home import HomeScreen
from recovery.tui.screens.layout import LayoutScreen
from recovery.tui.screens.pair import PairScreen, PassiveScreen
from recovery.tui.screens.progress import ProgressScreen
from recovery.tui.screens.results import ErrorScreen, SummaryScreen
from recovery.tui.screens.resume import RescueScreen
from recovery.tui.screens.steps import DirectionScreen, DiskScreen, OptionsScreen, ReviewScreen
from recovery.tui.widgets import DiskList, PickList
from recovery.units import shown
from tests.tui.helpers import Peer, confirm_review, run, wait_for

MIB = 1 << 20
SIZE = (80, 24)


def topbar(app: WizardApp) -> str:
    return str(app.screen.query_one("#topbar", Static).content)


def text_of(app: WizardApp, selector: str) -> str:
    """What a widget shows on the screen now, its lines joined and spaces folded."""
    widget = app.screen.query_one(selector)
    lines = widget.render_lines(Region(0, 0, widget.outer_size.width, widget.outer_size.height))
    return " ".join(" ".join(line.text.split()) for line in lines).strip()


def config(peer: Peer, tmp_path: Path, disk: Path, name: str = "old-laptop", **kw: object) -> WizardConfig:
    base: dict[str, object] = dict(
        hostname=name,
        disks=(str(disk),),
        listen=None,
        connect=peer.endpoint,
        log_dir=tmp_path / "logs",
        timeout=10,
        cable=False,
    )
    base.update(kw)
    return WizardConfig(**base)  # type: ignore[arg-type]


async def type_code(pilot: Pilot, code: str) -> None:
    """Wait until the other machine has reached this one, then type its code on the first screen."""
    app = pilot.app
    assert isinstance(app, WizardApp)
    await wait_for(
        pilot,
        lambda: isinstance(app.screen, HomeScreen) and any(s.drivable for s in app.state.seen),
        30,
        "the other machine to reach us",
    )
    await pilot.press("c", *code, "enter")
    await wait_for(
        pilot, lambda: app.state.link is not None and not isinstance(app.screen, HomeScreen), 30, "the pairing"
    )


async def on(pilot: Pilot, kind: type, what: str = "", timeout: float = 30) -> None:
    app = pilot.app
    await wait_for(
        pilot,
        lambda: isinstance(app.screen, kind) and (not what or what in getattr(app.screen, "step_title", "")),
        timeout,
        f"the {kind.__name__} {what}",
    )
    await pilot.pause(0.05)  # laid out: what it shows can be read


async def walk_to_review(pilot: Pilot, code: str | None, *, receive: bool = False, target_index: int = 0) -> None:
    """Pairing (``code``: type it first), direction, source, target, options (and the new layout, when the
    clone changes it): up to the review."""
    await walk_to_options(pilot, code, receive=receive, target_index=target_index)
    await pilot.press("enter")
    await past_layout(pilot)


async def walk_to_options(pilot: Pilot, code: str | None, *, receive: bool = False, target_index: int = 0) -> None:
    """Pairing (``code``: type it first), direction, source, target: up to the options."""
    if code is not None:
        await type_code(pilot, code)
    if isinstance(pilot.app.screen, PairScreen):
        await pilot.press("enter")
    await on(pilot, DirectionScreen)
    await pilot.press("end" if receive else "home", "enter")
    await on(pilot, DiskScreen, "copy")
    await pilot.press("enter")
    await on(pilot, DiskScreen, "overwrite")
    for _ in range(target_index):
        await pilot.press("down")
    await pilot.press("enter")
    await on(pilot, OptionsScreen)


async def past_layout(pilot: Pilot) -> None:
    """Options answered: on to the review, through the new layout when it shows (Enter)."""
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, LayoutScreen | ReviewScreen), 30, "the next step")
    if isinstance(pilot.app.screen, LayoutScreen):
        await pilot.pause(0.05)  # laid out: Enter reaches it
        await pilot.press("enter")
    await on(pilot, ReviewScreen)


async def confirm(pilot: Pilot, word: str) -> None:
    await confirm_review(pilot, word)


async def abort_mid_copy(pilot: Pilot, code: str, word: str) -> None:
    """Start the clone, abort it once data flows, and wait for the error screen."""
    app = pilot.app
    assert isinstance(app, WizardApp)
    await walk_to_review(pilot, code)
    await confirm(pilot, word)
    await wait_for(pilot, lambda: isinstance(app.screen, ProgressScreen) and app.screen.job.done > 0, 30)
    await pilot.press("escape", "y")
    await on(pilot, ErrorScreen)


def test_demo_runs_from_the_first_screen_to_a_verified_summary() -> None:
    async def scenario() -> None:
        with DemoWorld(64) as world:
            world.start()
            app = WizardApp(world.config())
            async with app.run_test(size=SIZE) as pilot:
                await walk_to_review(pilot, world.code)
                await pilot.press("x", "enter")  # the wrong name: nothing starts
                assert isinstance(app.screen, ReviewScreen)
                await pilot.press("backspace", *"new-disk.img", "enter")
                await on(pilot, SummaryScreen, timeout=60)
                assert isinstance(app.screen, SummaryScreen)
                job = app.screen.job
                assert job.summary is not None and job.summary.verified is True
                assert "Verified" in topbar(app) and "VERIFIED" in text_of(app, "#verdict")
                assert "read back every block" in text_of(app, "#checked")
                screen = app.screen
                await wait_for(pilot, lambda: screen.demo_check, 30, "the demo's own check")
                assert "byte-identical" in screen.demo_check
                assert job.started.log and Path(job.started.log).is_file()
            assert compare(str(world.source), str(world.blank)).identical
            agent = world.agent
        assert agent is not None and agent.poll() is not None  # the simulated peer is gone
        assert not world.workdir.exists()

    run(scenario)


def test_the_default_demo_shows_progress_and_the_limit_for_several_seconds() -> None:
    """Issue 12: at 0.2 s nobody saw anything. The demo's link is held to a slow cable's pace."""

    async def scenario() -> None:
        with DemoWorld() as world:  # the default size and rate
            world.start()
            app = WizardApp(world.config())
            async with app.run_test(size=SIZE) as pilot:
                await walk_to_review(pilot, world.code)
                started = time.monotonic()
                await confirm(pilot, "new-disk.img")
                await on(pilot, ProgressScreen)
                seen: set[str] = set()
                while not isinstance(app.screen, SummaryScreen):
                    if isinstance(app.screen, ProgressScreen):
                        seen.add(app.screen.job.stage)
                        if app.screen.job.bottleneck:
                            seen.add("limit:" + app.screen.job.bottleneck)
                    assert time.monotonic() - started < 60, "the demo must stay under a minute"
                    await pilot.pause(0.1)
                took = time.monotonic() - started
        assert took >= 4, f"the clone ran {took:.1f} s: too fast to see"
        assert {"transfer", "limit:link"} <= seen, seen
        assert seen & {"verify", "check"}, seen

    run(scenario)


def test_esc_goes_back_one_step_and_keeps_every_answer(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path
) -> None:
    """Issue 3: Esc is Back, from every step, and nothing chosen is forgotten; leaving the pairing asks."""
    second = tmp_path / "second.img"
    second.write_bytes(b"")
    with open(second, "wb") as f:
        f.truncate(blank_image.stat().st_size)
    peer = make_peer([blank_image, second], name="new-laptop")

    async def scenario() -> None:
        app = WizardApp(config(peer, tmp_path, source_image))
        async with app.run_test(size=SIZE) as pilot:
            await walk_to_review(pilot, peer.code, target_index=1)
            await pilot.press("escape")  # the review: back to the options, chosen as they were
            await on(pilot, OptionsScreen)
            await pilot.press("down", "tab", "down", "enter")  # exact, compression off
            await on(pilot, ReviewScreen)
            assert app.state.choice.mode == "exact" and app.state.choice.level == 0
            for kind, what in (
                (OptionsScreen, ""),
                (DiskScreen, "overwrite"),
                (DiskScreen, "copy"),
                (DirectionScreen, ""),
            ):
                await pilot.press("escape")
                await on(pilot, kind, what)
                if kind is OptionsScreen:
                    assert app.screen.query_one("#mode").value == "exact"  # type: ignore[attr-defined]
                    assert app.screen.query_one("#level").value == "off"  # type: ignore[attr-defined]
                if kind is DiskScreen and what == "overwrite":
                    assert app.screen.query_one(DiskList).highlighted == 1  # the second disk, as chosen
                if kind is DirectionScreen:
                    assert app.screen.query_one(PickList).highlighted == 0
                assert app.state.choice.target is not None and app.state.choice.target.path == str(second)
            await pilot.press("escape")
            await on(pilot, PairScreen)
            await pilot.press("escape")  # leaving the pairing asks first
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("n")
            await on(pilot, PairScreen)
            assert app.state.link is not None and peer.ready.is_set()
            await pilot.press("enter")  # and forward again: every answer is still there
            for kind, what in (
                (DirectionScreen, ""),
                (DiskScreen, "copy"),
                (DiskScreen, "overwrite"),
                (OptionsScreen, ""),
            ):
                await on(pilot, kind, what)
                await pilot.press("enter")
            await on(pilot, ReviewScreen)
            assert app.state.choice.mode == "exact" and app.state.choice.target.path == str(second)
            await pilot.press("escape", "escape", "escape", "escape", "escape")
            await on(pilot, PairScreen)
            await pilot.press("escape", "y")  # yes: the pairing ends, on both sides
            await on(pilot, HomeScreen)
            await wait_for(pilot, peer.ended.is_set, 30, "the peer's session to end")
        # The paired session's end (the wizard then reaches the address it was started with again, for a
        # new pairing: that contact, never paired, may end too).
        assert "old-laptop ended the session: old-laptop ended the pairing" in str(peer.errors[0])

    run(scenario)


def test_the_address_box_shows_where_this_machine_listens_and_what_is_typed(tmp_path: Path, blank_image: Path) -> None:
    """Issue 2 and 11: the field shows what is typed; the box names the address this machine really listens on."""
    from recovery.link import tcp

    async def scenario() -> None:
        app = WizardApp(
            WizardConfig(
                hostname="lonely",
                disks=(str(blank_image),),
                cable=False,
                listen=tcp.Endpoint("127.0.0.1", 0),
                log_dir=tmp_path / "logs",
            )
        )
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.state.listening is not None, 30, "the listener")
            await pilot.pause(0.1)
            host, port = app.state.listening  # type: ignore[misc]
            box = text_of(app, "#home-address")
            assert host == "127.0.0.1" and f"127.0.0.1:{port}" in box and "only" in box
            assert "192." not in box  # not an address it does not listen on
            await pilot.press("a", *"192.0.2.7:7554")
            assert app.screen.query_one("#address", Input).value == "192.0.2.7:7554"
            await pilot.press("escape", "c", *"1234")
            assert app.screen.query_one("#code", Input).value == "1234"
            # the other machine can reach this one there: a connection shows up
            with tcp.connect(tcp.Endpoint("127.0.0.1", port)):
                await wait_for(pilot, lambda: bool(app.state.seen), 30, "the connection to show")

    run(scenario)


def test_retry_after_a_finished_clone_onto_this_machine_rechecks_the_target(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path
) -> None:
    """Issue 1: the wizard that receives onto its own disk; every later clone onto it failed with
    'changed since it was listed'. Now the disks are read again, the change is shown, confirmed, and it runs."""
    peer = make_peer([source_image], name="old-laptop")

    async def scenario() -> None:
        app = WizardApp(config(peer, tmp_path, blank_image, name="new-laptop"))
        async with app.run_test(size=SIZE) as pilot:
            await walk_to_review(pilot, peer.code, receive=True)
            await confirm(pilot, "blank.img")
            await on(pilot, SummaryScreen, timeout=60)
            assert compare(str(source_image), str(blank_image)).identical
            await pilot.press("r")  # retry the same clone
            await on(pilot, ReviewScreen)
            changes = text_of(app, "#review-changes")
            assert "blank.img on new-laptop: its partition table changed since it was chosen" in changes
            await confirm(pilot, "blank.img")
            await on(pilot, SummaryScreen, timeout=60)
            assert app.screen.job.summary.verified  # type: ignore[attr-defined]
            await pilot.press("enter")  # another clone: the answers stay, the disks are read again
            await walk_to_review(pilot, None, receive=True)
            await confirm(pilot, "blank.img")
            await on(pilot, SummaryScreen, timeout=60)
        # one session throughout, which the wizard ended with a bye when it closed
        assert peer.ended.wait(10), "the peer's session did not end after the wizard closed"
        assert [str(e) for e in peer.errors] == ["new-laptop ended the session: new-laptop's user quit the wizard"]

    run(scenario)


def test_retry_after_an_aborted_clone_needs_no_new_code_and_rechecks(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path
) -> None:
    peer = make_peer([blank_image], name="new-laptop", rate=4 * MIB)

    async def scenario() -> None:
        app = WizardApp(config(peer, tmp_path, source_image))
        async with app.run_test(size=SIZE) as pilot:
            await abort_mid_copy(pilot, peer.code, "blank.img")
            state = text_of(app, "#error-state")
            assert "blank.img on new-laptop is now INCOMPLETE" in state and "were written" in state
            assert "It stopped while copying" in state and "The source was only read" in state
            assert "Still paired with new-laptop" in text_of(app, "#error-status")
            await pilot.press("r")  # retry at once: the pairing is made again by itself (no code)
            await on(pilot, ReviewScreen)  # straight to the review, with what changed since
            assert peer.errors and app.state.link is not None and app.state.link.rejoined
            # the aborted copy never reached the partition table areas (they are written last)
            assert "the same disks as before, found again by their identity" in text_of(app, "#review-changes")
            peer.rate = None
            await confirm(pilot, "blank.img")
            await on(pilot, SummaryScreen, timeout=90)
        assert compare(str(source_image), str(blank_image)).identical

    run(scenario)


async def pull_the_cable_mid_clone(pilot: Pilot, peer: Peer) -> None:
    """This machine receives from ``peer``; once part of the copy is durable here, the link is cut."""
    app = pilot.app
    assert isinstance(app, WizardApp)
    await walk_to_review(pilot, peer.code, receive=True)
    await confirm(pilot, "blank.img")
    await wait_for(pilot, lambda: isinstance(app.screen, ProgressScreen) and app.screen.job.durable > 0, 30)
    assert peer.link is not None
    peer.link.conn.abort()  # the cable is pulled
    await on(pilot, ErrorScreen)


def test_retry_after_a_lost_link_on_the_receiving_side_says_the_target_is_half_written(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path
) -> None:
    """Issue 5: the lost link on the receiving side names the target's state and how far it got; Retry
    after pairing again with the same machine resumes the clone where the target's durable part ends."""
    peer = make_peer([source_image], name="old-laptop", rate=4 * MIB)

    async def scenario() -> None:
        app = WizardApp(config(peer, tmp_path, blank_image, name="new-laptop"))
        async with app.run_test(size=SIZE) as pilot:
            await pull_the_cable_mid_clone(pilot, peer)
            assert app.screen.advice.title == "The link to old-laptop was lost"  # type: ignore[attr-defined]
            state = text_of(app, "#error-state")
            assert "blank.img on new-laptop is now INCOMPLETE" in state and "Do not boot from it" in state
            await wait_for(pilot, lambda: app.state.link is None and peer.ended.is_set(), 30)
            peer.rate = None
            await pilot.press("r")
            await type_code(pilot, peer.code)
            await on(pilot, ReviewScreen)
            await confirm(pilot, "blank.img")
            await on(pilot, SummaryScreen, timeout=90)
            summary = app.screen.job.summary  # type: ignore[attr-defined]
            assert summary is not None and summary.verified and summary.resumed > 0  # only the rest was sent
        assert compare(str(source_image), str(blank_image)).identical

    run(scenario)


def test_a_retry_is_never_applied_to_another_machine(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path
) -> None:
    """After the pairing ended, a machine of another name pairs: the retry is dropped, not run there."""
    peer = make_peer([blank_image], name="new-laptop", rate=4 * MIB)
    other = make_peer([blank_image], name="stranger", code="5555-6666")

    async def scenario() -> None:
        app = WizardApp(config(peer, tmp_path, source_image))
        async with app.run_test(size=SIZE) as pilot:
            await walk_to_review(pilot, peer.code)
            await confirm(pilot, "blank.img")
            await wait_for(pilot, lambda: isinstance(app.screen, ProgressScreen) and app.screen.job.done > 0, 30)
            assert peer.link is not None
            peer.link.conn.abort()  # the cable is pulled: the pairing is over
            await on(pilot, ErrorScreen)
            await wait_for(pilot, lambda: app.state.link is None, 30)
            await pilot.press("r")
            await on(pilot, HomeScreen)
            await pilot.press("c", *other.code, "escape", "a", *str(other.endpoint), "enter")
            await on(pilot, PairScreen)
            assert "stranger" in topbar(app) and app.state.retry is None

    run(scenario)


def test_the_passive_side_shows_the_clone_and_can_abort_it(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path
) -> None:
    peer = make_peer([source_image], name="old-laptop", rate=2 * MIB)

    async def scenario() -> None:
        app = WizardApp(config(peer, tmp_path, blank_image, name="new-laptop"))
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: bool(app.state.seen), 30, "the peer to be reached")
            peer.drive(app.state.code)
            await wait_for(
                pilot,
                lambda: peer.ready.is_set() and isinstance(app.screen, PassiveScreen) and app.screen.query("#topbar"),
                30,
                "the passive screen, laid out",
            )
            assert "Controlled from old-laptop" in topbar(app)
            assert peer.link is not None and peer.session is not None
            peer.session.submit(CloneChoice(send=True, source=peer.offered[0], target=peer.link.inventory[0]))
            await wait_for(pilot, lambda: isinstance(app.screen, ProgressScreen) and app.screen.job.done > 0, 30)
            assert isinstance(app.screen, ProgressScreen) and app.screen.job.passive
            assert "old-laptop is OVERWRITING" in app.screen.job.started.action
            await pilot.press("escape")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await on(pilot, ErrorScreen)
            assert isinstance(app.screen, ErrorScreen) and app.screen.advice.code == "cancelled"
            assert "is now INCOMPLETE" in text_of(app, "#error-state")
            await wait_for(pilot, peer.ended.is_set, 30, "the peer's session to end")
        assert peer.errors[0] is not None and peer.errors[0].code == "cancelled"
        assert "the peer cancelled" in peer.errors[0].message

    run(scenario)


def test_a_refused_target_is_a_screen_that_says_nothing_was_written_and_keeps_the_pairing(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path
) -> None:
    candidates: list[str] = []
    peer = make_peer([blank_image], name="new-laptop", candidates=candidates)  # the target vanished there

    async def scenario() -> None:
        app = WizardApp(config(peer, tmp_path, source_image))
        async with app.run_test(size=SIZE) as pilot:
            await walk_to_review(pilot, peer.code)
            await confirm(pilot, "blank.img")
            await on(pilot, ErrorScreen)
            screen = app.screen
            assert isinstance(screen, ErrorScreen) and screen.advice.code == "refused"
            said = screen.advice.message
            assert "no disk of new-laptop" in said.lower() and "reported by new-laptop" in said
            assert "blank.img on new-laptop was not written: it is as it was." in text_of(app, "#error-state")
            assert app.state.link is not None  # nothing crossed that ends the pairing
            candidates.append(str(blank_image))  # plugged back in
            await pilot.press("r")
            await on(pilot, ReviewScreen)
            await confirm(pilot, "blank.img")
            await on(pilot, SummaryScreen, timeout=60)
        assert peer.ended.wait(10), "the peer's session did not end after the wizard closed"
        assert [str(e) for e in peer.errors] == ["old-laptop ended the session: old-laptop's user quit the wizard"]

    run(scenario)


def _drive_failing_read(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path
) -> tuple[Peer, list[ErrorScreen]]:
    peer = make_peer([blank_image], name="new-laptop")
    shown: list[ErrorScreen] = []

    async def scenario() -> None:
        app = WizardApp(
            WizardConfig(
                hostname="old-laptop",
                disks=(str(source_image),),
                listen=None,
                connect=peer.endpoint,
                log_dir=tmp_path / "logs",
                timeout=10,
            )
        )
        async with app.run_test(size=SIZE) as pilot:
            await walk_to_review(pilot, peer.code)
            await confirm(pilot, "blank.img")
            await wait_for(pilot, lambda: isinstance(app.screen, RescueScreen), 60, "the rescue question")
            await pilot.press("n")  # not now (tests/tui/test_resume.py says yes)
            await wait_for(pilot, lambda: isinstance(app.screen, ErrorScreen), 60, "the error screen")
            assert isinstance(app.screen, ErrorScreen)
            shown.append(app.screen)
            await wait_for(pilot, lambda: bool(peer.errors), 30, "the clone's session to end there")

    run(scenario)
    return peer, shown


def _read_error(path: str, offset: int) -> SourceReadError:
    return SourceReadError(
        f"cannot read the source {path} at byte {offset}: Input/output error", hint="the disk may be failing"
    )


def test_a_source_read_error_is_a_screen_on_both_sides(
    make_peer: type[Peer],
    source_image: Path,
    blank_image: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from recovery.engine.clone import send

    def unreadable(path: str, **kwargs: object) -> object:
        raise _read_error(path, 0)

    monkeypatch.setattr(send, "open_source", unreadable)
    peer, (screen,) = _drive_failing_read(make_peer, source_image, blank_image, tmp_path)
    assert screen.advice.code == "source_read"
    assert screen.advice.title == "The source disk cannot be read"
    assert "Input/output error" in screen.advice.message
    assert screen.advice.steps[0] == "The disk may be failing"
    assert screen.log_path and Path(screen.log_path).is_file()
    told = peer.errors[0]  # how the clone's session ended there (the wizard may have connected again since)
    assert told is not None and told.code == "source_read"  # the peer was told why
    assert "Input/output error" in told.message


def test_a_read_error_mid_stream_names_the_disk_not_the_link(
    make_peer: type[Peer],
    source_image: Path,
    blank_image: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from recovery.engine.clone import source

    real = source.Source.read_into

    def failing(self: source.Source, view: memoryview, offset: int) -> None:
        if offset >= 8 * MIB:
            raise _read_error(self.path, offset)
        real(self, view, offset)

    monkeypatch.setattr(source.Source, "read_into", failing)
    peer, (screen,) = _drive_failing_read(make_peer, source_image, blank_image, tmp_path)
    assert screen.advice.code == "source_read"
    assert peer.errors[0] is not None and peer.errors[0].code == "source_read"


def test_a_wrong_code_either_way_pairs_nothing(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path
) -> None:
    peer = make_peer([blank_image], name="new-laptop")

    async def scenario() -> None:
        app = WizardApp(config(peer, tmp_path, source_image))
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: any(s.drivable for s in app.state.seen), 30, "the peer to be reached")
            await pilot.press("c", *"1111-2222", "enter")  # typed here, wrong
            await wait_for(pilot, lambda: "does not match" in app.state.status.get("peer", ""), 30)
            assert "shown on the screen of new-laptop" in app.state.status["peer"]
            peer.drive("3333-4444")  # the peer guesses ours, wrong
            await wait_for(pilot, lambda: "wrong pairing code" in app.state.status.get("peer", ""), 30)
            await pilot.pause(0.5)
            assert isinstance(app.screen, HomeScreen)
            assert app.state.session is None and peer.link is None
            await pilot.press("c", *peer.code, "enter")  # the right code still works
            await on(pilot, PairScreen)

    run(scenario)


def test_strings_from_the_peer_are_text_never_markup_on_every_screen(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path
) -> None:
    name = "[/x][b]evil[/b][link=http://x]"  # control characters never cross (the schema refuses them)
    seen = shown(name, lines=True)
    peer = make_peer([blank_image], name=name)

    async def scenario() -> None:
        app = WizardApp(config(peer, tmp_path, source_image))
        async with app.run_test(size=SIZE) as pilot:
            await walk_to_review(pilot, peer.code)
            assert " ".join(seen.split()) in text_of(app, "#review")
            await pilot.press("escape", "escape")
            await on(pilot, DiskScreen, "overwrite")
            assert seen in topbar(app)
            await pilot.press("escape", "escape", "escape")
            await on(pilot, PairScreen)
            assert seen in topbar(app) and seen in text_of(app, "#pair-facts")

    run(scenario)


def test_a_bug_in_a_clone_is_a_screen_and_its_traceback_is_in_the_log(
    make_peer: type[Peer],
    source_image: Path,
    blank_image: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 12: a worker's failure is never dropped: an internal error ends the clone on a screen that
    says so, and the clone's log keeps the traceback to report."""
    from recovery.engine.clone import send

    def broken(*args: object, **kwargs: object) -> object:
        raise ZeroDivisionError("a bug planted by the test")

    monkeypatch.setattr(send, "plan_jobs", broken)
    peer = make_peer([blank_image], name="new-laptop")

    async def scenario() -> None:
        app = WizardApp(config(peer, tmp_path, source_image))
        async with app.run_test(size=SIZE) as pilot:
            await walk_to_review(pilot, peer.code)
            await confirm(pilot, "blank.img")
            await on(pilot, ErrorScreen, timeout=60)
            screen = app.screen
            assert isinstance(screen, ErrorScreen) and screen.advice.code == "internal"
            assert "Internal error: ZeroDivisionError: a bug planted by the test" in screen.advice.message
            assert screen.log_path is not None
            log = Path(screen.log_path).read_text()
            assert "Traceback (most recent call last)" in log and "a bug planted by the test" in log

    run(scenario)


def test_after_a_pulled_cable_the_wizard_resumes_by_itself_once_allowed(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path
) -> None:
    """Issue 13: with the user's leave (a), the wizard waits for the same machine, pairs with it again by
    the lost pairing's secret (no code typed: only the two machines of that pairing hold it) and
    resumes the clone where the target's durable part ends."""
    peer = make_peer([source_image], name="old-laptop", rate=4 * MIB)

    async def scenario() -> None:
        app = WizardApp(config(peer, tmp_path, blank_image, name="new-laptop"))
        async with app.run_test(size=SIZE) as pilot:
            await pull_the_cable_mid_clone(pilot, peer)
            await wait_for(pilot, lambda: app.state.link is None and peer.ended.is_set(), 30)
            assert any(o.key == "a" for o in app.screen.offers)  # type: ignore[attr-defined]
            peer.rate = None
            await pilot.press("a")
            assert "pairs with it again by itself" in text_of(app, "#error-status")
            await on(pilot, SummaryScreen, timeout=90)  # no code typed, no review
            summary = app.screen.job.summary  # type: ignore[attr-defined]
            assert summary is not None and summary.verified and summary.resumed > 0
        assert compare(str(source_image), str(blank_image)).identical
        assert isinstance(peer.errors[0], LinkError)  # the first session ended with the pulled cable
        assert any("may pair again without a code" in getattr(e, "message", "") for e in peer.events)

    run(scenario)
