"""The name a machine booted from the stick goes by: chosen from its disk, its firmware or its boot."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from recovery.demo import SAMPLE_HOSTNAME, build_sample_disk
from recovery.disks import inventory, machinename
from recovery.disks.machinename import STICK_HOSTNAME, choose, clean, firmware_name, installed_name, word_pair
from recovery.engine.peer.session import told_apart
from tests.disks.hive import system_hive
from tests.fsdisks import Part, make_disk, mounted_fs
from tests.helpers import REPO, loop_device

DELL = {"sys_vendor": "Dell Inc.", "product_name": "Latitude 7420", "product_serial": "CN0X4F2K"}


def dmi(root: Path, **values: str) -> Path:
    """A fake /sys/class/dmi/id holding ``values`` (what the kernel shows, newline included)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, value in values.items():
        (root / name).write_text(value + "\n")
    return root


def pick(tmp_path: Path, *, disks: list[object] | None = None, dmi_values: dict[str, str] | None = None, **kw: str):  # type: ignore[no-untyped-def]
    args = {"option": None, "cmdline": "BOOT_IMAGE=/vmlinuz quiet", "hostname": STICK_HOSTNAME, "boot_id": "b1"}
    args.update(kw)
    return choose(
        disks=lambda: disks or [],  # type: ignore[arg-type,return-value]
        dmi_root=dmi(Path(tempfile.mkdtemp(dir=tmp_path)), **(dmi_values or {})),
        **args,  # type: ignore[arg-type]
    )


def test_the_firmware_names_vendor_model_and_the_end_of_the_serial(tmp_path: Path) -> None:
    assert firmware_name(dmi(tmp_path, **DELL)) == "Dell Latitude 7420 ·4F2K"


def test_lenovo_names_the_family_not_the_type_number(tmp_path: Path) -> None:
    root = dmi(
        tmp_path,
        sys_vendor="LENOVO",
        product_name="20XW0055GE",
        product_version="ThinkPad X1 Carbon Gen 9",
        product_serial="PF2ABCDE",
    )
    assert firmware_name(root) == "Lenovo ThinkPad X1 Carbon Gen 9 ·BCDE"


def test_placeholders_and_a_missing_serial_say_nothing(tmp_path: Path) -> None:
    assert (
        firmware_name(dmi(tmp_path / "a", sys_vendor="To be filled by O.E.M.", product_name="Default string")) is None
    )
    assert firmware_name(dmi(tmp_path / "b", sys_vendor="QEMU", product_name="Standard PC (Q35 + ICH9, 2009)")) == (
        "QEMU Standard PC (Q35 + ICH9, 2009)"
    )
    assert firmware_name(dmi(tmp_path / "c")) is None


def test_the_vendor_is_not_said_twice(tmp_path: Path) -> None:
    root = dmi(tmp_path, sys_vendor="HP", product_name="HP EliteBook 840 G8", product_serial="0000")
    assert firmware_name(root) == "HP EliteBook 840 G8"


def test_a_name_is_one_short_printable_line() -> None:
    assert clean("lab\x1b[2J\npc\t07") == "lab [2J pc 07"
    assert len(clean("x" * 500)) == machinename.MAX_NAME
    assert clean("  \n ") == ""


def test_the_word_pair_is_the_same_for_one_boot_and_differs_between_boots() -> None:
    assert word_pair("boot-1") == word_pair("boot-1")
    assert len({word_pair(f"boot-{i}") for i in range(50)}) > 40
    assert "-" in word_pair("x")


def test_the_order_of_the_choice(tmp_path: Path) -> None:
    cmdline = 'quiet recovery.name="Bench PC 3"'
    assert pick(tmp_path, option="Front desk", cmdline=cmdline, dmi_values=DELL).name == "Front desk"
    assert pick(tmp_path, cmdline=cmdline, dmi_values=DELL) == machinename.MachineName(
        "Bench PC 3", "kernel command line"
    )
    assert pick(tmp_path, hostname="office-pc", dmi_values=DELL).name == "office-pc"  # a real system keeps its name
    assert pick(tmp_path, dmi_values=DELL) == machinename.MachineName("Dell Latitude 7420 ·4F2K", "firmware")
    nothing = pick(tmp_path)
    assert nothing == machinename.MachineName(word_pair("b1"), "this boot")


