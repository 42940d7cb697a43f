from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from recovery.demo import build_sample_disk
from recovery.disks.inventory import describe_disk, list_disks, unreadable_disk
from tests.fsdisks import MTOOLS, Part, make_disk
from tests.helpers import MIB, REPO, fill_random, loop_device, sh

pytestmark = pytest.mark.root


def test_loop_disk_shows_partitions_filesystems_and_used_space(tmp_path: Path) -> None:
    image = tmp_path / "inv.img"
    build_sample_disk(str(image), 96)
    with loop_device(image) as dev:
        info = describe_disk(dev)
        assert info.ptable == "gpt" and info.size == 96 << 20
        assert [(p.number, p.fstype) for p in info.partitions] == [(1, "ext4"), (2, "vfat")]
        assert info.partitions[0].label == "demo-root"
        assert info.partitions[0].used and info.partitions[0].used > 1 << 20
        assert info.refusal is None and not info.system
        assert dev in [d.path for d in list_disks()]
        out = subprocess.run(
            [sys.executable, "-m", "recovery", "disks", "--json"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout
        listed = {d["path"]: d for d in json.loads(out)["disks"]}
        assert listed[dev]["partitions"][1]["fstype"] == "vfat"
        text = subprocess.run(
            [sys.executable, "-m", "recovery", "disks"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout
        assert dev in text and "ext4" in text


FILLED = 3 * MIB  # populate() writes about this much (3 MiB of notes, more of blobs) into every filesystem


@pytest.fixture(scope="module")
def every_filesystem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One image with a partition of each kind, filled with real files."""
    image = tmp_path_factory.mktemp("fs") / "every.img"
    make_disk(
        image,
        [
            Part("ext4", 32),
            Part("xfs", 300),
            Part("btrfs", 120),
            Part("vfat", 40),
            Part("exfat", 40),
            Part("ntfs", 40),
            Part("swap", 8),
        ],
        garbage=False,
    )
    return image


def test_used_space_for_every_filesystem_that_says(every_filesystem: Path) -> None:
    """Read from each filesystem's own counters, checked against what its own tool reports."""
    info = describe_disk(str(every_filesystem))  # the image file: no partition nodes at all
    used = {p.fstype: p.used for p in info.partitions}
    assert used["swap"] is None
    for fstype in ("ext4", "xfs", "btrfs", "vfat", "exfat"):
        assert used[fstype] is not None and FILLED < used[fstype] < 80 * MIB, (fstype, used)
    # ntfsinfo reads a loop device of the partition alone, made for it: an image's NTFS says too
    assert used["ntfs"] is not None and FILLED < used["ntfs"] < 40 * MIB
    with loop_device(every_filesystem) as dev:
        nodes = {p.fstype: f"{dev}p{p.number}" for p in info.partitions}
        on_device = {p.fstype: p.used for p in describe_disk(dev).partitions}
        assert on_device == used
        free = int(sh("dumpe2fs", "-h", nodes["ext4"]).stdout.split("Free blocks:")[1].split()[0])
        blocks = int(sh("dumpe2fs", "-h", nodes["ext4"]).stdout.split("Block count:")[1].split()[0])
        assert used["ext4"] == (blocks - free) * 1024
        clusters = sh("fsck.fat", "-n", nodes["vfat"]).stdout.split(",")[-1].split("/")[0].strip()
        assert (
            used["vfat"]
            == int(clusters)
            * int(sh("minfo", "-i", nodes["vfat"], "::", env=MTOOLS).stdout.split("cluster size:")[1].split()[0])
            * 512
        )
        dump = sh("dump.exfat", nodes["exfat"]).stdout
        total, free_clusters = (int(dump.split(k)[1].split()[0]) for k in ("Total Clusters:", "Free Clusters:"))
        size = int(dump.split("Cluster size:")[1].split()[0])
        assert used["exfat"] == (total - free_clusters) * size


def test_a_linux_system_and_a_windows_boot_loader_are_named(tmp_path: Path) -> None:
    image = tmp_path / "os.img"
    build_sample_disk(str(image), 64)  # its ext4 holds an os-release
    info = describe_disk(str(image))
    assert info.partitions[0].os == "Demo Linux 1.0 (sample disk)"
    assert info.partitions[1].os is None  # a FAT without EFI/Microsoft
    fat = f"{image}@@{info.partitions[1].start}"
    sh("mmd", "-i", fat, "::/EFI", "::/EFI/Microsoft", "::/EFI/Microsoft/Boot", env=MTOOLS)
    assert describe_disk(str(image)).partitions[1].os == "Windows"


def test_a_disk_without_a_table_is_zeros_a_whole_disk_filesystem_or_unknown_data(tmp_path: Path) -> None:
    blank, noise, whole = tmp_path / "blank.img", tmp_path / "noise.img", tmp_path / "whole.img"
    for image in (blank, noise, whole):
        with open(image, "wb") as f:
            f.truncate(64 * MIB)
    fill_random(noise, 64 * MIB, seed=5)
    sh("mkfs.ext4", "-q", "-F", "-L", "whole", str(whole))
    with (
        loop_device(blank, partitions=False) as b,
        loop_device(noise, partitions=False) as n,
        loop_device(whole, partitions=False) as w,
    ):
        zero, data, fs = describe_disk(b), describe_disk(n), describe_disk(w)
        assert (zero.ptable, zero.partitions, zero.blank) == (None, (), True)
        assert (data.ptable, data.partitions, data.blank) == (None, (), False)
        assert fs.blank is None and [(p.number, p.fstype, p.label) for p in fs.partitions] == [(0, "ext4", "whole")]
        assert fs.partitions[0].used is not None
        text = subprocess.run(
            [sys.executable, "-m", "recovery", "disks"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout
        assert "all zeros where sampled" in text and "unknown data" in text
        assert "a filesystem on the whole disk" in text and "[no table]" not in text


def test_a_disk_that_cannot_be_opened_is_listed_with_the_reason(tmp_path: Path) -> None:
    """What a technician sees for a disk the kernel shows but will not open: a line, not nothing."""
    image = tmp_path / "gone.img"
    with open(image, "wb") as f:
        f.truncate(16 * MIB)
    with loop_device(image, partitions=False) as dev:
        import pyudev

        device = pyudev.Devices.from_device_file(pyudev.Context(), dev)
        info = unreadable_disk(device, PermissionError(1, "Operation not permitted"))
        assert info.path == dev and info.size == 16 * MIB
        assert info.unreadable == info.refusal == "cannot be read: Operation not permitted"
    for flag in ([], ["--all"]):
        out = subprocess.run(
            [sys.executable, "-m", "recovery", "disks", *flag], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout
        for path in unreadable_here():
            said = "it holds the running system" if path == system_disk() else "cannot be read"
            assert path in out and said in out, out


def system_disk() -> str | None:
    """The whole disk "/" is on, if it is on one."""
    import pyudev

    number = os.stat("/").st_dev
    if not os.major(number):
        return None  # an overlay, a tmpfs: no disk
    try:
        device = pyudev.Devices.from_device_number(pyudev.Context(), "block", number)
    except pyudev.DeviceNotFoundError:
        return None
    disk = device if device.device_type == "disk" else device.find_parent("block", "disk")
    return disk.device_node if disk is not None else None


def test_the_running_systems_disk_is_named_so_even_when_it_cannot_be_opened() -> None:
    """Issue 21: in a VM that will not let root open it, it was "cannot be read: Operation not permitted"."""
    import pyudev

    path = system_disk()
    if path is None:
        pytest.skip("/ is not on a disk here")
    device = pyudev.Devices.from_device_file(pyudev.Context(), path)
    info = unreadable_disk(device, PermissionError(1, "Operation not permitted"))
    assert info.system and info.unreadable == info.refusal == "it holds the running system"
    assert "/" in info.mountpoints


def unreadable_here() -> list[str]:
    """Whole disks of this machine that root cannot open (a VM's protected disk), if any."""
    found = []
    for name in os.listdir("/sys/block"):
        if name.startswith(("loop", "ram", "zram", "sr", "fd", "nbd")):
            continue
        try:
            os.close(os.open(f"/dev/{name}", os.O_RDONLY))
        except FileNotFoundError:
            continue
        except OSError:
            found.append(f"/dev/{name}")
    return found


def _loops_of(path: Path) -> list[str]:
    """Loop devices backed by ``path`` by name (``losetup --associated`` matches by inode, which a deleted
    file's loop device left by another test may share)."""
    found = []
    for name in os.listdir("/sys/block"):
        try:
            backing = Path(f"/sys/block/{name}/loop/backing_file").read_text().strip()
        except OSError:
            continue
        if backing == str(path):
            found.append(name)
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="confining a tool takes root")
def test_the_tools_that_parse_a_listed_disk_run_confined_on_that_partition_alone(tmp_path: Path) -> None:
    """The review's finding: debugfs, mdir and ntfsls ran as root, with the network, on a whole disk of a
    machine that may be compromised. Each now gets a read-only loop device of its partition, as the
    unprivileged user, with no network and no other process in sight, and the device goes away after."""
    from recovery.disks import fsinfo

    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(8 * MIB)
        f.seek(MIB)
        f.write(b"PART" * 1024)
    script = (
        'id -u; head -c 4 "$0"; echo; blockdev --getsize64 "$0"; '
        'tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " " | tr "\\n" " "; echo; '
        'kill -0 "$1" 2>/dev/null && echo reached || echo alone; echo x >> "$0" || echo read-only; '
        'ls /proc | grep -c "^[0-9]"; (echo x > "$2") 2>/dev/null; test -s "$2" && echo wrote || echo none'
    )
    open_dir = Path(tempfile.mkdtemp(dir="/tmp"))  # a folder anyone may write in, as /tmp is
    open_dir.chmod(0o777)
    try:
        written_to = open_dir / "written"
        proc = fsinfo.on_region(
            lambda dev: ["sh", "-c", script, dev, str(os.getpid()), str(written_to)], str(disk), MIB, 2 * MIB
        )
        # no byte written to a file (prlimit --fsize=0: an empty one may be made)
        assert not written_to.exists() or written_to.stat().st_size == 0
    finally:
        shutil.rmtree(open_dir)
    assert proc is not None and proc.returncode == 0, proc
    uid, head, size, nets, processes, written, seen, wrote = proc.stdout.decode().split("\n")[:8]
    assert (uid, head, size) == ("65534", "PART", str(2 * MIB))
    assert nets.split() == ["lo"]
    assert processes == "alone"  # this process is out of its sight (a PID namespace, another user)
    assert written == "read-only"
    assert int(seen) <= 4  # its own /proc: sh and what it ran, nothing of this machine
    assert wrote == "none"
    assert _loops_of(disk) == []


def test_a_listing_leaves_no_loop_device_behind(tmp_path: Path) -> None:
    image = tmp_path / "os.img"
    build_sample_disk(str(image), 64)
    assert describe_disk(str(image)).partitions
    assert _loops_of(image) == []
