"""The write tools in a real task worktree: the read tools' confinement rules, now for writes, and the rest.

Beside the worktree lies ``outside/`` with a secret; the worktree holds
every trap: a symlinked directory and file leading out, a symlink that stays
inside, a hard link to the outside secret, its own ``.git`` file. After every
escape attempt the outside is byte for byte what it was.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from actors.agents.base import CancelToken, DeltaCallback
from actors.agents.safe_exit import SafeExit, SafeExitObserver
from actors.agents.toolcalls import ModelTurn, ToolCall
from actors.agents.toolloop import CallRecord, LoopObserver, TurnRequest, run_tool_loop
from actors.workspace import confine
from actors.workspace.errors import Rule
from actors.workspace.results import Outcome, ToolResult
from actors.workspace.task_tools import TaskCaps, TaskToolbox
from actors.workspace.tools import Caps
from actors.workspace.worktrees import RunWorktrees
from tests.integration.task_repo import TaskRepo, make_task_repo

SECRET = "SECRET-4b1e-outside-the-worktree"
PY = sys.executable


@pytest.fixture
def repo(tmp_path: Path) -> TaskRepo:
    return make_task_repo(tmp_path, {"app.py": "def greet():\n    return 'hello'\n", "src/util.py": "X = 1\nY = 1\n",
                                     "run.sh": "#!/bin/sh\necho run\n", "README.md": "# demo\n"})


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    out.mkdir()
    (out / "secret.txt").write_text(SECRET + "\n")
    return out


@pytest.fixture
def machinery(repo: TaskRepo) -> RunWorktrees:
    m = repo.machinery("RT")
    m.create_integration("main")
    m.add_task("t")
    return m


@pytest.fixture
def tools(machinery: RunWorktrees, outside: Path, repo: TaskRepo) -> TaskToolbox:
    root = machinery.task_path("t")
    (root / "run.sh").chmod(0o755)
    os.symlink(str(outside), root / "escape")
    os.symlink(str(outside / "secret.txt"), root / "secret_link.txt")
    os.symlink("src", root / "docs")
    os.link(outside / "secret.txt", root / "hard.txt")
    allow = [[PY, "-c"], ["git", "status"]]
    return TaskToolbox(machinery, "t", allow, caps=Caps(max_file_bytes=64 * 1024),
                       task_caps=TaskCaps(run_timeout_s=20, max_run_output=2_000))


def snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def call(tools: TaskToolbox, name: str, **args: object) -> ToolResult:
    return tools.call(name, json.dumps(args))


ESCAPES = [
    ("/etc/passwd", Rule.ABSOLUTE_PATH), ("../x.txt", Rule.OUTSIDE_ROOT), ("src/../../x.txt", Rule.OUTSIDE_ROOT),
    ("..", Rule.OUTSIDE_ROOT), (".git", Rule.GIT_DIR), (".git/config", Rule.GIT_DIR), (".GIT/x", Rule.GIT_DIR),
    ("src/.git/hooks/pre-commit", Rule.GIT_DIR), ("escape/secret.txt", Rule.SYMLINK_WRITE),
    ("escape/new.txt", Rule.SYMLINK_WRITE), ("secret_link.txt", Rule.SYMLINK_WRITE),
    ("docs/util.py", Rule.SYMLINK_WRITE), ("", Rule.INVALID_PATH), ("a\0b", Rule.INVALID_PATH),
    (".baton-write-0011.tmp", Rule.INVALID_PATH), ("src", Rule.NOT_A_FILE),
]


@pytest.mark.parametrize(("path", "rule"), ESCAPES)
def test_write_file_refuses_each_way_out_by_name(tools, outside, path, rule):
    before = snapshot(outside)
    git_file = (tools.read.root / ".git").read_text()
    result = call(tools, "write_file", path=path, content="pwned\n")
    assert (result.outcome, result.error) == (Outcome.ERROR, rule.value), result.text
    assert snapshot(outside) == before
    assert (tools.read.root / ".git").read_text() == git_file


@pytest.mark.parametrize(("path", "rule"), [e for e in ESCAPES if e[1] is not Rule.NOT_A_FILE])
def test_edit_file_refuses_each_way_out_by_name(tools, outside, path, rule):
    before = snapshot(outside)
    result = call(tools, "edit_file", path=path, old=SECRET, new="pwned")
    assert (result.outcome, result.error) == (Outcome.ERROR, rule.value), result.text
    assert snapshot(outside) == before


def test_a_hard_link_to_an_outside_file_is_replaced_not_written_through(tools, outside):
    assert call(tools, "write_file", path="hard.txt", content="mine\n").ok
    assert (outside / "secret.txt").read_text() == SECRET + "\n"
    assert (tools.read.root / "hard.txt").read_text() == "mine\n"
    os.link(outside / "secret.txt", tools.read.root / "hard2.txt")
    assert call(tools, "edit_file", path="hard2.txt", old="SECRET", new="MINE").ok
    assert (outside / "secret.txt").read_text() == SECRET + "\n"


def test_a_directory_swapped_for_a_symlink_after_the_path_check_is_not_followed(tools, outside, monkeypatch):
    root = tools.read.root
    real_check = confine.check_relative

    def check_then_swap(path: str) -> str:
        norm = real_check(path)
        if (root / "src").is_dir() and not (root / "src").is_symlink():
            os.rename(root / "src", root / "src.moved")
            os.symlink(str(outside), root / "src")
        return norm

    monkeypatch.setattr(confine, "check_relative", check_then_swap)
    result = call(tools, "write_file", path="src/util.py", content="pwned\n")
    assert result.error == Rule.SYMLINK_WRITE.value
    assert snapshot(outside) == {"secret.txt": (SECRET + "\n").encode()}


def test_writes_are_atomic_keep_the_mode_and_make_parents(tools):
    root = tools.read.root
    assert call(tools, "write_file", path="run.sh", content="#!/bin/sh\necho changed\n").ok
    assert os.access(root / "run.sh", os.X_OK)
    result = call(tools, "write_file", path="new/deep/file.txt", content="x\n")
    assert result.ok and "new file" in result.text
    assert (root / "new" / "deep" / "file.txt").read_text() == "x\n"
    assert not [p for p in root.rglob(".baton-write-*")]


def test_size_caps_hold_for_writes_and_edits(tools):
    big = "x" * (64 * 1024 + 1)
    assert call(tools, "write_file", path="big.txt", content=big).error == Rule.TOO_LARGE.value
    assert not (tools.read.root / "big.txt").exists()
    assert call(tools, "write_file", path="edge.txt", content="y" * 1000).ok
    grow = call(tools, "edit_file", path="edge.txt", old="y" * 1000, new=big)
    assert grow.error == Rule.TOO_LARGE.value
    assert (tools.read.root / "edge.txt").read_text() == "y" * 1000


def test_edit_file_needs_old_exactly_once_and_says_which_way_it_failed(tools):
    missing = call(tools, "edit_file", path="src/util.py", old="Z = 3", new="Z = 4")
    assert missing.error == "old-not-found"
    several = call(tools, "edit_file", path="src/util.py", old="= 1", new="= 2")
    assert several.error == "old-not-unique" and "2 times" in several.text and "lines 1, 2" in several.text
    same = call(tools, "edit_file", path="src/util.py", old="X", new="X")
    assert same.error == "no-change"
    done = call(tools, "edit_file", path="src/util.py", old="Y = 1", new="Y = 10")
    assert done.ok and "line 2" in done.text
    assert (tools.read.root / "src" / "util.py").read_text() == "X = 1\nY = 10\n"
    (tools.read.root / "blob.bin").write_bytes(b"\0\1\2")
    assert call(tools, "edit_file", path="blob.bin", old="a", new="b").error == Rule.BINARY.value
    assert call(tools, "edit_file", path="nope.txt", old="a", new="b").error == Rule.NOT_FOUND.value


def test_run_starts_only_allowed_argv_without_a_shell(tools, tmp_path):
    marker = tmp_path / "shell-ran"
    refused = call(tools, "run", argv=["rm", "-rf", "/"])
    assert refused.error == "not-allowed" and "allowed:" in refused.text
    assert call(tools, "run", argv=["git", "push"]).error == "not-allowed"
    assert call(tools, "run", argv=[PY, "-m", "pytest"]).error == "not-allowed"
    # `;` and `touch` are arguments of python, not a second command.
    out = call(tools, "run", argv=[PY, "-c", "import sys; print(sys.argv[1:])", ";", "touch", str(marker)])
    assert out.ok and "[';', 'touch'" in out.text and not marker.exists()
    failing = call(tools, "run", argv=[PY, "-c", "import sys, os; print(os.getcwd()); sys.exit(3)"])
    assert failing.ok and failing.text.startswith("exit code 3")  # a failing command is an answer
    assert str(tools.read.root) in failing.text  # it ran in the worktree
    assert call(tools, "git_diff").ok  # the read tools are there too


def test_run_output_is_capped_head_and_tail(tools):
    out = call(tools, "run", argv=[PY, "-c", "print('START'); print('x' * 50000); print('THE END')"])
    assert out.ok and out.truncated
    assert "START" in out.text and "THE END" in out.text and "bytes of output not shown" in out.text
    assert len(out.text) < 3_000
    assert tools.signals.runs[-1].total_bytes > 50_000


def test_run_has_a_timeout_and_leaves_no_process_behind(tools, machinery, tmp_path):
    pidfile = tmp_path / "child.pid"
    quick = TaskToolbox(machinery, "t", [[PY, "-c"]], task_caps=TaskCaps(run_timeout_s=1.0))
    script = (f"import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              f"open({str(pidfile)!r}, 'w').write(str(p.pid)); import time; time.sleep(60)")
    started = time.monotonic()
    out = call(quick, "run", argv=[PY, "-c", script])
    assert out.error == "timeout" and time.monotonic() - started < 10
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.02)
    assert not _alive(child)


def test_a_command_that_exits_leaving_a_child_does_not_hang_and_the_child_is_killed(tools, tmp_path):
    pidfile = tmp_path / "bg.pid"
    script = (f"import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              f"open({str(pidfile)!r}, 'w').write(str(p.pid)); print('left a child')")
    started = time.monotonic()
    out = call(tools, "run", argv=[PY, "-c", script])
    assert out.ok and "left a child" in out.text and time.monotonic() - started < 10
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.02)
    assert not _alive(child)


def test_commands_get_no_secret_from_batons_environment(tools, monkeypatch):
    monkeypatch.setenv("BATON_OPENAI_API_KEY", "sk-very-secret-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    fresh = TaskToolbox(tools.worktrees, "t", tools.allow)
    out = call(fresh, "run", argv=[PY, "-c", "import os; print(sorted(os.environ.items()))"])
    assert out.ok and "sk-very-secret-key" not in out.text and "aws-secret" not in out.text
    assert "'PATH'" in out.text


def test_commit_puts_the_task_id_in_the_message(machinery, repo):
    machinery.add_task("c")
    tools = TaskToolbox(machinery, "c", [])
    assert call(tools, "commit", message="nothing yet").error == "nothing-to-commit"
    call(tools, "write_file", path="feature.py", content="F = 1\n")
    out = call(tools, "commit", message="add the feature\n\nBecause the task asks for it.")
    assert out.ok and "c: add the feature" in out.text and "1 files, +1 -0" in out.text
    body = repo.git("log", "-1", "--format=%B", "baton/RT/c")
    assert body == "c: add the feature\n\nBecause the task asks for it.\n\nBaton-Task: c\nBaton-Run: RT\n\n"
    assert repo.git("log", "-1", "--format=%an <%ae>", "baton/RT/c").strip() == "baton <baton@localhost>"
    assert tools.signals.commits[-1].files == ["feature.py"]


def test_notify_and_blocked_are_signals_and_blocked_stops_every_later_call(tools):
    assert call(tools, "notify", level="info", message="halfway").ok
    assert call(tools, "notify", level="blocking", message="which port?").text.startswith("noted (blocking)")
    assert call(tools, "notify", level="loud", message="x").outcome is Outcome.MALFORMED
    assert [(lvl.value, m) for lvl, m in tools.signals.notices] == [("info", "halfway"), ("blocking", "which port?")]
    assert call(tools, "blocked", reason="the schema is not decided").ok
    assert tools.signals.blocked == "the schema is not decided"
    after = call(tools, "write_file", path="late.txt", content="x")
    assert after.outcome is Outcome.NOT_RUN and not (tools.read.root / "late.txt").exists()


def test_malformed_calls_are_answered_like_the_read_tools(tools):
    unknown = tools.call("delete_everything", "{}")
    assert unknown.outcome is Outcome.MALFORMED and unknown.error == "unknown-tool"
    assert "write_file" in unknown.text and "read_file" in unknown.text
    assert tools.call("write_file", "{not json").error == "not-json"
    assert tools.call("edit_file", json.dumps({"path": "a", "old": "", "new": "b"})).error == "bad-arguments"
    assert tools.call("run", json.dumps({"argv": []})).error == "bad-arguments"
    assert tools.call("write_file", json.dumps({"path": "a", "content": "b", "mode": 777})).error == "bad-arguments"
    names = [s["function"]["name"] for s in tools.schemas]
    assert names == ["list_files", "read_file", "search", "git_diff", "git_log", "write_file", "edit_file", "run",
                     "commit", "notify", "blocked"]


class Turns:
    def __init__(self, *answers: ModelTurn) -> None:
        self.answers = list(answers)

    def __call__(self, request: TurnRequest, on_delta: DeltaCallback, cancel: CancelToken) -> ModelTurn:
        return self.answers.pop(0)


class Recorder(LoopObserver):
    def __init__(self) -> None:
        self.results: list[tuple[str, bool]] = []

    def tool_result(self, call: CallRecord, result: ToolResult) -> None:
        self.results.append((call.tool, result.ok))


def test_safe_exit_stops_the_tool_loop_after_the_call_was_recorded(tools):
    turns = Turns(ModelTurn(calls=(ToolCall("c1", "write_file", json.dumps({"path": "w.txt", "content": "w"})),
                                   ToolCall("c2", "blocked", json.dumps({"reason": "need the API key"})),
                                   ToolCall("c3", "write_file", json.dumps({"path": "x.txt", "content": "x"})))),
                  ModelTurn(text="never asked"))
    recorder = Recorder()
    with pytest.raises(SafeExit) as stopped:
        run_tool_loop(system="s", prompt="p", model="m", tools=tools, turn=turns, on_delta=lambda _: None,
                      cancel=CancelToken(), observer=SafeExitObserver(recorder, tools.signals))
    assert stopped.value.reason == "need the API key"
    assert recorder.results == [("write_file", True), ("blocked", True)]
    assert len(turns.answers) == 1 and not (tools.read.root / "x.txt").exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def test_a_temp_file_left_by_a_killed_write_is_never_committed(machinery, repo):
    from actors.workspace.git import TEMP_GLOB
    from actors.workspace.writes import TEMP_PREFIX, TEMP_SUFFIX, is_temp_name

    assert TEMP_GLOB == f"{TEMP_PREFIX}*{TEMP_SUFFIX}" and is_temp_name(TEMP_GLOB.replace("*", "abc"))
    machinery.add_task("k")
    root = machinery.task_path("k")
    (root / "sub").mkdir()
    for leftover in (root / ".baton-write-dead.tmp", root / "sub" / ".baton-write-dead.tmp"):
        leftover.write_text("half a file")
    (root / "sub" / "real.txt").write_text("real\n")
    done = machinery.commit("k", "real work")
    assert done.files == ["sub/real.txt"]
    salvage_dir = machinery.task_path("k")
    (salvage_dir / "more.txt").write_text("more\n")
    cleaned = machinery.remove_task("k")
    assert cleaned.salvaged
    tree = repo.git("ls-tree", "-r", "--name-only", cleaned.salvaged).split()
    assert sorted(tree) == sorted(["README.md", "app.py", "src/util.py", "run.sh", "sub/real.txt", "more.txt"])


@pytest.mark.parametrize("name", ["implementation-specialist", "poc-specialist"])
def test_the_task_personas_name_the_write_tools_and_the_safe_exit(name):
    from actors.agents import persona_text

    text = persona_text(name)
    for word in ("write_file", "edit_file", "run", "commit", "notify", "blocked", "Safe Exit", "worktree", ".git"):
        assert word in text, word
