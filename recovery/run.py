"""The one way this program starts other programs.

Argument lists only (never a shell string), a fixed C locale, the child
killed if we are interrupted, and failures reported with the command line
and the child's last words: a :class:`~recovery.errors.ToolError` (exit 15)
when a program cannot start, fails or runs out of time; a
:class:`~recovery.errors.MissingToolError` when it is not installed.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from typing import IO, Any

from recovery.errors import CancelledError, MissingToolError, RecoveryError, ToolError

# Where a child's stdin, stdout or stderr goes: a subprocess constant, an open file, or None (ours).
Redirect = int | IO[Any] | None

# Where sbin tools live even when PATH lacks them (non-root shells).
EXTRA_PATH = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def find_tool(name: str) -> str | None:
    path = os.environ.get("PATH", "")
    return shutil.which(name, path=os.pathsep.join([path, *EXTRA_PATH]))


def need_tool(name: str, package: str | None = None) -> str:
    found = find_tool(name)
    if found is None:
        raise MissingToolError(
            f"{name} is not installed",
            hint=f"install the Debian package {package or name}",
        )
    return found


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    env["LANG"] = "C.UTF-8"
    env["LC_ALL"] = "C.UTF-8"
    env["PATH"] = os.pathsep.join([env.get("PATH", "/usr/bin:/bin"), *EXTRA_PATH])
    if extra:
        env.update(extra)
    return env


class CommandError(ToolError):
    """A helper program ended with an exit code other than 0 (or was killed by a signal)."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        last = " ".join(stderr.strip().splitlines()[-1:])[:300]
        super().__init__(f"`{shlex.join(argv)}` {_ending(returncode)}" + (f": {last}" if last else ""))
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr


def _ending(returncode: int) -> str:
    """How a child ended, in words: its exit code, or the signal that killed it."""
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"failed with exit code {returncode}"


