"""Task runs end to end (DESIGN §12): the engine, a real git repository, the scripted OpenAI-compatible server.

Each task's implementor and reviewer are scripted by a marker of their
first message (``implementing task `x``` / ``Review task `x```), so the
tasks of one run can share a model and run in parallel.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from actors.agents.chat_turn import ChatTurns
from actors.config import EngineConfig
from actors.engine import Engine
from actors.errors import TaskCommandRefused
from actors.task_attempt import TaskEnv
from eventstore import open_store
from flows.catalog import FlowRegistry
from flows.commands import inbox_of
from flows.events import (
    IntegrationRemoved,
    LandingRefused,
    RunLanded,
    TaskBlocked,
    TaskChecked,
    TaskCleanedUp,
    TaskDone,
    TaskMergeConflicted,
    TaskMerged,
    TaskAborted,
    TaskMessaged,
    TaskRebased,
    ToolResult,
    stream_of,
)
from flows.tasks import load_task_graph
from flows.tasks.events import TaskStatus
from flows.tasks.launch import task_run_launched
from flows.tasks.lifecycle import TaskTransitionError
from tests.integration.scripted_llm import (
    Call,
    ScriptedLLM,
    StallTurn,
    TextTurn,
    ToolTurn,
)
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


def launch(engine: Engine, repo: TaskRepo, files: dict[str, str], *, allow=(("ls",),), max_rounds: int = 3,
           target: str = "") -> str:
    """Launch a task run; without a ``target`` it has no landing gate and completes after its last task."""
    graph = load_task_graph(files.items(), allow=[list(a) for a in allow])
    event = task_run_launched(graph, run_id=f"T{abs(hash(tuple(files))) % 10**8:08d}", now=engine.clock.now(),
                              project_id="demo", repo=str(repo.root), allow=allow, base="main", target=target,
                              max_rounds=max_rounds, model=MODEL, backend="openai", launched_by="tester")
    return engine.launch_tasks(event).run_id


def at_gate(engine: Engine, run_id: str, timeout: float = 60):
    """The run's state once it waits at its landing gate (or has ended)."""
    return engine.wait(run_id, lambda s: s.terminal or (s.steps.get("land") is not None
                                                        and s.steps["land"].status == "paused"), timeout=timeout)


def integration_worktree(repo: TaskRepo, run_id: str) -> list[str]:
    """The run's integration worktree as `git worktree list` has it (empty once it is removed)."""
    return [p for p in repo.worktree_paths() if p.endswith(f"/{run_id}/integrate")]


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
    repo.git("branch", "release", "main")  # the target: not checked out anywhere, so it can be moved
    engine = make_engine(tmp_path, repo, llm)
    frames: list[dict] = []
    engine.bus.subscribe(frames.append)
    try:
        run_id = launch(engine, repo, files, target="release")
        waiting = at_gate(engine, run_id)
        # Every task merged: the run does not complete, it waits for a person at its landing gate.
        assert waiting.status == "paused" and waiting.steps["land"].status == "paused", waiting.reason
        assert f"baton/{run_id}/integrate" in engine.state(run_id).steps["land"].prompt
        assert repo.git("rev-parse", "release").strip() == repo.base  # nothing landed before the approval
        assert integration_worktree(repo, run_id)  # still there while the run is under way
        [entry] = [e for e in engine.plan()["planned_queued"] if e["run_id"] == run_id]
        assert entry["reason"] == "approval"
        engine.approve(run_id, "land", by="ann")
        state = engine.wait(run_id, timeout=60)
        assert state.status == "completed", state.reason
        assert state.tasks is not None
        assert {t: s.status for t, s in state.tasks.tasks.items()} == dict.fromkeys("abcd", TaskStatus.DONE)
        events = events_of(engine, run_id)
    finally:
        engine.stop()
    integrate = f"baton/{run_id}/integrate"
    # Approved: release fast-forwarded to the integration head, once; the branch is kept, its worktree gone.
    head = repo.git("rev-parse", integrate).strip()
    assert repo.git("rev-parse", "release").strip() == head
    assert repo.git("merge-base", "--is-ancestor", repo.base, head, check=False) == ""
    [landed] = [e for e in events if isinstance(e, RunLanded)]
    assert (landed.target, landed.commit) == ("release", head)
    assert [type(e).__name__ for e in events[-3:]] == ["RunLanded", "IntegrationRemoved", "RunCompleted"]
    assert integration_worktree(repo, run_id) == [] and not (repo.worktrees / run_id / "integrate").exists()
    assert "## Landing" in state.report and "Landed: release fast-forwarded" in state.report
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
    assert repo.branches() == [integrate, "main", "release"]
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
    # Watchers saw each task move: task_updated frames, ending with every task done.
    updates = [f for f in frames if f["type"] == "task_updated" and f["run_id"] == run_id]
    assert {f["step_id"]: f["status"] for f in updates} == dict.fromkeys("abcd", "done")
    assert {f["phase"] for f in updates} >= {"worktree", "coder", "checks", "review", "merge", "cleanup"}
    # The live plan carried the tasks: plan_delta frames with the run's entry and each task's one status.
    views = [(row.get("reason", "in_progress"), row["tasks"]) for f in frames if f["type"] == "plan_delta"
             for row in (*f["in_progress"], *f["planned_queued"]) if row["run_id"] == run_id and "tasks" in row]
    seen_d = [(v["d"]["status"], v["d"]["reason"]) for _, v in views]
    assert ("planned_queued", "deps") in seen_d and ("inprogress", "coder") in seen_d
    assert [v["d"]["waiting_on"] for _, v in views if v["d"]["reason"] == "deps"][0] == ["b", "c"]
    at_the_gate = [v for reason, v in views if reason == "approval"]  # waiting for a person, every task done
    assert at_the_gate and {t: v["status"] for t, v in at_the_gate[0].items()} == dict.fromkeys("abcd", "done")


