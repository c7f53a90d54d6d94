"""The task-run routes (DESIGN §12) through the app, with roles on, a real repository and the scripted server."""

from __future__ import annotations

import json
import time

import pytest

from actors.workspace.projects import ProjectBook
from api.http.app import create_app
from api.runtime import Runtime
from api.settings import Settings
from tests.api.access import authed_client, issue_tokens
from tests.integration.scripted_llm import Call, ScriptedLLM, TextTurn, ToolTurn
from tests.integration.task_repo import make_task_repo

TASK = "---\nid: a\ntitle: Task a\nagent: implementation-specialist\nchecks: [\"ls a.txt\"]\n---\nWrite a.txt.\n"


@pytest.fixture
def llm():
    server = ScriptedLLM().start()
    yield server
    server.stop()


def test_a_task_run_is_launched_for_a_registered_project_watched_and_refuses_words_that_do_not_apply(
        tmp_path, sqlite_url, llm):
    repo = make_task_repo(tmp_path)
    (repo.root / "tasks").mkdir()
    (repo.root / "tasks" / "a.md").write_text(TASK)
    (repo.root / "broken").mkdir()
    (repo.root / "broken" / "a.md").write_text(TASK.replace("depends", "x").replace("title: Task a\n", ""))
    # The implementor's first turn writes out of its worktree (a tool error) and sends broken JSON (malformed).
    llm.route("coder", "implementing task `a`", [
        ToolTurn([Call("write_file", {"path": "../escape.txt", "content": "x"}), Call("write_file", "{not json")]),
        ToolTurn([Call("write_file", {"path": "a.txt", "content": "a\n"}), Call("commit", {"message": "add a"})]),
        TextTurn("ok")])
    llm.route("coder", "Review task `a`", [TextTurn("---\nrecommendation: approve\n---\nfine")])
    settings = Settings(db=sqlite_url, agent="openai", openai_base_url=llm.base_url, model="coder",
                        worktrees=str(tmp_path / "worktrees"))
    runtime = Runtime(settings).start()
    try:
        tokens = issue_tokens(runtime.store)
        ProjectBook(runtime.store, time.time).add("demo", repo.root, allow=[["ls"]], by="admin")
        app = create_app(runtime)
        with authed_client(app, tokens["viewer"]) as viewer, authed_client(app, tokens["operator"]) as operator:
            assert viewer.post("/api/projects/demo/task-runs", json={}).status_code == 403
            missing = operator.post("/api/projects/nope/task-runs", json={})
            assert missing.status_code == 404 and missing.json()["type"].endswith("unknown-project")
            broken = operator.post("/api/projects/demo/task-runs", json={"tasks_dir": "broken"})
            assert broken.status_code == 422 and "broken/a.md" in broken.json()["detail"]
            outside = operator.post("/api/projects/demo/task-runs", json={"tasks_dir": "../.."})
            assert outside.status_code == 422 and "inside the project" in outside.json()["detail"]
            made = operator.post("/api/projects/demo/task-runs", json={"title": "add a"})
            assert made.status_code == 201, made.text
            run_id = made.json()["run_id"]
            assert made.json()["tasks"] == ["a"]
            state = runtime.engine.wait(run_id, timeout=60)
            assert state.status == "completed", state.reason
            tasks = viewer.get(f"/api/runs/{run_id}/tasks").json()
            [a] = tasks["tasks"]
            assert (a["status"], a["reason"], a["review_rounds"], a["checks_failed"]) == ("done", "merged", 1, 0)
            assert a["branch"] == f"baton/{run_id}/a" and a["branch_deleted"] and a["worktree_removed"]
            assert len(a["commits"]) == 1 and a["merge_commit"] == tasks["integration_head"]
            assert a["last_activity"] > 0
            assert (a["tool_calls"], a["tool_errors"], a["malformed_calls"]) == (4, 1, 1)
            assert tasks["landing"]["gate"] is None and tasks["landing"]["integration_worktree_removed"]
            calls = [e for e in viewer.get(f"/api/runs/{run_id}/events").json() if e["type"] == "ToolResult"]
            assert [(e["data"]["tool"], e["data"]["outcome"]) for e in calls] == [
                ("write_file", "error"), ("write_file", "malformed"), ("write_file", "ok"), ("commit", "ok")]
            assert viewer.post(f"/api/runs/{run_id}/steps/a/abort", json={}).status_code == 403
            late = operator.post(f"/api/runs/{run_id}/steps/a/message", json={"text": "hello"})
            assert late.status_code == 409, late.text
            unknown = operator.post(f"/api/runs/{run_id}/steps/zz/retry", json={})
            assert unknown.status_code == 409 and "has ended" in unknown.json()["detail"]
            assert repo.branches() == [f"baton/{run_id}/integrate", "main"]
            # Landing, the closing approval: fast-forward only, never in a checkout.
            with authed_client(app, tokens["approver"]) as approver:
                assert operator.post(f"/api/runs/{run_id}/land", json={}).status_code == 403
                assert approver.post(f"/api/runs/{run_id}/land", json={}).status_code == 409  # no target pinned
                refused = approver.post(f"/api/runs/{run_id}/land", json={"target": "main"}).json()
                assert not refused["landed"] and "checked out" in refused["reason"]
                repo.git("branch", "release", "main")
                landed = approver.post(f"/api/runs/{run_id}/land", json={"target": "release"}).json()
                assert landed["landed"] and landed["commit"] == tasks["integration_head"]
                assert repo.git("rev-parse", "release").strip() == tasks["integration_head"]
                assert repo.git("rev-parse", "main").strip() == repo.base  # the checkout was not touched
                kinds = [e["type"] for e in viewer.get(f"/api/runs/{run_id}/events").json()][-2:]
                assert kinds == ["LandingRefused", "RunLanded"]
    finally:
        runtime.stop()


