"""The demo's two machines on one: sample disk images and a simulated peer.

"This machine" offers a generated sample disk (GPT, ext4 and FAT holding
real files); the peer is a second local process, ``recovery agent``, over
loopback TCP, offering a blank disk of the same size and a smaller one (so
the wizard shows a target it refuses). It makes its pairing codes as any
machine does (a new one for each pairing and after 3 wrong tries); the
wizard's first screen shows the one it shows now, from its events. The link between them is held to
:data:`recovery.demo.DEMO_RATE` (a slow cable), so the progress, the limit and the
read-back are there to be seen for several seconds. :class:`DemoWorld`
makes all of it and removes all of it, processes and files, on every way out.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from recovery.demo import DEMO_RATE, MIB, EventLines, build_sample_disk, check_tools, start_recovery
from recovery.errors import LinkError
from recovery.link.tcp import Endpoint
from recovery.run import stop
from recovery.tui.config import WizardConfig

PEER_NAME = "demo-peer"
START_TIMEOUT = 30.0


class DemoWorld:
    """Sample images in a fresh folder, and the simulated peer's process."""

    def __init__(
        self, size_mib: int = 256, directory: str | None = None, keep: bool = False, rate: int | None = DEMO_RATE
    ) -> None:
        self.size_mib = size_mib
        self.rate = rate
        self.keep = keep or directory is not None
        self.workdir = Path(directory or tempfile.mkdtemp(prefix="recovery-demo-"))
        self.source = self.workdir / "laptop-disk.img"
        self.blank = self.workdir / "peer" / "new-disk.img"
        self.small = self.workdir / "peer" / "usb-stick.img"
        self.logs = self.workdir / "logs"
        self.agent: subprocess.Popen[bytes] | None = None
        self.events: EventLines | None = None
        self.port: int | None = None

    def __enter__(self) -> DemoWorld:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- making it ---

    def start(self) -> None:
        """Build the images and start the peer (on failure, :meth:`close` still cleans up)."""
        check_tools()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.blank.parent.mkdir(exist_ok=True)
        build_sample_disk(str(self.source), self.size_mib)
        for path, size in ((self.blank, self.size_mib), (self.small, max(16, self.size_mib // 4))):
            with open(path, "wb") as f:
                f.truncate(size * MIB)
        self._start_agent()

    def _start_agent(self) -> None:
        out = self.workdir / "peer-events.jsonl"
        err = self.workdir / "peer-errors.txt"
        args = [
            "agent",
            "--listen",
            "127.0.0.1:0",
            "--name",
            PEER_NAME,
            "--disk",
            str(self.blank),
            "--disk",
            str(self.small),
            "--log-dir",
            str(self.logs / "peer"),
            "--json",
            "--stop-on-eof",
            *(["--link-rate", str(self.rate)] if self.rate else []),
        ]
        self._events_file = open(out, "wb")
        with open(err, "wb") as stderr:
            # Its own session: a Ctrl-C meant for the wizard must not reach the peer first.
            # Its stdin is a pipe from us: when we end, however we end, it ends too.
            self.agent = start_recovery(args, stderr=stderr, new_session=True)
        self.events = EventLines(self.agent, "the demo's simulated peer", copy=self._events_file)
        try:
            self.port = int(self.events.wait_for("listening", START_TIMEOUT)["port"])
            self.events.wait_for("pairing", START_TIMEOUT)
        except LinkError:
            why = (err.read_text(errors="replace").strip().splitlines() or ["no answer"])[-1]
            raise LinkError(f"the demo's simulated peer did not start: {why}") from None

    @property
    def code(self) -> str:
        """The simulated peer's pairing code as it shows it now (a new one for each pairing, and after
        3 wrong tries, as any machine's): the user types it in the wizard."""
        assert self.events is not None, "start() first"
        shown = self.events.last("pairing")
        assert shown is not None
        return str(shown["code"])

    def hint(self) -> str:
        """The line under the wizard's own code: the simulated peer has no screen to show its code on."""
        return (
            f"Demo: the other machine ({PEER_NAME}) is simulated and has no screen; its code is "
            f"{self.code}. Press c, type it, and Enter."
        )

    def config(self, *, ansi: bool | None = None) -> WizardConfig:
        """The wizard's side: it offers the sample disk and connects to the peer."""
        assert self.port is not None, "start() first"
        return WizardConfig(
            disks=(str(self.source),),
            listen=None,
            connect=Endpoint("127.0.0.1", self.port),
            log_dir=self.logs,
            cable=False,
            demo=True,
            ansi=ansi,
            code_hint=self.hint,
        )

    # --- removing it ---

    def stop_agent(self) -> None:
        agent, self.agent = self.agent, None
        if agent is None:
            return
        try:
            stop(agent)
        finally:
            if self.events is not None:
                self.events.thread.join(5)
            self._events_file.close()

    def close(self) -> None:
        """Stop the peer and remove every file, unless asked to keep them."""
        try:
            self.stop_agent()
        finally:
            if not self.keep:
                shutil.rmtree(self.workdir, ignore_errors=True)