def test_a_merge_conflict_is_listed_handed_back_with_markers_and_merged_after_the_fix(tmp_path, repo, llm):
    files = {"tasks/x.md": task_file("x"), "tasks/y.md": task_file("y")}
    for tid in "xy":
        llm.route(MODEL, (f"task `{tid}`", "conflicted in"), writes(tid, "shared.txt", "x and y\n"))
        llm.route(MODEL, f"implementing task `{tid}`", writes(tid, "shared.txt", f"only {tid}\n"))
        llm.route(MODEL, f"Review task `{tid}`", [APPROVE])
    repo.git("branch", "release", "main")
    engine = make_engine(tmp_path, repo, llm)
    try:
        run_id = launch(engine, repo, files, target="release")
        assert at_gate(engine, run_id).status == "paused"
        engine.reject(run_id, "land", by="ann", comment="not this week")
        state = engine.wait(run_id, timeout=60)
        events = events_of(engine, run_id)
    finally:
        engine.stop()
    # Rejected at the gate: the run ends rejected, nothing landed, the branch kept, its worktree gone.
    assert state.status == "rejected" and "not this week" in state.reason, state.reason
    assert repo.git("rev-parse", "release").strip() == repo.base
    assert not [e for e in events if isinstance(e, (RunLanded, LandingRefused))]
    assert [type(e).__name__ for e in events[-2:]] == ["IntegrationRemoved", "RunRejected"]
    assert integration_worktree(repo, run_id) == []
    assert "Rejected by ann: not this week" in state.report
    [conflict] = [e for e in events if isinstance(e, TaskMergeConflicted)]
    [rebased] = [e for e in events if isinstance(e, TaskRebased)]
    assert conflict.files == ["shared.txt"] and rebased.conflicts == ["shared.txt"]
    assert rebased.step_id == conflict.step_id
    # Never resolved by taking one side: the implementor's resolution is what was merged, once per task.
    integrate = f"baton/{run_id}/integrate"
    assert repo.git("show", f"{integrate}:shared.txt") == "x and y\n"
    assert sorted(e.step_id for e in events if isinstance(e, TaskMerged)) == ["x", "y"]
    assert repo.branches() == [integrate, "main", "release"]
    assert "conflicted on merge in shared.txt" in state.report and "### Action Items" in state.report


def test_a_target_that_moved_is_not_landed_the_reason_is_given_and_the_branch_kept(tmp_path, repo, llm):
    llm.route(MODEL, "implementing task `a`", writes("a", "a.txt", "a\n"))
    llm.route(MODEL, "Review task `a`", [APPROVE])
    llm.route(MODEL, "implementing task `b`", writes("b", "b.txt", "b\n"))
    llm.route(MODEL, "Review task `b`", [APPROVE])
    engine = make_engine(tmp_path, repo, llm)
    try:
        # main is the person's checkout: baton never moves it, whatever the decision
        checked_out = launch(engine, repo, {"tasks/a.md": task_file("a")}, target="main")
        assert at_gate(engine, checked_out).status == "paused"
        engine.approve(checked_out, "land", by="ann")
        one = engine.wait(checked_out, timeout=60)
        repo.git("branch", "release", "main")
        run_id = launch(engine, repo, {"tasks/b.md": task_file("b")}, target="release")
        assert at_gate(engine, run_id).status == "paused"
        # a person's commit on release meanwhile
        repo.git("worktree", "add", "-q", str(tmp_path / "rel"), "release")
        (tmp_path / "rel" / "hotfix.txt").write_text("fix\n")
        repo.git("add", "hotfix.txt", cwd=tmp_path / "rel")
        repo.git("commit", "-qm", "hotfix", cwd=tmp_path / "rel")
        repo.git("worktree", "remove", str(tmp_path / "rel"))
        moved = repo.git("rev-parse", "release").strip()
        engine.approve(run_id, "land", by="ann")
        state = engine.wait(run_id, timeout=60)
        events = events_of(engine, run_id)
    finally:
        engine.stop()
    assert one.status == "completed" and repo.git("rev-parse", "main").strip() == repo.base
    assert "checked out" in one.report and "merge --ff-only" in one.report
    # Not a fast-forward: refused with the reason, release left where the person put it, the run completes.
    assert state.status == "completed", state.reason
    [refused] = [e for e in events if isinstance(e, LandingRefused)]
    assert refused.target == "release" and "not a fast-forward" in refused.reason
    assert not [e for e in events if isinstance(e, RunLanded)]
    assert repo.git("rev-parse", "release").strip() == moved
    assert f"baton/{run_id}/integrate" in repo.branches() and integration_worktree(repo, run_id) == []
    assert "Landing on release was refused" in state.report


def test_a_blocked_task_waits_for_a_person_while_the_others_go_on_and_retry_continues_its_worktree(
        tmp_path, repo, llm):
    files = {"tasks/a.md": task_file("a"), "tasks/b.md": task_file("b")}
    llm.route(MODEL, ("task `a`", "use the sandbox key"), writes("a", "a.txt", "a\n"))
    llm.route(MODEL, "implementing task `a`", [
        ToolTurn([Call("write_file", {"path": "draft.txt", "content": "half\n"}),
                  Call("blocked", {"reason": "which API key may I use?"})])])
    llm.route(MODEL, "implementing task `b`", writes("b", "b.txt", "b\n"))
    for tid in "ab":
        llm.route(MODEL, f"Review task `{tid}`", [APPROVE])
    engine = make_engine(tmp_path, repo, llm)
    try:
        run_id = launch(engine, repo, files)
        waiting = engine.wait(run_id, lambda s: s.status == "paused", timeout=60)
        assert waiting.tasks is not None
        a, b = waiting.tasks.tasks["a"], waiting.tasks.tasks["b"]
        assert (a.status, a.reason) == (TaskStatus.BLOCKED, "which API key may I use?")
        assert b.status is TaskStatus.DONE  # the coordinator moved on meanwhile
        assert waiting.steps["a"].status == "paused"
        # The plan shows the run waiting for a person and each task's one status and reason.
        # (the scheduler hears the run went idle just after its log says paused: wait for the plan, bounded)
        from actors.task_runs import plan_with_tasks
        deadline = time.monotonic() + 10
        while not (entries := [e for e in plan_with_tasks(engine.plan(), engine.store)["planned_queued"]
                               if e["run_id"] == run_id]):
            assert time.monotonic() < deadline, "the plan never showed the paused run"
            time.sleep(0.01)
        [entry] = entries
        assert entry["reason"] == "approval"
        assert entry["tasks"]["a"]["status"] == "blocked" and entry["tasks"]["a"]["detail"] == "which API key may I use?"
        assert entry["tasks"]["b"]["reason"] == "merged"
        with pytest.raises(Exception, match="no question to answer"):
            engine.task_command(run_id, "b", "retry", by="tester")
        engine.task_command(run_id, "a", "retry", text="use the sandbox key", by="tester")
        state = engine.wait(run_id, timeout=60)
        events = events_of(engine, run_id)
    finally:
        engine.stop()
    assert state.status == "completed", state.tasks
    [blocked] = [e for e in events if isinstance(e, TaskBlocked)]
    assert (blocked.step_id, blocked.source) == ("a", "agent")
    created = [e for e in events if type(e).__name__ == "TaskWorktreeCreated" and e.step_id == "a"]
    assert [e.reused for e in created] == [False, True]  # the retry continued the kept worktree
    tree = repo.git("ls-tree", "--name-only", f"baton/{run_id}/integrate").split()
    assert {"a.txt", "b.txt", "draft.txt"} <= set(tree)  # the blocked attempt's draft was not lost