def test_a_task_run_with_a_target_waits_at_its_landing_gate_which_the_approval_routes_decide(
        tmp_path, sqlite_url, llm):
    repo = make_task_repo(tmp_path)
    (repo.root / "tasks").mkdir()
    (repo.root / "tasks" / "a.md").write_text(TASK)
    repo.git("branch", "release", "main")

    (repo.root / "more").mkdir()
    (repo.root / "more" / "b.md").write_text(TASK.replace("id: a", "id: b").replace("a.txt", "b.txt"))
    for tid in "ab":
        llm.route("coder", f"implementing task `{tid}`", [
            ToolTurn([Call("write_file", {"path": f"{tid}.txt", "content": f"{tid}\n"}),
                      Call("commit", {"message": f"add {tid}"})]),
            TextTurn("ok")])
        llm.route("coder", f"Review task `{tid}`", [TextTurn("---\nrecommendation: approve\n---\nfine")])
    settings = Settings(db=sqlite_url, agent="openai", openai_base_url=llm.base_url, model="coder",
                        worktrees=str(tmp_path / "worktrees"))
    runtime = Runtime(settings).start()
    try:
        tokens = issue_tokens(runtime.store)
        ProjectBook(runtime.store, time.time).add("demo", repo.root, allow=[["ls"]], by="admin")
        app = create_app(runtime)
        with (authed_client(app, tokens["viewer"]) as viewer, authed_client(app, tokens["operator"]) as operator,
              authed_client(app, tokens["approver"]) as approver):
            bad = operator.post("/api/projects/demo/task-runs", json={"target": "release", "land_timeout_s": -1})
            assert bad.status_code == 422
            run_id = operator.post("/api/projects/demo/task-runs", json={"target": "release"}).json()["run_id"]
            gate = lambda s: s.terminal or s.steps["land"].status == "paused"  # noqa: E731
            paused = runtime.engine.wait(run_id, gate, timeout=60)
            assert paused.status == "paused"
            # Waiting like any approval: the run is paused, its gate step paused with a prompt, the plan says why
            # (read once the read tables have passed the pause: min_position).
            seen = f"min_position={paused.position}"
            run = viewer.get(f"/api/runs/{run_id}?{seen}").json()
            assert run["run"]["status"] == "paused", run["run"]
            land = {s["step_id"]: s for s in run["steps"]}["land"]
            assert land["status"] == "paused" and land["kind"] == "approval", land
            assert f"baton/{run_id}/integrate" in land["prompt"]
            listed = [r for r in viewer.get(f"/api/runs?{seen}").json()["runs"] if r["run_id"] == run_id]
            assert listed and listed[0]["status"] == "paused"
            [entry] = [e for e in viewer.get("/api/plan").json()["planned_queued"] if e["run_id"] == run_id]
            assert entry["reason"] == "approval" and entry["tasks"]["a"]["status"] == "done"
            # The approval route decides it, with its role.
            assert operator.post(f"/api/runs/{run_id}/steps/land/approve", json={}).status_code == 403
            approved = approver.post(f"/api/runs/{run_id}/steps/land/approve", json={"comment": "ship it"})
            assert approved.status_code == 200, approved.text
            state = runtime.engine.wait(run_id, timeout=60)
            assert state.status == "completed", state.reason
            head = repo.git("rev-parse", f"baton/{run_id}/integrate").strip()
            assert repo.git("rev-parse", "release").strip() == head
            kinds = [e["type"] for e in viewer.get(f"/api/runs/{run_id}/events").json()]
            assert kinds[-4:] == ["StepResumed", "RunLanded", "IntegrationRemoved", "RunCompleted"]
            assert viewer.get(f"/api/runs/{run_id}/tasks").json()["landing"] == {
                "target": "release", "gate": "completed", "outcome": "landed", "detail": head,
                "integration_worktree_removed": True}
            # `land` of a run at its gate approves the gate; the landing the run records is the answer.
            second = operator.post("/api/projects/demo/task-runs",
                                   json={"target": "release", "base": "release", "tasks_dir": "more"}).json()["run_id"]
            second_state = runtime.engine.wait(second, gate, timeout=60)
            assert second_state.status == "paused", second_state.report
            other = approver.post(f"/api/runs/{second}/land", json={"target": "main"})
            assert other.status_code == 409 and "waits to land on release" in other.json()["detail"]
            landed = approver.post(f"/api/runs/{second}/land", json={})
            assert landed.status_code == 200, landed.text
            assert landed.json()["landed"] and landed.json()["target"] == "release", landed.json()
            assert repo.git("rev-parse", "release").strip() == landed.json()["commit"] != head
            assert runtime.engine.wait(second, timeout=60).status == "completed"
    finally:
        runtime.stop()


