"""What the screens show, from plain data: disk rows, refusals, progress, advice."""

from __future__ import annotations

import dataclasses
import datetime

from recovery import events
from recovery.disks.match import find_disk, same_disk
from recovery.engine.peer.jobs import JobStarted
from recovery.protocol.messages import DiskInfo, Identity, ImageEntry, PartitionInfo
from recovery.tui import flow
from recovery.tui.advice import advise
from recovery.tui.job import JobView, limit_words, of
from recovery.tui.links import LinkReport
from recovery.tui.model import (
    Choice,
    can_grow,
    contents,
    image_name,
    image_refusal,
    passphrase_asked,
    restore_refusal,
    short_name,
    source_refusal,
    target_refusal,
    typed_passphrase,
    used_bytes,
)
from recovery.tui.review import review_rows
from recovery.tui.screens.home import address_text, link_rows
from recovery.tui.screens.progress import title
from recovery.tui.screens.results import verdict_kind
from tests.tui import fakes

GIB, MIB = fakes.GIB, fakes.MIB


def test_contents_says_what_is_on_a_disk() -> None:
    assert contents(fakes.LOCAL[0]) == (
        'gpt: vfat "EFI" 512.0 MiB (31.0 MiB used) · ext4 "root" 480.0 GiB '
        "(51.0 GiB used) [Debian GNU/Linux 12 (bookworm)] · swap 31.0 GiB"
    )
    assert contents(fakes.PEER[0]) == (
        "no partition table, no filesystem: all zeros where sampled (never used, or wiped)"
    )
    noise = dataclasses.replace(fakes.PEER[0], blank=False)
    assert "data nothing here recognises" in contents(noise)
    whole = DiskInfo(path="/dev/sdc", size=GIB, partitions=(PartitionInfo(0, 0, GIB, "ext4", "backup", MIB),))
    assert contents(whole) == 'ext4 on the whole disk "backup" 1.0 GiB (1.0 MiB used)'
    gone = DiskInfo(path="/dev/sdd", size=0, unreadable="cannot be read: No medium found")
    assert contents(gone) == "cannot be read: No medium found" and source_refusal(gone) == gone.unreadable
    assert used_bytes(fakes.LOCAL[0]) == 31 * fakes.MIB + 51 * fakes.GIB
    assert used_bytes(fakes.PEER[0]) is None


def test_the_confirmation_word_is_the_short_name() -> None:
    assert short_name(fakes.PEER[0]) == "nvme0n1"
    assert short_name(dataclasses.replace(fakes.PEER[0], path="/tmp/demo/new-disk.img")) == "new-disk.img"


def test_targets_that_cannot_be_used_say_why() -> None:
    source = fakes.LOCAL[0]
    assert target_refusal(source, fakes.PEER[0]) is None
    assert target_refusal(source, fakes.PEER[1]) is None  # smaller, but its data fits: shrunk to fit
    tiny = dataclasses.replace(fakes.PEER[1], size=32 * fakes.GIB)  # its data and a 64 MiB swap need more
    # 56.7 GiB of partitions at their smallest, and the 511 MiB gap before the swap, which the layout keeps
    assert target_refusal(source, tiny) == "too small: 32.0 GiB, the source needs 57.2 GiB even shrunk"
    no_table = dataclasses.replace(source, ptable=None)
    assert target_refusal(no_table, fakes.PEER[1]) == "too small: 256.0 GiB, the source needs 512.0 GiB"
    assert target_refusal(source, fakes.PEER[2]) == "it is the boot stick of this appliance"
    unknown = dataclasses.replace(fakes.PEER[0], identity=None)
    assert "did not identify" in (target_refusal(source, unknown) or "")
    assert target_refusal(source, source) == "it is the source disk, or the source lives on it"


def test_a_mounted_source_is_refused() -> None:
    mounted = dataclasses.replace(fakes.LOCAL[0], mountpoints=("/mnt",))
    assert source_refusal(mounted) == "mounted at /mnt: unmount it first"
    assert source_refusal(fakes.LOCAL[0]) is None


