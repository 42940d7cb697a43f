"""Boot the appliance image in QEMU (OVMF, TCG) and talk to its serial console.

Each VM boots a private copy of the image whose systemd-boot menu gets one
extra entry, the default, with the kernel command line the test asks for: the
same as a user pressing 'e' at the boot menu (or the stick as built, when the
test asks for no command line).  The serial console is QEMU's stdin/stdout;
everything it prints is kept in memory and in a log file next to the VM's
other files, which the test prints when it fails.

With ``secure_boot=True`` the VM gets OVMF's Secure Boot build (SMM) and a copy
of its variable store with Microsoft's keys enrolled and Secure Boot on, as
machines ship; certificates given as ``mok`` are put into that copy's MOK list
with virt-fw-vars, as if a person had confirmed them in MokManager.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# Secure Boot: the SMM build, and variables with Microsoft's KEK and db (the
# Windows and third-party UEFI CAs) enrolled and Secure Boot enabled.
OVMF_CODE_SECBOOT = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
OVMF_VARS_MS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
SHIM_LOCK_GUID = "605dab50-e046-4300-abb6-3dd810dd8b23"  # owner of MOK list entries
ESP_OFFSET = "1M"  # build-image.sh puts the ESP at sector 2048
# Whole lines only: a match must not end inside a line still arriving.
READY = re.compile(r"USB4-RECOVERY READY mode=(\S+) kernel=(\S+) thunderbolt_stream=(\S+)[^\n]*\n")
RESULT = re.compile(r"USB4-RECOVERY RESULT (ok|failed) exit=(\d+) (\S+)=([^\r\n]*)\n")
# CSI and OSC sequences (systemd's shell prompt sends OSC 3008), charset
# selection, carriage returns.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][A-Z0-9]|\r")


class VMError(AssertionError):
    """The VM did not do what the test waited for."""


def virt_fw_vars() -> str | None:
    """virt-fw-vars (Python package virt-firmware), in this virtualenv or on PATH."""
    beside = Path(sys.executable).with_name("virt-fw-vars")
    return str(beside) if beside.exists() else shutil.which("virt-fw-vars")


def missing_host_tools(secure_boot: bool = False) -> list[str]:
    """What the host lacks to boot the image (empty when all is there)."""
    missing = [tool for tool in ("qemu-system-x86_64", "mcopy", "mtype") if not shutil.which(tool)]
    missing += [str(p) for p in (OVMF_CODE, OVMF_VARS) if not p.exists()]
    if secure_boot:
        missing += [str(p) for p in (OVMF_CODE_SECBOOT, OVMF_VARS_MS) if not p.exists()]
        if not virt_fw_vars():
            missing.append("virt-fw-vars (pip package virt-firmware)")
    return missing


def _mtools(args: Sequence[str]) -> str:
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    proc = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise VMError(f"{' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _wizard_entry(image: Path) -> list[str]:
    text = _mtools(["mtype", "-i", f"{image}@@{ESP_OFFSET}", "::/loader/entries/10-wizard.conf"])
    return text.splitlines()


def image_cmdline(image: Path) -> str:
    """The kernel options of the image's default (wizard) boot entry."""
    for line in _wizard_entry(image):
        if line.startswith("options "):
            return line.split(" ", 1)[1].strip()
    raise VMError("the image's wizard entry has no options line")


def prepare_image(image: Path, dest: Path, cmdline: str | None) -> None:
    """Copy the image and make `cmdline` its default boot entry, no timeout
    (None: leave the copy as built)."""
    subprocess.run(["cp", "--sparse=always", str(image), str(dest)], check=True, timeout=120)
    if cmdline is None:
        return
    # What to boot (linux/initrd/efi lines) as the wizard entry has it.
    boots = [line for line in _wizard_entry(image) if line.split(" ", 1)[0] in ("linux", "initrd", "efi")]
    entry = dest.with_suffix(".entry.conf")
    entry.write_text("\n".join(["title USB4 Recovery (test)", *boots, f"options {cmdline}", ""]))
    loader = dest.with_suffix(".loader.conf")
    loader.write_text("timeout 0\ndefault 90-test.conf\nauto-entries no\nauto-firmware no\n")
    img = f"{dest}@@{ESP_OFFSET}"
    _mtools(["mcopy", "-o", "-i", img, str(entry), "::/loader/entries/90-test.conf"])
    _mtools(["mcopy", "-o", "-i", img, str(loader), "::/loader/loader.conf"])
    entry.unlink()
    loader.unlink()


def boot_cmdline(image: Path, extra: str) -> str:
    """The image's own options (kernel messages kept off the serial console,
    where they would cut into command output), plus `extra`."""
    keep = [
        opt
        for opt in image_cmdline(image).split()
        if not opt.startswith("systemd.show_status=") and not opt.startswith("recovery.")
    ]
    return " ".join([*keep, "systemd.show_status=error", extra])


