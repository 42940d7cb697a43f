"""Failing sources, rescued the ddrescue way. The source is a real block device that fails like a
disk with bad sectors: a FUSE-served image whose reads fail with EIO at chosen sectors, attached
read-only to a loop device (tests/rescue/). Real processes, real TCP, real filesystems.

What is checked: everything readable reaches the target and verifies; the unreadable sectors are
filled and listed exactly (in the summary, in the mapfile, which ddrescuelog reads); per-sector
reads happen only inside the failed clusters; the files the bad sectors hit are named (ext4,
NTFS); a second run with the mapfile reads only the bad areas; the time budget ends the later
passes on a disk that gets slower after an error; exit 14 on both sides, never 0."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from recovery.disks import fsinfo
from recovery.engine.rescue.sectormap import parse_mapfile
from recovery.engine.resume.journal import SAMPLE
from recovery.errors import SourceReadError, UnreadableSourceError
from tests.helpers import CODE, MIB, Recovery, fill_random, loop_device, mounted, sh
from tests.rescue.failing import FailingDisk, failing_disk

pytestmark = pytest.mark.root
SECTOR = 512
EXIT = UnreadableSourceError.exit_code
# What describing the source may read again when the page cache no longer holds it: the first and last MiB
# (identity, partition tables) and, on a disk that shows no table, the samples that tell it from a blank one.
LOOKS = 2 * MIB + fsinfo.SAMPLES * fsinfo.SAMPLE


def clone(disk: FailingDisk, target: Path, *extra: str, mode: str = "exact") -> tuple[Recovery, Recovery]:
    """A clone of the failing disk onto ``target``; the sender's logs and mapfile beside the target, so a
    mapfile of another test run (of the same source bytes) is never continued."""
    rx = Recovery("receive", "--code", CODE, "--target", str(target), "--listen", "127.0.0.1:0", "--yes")
    port = rx.wait_event("listening")["port"]
    tx = Recovery(
        "send",
        "--code",
        CODE,
        "--source",
        disk.device,
        "--to",
        f"127.0.0.1:{port}",
        "--mode",
        mode,
        "--chunk-size",
        "1M",
        "--log-dir",
        str(target.parent / "logs"),
        *extra,
    )
    return rx, tx


def bad_runs(sectors: list[int]) -> list[list[int]]:
    """The byte ranges [offset, length] the bad sectors make, adjacent ones joined."""
    runs: list[list[int]] = []
    for s in sorted(sectors):
        if runs and runs[-1][0] + runs[-1][1] == s * SECTOR:
            runs[-1][1] += SECTOR
        else:
            runs.append([s * SECTOR, SECTOR])
    return runs


def differing_sectors(a: Path, b: Path) -> list[int]:
    out = subprocess.run(["cmp", "-l", str(a), str(b)], capture_output=True, text=True).stdout
    return sorted({(int(line.split()[0]) - 1) // SECTOR for line in out.splitlines()})


@pytest.fixture
def random_disk(tmp_path: Path) -> Path:
    image = tmp_path / "source.img"
    fill_random(image, 32 * MIB, seed=9)
    return image


BAD = [5000, 5001, 9999, 20007, *range(40000, 40009), 65535]  # alone, in pairs, a run, the last sector


def test_rescue_copies_everything_readable_and_lists_exactly_what_is_not(random_disk: Path, tmp_path: Path) -> None:
    target = tmp_path / "copy.img"
    with failing_disk(random_disk, BAD) as disk:
        rx, tx = clone(disk, target, "--rescue")
        assert (tx.wait(), rx.wait()) == (EXIT, EXIT), (tx.stderr, rx.stderr)
        reads = disk.reads()
    for side in (tx, rx):
        summary = side.event("summary")
        assert summary and summary["verified"] is True  # everything that was read is verified ...
        assert summary["unreadable"] == len(BAD) * SECTOR  # ... and what was not is listed exactly
        assert summary["unreadable_ranges"] == bad_runs(BAD)
        assert "could not be read" in side.error_lines()[0] and "everything else was verified" in side.stderr
    assert differing_sectors(random_disk, target) == BAD  # the rest is byte for byte the source
    with open(target, "rb") as f:
        f.seek(40000 * SECTOR)
        assert f.read(9 * SECTOR) == bytes(9 * SECTOR)  # filled with zeros by default
    summary = tx.event("summary")
    assert summary is not None
    mapfile = Path(summary["mapfile"])
    smap, status = parse_mapfile(mapfile.read_text(), 32 * MIB)
    assert status.status == "+"
    assert [list(r) for r in smap.ranges("-")] == bad_runs(BAD) and not smap.ranges("?*/")
    if shutil.which("ddrescuelog"):  # the Debian package gddrescue
        listed = sh("ddrescuelog", "--list-blocks=-", str(mapfile)).stdout.split()
        assert [int(s) for s in listed] == BAD
        assert "bad-sector:     " in sh("ddrescuelog", "--show-status", str(mapfile)).stdout
    # Reads of one sector only inside the 64 KiB clusters whose large read failed.
    clusters = {s * SECTOR // (64 << 10) for s in BAD}
    single = [(off, n) for off, n, _ in reads if n == SECTOR]
    assert single and all(off // (64 << 10) in clusters for off, _ in single)
    # Large reads that failed: a few for each cluster (the kernel's read-ahead, the chunk, the cluster)
    # and the identity's and partition table's looks at the last sector; never a second pass over them.
    assert sum(1 for off, n, ok in reads if not ok and n > SECTOR) <= 4 * len(clusters)


def test_the_rescue_is_as_gentle_as_ddrescue(random_disk: Path, tmp_path: Path) -> None:
    """Issue 25: no failed read is repeated at its size, no retry pass by default, and a lone bad sector
    near an earlier error costs two failed reads (its cluster, then itself while trimming), as in GNU
    ddrescue; the first error of a clean stretch costs one more (the large read that found it)."""
    target = tmp_path / "copy.img"
    lone = [5000, 9999, 20007, 40000, 52000]  # each in its own cluster and chunk, within 64 MiB of the first
    with failing_disk(random_disk, lone) as disk:
        rx, tx = clone(disk, target, "--rescue")
        assert (tx.wait(), rx.wait()) == (EXIT, EXIT), (tx.stderr, rx.stderr)
        reads = disk.reads()
    failed = [(off, n) for off, n, ok in reads if not ok]
    # Read once (the improved chunks are sent again from what their first reads kept), but for looks at the
    # first and last MiB (identity, partition tables) and the good sectors trimming reads.
    assert sum(n for _, n, ok in reads if ok) <= (32 + 3) * MIB
    small = [(off, n) for off, n in failed if n <= 64 << 10]  # clusters and sectors, as this tool asks for them
    assert len(small) == len(set(small))  # never the same failed read twice
    assert sorted(off // SECTOR for off, n in small if n == SECTOR) == lone  # each bad sector tried once
    assert sorted(off // (64 << 10) for off, n in small if n > SECTOR) == [s * SECTOR // (64 << 10) for s in lone]
    # The large read that found the first: the kernel splits it in 128 KiB requests and tries the one that
    # failed once more itself (so the disk sees that twice); after it, clusters only.
    assert len(failed) - len(small) <= 2
    assert differing_sectors(random_disk, target) == lone


def test_a_second_run_with_the_mapfile_reads_only_the_bad_areas(random_disk: Path, tmp_path: Path) -> None:
    target = tmp_path / "copy.img"
    with failing_disk(random_disk, BAD) as disk:
        rx, tx = clone(disk, target, "--rescue")
        assert (tx.wait(), rx.wait()) == (EXIT, EXIT)
        disk.set_bad(BAD[:4])  # some sectors come back (a disk that cooled down), the others stay bad
        disk.forget_reads()
        rx, tx = clone(disk, target, "--rescue")
        assert (tx.wait(), rx.wait()) == (EXIT, EXIT), (tx.stderr, rx.stderr)
        reads = disk.reads()
        resumed = rx.event("resume")
        assert resumed and resumed["bytes"] == 32 * MIB  # the target held the whole first run
        summary = tx.event("summary")
        assert summary and summary["unreadable_ranges"] == bad_runs(BAD[:4]) and summary["verified"] is True
        assert differing_sectors(random_disk, target) == BAD[:4]
        # Only the bad areas were tried (sector by sector), and the sample that checks the source is unchanged.
        bad_bytes = {s * SECTOR for s in BAD}
        sectors = [off for off, n, _ in reads if n == SECTOR]
        assert set(sectors) == bad_bytes
        # Large reads: the sample of unchanged chunks, and the chunks that improved, read again to be sent whole.
        improved = {s * SECTOR // MIB for s in BAD[4:]}
        large = sum(n for _, n, _ in reads if n > SECTOR)
        assert large <= (SAMPLE + 2 + len(improved)) * MIB + LOOKS < 32 * MIB
        disk.set_bad([])
        rx, tx = clone(disk, target, "--rescue")
        assert (tx.wait(), rx.wait()) == (0, 0), (tx.stderr, rx.stderr)
    assert differing_sectors(random_disk, target) == []
    summary = tx.event("summary")
    assert summary and summary["unreadable"] == 0 and summary["verified"] is True
    smap, _ = parse_mapfile(Path(summary["mapfile"]).read_text(), 32 * MIB)
    assert list(smap.blocks()) == [(0, 32 * MIB, "+")]


def test_a_fill_pattern_marks_the_unreadable_sectors(random_disk: Path, tmp_path: Path) -> None:
    target = tmp_path / "copy.img"
    with failing_disk(random_disk, [100, 101]) as disk:
        rx, tx = clone(disk, target, "--rescue", "--fill", "UNREADABLE ")
        assert (tx.wait(), rx.wait()) == (EXIT, EXIT)
    sector = (b"UNREADABLE " * 50)[:SECTOR]  # the pattern starts again in each sector
    assert target.read_bytes()[100 * SECTOR : 102 * SECTOR] == sector * 2


def test_a_disk_that_slows_down_after_an_error_is_bounded_by_the_time_budget(random_disk: Path, tmp_path: Path) -> None:
    target = tmp_path / "copy.img"
    bad = list(range(30000, 30400, 7))  # a scratched area: every 7th sector
    with failing_disk(random_disk, bad, slow_after_error=0.02) as disk:
        rx, tx = clone(disk, target, "--rescue", "--rescue-time", "2")
        started = time.monotonic()
        assert (tx.wait(), rx.wait()) == (EXIT, EXIT), (tx.stderr, rx.stderr)
        took = time.monotonic() - started
    summary = tx.event("summary")
    assert summary and summary["verified"] is True
    warnings = [e["message"] for e in tx.events if e["event"] == "warning"]
    assert any("time budget spent: " in w for w in warnings)
    smap, _ = parse_mapfile(Path(summary["mapfile"]).read_text(), 32 * MIB)
    assert smap.ranges("*/")  # areas left untried when the budget ran out stay listed, as ddrescue would
    unreadable = {o // SECTOR for o, n in summary["unreadable_ranges"] for o in range(o, o + n, SECTOR)}
    assert set(bad) <= unreadable  # every bad sector is among what is listed; nothing read is
    assert set(differing_sectors(random_disk, target)) <= unreadable
    assert took < 60


def untried_in_warning(tx: Recovery) -> float:
    """The MiB the sender said it had not tried when its time budget was spent."""
    [said] = [e["message"] for e in tx.events if e["event"] == "warning" and "time budget spent" in e["message"]]
    return float(said.split("time budget spent: ")[1].split(" MiB")[0])


def test_the_time_budget_holds_inside_one_large_bad_area(tmp_path: Path) -> None:
    """Issue 25: the budget was checked between areas only, so one 64 MiB dead zone was scraped for
    minutes past a 1 s budget. Now the later passes stop soon after it and leave the rest as ddrescue would."""
    image = tmp_path / "source.img"
    fill_random(image, 80 * MIB, seed=25)
    zone = range(8 * MIB // SECTOR, 72 * MIB // SECTOR)
    target = tmp_path / "copy.img"
    with failing_disk(image, list(zone)) as disk:
        rx, tx = clone(disk, target, "--rescue", "--rescue-time", "1")
        assert (tx.wait(), rx.wait()) == (EXIT, EXIT), (tx.stderr, rx.stderr)
        single = [off for off, n, ok in disk.reads() if n == SECTOR and not ok]
    summary = tx.event("summary")
    assert summary and summary["verified"] is True
    smap, _ = parse_mapfile(Path(summary["mapfile"]).read_text(), 80 * MIB)
    untried = smap.total("?*/")
    assert untried > 32 * MIB  # most of the zone was never read sector by sector ...
    assert len(single) < len(zone) // 4  # ... and the disk saw no more than the budget allowed
    assert abs(untried_in_warning(tx) - untried / MIB) < 0.1  # the warning says how much is left
    # The mapfile is consistent: everything outside the zone finished, nothing in it; the summary lists
    # exactly its unfinished areas, and the target holds the source wherever it says finished.
    assert smap.ranges("+") == [(0, 8 * MIB), (72 * MIB, 8 * MIB)]
    assert [list(r) for r in smap.ranges("?*/-")] == summary["unreadable_ranges"] == [[8 * MIB, 64 * MIB]]
    source, copy = image.read_bytes(), target.read_bytes()
    assert copy[: 8 * MIB] == source[: 8 * MIB] and copy[72 * MIB :] == source[72 * MIB :]
    assert copy[8 * MIB : 72 * MIB] == bytes(64 * MIB)  # the zone, filled


def wait_for_phase(mapfile: Path, status: str, size: int, within: float = 60) -> None:
    """Until the mapfile's status line says ``status`` (the sender writes it when a pass begins)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if mapfile.exists() and parse_mapfile(mapfile.read_text(), size)[1].status == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"the mapfile never reached phase {status!r}")


