"""The cli backend running real processes: argv, streaming, errors, plan mode, cancel."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from actors.agents import (
    DEFAULT_COMMAND,
    AgentError,
    AgentRequest,
    BackendConfigError,
    Cancelled,
    CancelToken,
    CliBackend,
    make_backend,
)

PY = shlex.quote(sys.executable)

ECHO_ARGV = """
import json, sys
for i, arg in enumerate(sys.argv[1:]):
    print(json.dumps([i, arg]), flush=True)
"""


def request(prompt: str = "hello", system: str = "You are a reviewer.",
            model: str = "") -> AgentRequest:
    return AgentRequest(run_id="r1", step_id="s1", attempt=1, persona="reviewer",
                        system=system, prompt=prompt, model=model)


def script(tmp_path: Path, body: str, name: str = "agent.py") -> str:
    path = tmp_path / name
    path.write_text(body)
    return shlex.quote(str(path))


def argv_of(output: str) -> list[str]:
    return [json.loads(line)[1] for line in output.splitlines()]


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll a condition the OS gives no event for (a process being gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie is dead, merely not yet reaped


def test_streams_stdout_lines_and_returns_all_of_it(tmp_path):
    exe = script(tmp_path, "for i in range(3):\n    print(f'line {i}', flush=True)\n")
    backend = CliBackend(f"{PY} {exe}")
    deltas: list[str] = []
    result = backend.run(request(), deltas.append, CancelToken())
    assert deltas == ["line 0\n", "line 1\n", "line 2\n"]
    assert result.output == "line 0\nline 1\nline 2\n"
    assert result.usage == {}


def test_awkward_prompt_arrives_as_one_argv_item(tmp_path):
    exe = script(tmp_path, ECHO_ARGV)
    backend = CliBackend(f"{PY} {exe} --ask {{prompt}}")
    prompt = "it's \"quoted\"; $(rm -rf /) `id` & spaces\nand a {model} line"
    result = backend.run(request(prompt=prompt, system=""), lambda _: None, CancelToken())
    assert argv_of(result.output) == ["--ask", prompt]


def test_system_prompt_is_prepended_unless_placed(tmp_path):
    exe = script(tmp_path, ECHO_ARGV)
    joined = CliBackend(f"{PY} {exe} {{prompt}}").run(request(), lambda _: None, CancelToken())
    assert argv_of(joined.output) == ["You are a reviewer.\n\nhello"]

    placed = CliBackend(f"{PY} {exe} --system {{system}} -m {{model}} --as={{persona}} {{prompt}}",
                        model="qwen3")
    result = placed.run(request(), lambda _: None, CancelToken())
    assert argv_of(result.output) == ["--system", "You are a reviewer.", "-m", "qwen3",
                                      "--as=reviewer", "hello"]
    assert result.model == "qwen3"


def test_a_value_that_looks_like_a_flag_stays_a_value(tmp_path):
    exe = script(tmp_path, ECHO_ARGV)
    backend = CliBackend(f"{PY} {exe} -p {{prompt}}")
    result = backend.run(request(prompt="--yolo", system=""), lambda _: None, CancelToken())
    assert argv_of(result.output) == ["-p", " --yolo"]


def test_without_a_prompt_placeholder_the_prompt_goes_to_stdin(tmp_path):
    exe = script(tmp_path, "import sys\nprint(sys.stdin.read().upper(), end='')\n")
    result = CliBackend(f"{PY} {exe}").run(request(prompt="x" * 200_000, system=""),
                                          lambda _: None, CancelToken())
    assert result.output == "X" * 200_000


def test_nonzero_exit_reports_code_and_last_stderr_lines(tmp_path):
    exe = script(tmp_path, "import sys\nfor i in range(40):\n    print(f'err {i}', "
                           "file=sys.stderr)\nprint('partial')\nsys.exit(3)\n")
    with pytest.raises(AgentError) as err:
        CliBackend(f"{PY} {exe}").run(request(), lambda _: None, CancelToken())
    message = str(err.value)
    assert "exited with code 3" in message
    assert "err 39" in message and "err 0\n" not in message


def test_missing_executable_names_it_and_the_setting():
    backend = CliBackend("baton-no-such-agent-cli -p {prompt}")
    with pytest.raises(AgentError) as err:
        backend.run(request(), lambda _: None, CancelToken())
    assert "'baton-no-such-agent-cli'" in str(err.value)
    assert "BATON_CLI_COMMAND" in str(err.value)


# The grandchild ignores SIGTERM and lets go of stdout once it has said its
# pid, so the end of the reader's stream says nothing about it: only the
# group SIGKILL after the grace period ends it. A "stubborn" child ignores
# SIGTERM too and keeps stdout open.
GRANDCHILD = (
    "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print(os.getpid(), flush=True); os.close(1); time.sleep(60)"
)
CHILD_AND_GRANDCHILD = f"""
import os, signal, subprocess, sys, time
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen([{sys.executable!r}, "-c", {GRANDCHILD!r}])
print(os.getpid(), flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("mode", ["polite", "stubborn"])
def test_cancel_kills_the_whole_process_group(tmp_path, mode):
    exe = script(tmp_path, CHILD_AND_GRANDCHILD)
    backend = CliBackend(f"{PY} {exe} {mode}", term_grace_s=0.3)
    token = CancelToken()
    pids: list[int] = []
    got_pids = threading.Event()

    def on_delta(text: str) -> None:
        pids.append(int(text))
        if len(pids) == 2:
            got_pids.set()

    canceller = threading.Thread(target=lambda: got_pids.wait(10) and token.cancel())
    canceller.start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        backend.run(request(), on_delta, token)
    canceller.join(5)
    assert time.monotonic() - started < 5
    assert len(pids) == 2
    for pid in pids:
        assert wait_until(lambda pid=pid: not alive(pid)), f"process {pid} outlived the cancel"


LEAVES_A_DAEMON = f"""
import subprocess, sys
keep = sys.argv[1] == "holds-stdout"
subprocess.Popen([{sys.executable!r}, "-c",
    "import os, sys, time; print(os.getpid(), flush=True); "
    "keep = sys.argv[1] == 'holds-stdout'; keep or os.close(1); time.sleep(60)", sys.argv[1]])
print("done", flush=True)
"""


@pytest.mark.parametrize("mode", ["holds-stdout", "lets-go"])
def test_a_command_that_exits_leaves_no_process_behind(tmp_path, mode):
    exe = script(tmp_path, LEAVES_A_DAEMON)
    started = time.monotonic()
    result = CliBackend(f"{PY} {exe} {mode}", term_grace_s=0.3).run(
        request(), lambda _: None, CancelToken())
    assert time.monotonic() - started < 5
    lines = result.output.split()
    assert "done" in lines
    daemon = next(int(word) for word in lines if word.isdigit())
    assert wait_until(lambda: not alive(daemon)), "the left-behind process survived the step"


def test_cancel_before_the_call_starts_nothing(tmp_path):
    marker = tmp_path / "ran"
    exe = script(tmp_path, f"open({str(marker)!r}, 'w').close()\n")
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        CliBackend(f"{PY} {exe}").run(request(), lambda _: None, token)
    assert not marker.exists()


@pytest.mark.parametrize("command", [
    "qwen -p {prompt}",
    "qwen --approval-mode yolo -p {prompt}",
    "qwen --approval-mode=auto-edit -p {prompt}",
    "qwen --approval-mode plan --yolo -p {prompt}",
    "qwen -y --approval-mode plan -p {prompt}",
    "qwen --approval-mode plan --approval-mode yolo -p {prompt}",
    "/usr/local/bin/qwen --approval-mode default -p {prompt}",
])
def test_qwen_without_plan_mode_is_refused(command):
    with pytest.raises(BackendConfigError, match="plan"):
        CliBackend(command)
    with pytest.raises(ValueError):
        make_backend("cli", cli_command=command)


def test_default_template_runs_qwen_in_plan_mode(tmp_path):
    fake_qwen = tmp_path / "qwen"
    fake_qwen.write_text(f"#!{sys.executable}\n{ECHO_ARGV}")
    fake_qwen.chmod(0o755)
    command = DEFAULT_COMMAND.replace("qwen", shlex.quote(str(fake_qwen)), 1)
    assert CliBackend(DEFAULT_COMMAND).command == DEFAULT_COMMAND  # accepted as shipped
    result = CliBackend(command).run(request(system=""), lambda _: None, CancelToken())
    assert argv_of(result.output) == ["--approval-mode", "plan", "-p", "hello"]
    assert result.model == "qwen (its default model)"
    CliBackend(f"{shlex.quote(str(fake_qwen))} --approval-mode=plan -p {{prompt}}")


def test_placeholder_as_executable_is_refused():
    with pytest.raises(BackendConfigError, match="executable"):
        CliBackend("{model} -p {prompt}")


def test_on_delta_failure_leaves_no_process_behind(tmp_path):
    exe = script(tmp_path, "import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(60)\n")
    pids: list[int] = []

    def explode(text: str) -> None:
        pids.append(int(text))
        raise RuntimeError("consumer broke")

    with pytest.raises(RuntimeError):
        CliBackend(f"{PY} {exe}", term_grace_s=0.3).run(request(), explode, CancelToken())
    assert pids and not alive(pids[0])
    assert os.path.exists("/proc/self")  # the alive() check above is meaningful here


@pytest.mark.parametrize("command, why", [
    ("sh -c {prompt}", "runs a shell (sh)"),
    ("/bin/bash -c 'qwen --approval-mode plan -p {prompt}'", "runs a shell (bash)"),
    ("bash", "runs a shell (bash)"),
    ("env qwen --yolo -p {prompt}", "through 'env'"),
    ("/usr/bin/env qwen --approval-mode plan -p {prompt}", "through 'env'"),
    ("nohup qwen -y -p {prompt}", "through 'nohup'"),
    ("python3 -c {prompt}", "as code to run"),
    ("python3 -W ignore -c {prompt}", "as code to run"),
    ("python3 -c{prompt}", "as code to run"),
    ("node --eval={prompt}", "as code to run"),
    ("perl -e 'print q({prompt})'", "as code to run"),
])
def test_shells_launchers_and_code_from_a_prompt_are_refused(command, why):
    with pytest.raises(BackendConfigError, match="BATON_CLI_COMMAND") as caught:
        CliBackend(command)
    assert why in str(caught.value)
    with pytest.raises(ValueError):
        make_backend("cli", cli_command=command)


def test_a_script_after_the_interpreter_takes_its_own_options(tmp_path):
    exe = script(tmp_path, ECHO_ARGV)
    result = CliBackend(f"{PY} -u {exe} -c {{prompt}}").run(request(system=""), lambda _: None, CancelToken())
    assert argv_of(result.output) == ["-c", "hello"]  # the script's -c: a value, never python's code


def test_a_run_with_a_workspace_runs_the_command_in_its_root(tmp_path: Path) -> None:
    exe = script(tmp_path, "import os\nprint(os.getcwd(), flush=True)\n")
    root = tmp_path / "repo"
    root.mkdir()
    backend = CliBackend(f"{PY} {exe} {{prompt}}")
    inside = dataclasses.replace(request(), workdir=str(root))
    assert backend.run(inside, lambda _: None, CancelToken()).output.strip() == str(root)
    assert backend.run(request(), lambda _: None, CancelToken()).output.strip() == os.getcwd()