def test_the_installed_systems_host_name_wins_over_the_firmware(tmp_path: Path) -> None:
    """The sample disk holds an ext4 root with /etc/hostname: read with debugfs, never mounted."""
    disk = tmp_path / "laptop.img"
    build_sample_disk(str(disk), 64)
    info = inventory.describe_disk(str(disk))
    assert installed_name([info]) == SAMPLE_HOSTNAME
    assert pick(tmp_path, disks=[info], dmi_values=DELL) == machinename.MachineName(SAMPLE_HOSTNAME, "installed system")
    stick = type(info)(**{**{f: getattr(info, f) for f in info.__dataclass_fields__}, "boot_medium": True})
    assert installed_name([stick]) is None  # the stick's own system names nothing


def test_a_disk_without_a_system_falls_through_to_the_firmware(tmp_path: Path) -> None:
    disk = tmp_path / "blank.img"
    with open(disk, "wb") as f:
        f.truncate(8 << 20)
    info = inventory.describe_disk(str(disk))
    assert pick(tmp_path, disks=[info], dmi_values=DELL).source == "firmware"


def test_namesakes_get_the_pairings_tags_the_same_on_both_sides() -> None:
    session = "3f9a-77c1"
    assert told_apart("office-pc", "lab-pc", session, "driver") == "office-pc"
    driver_seen_by_driver = told_apart(STICK_HOSTNAME, STICK_HOSTNAME, session, "driver")
    server_seen_by_driver = told_apart(STICK_HOSTNAME, STICK_HOSTNAME, session, "server")
    assert driver_seen_by_driver != server_seen_by_driver
    assert driver_seen_by_driver.startswith(f"{STICK_HOSTNAME} ·")
    assert told_apart(STICK_HOSTNAME, STICK_HOSTNAME, "other-session", "driver") != driver_seen_by_driver


def test_the_stick_is_built_with_the_host_name_the_choice_looks_for() -> None:
    assert f"echo {STICK_HOSTNAME} >" in (REPO / "build-image.sh").read_text()


def test_the_name_option_names_this_machine_and_goes_before_the_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from recovery.cli.main import main

    monkeypatch.setattr(machinename, "_option", [])
    try:
        assert main(["--name", "Bench PC", "disks", "--json"]) == 0
        assert machinename.this_machine() == machinename.MachineName("Bench PC", "option")
    finally:
        machinename.this_machine.cache_clear()
    capsys.readouterr()
    assert main(["disks", "--name", "x"]) == 2
    assert "--name goes before the command" in capsys.readouterr().err


def test_windows_is_named_by_its_computer_name_else_by_its_disk(tmp_path: Path) -> None:
    """The SYSTEM hive read off the NTFS without mounting it (ntfscat, hivexget), in the control set
    Select\\Current names; without a hive, Windows and the disk it is on."""
    image = tmp_path / "windows.img"
    make_disk(image, [Part("ntfs", 16)], files=False)
    with loop_device(image) as dev:
        node = f"{dev}p1"
        with mounted_fs(node, "ntfs") as mnt:
            config = mnt / "Windows" / "System32" / "config"
            config.mkdir(parents=True)
            system_hive(config / "SYSTEM", "FRONT-DESK-07", control_set=2)
        assert installed_name([inventory.describe_disk(dev)]) == "FRONT-DESK-07"
        for crafted in ("9" * 5000, "-1"):  # too many digits for int(), and none: named by the disk instead
            with mounted_fs(node, "ntfs") as mnt:
                system_hive(mnt / "Windows" / "System32" / "config" / "SYSTEM", "X", current=crafted)
            assert installed_name([inventory.describe_disk(dev)]) == f"Windows on {Path(dev).name}"
        with mounted_fs(node, "ntfs") as mnt:
            (mnt / "Windows" / "System32" / "config" / "SYSTEM").unlink()
        assert installed_name([inventory.describe_disk(dev)]) == f"Windows on {Path(dev).name}"


def test_a_peers_name_is_one_plain_line_and_look_alikes_are_tagged() -> None:
    from recovery.engine.peer.session import _named, make_hello
    from recovery.units import shown

    def named(name: str) -> str:
        return _named(make_hello("wizard", name)).host.hostname

    assert named("office-pc\nThis machine: trusted") == "office-pc This machine: trusted"
    assert named("ｏｆｆｉｃｅ-pc") == "office-pc"  # full-width letters read as the plain ones
    assert named("\u200b\u202e") == "unnamed machine"
    assert len(named("x" * 255)) == machinename.MAX_NAME
    session = "3f9a-77c1"
    for look_alike in ("office-pc\u200b", "Office-PC", "office-pc "):
        assert told_apart("office-pc", look_alike, session, "driver") != "office-pc"
    assert shown("abc\u202edef\u200b") == "abc\\u202edef\\u200b"