def test_a_check_that_keeps_failing_fails_the_task_aborts_its_dependents_and_keeps_its_branch(tmp_path, repo, llm):
    files = {"tasks/a.md": task_file("a", checks='["ls missing.txt"]'), "tasks/b.md": task_file("b", "[a]")}
    llm.route(MODEL, "implementing task `a`", writes("a", "a.txt", "a\n"))
    engine = make_engine(tmp_path, repo, llm)
    try:
        run_id = launch(engine, repo, files, max_rounds=2, target="main")
        state = engine.wait(run_id, timeout=60)
        events = events_of(engine, run_id)
    finally:
        engine.stop()
    assert state.status == "failed"
    assert state.tasks is not None
    assert state.tasks.tasks["a"].status is TaskStatus.FAILED and "checks failed 2 times" in state.tasks.tasks["a"].reason
    assert state.tasks.tasks["b"].status is TaskStatus.ABORTED and state.steps["b"].skip_reason == "upstream_failed"
    checks = [e for e in events if isinstance(e, TaskChecked)]
    assert len(checks) == 2 and not any(c.ok for c in checks) and "missing.txt" in checks[0].output
    # The second round was told why: the check's output went back to the implementor.
    second = [r for r in llm.requests_for(MODEL) if "A check failed" in r["messages"][1]["content"]]
    assert second and "ls missing.txt" in second[0]["messages"][1]["content"]
    assert f"baton/{run_id}/a" in repo.branches()  # its work is kept on its branch, the worktree is gone
    assert all(f"/{run_id}/tasks/" not in p for p in repo.worktree_paths())
    assert "## Tasks" in state.report and "0 passed, 2 failed" in state.report
    # A task failed: nobody is asked to land; the run fails with its integration worktree removed, branch kept.
    [gate] = [e for e in events if type(e).__name__ == "StepSkipped" and e.step_id == "land"]
    assert gate.reason == "upstream_failed" and "a, b did not finish" in gate.detail
    assert "step 'a' failed" in state.reason
    assert [type(e).__name__ for e in events[-2:]] == ["IntegrationRemoved", "RunFailed"]
    assert integration_worktree(repo, run_id) == [] and f"baton/{run_id}/integrate" in repo.branches()
    assert repo.git("rev-parse", "main").strip() == repo.base


def test_a_run_cancelled_at_its_gate_removes_its_integration_worktree_after_its_end(tmp_path, repo, llm):
    llm.route(MODEL, "implementing task `a`", writes("a", "a.txt", "a\n"))
    llm.route(MODEL, "Review task `a`", [APPROVE])
    engine = make_engine(tmp_path, repo, llm)
    try:
        run_id = launch(engine, repo, {"tasks/a.md": task_file("a")}, target="main")
        assert at_gate(engine, run_id).status == "paused"
        engine.cancel(run_id, reason="changed my mind", by="ann")
        state = engine.wait(run_id, lambda s: s.terminal and s.tasks is not None and s.tasks.integration_removed,
                            timeout=30)
        events = events_of(engine, run_id)
    finally:
        engine.stop()
    assert state.status == "cancelled" and state.steps["land"].status == "skipped"
    assert [type(e).__name__ for e in events[-2:]] == ["RunCancelled", "IntegrationRemoved"]
    assert integration_worktree(repo, run_id) == [] and f"baton/{run_id}/integrate" in repo.branches()
    assert repo.git("rev-parse", "main").strip() == repo.base