def test_progress_is_one_whole_across_copying_and_reading_back() -> None:
    """Issue 7: one bar, one ETA and the stage, not a bar that restarts at 0% for the read-back."""
    job = fakes.job()
    assert job.stage_line() == "Stage 2 of 4: copying"
    assert job.done == 40 * 653 * MIB and len(job.history) == 40
    assert 0.24 < job.fraction < 0.26  # half the copy, none of the read-back (as many bytes again)
    copy_left = (51 * GIB - job.done) / job.rate
    assert job.overall_eta() == copy_left + 51 * GIB / job.rate  # the read-back at the copy's pace until it runs
    assert job.numbers() == (  # what the bar measures: both stages' bytes (issue 21: 24.1% beside "44 of 91")
        "copied 25.5 of 51.0 GiB, read back 0 B of 51.0 GiB",
        f"330.0 MiB/s  ·  1:21 elapsed  ·  about {fmt(copy_left + 51 * GIB / job.rate)} left in all",
    )
    assert job.fraction == (job.done + 0) / (51 * GIB + 51 * GIB)
    back = fakes.job(stage="verify")
    assert back.stage_line() == "Stage 3 of 4: reading the target back"
    assert 0.69 < back.fraction < 0.70 and back.overall_eta() == (51 - 20) * GIB / (1.1 * GIB)
    assert back.numbers()[0] == "copied 51.0 of 51.0 GiB, read back 20.0 of 51.0 GiB"
    assert back.fraction == (51 + 20) / (51 + 51)
    back.apply(events.Progress(phase="verify", done=51 * GIB, total=51 * GIB, rate=1e9, eta=0))
    assert back.stage_line() == "Stage 4 of 4: checking the filesystems on the target"
    job.apply(events.Warning("partclone could not read the ntfs"))
    assert job.warnings == ["partclone could not read the ntfs"]
    no_verify = fakes.job()
    no_verify.verify = False
    assert no_verify.stage_line() == "Stage 2 of 2: copying" and 0.49 < no_verify.fraction < 0.51
    assert no_verify.numbers()[0] == "copied 25.5 of 51.0 GiB"
    assert of(44 * MIB, GIB) == "44.0 MiB of 1.0 GiB"


def aborted(role: str, done: int, durable: int) -> JobView:
    """One side's view of a clone stopped while streaming: as far as that side got, and the last ack."""
    started = JobStarted(role=role, driver="here", peer="peer", source="sda", target="sdb")
    job = JobView(started, host="here", clock=lambda: 10.0, started_at=0.0)
    job.apply(
        events.PlanMade(role=role, source="sda", target="sdb", mode="used", size=GIB, to_send=512 * MIB, chunk_size=MIB)
    )
    job.apply(events.Phase("transfer", "sending"))
    job.apply(events.Progress(phase="transfer", done=done, total=512 * MIB, rate=1.0, eta=None, durable=durable))
    return job


def test_both_machines_say_the_same_bytes_written_for_a_clone_that_stopped() -> None:
    """Issue 21: 120.2 vs 92.2 MiB for the same aborted clone: the receiver counted what it had written
    (flushed or not), the sender what the last ack said. Both say the last ack now."""
    sender, receiver = aborted("sender", 130 * MIB, 92 * MIB), aborted("receiver", 120 * MIB, 92 * MIB)
    assert sender.target_state("sdb") == receiver.target_state("sdb")
    assert "92.0 MiB of 512.0 MiB were written" in sender.target_state("sdb")


def test_the_progress_title_says_rescue_mode_first() -> None:
    """Issue 21: the next review and the progress title never mentioned rescue."""

    def job(driver: str, rescue: bool) -> JobView:
        started = JobStarted(role="sender", driver=driver, peer="new-pc", source="sda", target="sdb", rescue=rescue)
        return JobView(started, host="here", clock=lambda: 0.0, started_at=0.0)

    assert title(job("here", True)) == "Rescue mode: copying to new-pc"
    assert title(job("here", False)) == "Copying to new-pc"
    assert title(job("peer", True)) == "Rescue mode, controlled from new-pc"


