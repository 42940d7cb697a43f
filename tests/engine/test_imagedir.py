"""The folders a peer's wizard may save images into or restore them from, and what a folder lists."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from recovery.engine import imagedir
from recovery.errors import RefusedError
from tests.diskimage.helpers import MIB, disk_bytes, write_image


@pytest.mark.parametrize(
    "folder, words",
    [
        ("relative/dir", "absolute path"),
        ("/tmp/../etc", "plain form"),
        ("/tmp/./x", "plain form"),
        ("//tmp", "plain form"),
        ("/tmp/", "plain form"),
        ("/proc", "not on a disk"),
        ("/nonexistent-folder-here", "No such file"),
    ],
)
def test_a_folder_outside_the_rule_is_refused_saying_why(folder: str, words: str) -> None:
    with pytest.raises(RefusedError, match=words):
        imagedir.checked_folder(folder)


@pytest.mark.parametrize("folder", ["/etc", "/usr/share", "/boot", "/var/lib"])
def test_a_save_never_goes_into_a_folder_of_the_installed_system(folder: str, tmp_path: Path) -> None:
    """The review's finding: a peer's wizard could save .img files into /etc of the machine that serves it."""
    if not os.path.isdir(folder) or imagedir.mount_of(folder) is None:
        pytest.skip(f"no {folder} here")
    try:
        imagedir.checked_folder(folder)  # a restore may still read from it, where the disk rule allows
    except RefusedError as e:
        pytest.skip(f"{folder} is refused here before the system rule: {e}")
    with pytest.raises(RefusedError, match="folder of the installed system"):
        imagedir.checked_folder(folder, write=True)
    with pytest.raises(RefusedError, match="folder of the installed system"):
        imagedir.new_image(f"{folder}/disk.img")
    hidden = tmp_path / ".ssh"
    hidden.mkdir()
    with pytest.raises(RefusedError, match="hidden folder"):
        imagedir.checked_folder(str(hidden), write=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="a bind mount takes root")
def test_a_system_folder_mounted_elsewhere_is_still_refused_and_a_users_drives_are_not(tmp_path: Path) -> None:
    """The review's findings: /etc bind-mounted at another path passed the rule by its name; drives that
    udisks mounts under /run/media were refused as /run."""
    bound = tmp_path / "sysroot-etc"
    bound.mkdir()
    subprocess.run(["mount", "--bind", "/etc", str(bound)], check=True)
    try:
        with pytest.raises(RefusedError, match=r"folder of the installed system \(/etc\)"):
            imagedir._refuse_system_folder(str(bound))
    finally:
        subprocess.run(["umount", str(bound)], check=True)
    imagedir._refuse_system_folder(str(bound))  # the folder itself again: not the system's
    imagedir._refuse_system_folder("/run/media/ana/BACKUP")
    imagedir._refuse_system_folder(f"{imagedir.MEDIA}/sdb1")
    for system in ("/efi", "/var/backups", "/run/user/1000"):
        with pytest.raises(RefusedError, match="folder of the installed system"):
            imagedir._refuse_system_folder(system)


def test_a_folder_reached_through_a_link_or_a_file_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "via").symlink_to(real)
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(RefusedError, match="symbolic link"):
        imagedir.checked_folder(str(tmp_path / "via"))
    with pytest.raises(RefusedError, match="symbolic link"):
        imagedir.new_image(str(tmp_path / "via" / "disk.img"))
    with pytest.raises(RefusedError, match="not a folder"):
        imagedir.checked_folder(str(tmp_path / "file"))
    assert imagedir.checked_folder(str(real), write=True) == str(real)


@pytest.mark.parametrize("name", ["../x.img", ".hidden.img", "a/b.img", "disk.raw", ".img", "x\x1b[2J.img", "a" * 256])
def test_a_new_image_is_one_plain_img_name_in_the_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(RefusedError, match=r"plain file name|ends with \.img"):
        imagedir.checked_name(name, new=True)


def test_a_new_image_never_replaces_a_file_nor_writes_through_a_link(tmp_path: Path) -> None:
    (tmp_path / "taken.img").write_bytes(b"someone's file")
    (tmp_path / "link.img").symlink_to(tmp_path / "elsewhere.img")
    with pytest.raises(RefusedError, match=r"taken\.img exists"):
        imagedir.new_image(str(tmp_path / "taken.img"))
    with pytest.raises(RefusedError, match=r"link\.img exists"):
        imagedir.new_image(str(tmp_path / "link.img"))
    assert imagedir.new_image(str(tmp_path / "new.img")) == str(tmp_path / "new.img")
    assert not (tmp_path / "elsewhere.img").exists()


def test_a_folder_lists_its_images_with_what_each_holds(tmp_path: Path) -> None:
    write_image(tmp_path / "b-laptop.img", disk_bytes(2 * MIB), manifest={"mode": "exact", "created": "2026-12-06"})
    write_image(tmp_path / "a-cut.img", disk_bytes(2 * MIB), finish=False)
    write_image(tmp_path / ".hidden.img", disk_bytes(MIB))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "link.img").symlink_to(tmp_path / "b-laptop.img")
    os.mkdir(tmp_path / "sub.img")
    found = imagedir.find_images(str(tmp_path))
    assert not found.refused and found.free and found.more == 0
    assert [e.name for e in found.images] == ["a-cut.img", "b-laptop.img"]
    cut, whole = found.images
    assert "incomplete" in cut.problem
    assert not whole.problem and whole.size == 2 * MIB and whole.sector_size == 512 and whole.mode == "exact"
    assert whole.created == "2026-12-06" and whole.file_bytes == (tmp_path / "b-laptop.img").stat().st_size
    assert imagedir.saved_image(str(tmp_path / "b-laptop.img"))
    for wrong in ("link.img", "notes.txt", ".hidden.img"):
        with pytest.raises(RefusedError):
            imagedir.saved_image(str(tmp_path / wrong))


def test_a_refused_folder_is_said_in_the_answer_never_raised() -> None:
    found = imagedir.find_images("/proc/self")
    assert "/proc/self" in found.refused and not found.images
    assert "/proc" not in found.places and all(p.startswith("/") for p in found.places)


def test_an_external_drive_is_offered_and_mounted_read_write_to_save_to(tmp_path: Path) -> None:
    """A drive plugged in to save to: listed while unmounted, mounted read-write under MEDIA on request;
    never the stick, a disk with a system or anything mounted, nor an internal disk."""
    import dataclasses

    from recovery.disks import inventory
    from recovery.protocol.values import Unfinished
    from tests.fsdisks import Part, make_disk
    from tests.helpers import loop_device, sh

    image = tmp_path / "usb.img"
    make_disk(image, [Part("ext4", 16)], files=False)
    with loop_device(image) as dev:
        found = inventory.describe_disk(dev)
        usb = dataclasses.replace(found, transport="usb")
        drives = imagedir.mountable([usb])
        assert [(d.device, d.fstype) for d in drives] == [(f"{dev}p1", "ext4")]
        assert imagedir.mountable([found]) == []  # not external
        assert imagedir.mountable([dataclasses.replace(usb, boot_medium=True)]) == []
        assert imagedir.mountable([dataclasses.replace(usb, mountpoints=("/mnt",))]) == []
        record = Unfinished(source="x", source_desc="a peer's disk", done=1, total=1, complete=True)
        assert imagedir.mountable([dataclasses.replace(usb, copy=record)]) == []  # bytes a peer wrote
        with_os = dataclasses.replace(usb.partitions[0], os="Debian GNU/Linux 12")
        assert imagedir.mountable([dataclasses.replace(usb, partitions=(with_os,))]) == []  # perhaps the source
        with pytest.raises(RefusedError, match="not an unmounted partition of an external drive"):
            imagedir.mount_drive(dev, drives)
        folder = imagedir.mount_drive(f"{dev}p1", drives)
        try:
            assert folder == f"{imagedir.MEDIA}/{Path(dev).name}p1"
            assert imagedir.new_image(f"{folder}/laptop.img")  # a place a save may write
            (Path(folder) / "written").write_bytes(b"x")
        finally:
            sh("umount", folder)
            os.rmdir(folder)


def test_image_places_lists_folders_and_refuses_a_device_it_does_not_offer() -> None:
    from tests.helpers import Recovery

    listed = Recovery("image", "places")
    assert listed.wait() == 0, listed.stderr
    places = listed.event("image_places")
    assert all(f["free"] >= 0 and f["path"].startswith("/") for f in places["folders"])
    refused = Recovery("image", "places", "--mount", "/dev/null")
    assert refused.wait() == 3
    assert "not an unmounted partition of an external drive" in refused.event("error")["message"]
    assert "Traceback" not in refused.stderr


def test_a_listing_glances_at_each_image_and_never_fails_on_one(tmp_path: Path) -> None:
    """A folder's listing reads no index and at most a small manifest of each image: one that declares a
    huge manifest, or is not whole, is listed with its problem; a glance never reads a chunk."""
    from recovery.diskimage.reader import ImageReader
    from recovery.errors import ImageError

    disk = disk_bytes(2 * MIB)
    write_image(tmp_path / "fine.img", disk, manifest={"format": "usb4-recovery image", "mode": "exact"})
    bloated = {"format": "usb4-recovery image", "padding": [[]] * (imagedir.GLANCE // 2)}
    write_image(tmp_path / "bloated.img", disk, manifest=bloated)
    (tmp_path / "cut.img").write_bytes((tmp_path / "fine.img").read_bytes()[:5000])
    listed = {e.name: e for e in imagedir.find_images(str(tmp_path)).images}
    assert listed["fine.img"].problem == "" and listed["fine.img"].mode == "exact"
    assert "manifest" in listed["bloated.img"].problem
    assert listed["cut.img"].problem
    with ImageReader(str(tmp_path / "fine.img"), glance=imagedir.GLANCE) as glanced:
        with pytest.raises(ImageError, match="glanced"):
            glanced.read(0, 10)