def test_a_run_cancelled_mid_task_aborts_its_tasks_and_removes_their_worktrees_keeping_every_commit(
        tmp_path, repo, llm):
    from actors.task_runs import reconciliation
    from flows.events import TaskAborted

    files = {"tasks/a.md": task_file("a"), "tasks/b.md": task_file("b"), "tasks/c.md": task_file("c"),
             "tasks/d.md": task_file("d", "[a]")}
    # a commits a.txt, then writes a2.txt without committing it, then its model goes silent (mid-task);
    # b commits b.txt and is blocked; c is merged and done; d waits for a.
    llm.route(MODEL, "implementing task `a`", [
        ToolTurn([Call("write_file", {"path": "a.txt", "content": "a\n"}), Call("commit", {"message": "add a"})]),
        ToolTurn([Call("write_file", {"path": "a2.txt", "content": "not committed\n"})]),
        StallTurn()])
    llm.route(MODEL, "implementing task `b`", [
        ToolTurn([Call("write_file", {"path": "b.txt", "content": "b\n"}), Call("commit", {"message": "add b"})]),
        ToolTurn([Call("blocked", {"reason": "which format?"})])])
    llm.route(MODEL, "implementing task `c`", writes("c", "c.txt", "c\n"))
    llm.route(MODEL, "Review task `c`", [APPROVE])
    engine = make_engine(tmp_path, repo, llm)
    try:
        run_id = launch(engine, repo, files)

        def a_stalls() -> bool:  # a's third turn was asked for: a2.txt is written (and recorded), not committed
            return any("implementing task `a`" in str(r["messages"][1].get("content"))
                       and sum(m["role"] == "assistant" for m in r["messages"]) == 2 for r in llm.requests_for(MODEL))

        def mid_task(s) -> bool:
            t = s.tasks.tasks if s.tasks is not None else {}
            return t["c"].status is TaskStatus.DONE and t["b"].status is TaskStatus.BLOCKED

        engine.wait(run_id, mid_task, timeout=30)
        # a's third request follows its last recorded event (the write's result): no state change tells of
        # it, so it is waited for at the model server, bounded
        deadline = time.monotonic() + 30
        while not a_stalls():
            assert time.monotonic() < deadline, "task a never asked for its third turn"
            time.sleep(0.01)
        assert engine.state(run_id).tasks.tasks["a"].phase.value == "coder"
        engine.cancel(run_id, reason="wrong plan", by="ann")
        state = engine.wait(run_id, lambda s: s.terminal and s.tasks is not None and all(
            t.worktree_removed for t in s.tasks.tasks.values() if t.worktree), timeout=60)
        events = events_of(engine, run_id)
        # What `baton tasks cleanup --dry-run` would do afterwards: nothing, git and the log agree.
        env = TaskEnv(worktrees_dir=repo.worktrees, turn=None, git_env=repo.env)
        assert reconciliation(state, env, dry_run=True) == ([], [])
    finally:
        engine.stop()
    assert state.status == "cancelled"
    statuses = {t: s.status for t, s in state.tasks.tasks.items()}
    assert statuses == {"a": TaskStatus.ABORTED, "b": TaskStatus.ABORTED, "c": TaskStatus.DONE,
                        "d": TaskStatus.ABORTED}
    assert {t: state.steps[t].status for t in "abcd"} == {"a": "cancelled", "b": "cancelled", "c": "completed",
                                                         "d": "cancelled"}
    # The cancel's batch aborts every task not ended, with who and why; the run ends, then the cleanup.
    aborted = [e for e in events if isinstance(e, TaskAborted)]
    assert [(e.step_id, e.by) for e in aborted] == [("a", "ann"), ("b", "ann"), ("d", "ann")]
    assert all("wrong plan" in e.reason for e in aborted)
    kinds = [type(e).__name__ for e in events]
    end = kinds.index("RunCancelled")
    assert kinds[end + 1] == "IntegrationRemoved"
    cleaned = {e.step_id: e for e in events[end:] if isinstance(e, TaskCleanedUp)}
    assert set(cleaned) == {"a", "b"} and all(c.worktree_removed and not c.branch_deleted for c in cleaned.values())
    assert cleaned["a"].salvaged and not cleaned["b"].salvaged  # a's uncommitted file was committed, not lost
    # git agrees with the log: no task worktree left, the unmerged branches kept, c's merged one gone.
    assert repo.worktree_paths() == [str(repo.root)]
    assert repo.branches() == [f"baton/{run_id}/a", f"baton/{run_id}/b", f"baton/{run_id}/integrate", "main"]
    assert repo.git("rev-parse", f"baton/{run_id}/a").strip() == cleaned["a"].branch_head == cleaned["a"].salvaged
    assert repo.git("rev-parse", f"baton/{run_id}/b").strip() == cleaned["b"].branch_head
    # No committed work lost: a's commit and its salvaged file, b's commit, c's merge.
    assert repo.git("show", f"baton/{run_id}/a:a.txt") == "a\n"
    assert repo.git("show", f"baton/{run_id}/a:a2.txt") == "not committed\n"
    assert repo.git("show", f"baton/{run_id}/b:b.txt") == "b\n"
    assert repo.git("show", f"baton/{run_id}/integrate:c.txt") == "c\n"
    assert repo.git("status", "--porcelain") == "" and repo.git("rev-parse", "main").strip() == repo.base
    assert "wrong plan" in state.report


def test_a_message_reaches_the_next_turn_and_an_abort_stops_one_task_and_cleans_up(tmp_path, repo, llm):
    files = {"tasks/a.md": task_file("a"), "tasks/b.md": task_file("b")}
    llm.route(MODEL, "implementing task `a`", [ToolTurn([Call("run", {"argv": ["sleep", "2"]})]),
                                               ToolTurn([Call("write_file", {"path": "a.txt", "content": "a\n"})]),
                                               StallTurn()])
    llm.route(MODEL, "implementing task `b`", writes("b", "b.txt", "b\n"))
    llm.route(MODEL, "Review task `b`", [APPROVE])
    engine = make_engine(tmp_path, repo, llm)
    try:
        run_id = launch(engine, repo, files, allow=(("sleep",),))
        engine.wait(run_id, lambda s: s.tasks is not None and s.tasks.tasks["a"].phase is not None
                    and s.tasks.tasks["a"].phase.value == "coder", timeout=30)
        engine.task_command(run_id, "a", "message", text="also add a README line", by="tester")
        llm.disconnected.clear()
        engine.wait(run_id, lambda s: any("also add a README line" in str(r.get("messages"))
                                          for r in llm.requests_for(MODEL)), timeout=30)
        engine.task_command(run_id, "a", "abort", text="wrong approach", by="tester")
        state = engine.wait(run_id, timeout=60)
        events = events_of(engine, run_id)
    finally:
        engine.stop()
    [messaged] = [e for e in events if isinstance(e, TaskMessaged)]
    assert (messaged.step_id, messaged.by) == ("a", "tester")
    assert state.tasks is not None and state.tasks.tasks["a"].status is TaskStatus.ABORTED
    assert state.tasks.tasks["b"].status is TaskStatus.DONE
    [cleaned] = [e for e in events if isinstance(e, TaskCleanedUp) and e.step_id == "a"]
    assert cleaned.worktree_removed and not cleaned.branch_deleted and cleaned.salvaged  # a.txt was salvaged
    assert repo.git("show", f"baton/{run_id}/a:a.txt") == "a\n"
    assert all(f"/{run_id}/tasks/" not in p for p in repo.worktree_paths())
    assert state.status == "failed" and "aborted by tester: wrong approach" in state.report


