"""Boot the appliance image once in QEMU (OVMF, TCG) and check it from the
serial console: the ready line, the modules, the kernel's ConfigFS stream
tree and /dev/tbstreamN, the screens, running from RAM.

One VM serves every test in this module (booting takes about a minute under
TCG); the tests run in file order and only read or undo what they change.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.demo import SAMPLE_HOSTNAME

from .vm import READY, VM, booted

pytestmark = [pytest.mark.slow, pytest.mark.vm]

BOOT_TIMEOUT = 300
STREAM = "/sys/kernel/config/thunderbolt/stream"
# No Thunderbolt hardware in the VM: a group named like a service that could
# exist (domain 0, route 1, service 0).
GROUP = "0-1.0"


@pytest.fixture(scope="module")
def vm(image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VM]:
    workdir = tmp_path_factory.mktemp("boot")
    with booted(VM("single", image, workdir, "recovery.mode=wizard"), BOOT_TIMEOUT, workdir) as machine:
        yield machine


def _python(vm: VM, code: str) -> str:
    """Run a one-line Python program in the guest."""
    assert "'" not in code
    return vm.check(f"python3 -c '{code}'").strip()


def test_ready_line(vm: VM) -> None:
    match = READY.search(vm.output)
    assert match is not None
    mode, kernel, stream = match.groups()
    assert mode == "wizard"
    assert kernel.endswith("-amd64")
    assert stream == "loaded"


def test_modules_loaded(vm: VM) -> None:
    for module in ("thunderbolt", "thunderbolt_net", "thunderbolt_stream", "configfs"):
        vm.check(f"test -d /sys/module/{module}")
    vermagic = vm.check("modinfo -F vermagic thunderbolt_stream").split()[0]
    assert vermagic == vm.check("uname -r").strip()


def test_configfs_stream_tree_exists(vm: VM) -> None:
    vm.check(f"test -d {STREAM}")
    vm.check("findmnt -n -t configfs /sys/kernel/config")


# What one host with the real module and no peer can show of the driver's behaviour
# (docs/links.md, "What the kernel does"): one guest program, one JSON line of findings.
DRIVER_FACTS = """
import errno, json, os, stat, time
root = "STREAM"
group = root + "/GROUP"
s = root + "/GROUP/u4facts"
def attr(name):
    with open(s + "/" + name) as f:
        return f.read().strip()
def write(name, value):
    try:
        with open(s + "/" + name, "w") as f:
            f.write(str(value))
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
out = {}
os.mkdir(group)
os.mkdir(s)
dev = "/dev/tbstream" + attr("index")
for _ in range(50):
    if os.path.exists(dev):
        break
    time.sleep(0.1)
out["node"] = stat.S_ISCHR(os.stat(dev).st_mode)
out["defaults"] = [attr(a) for a in ("in_hopid", "out_hopid", "ring_size", "throttling")]
out["busy_poll"] = os.path.exists(s + "/busy_poll")
out["stored"] = []
for name, value in (("in_hopid", 99), ("out_hopid", -5), ("out_hopid", 3), ("in_hopid", -1)):
    out["stored"].append([write(name, value), attr(name)])
t = time.monotonic()
try:
    os.close(os.open(dev, os.O_RDWR | os.O_NONBLOCK))
    out["open"] = "opened"
except OSError as e:
    out["open"] = errno.errorcode[e.errno]
out["open_seconds"] = round(time.monotonic() - t, 3)
out["ring_size"] = [write("ring_size", v) for v in (31, 32, 4096, 5000)]
out["throttling"] = [write("throttling", v) for v in (0, 16776960, 16776961)]
os.rmdir(s)
out["rmdir_plain"] = not os.path.exists(dev)
os.mkdir(s)
dev = "/dev/tbstream" + attr("index")
out["zeroed"] = [write("in_hopid", 12), write("out_hopid", 12), write("in_hopid", 0), write("out_hopid", 0),
                 attr("in_hopid"), attr("out_hopid")]
os.rmdir(s)
out["rmdir_zeroed"] = not os.path.exists(dev)
os.rmdir(group)
try:
    os.mkdir(root + "/GROUPx")
    os.rmdir(root + "/GROUPx")
    out["junk_group"] = "accepted"
except OSError as e:
    out["junk_group"] = errno.errorcode[e.errno]