def test_green_means_verified_only() -> None:
    """Issue 21: a partial rescue's INCOMPLETE SOURCE was the same green as VERIFIED."""
    base = fakes.job(finished=True).summary
    assert base is not None
    assert verdict_kind(base) == "verified"
    assert verdict_kind(dataclasses.replace(base, unreadable=4096)) == "partial"
    assert verdict_kind(dataclasses.replace(base, verified=None)) == "partial"
    assert verdict_kind(dataclasses.replace(base, verified=False, unreadable=4096)) == "failed"


def test_processors_that_hold_a_busy_disk_stage_show_on_its_bar() -> None:
    """The processors are named, and the bar underlined is the busy one that waits for them."""
    job = fakes.job()
    job.stages = {"read": 0.98, "compress": 0.1, "link": 0.0, "decompress": 0.0, "write": 0.0}
    job.bottleneck = "compress"
    assert job.limit_row() == "read" and job.limit_text().startswith("rescue-laptop's processors are the limit")
    job.stages["compress"] = 0.9
    assert job.limit_row() == "compress"
    assert fakes.job(stage="verify").shown_stages() == {}  # nothing crosses the link: no shares shown


def fmt(seconds: float) -> str:
    from recovery.units import human_duration

    return human_duration(seconds)


def test_the_limit_names_the_machine_and_verification_reads_the_target() -> None:
    """Issue 6: the other machine's processors are a possible answer; the read-back is the target's disk."""
    assert limit_words("compress", "old-pc", "new-pc").startswith("old-pc's processors are the limit now")
    assert limit_words("decompress", "old-pc", "new-pc").startswith("new-pc's processors are the limit now")
    assert "target disk on new-pc" in limit_words("write", "old-pc", "new-pc")
    assert limit_words("link", "a", "b") == "The link is the limit now: it carries all it can."
    back = fakes.job(stage="verify")
    assert back.limit_text().startswith(f"Checking the target on {fakes.THERE}: reading it back")
    assert "source" not in back.limit_text()
    passive = fakes.job(passive=True)  # this machine receives: the sender is the other one
    assert (passive.sending_host, passive.receiving_host) == (fakes.HERE, fakes.THERE)


def test_a_failed_clone_says_what_the_target_holds_and_how_far_it_got() -> None:
    half = fakes.job(failed=True)
    assert half.target_state("sdb on new-laptop") == (
        "sdb on new-laptop is now INCOMPLETE: its old partition table was wiped and 25.4 GiB of 51.0 GiB were "
        "written. Do not boot from it."
    )
    assert half.how_far() == "It stopped while copying, at 25% of the clone, after 2:41."
    early = fakes.job()
    early.planned = False
    assert early.target_state("sdb on x") == "sdb on x was not written: it is as it was."


def test_answers_stay_unless_a_new_one_rules_them_out() -> None:
    choice = Choice(send=True, source=fakes.LOCAL[0], target=fakes.PEER[0], mode="exact")
    assert flow.answer(choice, "direction", True) == choice
    assert flow.answer(choice, "direction", False) == Choice(send=False, mode="exact")
    tiny = dataclasses.replace(fakes.PEER[1], size=16 * fakes.GIB)
    small = flow.answer(choice, "target", tiny)  # too small for this source, chosen anyway
    assert flow.answer(small, "source", fakes.LOCAL[0]).target is None
    assert flow.answer(choice, "source", fakes.LOCAL[0]).target == fakes.PEER[0]
    assert flow.label("target") == "Step 4 of 6: the disk to overwrite"
    assert flow.previous("direction") == "pair" and flow.following("options") == "review"