def test_a_word_on_a_task_given_to_another_node_is_carried_out_once_by_the_node_driving_the_run(
        store, tmp_path, repo, llm):
    """Node b's message and abort reach node a's run through a's inbox and are recorded once, by a; a word
    that does not apply is refused through b with the very error and message a gives, and appends nothing."""
    files = {"tasks/a.md": task_file("a"), "tasks/b.md": task_file("b")}
    # a's first turn sleeps 3 s: b's message reaches a meanwhile, and the next turn carries it
    llm.route(MODEL, "implementing task `a`", [ToolTurn([Call("run", {"argv": ["sleep", "3"]})]),
                                               ToolTurn([Call("write_file", {"path": "a.txt", "content": "a\n"})]),
                                               StallTurn()])
    llm.route(MODEL, "implementing task `b`", writes("b", "b.txt", "b\n"))
    llm.route(MODEL, "Review task `b`", [APPROVE])

    def node(name: str) -> Engine:
        env = TaskEnv(worktrees_dir=repo.worktrees, turn=ChatTurns(llm.base_url), run_timeout_s=30.0,
                      git_env=repo.env)
        config = EngineConfig(node=name, agent_slots=4, backend="openai", model=MODEL)
        return Engine(store, FlowRegistry([]), config, tasks=env).start()

    a, b = node("host-a:1"), node("host-b:2")
    try:
        run_id = launch(a, repo, files, allow=(("sleep",),))
        a.wait(run_id, lambda s: s.tasks is not None and s.tasks.tasks["a"].phase is not None
               and s.tasks.tasks["a"].phase.value == "coder", timeout=30)
        messaged_at = b.task_command(run_id, "a", "message", text="also add a README line", by="bea")
        a.wait(run_id, lambda s: any("also add a README line" in str(r.get("messages"))
                                     for r in llm.requests_for(MODEL)), timeout=30)
        # b is done and a's implementor wrote its file (its next turn stalls): the run is quiet, driven by a.
        a.wait(run_id, lambda s: s.tasks is not None and s.tasks.tasks["b"].status is TaskStatus.DONE
               and any(isinstance(e, ToolResult) and e.step_id == "a" and e.tool == "write_file"
                       for e in events_of(a, run_id)), timeout=30)
        before = len(store.read_stream(stream_of(run_id)))
        refused = []
        for task, action, text, error in (("b", "abort", "too late", TaskTransitionError),
                                          ("zz", "abort", "", TaskCommandRefused),
                                          ("a", "message", "  ", TaskCommandRefused)):
            with pytest.raises(error) as here:
                a.task_command(run_id, task, action, text=text, by="ann")
            with pytest.raises(error) as there:
                b.task_command(run_id, task, action, text=text, by="bea")
            assert str(there.value) == str(here.value)
            refused.append(str(there.value))
        assert len(store.read_stream(stream_of(run_id))) == before  # no refusal appended anything
        aborted_at = b.task_command(run_id, "a", "abort", text="wrong approach", by="bea")
        state = a.wait(run_id, timeout=60)
        records = store.read_stream(stream_of(run_id))
        events = events_of(a, run_id)
        inbox = store.read_stream(inbox_of("host-a:1"))
    finally:
        b.stop()
        a.stop()
    [messaged] = [e for e in events if isinstance(e, TaskMessaged)]
    assert (messaged.step_id, messaged.by, messaged.text) == ("a", "bea", "also add a README line")
    [aborted] = [e for e in events if isinstance(e, TaskAborted)]
    assert (aborted.step_id, aborted.by, aborted.reason) == ("a", "bea", "aborted by bea: wrong approach")
    by_position = {r.position: r.type for r in records}
    assert (by_position[messaged_at], by_position[aborted_at]) == ("TaskMessaged", "TaskAborted")
    assert {r.metadata["node"] for r in records} == {"host-a:1"}  # carried out by a, never taken over by b
    assert "RunRecovered" not in by_position.values()
    assert refused == ["task 'b' has already ended (done)", f"run {run_id} has no task 'zz'; its tasks are a, b",
                       "a message needs a text"]
    requests = [r.data for r in inbox if r.type == "CommandRequested"]
    answers = {r.data["command_id"]: r.data for r in inbox if r.type == "CommandAnswered"}
    assert [(q["kind"], q["step_id"], answers[q["command_id"]]["refusal"]) for q in requests] == [
        ("task-message", "a", None), ("task-abort", "b", "task_not_ready"), ("task-abort", "zz", "task_refused"),
        ("task-message", "a", "task_refused"), ("task-abort", "a", None)]
    assert state.tasks is not None and state.tasks.tasks["a"].status is TaskStatus.ABORTED
    assert state.tasks.tasks["b"].status is TaskStatus.DONE
    assert all(f"/{run_id}/tasks/" not in p for p in repo.worktree_paths())
    assert state.status == "failed" and "aborted by bea: wrong approach" in state.report


def kill_mid_merge(tmp_path: Path, repo: TaskRepo, llm: ScriptedLLM, when: str) -> tuple[str, str, list]:
    """Drive a run a -> b in another process, kill -9 it at ``when`` in a's merge, restart here; the events."""
    import json
    import os
    import signal
    import sys

    files = {"tasks/a.md": task_file("a"), "tasks/b.md": task_file("b", "[a]")}
    for tid in "ab":
        llm.route(MODEL, f"implementing task `{tid}`", writes(tid, f"{tid}.txt", f"{tid}\n"))
        llm.route(MODEL, f"Review task `{tid}`", [APPROVE])
    db = f"sqlite:///{tmp_path / 'baton.db'}"
    fifo = tmp_path / "ready"
    os.mkfifo(fifo)
    worker = subprocess.Popen([sys.executable, "-m", "tests.e2e.task_run_worker", db, str(repo.root),
                               str(repo.worktrees), llm.base_url, json.dumps(repo.env), str(fifo), json.dumps(files),
                               "a", when], cwd=Path(__file__).resolve().parents[2], start_new_session=True)
    try:
        with open(fifo) as f:  # blocks until the worker is at the point (or exits: then the line is empty)
            line = f.readline().split()
        assert line and line[0] == "ready", "the worker did not reach the merge"
        run_id = line[1]
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
    integrate = f"baton/{run_id}/integrate"
    merged_before = repo.git("log", "--merges", "--format=%s", integrate).splitlines()
    assert merged_before == (["baton: merge task a"] if when == "after" else [])
    store = open_store(db)
    env = TaskEnv(worktrees_dir=repo.worktrees, turn=ChatTurns(llm.base_url), run_timeout_s=30.0, git_env=repo.env)
    engine = Engine(store, FlowRegistry([]), EngineConfig(agent_slots=4, backend="openai", model=MODEL,
                                                          lease_ttl_s=1.0, node="second"), tasks=env).start()
    try:
        state = engine.wait(run_id, timeout=60)
        events = events_of(engine, run_id)
    finally:
        engine.stop()
    assert state.status == "completed", state.reason
    # Either way: each task merged exactly once, nothing of the run left but its result.
    assert sorted(repo.git("log", "--merges", "--format=%s", integrate).splitlines()) == [
        "baton: merge task a", "baton: merge task b"]
    assert {"a.txt", "b.txt"} <= set(repo.git("ls-tree", "--name-only", integrate).split())
    assert repo.branches() == [integrate, "main"]
    assert all(f"/{run_id}/tasks/" not in p for p in repo.worktree_paths())
    return run_id, integrate, events


