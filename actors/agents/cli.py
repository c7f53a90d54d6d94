"""The ``cli`` backend: a coding-agent command line run once per step.

The command is a template such as ``qwen --approval-mode plan -p {prompt}``,
split with :mod:`shlex` and run without a shell; ``{prompt}``, ``{model}``,
``{persona}`` and ``{system}`` are replaced inside single argv items, so no
prompt can ever become two arguments or a shell command.

Read-only is enforced where baton knows the tool: a ``qwen`` template must
keep ``--approval-mode plan`` and may not say ``--yolo``/``-y``; a template
whose program is a shell, or a launcher such as ``env`` (through which any
program, with any flag, could run), is refused, as is one handing an
interpreter a placeholder as code (``python -c {prompt}``); and a
substituted value that starts with ``-`` gets a leading space so it cannot be
read as a flag. For any other CLI, making the template read-only (its plan,
sandbox or dry-run mode) is the operator's responsibility.

A task's implementor (DESIGN §12) runs a template of its own
(``BATON_CLI_TASK_COMMAND``, default ``qwen --approval-mode auto-edit -p
{prompt}``) with the task's worktree as working directory: ``task=True``.
It may edit files, so plan mode is not required there, but the same
shells, launchers and interpreter placeholders are refused, and qwen's
``yolo`` (which would run any shell command, past the project's
allow-list) is refused too. Flow steps keep plan mode.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
from typing import IO

from actors import cpus
from actors.agents.base import (
    AgentError,
    AgentRequest,
    AgentResult,
    BackendConfigError,
    Cancelled,
    CancelToken,
    DeltaCallback,
)
from actors.config import DEFAULT_COMMAND as DEFAULT_COMMAND  # its home; re-exported where it was
from actors.config import DEFAULT_TASK_COMMAND as DEFAULT_TASK_COMMAND

_PLACEHOLDER = re.compile(r"\{(prompt|model|persona|system)\}")
_STDERR_TAIL = 20


class CliBackend:
    """Runs a command template per step and streams its stdout line by line."""

    name = "cli"

    def __init__(
        self, command: str = DEFAULT_COMMAND, model: str = "", *, term_grace_s: float = 2.0,
        task: bool = False,
    ) -> None:
        """Parse and check the template; refuse one that lifts qwen's plan mode.

        ``term_grace_s`` is how long a cancelled process group gets between
        SIGTERM and SIGKILL. ``task``: the template of a task's implementor
        (``BATON_CLI_TASK_COMMAND``): edits allowed, qwen's yolo refused.
        Raises :class:`BackendConfigError`.
        """
        setting = "BATON_CLI_TASK_COMMAND" if task else "BATON_CLI_COMMAND"
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise BackendConfigError(
                f"{setting} {command!r} cannot be parsed: {exc}"
            ) from exc
        if not argv:
            raise BackendConfigError(f"{setting} is empty")
        if _PLACEHOLDER.search(argv[0]):
            raise BackendConfigError(
                f"{setting} {command!r}: the executable must be fixed, "
                "not a placeholder"
            )
        _refuse_launchers(argv, command, setting)
        if task:
            _refuse_yolo(argv, command)
        else:
            _require_plan_mode(argv, command)
        self.setting = setting
        self.task = task
        self.command = command
        self.default_model = model
        self.term_grace_s = term_grace_s
        self._argv = argv
        self._prompt_on_stdin = not any("{prompt}" in item for item in argv)
        self._system_placed = any("{system}" in item for item in argv)

    def run(
        self, request: AgentRequest, on_delta: DeltaCallback, cancel: CancelToken
    ) -> AgentResult:
        """Run the command; stream stdout lines to ``on_delta``; return all stdout.

        Without a ``{prompt}`` placeholder the prompt is written to stdin.
        Raises :class:`Cancelled` (after killing the process group) when
        ``cancel`` fires, :class:`AgentError` when the executable is missing or
        exits non-zero.
        """
        model = request.model or self.default_model
        prompt = request.prompt
        if not self._system_placed and request.system.strip():
            prompt = f"{request.system.rstrip()}\n\n{request.prompt}"
        values = {"prompt": prompt, "model": model, "persona": request.persona,
                  "system": request.system}
        argv = [_substitute(item, values) for item in self._argv]
        exe = argv[0]
        if shutil.which(exe) is None:
            raise AgentError(
                f"the cli backend cannot find the executable {exe!r} "
                f"(install it or fix {self.setting})"
            )
        if cancel.cancelled:
            raise Cancelled(f"step {request.step_id} was cancelled before the call")
        try:
            with cpus.unpinned():  # not on a server's one CPU (actors.cpus)
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE if self._prompt_on_stdin else subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    encoding="utf-8",
                    errors="replace",
                    # A session of its own, so cancel can kill the whole group,
                    # grandchildren included.
                    start_new_session=True,
                    cwd=request.workdir or None,  # a run with a workspace runs in its root (DESIGN §11)
                )
        except OSError as exc:
            raise AgentError(
                f"the cli backend cannot start {exe!r}: {exc} (fix {self.setting})"
            ) from exc
        killer = _GroupKiller(proc, self.term_grace_s)
        unregister = cancel.on_cancel(killer.terminate)
        stderr_tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL)
        stdout_closed = threading.Event()
        # Both pipes are drained off this thread so a chatty stderr or a big
        # prompt on stdin can never deadlock against the stdout reader.
        helpers = [
            threading.Thread(target=_drain, args=(proc.stderr, stderr_tail), daemon=True),
            threading.Thread(target=_end_leftovers, args=(proc, stdout_closed, killer),
                             daemon=True),
        ]
        if self._prompt_on_stdin:
            helpers.append(threading.Thread(target=_feed, args=(proc.stdin, prompt), daemon=True))
        for t in helpers:
            t.start()
        pieces: list[str] = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                pieces.append(line)
                on_delta(line)
            stdout_closed.set()
            returncode = proc.wait()
        finally:
            stdout_closed.set()
            unregister()
            if proc.poll() is None or _group_alive(proc.pid):
                # on_delta raised, or the command left processes behind: no
                # process outlives its step.
                killer.terminate()
                proc.wait()
            for t in helpers:
                t.join(timeout=self.term_grace_s + 5)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        if cancel.cancelled:
            raise Cancelled(f"step {request.step_id} was cancelled")
        if returncode != 0:
            how = (f"was killed by signal {-returncode}" if returncode < 0
                   else f"exited with code {returncode}")
            tail = "".join(stderr_tail).strip() or "(no stderr)"
            raise AgentError(f"the cli backend's {exe!r} {how}; last stderr lines:\n{tail}")
        return AgentResult(
            output="".join(pieces),
            usage={},
            model=model or f"{os.path.basename(exe)} (its default model)",
        )

    def close(self) -> None:
        """Nothing to release: each call owns its process."""


# Programs that run a command line (a shell), or another program named in their
# arguments: through them a prompt could become a command, and the agent's own
# flags (qwen's --yolo) escape the check below.
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "csh", "tcsh", "fish", "yash", "rbash",
                     "busybox", "pwsh", "powershell", "cmd"})
_LAUNCHERS = frozenset({"env", "xargs", "nohup", "nice", "ionice", "timeout", "stdbuf", "setsid", "sudo", "doas",
                        "su", "runuser", "chroot", "time", "watch", "exec", "command", "eval", "flock", "script"})
# Interpreters: the options whose value is code to run, and the other options that take a value
# (so that the word after them is not mistaken for the script, after which options are the script's).
_INTERPRETERS: tuple[tuple[re.Pattern[str], frozenset[str], frozenset[str]], ...] = (
    (re.compile(r"^(python|pypy)[0-9.]*$"), frozenset({"-c"}), frozenset({"-W", "-X"})),
    (re.compile(r"^perl[0-9.]*$"), frozenset({"-e", "-E"}), frozenset({"-I"})),
    (re.compile(r"^ruby$"), frozenset({"-e"}), frozenset({"-I", "-r"})),
    (re.compile(r"^(lua[0-9.]*|Rscript)$"), frozenset({"-e"}), frozenset({"-l"})),
    (re.compile(r"^osascript$"), frozenset({"-e"}), frozenset({"-l"})),
    (re.compile(r"^(node|nodejs|deno|bun)$"), frozenset({"-e", "-p", "--eval", "--print"}),
     frozenset({"-r", "--require", "--import", "--loader"})),
    (re.compile(r"^php[0-9.]*$"), frozenset({"-r"}), frozenset({"-d", "-c"})),
)


def _refuse_launchers(argv: list[str], command: str, setting: str = "BATON_CLI_COMMAND") -> None:
    """Refuse a template whose program is a shell or runs another program, or that hands an interpreter code.

    ``sh -c {prompt}`` runs the model's prompt (and anything injected into it)
    as a command line; ``env qwen --yolo`` hides qwen, and its flags, from
    the plan-mode check. Name the agent's own program instead.
    """
    exe = os.path.basename(argv[0]).removesuffix(".exe")
    if exe in _SHELLS:
        raise BackendConfigError(
            f"{setting} {command!r} runs a shell ({exe}): a prompt could become a command line; "
            f"name the agent's own program (e.g. {DEFAULT_COMMAND})")
    if exe in _LAUNCHERS:
        raise BackendConfigError(
            f"{setting} {command!r} runs the agent through {exe!r}, which runs whatever its arguments "
            f"name and hides the agent's flags from baton's checks; name the agent's own program "
            f"(e.g. {DEFAULT_COMMAND})")
    for name, code_options, value_options in _INTERPRETERS:
        if name.match(exe):
            _refuse_code_placeholder(argv, command, exe, code_options, value_options, setting)


def _refuse_code_placeholder(argv: list[str], command: str, exe: str, code_options: frozenset[str],
                             value_options: frozenset[str], setting: str) -> None:
    i = 1
    while i < len(argv) and argv[i].startswith("-"):  # the interpreter's options, up to its script
        option = argv[i]
        value = argv[i + 1] if i + 1 < len(argv) else ""
        attached = next((o for o in code_options if option.startswith(o + "=" if o.startswith("--") else o)
                         and option != o), None)
        if attached is not None:  # -c'code', --eval=code
            option, value = attached, option[len(attached):].removeprefix("=")
        if option in code_options:
            if _PLACEHOLDER.search(value):
                raise BackendConfigError(
                    f"{setting} {command!r} hands {exe} a placeholder as code to run ({option} "
                    f"{value}): a prompt would be executed; pass it as an argument or on stdin instead")
            return  # the code given ends the interpreter's options
        i += 2 if option in value_options else 1


def _require_plan_mode(argv: list[str], command: str) -> None:
    """Refuse a qwen template that could let a flow step edit files or run tools."""
    exe = os.path.basename(argv[0])
    if exe not in ("qwen", "qwen.exe"):
        return
    modes: list[str] = []
    for i, item in enumerate(argv[1:], start=1):
        if item in ("--yolo", "-y") or item.startswith("--yolo="):
            raise BackendConfigError(
                f"BATON_CLI_COMMAND {command!r} uses {item}: flow steps run qwen in "
                "plan mode only; use --approval-mode plan"
            )
        if item == "--approval-mode":
            modes.append(argv[i + 1] if i + 1 < len(argv) else "")
        elif item.startswith("--approval-mode="):
            modes.append(item.split("=", 1)[1])
    if not modes or any(mode != "plan" for mode in modes):
        raise BackendConfigError(
            f"BATON_CLI_COMMAND {command!r} must run qwen with --approval-mode plan "
            f"(found {modes or 'no approval mode'}); plan mode cannot be turned off "
            "for flow steps"
        )


def _refuse_yolo(argv: list[str], command: str) -> None:
    """Refuse a qwen task template in yolo mode: it would run any shell command, past the project's allow-list."""
    exe = os.path.basename(argv[0])
    if exe not in ("qwen", "qwen.exe"):
        return
    for i, item in enumerate(argv[1:], start=1):
        mode = (argv[i + 1] if i + 1 < len(argv) else "") if item == "--approval-mode" else (
            item.split("=", 1)[1] if item.startswith("--approval-mode=") else "")
        if item in ("--yolo", "-y") or item.startswith("--yolo=") or mode == "yolo":
            raise BackendConfigError(
                f"BATON_CLI_TASK_COMMAND {command!r} runs qwen in yolo mode ({item}{' ' + mode if mode else ''}): "
                "it would run any command, past the project's allow-list; use --approval-mode auto-edit")


