from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from recovery.engine.clone.level import LADDER, LevelController, Sample, parse_level
from recovery.engine.clone.target import Target
from recovery.errors import RefusedError, TargetWriteError, UsageError
from tests.helpers import MIB


def test_writes_outside_the_target_are_refused(tmp_path: Path) -> None:
    t = Target(str(tmp_path / "t.img"))
    t.prepare(MIB)
    t.write(b"x" * 4096, MIB - 4096)
    with pytest.raises(TargetWriteError, match="outside"):
        t.write(b"x" * 4096, MIB - 4095)
    with pytest.raises(TargetWriteError, match="outside"):
        t.zero(MIB, 1)
    t.discard_created()
    assert not (tmp_path / "t.img").exists()


def test_recheck_notices_a_changed_partition_table(tmp_path: Path) -> None:
    path = tmp_path / "t.img"
    with open(path, "wb") as f:
        f.truncate(8 * MIB)
    t = Target(str(path))
    pinned = t.identity()
    t.recheck(pinned)
    subprocess.run(["sfdisk", "--quiet", str(path)], input=b"label: gpt\n,\n", check=True)
    with pytest.raises(RefusedError, match="partition table changed"):
        t.recheck(pinned)
    t.close()


def test_level_controller_climbs_when_the_link_is_the_limit_and_descends_to_raw() -> None:
    c = LevelController(None)
    assert c.level == 0
    for _ in range(10):  # sender blocked in send, receiver waiting for bytes, but no CPU to spare
        c.update(Sample(link=0.95, starved=0.0, workers=0.3, remote_link=0.9, cpu_idle=0.05))
    assert c.level == 0
    for _ in range(10):  # the same with idle CPUs: a slow link
        c.update(Sample(link=0.95, starved=0.0, workers=0.3, remote_link=0.9, cpu_idle=0.6))
    assert c.level == LADDER[-1]
    for _ in range(20):  # compressing threads saturated, the sender waits for them
        c.update(Sample(link=0.2, starved=0.6, workers=0.95))
    assert c.level == 0
    c = LevelController(None)
    for _ in range(10):  # sender blocked in send, but the receiver's disk is the limit
        c.update(Sample(link=0.95, starved=0.0, workers=0.3, remote_link=0.1, remote_write=0.95))
    assert c.level == 0
    fixed = LevelController(5)
    fixed.update(Sample(link=1.0, starved=0.0, workers=0.0))
    assert fixed.level == 5


def test_parse_level() -> None:
    assert parse_level("auto") is None and parse_level("0") == 0 and parse_level("19") == 19
    for bad in ("20", "-1", "fast"):
        with pytest.raises(UsageError):
            parse_level(bad)


def test_a_symlink_at_the_target_path_is_refused_and_never_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "victim.img"
    victim.write_bytes(b"precious" * 512)
    link = tmp_path / "copy.img"
    link.symlink_to(victim)
    with pytest.raises(RefusedError, match="symbolic link"):
        Target(str(link))
    # Even if the link appears between the check and the open (a race), the open does not follow it.
    from recovery.disks import safety

    monkeypatch.setattr(safety, "refuse_planted_link", lambda path: path)
    with pytest.raises(RefusedError, match="became a symbolic link"):
        Target(str(link))
    assert victim.read_bytes() == b"precious" * 512


def test_image_files_are_for_their_owner_only(tmp_path: Path) -> None:
    new = Target(str(tmp_path / "new.img"))
    old_path = tmp_path / "old.img"
    old_path.write_bytes(b"x")
    old_path.chmod(0o644)
    old = Target(str(old_path))
    assert (tmp_path / "new.img").stat().st_mode & 0o777 == 0o600
    assert old_path.stat().st_mode & 0o777 == 0o600
    new.discard_created()
    old.close()


def test_the_read_back_reads_the_file_written_even_if_the_name_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "t.img"
    t = Target(str(path))
    t.prepare(MIB)
    t.write(b"\x11" * 4096, 0)
    t.flush()
    path.rename(tmp_path / "moved.img")
    path.write_bytes(b"\x22" * MIB)  # someone else's file now has the name
    with open(t.read_path, "rb") as f:
        assert f.read(4096) == b"\x11" * 4096
    t.close()
    from recovery.errors import VerificationError

    with pytest.raises(VerificationError, match="replaced"):
        t.check_still_there()