@pytest.mark.slow
def test_a_kill_9_after_the_merge_commit_is_recorded_at_restart_never_merged_twice_and_the_run_finishes(
        tmp_path, repo, llm):
    _, _, events = kill_mid_merge(tmp_path, repo, llm, "after")
    merged_a = [e for e in events if isinstance(e, TaskMerged) and e.step_id == "a"]
    assert len(merged_a) == 1 and merged_a[0].already  # recorded from git, not merged again
    assert any(type(e).__name__ == "GitCompensated" and e.action == "record-merged" for e in events)


@pytest.mark.slow
def test_a_kill_9_after_the_merge_intent_before_git_merged_retries_the_task_in_its_worktree_and_merges_once(
        tmp_path, repo, llm):
    _, _, events = kill_mid_merge(tmp_path, repo, llm, "before")
    lost = [e for e in events if type(e).__name__ == "TaskFailed" and e.step_id == "a"]
    assert len(lost) == 1 and lost[0].lost and lost[0].will_retry  # the attempt was lost, not counted
    created = [e.reused for e in events if type(e).__name__ == "TaskWorktreeCreated" and e.step_id == "a"]
    assert created == [False, True]  # the retry continued on the kept branch: the first attempt's commit is there
    merged_a = [e for e in events if isinstance(e, TaskMerged) and e.step_id == "a"]
    assert len(merged_a) == 1 and not merged_a[0].already


def kill_at_landing(tmp_path: Path, repo: TaskRepo, llm: ScriptedLLM, when: str) -> tuple[str, Engine]:
    """Drive a one-task run with target ``release`` in another process, kill -9 it at ``when`` (``gate``,
    ``approved``, ``landed``: see tests/e2e/task_run_worker.py), and start an engine here on the same log."""
    import json
    import os
    import signal
    import sys

    files = {"tasks/a.md": task_file("a")}
    llm.route(MODEL, "implementing task `a`", writes("a", "a.txt", "a\n"))
    llm.route(MODEL, "Review task `a`", [APPROVE])
    repo.git("branch", "release", "main")
    db = f"sqlite:///{tmp_path / 'baton.db'}"
    fifo = tmp_path / "ready"
    os.mkfifo(fifo)
    worker = subprocess.Popen([sys.executable, "-m", "tests.e2e.task_run_worker", db, str(repo.root),
                               str(repo.worktrees), llm.base_url, json.dumps(repo.env), str(fifo), json.dumps(files),
                               "a", when, "release"], cwd=Path(__file__).resolve().parents[2], start_new_session=True)
    try:
        with open(fifo) as f:
            line = f.readline().split()
        assert line and line[0] == "ready", f"the worker did not reach {when}"
        run_id = line[1]
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
    env = TaskEnv(worktrees_dir=repo.worktrees, turn=ChatTurns(llm.base_url), run_timeout_s=30.0, git_env=repo.env)
    engine = Engine(open_store(db), FlowRegistry([]), EngineConfig(agent_slots=4, backend="openai", model=MODEL,
                                                                   lease_ttl_s=1.0, node="second"), tasks=env).start()
    return run_id, engine


def landed_once(repo: TaskRepo, run_id: str, events: list) -> None:
    """release is at the integration head, one RunLanded says so, and the integration worktree is gone."""
    head = repo.git("rev-parse", f"baton/{run_id}/integrate").strip()
    assert repo.git("rev-parse", "release").strip() == head != repo.base
    assert [(e.target, e.commit) for e in events if isinstance(e, RunLanded)] == [("release", head)]
    assert not [e for e in events if isinstance(e, LandingRefused)]
    assert len([e for e in events if isinstance(e, IntegrationRemoved)]) == 1
    assert integration_worktree(repo, run_id) == []


@pytest.mark.slow
def test_a_kill_9_while_waiting_at_the_gate_keeps_the_run_waiting_and_it_lands_when_approved(tmp_path, repo, llm):
    run_id, engine = kill_at_landing(tmp_path, repo, llm, "gate")
    try:
        state = at_gate(engine, run_id)
        assert state.status == "paused" and repo.git("rev-parse", "release").strip() == repo.base
        engine.approve(run_id, "land", by="ann")
        state = engine.wait(run_id, timeout=60)
        events = events_of(engine, run_id)
    finally:
        engine.stop()
    assert state.status == "completed", state.reason
    landed_once(repo, run_id, events)