def _cannot_start(argv: Sequence[str], e: OSError) -> ToolError:
    return ToolError(f"cannot start `{shlex.join(argv)}`: {e.strerror or e}")


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input: bytes | None = None,  # noqa: A002 - the name subprocess.run uses
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    stdout: int | None = subprocess.PIPE,
    keep: int | None = None,
    cancel: threading.Event | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` to completion; raise :class:`CommandError` if it fails, :class:`ToolError`
    if it cannot start or is still running after ``timeout`` seconds (it is killed then).

    ``keep``: hold only the last ``keep`` bytes of its stdout and stderr, however much it writes (a
    program reading what a peer wrote may be made to print without end). ``cancel``: once it is set, the
    program is killed and :class:`CancelledError` raised (a long resize or copy the user gave up)."""
    argv = [str(a) for a in argv]
    if os.sep not in argv[0]:
        argv[0] = need_tool(argv[0])
    if cancel is not None:
        proc = _run_cancellable(argv, _env(env), input, stdout, cancel)
        if check and proc.returncode != 0:
            raise CommandError(argv, proc.returncode, proc.stderr.decode(errors="replace"))
        return proc
    if keep is not None:
        proc = _run_keeping_tails(argv, _env(env), timeout, keep, stdout)
        if check and proc.returncode != 0:
            raise CommandError(argv, proc.returncode, proc.stderr.decode(errors="replace"))
        return proc
    try:
        proc = subprocess.run(
            argv,
            input=input,
            stdout=stdout,
            stderr=subprocess.PIPE,
            stdin=None if input is not None else subprocess.DEVNULL,
            env=_env(env),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ToolError(f"`{shlex.join(argv)}` did not finish within {timeout:g} s (stopped)") from None
    except OSError as e:
        raise _cannot_start(argv, e) from None
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stderr.decode(errors="replace"))
    return proc


CANCEL_POLL = 0.2  # seconds between looks at a cancel


def _run_cancellable(
    argv: list[str], env: dict[str, str], data: bytes | None, stdout: int | None, cancel: threading.Event
) -> subprocess.CompletedProcess[bytes]:
    stdin = subprocess.PIPE if data is not None else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, env=env)
    except OSError as e:
        raise _cannot_start(argv, e) from None
    pending = data
    while True:
        try:
            out, err = proc.communicate(pending, timeout=CANCEL_POLL)
            return subprocess.CompletedProcess(argv, proc.returncode, out or b"", err or b"")
        except subprocess.TimeoutExpired:
            pending = None  # given once: communicate keeps what it has not written yet
        if cancel.is_set():
            proc.kill()
            proc.communicate()
            raise CancelledError(f"cancelled while `{os.path.basename(argv[0])}` ran (it was stopped)")


def _run_keeping_tails(
    argv: list[str], env: dict[str, str], timeout: float | None, keep: int, stdout: int | None = subprocess.PIPE
) -> subprocess.CompletedProcess[bytes]:
    """``stdout`` other than a pipe (a file): only stderr's tail is kept."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE, env=env)
    except OSError as e:
        raise _cannot_start(argv, e) from None
    tails: dict[int, bytes] = {}

    def drain(index: int, stream: IO[bytes]) -> None:
        buf = bytearray()
        while chunk := stream.read1(1 << 16):  # type: ignore[attr-defined]
            buf += chunk
            if len(buf) > 2 * keep:
                del buf[:-keep]
        tails[index] = bytes(buf[-keep:])

    readers = [
        threading.Thread(target=drain, args=(i, s), daemon=True)
        for i, s in enumerate((proc.stdout, proc.stderr))
        if s is not None
    ]
    for reader in readers:
        reader.start()
    try:
        returncode = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise ToolError(f"`{shlex.join(argv)}` did not finish within {timeout:g} s (stopped)") from None
    finally:
        for reader in readers:
            reader.join(5)
    return subprocess.CompletedProcess(argv, returncode, tails.get(0, b""), tails.get(1, b""))


UNPRIVILEGED = 65534  # nobody and nogroup: who runs a program that reads what a peer wrote


def ram_share(share: int = 2) -> int:
    """A ``1/share`` part of this machine's memory, in bytes (at least 256 MiB)."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        ram = 2 << 30
    return max(256 << 20, ram // share)


def confined(argv: Sequence[str], *, memory: int) -> list[str]:
    """``argv`` for a program that reads bytes a peer wrote (a crafted filesystem may attack the tool that
    parses it): at most ``memory`` bytes of data (prlimit) and, as root, as the unprivileged user with no
    capabilities and no way to gain any (setpriv), in network, PID and mount namespaces of its own, with a
    /proc of its own (unshare: it can see or reach no other process, and ends with the unshare that
    started it). Give it a device it may read
    (:func:`recovery.disks.partdev.private_region`). A timeout that kills unshare kills the tool too:
    the signal its death sends the child survives setpriv's change of user (``--pdeathsig=keep``)."""
    bounded = [need_tool("prlimit", "util-linux"), f"--data={memory}", "--", *argv]
    if os.geteuid() != 0:
        return bounded
    return [
        need_tool("unshare", "util-linux"), "--net", "--pid", "--mount", "--mount-proc", "--fork", "--kill-child", "--",
        need_tool("setpriv", "util-linux"), f"--reuid={UNPRIVILEGED}", f"--regid={UNPRIVILEGED}", "--clear-groups",
        "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--pdeathsig=keep", "--",
        *bounded,
    ]  # fmt: skip


def foreground(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> int:
    """Run ``argv`` on this terminal (our stdin, stdout and stderr) until it ends; its exit code.

    For programs a person uses directly (the appliance starts the wizard this way).
    """
    argv = [str(a) for a in argv]
    if os.sep not in argv[0]:
        argv[0] = need_tool(argv[0])
    try:
        return subprocess.call(argv, env=_env(env))
    except OSError as e:
        raise _cannot_start(argv, e) from None


def output(argv: Sequence[str], **kwargs: object) -> str:
    """The standard output of a successful run, as text."""
    return run(argv, **kwargs).stdout.decode(errors="replace")  # type: ignore[arg-type]


def start(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdout: Redirect = subprocess.DEVNULL,
    stderr: Redirect = subprocess.PIPE,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in the background, its stdin a pipe (closing it ends children that read it).

    For helpers that must live as long as something else does (a sleep
    inhibitor, the other end of ``--via``, the demos' second process); the
    caller ends it and waits for it. ``stdout``/``stderr`` as for
    :class:`subprocess.Popen` (None: ours; an open file: that file).
    ``new_session``: its own session, so a Ctrl-C on our terminal does not reach it.
    """
    argv = [str(a) for a in argv]
    if not argv:
        raise RecoveryError("no command to run")
    if os.sep not in argv[0]:
        argv[0] = need_tool(argv[0])
    try:
        return subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=stdout, stderr=stderr, env=_env(env), start_new_session=new_session
        )
    except OSError as e:
        raise _cannot_start(argv, e) from None


def stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """End a child :func:`start` started: close its stdin, then SIGTERM, then SIGKILL after ``grace`` s."""
    if proc.stdin is not None:
        try:
            proc.stdin.close()
        except OSError:  # a broken pipe: it is gone already
            pass
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(grace)