def _enroll_mok(vars_file: Path, certs: Sequence[Path]) -> None:
    """Put `certs` into the MOK list of an OVMF variable store, as MokManager
    does once a person confirms an enrolment (shim then hands the list to the
    kernel at every boot)."""
    tool = virt_fw_vars()
    if tool is None:
        raise VMError("virt-fw-vars is missing (pip package virt-firmware)")
    argv = [tool, "--inplace", str(vars_file)]
    for cert in certs:
        argv += ["--add-mok", SHIM_LOCK_GUID, str(cert)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise VMError(f"{' '.join(argv)} failed: {proc.stderr.strip() or proc.stdout.strip()}")


def esp_file(image: Path, path: str, dest: Path) -> Path:
    """Copy a file out of the image's ESP."""
    _mtools(["mcopy", "-n", "-i", f"{image}@@{ESP_OFFSET}", f"::/{path}", str(dest)])
    return dest


def cert_common_name(cert: Path) -> str:
    """The subject's CN of a DER certificate (what modinfo shows as signer)."""
    proc = subprocess.run(
        ["openssl", "x509", "-inform", "DER", "-in", str(cert), "-noout", "-subject", "-nameopt", "multiline"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    for line in proc.stdout.splitlines():
        key, _, value = line.strip().partition("=")
        if key.strip() == "commonName":
            return value.strip()
    raise VMError(f"{cert} has no common name: {proc.stdout}")


FIRMWARE = ("Dell Inc.", "Latitude 7420")  # what the guests' SMBIOS says (no commas: QEMU's separator)


class VM:
    """One QEMU guest booted from (a copy of) the appliance image."""

    def __init__(
        self,
        name: str,
        image: Path,
        workdir: Path,
        cmdline_extra: str | None,
        disks: Sequence[Path] = (),
        netdev: str | None = None,
        mac: str | None = None,
        memory_mib: int = 1024,
        secure_boot: bool = False,
        mok: Sequence[Path] = (),
    ) -> None:
        """`cmdline_extra` None boots the stick as built (its menu and entries)."""
        self.name = name
        self.serial = f"SN{name.upper()}"  # the firmware's, so each guest has its own name (see FIRMWARE)
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "serial.log"
        self.cmdline = None if cmdline_extra is None else boot_cmdline(image, cmdline_extra)
        self._stick = self.dir / "stick.img"
        prepare_image(image, self._stick, self.cmdline)
        self.vars = self.dir / "OVMF_VARS.fd"
        shutil.copyfile(OVMF_VARS_MS if secure_boot else OVMF_VARS, self.vars)
        if mok:
            if not secure_boot:
                raise ValueError("MOK certificates need secure_boot=True")
            _enroll_mok(self.vars, mok)
        if secure_boot:
            # OVMF's Secure Boot build keeps its variables in SMM-protected flash.
            machine = ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"]
            code = OVMF_CODE_SECBOOT
        else:
            machine = ["-machine", "q35"]
            code = OVMF_CODE
        argv = [
            "qemu-system-x86_64",
            "-name", name,
            *machine,
            "-accel", "tcg",
            "-cpu", "max",
            "-smp", "1",
            "-m", str(memory_mib),
            "-nodefaults",
            "-no-reboot",
            "-display", "none",
            "-device", "VGA",
            "-serial", "stdio",
            "-monitor", "none",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
            "-drive", f"if=pflash,format=raw,unit=1,file={self.vars}",
            "-smbios", f"type=1,manufacturer={FIRMWARE[0]},product={FIRMWARE[1]},serial={self.serial}",
            "-device", "virtio-rng-pci",
            "-device", "qemu-xhci,id=xhci",
            "-drive", f"if=none,id=stick,format=raw,file={self._stick}",
            "-device", "usb-storage,bus=xhci.0,drive=stick,bootindex=0,removable=on",
        ]  # fmt: skip
        for i, disk in enumerate(disks):
            argv += [
                "-drive", f"if=none,id=disk{i},format=raw,file={disk},cache=unsafe",
                "-device", f"virtio-blk-pci,drive=disk{i},serial=TESTDISK{name.upper()}{i}",
            ]  # fmt: skip
        if netdev:
            argv += ["-netdev", f"{netdev},id=net0"]
            argv += ["-device", f"virtio-net-pci,netdev=net0,romfile=,mac={mac}"]
        self.argv = argv
        self._buf = ""
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._log = open(self.log_path, "w", encoding="utf-8", errors="replace")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"{name}-serial", daemon=True)
        self._reader.start()
        self._pos = 0

    # -- output --------------------------------------------------------------

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            text = data.decode("utf-8", errors="replace")
            with self._changed:
                if text:
                    self._buf += _ANSI.sub("", text)
                    self._log.write(text)
                    self._log.flush()
                else:
                    self._buf += "\n[qemu exited]\n"
                self._changed.notify_all()
            if not data:
                return

    @property
    def output(self) -> str:
        with self._lock:
            return self._buf

    def tail(self, chars: int = 4000) -> str:
        return self.output[-chars:]

    def expect(self, pattern: str | re.Pattern[str], timeout: float) -> re.Match[str]:
        """Wait for `pattern` in the output after the last match."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                match = regex.search(self._buf, self._pos)
                if match:
                    self._pos = match.end()
                    return match
                if self.proc.poll() is not None and self._buf.endswith("[qemu exited]\n"):
                    raise VMError(
                        f"{self.name}: QEMU exited ({self.proc.returncode}) before "
                        f"{regex.pattern!r}; serial log {self.log_path}:\n{self._buf[-4000:]}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise VMError(
                        f"{self.name}: no {regex.pattern!r} within {timeout:.0f} s; "
                        f"serial log {self.log_path}:\n{self._buf[-4000:]}"
                    )
                self._changed.wait(min(left, 1.0))

    # -- input ---------------------------------------------------------------

    def wait_for_shell(self, boot_timeout: float) -> re.Match[str]:
        """Wait for the READY line and the serial root shell that follows it
        (echo off, so command output comes back clean); the READY match."""
        ready = self.expect(READY, boot_timeout)
        self.expect("root shell on the serial console", 60)
        self.check("stty -echo 2>/dev/null; true", 30)
        return ready

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def run(self, command: str, timeout: float = 120) -> tuple[int, str]:
        """Run a shell command on the serial root shell: (exit code, output).

        The markers are printed from pieces so that the shell's echo of the
        typed line never matches them.
        """
        tag = secrets.token_hex(4)
        self.send(f"printf '%s%s\\n' {tag} -BEGIN; {command}; printf '%s%s %d\\n' {tag} -END $?\n")
        match = self.expect(re.compile(rf"{tag}-BEGIN\n(.*?){tag}-END (\d+)\n", re.DOTALL), timeout)
        return int(match.group(2)), match.group(1)

    def check(self, command: str, timeout: float = 120) -> str:
        rc, out = self.run(command, timeout)
        if rc != 0:
            raise VMError(f"{self.name}: `{command}` exited {rc}:\n{out}")
        return out

    # -- the screens -----------------------------------------------------------

    def type_on(self, tty: int, text: str) -> None:
        """Type `text` on virtual console `tty`, as a keyboard would (TIOCSTI)."""
        code = (
            "import fcntl, sys, termios; fd = open(sys.argv[1], 'w'); "
            "[fcntl.ioctl(fd, termios.TIOCSTI, bytes([c])) for c in sys.stdin.buffer.read()]"
        )
        data = base64.b64encode(text.encode()).decode()
        self.check(f'echo {data} | base64 -d | python3 -c "{code}" /dev/tty{tty}')

    def screen(self, tty: int) -> str:
        """What virtual console ``tty`` shows now, row by row (trailing blanks cut)."""
        code = (
            f'd = open("/dev/vcsa{tty}", "rb").read(); rows, cols = d[0], d[1]; cells = d[4::2]; '
            'print(chr(10).join(cells[r * cols:(r + 1) * cols].decode("latin-1").rstrip() for r in range(rows)))'
        )
        return self.check(f"python3 -c '{code}'").rstrip()

    def wait_screen(self, tty: int, needles: Sequence[str], timeout: float = 90) -> str:
        """Wait until console ``tty`` shows every text in ``needles`` (spaces squeezed).

        The screens are drawn by programs that start and update on their own
        clock, so a single look can land between two updates.
        """
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen(tty)
            flat = " ".join(screen.split())
            missing = [n for n in needles if n not in flat]
            if not missing:
                return screen
            if time.monotonic() > deadline:
                raise VMError(f"{self.name}: tty{tty} lacks {missing} after {timeout:.0f} s; it shows:\n{screen}")
            time.sleep(1)

    # -- teardown ------------------------------------------------------------

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self._reader.join(timeout=5)
        self._log.close()
        self._stick.unlink(missing_ok=True)


@contextlib.contextmanager
def booted(machine: VM, boot_timeout: float, workdir: Path) -> Iterator[VM]:
    """`machine` up to its serial root shell; afterwards it is closed and
    `workdir` removed, on every exit path."""
    try:
        machine.wait_for_shell(boot_timeout)
        yield machine
    finally:
        machine.close()
        shutil.rmtree(workdir, ignore_errors=True)
