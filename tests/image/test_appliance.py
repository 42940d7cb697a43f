"""Fast tests of the appliance launcher: kernel command line -> what runs."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery import kcmdline
from recovery.appliance import (
    BootPlan,
    CmdlineError,
    check_system,
    console,
    parse_cmdline,
    ready_line,
    result_line,
    split_cmdline,
    unsettled_disks,
)
from recovery.disks.inventory import describe_disk
from recovery.protocol.messages import DiskInfo
from recovery.secureboot import (
    EFI_GLOBAL_GUID,
    SHIM_LOCK_GUID,
    SecureBootState,
    efi_variable,
    lockdown_mode,
    read_state,
)
from tests.helpers import loop_device, sh

VDA = [DiskInfo(path="/dev/vda", size=1 << 20)]  # a disk a clone could use
DEBIAN_PREFIX = "BOOT_IMAGE=/x console=tty0 console=ttyS0,115200n8 net.ifnames=0 quiet"


def test_split_like_the_kernel() -> None:
    assert split_cmdline('a b="c d"  e "f g"') == ["a", "b=c d", "e", "f g"]
    assert split_cmdline("a -- recovery.mode=shell") == ["a"]
    assert split_cmdline("  \n") == []


def test_default_is_the_wizard() -> None:
    assert parse_cmdline(DEBIAN_PREFIX) == BootPlan(mode="wizard")
    assert parse_cmdline("") == BootPlan(mode="wizard")


def test_shell_mode() -> None:
    plan = parse_cmdline(f"{DEBIAN_PREFIX} recovery.mode=shell")
    assert plan.mode == "shell"
    assert not plan.headless
    assert plan.argv == ()


def test_receive_maps_options_in_order() -> None:
    plan = parse_cmdline(
        f"{DEBIAN_PREFIX} recovery.mode=receive recovery.target=/dev/vdb recovery.yes recovery.link=tbnet:eth0"
    )
    assert plan.headless
    assert plan.argv == (
        "recovery",
        "receive",
        "--target",
        "/dev/vdb",
        "--yes",
        "--link",
        "tbnet:eth0",
        "--json",
    )
    assert plan.interfaces() == ("eth0",)
    assert plan.device_options() == ("/dev/vdb",)


def test_send_clone_mode_and_underscores() -> None:
    plan = parse_cmdline(
        "recovery.mode=send recovery.source=/dev/nvme0n1 recovery.clone=exact "
        'recovery.no_verify recovery.to="[fe80::1%eth0]:7000"'
    )
    assert plan.argv == (
        "recovery",
        "send",
        "--source",
        "/dev/nvme0n1",
        "--mode",
        "exact",
        "--no-verify",
        "--to",
        "[fe80::1%eth0]:7000",
        "--json",
    )
    assert plan.interfaces() == ("eth0",)
    listen = parse_cmdline("recovery.mode=receive recovery.target=/x recovery.listen=[fe80::2%tb0]:7554")
    assert listen.interfaces() == ("tb0",)
    assert parse_cmdline("recovery.mode=send recovery.source=/x recovery.to=10.0.0.1:7").interfaces() == ()


def test_last_occurrence_wins_and_json_not_doubled() -> None:
    plan = parse_cmdline(
        "recovery.mode=shell recovery.mode=receive recovery.target=/dev/a recovery.json recovery.target=/dev/b"
    )
    assert plan.argv == ("recovery", "receive", "--target", "/dev/b", "--json")


def test_the_machines_name_is_for_every_mode_and_never_a_commands_option() -> None:
    cmdline = 'quiet recovery.name="Bench PC 3" recovery.mode=receive recovery.target=/dev/sda'
    assert parse_cmdline(cmdline).argv == ("recovery", "receive", "--target", "/dev/sda", "--json")
    assert parse_cmdline('recovery.name="Bench PC 3"').ignored == ()
    assert kcmdline.parameter(cmdline, "name") == "Bench PC 3"
    assert kcmdline.parameter("recovery.name=a recovery.name=b", "name") == "b"
    assert kcmdline.parameter("recovery.named=a xrecovery.name=b", "name") is None


def test_options_outside_headless_modes_are_reported() -> None:
    plan = parse_cmdline("recovery.target=/dev/sda")
    assert plan.mode == "wizard"
    assert plan.ignored and "recovery.target" in plan.ignored[0]


@pytest.mark.parametrize(
    ("cmdline", "needle"),
    [
        ("recovery.mode=clone", "unknown mode"),
        ("recovery.mode", "unknown mode"),
        ("recovery.mode=send recovery.clone=fast", "recovery.clone=fast"),
        ("recovery.mode=receive recovery.clone=used", "chosen by the sender"),
        ("recovery.mode=send recovery.Bad=1", "not an option name"),
        ("recovery.mode=send recovery.--x", "not an option name"),
    ],
)
def test_bad_cmdlines_say_which_parameter(cmdline: str, needle: str) -> None:
    with pytest.raises(CmdlineError, match=needle):
        parse_cmdline(cmdline)


def test_other_parameters_are_not_ours() -> None:
    assert parse_cmdline("recoveryx.mode=send systemd.recovery=1") == BootPlan()


def test_result_line_failure_names_the_error() -> None:
    lines = ['{"event": "error", "code": "link_lost", "message": "peer\\nclosed", "exit_code": 4}', "not json {"]
    line = result_line(4, lines)
    assert line.startswith("USB4-RECOVERY RESULT failed exit=4 error=peer closed")
    assert "\n" not in line
    assert result_line(2, ["usage: recovery receive"]).endswith("error=usage: recovery receive")
    lines = ['{"event":"error","message":"cannot connect"}', "error: cannot connect", "hint: start it"]
    assert result_line(4, lines).endswith("error=cannot connect")
    rescued = ['{"event":"error","code":"unreadable","message":"the clone completed, but 1.5 KiB ..."}']
    assert result_line(14, rescued).startswith("USB4-RECOVERY RESULT partial exit=14 error=the clone completed")
    assert result_line(0, []) == "USB4-RECOVERY RESULT ok exit=0 digest=unknown"


def _sysfs(tmp_path: Path, modules: list[str], disks: dict[str, int]) -> Path:
    root = tmp_path / "sys"
    for mod in modules:
        (root / "module" / mod).mkdir(parents=True)
    for name, size in disks.items():
        (root / "block" / name).mkdir(parents=True)
        (root / "block" / name / "size").write_text(f"{size}\n")
    (root / "block").mkdir(parents=True, exist_ok=True)
    return root


def test_check_system_all_good(tmp_path: Path) -> None:
    root = _sysfs(tmp_path, ["thunderbolt", "thunderbolt_stream"], {"vda": 2048})
    (root / "kernel" / "config" / "thunderbolt" / "stream").mkdir(parents=True)
    state = check_system([DiskInfo(path="/dev/vda", size=1 << 20)], root, "7.2.13+deb14-amd64")
    assert state.problems == ()
    assert state.disks == ("vda",)
    plan = BootPlan(mode="wizard")
    assert ready_line(plan, state) == (
        "USB4-RECOVERY READY mode=wizard kernel=7.2.13+deb14-amd64 thunderbolt_stream=loaded problems=0 secureboot=off"
    )
    assert state.notes == ()


def test_check_system_explains_missing_module_and_disks(tmp_path: Path) -> None:
    root = _sysfs(tmp_path, ["thunderbolt"], {})
    (root / "kernel" / "security").mkdir(parents=True)
    (root / "kernel" / "security" / "lockdown").write_text("[none] integrity confidentiality\n")
    unreadable = DiskInfo(path="/dev/sdc", size=0, unreadable="cannot be read: No medium found")
    state = check_system([unreadable], root, "k")
    whats = " ".join(p.what for p in state.problems)
    todos = " ".join(p.todo for p in state.problems)
    assert "thunderbolt_stream" in whats
    assert "modprobe thunderbolt_stream" in todos
    assert "No disks found" in whats
    assert "/dev/sdc is there but cannot be read: No medium found" in whats
    assert all(p.todo for p in state.problems)
    assert state.notes == ()


def _secure_boot(root: Path, lockdown: str = "integrity", pending: bool = False) -> None:
    """Secure Boot on as efivarfs and securityfs show it."""
    efivars = root / "firmware" / "efi" / "efivars"
    efivars.mkdir(parents=True)
    attributes = (6).to_bytes(4, "little")  # boot service and runtime access
    (efivars / f"SecureBoot-{EFI_GLOBAL_GUID}").write_bytes(attributes + b"\x01")
    if pending:
        (efivars / f"MokNew-{SHIM_LOCK_GUID}").write_bytes((7).to_bytes(4, "little") + b"\x30\x82")
    (root / "kernel" / "security").mkdir(parents=True)
    marked = " ".join(f"[{m}]" if m == lockdown else m for m in ("none", "integrity", "confidentiality"))
    (root / "kernel" / "security" / "lockdown").write_text(marked + "\n")


def test_lockdown_keeping_the_module_out_is_a_note_not_a_problem(tmp_path: Path) -> None:
    """With Secure Boot on, the refused module is expected: one sentence, and
    the wizard still starts by itself (no problem to acknowledge)."""
    root = _sysfs(tmp_path, ["thunderbolt"], {"vda": 2048})
    _secure_boot(root)
    state = check_system(VDA, root, "k")
    assert state.problems == ()
    (note,) = state.notes
    assert "Secure Boot is on" in note
    assert "thunderbolt-net" in note
    assert state.secure_boot.enabled and state.secure_boot.lockdown == "integrity"
    assert ready_line(BootPlan(), state).endswith("thunderbolt_stream=missing problems=0 secureboot=on")


def test_lockdown_without_secure_boot_is_named_as_such(tmp_path: Path) -> None:
    """lockdown=integrity on the command line locks down with Secure Boot off."""
    root = _sysfs(tmp_path, ["thunderbolt"], {"vda": 2048})
    (root / "kernel" / "security").mkdir(parents=True)
    (root / "kernel" / "security" / "lockdown").write_text("none [integrity] confidentiality\n")
    (note,) = check_system(VDA, root, "k").notes
    assert note.startswith("The kernel is locked down (integrity), so it refuses")


def test_a_pending_enrolment_says_what_is_left_to_do(tmp_path: Path) -> None:
    root = _sysfs(tmp_path, ["thunderbolt"], {"vda": 2048})
    _secure_boot(root, pending=True)
    state = check_system(VDA, root, "k")
    assert state.secure_boot.enrolment_pending
    (note,) = state.notes
    assert "MokManager" in note and "reboot" in note
    assert not state.can_enrol_module_key


def test_secure_boot_with_the_key_enrolled_has_nothing_to_say(tmp_path: Path) -> None:
    root = _sysfs(tmp_path, ["thunderbolt", "thunderbolt_stream"], {"vda": 2048})
    (root / "kernel" / "config" / "thunderbolt" / "stream").mkdir(parents=True)
    _secure_boot(root)
    state = check_system(VDA, root, "k")
    assert state.problems == () and state.notes == ()
    assert not state.can_enrol_module_key


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("none [integrity] confidentiality\n", "integrity"),
        ("[none] integrity confidentiality", "none"),
        ("none integrity [confidentiality]", "confidentiality"),
        ("", ""),
        ("[bogus]", ""),
    ],
)
def test_lockdown_mode(text: str, mode: str) -> None:
    assert lockdown_mode(text) == mode


def test_secure_boot_off_or_unknown(tmp_path: Path) -> None:
    assert read_state(tmp_path) == SecureBootState()
    efivars = tmp_path / "firmware" / "efi" / "efivars"
    efivars.mkdir(parents=True)
    (efivars / f"SecureBoot-{EFI_GLOBAL_GUID}").write_bytes((6).to_bytes(4, "little") + b"\x00")
    assert not read_state(tmp_path).enabled
    assert efi_variable(tmp_path, "SecureBoot", EFI_GLOBAL_GUID) == b"\x00"


@pytest.mark.root
def test_the_boot_stick_is_told_apart_by_the_inventorys_rule(tmp_path: Path) -> None:
    """The same rule as the receiver's refusals: a GPT partition named USB4-RECOVERY."""
    stick, disk = tmp_path / "stick.img", tmp_path / "disk.img"
    for image in (stick, disk):
        with open(image, "wb") as f:
            f.truncate(64 << 20)
    sh("sfdisk", "--quiet", str(stick), input='label: gpt\nsize=32M, type=uefi, name="USB4-RECOVERY"\n')
    with loop_device(stick) as s, loop_device(disk) as d:
        found = [describe_disk(s), describe_disk(d)]
        state = check_system(found, _sysfs(tmp_path, [], {}), "k")
        assert found[0].boot_medium and "boot stick" in (found[0].refusal or "")
        assert state.disks == (d.removeprefix("/dev/"),)
        assert state.boot_disk == s.removeprefix("/dev/")
        assert "No disks found" not in " ".join(p.what for p in state.problems)
        assert "No disks found" in " ".join(p.what for p in check_system(found[:1], tmp_path, "k").problems)