def test_a_recheck_finds_the_disks_by_identity_and_says_what_changed() -> None:
    choice = fakes.choice()
    assert flow.recheck(choice, fakes.LOCAL, fakes.PEER, fakes.HERE, fakes.THERE) == flow.Recheck(
        choice, (), written_only=True
    )
    assert choice.target is not None and choice.target.identity is not None
    written = dataclasses.replace(
        choice.target, path="/dev/nvme1n1", identity=dataclasses.replace(choice.target.identity, fingerprint="1" * 64)
    )
    found = flow.recheck(choice, fakes.LOCAL, (written, *fakes.PEER[1:]), fakes.HERE, fakes.THERE)
    assert found.choice is not None and found.choice.target == written
    assert found.changes == (
        "the target nvme0n1 on new-laptop is now called nvme1n1",
        "the target nvme0n1 on new-laptop: its partition table changed since it was chosen",
    )
    gone = flow.recheck(choice, fakes.LOCAL, fakes.PEER[1:], fakes.HERE, fakes.THERE)
    assert gone.choice is None and "is gone" in gone.changes[0]
    mounted = dataclasses.replace(fakes.PEER[0], refusal="it is mounted at /mnt")
    busy = flow.recheck(choice, fakes.LOCAL, (mounted,), fakes.HERE, fakes.THERE)
    assert busy.choice is None and busy.changes == ("it cannot be done now: it is mounted at /mnt",)


def test_only_a_target_whose_tables_alone_changed_may_resume_without_the_review() -> None:
    """The wizard resumes by itself only onto the very disk it chose: the interrupted clone wiped its
    partition tables, nothing else may differ (another device in the same slot, another name)."""
    choice = fakes.choice()
    assert choice.target is not None and choice.target.identity is not None
    tables = dataclasses.replace(choice.target.identity, fingerprint="1" * 64)
    wiped = dataclasses.replace(choice.target, identity=tables)
    assert flow.recheck(choice, fakes.LOCAL, (wiped, *fakes.PEER[1:]), fakes.HERE, fakes.THERE).written_only
    swapped = dataclasses.replace(
        choice.target, identity=dataclasses.replace(tables, serial=None, storage=("=blk:259:7",))
    )  # a serial-less disk in its place
    choice = dataclasses.replace(
        choice,
        target=dataclasses.replace(choice.target, identity=dataclasses.replace(choice.target.identity, serial=None)),
    )
    other = flow.recheck(choice, fakes.LOCAL, (swapped, *fakes.PEER[1:]), fakes.HERE, fakes.THERE)
    assert not other.written_only
    renamed = dataclasses.replace(wiped, path="/dev/nvme1n1")
    assert not flow.recheck(
        fakes.choice(), fakes.LOCAL, (renamed, *fakes.PEER[1:]), fakes.HERE, fakes.THERE
    ).written_only


def test_review_says_the_writing_peer_reads_back_even_when_verification_is_off() -> None:
    off = dataclasses.replace(fakes.choice(), verify=False)
    said = dict(review_rows(off, fakes.HERE, fakes.THERE))
    assert said["Verify"].startswith("new-laptop reads back") and "it always checks what it writes" in said["Verify"]
    here = dataclasses.replace(off, send=False)
    assert dict(review_rows(here, fakes.HERE, fakes.THERE))["Verify"].startswith("off: nothing is read back")
    exact = dict(review_rows(dataclasses.replace(fakes.choice(), mode="exact"), fakes.HERE, fakes.THERE))
    assert exact["Verify"] == "new-laptop reads the whole target back: its BLAKE3 must be the source's"
    assert exact["Mode"] == "exact: all 512.0 GiB, block for block, compressed"


def test_a_choice_completes_into_what_the_session_runs() -> None:
    clone = Choice(send=False, source=fakes.PEER[1], target=fakes.LOCAL[0], mode="exact", level=0).complete()
    assert (clone.send, clone.mode, clone.level, clone.verify) == (False, "exact", 0, True)


