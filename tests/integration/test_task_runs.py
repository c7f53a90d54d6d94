"""Task runs end to end (DESIGN §12): the engine, a real git repository, the scripted OpenAI-compatible server.

Each task's implementor and reviewer are scripted by a marker of their
first message (``implementing task `x``` / ``Review task `x```), so the
tasks of one run can share a model and run in parallel.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from actors.agents.chat_turn import ChatTurns
from actors.config import EngineConfig
from actors.engine import Engine
from actors.task_attempt import TaskEnv
from eventstore import open_store
from flows.catalog import FlowRegistry
from flows.events import (
    TaskBlocked,
    TaskChecked,
    TaskCleanedUp,
    TaskDone,
    TaskMergeConflicted,
    TaskMerged,
    TaskMessaged,
    TaskRebased,
    stream_of,
)
from flows.tasks import load_task_graph
from flows.tasks.events import TaskStatus
from flows.tasks.launch import task_run_launched
from tests.integration.scripted_llm import Call, ScriptedLLM, TextTurn, ToolTurn
from tests.integration.task_repo import TaskRepo, make_task_repo

MODEL = "coder"
APPROVE = TextTurn("---\nrecommendation: approve\n---\nLooks right.")


def task_file(tid: str, deps: str = "", checks: str = "", body: str = "") -> str:
    dep_line = f"depends_on: {deps}\n" if deps else ""
    check_line = f"checks: {checks}\n" if checks else ""
    return (f"---\nid: {tid}\ntitle: Task {tid}\nagent: implementation-specialist\n{dep_line}{check_line}---\n"
            f"{body or f'Write {tid}.txt.'}\n")


def writes(tid: str, path: str, content: str) -> list:
    """An implementor that writes one file, commits, and says it is done."""
    return [ToolTurn([Call("write_file", {"path": path, "content": content}),
                      Call("commit", {"message": f"add {path}"})]), TextTurn(f"{tid} done")]


@pytest.fixture
def llm():
    server = ScriptedLLM().start()
    yield server
    server.stop()


@pytest.fixture
def repo(tmp_path) -> TaskRepo:
    return make_task_repo(tmp_path)


def make_engine(tmp_path: Path, repo: TaskRepo, llm: ScriptedLLM, *, slots: int = 4) -> Engine:
    store = open_store(f"sqlite:///{tmp_path / 'baton.db'}")
    env = TaskEnv(worktrees_dir=repo.worktrees, turn=ChatTurns(llm.base_url), run_timeout_s=30.0, git_env=repo.env)
    return Engine(store, FlowRegistry([]), EngineConfig(agent_slots=slots, backend="openai", model=MODEL),
                  tasks=env).start()


def launch(engine: Engine, repo: TaskRepo, files: dict[str, str], *, allow=(("ls",),), max_rounds: int = 3) -> str:
    graph = load_task_graph(files.items(), allow=[list(a) for a in allow])
    event = task_run_launched(graph, run_id=f"T{abs(hash(tuple(files))) % 10**8:08d}", now=engine.clock.now(),
                              project_id="demo", repo=str(repo.root), allow=allow, base="main", target="main",
                              max_rounds=max_rounds, model=MODEL, backend="openai", launched_by="tester")
    return engine.launch_tasks(event).run_id


def events_of(engine: Engine, run_id: str) -> list:
    from flows.codec import decode
    return [decode(r.type, r.data, r.metadata.get("schema_version", 1))
            for r in engine.store.read_stream(stream_of(run_id))]


def test_a_diamond_runs_in_worktrees_merges_back_and_leaves_only_the_integration_branch(tmp_path, repo, llm):
    files = {"tasks/a.md": task_file("a"), "tasks/b.md": task_file("b", "[a]"), "tasks/c.md": task_file("c", "[a]"),
             "tasks/d.md": task_file("d", "[b, c]", checks='["ls b.txt c.txt"]')}
    for tid in "abcd":
        llm.route(MODEL, f"implementing task `{tid}`", writes(tid, f"{tid}.txt", f"{tid}\n"))
        llm.route(MODEL, f"Review task `{tid}`", [APPROVE])
    engine = make_engine(tmp_path, repo, llm)
    try:
        run_id = launch(engine, repo, files)
        state = engine.wait(run_id, timeout=60)
        assert state.status == "completed", state.reason
        assert state.tasks is not None
        assert {t: s.status for t, s in state.tasks.tasks.items()} == dict.fromkeys("abcd", TaskStatus.DONE)
        events = events_of(engine, run_id)
    finally:
        engine.stop()
    integrate = f"baton/{run_id}/integrate"
    tree = repo.git("ls-tree", "--name-only", integrate).split()
    assert {"a.txt", "b.txt", "c.txt", "d.txt", "app.py"} <= set(tree)
    # Every task merged once, each merge a --no-ff merge commit of the integration branch.
    merged = [e for e in events if isinstance(e, TaskMerged)]
    assert sorted(e.step_id for e in merged) == list("abcd") and all(e.merge_commit for e in merged)
    merges = repo.git("log", "--merges", "--format=%s", integrate).splitlines()
    assert sorted(merges) == sorted(f"baton: merge task {t}" for t in "abcd")
    # d saw b's and c's work: its check ran in its worktree and passed.
    [check] = [e for e in events if isinstance(e, TaskChecked)]
    assert (check.step_id, check.ok, check.argv) == ("d", True, ["ls", "b.txt", "c.txt"])
    # Cleaned up: the task branches and worktrees are gone, the person's checkout untouched.
    assert repo.branches() == [integrate, "main"]
    assert all(f"/{run_id}/tasks/" not in p for p in repo.worktree_paths())
    assert [e.step_id for e in events if isinstance(e, TaskCleanedUp)] == [e.step_id for e in events
                                                                           if isinstance(e, TaskDone)]
    assert repo.git("status", "--porcelain") == "" and repo.git("rev-parse", "main").strip() == repo.base
    # The dependency order held: b and c started after a was done, d after both.
    order = [e.step_id for e in events if type(e).__name__ in ("TaskStarted", "TaskDone")]
    assert order.index("a") < order.index("b") and order.count("a") == 2
    done_at = {e.step_id: n for n, e in enumerate(events) if isinstance(e, TaskDone)}
    started_at = {e.step_id: n for n, e in enumerate(events) if type(e).__name__ == "TaskStarted"}
    assert started_at["b"] > done_at["a"] and started_at["c"] > done_at["a"]
    assert started_at["d"] > max(done_at["b"], done_at["c"])