@pytest.mark.slow
@pytest.mark.parametrize("when", ["approved", "landed"])
def test_a_kill_9_between_the_approval_and_its_landing_lands_once_at_restart_without_asking_again(
        tmp_path, repo, llm, when):
    """``approved``: the decision is recorded, git has not moved the target; ``landed``: git moved it, the log
    does not know. Either way the restarted engine finishes the landing from the recorded approval, once."""
    run_id, engine = kill_at_landing(tmp_path, repo, llm, when)
    try:
        before = events_of(engine, run_id)
        assert [e.decision for e in before if type(e).__name__ == "StepResumed"] == ["approved"]
        assert not [e for e in before if isinstance(e, (RunLanded, LandingRefused))]  # killed before the fact
        if when == "landed":
            assert repo.git("rev-parse", "release").strip() != repo.base  # git had moved it
        state = engine.wait(run_id, timeout=60)
        events = events_of(engine, run_id)
    finally:
        engine.stop()
    assert state.status == "completed", state.reason
    assert [e.decision for e in events if type(e).__name__ == "StepResumed"] == ["approved"]  # asked once
    assert any(type(e).__name__ == "RunRecovered" for e in events)
    landed_once(repo, run_id, events)


def test_aborting_a_blocked_task_removes_its_worktree_keeps_its_branch_and_ends_the_run(tmp_path, repo, llm):
    llm.route(MODEL, "implementing task `a`", [
        ToolTurn([Call("write_file", {"path": "draft.txt", "content": "half\n"}),
                  Call("blocked", {"reason": "the spec contradicts the code"})])])
    engine = make_engine(tmp_path, repo, llm)
    try:
        run_id = launch(engine, repo, {"tasks/a.md": task_file("a")})
        engine.wait(run_id, lambda s: s.status == "paused", timeout=60)
        assert any(f"/{run_id}/tasks/a" in p for p in repo.worktree_paths())  # kept while a person decides
        engine.task_command(run_id, "a", "abort", text="not now", by="tester")
        state = engine.wait(run_id, timeout=60)
        events = events_of(engine, run_id)
    finally:
        engine.stop()
    assert state.status == "failed"
    [cleaned] = [e for e in events if isinstance(e, TaskCleanedUp)]
    assert cleaned.worktree_removed and not cleaned.branch_deleted and cleaned.salvaged
    assert all(f"/{run_id}/tasks/" not in p for p in repo.worktree_paths())
    assert repo.git("show", f"baton/{run_id}/a:draft.txt") == "half\n"  # the work is on the kept branch


def test_an_abort_that_lands_before_the_blocked_attempt_reported_back_still_removes_its_worktree(
        tmp_path, repo, llm, monkeypatch):
    import threading

    from actors.task_attempt import TaskAttempt

    # The attempt has recorded TaskBlocked (the run is paused) but its thread has not returned yet when the
    # person aborts: the abort finds the attempt still listed. Held here until the abort is recorded.
    release, original = threading.Event(), TaskAttempt.run

    def held(self, token):
        out = original(self, token)
        if out.startswith("blocked"):
            release.wait(30)
        return out

    monkeypatch.setattr(TaskAttempt, "run", held)
    llm.route(MODEL, "implementing task `a`", [
        ToolTurn([Call("write_file", {"path": "draft.txt", "content": "half\n"}),
                  Call("blocked", {"reason": "unclear"})])])
    engine = make_engine(tmp_path, repo, llm)
    try:
        run_id = launch(engine, repo, {"tasks/a.md": task_file("a")})
        engine.wait(run_id, lambda s: s.status == "paused", timeout=60)
        engine.task_command(run_id, "a", "abort", text="not now", by="tester")
        release.set()
        state = engine.wait(run_id, timeout=60)
        events = events_of(engine, run_id)
    finally:
        release.set()
        engine.stop()
    assert state.status == "failed"
    [cleaned] = [e for e in events if isinstance(e, TaskCleanedUp)]
    assert cleaned.worktree_removed and not cleaned.branch_deleted
    assert all(f"/{run_id}/tasks/" not in p for p in repo.worktree_paths())
    assert repo.git("show", f"baton/{run_id}/a:draft.txt") == "half\n"


FAKE_AGENT = """#!{python}
import json, os, pathlib, re, subprocess, sys
prompt = sys.argv[-1]
with open({log!r}, "a", encoding="utf-8") as f:
    f.write(json.dumps({{"cwd": os.getcwd(), "args": sys.argv[1:-1], "review": "Review task `" in prompt}}) + "\\n")
if "Review task `" in prompt:
    print("---\\nrecommendation: approve\\n---\\nLooks right.")
else:
    tid = re.search(r"implementing task `([^`]+)`", prompt).group(1)
    pathlib.Path(tid + ".txt").write_text(tid + " by the cli agent\\n")
    if tid == "a":  # a commits its work itself; b leaves it for baton's closing commit
        subprocess.run(["git", "-c", "user.name=Agent", "-c", "user.email=agent@example.com", "-c",
                        "commit.gpgsign=false", "add", "a.txt"], check=True)
        subprocess.run(["git", "-c", "user.name=Agent", "-c", "user.email=agent@example.com", "-c",
                        "commit.gpgsign=false", "commit", "-qm", "a: written by the agent"], check=True)
    print("wrote " + tid + ".txt")
"""


