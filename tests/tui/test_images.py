"""Pilot drives the wizard's images against a real peer over loopback TCP: a disk saved into a folder of
the other machine (then checked as `recovery image verify` checks it, and read back to the source's
bytes), an image of the other machine's folder restored onto this machine's disk, and folders the
machine that holds them refuses."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import blake3
import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from recovery import events
from recovery.diskimage.reader import ImageReader, image_header
from recovery.diskimage.verify import check_image
from recovery.engine.api import ReceiveOptions, SendOptions
from recovery.engine.clone.compare import compare
from recovery.engine.local import clone_locally
from recovery.engine.peer.jobs import JobEnded
from recovery.errors import PassphraseError
from recovery.tui.app import WizardApp
from recovery.tui.screens.folder import FolderScreen
from recovery.tui.screens.pair import PairScreen
from recovery.tui.screens.results import ErrorScreen, SummaryScreen
from recovery.tui.screens.steps import ChoiceList, DirectionScreen, DiskScreen, OptionsScreen, ReviewScreen
from tests.helpers import Recovery
from tests.tui.helpers import Peer, confirm_review, run, wait_for
from tests.tui.test_wizard import SIZE, config, on, text_of, type_code


async def paired_to(pilot: Pilot, code: str, *, receive: bool) -> None:
    """Paired by ``code``, then the direction: this machine's disk to the peer, or the peer's to here."""
    await type_code(pilot, code)
    if isinstance(pilot.app.screen, PairScreen):
        await pilot.press("enter")
    await on(pilot, DirectionScreen)
    await pilot.press("end" if receive else "home", "enter")


async def in_folder(pilot: Pilot, folder: Path) -> FolderScreen:
    """On the folder step: the folder typed and looked in by the machine that holds it."""
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, FolderScreen), 30, "the folder step")
    screen = pilot.app.screen
    assert isinstance(screen, FolderScreen)
    box = screen.query_one("#folder", Input)
    box.value = str(folder)
    box.focus()
    await pilot.press("enter")
    await wait_for(pilot, lambda: screen.found is not None and screen.found.folder == str(folder), 30, "the list")
    return screen


async def save_into(pilot: Pilot, code: str, folder: Path) -> FolderScreen:
    """Paired by ``code``, this machine's disk to the peer, and instead of a target disk the peer's ``folder``."""
    await paired_to(pilot, code, receive=False)
    await on(pilot, DiskScreen, "copy")
    await pilot.press("enter")
    await on(pilot, DiskScreen, "overwrite")
    assert isinstance(pilot.app, WizardApp)
    assert "save an image of source.img into a folder of new-laptop" in text_of(pilot.app, "#image-offer")
    await pilot.press("i")
    return await in_folder(pilot, folder)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder where images are kept."""
    path = tmp_path / "images"
    path.mkdir()
    return path


def test_a_disk_saved_as_an_image_into_a_folder_of_the_other_machine_verifies_and_holds_its_bytes(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path, folder: Path
) -> None:
    peer = make_peer([blank_image], name="new-laptop")
    name = f"source-{datetime.date.today().isoformat()}.img"

    async def scenario() -> None:
        app = WizardApp(config(peer, tmp_path, source_image))
        async with app.run_test(size=SIZE) as pilot:
            screen = await save_into(pilot, peer.code, folder)
            assert "0 image file(s)" in text_of(app, "#folder-state")
            assert screen.query_one("#name", Input).value == name  # proposed from the disk and the day
            screen.query_one("#name", Input).focus()
            await pilot.press("enter")
            await on(pilot, OptionsScreen)
            await pilot.press("down", "enter")  # exact: every block, so the image's disk is the source's
            await on(pilot, ReviewScreen)
            review = "".join(text_of(app, "#review").split())  # a long path folds over lines
            assert f"anewimagefile{folder / name}ofnew-laptop" in review and "DESTROYS" not in review
            await confirm_review(pilot, name)
            await on(pilot, SummaryScreen, timeout=60)
            assert app.screen.job.summary.verified  # type: ignore[attr-defined]
        with ImageReader(str(folder / name)) as image:
            checked = check_image(image, whole=True)
            assert not checked.bad and image.manifest["source"]["host"] == "old-laptop"
            assert checked.disk_digest == blake3.blake3(source_image.read_bytes()).hexdigest()
            assert image.read(0, image.size) == source_image.read_bytes()
        assert blank_image.read_bytes() == bytes(blank_image.stat().st_size)  # no disk of the peer was touched
        assert sorted(p.name for p in folder.iterdir()) == [name]

    run(scenario)