def _run_one_task(tmp_path, sqlite_url, llm, check):
    """Register a repository with task `a`, launch it through the route, and give ``check`` the viewer, the
    run id, the runtime and the repository once the run ended."""
    repo = make_task_repo(tmp_path)
    (repo.root / "tasks").mkdir()
    (repo.root / "tasks" / "a.md").write_text(TASK)
    settings = Settings(db=sqlite_url, agent="openai", openai_base_url=llm.base_url, model="coder",
                        worktrees=str(tmp_path / "worktrees"))
    runtime = Runtime(settings).start()
    try:
        tokens = issue_tokens(runtime.store)
        ProjectBook(runtime.store, time.time).add("demo", repo.root, allow=[["ls"]], by="admin")
        app = create_app(runtime)
        with authed_client(app, tokens["viewer"]) as viewer, authed_client(app, tokens["operator"]) as operator:
            made = operator.post("/api/projects/demo/task-runs", json={})
            assert made.status_code == 201, made.text
            run_id = made.json()["run_id"]
            state = runtime.engine.wait(run_id, timeout=60)
            assert state.status == "completed", state.reason
            check(viewer, run_id, runtime, repo)
    finally:
        runtime.stop()


def test_the_reviewers_read_calls_are_recorded_as_its_own_and_counted_apart_from_the_implementors(
        tmp_path, sqlite_url, llm):
    llm.route("coder", "implementing task `a`", [
        ToolTurn([Call("write_file", {"path": "a.txt", "content": "a\n"}), Call("commit", {"message": "add a"})]),
        TextTurn("ok")])
    # The reviewer reads the file it reviews, tries a path out of the worktree (a tool error), then approves.
    llm.route("coder", "Review task `a`", [
        ToolTurn([Call("read_file", {"path": "a.txt"}), Call("read_file", {"path": "../../escape.txt"})]),
        TextTurn("---\nrecommendation: approve\n---\nread a.txt: fine")])

    def check(viewer, run_id, runtime, repo):
        events = viewer.get(f"/api/runs/{run_id}/events").json()
        calls = [(e["type"], e["data"]["tool"], e["data"]["role"]) for e in events
                 if e["type"] in ("ToolCalled", "ToolResult")]
        assert calls == [("ToolCalled", "write_file", ""), ("ToolResult", "write_file", ""),
                         ("ToolCalled", "commit", ""), ("ToolResult", "commit", ""),
                         ("ToolCalled", "read_file", "reviewer"), ("ToolResult", "read_file", "reviewer"),
                         ("ToolCalled", "read_file", "reviewer"), ("ToolResult", "read_file", "reviewer")]
        kinds = [e["type"] for e in events]
        # Recorded before the reviewer's next turn read them, and so before its verdict.
        last_call = max(i for i, k in enumerate(kinds) if k == "ToolResult")
        assert last_call < kinds.index("TaskReviewed")
        read = [e["data"] for e in events if e["type"] == "ToolResult" and e["data"]["role"] == "reviewer"]
        assert read[0]["ok"] and "a" in read[0]["result"]
        assert (read[1]["ok"], read[1]["outcome"]) == (False, "error") and read[1]["error"]
        # What the reviewer's model was sent back is what the log holds.
        second_turn = [r for r in llm.requests if "Review task `a`" in json.dumps(r)][-1]
        sent = [m["content"] for m in second_turn["messages"] if m["role"] == "tool"]
        assert sent == [r["result"] for r in read]
        [a] = viewer.get(f"/api/runs/{run_id}/tasks").json()["tasks"]
        assert (a["tool_calls"], a["tool_errors"], a["malformed_calls"]) == (2, 0, 0)
        assert (a["review_tool_calls"], a["review_tool_errors"], a["review_malformed_calls"]) == (2, 1, 0)
        assert a["anomalies"] == 0
        # The run's step view lists the task's calls with who made them.
        [step] = [s for s in viewer.get(f"/api/runs/{run_id}").json()["steps"] if s["step_id"] == "a"]
        assert [(c["tool"], c["role"], c["outcome"]) for c in step["tool_calls"]] == [
            ("write_file", "", "ok"), ("commit", "", "ok"), ("read_file", "reviewer", "ok"),
            ("read_file", "reviewer", "error")]

    _run_one_task(tmp_path, sqlite_url, llm, check)