def test_a_disk_is_settled_once_udev_has_handled_it(tmp_path: Path) -> None:
    """The kernel lists the stick before its partitions: wait for udev."""
    root = _sysfs(tmp_path, [], {"sda": 1000, "vda": 2048, "loop0": 8})
    for name, dev in (("sda", "8:0"), ("vda", "254:0"), ("loop0", "7:0")):
        (root / "block" / name / "dev").write_text(f"{dev}\n")
    db = tmp_path / "udev"
    assert unsettled_disks(root, tmp_path / "no-udev") == ()
    db.mkdir()
    (db / "b254:0").write_text("")
    assert unsettled_disks(root, db) == ("sda",)  # loop devices are not waited for
    (db / "b8:0").write_text("")
    assert unsettled_disks(root, db) == ()


def test_result_line_reads_the_cli_summary_event() -> None:
    used = '{"event":"summary","role":"receiver","list_digest":"L1","image_digest":null}'
    exact = '{"event":"summary","role":"sender","list_digest":"L2","image_digest":"I2"}'
    assert result_line(0, [used]).endswith("digest=L1")
    assert result_line(0, [exact]).endswith("digest=I2")
    failed = '{"event":"error","code":"no_peer","message":"no sender came","exit_code":12}'
    assert result_line(12, [failed]) == "USB4-RECOVERY RESULT failed exit=12 error=no sender came"
    assert result_line(0, ['{"event":"progress","done":1}', used, "plain words"]).endswith("digest=L1")