def test_an_image_in_a_folder_of_the_other_machine_restores_onto_a_disk_here(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path, folder: Path
) -> None:
    clone_locally(
        SendOptions(source=str(source_image), mode="exact"),
        ReceiveOptions(target=str(folder / "laptop.img"), image=True, log_dir=tmp_path / "save-logs"),
        lambda _e: None,
    )
    (folder / "notes.txt").write_text("not an image")
    peer = make_peer([source_image], name="old-laptop")

    async def scenario() -> None:
        app = WizardApp(config(peer, tmp_path, blank_image, name="new-laptop"))
        async with app.run_test(size=SIZE) as pilot:
            await paired_to(pilot, peer.code, receive=True)
            await on(pilot, DiskScreen, "copy")
            await pilot.press("i")
            screen = await in_folder(pilot, folder)
            assert "1 image file(s)" in text_of(app, "#folder-state")
            listed = text_of(app, "#images")
            assert "laptop.img" in listed and "source.img" in listed and "exact" in listed
            screen.query_one("#images").focus()
            await pilot.press("enter")
            await on(pilot, DiskScreen, "overwrite")
            await pilot.press("enter")
            await on(pilot, OptionsScreen)
            await pilot.press("enter")
            await on(pilot, ReviewScreen)
            assert f"theimage{folder / 'laptop.img'}ofold-laptop" in "".join(text_of(app, "#review").split())
            await confirm_review(pilot, "blank.img")
            await on(pilot, SummaryScreen, timeout=60)
            assert app.screen.job.summary.verified  # type: ignore[attr-defined]
        assert compare(str(source_image), str(blank_image)).identical

    run(scenario)


def test_a_folder_the_other_machine_does_not_allow_is_refused_there_and_nothing_is_written(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "via-link").symlink_to(real)
    peer = make_peer([blank_image], name="new-laptop")

    async def scenario() -> None:
        app = WizardApp(config(peer, tmp_path, source_image))
        async with app.run_test(size=SIZE) as pilot:
            screen = await save_into(pilot, peer.code, tmp_path / "via-link")
            assert "symbolic link" in text_of(app, "#folder-state")
            screen.query_one("#name", Input).focus()
            await pilot.press("enter")
            assert isinstance(app.screen, FolderScreen)  # not on to the options
            assert "does not save images there" in text_of(app, "#image-detail")
            await in_folder(pilot, Path("/proc"))
            assert "not on a disk" in text_of(app, "#folder-state")
            await pilot.press("escape")
            await on(pilot, DiskScreen, "overwrite")
            assert not isinstance(app.screen, ErrorScreen)
        assert list(real.iterdir()) == []

    run(scenario)


def test_the_other_machines_disk_saved_into_a_folder_here_then_restored_from_it_onto_another_of_its_disks(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path, folder: Path
) -> None:
    here = folder
    own = tmp_path / "own.img"
    own.write_bytes(bytes(1 << 20))
    peer = make_peer([source_image, blank_image], name="new-laptop")

    async def scenario() -> None:
        app = WizardApp(config(peer, tmp_path, own))
        async with app.run_test(size=SIZE) as pilot:
            await peer_disk_saved_here(pilot, peer.code, here)
            await on(pilot, OptionsScreen)
            await pilot.press("enter")  # used mode
            await confirm_review(pilot, "saved.img")
            await on(pilot, SummaryScreen, timeout=60)
            await pilot.press("enter")  # another clone: now from the image here onto the peer's blank disk
            await on(pilot, DirectionScreen)
            await pilot.press("home", "enter")
            await on(pilot, DiskScreen, "copy")
            await pilot.press("i")
            screen = await in_folder(pilot, here)
            assert "saved.img" in text_of(app, "#images") and "used" in text_of(app, "#images")
            screen.query_one("#images").focus()
            await pilot.press("enter")
            await on(pilot, DiskScreen, "overwrite")
            await pilot.press("down", "enter")  # its second disk, blank.img
            await on(pilot, OptionsScreen)
            await pilot.press("enter")
            await confirm_review(pilot, "blank.img")
            await on(pilot, SummaryScreen, timeout=60)
            assert app.screen.job.summary.verified  # type: ignore[attr-defined]
        with ImageReader(str(here / "saved.img")) as image:
            assert not check_image(image).bad
        assert compare(str(source_image), str(blank_image)).identical
        assert own.read_bytes() == bytes(1 << 20)  # this machine's own disk was never touched

    run(scenario)


