"""What the screens show, from plain data: disk rows, refusals, progress, advice."""

from __future__ import annotations

import dataclasses

from recovery import events
from recovery.disks.match import find_disk, same_disk
from recovery.protocol.messages import Identity
from recovery.tui.advice import advise
from recovery.tui.model import (
    Choice,
    contents,
    short_name,
    source_refusal,
    stage_order,
    target_refusal,
    used_bytes,
)
from recovery.tui.screens.home import link_rows
from recovery.tui.screens.steps import review_text
from tests.tui import fakes


def test_contents_says_what_is_on_a_disk() -> None:
    assert contents(fakes.LOCAL[0]) == ('gpt: vfat "EFI" 512.0 MiB (31.0 MiB used) · '
                                        'ext4 "root" 480.0 GiB (51.0 GiB used) · swap 31.0 GiB')
    assert contents(fakes.PEER[0]) == "no partition table, no filesystem found"
    assert used_bytes(fakes.LOCAL[0]) == 31 * fakes.MIB + 51 * fakes.GIB
    assert used_bytes(fakes.PEER[0]) is None


def test_the_confirmation_word_is_the_short_name() -> None:
    assert short_name(fakes.PEER[0]) == "nvme0n1"
    assert short_name(dataclasses.replace(fakes.PEER[0], path="/tmp/demo/new-disk.img")) == "new-disk.img"


def test_targets_that_cannot_be_used_say_why() -> None:
    source = fakes.LOCAL[0]
    assert target_refusal(source, fakes.PEER[0]) is None
    assert target_refusal(source, fakes.PEER[1]) == "too small: 256.0 GiB, the source needs 512.0 GiB"
    assert target_refusal(source, fakes.PEER[2]) == "it is the boot stick of this appliance"
    unknown = dataclasses.replace(fakes.PEER[0], identity=None)
    assert "did not identify" in (target_refusal(source, unknown) or "")
    assert target_refusal(source, source) == "it is the source disk, or the source lives on it"


def test_a_mounted_source_is_refused() -> None:
    mounted = dataclasses.replace(fakes.LOCAL[0], mountpoints=("/mnt",))
    assert source_refusal(mounted) == "mounted at /mnt: unmount it first"
    assert source_refusal(fakes.LOCAL[0]) is None


def test_progress_folds_the_engines_events() -> None:
    job = fakes.job()
    assert job.phase == "transfer" and job.bottleneck == "link"
    assert job.done == 40 * 640 * fakes.MIB and len(job.history) == 40
    assert 0.48 < job.fraction < 0.5
    job.apply(events.Warning("partclone could not read the ntfs"))
    job.apply(events.Progress(phase="verify", done=1, total=2, rate=5.0, eta=1.0))
    assert job.phase == "verify" and job.warnings == ["partclone could not read the ntfs"]
    assert len(job.history) == 40  # verify progress does not count as throughput


def test_stages_follow_the_data() -> None:
    assert [s for s, _ in stage_order("sender")] == ["read", "compress", "link", "write"]
    assert [n for _, n in stage_order("receiver")] == ["link", "decompress", "disk write"]


def test_review_names_both_machines_and_the_loss() -> None:
    text = review_text(fakes.choice(), fakes.HERE, fakes.THERE).plain
    assert "/dev/nvme0n1 of rescue-laptop" in text and "/dev/nvme0n1 of new-laptop" in text
    assert "about 51.0 GiB" in text
    assert "Everything on /dev/nvme0n1 of new-laptop will be destroyed" in text
    exact = review_text(dataclasses.replace(fakes.choice(), mode="exact"), fakes.HERE, fakes.THERE).plain
    assert "exact: all 512.0 GiB" in exact


def test_review_says_the_writing_peer_reads_back_even_when_verification_is_off() -> None:
    off = dataclasses.replace(fakes.choice(), verify=False)
    assert "new-laptop always reads back what it writes" in review_text(off, fakes.HERE, fakes.THERE).plain
    here = dataclasses.replace(off, send=False)
    assert "no (not recommended)" in review_text(here, fakes.HERE, fakes.THERE).plain


def test_a_choice_completes_into_what_the_session_runs() -> None:
    clone = Choice(send=False, source=fakes.PEER[1], target=fakes.LOCAL[0], mode="exact", level=0).complete()
    assert (clone.send, clone.mode, clone.level, clone.verify) == (False, "exact", 0, True)


def test_advice_for_each_error() -> None:
    lost = advise("link_lost", "link lost: nothing heard from the peer for 31 s", peer="b")
    assert lost.waiting and lost.title == "The link to b was lost"
    refused = advise("refused", "peer: refusing to write /dev/sdb: it is mounted at /mnt", peer="b")
    assert refused.message == "Refusing to write /dev/sdb: it is mounted at /mnt (reported by b)"
    assert not refused.waiting
    read = advise("source_read", "cannot read", hint="the disk may be failing")
    assert read.steps[0] == "The disk may be failing"
    assert advise("cancelled", "the peer cancelled: cancelled", peer="b").title == "The clone was cancelled on b"
    assert advise("nonsense", "x").title == "Something went wrong inside usb4-recovery"


def test_link_rows_show_modules_and_status() -> None:
    rows = dict(link_rows(fakes.LINKS, {"tcp": "listening on port 7554", "connect": "connecting to x..."}))
    assert rows["Modules"] == "loaded: thunderbolt, thunderbolt_net; not loaded: thunderbolt_stream"
    assert rows["TCP"] == "listening on port 7554 on 192.168.1.20"
    assert rows["Connecting"] == "connecting to x..."
    assert link_rows(None, {}) == [("Links", "looking at them...")]


def _ident(**kw: object) -> Identity:
    base: dict[str, object] = dict(path="/dev/sdb", size=100, kind="disk", host_id="h", fingerprint="f",
                                   storage=("=blk:8:16",))
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
        "/dev/sdc", table["/dev/sdc"])
    assert find_disk(_ident(serial="S9"), ["/dev/sdb"], identify) is None
    part = _ident(kind="partition", serial="S1", storage=("=blk:8:33",))
    twins = {"/dev/sdc1": _ident(kind="partition", serial="S1", storage=("=blk:8:33",)),
             "/dev/sdc2": _ident(kind="partition", serial="S1", storage=("=blk:8:34",))}
    assert find_disk(part, list(twins), twins.__getitem__) == ("/dev/sdc1", twins["/dev/sdc1"])
