"""Clone a disk between two VMs booted from the appliance image, in headless
mode chosen on the kernel command line.

A QEMU stream network between the two VMs stands in for the cable: inside,
each VM has a virtio NIC (eth0 with net.ifnames=0) where a real machine has
thunderbolt0, and the clone uses the thunderbolt-net link on it
(`recovery.link=tbnet:eth0`: IPv6 link-local, peers found by beacon).
VM A has a small GPT disk with an ext4 filesystem, VM B a blank disk of the
same size; both print a result line on the serial console, and then the host
compares B's disk with A's.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .vm import READY, RESULT, VM, VMError

pytestmark = [pytest.mark.slow, pytest.mark.vm]

DISK_MIB = 32
BOOT_TIMEOUT = 300
CLONE_TIMEOUT = 600
MAC_A = "52:54:00:12:34:0a"
MAC_B = "52:54:00:12:34:0b"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _make_source_disk(path: Path, scratch: Path) -> None:
    """A GPT disk with one ext4 partition holding a few files."""
    for tool in ("sgdisk", "mkfs.ext4"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is needed to make the source disk")
    tree = scratch / "tree"
    (tree / "docs").mkdir(parents=True)
    rng = hashlib.sha256(b"usb4-recovery test data")
    for i in range(8):
        chunk = b"".join(
            hashlib.sha256(rng.digest() + i.to_bytes(2, "big") + j.to_bytes(2, "big")).digest() for j in range(8192)
        )
        (tree / "docs" / f"file{i}.bin").write_bytes(chunk)  # 256 KiB each
    (tree / "hello.txt").write_text("cloned over a stand-in cable\n")
    fs = scratch / "fs.img"
    part_mib = DISK_MIB - 2
    with open(fs, "wb") as f:
        f.truncate(part_mib << 20)
    env = dict(os.environ, E2FSPROGS_FAKE_TIME="1700000000")
    subprocess.run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            "SOURCE",
            "-E",
            "root_owner=0:0",
            "-d",
            str(tree),
            str(fs),
        ],
        check=True,
        env=env,
        timeout=60,
    )
    with open(path, "wb") as f:
        f.truncate(DISK_MIB << 20)
    subprocess.run(
        [
            "sgdisk",
            "-n",
            f"1:2048:+{part_mib}M",
            "-t",
            "1:8300",
            "-c",
            "1:source",
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    subprocess.run(
        [
            "dd",
            f"if={fs}",
            f"of={path}",
            "bs=1M",
            "seek=1",
            "conv=notrunc,sparse",
            "status=none",
        ],
        check=True,
        timeout=60,
    )
    fs.unlink()
    shutil.rmtree(tree)


def _tails(vms: list[VM]) -> str:
    return "\n".join(f"--- serial console of VM {vm.name} (end) ---\n{vm.tail(3000)}" for vm in vms)


def test_clone_between_two_vms(image: Path, vm_dir: Path) -> None:
    source = vm_dir / "a-source.img"
    target = vm_dir / "b-target.img"
    _make_source_disk(source, vm_dir)
    with open(target, "wb") as f:
        f.truncate(DISK_MIB << 20)
    source_before = _sha256(source)

    link = "recovery.link=tbnet:eth0 recovery.code=two-vm-test-code"  # both sides know the code in advance
    sock = vm_dir / "cable.sock"
    vms: list[VM] = []
    try:
        # B listens on the "cable" socket and is the receiver: start it first
        # so the sender finds it up.
        b = VM(
            "b",
            image,
            vm_dir,
            f"recovery.mode=receive recovery.target=/dev/vda recovery.yes {link}",
            disks=[target],
            netdev=f"stream,server=on,addr.type=unix,addr.path={sock}",
            mac=MAC_B,
        )
        vms.append(b)
        deadline = time.monotonic() + 30
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sock.exists(), "QEMU did not create the cable socket"
        b.expect(READY, BOOT_TIMEOUT)
        a = VM(
            "a",
            image,
            vm_dir,
            f"recovery.mode=send recovery.source=/dev/vda {link}",
            disks=[source],
            netdev=f"stream,server=off,addr.type=unix,addr.path={sock}",
            mac=MAC_A,
        )
        vms.append(a)
        a.expect(READY, BOOT_TIMEOUT)

        a_result = a.expect(RESULT, CLONE_TIMEOUT)
        assert a_result.group(1) == "ok", f"sender failed: {a_result.group(0)}\n{_tails(vms)}"
        b_result = b.expect(RESULT, 120)
        assert b_result.group(1) == "ok", f"receiver failed: {b_result.group(0)}\n{_tails(vms)}"
        # Flush the receiver's writes before QEMU goes away.
        b.expect("root shell on the serial console", 60)
        b.check("sync", 120)
        # The first screen showed the headless run and its result.
        b.wait_screen(1, ["Headless receive", "RESULT ok"], 30)  # tty1 polls the log once a second
    except VMError as exc:
        raise VMError(f"{exc}\n{_tails(vms)}") from None
    finally:
        for machine in vms:
            machine.close()

    assert _sha256(source) == source_before, "the sender changed its source disk"
    assert _sha256(target) == source_before, "B's disk differs from A's"