def _substitute(item: str, values: dict[str, str]) -> str:
    # One pass, so a prompt that contains "{model}" is left as written.
    whole = _PLACEHOLDER.fullmatch(item)
    out = _PLACEHOLDER.sub(lambda m: values[m.group(1)], item)
    if whole and out.startswith("-"):
        # A whole-item value must stay a value: "-p --yolo..." would otherwise
        # be parsed as a flag (and could lift plan mode).
        out = " " + out
    return out


def _drain(stream: IO[str] | None, tail: collections.deque[str]) -> None:
    if stream is None:
        return
    for line in stream:
        tail.append(line)


def _feed(stream: IO[str] | None, text: str) -> None:
    if stream is None:
        return
    try:
        stream.write(text)
        stream.close()
    except (BrokenPipeError, ValueError, OSError):
        pass  # the process exited without reading its input; its exit code tells why


def _end_leftovers(
    proc: subprocess.Popen[str], stdout_closed: threading.Event, killer: _GroupKiller
) -> None:
    # The command exited but something it started still holds stdout open:
    # without this the step would wait on that process forever.
    proc.wait()
    if not stdout_closed.wait(killer.grace_s):
        killer.terminate()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class _GroupKiller:
    """SIGTERM a process group now, SIGKILL whatever is left after a grace period."""

    def __init__(self, proc: subprocess.Popen[str], grace_s: float) -> None:
        self._proc = proc
        self.grace_s = grace_s
        self._lock = threading.Lock()
        self._started = False

    def terminate(self) -> None:
        """Start ending the group; returns at once (the SIGKILL comes later)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        self._signal(signal.SIGTERM)
        # Unconditional: a grandchild that ignores SIGTERM may have let go of
        # stdout, so the end of our read says nothing about the group.
        timer = threading.Timer(self.grace_s, self._signal, args=(signal.SIGKILL,))
        timer.daemon = True
        timer.start()

    def _signal(self, sig: signal.Signals) -> None:
        # ProcessLookupError: the whole group is already gone.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)