def test_an_image_stands_in_for_a_disk_and_the_steps_around_it_follow() -> None:
    entry = ImageEntry(name="pc.img", file_bytes=GIB, size=fakes.LOCAL[0].size, source="/dev/sda", mode="exact")
    restore = flow.answer(Choice(send=True), "image", ("/media/usb", entry))
    assert restore.source is not None and restore.source.path == "/media/usb/pc.img" and restore.mode == "exact"
    assert flow.following("image", restore) == "target" and flow.previous("target", restore) == "image"
    assert flow.label("image") == "Step 3 of 6: the image to restore"
    restore = flow.answer(restore, "target", fakes.PEER[0])
    checked = flow.recheck(restore, (), fakes.PEER, fakes.HERE, fakes.THERE)  # an image is not in any disk list
    assert checked.choice == restore and checked.changes == ()
    clone = restore.complete()
    assert clone.image_source == "/media/usb/pc.img" and clone.image_target is None
    said = dict(review_rows(restore, fakes.HERE, fakes.THERE))
    assert said["Restore"].startswith("the image /media/usb/pc.img of rescue-laptop: /dev/sda · exact")
    assert "DESTROYS" in said
    save = flow.answer(flow.answer(Choice(send=True), "source", fakes.LOCAL[0]), "folder", "/srv/pc.img")
    assert save.target is not None and save.target.size == fakes.LOCAL[0].size and save.image_target == "/srv/pc.img"
    assert flow.previous("options", save) == "folder" and flow.following("folder", save) == "options"
    assert flow.recheck(save, fakes.LOCAL, (), fakes.HERE, fakes.THERE).choice == save
    said = dict(review_rows(save, fakes.HERE, fakes.THERE))
    assert "DESTROYS" not in said and said["Into"] == "a new image file /srv/pc.img of new-laptop"
    disk_again = flow.answer(save, "target", fakes.PEER[0])  # a disk chosen after all: no image any more
    assert disk_again.image_target is None and disk_again.complete().image_target is None
    assert flow.answer(restore, "direction", False) == Choice(send=False, mode="exact")


def test_an_image_is_named_for_its_disk_and_day_and_says_why_it_cannot_be_restored() -> None:
    day = datetime.date(2026, 12, 6)
    assert image_name(fakes.LOCAL[0], day) == "Samsung-SSD-980-PRO-2026-12-06.img"
    assert image_name(DiskInfo(path="/tmp/a b.img", size=1, model="image file"), day) == "a-b-2026-12-06.img"
    assert image_refusal(ImageEntry(name="x.img", file_bytes=1, size=GIB, encrypted=True)) is None  # it asks
    assert "cannot take its passphrase" in str(image_refusal(ImageEntry("x.img", 1, GIB, encrypted=True), "b"))
    assert image_refusal(ImageEntry(name="x.img", file_bytes=1, problem="incomplete")) == "incomplete"
    assert image_refusal(ImageEntry(name="x.img", file_bytes=1, size=GIB)) is None
    four_k = ImageEntry(name="x.img", file_bytes=1, size=GIB, sector_size=4096)
    assert fakes.PEER[0].identity is not None
    disk = dataclasses.replace(fakes.PEER[0], identity=dataclasses.replace(fakes.PEER[0].identity, sector_size=512))
    assert "logical sectors are 512 bytes, the source's are 4096" in str(restore_refusal(four_k, disk))
    assert restore_refusal(dataclasses.replace(four_k, sector_size=512), disk) is None


def test_advice_for_each_error() -> None:
    lost = advise("link_lost", "link lost: nothing heard from the peer for 31 s", peer="b")
    assert lost.waiting and lost.title == "The link to b was lost"
    refused = advise("refused", "refusing to write /dev/sdb: it is mounted at /mnt", peer="b", reported_by="b")
    assert refused.message == "Refusing to write /dev/sdb: it is mounted at /mnt (reported by b)"
    assert not refused.waiting
    read = advise("source_read", "cannot read", hint="the disk may be failing")
    assert read.steps[0] == "The disk may be failing"
    assert advise("cancelled", "the peer cancelled: cancelled", peer="b").title == "The clone was cancelled on b"
    assert advise("nonsense", "x").title == "Something went wrong inside usb4-recovery"