SECRET = "correct horse battery"


async def peer_disk_saved_here(pilot: Pilot, code: str, folder: Path) -> None:
    """Pair, choose the other machine's source.img, and name saved.img in ``folder`` here as its image."""
    await paired_to(pilot, code, receive=True)
    await on(pilot, DiskScreen, "copy")
    await pilot.press("enter")  # the peer's source.img
    await on(pilot, DiskScreen, "overwrite")
    await pilot.press("i")
    screen = await in_folder(pilot, folder)
    screen.query_one("#name", Input).value = "saved.img"
    screen.query_one("#name", Input).focus()
    await pilot.press("enter")


async def type_passphrase(pilot: Pilot, first: str, again: str | None = None) -> OptionsScreen:
    """On the options step: the passphrase typed (twice for a save: encryption chosen first), then Enter."""
    await on(pilot, OptionsScreen)
    screen = pilot.app.screen
    assert isinstance(screen, OptionsScreen)
    if again is not None:
        screen.query_one("#encrypt", ChoiceList).highlighted = 1  # "yes: encrypt the image with a passphrase"
        await pilot.pause()
        assert screen.query_one("#passphrase-box").display
        screen.query_one("#again", Input).value = again
    box = screen.query_one("#passphrase", Input)
    assert box.password  # masked
    box.value = first
    await pilot.press("enter")
    await pilot.pause()
    return screen


