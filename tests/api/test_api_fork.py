"""Fork and retry through the HTTP API: who may, what is refused (appending nothing), and what GET shows."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from api.http.app import create_app
from api.runtime import Runtime
from api.settings import Settings
from tests.api.access import authed_client, issue_tokens

JSON_BODY = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def runtime(tmp_path_factory) -> Iterator[Runtime]:
    db = tmp_path_factory.mktemp("fork") / "baton.db"
    rt = Runtime(Settings(db=f"sqlite:///{db}", flows=("tests.api.api_flows", "tests.api.api_runs_flows"))).start()
    try:
        yield rt
    finally:
        rt.stop()


@pytest.fixture(scope="module")
def tokens(runtime) -> dict[str, str]:
    return issue_tokens(runtime.store, "fork-")


def _client(runtime: Runtime, token: str) -> TestClient:
    return authed_client(create_app(runtime), token, headers=JSON_BODY)


@pytest.fixture(scope="module")
def cancelled_run(runtime, tokens) -> str:
    """An api-gate run cancelled while its gate waited: draft completed, gate and publish skipped."""
    with _client(runtime, tokens["operator"]) as c:
        run_id = c.post("/api/runs", json={"flow": "api-gate", "question": "ship?"}).json()["run_id"]
        runtime.engine.wait(run_id, {"paused"}, timeout=10)
        assert c.post(f"/api/runs/{run_id}/cancel", json={}).status_code == 200
    return run_id


def test_retry_of_a_cancelled_gate_keeps_the_draft_and_waits_again(runtime, tokens, cancelled_run):
    with _client(runtime, tokens["operator"]) as c:
        r = c.post(f"/api/runs/{cancelled_run}/steps/gate/retry")
        assert r.status_code == 201, r.text
        child = r.json()
        assert child["parent_run_id"] == cancelled_run and child["from_step"] == "gate"
        assert r.headers["location"] == f"/api/runs/{child['run_id']}"
        state = runtime.engine.wait(child["run_id"], {"paused"}, timeout=10)
        assert state.steps["draft"].status == "completed" and state.steps["draft"].attempt == 1
        runtime.projector.wait_for(runtime.store.head())
        got = c.get(f"/api/runs/{child['run_id']}").json()
        assert (got["run"]["parent_run_id"], got["run"]["parent_link"], got["run"]["forked_from"]) == (
            cancelled_run, "retry", "gate")
        assert {s["step_id"]: s["kept_from"] for s in got["steps"]} == {
            "draft": cancelled_run, "gate": "", "publish": ""}, "draft's outcome is the parent's, not run again"
        parent = c.get(f"/api/runs/{cancelled_run}").json()
        assert [k["run_id"] for k in parent["children"]] == [child["run_id"]]


def test_fork_with_a_new_question(runtime, tokens, cancelled_run):
    with _client(runtime, tokens["operator"]) as c:
        r = c.post(f"/api/runs/{cancelled_run}/fork", json={"from_step": "draft", "inputs": {"question": "new?"}})
        assert r.status_code == 201, r.text
        state = runtime.engine.wait(r.json()["run_id"], {"paused"}, timeout=10)
        assert state.launched.input["question"] == "new?" and "new?" in state.steps["draft"].prompt


@pytest.mark.parametrize(("path", "body", "status", "slug"), [
    ("/steps/draft/retry", None, 409, "not-retryable"),  # it completed: fork it instead
    ("/steps/nope/retry", None, 404, "unknown-step"),
    ("/fork", {"from_step": "nope"}, 404, "unknown-step"),
    ("/fork", {}, 422, "invalid-body"),
    ("/fork", {"from_step": "draft", "inputs": {"question": " "}}, 422, "invalid-launch"),
])
def test_refused_forks_append_nothing(runtime, tokens, cancelled_run, path, body, status, slug):
    head = runtime.store.head()
    with _client(runtime, tokens["operator"]) as c:
        r = c.post(f"/api/runs/{cancelled_run}{path}", **({"json": body} if body is not None else {}))
    assert r.status_code == status, r.text
    assert r.json()["type"].endswith(slug)
    assert runtime.store.head() == head


def test_a_viewer_may_not_fork(runtime, tokens, cancelled_run):
    with _client(runtime, tokens["viewer"]) as c:
        assert c.post(f"/api/runs/{cancelled_run}/fork", json={"from_step": "draft"}).status_code == 403
        assert c.post(f"/api/runs/{cancelled_run}/steps/gate/retry").status_code == 403


def test_a_subflow_child_is_shown_nested_and_a_map_step_with_its_results(runtime, tokens):
    with _client(runtime, tokens["operator"]) as c:
        parent = c.post("/api/runs", json={"flow": "api-parent", "question": "deep?"}).json()["run_id"]
        state = runtime.engine.wait(parent, timeout=10)
        assert state.status == "completed"
        runtime.projector.wait_for(runtime.store.head())
        got = c.get(f"/api/runs/{parent}").json()
        [child] = got["children"]
        assert (child["flow"], child["status"], child["parent_link"], child["forked_from"]) == (
            "api-map", "completed", "subflow", "child")
        assert got["steps"][0]["kind"] == "subflow" and "# api-map: completed" in got["report"]
        nested = c.get(f"/api/runs/{child['run_id']}").json()
        assert nested["run"]["parent_run_id"] == parent and nested["run"]["question"] == "Nested: deep?"
        review = nested["steps"][1]
        assert review["kind"] == "map" and review["status"] == "completed"
        assert len(review["fields"]["results"]) == 2