def test_link_rows_show_modules_and_status() -> None:
    rows = dict(link_rows(fakes.LINKS, {"tcp": "listening on port 7554", "connect": "connecting to x..."}))
    assert rows["Modules"] == "loaded: thunderbolt, thunderbolt_net; not loaded: thunderbolt_stream"
    assert rows["TCP"] == "listening on port 7554"
    assert rows["Connecting"] == "connecting to x..."
    assert link_rows(None, {}) == [("Links", "looking at them...")]


def test_the_address_box_names_only_addresses_this_machine_listens_on() -> None:
    """Issue 11: it said "on 192.0.2.2" while bound to 127.0.0.1 only."""
    report = LinkReport(modules=(), hosts_on_cable=(), addresses=("192.0.2.2", "2001:db8::2"))
    assert address_text(("", 7554), report, True) == "192.0.2.2, 2001:db8::2   (port 7554)"
    assert address_text(("", 7600), report, True) == "192.0.2.2:7600, [2001:db8::2]:7600"
    assert address_text(("127.0.0.1", 7554), report, True) == "127.0.0.1   (it listens on this address only)"
    assert "--no-listen" in address_text(None, report, False)
    assert "no network address yet" in address_text(("", 7554), LinkReport((), (), ()), True)


def _ident(**kw: object) -> Identity:
    base: dict[str, object] = dict(
        path="/dev/sdb", size=100, kind="disk", host_id="h", fingerprint="f", storage=("=blk:8:16",)
    )
    base.update(kw)
    return Identity(**base)  # type: ignore[arg-type]


def test_a_pinned_disk_is_found_by_hardware_not_by_name() -> None:
    pinned = _ident(serial="S1")
    assert same_disk(pinned, _ident(path="/dev/sdc", serial="S1", storage=("=blk:8:32",)))
    assert not same_disk(pinned, _ident(serial="S2"))  # same name, another disk
    assert not same_disk(pinned, _ident(serial="S1", host_id="other"))
    assert same_disk(_ident(wwn="w1", serial="x"), _ident(wwn="w1", serial="y"))
    assert same_disk(_ident(kind="file"), _ident(kind="file"))  # no names: the device itself
    assert not same_disk(_ident(kind="file"), _ident(kind="file", storage=("=file:1:2",)))


def test_find_disk_skips_vanished_paths_and_refuses_ambiguity() -> None:
    table = {"/dev/sdb": _ident(serial="S2"), "/dev/sdc": _ident(path="/dev/sdc", serial="S1")}

    def identify(path: str) -> Identity:
        if path not in table:
            raise FileNotFoundError(path)
        return table[path]

    assert find_disk(_ident(serial="S1"), ["/dev/gone", "/dev/sdb", "/dev/sdc"], identify) == (
        "/dev/sdc",
        table["/dev/sdc"],
    )
    assert find_disk(_ident(serial="S9"), ["/dev/sdb"], identify) is None
    part = _ident(kind="partition", serial="S1", storage=("=blk:8:33",))
    twins = {
        "/dev/sdc1": _ident(kind="partition", serial="S1", storage=("=blk:8:33",)),
        "/dev/sdc2": _ident(kind="partition", serial="S1", storage=("=blk:8:34",)),
    }
    assert find_disk(part, list(twins), twins.__getitem__) == ("/dev/sdc1", twins["/dev/sdc1"])


def test_rescue_mode_belongs_to_its_source_and_never_carries_to_another_disk() -> None:
    """Issue 21: rescue mode chosen after one source failed went on for the next clone, of a healthy disk."""
    rescued = dataclasses.replace(fakes.choice(), rescue=True)
    same = flow.answer(rescued, "source", dataclasses.replace(fakes.LOCAL[0]))  # the same disk, listed again
    assert same.rescue and dict(review_rows(same, fakes.HERE, fakes.THERE))["Rescue"].startswith("on:")
    other = flow.answer(rescued, "source", fakes.PEER[1])
    assert not other.rescue and dict(review_rows(other, fakes.HERE, fakes.THERE))["Rescue"] == "off"
    turned = flow.answer(rescued, "direction", False)  # other disks altogether
    assert not flow.answer(turned, "source", fakes.LOCAL[0]).rescue