print(json.dumps(out))
"""


def test_driver_facts_one_host_can_show(vm: VM) -> None:
    """With no peer attached: HopID writes are stored as written (unchecked), a non-blocking open
    fails at once with ENXIO, ring_size and throttling have their limits, rmdir works with and
    without zeroing the HopIDs first, and a group name with trailing junk is accepted."""
    script = base64.b64encode(DRIVER_FACTS.replace("STREAM", STREAM).replace("GROUP", GROUP).encode()).decode()
    facts = json.loads(vm.check(f"echo {script} | base64 -d | python3 -").strip().splitlines()[-1])
    assert facts["node"] is True
    assert facts["defaults"] == ["0", "0", "256", "8192"]
    assert facts["stored"] == [["ok", "99"], ["ok", "-5"], ["ok", "3"], ["ok", "-1"]]
    assert facts["open"] == "ENXIO" and facts["open_seconds"] < 1.0
    assert facts["ring_size"] == ["EINVAL", "ok", "ok", "EINVAL"]
    assert facts["throttling"] == ["ok", "ok", "EINVAL"]
    assert facts["rmdir_plain"] and facts["rmdir_zeroed"]
    assert facts["zeroed"] == ["ok", "ok", "ok", "ok", "0", "0"]
    assert facts["junk_group"] == "accepted"
    assert facts["busy_poll"] is False  # 7.2 has none; the link would only read it
    print(f"\ndriver facts on {vm.check('uname -r').strip()}: {facts}")


def test_configfs_names_are_checked(vm: VM) -> None:
    """Stream names over 8 characters and groups not named like a service
    are refused, as the facts page says."""
    vm.check(f"mkdir {STREAM}/{GROUP}")
    try:
        out = vm.check(f"mkdir {STREAM}/{GROUP}/ninechars 2>&1 || true")
        assert "File name too long" in out
    finally:
        vm.check(f"rmdir {STREAM}/{GROUP}")
    out = vm.check(f"mkdir {STREAM}/not-a-service 2>&1 || true")
    assert "Invalid argument" in out


PROJECT_CONFIGFS = """
import errno, json
from recovery.errors import LinkError
from recovery.link.tbstream.agree import DATA_TUNING, StreamSession
from recovery.link.tbstream.configfs import StreamTree
from recovery.link.tbstream.hopids import claim
from recovery.link.tbstream.ledger import Ledger
from recovery.link.tbstream.link import attached
from recovery.link.sysfs import Sysfs
tree = StreamTree()
out = {"available": tree.available()}
session = StreamSession(tree, Ledger("/run/u4test"), "GROUP", owner="link")
session.make("u4test", DATA_TUNING)
info = tree.info("GROUP", "u4test")
out["device"], out["ring"], out["throttling"] = str(info.device), info.ring_size, info.throttling
out["attached"] = attached(Sysfs(), "GROUP")
try:
    claim(tree, "GROUP", "u4test", [15], lambda: attached(Sysfs(), "GROUP"))
    out["claim"] = "claimed"
except LinkError as e:
    out["claim"] = str(e)
try:
    tree.ops.open_device(info.device).close()
    out["open"] = "OK"
except OSError as e:
    out["open"] = errno.errorcode[e.errno]