def test_an_encrypted_image_saved_on_the_other_machine_is_restored_from_there_only_with_its_passphrase(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path, folder: Path
) -> None:
    restored = tmp_path / "restored.img"
    restored.write_bytes(bytes(source_image.stat().st_size))
    peer = make_peer([blank_image], name="new-laptop")
    image = folder / "secret.img"

    async def scenario() -> None:
        app = WizardApp(config(peer, tmp_path, source_image, disks=(str(source_image), str(restored))))
        async with app.run_test(size=SIZE) as pilot:
            screen = await save_into(pilot, peer.code, folder)
            screen.query_one("#name", Input).value = image.name
            screen.query_one("#name", Input).focus()
            await pilot.press("enter")
            options = await type_passphrase(pilot, SECRET, SECRET + "!")
            assert isinstance(app.screen, OptionsScreen)  # not on to the review
            assert "The two passphrases differ" in text_of(app, "#passphrase-help")
            await type_passphrase(pilot, "short", "short")
            assert "at least 8 characters, please (this one has 5)" in text_of(app, "#passphrase-help")
            options.query_one("#mode", ChoiceList).highlighted = 1  # exact: the image holds every block
            await type_passphrase(pilot, SECRET, SECRET)
            await on(pilot, ReviewScreen)
            review = "".join(text_of(app, "#review").split())  # long rows fold over lines
            assert "Encryptyes:new-laptopencryptstheimage(AES-256-GCM)" in review and "horse" not in review
            await confirm_review(pilot, image.name)
            await on(pilot, SummaryScreen, timeout=60)
            assert app.screen.job.summary.verified  # type: ignore[attr-defined]

            await pilot.press("enter")  # another clone: the peer's image back onto this machine's second disk
            await on(pilot, DirectionScreen)
            await pilot.press("end", "enter")
            await on(pilot, DiskScreen, "copy")
            await pilot.press("i")
            screen = await in_folder(pilot, folder)
            assert "encrypted image of a" in text_of(app, "#images")
            screen.query_one("#images").focus()
            await pilot.press("enter")
            await on(pilot, DiskScreen, "overwrite")
            await pilot.press("down", "enter")  # restored.img
            await type_passphrase(pilot, "not the passphrase")
            await on(pilot, ReviewScreen)
            review = "".join(text_of(app, "#review").split())
            assert "Encrypttheimageis:new-laptopopensitwiththepassphrasetypedhere" in review
            await confirm_review(pilot, "restored.img")
            # new-laptop refuses it before anything is written: back to the options, still paired.
            await wait_for(
                pilot,
                lambda: (
                    isinstance(app.screen, OptionsScreen) and "wrong passphrase" in text_of(app, "#passphrase-help")
                ),
                30,
                "the refused passphrase",
            )
            assert "new-laptop cannot open that image" in text_of(app, "#passphrase-help")
            assert app.state.session is not None and restored.read_bytes() == bytes(restored.stat().st_size)
            await type_passphrase(pilot, SECRET)
            await confirm_review(pilot, "restored.img")
            await on(pilot, SummaryScreen, timeout=60)
            assert app.screen.job.summary.verified  # type: ignore[attr-defined]
        assert compare(str(source_image), str(restored)).identical

    run(scenario)
    refused = [e for e in peer.events if isinstance(e, JobEnded) and not e.ok]
    assert [(e.code, e.pairing_kept) for e in refused] == [("passphrase", True)]
    assert "wrong passphrase" in refused[0].message  # the line the other machine's screen shows
    assert image_header(str(image)).encrypted  # the header says so
    with pytest.raises(PassphraseError):
        ImageReader(str(image))
    (tmp_path / "wrong").write_text("not the passphrase\n")
    (tmp_path / "right").write_text(SECRET + "\n")
    wrong = Recovery("image", "verify", str(image), "--passphrase-file", str(tmp_path / "wrong"))
    assert wrong.wait() == 17 and "wrong passphrase" in wrong.event("error")["message"]
    right = Recovery("image", "verify", str(image), "--passphrase-file", str(tmp_path / "right"))
    assert right.wait() == 0, right.stderr
    # Never in an event, a log, a journal or the image itself, on either machine.
    said = [events.to_json(e) for e in peer.events] + right.stderr.splitlines()
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name not in ("wrong", "right")]
    assert files and not [p for p in files if SECRET.encode() in p.read_bytes()]
    assert not [line for line in said if SECRET in line] and all(SECRET not in json.dumps(e) for e in right.events)


def test_an_encrypted_image_saved_here_is_opened_here_before_the_review_when_it_is_restored(
    make_peer: type[Peer], source_image: Path, blank_image: Path, tmp_path: Path, folder: Path
) -> None:
    own = tmp_path / "own.img"
    own.write_bytes(bytes(1 << 20))
    peer = make_peer([source_image, blank_image], name="new-laptop")

    async def scenario() -> None:
        app = WizardApp(config(peer, tmp_path, own))
        async with app.run_test(size=SIZE) as pilot:
            await peer_disk_saved_here(pilot, peer.code, folder)
            await type_passphrase(pilot, SECRET, SECRET)
            await confirm_review(pilot, "saved.img")
            await on(pilot, SummaryScreen, timeout=60)
            assert image_header(str(folder / "saved.img")).encrypted
            await pilot.press("enter")  # another clone: from the image here onto the peer's blank disk
            await on(pilot, DirectionScreen)
            await pilot.press("home", "enter")
            await on(pilot, DiskScreen, "copy")
            await pilot.press("i")
            screen = await in_folder(pilot, folder)
            screen.query_one("#images").focus()
            await pilot.press("enter")
            await on(pilot, DiskScreen, "overwrite")
            await pilot.press("down", "enter")  # its second disk, blank.img
            await type_passphrase(pilot, "not the passphrase")
            await on(pilot, OptionsScreen)  # opened here, refused before the review
            assert "Wrong passphrase for this image" in text_of(app, "#passphrase-help")
            await type_passphrase(pilot, SECRET)
            await confirm_review(pilot, "blank.img")
            await on(pilot, SummaryScreen, timeout=60)
            assert app.screen.job.summary.verified  # type: ignore[attr-defined]
        assert compare(str(source_image), str(blank_image)).identical
        assert own.read_bytes() == bytes(1 << 20)

    run(scenario)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not [p for p in files if SECRET.encode() in p.read_bytes()]