@pytest.mark.skipif(not shutil.which("ddrescue"), reason="GNU ddrescue (Debian's gddrescue) is not installed")
def test_gnu_ddrescue_continues_an_interrupted_rescue_from_its_mapfile(random_disk: Path, tmp_path: Path) -> None:
    """Issue 25: the mapfile said finished for the first and last MiB, which the receiver holds back until
    the clone ends, so ddrescue continuing it left them zero. Killed during scraping, the mapfile must only
    claim what the target holds: ddrescue then makes the target the source wherever it can be read."""
    target, mapfile = tmp_path / "copy.img", tmp_path / "rescue.map"
    scratched = list(range(30000, 32000, 5))  # trimmed from both ends, then scraped slowly
    bad = [100, 101, *scratched, 65500]  # in the first MiB, in the middle, in the last MiB
    with failing_disk(random_disk, bad, slow_after_error=0.01) as disk:
        rx, tx = clone(disk, target, "--rescue", "--mapfile", str(mapfile))
        wait_for_phase(mapfile, "/", 32 * MIB)
        tx.kill()
        rx.kill()
        disk.set_bad(bad)  # no longer slow
        sh("ddrescue", "--quiet", "--idirect", disk.device, str(target), str(mapfile))
    assert differing_sectors(random_disk, target) == bad
    listed = sh("ddrescuelog", "--list-blocks=-", str(mapfile)).stdout.split()
    assert [int(s) for s in listed] == bad