def test_the_review_says_whether_the_clone_resumes_and_from_how_far() -> None:
    choice = fakes.choice()
    target = fakes.interrupted(choice.target, choice.source)  # type: ignore[arg-type]

    def start(**kw: object) -> str:
        return dict(review_rows(dataclasses.replace(choice, **kw), fakes.HERE, fakes.THERE))["Start"]

    assert start() == "from the beginning"
    assert start(target=target) == (
        "resumes at 344.0 MiB of 1.0 GiB (the clone of 2026-12-06 14:02): only the rest is sent"
    )
    assert (
        start(target=target, restart=True) == "from the beginning: the interrupted clone on the target is started over"
    )
    assert start(target=target, mode="exact") == (
        "from the beginning: the interrupted clone on the target ran in used mode"
    )
    of_another = fakes.interrupted(choice.target, fakes.PEER[1])  # type: ignore[arg-type]
    assert start(target=of_another) == "from the beginning"
    done = fakes.interrupted(choice.target, choice.source, complete=True, rescue=True)  # type: ignore[arg-type]
    assert start(target=done, rescue=True).startswith("only the areas the source could not read are tried again")


def test_a_disk_the_wizard_wrote_is_named_by_its_journal_in_the_lists_and_the_review() -> None:
    """Issue 21: the wizard's own incomplete copy was "data nothing here recognises (encrypted? foreign?)"."""
    choice = fakes.choice()
    target = fakes.interrupted(choice.target, choice.source)  # type: ignore[arg-type]
    named = "incomplete clone of rescue-laptop's nvme0n1 (Samsung SSD 980 PRO), 344.0 MiB written, 2026-12-06 14:02"
    assert contents(target) == named
    destroys = dict(review_rows(dataclasses.replace(choice, target=target), fakes.HERE, fakes.THERE))["DESTROYS"]
    assert destroys == f"everything on nvme0n1 of new-laptop: {named}"
    older = fakes.interrupted(choice.target, choice.source, source_host="", source_name="")  # type: ignore[arg-type]
    assert contents(older).startswith("incomplete clone of rescue-laptop:/dev/nvme0n1, Samsung SSD 980 PRO")
    done = fakes.interrupted(fakes.LOCAL[0], fakes.PEER[0], complete=True, source_host=fakes.THERE)
    assert contents(done).startswith(
        "clone of new-laptop's nvme0n1 (WD Blue SN580), finished but for areas the source could not read, "
        "2026-12-06 14:02: gpt: vfat"
    )


def test_the_wizards_advice_uses_its_keys_never_the_command_line() -> None:
    """Issue 21 item 13: "run the same command again with --rescue" on a wizard's screen, and "then Retry"
    on the serving machine, whose only key is Enter."""
    hint = "the disk may be failing: run the same command again with --rescue to copy everything that can be read"
    read = advise("source_read", "cannot read", hint=hint, peer="b")
    assert read.steps[0] == "The disk may be failing" and read.steps[1].startswith("Press r to retry: ")
    assert not any("--" in step or "same command" in step for step in read.steps)
    served = advise("integrity", "damaged", peer="office-pc", serving=True)
    assert served.steps == ("Check the cable, then retry from office-pc.",)
    lost = advise("link_lost", "lost", hint="run the same commands again: the clone resumes (x keeps its journal)")
    assert not any("same commands" in step for step in lost.steps)
    assert "type the code this machine shows now on b" in advise("link_lost", "lost", peer="b", serving=True).steps[1]
    assert advise("cancelled", "x", keyed=False).steps == ("Start the clone again whenever you are ready.",)


