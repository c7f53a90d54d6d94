"""``baton tasks plan|run|status|cleanup`` in-process, with the offline backend (a no-op implementor)."""

from __future__ import annotations

import json
import time

from actors.workspace.projects import ProjectBook
from api.cli.main import main
from eventstore import open_store
from tests.integration.task_repo import make_task_repo


def task(tid: str, deps: str = "") -> str:
    dep = f"depends_on: {deps}\n" if deps else ""
    return f"---\nid: {tid}\ntitle: Task {tid}\nagent: implementation-specialist\n{dep}---\nDo {tid}.\n"


def test_plan_run_status_and_cleanup_of_a_diamond(tmp_path, capsys, monkeypatch):
    repo = make_task_repo(tmp_path)
    (repo.root / "tasks").mkdir()
    for tid, deps in (("a", ""), ("b", "[a]"), ("c", "[a]"), ("d", "[b, c]")):
        (repo.root / "tasks" / f"{tid}.md").write_text(task(tid, deps))
    db = f"sqlite:///{tmp_path / 'baton.db'}"
    store = open_store(db)
    ProjectBook(store, time.time).add("demo", repo.root, by="tester")
    store.close()
    monkeypatch.setenv("BATON_DB", db)
    monkeypatch.setenv("BATON_WORKTREES", str(tmp_path / "wt"))
    assert main(["tasks", "plan", "demo"]) == 0
    assert capsys.readouterr().out.splitlines() == ["wave 1: a", "wave 2: b, c", "wave 3: d"]

    (repo.root / "tasks" / "e.md").write_text(task("e", "[ghost]"))
    assert main(["tasks", "plan", "demo"]) == 2
    err = capsys.readouterr().err
    assert "tasks/e.md" in err and "ghost" in err
    (repo.root / "tasks" / "e.md").unlink()

    assert main(["tasks", "run", "demo", "--local"]) == 0
    out = capsys.readouterr()
    run_id = out.err.split()[2].rstrip(":")
    assert f"run {run_id}: completed" in out.out and "## Tasks" in out.out
    assert main(["tasks", "status", run_id, "--json"]) == 0
    tasks = json.loads(capsys.readouterr().out)
    assert {t: v["status"] for t, v in tasks.items()} == dict.fromkeys("abcd", "done")
    calls = {t: (v["tool_calls"], v["tool_errors"], v["malformed_calls"]) for t, v in tasks.items()}
    assert calls == dict.fromkeys("abcd", (0, 0, 0))  # the offline no-op implementor calls no tool
    reviews = {t: (v["review_tool_calls"], v["review_tool_errors"], v["review_malformed_calls"]) for t, v in tasks.items()}
    assert reviews == dict.fromkeys("abcd", (0, 0, 0))  # nor does its model-less reviewer
    assert main(["tasks", "land", run_id]) == 2  # launched without a target
    assert "no target branch" in capsys.readouterr().err
    assert main(["tasks", "land", run_id, "--target", "main"]) == 0  # no-op tasks: main is already there
    assert f"landed main at {repo.base[:12]}" in capsys.readouterr().out
    # Behind baton's back: a stray branch of the run; cleanup lists it, then removes it.
    repo.git("branch", f"baton/{run_id}/stray", "main")
    assert main(["tasks", "cleanup", run_id, "--dry-run"]) == 0
    assert f"baton/{run_id}/stray" in capsys.readouterr().out
    assert f"baton/{run_id}/stray" in repo.branches()
    assert main(["tasks", "cleanup", run_id]) == 0
    capsys.readouterr()
    assert f"baton/{run_id}/stray" not in repo.branches()
    assert main(["tasks", "cleanup", run_id, "--dry-run"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert not any(f"/wt/{run_id}/" in p for p in repo.worktree_paths())  # the integration worktree too


def test_a_blocked_task_run_pauses_and_baton_tasks_answer_retries_it_to_the_end(tmp_path, capsys, monkeypatch):
    from tests.integration.scripted_llm import Call, ScriptedLLM, TextTurn, ToolTurn

    repo = make_task_repo(tmp_path)
    (repo.root / "tasks").mkdir()
    (repo.root / "tasks" / "a.md").write_text(task("a"))
    db = f"sqlite:///{tmp_path / 'baton.db'}"
    store = open_store(db)
    ProjectBook(store, time.time).add("demo", repo.root, by="tester")
    store.close()
    llm = ScriptedLLM().start()
    try:
        llm.route("coder", ("task `a`", "use the sandbox"), [
            ToolTurn([Call("write_file", {"path": "a.txt", "content": "a\n"}), Call("commit", {"message": "a"})]),
            TextTurn("done")])
        llm.route("coder", "implementing task `a`", [ToolTurn([Call("blocked", {"reason": "which account?"})])])
        llm.route("coder", "Review task `a`", [TextTurn("---\nrecommendation: approve\n---\nok")])
        for var, value in (("BATON_DB", db), ("BATON_WORKTREES", str(tmp_path / "wt")), ("BATON_AGENT", "openai"),
                           ("BATON_OPENAI_BASE_URL", llm.base_url), ("BATON_MODEL", "coder")):
            monkeypatch.setenv(var, value)
        assert main(["tasks", "run", "demo"]) == 0
        out = capsys.readouterr()
        run_id = out.err.split()[2].rstrip(":")
        assert f"run {run_id}: paused" in out.out and "which account?" in out.out
        assert main(["tasks", "answer", run_id, "a", "retry", "--text", "use the sandbox"]) == 0
        out = capsys.readouterr()
        assert f"run {run_id}: completed" in out.out and "retry recorded" in out.err
    finally:
        llm.stop()
    assert "a.txt" in repo.git("ls-tree", "--name-only", f"baton/{run_id}/integrate")


def test_a_task_run_with_a_target_waits_at_its_gate_and_baton_tasks_land_approves_it(tmp_path, capsys, monkeypatch):
    from tests.integration.scripted_llm import Call, ScriptedLLM, TextTurn, ToolTurn

    repo = make_task_repo(tmp_path)
    (repo.root / "tasks").mkdir()
    (repo.root / "tasks" / "a.md").write_text(task("a"))
    repo.git("branch", "release", "main")
    db = f"sqlite:///{tmp_path / 'baton.db'}"
    store = open_store(db)
    ProjectBook(store, time.time).add("demo", repo.root, by="tester")
    store.close()
    llm = ScriptedLLM().start()
    try:
        llm.route("coder", "implementing task `a`", [
            ToolTurn([Call("write_file", {"path": "a.txt", "content": "a\n"}), Call("commit", {"message": "a"})]),
            TextTurn("done")])
        llm.route("coder", "Review task `a`", [TextTurn("---\nrecommendation: approve\n---\nok")])
        for var, value in (("BATON_DB", db), ("BATON_WORKTREES", str(tmp_path / "wt")), ("BATON_AGENT", "openai"),
                           ("BATON_OPENAI_BASE_URL", llm.base_url), ("BATON_MODEL", "coder")):
            monkeypatch.setenv(var, value)
        assert main(["tasks", "run", "demo", "--target", "release"]) == 0
        out = capsys.readouterr()
        run_id = out.err.split()[2].rstrip(":")
        assert f"run {run_id}: paused" in out.out  # every task merged: it waits at its landing gate
        assert repo.git("rev-parse", "release").strip() == repo.base
        assert main(["tasks", "land", run_id, "--target", "main"]) == 2  # the gate lands on what was pinned
        assert "waits to land on release" in capsys.readouterr().err
        assert main(["tasks", "land", run_id]) == 0
        head = repo.git("rev-parse", f"baton/{run_id}/integrate").strip()
        assert f"landed release at {head[:12]}" in capsys.readouterr().out
    finally:
        llm.stop()
    assert repo.git("rev-parse", "release").strip() == head
    assert not any(f"/wt/{run_id}/" in p for p in repo.worktree_paths())  # the run removed its worktrees itself
    assert main(["tasks", "status", run_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["a"]["status"] == "done"
