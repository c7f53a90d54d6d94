"""A tool-using run through the HTTP API (DESIGN §11): GET /api/runs/{id} shows each step's calls and totals."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from api.http.app import create_app
from api.runtime import Runtime
from api.settings import Settings
from projections.frames import Framer
from tests.api.access import authed_client, bearer, issue_tokens
from tests.integration.scripted_llm import Call, ScriptedLLM, TextTurn, ToolTurn
from tests.integration.workspace_repo import make_repo


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedLLM]:
    server = ScriptedLLM().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def runtime(tmp_path_factory, llm) -> Iterator[Runtime]:
    db = tmp_path_factory.mktemp("tools") / "baton.db"
    rt = Runtime(Settings(db=f"sqlite:///{db}", agent="openai", openai_base_url=llm.base_url,
                          model="scripted")).start()
    try:
        yield rt
    finally:
        rt.stop()


@pytest.fixture(scope="module")
def client(runtime) -> Iterator[TestClient]:
    tokens = issue_tokens(runtime.store, "tools-")
    with authed_client(create_app(runtime), tokens["admin"]) as c:
        yield c


def test_a_code_review_of_a_project_reads_it_and_the_run_shows_its_calls(client, runtime, llm, tmp_path):
    repo = make_repo(tmp_path)
    assert client.post("/api/projects", json={"project_id": "demo", "path": str(repo.root)}).status_code == 201
    answer = ('---\nrecommendation: approve\nsummary: fine\n---\n'
              'E1: "retries = 3" (source: src/app.py:11; trust: direct)\n')
    llm.script("scripted", [ToolTurn([Call("read_file", {"path": "src/app.py", "start_line": 11, "end_line": 11}),
                                      Call("nope", {})]),
                            TextTurn(answer)])
    r = client.post("/api/runs", json={"flow": "code-review", "question": "Review handle_request",
                                       "project_id": "demo", "band": "small"})
    assert r.status_code == 201, r.text
    run_id = r.json()["run_id"]
    runtime.engine.wait(run_id, timeout=30)
    runtime.projector.wait_for(runtime.store.head())
    detail = client.get(f"/api/runs/{run_id}").json()
    steps = {s["step_id"]: s for s in detail["steps"]}
    calls = steps["correctness"]["tool_calls"]
    assert [(c["tool"], c["ok"], c["outcome"]) for c in calls] == [("read_file", True, "ok"),
                                                                   ("nope", False, "malformed")]
    assert calls[0]["arguments"] == '{"path": "src/app.py", "start_line": 11, "end_line": 11}'
    assert steps["correctness"]["usage"]["tool_calls"] == 2 and len(steps["correctness"]["usage"]["turns"]) == 2
    every = sum(len(s["tool_calls"]) for s in detail["steps"])
    assert detail["run"]["usage"]["tool_calls"] == every >= 2
    assert detail["run"]["usage"]["prompt_tokens"] == sum(s["usage"].get("prompt_tokens", 0) for s in detail["steps"])
    assert "**Evidence:" in detail["report"] and "verified" in detail["report"]
    # The same calls reach stream consumers as durable frames.
    framer = Framer()
    frames = [f for rec in runtime.store.read_stream(f"run-{run_id}") for f in framer.frames(rec)]
    kinds = [f["type"] for f in frames if f["type"].startswith("tool_")]
    assert kinds.count("tool_call") == kinds.count("tool_result") == every
    first = next(f for f in frames if f["type"] == "tool_result")
    assert {"run_id", "step_id", "call_id", "ok", "bytes", "sha256"} <= set(first)
    assert "retries = 3" in first["result"] and first["result_cut"] is False


def test_viewers_list_projects_but_cannot_register_one(client, runtime, tmp_path):
    viewer = issue_tokens(runtime.store, "tools-v-")["viewer"]
    assert client.get("/api/projects", headers=bearer(viewer)).status_code == 200
    r = client.post("/api/projects", json={"project_id": "x", "path": str(tmp_path)}, headers=bearer(viewer))
    assert r.status_code == 403