# --- the headless run: its own unit, on no terminal; the screens follow its log ---

UNITS = Path(__file__).resolve().parents[2] / "initramfs" / "rootfs" / "etc" / "systemd" / "system"


def _unit(name: str) -> dict[str, list[str]]:
    """A unit file's settings, as "Section.Key" -> its values in order."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in (UNITS / name).read_text().splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line and not line.startswith(("#", ";")):
            key, value = line.split("=", 1)
            settings.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return settings


def test_the_headless_run_has_a_unit_that_needs_no_serial_port() -> None:
    runners = [p.name for p in UNITS.glob("*.service") if "recovery.appliance headless" in p.read_text()]
    assert runners == ["recovery-headless.service"]
    unit = _unit("recovery-headless.service")
    assert unit["Service.ExecStart"] == ["/usr/bin/python3 -m recovery.appliance headless"]
    assert "Service.TTYPath" not in unit and unit["Service.StandardInput"] == ["null"]
    assert not [
        value
        for key, values in unit.items()
        for value in values
        if key.startswith(("Unit.Condition", "Unit.Assert", "Unit.Requires", "Unit.BindsTo", "Unit.After"))
        and ("tty" in value or "serial" in value)
    ]
    assert "recovery-stream-module.service" in unit["Unit.After"][0].split()  # the cable's module, if it loads
    assert unit["Install.WantedBy"] == ["multi-user.target"]
    enable = re.search(r"systemctl --root=\S+ enable ([^>]*)>", (UNITS.parents[4] / "build-image.sh").read_text())
    assert enable and "recovery-headless.service" in enable.group(1).split()
    # The serial console only follows it: on a machine without a UART nothing waits for that unit.
    assert _unit("recovery-serial.service")["Service.ExecStart"] == ["/usr/bin/python3 -m recovery.appliance serial"]


@pytest.fixture
def headless(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The appliance's run directory in tmp_path, `recovery` a fake that prints a summary
    (and counts its runs), and no wait for disks."""
    run_dir = tmp_path / "run"
    monkeypatch.setattr(console, "RUN_DIR", run_dir)
    monkeypatch.setattr(console, "HEADLESS_LOG", run_dir / "headless.log")
    monkeypatch.setattr(console, "HEADLESS_RESULT", run_dir / "headless.result")
    monkeypatch.setattr(console, "SERIAL_SHOWN", run_dir / "headless.serial-shown")
    fake = tmp_path / "recovery"
    fake.write_text(
        "#!/bin/sh\n"
        f"echo run >>'{tmp_path / 'runs'}'\n"
        'echo "args: $*"\n'
        "echo 'warming up' >&2\n"
        """echo '{"event":"summary","role":"receiver","list_digest":"L1","image_digest":null}'\n"""
    )
    fake.chmod(0o755)
    monkeypatch.setattr(console, "_recovery_cmd", lambda: [str(fake)])
    monkeypatch.setattr(console, "_settle_disks", lambda timeout: None)
    return tmp_path


