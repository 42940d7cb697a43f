"""Clone a disk between two VMs booted from the appliance image, in headless
mode chosen on the kernel command line.

A QEMU stream network between the two VMs stands in for the cable: inside,
each VM has a virtio NIC (eth0 with net.ifnames=0) where a real machine has
thunderbolt0, and the clone uses the thunderbolt-net link on it
(`recovery.link=tbnet:eth0`: IPv6 link-local, peers found by beacon), with
the data encrypted as on any IP link, by the image's own Python libraries.
VM A has a small GPT disk with an ext4 filesystem, VM B a blank disk of the
same size; both print a result line on the serial console, and then the host
compares B's disk with A's.

The clone runs twice: with Secure Boot off, and with Secure Boot on
(Microsoft's keys, as machines ship).  With it on, A has the stick's module
key in its MOK list (put there with virt-fw-vars, standing in for a person
confirming it in MokManager) and loads thunderbolt_stream; B has no key, so
its kernel refuses the module and its first screen says the clone uses
thunderbolt-net.  What this does not cover: MokManager's own screens, and
real firmware (only OVMF's Secure Boot implementation is exercised).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import require_secure_boot
from .vm import READY, RESULT, VM, VMError, cert_common_name, esp_file

pytestmark = [pytest.mark.slow, pytest.mark.vm]

DISK_MIB = 32
BOOT_TIMEOUT = 300
CLONE_TIMEOUT = 600
MAC_A = "52:54:00:12:34:0a"
MAC_B = "52:54:00:12:34:0b"
LINK = "tbnet:eth0"
PAIRING_CODE = "two-vm-test-code"  # protocol v2: headless pairs are given the same code


def headless_cmdline(mode: str, disk: str = "/dev/vda") -> str:
    """The recovery.* options of a headless VM in these tests: every option both
    VMs need goes here."""
    both = f"recovery.link={LINK} recovery.code={PAIRING_CODE}"  # both sides know the code in advance
    if mode == "receive":
        return f"recovery.mode=receive recovery.target={disk} recovery.yes {both}"
    return f"recovery.mode=send recovery.source={disk} {both}"


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


def _check_secure_boot(a: VM, b: VM, key: Path) -> None:
    """Both kernels booted with Secure Boot and locked down; A trusts the
    stick's key (MOK) and runs its signed module, B refuses it and says so."""
    signer = cert_common_name(key)
    a.expect("root shell on the serial console", 60)
    a.check("stty -echo 2>/dev/null; true", 30)
    b.check("stty -echo 2>/dev/null; true", 30)
    for vm in (a, b):
        assert "Secure boot enabled" in vm.check("dmesg | grep -i secureboot")
        assert "[integrity]" in vm.check("cat /sys/kernel/security/lockdown")
        assert vm.check("modinfo -F signer thunderbolt_stream").strip() == signer
    assert "secureboot=on" in a.output and "secureboot=on" in b.output
    a.check("test -d /sys/module/thunderbolt_stream && test -d /sys/kernel/config/thunderbolt/stream")
    assert signer in a.check("mokutil --list-enrolled")
    b.check("test ! -d /sys/module/thunderbolt_stream")
    rc, out = b.run("modprobe thunderbolt_stream 2>&1")
    assert rc != 0 and "Key was rejected by service" in out, out
    assert "is rejected" in b.check("dmesg | tail -n 20")
    # B's screens scroll with the clone's log: its serial console has the note.
    assert "note: Secure Boot is on, so the kernel refuses the stick's thunderbolt_stream module" in b.output


def _tails(vms: list[VM]) -> str:
    return "\n".join(f"--- serial console of VM {vm.name} (end) ---\n{vm.tail(3000)}" for vm in vms)


@pytest.mark.parametrize("secure_boot", [False, True], ids=["secure-boot-off", "secure-boot-on"])
def test_clone_between_two_vms(image: Path, vm_dir: Path, secure_boot: bool) -> None:
    if secure_boot:
        require_secure_boot()
    source = vm_dir / "a-source.img"
    target = vm_dir / "b-target.img"
    _make_source_disk(source, vm_dir)
    with open(target, "wb") as f:
        f.truncate(DISK_MIB << 20)
    source_before = _sha256(source)

    key = esp_file(image, "usb4-recovery/module-key.der", vm_dir / "module-key.der")
    sock = vm_dir / "cable.sock"
    vms: list[VM] = []
    try:
        # B listens on the "cable" socket and is the receiver: start it first
        # so the sender finds it up.
        b = VM(
            "b",
            image,
            vm_dir,
            headless_cmdline("receive"),
            disks=[target],
            netdev=f"stream,server=on,addr.type=unix,addr.path={sock}",
            mac=MAC_B,
            secure_boot=secure_boot,
        )
        vms.append(b)
        deadline = time.monotonic() + 30
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sock.exists(), "QEMU did not create the cable socket"
        b_ready = b.expect(READY, BOOT_TIMEOUT)
        a = VM(
            "a",
            image,
            vm_dir,
            headless_cmdline("send"),
            disks=[source],
            netdev=f"stream,server=off,addr.type=unix,addr.path={sock}",
            mac=MAC_A,
            secure_boot=secure_boot,
            mok=[key] if secure_boot else [],
        )
        vms.append(a)
        a_ready = a.expect(READY, BOOT_TIMEOUT)
        # Off: both load the module.  On: only A, which has the key enrolled.
        assert a_ready.group(3) == "loaded", a_ready.group(0)
        assert b_ready.group(3) == ("missing" if secure_boot else "loaded"), b_ready.group(0)

        a_result = a.expect(RESULT, CLONE_TIMEOUT)
        assert a_result.group(1) == "ok", f"sender failed: {a_result.group(0)}\n{_tails(vms)}"
        b_result = b.expect(RESULT, 120)
        assert b_result.group(1) == "ok", f"receiver failed: {b_result.group(0)}\n{_tails(vms)}"
        # thunderbolt-net is an IP link a network can reach: the data went sealed, with the image's own
        # (Debian's) cryptography, so a Debian upgrade that breaks the AEAD calls fails here.
        for vm in (a, b):
            plan = re.search(r'\{"event":"plan".*\}', vm.output)  # the serial console logs the JSON events
            assert plan and json.loads(plan.group(0))["encrypted"] is True, (
                f"VM {vm.name} did not run encrypted\n{_tails(vms)}"
            )
        # Flush the receiver's writes before QEMU goes away.
        b.expect("root shell on the serial console", 60)
        b.check("sync", 120)
        # The first screen showed the headless run and its result.
        b.wait_screen(1, ["Headless receive", "RESULT ok"], 30)  # tty1 polls the log once a second
        # The disks as the wizard lists them: the virtio disk by its serial, the stick marked as the stick.
        listed = {d["path"]: d for d in json.loads(b.check("recovery disks --json", 120))["disks"]}
        assert listed["/dev/vda"]["serial"] == "TESTDISKB0", listed
        sticks = [d for d in listed.values() if d["boot_medium"]]
        assert len(sticks) == 1 and "boot stick" in sticks[0]["refusal"], listed
        if secure_boot:
            _check_secure_boot(a, b, key)
    except VMError as exc:
        raise VMError(f"{exc}\n{_tails(vms)}") from None
    finally:
        for machine in vms:
            machine.close()

    assert "binfmt" not in a.output + b.output, "a unit the appliance does not need failed at boot"
    assert _sha256(source) == source_before, "the sender changed its source disk"
    assert _sha256(target) == source_before, "B's disk differs from A's"