def test_a_tasks_failing_and_malformed_calls_raise_the_anomaly_watch_for_each_of_its_agents(
        tmp_path, sqlite_url, llm):
    escape = Call("read_file", {"path": "../outside.txt"})
    llm.route("coder", "implementing task `a`", [
        ToolTurn([escape] * 3),  # 3 tool errors: under the limit (more than 5)
        ToolTurn([escape] * 3 + [Call("nope_tool", {})]),  # 7: errors (medium), and the first malformed call
        ToolTurn([Call("write_file", {"path": "a.txt", "content": "a\n"}), Call("commit", {"message": "add a"})]),
        TextTurn("ok")])
    llm.route("coder", "Review task `a`", [
        ToolTurn([Call("read_file", "{not json")]),  # the reviewer's own first malformed call
        TextTurn("---\nrecommendation: approve\n---\nfine")])

    def check(viewer, run_id, runtime, repo):
        events = viewer.get(f"/api/runs/{run_id}/events").json()
        found = [(e["data"]["kind"], e["data"]["severity"], e["data"]["action"], e["data"]["detail"].split(":")[0])
                 for e in events if e["type"] == "AnomalyDetected"]
        assert found == [("degradation", "high", "notify", "implementor"), ("errors", "medium", "notify", "implementor"),
                         ("degradation", "high", "notify", "reviewer")]
        kinds = [e["type"] for e in events]
        # Each anomaly right after the batch of calls that raised it, the task going on (notify) to its merge.
        first = kinds.index("AnomalyDetected")
        assert kinds[first - 1] == "ToolResult" and "TaskMerged" in kinds[first:]
        errors = [e["data"] for e in events if e["type"] == "AnomalyDetected"][1]
        assert "7 tool errors" in errors["detail"] and errors["step_id"] == "a" and errors["attempt"] == 1
        [a] = viewer.get(f"/api/runs/{run_id}/tasks").json()["tasks"]
        assert (a["status"], a["anomalies"]) == ("done", 3)
        assert (a["tool_calls"], a["tool_errors"], a["malformed_calls"]) == (9, 6, 1)
        assert (a["review_tool_calls"], a["review_malformed_calls"]) == (1, 1)
        assert viewer.get(f"/api/runs/{run_id}").json()["run"]["anomalies"] == 3

    _run_one_task(tmp_path, sqlite_url, llm, check)