def test_without_rescue_a_read_error_names_the_bad_sector_and_suggests_rescue(
    random_disk: Path, tmp_path: Path
) -> None:
    target = tmp_path / "copy.img"
    with failing_disk(random_disk, [20007]) as disk:
        rx, tx = clone(disk, target)
        assert tx.wait() == SourceReadError.exit_code
        rx.wait()
    line = tx.error_lines()[0]
    assert f"at byte {20007 * SECTOR}" in line, line  # the sector itself, not its read-ahead window
    assert "--rescue" in tx.stderr and "exact" not in tx.stderr.split("hint:")[1]


# --- which files the bad sectors hit ---------------------------------------

MARK = b"usb4-recovery test file, find me: "


def make_fs_disk(image: Path, fstype: str) -> None:
    """A GPT disk with one partition of ``fstype`` holding a marked file /docs/report.bin and others."""
    with open(image, "wb") as f:
        f.truncate(48 * MIB)
    sh("sfdisk", "--quiet", str(image), input="label: gpt\nstart=2048, size=80000, type=linux\n")
    with loop_device(image) as dev:
        part = f"{dev}p1"
        if fstype == "ext4":
            sh("mkfs.ext4", "-q", "-F", "-E", "nodiscard", part)
            ctx = mounted(part)
        else:
            sh("mkntfs", "-q", "-F", "-f", part)
            ctx = _ntfs_mounted(part)
        with ctx as mnt:
            (mnt / "docs").mkdir()
            (mnt / "docs" / "report.bin").write_bytes((MARK + os.urandom(30)) * (300_000 // (len(MARK) + 30)))
            (mnt / "other.txt").write_bytes(b"not hit\n" * 5000)
            os.sync()


class _ntfs_mounted:
    def __init__(self, dev: str) -> None:
        self.dev = dev
        self.dir = Path(subprocess.run(["mktemp", "-d"], capture_output=True, text=True).stdout.strip())

    def __enter__(self) -> Path:
        sh("ntfs-3g", self.dev, str(self.dir))
        return self.dir

    def __exit__(self, *exc: object) -> None:
        sh("umount", str(self.dir), check=False)
        self.dir.rmdir()


def marked_sector(image: Path) -> int:
    data = image.read_bytes()
    at = data.find(MARK, 10 * MIB // 10)
    assert at > 0
    return at // SECTOR + 8  # inside the file, a few sectors in


@pytest.mark.parametrize("fstype", ["ext4", "ntfs"])
def test_the_files_the_bad_sectors_hit_are_named(tmp_path: Path, fstype: str) -> None:
    if fstype == "ntfs" and not shutil.which("ntfscluster"):
        pytest.skip("ntfscluster (ntfs-3g) is not installed")
    image = tmp_path / "source.img"
    make_fs_disk(image, fstype)
    bad = marked_sector(image)
    target = tmp_path / "copy.img"
    with failing_disk(image, [bad]) as disk:
        rx, tx = clone(disk, target, "--rescue", mode="used")
        assert (tx.wait(), rx.wait()) == (EXIT, EXIT), (tx.stderr, rx.stderr)
    summary = tx.event("summary")
    assert summary and summary["unreadable_ranges"] == [[bad * SECTOR, SECTOR]]
    [hit] = summary["files_hit"]
    assert hit["partition"] == 1 and hit["fstype"] == fstype
    assert "/docs/report.bin" in hit["files"], hit
    assert not any("other.txt" in f for f in hit["files"])
    received = rx.event("summary")  # issue 21: the receiving machine names the damaged files too
    assert received and received["files_hit"] == summary["files_hit"]


def inode_table_sector(image: Path) -> int:
    """The first sector of the inode table of the ext4 that :func:`make_fs_disk` made (inodes 1 and 2, the
    root directory's), as a sector of the disk."""
    with loop_device(image) as dev:
        stats = sh("debugfs", "-R", "stats", f"{dev}p1").stdout
    size = int(stats.split("Block size:")[1].split()[0])
    table = int(stats.split("inode table at ")[1].split(",")[0].split()[0])
    return 2048 + table * size // SECTOR


@pytest.mark.parametrize("where", ["reserved GDT", "inode table"])
def test_an_ext4_with_a_bad_sector_where_blkid_looks_is_still_recognised(tmp_path: Path, where: str) -> None:
    """Issue 25: one bad sector in ext4's reserved group descriptor blocks (256 KiB into the partition) or
    in its inode table, where blkid also looks (and gives up at the read error), made the partition "no
    filesystem found": copied whole, not checked, the file another bad sector hit not named."""
    image = tmp_path / "source.img"
    make_fs_disk(image, "ext4")
    meta = 2048 + (256 << 10) // SECTOR if where == "reserved GDT" else inode_table_sector(image)
    bad = sorted([meta, marked_sector(image)])
    target = tmp_path / "copy.img"
    with failing_disk(image, bad) as disk:
        rx, tx = clone(disk, target, "--rescue", mode="used")
        assert (tx.wait(), rx.wait()) == (EXIT, EXIT), (tx.stderr, rx.stderr)
    plan = tx.event("plan")
    assert plan and plan["parts"][0]["fstype"] == "ext4"
    assert plan["parts"][0]["note"].startswith("ext4 with damaged metadata (1 sector(s) unreadable")
    summary = tx.event("summary")
    assert summary and summary["unreadable_ranges"] == [[s * SECTOR, SECTOR] for s in bad]
    [hit] = summary["files_hit"]
    assert hit["fstype"] == "ext4"
    if where == "reserved GDT":
        assert hit["files"] == ["(reserved group descriptors)", "/docs/report.bin"], hit
    else:  # debugfs cannot scan the inodes past a bad inode table: it is said, not left blank
        assert hit["files"] == [] and hit["note"].startswith("debugfs could not tell which files: icheck: "), hit
    # The copy is checked; its zeroed reserved GDT block fails e2fsck, said as a finding about the source.
    # Whether blkid on the source got past the bad sector depends on the kernel's readahead; where it did,
    # its values are checked on the target too (a "blkid -p" check that passes).
    signature = [c for c in summary["checks"] if c["check"] == "blkid -p"]
    assert all(c["ok"] for c in signature), signature
    assert bool(signature) == bool(plan["parts"][0].get("blkid")), plan["parts"][0]  # checked when it was read
    [check] = [c for c in summary["checks"] if c["check"] != "blkid -p"]
    assert check["check"] == "e2fsck -fn" and check["ok"] is False
    for side in (tx, rx):
        said = [e["message"] for e in side.events if e["event"] == "warning"]
        assert any(w.startswith("partition 1: the source's ext4 is damaged: e2fsck -fn finds errors") for w in said)


def test_a_bad_sector_in_free_space_is_reported_as_free_space(tmp_path: Path) -> None:
    """Issue 25: a block of ext4 in no file was called "filesystem metadata" even where it was free."""
    image = tmp_path / "source.img"
    make_fs_disk(image, "ext4")
    with loop_device(image) as dev:
        stats = sh("debugfs", "-R", "stats", f"{dev}p1").stdout
        size = int(stats.split("Block size:")[1].split()[0])
        found = sh("debugfs", "-R", "ffb 1 4000", f"{dev}p1").stdout  # a free block well inside the partition
        block = int(found.split("Free blocks found:")[1].split()[0])
    bad = 2048 + block * size // SECTOR
    target = tmp_path / "copy.img"
    with failing_disk(image, [bad]) as disk:
        rx, tx = clone(disk, target, "--rescue")
        assert (tx.wait(), rx.wait()) == (EXIT, EXIT), (tx.stderr, rx.stderr)
    summary = tx.event("summary")
    assert summary and summary["unreadable_ranges"] == [[bad * SECTOR, SECTOR]]
    [hit] = summary["files_hit"]
    assert hit["partition"] == 1 and hit["files"] == [] and hit["note"] == "1 block(s) in free space (no file lost)"


def test_a_clone_stopped_by_a_read_error_continues_in_rescue_mode_from_there(random_disk: Path, tmp_path: Path) -> None:
    """What the wizard offers after a read error: the same clone again with --rescue resumes where the
    target's durable data ends, and only then reads the bad area the ddrescue way."""
    target = tmp_path / "copy.img"
    bad = [60000, 60001]  # near the end: most of the disk is durable when the clone stops
    with failing_disk(random_disk, bad) as disk:
        rx, tx = clone(disk, target)
        assert tx.wait() == SourceReadError.exit_code
        assert rx.wait() == SourceReadError.exit_code, rx.stderr
        disk.forget_reads()
        rx, tx = clone(disk, target, "--rescue")
        assert (tx.wait(), rx.wait()) == (EXIT, EXIT), (tx.stderr, rx.stderr)
        reads = disk.reads()
    resumed = rx.event("resume")
    assert resumed and resumed["bytes"] > 0
    # The part the target holds read once more to check it against the source (the first run read it
    # well, so it is compared whole, not on a sample), the rest, the bad chunk twice more (its large read
    # fails whole before its clusters are tried; it is read again to be sent whole), and 2 MiB of looks
    # at the partition tables and the identity.
    assert sum(n for _, n, _ in reads if n > SECTOR) <= 32 * MIB + (2 + 2 + 2) * MIB
    summary = tx.event("summary")
    assert summary and summary["unreadable_ranges"] == bad_runs(bad) and summary["resumed"] == resumed["bytes"]
    assert differing_sectors(random_disk, target) == bad


def test_a_rescue_cut_short_resumes_where_the_receiver_acked(random_disk: Path, tmp_path: Path) -> None:
    """Issue 21: a rescue stopped within seconds (before the mapfile's periodic write) left a mapfile that
    covered nothing, so the resume started at chunk 0 and sent everything again. The sender now writes
    what the receiver acked however the clone ends."""
    from tests.e2e.relay import Relay

    target, logs = tmp_path / "copy.img", tmp_path / "logs"

    def receive() -> Recovery:
        return Recovery(
            "receive", "--code", CODE, "--target", str(target), "--listen", "127.0.0.1:0", "--yes",
            "--log-dir", str(logs / "rx"),
        )  # fmt: skip

    def send(port: int) -> Recovery:
        return Recovery(
            "send", "--code", CODE, "--source", str(random_disk), "--to", f"127.0.0.1:{port}", "--mode", "exact",
            "--rescue", "--log-dir", str(logs / "tx"),
        )  # fmt: skip

    rx = receive()
    relay = Relay(rx.wait_event("listening")["port"])
    relay.rate = 3e6
    tx = send(relay.port)
    acked = tx.wait_durable(4 * MIB)
    rx.kill()  # well within the mapfile's periodic write
    relay.close()
    assert tx.wait() != 0
    rx = receive()
    tx = send(rx.wait_event("listening")["port"])
    assert (tx.wait(), rx.wait()) == (0, 0), (tx.stderr, rx.stderr)
    resumed = rx.event("resume")
    assert resumed and resumed["bytes"] >= acked
    assert target.read_bytes() == random_disk.read_bytes()
    # The first chunk, held back by the receiver and so not finished in the mapfile when the run was cut
    # short, was compared with the source by the resume: the mapfile now says finished everywhere.
    summary = tx.event("summary")
    assert summary and list(parse_mapfile(Path(summary["mapfile"]).read_text(), 32 * MIB)[0].blocks()) == [
        (0, 32 * MIB, "+")
    ]


def test_a_rescued_disks_image_carries_what_could_not_be_read_and_its_restore_says_so(
    tmp_path: Path, blank_loop: str
) -> None:
    """Issue 22: the image of a rescued source records the unreadable areas and the files they hit;
    `image info` shows them, and restoring the image says so (the restored disk holds zeros there)."""
    image = tmp_path / "source.img"
    make_fs_disk(image, "ext4")
    bad = marked_sector(image)
    saved = tmp_path / "rescued.img"
    with failing_disk(image, [bad]) as disk:
        rx = Recovery("receive", "--code", CODE, "--image", str(saved), "--listen", "127.0.0.1:0")
        port = rx.wait_event("listening")["port"]
        tx = Recovery("send", "--code", CODE, "--source", disk.device, "--to", f"127.0.0.1:{port}", "--rescue")
        assert (tx.wait(), rx.wait()) == (EXIT, EXIT), (tx.stderr, rx.stderr)
    info = Recovery("image", "info", str(saved))
    assert info.wait() == 0, info.stderr
    said = info.event("image")
    assert said["unreadable"] == SECTOR and said["unreadable_ranges"] == [[bad * SECTOR, SECTOR]]
    assert "/docs/report.bin" in said["files_hit"][0]["files"]
    with open(blank_loop, "r+b") as f:  # not zeros before: the zeros there are the restore's
        f.write(os.urandom(48 * MIB))
    restore = Recovery("image", "restore", str(saved), "--target", blank_loop, "--yes")
    assert restore.wait() == 0, restore.stderr
    warnings = [e["message"] for e in restore.events if e.get("event") == "warning"]
    assert any("could not be read in 512 B" in w and "/docs/report.bin" in w for w in warnings), warnings
    with open(blank_loop, "rb") as f:
        f.seek(bad * SECTOR)
        assert f.read(SECTOR) == bytes(SECTOR)
