"""Boot the appliance image in QEMU (OVMF, TCG) and talk to its serial console.

Each VM boots a private copy of the image whose systemd-boot menu gets one
extra entry, the default, with the kernel command line the test asks for: the
same as a user pressing 'e' at the boot menu.  The serial console is QEMU's
stdin/stdout; everything it prints is kept in memory and in a log file next to
the VM's other files, which the test prints when it fails.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
ESP_OFFSET = "1M"  # build-image.sh puts the ESP at sector 2048
READY = re.compile(r"USB4-RECOVERY READY mode=(\S+) kernel=(\S+) thunderbolt_stream=(\S+)")
RESULT = re.compile(r"USB4-RECOVERY RESULT (ok|failed) exit=(\d+) (\S+)=([^\r\n]*)")
# CSI and OSC sequences (systemd's shell prompt sends OSC 3008), charset
# selection, carriage returns.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][A-Z0-9]|\r")


class VMError(AssertionError):
    """The VM did not do what the test waited for."""


def missing_host_tools() -> list[str]:
    """What the host lacks to boot the image (empty when all is there)."""
    missing = [tool for tool in ("qemu-system-x86_64", "mcopy", "mtype") if not shutil.which(tool)]
    missing += [str(p) for p in (OVMF_CODE, OVMF_VARS) if not p.exists()]
    return missing


def _mtools(args: Sequence[str]) -> str:
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    proc = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise VMError(f"{' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def image_cmdline(image: Path) -> str:
    """The kernel options of the image's default (wizard) boot entry."""
    text = _mtools(["mtype", "-i", f"{image}@@{ESP_OFFSET}", "::/loader/entries/10-wizard.conf"])
    for line in text.splitlines():
        if line.startswith("options "):
            return line.split(" ", 1)[1].strip()
    raise VMError("the image's wizard entry has no options line")


def prepare_image(image: Path, dest: Path, cmdline: str) -> None:
    """Copy the image and make `cmdline` its default boot entry, no timeout."""
    subprocess.run(["cp", "--sparse=always", str(image), str(dest)], check=True, timeout=120)
    entry = dest.with_suffix(".entry.conf")
    entry.write_text(f"title USB4 Recovery (test)\nefi /usb4-recovery/usb4-recovery.efi\noptions {cmdline}\n")
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


class VM:
    """One QEMU guest booted from (a copy of) the appliance image."""

    def __init__(
        self,
        name: str,
        image: Path,
        workdir: Path,
        cmdline_extra: str,
        disks: Sequence[Path] = (),
        netdev: str | None = None,
        mac: str | None = None,
        memory_mib: int = 1024,
    ) -> None:
        self.name = name
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "serial.log"
        self.cmdline = boot_cmdline(image, cmdline_extra)
        self._stick = self.dir / "stick.img"
        prepare_image(image, self._stick, self.cmdline)
        vars_copy = self.dir / "OVMF_VARS.fd"
        shutil.copyfile(OVMF_VARS, vars_copy)
        argv = [
            "qemu-system-x86_64",
            "-name", name,
            "-machine", "q35",
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
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
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
