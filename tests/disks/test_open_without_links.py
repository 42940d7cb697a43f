"""A path a peer chose is opened with no symbolic link anywhere on it: a folder swapped for a link after
its check is refused, never followed (the attacker's review of issue 22: a save landing outside the
folder the user allowed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recovery.disks.safety import open_without_links
from recovery.engine.clone.imagetarget import ImageTarget
from recovery.errors import RefusedError


def test_a_plain_path_opens_and_creates(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    fd = open_without_links(str(folder / "new.img"), os.O_RDWR | os.O_CREAT | os.O_EXCL)
    os.close(fd)
    assert (folder / "new.img").is_file()


def test_a_folder_swapped_for_a_link_is_refused_and_nothing_is_made_where_it_points(tmp_path: Path) -> None:
    elsewhere, folder = tmp_path / "elsewhere", tmp_path / "images"
    elsewhere.mkdir()
    folder.symlink_to(elsewhere)  # was a folder when it was checked; a link now
    with pytest.raises(RefusedError, match="images on its way is not a folder now"):
        open_without_links(str(folder / "laptop.img"), os.O_RDWR | os.O_CREAT | os.O_EXCL)
    with pytest.raises(RefusedError, match="not a folder now"):
        ImageTarget(str(folder / "laptop.img"), 1 << 20, 512, no_links=True)
    assert list(elsewhere.iterdir()) == []
    # Without the rule (a path this machine's user typed), a link on the way is theirs to use.
    target = ImageTarget(str(folder / "laptop.img"), 1 << 20, 512)
    target.close()
    assert [p.name for p in elsewhere.iterdir()] == ["laptop.img"]


def test_the_file_itself_as_a_link_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "real").write_bytes(b"not an image")
    (tmp_path / "laptop.img").symlink_to(tmp_path / "real")
    with pytest.raises(OSError):
        open_without_links(str(tmp_path / "laptop.img"), os.O_RDWR)
    with pytest.raises(RefusedError):
        ImageTarget(str(tmp_path / "laptop.img"), 1 << 20, 512, no_links=True)
    assert (tmp_path / "real").read_bytes() == b"not an image"