def _plan(monkeypatch: pytest.MonkeyPatch, cmdline: str) -> None:
    monkeypatch.setattr(console, "_plan_or_complain", lambda: (parse_cmdline(cmdline), None))


def test_the_headless_unit_runs_the_clone_once_and_the_screens_follow_it(
    headless: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = headless / "target.img"
    target.write_bytes(b"")
    _plan(monkeypatch, f"recovery.mode=receive recovery.target={target} recovery.yes")
    followed: list[str] = []
    result: list[str] = []
    follower = threading.Thread(target=lambda: result.append(console._follow_headless(followed.append, 0.05)))
    follower.start()  # a screen that came up first: it waits for the run, whenever it starts
    assert console.main(["headless"]) == 0
    follower.join(10)
    log = console.HEADLESS_LOG.read_text()
    assert result == ["USB4-RECOVERY RESULT ok exit=0 digest=L1"]
    assert console.HEADLESS_RESULT.read_text() == result[0] + "\n"
    assert "".join(followed) == log  # every line, in order, nothing twice
    assert log.startswith(f"usb4-recovery: running recovery receive --target {target} --yes --json\n")
    assert f"args: receive --target {target} --yes --json\nwarming up\n" in log
    assert console.main(["headless"]) == 0  # once per boot: a restarted unit does not clone again
    assert (headless / "runs").read_text() == "run\n"
    later: list[str] = []
    assert console._follow_headless(later.append, 0.05) == result[0] and "".join(later) == log


def test_the_headless_unit_does_nothing_outside_headless_modes(headless: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for cmdline in ("", "recovery.mode=shell"):
        _plan(monkeypatch, cmdline)
        assert console.main(["headless"]) == 0
    assert not console.HEADLESS_RESULT.exists() and not (headless / "runs").exists()


def test_a_headless_run_that_breaks_still_ends_the_screens_wait(
    headless: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _plan(monkeypatch, f"recovery.mode=send recovery.source={headless / 'source.img'}")
    monkeypatch.setattr(console, "_wait_for", lambda predicate, timeout, step=0.5: True)

    def broken(argv: object, log: object) -> Iterator[str]:
        raise ValueError("a bug")
        yield ""

    monkeypatch.setattr(console, "_stream", broken)
    assert console.main(["headless"]) == 0
    assert console._follow_headless(lambda text: None, 0.05) == (
        "USB4-RECOVERY RESULT failed exit=127 error=usb4-recovery: ValueError: a bug"
    )


def test_the_serial_console_shows_the_headless_log_once_then_only_the_result(
    headless: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = headless / "target.img"
    target.write_bytes(b"")
    _plan(monkeypatch, f"recovery.mode=receive recovery.target={target} recovery.yes")
    root = _sysfs(headless, ["thunderbolt"], {"vda": 2048})
    monkeypatch.setattr(console, "_current_state", lambda: check_system(VDA, root, "7.2"))
    monkeypatch.setattr(console, "_exec_shell", lambda: None)
    assert console.main(["headless"]) == 0
    capsys.readouterr()
    console.main(["serial"])  # started late (after the run ended): still the whole log
    first = capsys.readouterr().out
    assert first.index("USB4-RECOVERY READY mode=receive") < first.index("usb4-recovery: running recovery receive")
    assert first.index('"list_digest":"L1"') < first.index("USB4-RECOVERY RESULT ok exit=0 digest=L1")
    console.main(["serial"])  # restarted after its root shell: the result, not the log again
    again = capsys.readouterr().out
    assert "USB4-RECOVERY RESULT ok" in again and "running recovery receive" not in again
