"""Running an allowed command in a task's worktree: the ``run`` tool and a task's checks (§12).

- **argv, never a shell**: the argv is started as given; ``;``, ``&&``,
  ``$(...)`` are plain words. Whether it may run at all is the project's
  allow-list (:mod:`flows.tasks.allow`), checked by the caller.
- **a timeout, and nothing left behind**: the command runs in a session of
  its own; at the timeout, and also as soon as the command itself exits,
  the whole process group is killed, so a test runner that leaves a server
  or a watcher behind does not outlive the call (nor hold the output pipe).
- **output capped and recorded**: stdout and stderr, interleaved as the
  command wrote them, are kept up to ``max_output_bytes``: the first half
  and the last half (where a test runner puts its summary), with a line
  saying how much was cut between them.
- **an environment without secrets**: only the variables a build needs
  (``PATH``, ``HOME``, locale, ``TMPDIR`` ...) pass from baton's own
  environment; baton's settings, API keys and tokens never reach a command
  an agent chose the arguments of.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from actors import cpus

DEFAULT_TIMEOUT_S = 300.0
DEFAULT_MAX_OUTPUT = 32_000
PASSED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "SHELL",
              "VIRTUAL_ENV", "PYTHONPATH", "GOPATH", "GOCACHE", "CARGO_HOME", "RUSTUP_HOME", "JAVA_HOME",
              "NODE_PATH")
"""What a command inherits from baton's environment (plus every ``LC_*``); everything else stays out."""


@dataclass(frozen=True)
class CommandResult:
    """How a command ended and what it printed (capped)."""

    argv: list[str]
    exit_code: int | None
    """None when it timed out or could not start."""
    output: str
    truncated: bool
    total_bytes: int
    duration_s: float
    timed_out: bool = False
    error: str = ""
    """Why it could not start (no such program, not executable), else ``""``."""

    @property
    def ok(self) -> bool:
        """Exit code 0."""
        return self.exit_code == 0


def command_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a command gets: :data:`PASSED_ENV` and ``LC_*`` from baton's, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k in PASSED_ENV or k.startswith("LC_")}
    env.setdefault("PATH", os.defpath)
    env["CI"] = "1"  # tools then do not prompt, page or animate
    env.update(extra or {})
    return env


def run_command(argv: Sequence[str], cwd: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                max_output_bytes: int = DEFAULT_MAX_OUTPUT, env: Mapping[str, str] | None = None) -> CommandResult:
    """Run ``argv`` in ``cwd`` with a timeout, output capped; never raises for the command's own failure."""
    words = list(argv)
    started = time.monotonic()
    try:
        with cpus.unpinned():  # not on a server's one CPU (actors.cpus)
            proc = subprocess.Popen(words, cwd=cwd, env=dict(env) if env is not None else command_env(),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True)
    except OSError as exc:
        return CommandResult(argv=words, exit_code=None, output="", truncated=False, total_bytes=0,
                             duration_s=time.monotonic() - started,
                             error=f"{words[0]!r} could not be started: {exc.strerror or exc}")
    sink = _Capped(max_output_bytes)
    timed_out = _pump(proc, sink, started + timeout_s)
    if not timed_out:
        # EOF on the pipe comes a moment before the leader's exit: let it exit on its own first,
        # or the kill below would turn a clean exit into -9 (seen: a passing check recorded as failing).
        try:
            proc.wait(timeout=max(0.0, started + timeout_s - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True  # it closed its output but did not exit in time
    _kill_group(proc.pid)  # children it left behind go with it
    try:
        code = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL was sent
        code = None
    assert proc.stdout is not None
    proc.stdout.close()
    text, truncated = sink.text()
    if timed_out:
        text += f"\n[killed: no exit within {timeout_s:g} s]"
    return CommandResult(argv=words, exit_code=None if timed_out else code, output=text, truncated=truncated,
                         total_bytes=sink.total, duration_s=time.monotonic() - started, timed_out=timed_out)


def _pump(proc: subprocess.Popen[bytes], sink: _Capped, deadline: float) -> bool:
    """Read output until EOF, the leader's exit (then what is buffered) or the deadline; True on timeout."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            if not sel.select(timeout=min(left, 0.05)):
                if proc.poll() is not None:
                    # The command ended; a child it left may still hold the pipe:
                    # take what is there now and stop (the group is killed next).
                    _drain(fd, sink)
                    return False
                continue
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                return False
            sink.add(chunk)


def _drain(fd: int, sink: _Capped) -> None:
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except (BlockingIOError, OSError):
            return
        if not chunk:
            return
        sink.add(chunk)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _Capped:
    """Keeps the first and the last ``cap/2`` bytes of a stream, and counts the rest."""

    def __init__(self, cap: int) -> None:
        self.half = max(cap // 2, 1)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > self.half:
                del self.tail[: len(self.tail) - self.half]

    def text(self) -> tuple[str, bool]:
        kept = len(self.head) + len(self.tail)
        head = self.head.decode("utf-8", errors="replace")
        if kept >= self.total:
            return head + self.tail.decode("utf-8", errors="replace"), False
        cut = self.total - kept
        tail = self.tail.decode("utf-8", errors="replace")
        return f"{head}\n[cut: {cut:,} of {self.total:,} bytes of output not shown]\n{tail}", True