out["left"] = session.release()
print(json.dumps(out))
"""


def test_project_configfs_code_against_the_kernel(vm: VM) -> None:
    """The project's ConfigFS code (recovery.link.tbstream) makes a group and a stream with its
    rings in the real kernel; with no peer the stream is not attached, so it refuses to write
    HopIDs (the kernel would store them unchecked), opening fails at once with ENXIO, and the
    release (HopIDs zeroed, then rmdir) leaves nothing."""
    script = base64.b64encode(PROJECT_CONFIGFS.replace("GROUP", GROUP).encode()).decode()
    out = json.loads(vm.check(f"echo {script} | base64 -d | python3 -").strip().splitlines()[-1])
    assert out["available"] is True
    assert out["device"].startswith("/dev/tbstream")
    assert (out["ring"], out["throttling"]) == (1024, 2048)
    assert out["attached"] is False
    assert "is not attached to the peer" in out["claim"]
    assert out["open"] == "ENXIO"
    assert out["left"] == []
    vm.check(f"test ! -e {out['device']} && test ! -e {STREAM}/{GROUP}")


def test_stream_up_without_a_peer_fails_cleanly(vm: VM) -> None:
    """`recovery stream up` with no cable peer: a one-line error and a
    nonzero exit, nothing left behind in ConfigFS."""
    rc, _ = vm.run("recovery stream --help >/dev/null 2>&1")
    if rc != 0:
        pytest.skip("`recovery stream` is not in this image yet")
    rc, out = vm.run("recovery stream up u4test --timeout 3 2>&1", timeout=60)
    assert rc != 0
    assert "Traceback" not in out
    assert out.strip(), "no error message"
    assert vm.check(f"ls {STREAM}").strip() == ""


def test_boot_medium_is_recognisable(vm: VM) -> None:
    """The clone must be able to tell the stick: GPT name and FAT label."""
    out = vm.check("lsblk -rno NAME,PARTLABEL,LABEL,PARTTYPE")
    assert any(
        "USB4-RECOVERY" in line and "U4RECOVERY" in line and "c12a7328-f81f-11d2-ba4b-00a0c93ec93b" in line
        for line in out.splitlines()
    ), out


def test_screens_are_not_blank(vm: VM) -> None:
    """tty1 tells the user what is going on (here: no disks, what to do) and
    starts the wizard on Enter; tty2 has a root shell."""
    vm.check("systemctl is-active recovery-console.service recovery-shell.service")
    vm.wait_screen(1, ["USB4 Recovery", "No disks found", "What to do", "Alt+F2"])
    vm.wait_screen(2, ["root shell"])
    # Nothing on its disks names it: the firmware does (the console's font may lack the middle dot).
    named = f"Dell Latitude 7420 ·{vm.serial[-4:]}"
    vm.wait_screen(1, [f"This machine: {named[:-6]}"])
    code = "from recovery.disks import machinename as m; n = m.this_machine(); print(ascii(n.name), n.source)"
    assert _python(vm, code) == f"{named!a} firmware"
    # Enter (typed into tty1 as root may) starts the wizard on the console.
    vm.type_on(1, "\n")
    vm.wait_screen(1, ["This machine", "Disks of this machine", "TCP listening on port 7554"])


def test_missing_module_is_explained_on_screen(vm: VM) -> None:
    """Without thunderbolt_stream, tty1 says so and what to do."""
    vm.check("rmmod thunderbolt_stream")
    try:
        vm.check("systemctl restart recovery-console.service")
        vm.wait_screen(1, ["thunderbolt_stream module is not loaded", "modprobe thunderbolt_stream"], 60)
    finally:
        vm.check("modprobe thunderbolt_stream")
    vm.check(f"test -d {STREAM}")


def test_runs_from_ram_without_the_stick(vm: VM) -> None:
    """Take the stick away (the kernel forgets the USB disk): the system and
    the app still work."""
    disk = vm.check("lsblk -rno PKNAME,PARTLABEL | awk '$2 == \"USB4-RECOVERY\" { print $1 }'").strip()
    assert disk
    vm.check(f"echo 1 > /sys/block/{disk}/device/delete")
    vm.check(f"for i in $(seq 50); do test -e /sys/block/{disk} || break; sleep 0.1; done")
    vm.check(f"test ! -e /sys/block/{disk}")
    vm.check("python3 -m recovery.appliance plan 'recovery.mode=shell' | grep -q 'mode: shell'")
    vm.check("partclone.info --version >/dev/null 2>&1 || partclone.ext4 -v >/dev/null 2>&1")
    vm.check("b3sum --version && zstd --version")
    # the checkers a used-mode clone runs on its target, with every library they need
    vm.check(
        "(for t in e2fsck xfs_repair xfs_db btrfs ntfsfix fsck.vfat fsck.exfat fsck.f2fs wipefs; do"
        " p=$(command -v $t) || exit 1; if ldd $p | grep 'not found'; then exit 1; fi; done)"
    )


def test_the_stick_saves_an_image_onto_a_drive_it_mounts(vm: VM) -> None:
    """Saving onto a drive plugged into the machine the stick runs on: its kernel mounts a FAT drive
    (the modules are on the stick), the image is saved there, checked and described."""
    script = base64.b64encode((Path(__file__).parent / "stick_image.sh").read_bytes()).decode()
    out = vm.check(f"echo {script} | base64 -d | sh 2>&1", timeout=600)
    assert "verified=yes" in out, out
    assert '"fstype":"ext4"' in out and '"fstype":"vfat"' in out, out


def test_the_stick_mounts_an_image_and_reads_its_disk_through_fuse(vm: VM) -> None:
    """`recovery image mount` on the stick: the image's disk served through mfusepy (the wheel the lock pins,
    on the stick's libfuse3) reads as the source disk, byte for byte; its ext4 is mounted read-only with the
    sample system's files; `recovery image unmount` takes it all down and the mount ends with 0."""
    script = base64.b64encode((Path(__file__).parent / "stick_mount.sh").read_bytes()).decode()
    out = vm.check(f"echo {script} | base64 -d | sh 2>&1", timeout=600)
    facts = dict(line.split("=", 1) for line in out.splitlines() if "=" in line and not line.startswith(" "))
    assert facts.get("binding") == "mfusepy 3", out
    mounted = json.loads(facts["mounted"]) if facts.get("mounted", "").startswith("{") else None
    assert mounted is not None, out
    assert [(p["number"], p["fstype"], p["mountpoint"] is not None) for p in mounted["parts"]] == [
        (1, "ext4", True),
        (2, "vfat", True),
    ], out
    assert facts.get("fuse") == "fuse.usb4-recovery", out
    assert facts.get("disk") == "same", out
    assert facts.get("hostname") == SAMPLE_HOSTNAME, out
    assert facts.get("mount_rc") == "0 left=0 loops=0", out


def test_the_stick_shrinks_a_disk_onto_a_smaller_one_on_a_snapshot(vm: VM) -> None:
    """`recovery send --fit shrink` on the stick: its kernel's device-mapper snapshot is the copy-on-write
    view (no qemu there), the ext4 of the sample disk is shrunk onto a smaller disk, the source unchanged,
    nothing of the view left behind."""
    script = base64.b64encode((Path(__file__).parent / "stick_fit.sh").read_bytes()).decode()
    out = vm.check(f"echo {script} | base64 -d | sh 2>&1", timeout=600)
    assert "sent=yes" in out and '"dm-snapshot"' in out, out
    assert "source=unchanged" in out and "ext4=clean" in out and "leftover=0" in out, out