def test_a_larger_target_is_grown_only_when_the_user_asks_and_the_review_says_so() -> None:
    source, larger = fakes.LOCAL[0], fakes.PEER[0]  # 512 GiB with ext4, onto 1 TiB
    choice = Choice(send=True, source=source, target=larger)
    assert can_grow(source, larger) and not can_grow(larger, source)
    assert choice.complete().fit == "keep" and "Grows" not in dict(review_rows(choice, "here", "there"))
    grown = flow.answer(choice, "options", dataclasses.replace(choice, grow=True))
    assert grown.complete().fit == "grow"
    assert dict(review_rows(grown, "here", "there"))["Grows"].startswith("nvme0n1 is larger (1.0 TiB for 512.0 GiB)")
    image_only = dataclasses.replace(source, partitions=(), ptable=None)
    assert not can_grow(image_only, larger)  # nothing to grow: the choice is not offered


def test_a_saved_image_may_be_encrypted_by_a_passphrase_typed_twice_and_the_review_never_shows_it() -> None:
    save = flow.answer(flow.answer(Choice(send=True), "source", fakes.LOCAL[0]), "folder", "/srv/pc.img")
    assert passphrase_asked(save) == "new" and passphrase_asked(Choice(send=True)) == ""
    assert typed_passphrase("new", False, "", "") == (None, None)  # not encrypted
    assert typed_passphrase("new", True, "correct horse", "correct horse") == ("correct horse", None)
    differ = typed_passphrase("new", True, "correct horse", "correct house")
    assert differ[0] is None and "the two passphrases differ" in str(differ[1])
    short = typed_passphrase("new", True, "abc", "abc")
    assert short[0] is None and "at least 8 characters" in str(short[1]) and "this one has 3" in str(short[1])
    secret = "correct horse"
    encrypted = flow.answer(save, "options", dataclasses.replace(save, passphrase=secret))
    assert encrypted.passphrase == secret and encrypted.complete().passphrase == secret
    said = dict(review_rows(encrypted, fakes.HERE, fakes.THERE))
    assert said["Encrypt"].startswith("yes: new-laptop encrypts the image (AES-256-GCM)")
    assert "Encrypt" not in dict(review_rows(save, fakes.HERE, fakes.THERE))  # not chosen: no row
    everything = repr(encrypted) + repr(encrypted.complete()) + repr(review_rows(encrypted, fakes.HERE, fakes.THERE))
    assert secret not in everything
    # Another target, source or direction drops it: the passphrase was for that image.
    assert flow.answer(encrypted, "target", fakes.PEER[0]).passphrase is None
    assert flow.answer(encrypted, "source", fakes.LOCAL[1]).passphrase is None
    assert flow.answer(encrypted, "direction", False).passphrase is None
    assert flow.answer(encrypted, "folder", "/srv/other.img").passphrase == secret  # another name: kept


def test_an_encrypted_image_asks_for_its_passphrase_once_and_a_plain_one_for_none() -> None:
    entry = ImageEntry(name="pc.img", file_bytes=GIB, size=fakes.LOCAL[0].size, encrypted=True)
    restore = flow.answer(flow.answer(Choice(send=True), "image", ("/media/usb", entry)), "target", fakes.PEER[0])
    assert passphrase_asked(restore) == "image"
    assert typed_passphrase("image", True, "", "") == (None, "type the image's passphrase")
    assert typed_passphrase("image", True, "short", "") == ("short", None)  # an old image's may be short
    opened = flow.answer(restore, "options", dataclasses.replace(restore, passphrase="short"))
    assert opened.complete().passphrase == "short"
    said = dict(review_rows(opened, fakes.HERE, fakes.THERE))
    assert said["Encrypt"] == "the image is: rescue-laptop opens it with the passphrase typed here"
    plain_entry = dataclasses.replace(entry, encrypted=False)
    plain = flow.answer(flow.answer(Choice(send=True), "image", ("/media/usb", plain_entry)), "target", fakes.PEER[0])
    assert passphrase_asked(plain) == "" and dataclasses.replace(plain, passphrase="x").complete().passphrase is None
    assert advise("passphrase", "wrong passphrase", peer="b", serving=True).steps == (
        "Nothing was written: the passphrase is typed again on b.",
    )