def test_a_task_run_on_the_cli_backend_runs_its_task_template_in_each_worktree_then_checks_reviews_and_merges(
        tmp_path, repo):
    import dataclasses
    import json
    import sys

    from actors.agents import CliBackend, OfflineBackend
    from actors.task_attempt import task_env

    assert task_env(EngineConfig(), OfflineBackend()) is None  # no worktrees: no task runs
    offline = task_env(EngineConfig(worktrees=str(tmp_path / "wt")), OfflineBackend())
    assert offline is not None and offline.turn is None and offline.implementor is None and not offline.refusal
    agent, log = tmp_path / "fake-agent", tmp_path / "calls.jsonl"
    agent.write_text(FAKE_AGENT.format(python=sys.executable, log=str(log)), encoding="utf-8")
    agent.chmod(0o755)
    flow_backend = CliBackend(f"{agent} --plan -p {{prompt}}", "")  # the flow steps' (read-only) template
    config = EngineConfig(agent_slots=2, backend="cli", worktrees=str(repo.worktrees),
                          cli_task_command=f"{agent} --edit -p {{prompt}}")
    env = task_env(config, flow_backend)
    assert env is not None and not env.refusal and env.implementor is not None and env.reviewer is flow_backend
    store = open_store(f"sqlite:///{tmp_path / 'baton.db'}")
    engine = Engine(store, FlowRegistry([]), config, tasks=dataclasses.replace(env, git_env=repo.env)).start()
    try:
        run_id = launch(engine, repo, {"tasks/a.md": task_file("a"),
                                       "tasks/b.md": task_file("b", "[a]", checks='["ls a.txt b.txt"]')})
        state = engine.wait(run_id, timeout=60)
        events = events_of(engine, run_id)
    finally:
        engine.stop()
    assert state.status == "completed", state.reason
    integrate = f"baton/{run_id}/integrate"
    assert repo.git("show", f"{integrate}:b.txt") == "b by the cli agent\n"
    assert {"a.txt", "b.txt"} <= set(repo.git("ls-tree", "--name-only", integrate).split())
    # a's own commit is recorded as the agent's, what b left is committed by baton; b's check passed in its
    # worktree; each task reviewed and merged.
    committed = [(e.step_id, e.by, e.files, e.message) for e in events if type(e).__name__ == "TaskCommitted"]
    assert committed == [("a", "agent", ["a.txt"], "a: written by the agent"),
                         ("b", "baton", ["b.txt"], "b: what the implementor left uncommitted")]
    [check] = [e for e in events if isinstance(e, TaskChecked)]
    assert (check.step_id, check.ok) == ("b", True)
    assert [(e.step_id, e.approved) for e in events if type(e).__name__ == "TaskReviewed"] == [("a", True),
                                                                                              ("b", True)]
    assert sorted(e.step_id for e in events if isinstance(e, TaskMerged)) == ["a", "b"]
    # The implementor ran the task template, the reviewer the flow template, both in the task's worktree.
    calls = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    worktrees = {e.step_id: e.path for e in events if type(e).__name__ == "TaskWorktreeCreated"}
    assert [(c["args"], c["review"]) for c in calls] == [(["--edit", "-p"], False), (["--plan", "-p"], True)] * 2
    assert [c["cwd"] for c in calls] == [worktrees["a"]] * 2 + [worktrees["b"]] * 2
    assert repo.branches() == [integrate, "main"]
    assert repo.git("status", "--porcelain") == ""


def test_a_cli_implementor_that_exits_non_zero_fails_its_task_with_its_stderr_and_leaves_no_worktree(
        tmp_path, repo):
    import dataclasses
    import sys

    from actors.agents import CliBackend
    from actors.task_attempt import task_env

    agent = tmp_path / "broken-agent"
    agent.write_text(f"#!{sys.executable}\nimport sys\nprint('out of quota', file=sys.stderr)\nsys.exit(3)\n")
    agent.chmod(0o755)
    config = EngineConfig(agent_slots=2, backend="cli", worktrees=str(repo.worktrees),
                          cli_task_command=f"{agent} {{prompt}}")
    env = task_env(config, CliBackend(f"{agent} {{prompt}}", ""))
    assert env is not None
    store = open_store(f"sqlite:///{tmp_path / 'baton.db'}")
    engine = Engine(store, FlowRegistry([]), config, tasks=dataclasses.replace(env, git_env=repo.env)).start()
    try:
        run_id = launch(engine, repo, {"tasks/a.md": task_file("a")})
        state = engine.wait(run_id, timeout=60)
        events = events_of(engine, run_id)
    finally:
        engine.stop()
    assert state.status == "failed"
    failed = [e for e in events if type(e).__name__ == "TaskFailed"]
    assert [e.will_retry for e in failed] == [True, False]
    assert all("exited with code 3" in e.error and "out of quota" in e.error for e in failed)
    assert not any(type(e).__name__ in ("TaskReviewed", "TaskMerged") for e in events)
    assert all(f"/{run_id}/tasks/" not in p for p in repo.worktree_paths())


def test_the_cli_task_template_may_edit_but_gets_the_flow_templates_refusals_and_never_yolo():
    from actors.agents import BackendConfigError, CliBackend
    from actors.agents.cli import DEFAULT_TASK_COMMAND

    assert CliBackend(DEFAULT_TASK_COMMAND, task=True).task  # auto-edit: fine for a task
    with pytest.raises(BackendConfigError, match="plan"):  # ... never for a flow step
        CliBackend(DEFAULT_TASK_COMMAND)
    refused = {"sh -c {prompt}": "runs a shell", "env qwen -p {prompt}": "through 'env'",
               "python3 -c {prompt}": "placeholder as code", "qwen --yolo -p {prompt}": "yolo",
               "qwen --approval-mode yolo -p {prompt}": "yolo", "qwen --approval-mode=yolo -p {prompt}": "yolo"}
    for template, why in refused.items():
        with pytest.raises(BackendConfigError, match=why) as caught:
            CliBackend(template, task=True)
        assert "BATON_CLI_TASK_COMMAND" in str(caught.value)
    # The engine's task settings check it at start: a bad template stops the engine, naming the setting.
    from actors.task_attempt import task_env
    with pytest.raises(BackendConfigError, match="BATON_CLI_TASK_COMMAND 'bash -c {prompt}' runs a shell"):
        task_env(EngineConfig(worktrees="/tmp/unused", cli_task_command="bash -c {prompt}"),
                 CliBackend("qwen --approval-mode plan -p {prompt}"))


def test_a_task_whose_model_server_fails_is_retried_then_failed_and_its_worktree_removed(tmp_path, repo, llm):
    # No route for task a's implementor: the server answers 404 ("model not found") to every turn.
    engine = make_engine(tmp_path, repo, llm)
    try:
        run_id = launch(engine, repo, {"tasks/a.md": task_file("a")})
        state = engine.wait(run_id, timeout=60)
        events = events_of(engine, run_id)
    finally:
        engine.stop()
    assert state.status == "failed" and state.tasks is not None
    failed = [e for e in events if type(e).__name__ == "TaskFailed"]
    assert [e.will_retry for e in failed] == [True, False]  # one retry (the launch's default), then failed
    created = [e.reused for e in events if type(e).__name__ == "TaskWorktreeCreated"]
    assert created == [False, True]  # the retry continued in the same worktree
    [cleaned] = [e for e in events if isinstance(e, TaskCleanedUp)]
    assert cleaned.worktree_removed and not cleaned.branch_deleted
    assert all(f"/{run_id}/tasks/" not in p for p in repo.worktree_paths())
