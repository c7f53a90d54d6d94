"""Commands and queries through Starlette's TestClient, on a real runtime and SQLite store.

Every refused request must say what is wrong (problem+json naming the field
or the state) and append nothing: ``head()`` is compared before and after.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from starlette.testclient import TestClient

from actors.errors import LaunchInProgress, RunBusy
from api.http.app import create_app
from api.runtime import Runtime
from api.settings import Settings
from tests.projects import register
from tests.api.access import authed_client, bearer, issue_tokens

PROBLEM = "application/problem+json"
JSON_BODY = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def runtime(tmp_path_factory) -> Iterator[Runtime]:
    db = tmp_path_factory.mktemp("routes") / "baton.db"
    settings = Settings(db=f"sqlite:///{db}", flows=("tests.api.api_flows",), max_body_bytes=4096)
    with Runtime(settings).start() as rt:
        register(rt.store, db.parent, "p-launch", "p-list", "p-seed")
        yield rt


@pytest.fixture(scope="module")
def tokens(runtime) -> dict[str, str]:
    return issue_tokens(runtime.store, "routes-")


@pytest.fixture(scope="module")
def client(runtime, tokens) -> Iterator[TestClient]:
    """An admin's client that declares JSON on every request (the bodies below are JSON, or nothing)."""
    with authed_client(create_app(runtime), tokens["admin"], headers=JSON_BODY) as c:
        yield c


def launch(client: TestClient, flow: str = "api-gate", **extra: Any) -> dict[str, Any]:
    r = client.post("/api/runs", json={"flow": flow, "question": "Is the cache safe?", **extra})
    assert r.status_code == 201, r.text
    return r.json()


def paused(runtime: Runtime, run_id: str) -> None:
    """Wait until the run waits for a person, and the read model has seen it (the engine's own
    events are not this client's writes: read-your-writes does not cover them)."""
    runtime.engine.wait(run_id, {"paused"}, timeout=10)
    runtime.projector.wait_for(runtime.store.head())


def ended(runtime: Runtime, run_id: str) -> str:
    status = runtime.engine.wait(run_id, timeout=10).status
    runtime.projector.wait_for(runtime.store.head())
    return status


def quiet(runtime: Runtime) -> int:
    """Wait until no run is moving (each ended or waits for a person); the store's head then."""
    moving = {"paused", "completed", "failed", "rejected", "cancelled"}
    runtime.projector.wait_for(runtime.store.head())
    for status in ("queued", "running"):
        for run in runtime.read_model.list_runs(status=status, limit=500)[0]:
            runtime.engine.wait(run["run_id"], moving, timeout=10)
    return runtime.store.head()


def problem_of(r, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"].startswith("http")
    return body


# -- launch -------------------------------------------------------------------------------------


def test_launch_answers_201_and_the_run_is_readable_at_once(client):
    launched = launch(client, "api-chain", project_id="p-launch", inputs={"repo": "baton"})
    assert launched["created"] is True and launched["position"] > 0
    r = client.get(f"/api/runs/{launched['run_id']}")  # no wait in the test: read-your-writes
    assert r.status_code == 200
    detail = r.json()
    assert detail["run"]["run_id"] == launched["run_id"]
    assert detail["run"]["status"] in ("queued", "running", "completed")
    assert detail["run"]["project_id"] == "p-launch"
    assert [s["step_id"] for s in detail["steps"]] == ["first", "second", "third", "fold"]
    assert all("status" in s for s in detail["steps"])
    assert "report" in detail


def test_same_idempotency_key_same_run_and_one_run_launched(client, runtime):
    body = {"flow": "api-chain", "question": "once only"}
    first = client.post("/api/runs", json=body, headers={"Idempotency-Key": "k-42"})
    again = client.post("/api/runs", json=body, headers={"Idempotency-Key": "k-42"})
    other = client.post("/api/runs", json=body, headers={"Idempotency-Key": "k-43"})
    assert first.status_code == 201 and again.status_code == 200 and other.status_code == 201
    assert again.json() == {**first.json(), "created": False}
    assert other.json()["run_id"] != first.json()["run_id"]
    launches = [e for e in runtime.store.read_all() if e.type == "RunLaunched"
                and e.data["run_id"] == first.json()["run_id"]]
    assert len(launches) == 1
    head = quiet(runtime)
    reused = client.post("/api/runs", json={**body, "question": "another"}, headers={"Idempotency-Key": "k-42"})
    assert problem_of(reused, 422)["field"] == "Idempotency-Key"
    assert runtime.store.head() == head


BAD_LAUNCHES = [
    ("malformed JSON", b'{"flow": "api-chain", "question": ', 400, None),
    ("not an object", b'["api-chain"]', 422, None),
    ("unknown flow", b'{"flow": "no-such-flow", "question": "q"}', 422, "flow"),
    # the flow's name first, as the engine orders its checks: asking for a question of a flow that does
    # not exist sent the person to add one, only to be told next that the flow is unknown
    ("unknown flow, no question", b'{"flow": "no-such-flow"}', 422, "flow"),
    ("missing question", b'{"flow": "api-chain"}', 422, "question"),
    ("blank question", b'{"flow": "api-chain", "question": "   "}', 422, "question"),
    ("empty question", b'{"flow": "api-chain", "question": ""}', 422, "question"),
    ("unknown band", b'{"flow": "api-chain", "question": "q", "band": "huge"}', 422, "band"),
    ("wrong type", b'{"flow": 7, "question": "q"}', 422, "flow"),
    ("unknown field", b'{"flow": "api-chain", "question": "q", "colour": "red"}', 422, "colour"),
    ("inputs not an object", b'{"flow": "api-chain", "question": "q", "inputs": [1]}', 422, "inputs"),
    ("question twice", b'{"flow": "api-chain", "question": "q", "inputs": {"question": "x"}}', 422,
     "inputs.question"),
    ("empty body", b"", 400, None),
    ("inputs nested 1,000 deep", b'{"flow": "api-chain", "question": "q", "inputs": {"x": '
     + b"[" * 1000 + b"]" * 1000 + b"}}", 422, "inputs.x"),
    ("body nested 1,000 deep", b"[" * 1000 + b"]" * 1000, 422, None),
]


@pytest.mark.parametrize("case,body,status,field", BAD_LAUNCHES, ids=[c[0] for c in BAD_LAUNCHES])
def test_bad_launch_is_refused_naming_the_field_and_appends_nothing(client, runtime, case, body, status, field):
    head = quiet(runtime)
    r = client.post("/api/runs", content=body, headers={"Content-Type": "application/json",
                                                         "Idempotency-Key": f"bad-{case}"})
    problem = problem_of(r, status)
    assert problem.get("field") == field
    if case in ("empty question", "blank question"):  # given, not missing: said as it is
        assert "non-empty question" in problem["detail"] and "missing" not in problem["detail"]
    if case.startswith("unknown flow"):
        assert "api-chain" in problem["known"] and "no-such-flow" in problem["detail"]
    assert runtime.store.head() == head


def test_the_seed_002_launch_body_is_accepted_as_the_seed_spells_it(client, runtime):
    from flows.decide import FAST_NOTE

    body = {"project_id": "p-seed", "flow_name": "api-chain", "input": {"question": "Is it fast?", "repo": "x"},
            "fast": True}
    r = client.post("/api/runs", json=body)
    assert r.status_code == 201, r.text
    run_id = r.json()["run_id"]
    assert ended(runtime, run_id) == "completed"
    events = client.get(f"/api/runs/{run_id}/events").json()
    launched = events[0]["data"]
    assert (launched["flow"], launched["band"], launched["fast"], launched["project_id"]) == (
        "api-chain", "small", True, "p-seed")
    assert launched["input"] == {"question": "Is it fast?", "repo": "x"}
    prompts = [e["data"]["prompt"] for e in events if e["type"] == "StepStarted" and e["data"]["kind"] == "agent"]
    assert len(prompts) == 3 and all(p.endswith(FAST_NOTE) for p in prompts)
    assert prompts[0].startswith("Investigate: Is it fast?")
    both = client.post("/api/runs", json={**body, "flow": "api-chain", "question": "Is it fast?", "fast": False})
    assert both.status_code == 201, both.text  # both spellings, agreeing


def test_a_launch_without_a_band_is_small(client, runtime):
    run_id = launch(client, "api-chain")["run_id"]
    first = client.get(f"/api/runs/{run_id}/events").json()[0]
    assert first["data"]["band"] == "small" and first["data"]["fast"] is False


SPELLING_CLASHES = [
    ("flow and flow_name differ", {"flow": "api-chain", "flow_name": "api-gate", "question": "q"}, "flow_name"),
    ("question and input.question differ", {"flow": "api-chain", "question": "q", "input": {"question": "x"}},
     "input.question"),
    ("inputs and input differ", {"flow_name": "api-chain", "input": {"question": "q", "repo": "a"},
                                 "inputs": {"repo": "b"}}, "input.repo"),
    ("input.question not text", {"flow_name": "api-chain", "input": {"question": 7}}, "input.question"),
    ("no flow in either spelling", {"input": {"question": "q"}}, "flow"),
    ("no question in either spelling", {"flow_name": "api-chain", "input": {"repo": "a"}}, "question"),
]


@pytest.mark.parametrize("case,body,field", SPELLING_CLASHES, ids=[c[0] for c in SPELLING_CLASHES])
def test_two_spellings_that_disagree_are_refused_naming_the_field(client, runtime, case, body, field):
    head = quiet(runtime)
    problem = problem_of(client.post("/api/runs", json=body), 422)
    assert problem["field"] == field, problem
    assert runtime.store.head() == head


def test_a_deeply_nested_body_is_refused_on_every_route_and_a_shallow_one_is_not(client, runtime):
    quiet(runtime)
    deep = b'{"reason": ' + b'{"a": ' * 70 + b"1" + b"}" * 70 + b"}"
    problem = problem_of(client.post("/api/runs/some-run/cancel", content=deep), 422)
    assert problem["field"] == "reason.a" and "nested more than 64 levels" in problem["detail"]
    brackets_in_strings = json.dumps({"flow": "api-chain", "question": "[" * 500, "inputs": {"x": [[[1]]]}})
    assert client.post("/api/runs", content=brackets_in_strings).status_code == 201
    quiet(runtime)


def test_an_empty_launch_body_is_its_own_problem_not_malformed_json(client, runtime):
    head = quiet(runtime)
    for body in (b"", b"  \n"):
        problem = problem_of(client.post("/api/runs", content=body), 400)
        assert problem["type"].endswith("/empty-body") and problem["title"] == "The request body is empty"
    problem = problem_of(client.post("/api/runs", content=b"{oops"), 400)
    assert problem["type"].endswith("/malformed-json") and problem["title"] == "The request body is not valid JSON"
    problem = problem_of(client.post("/api/runs", json={"flow": "api-chain"}), 422)
    assert problem["type"].endswith("/invalid-body") and problem["field"] == "question"
    assert runtime.store.head() == head
    run_id = launch(client)["run_id"]  # a decision needs no body: every field has a default
    paused(runtime, run_id)
    r = client.post(f"/api/runs/{run_id}/steps/gate/reject", content=b"")
    assert r.status_code == 200 and r.json()["decision"] == "rejected"


def test_oversized_bodies_are_413_declared_or_chunked(client, runtime):
    head = quiet(runtime)
    big = json.dumps({"flow": "api-chain", "question": "x" * 10_000}).encode()
    problem = problem_of(client.post("/api/runs", content=big), 413)
    assert "4096" in problem["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it arrives
        for _ in range(20):
            yield b" " * 1000

    problem_of(client.post("/api/runs", content=chunks()), 413)
    assert runtime.store.head() == head


# -- approve, reject, cancel --------------------------------------------------------------------


def test_approve_a_waiting_step_then_409_for_a_step_or_run_not_waiting(client, runtime):
    run_id = launch(client)["run_id"]
    paused(runtime, run_id)
    head = quiet(runtime)
    problem = problem_of(client.post(f"/api/runs/{run_id}/steps/draft/approve"), 409)
    assert problem["state"] == "completed" and "draft" in problem["detail"]
    assert runtime.store.head() == head

    r = client.post(f"/api/runs/{run_id}/steps/gate/approve", json={"comment": "ship it"})
    assert r.status_code == 200, r.text
    assert r.json()["decision"] == "approved" and r.json()["position"] > head
    gate = {s["step_id"]: s for s in client.get(f"/api/runs/{run_id}").json()["steps"]}["gate"]
    assert gate["status"] == "completed"  # seen at once: the GET waited for the command's position

    assert ended(runtime, run_id) == "completed"
    head = quiet(runtime)
    for verb in ("approve", "reject"):
        problem = problem_of(client.post(f"/api/runs/{run_id}/steps/gate/{verb}"), 409)
        assert problem["state"] == "completed"
    assert runtime.store.head() == head


def test_an_approval_holds_no_pool_thread_while_the_engine_answers(client, runtime, monkeypatch):
    """approve and reject are awaited on the event loop (``Engine.decide_async``): with no thread of
    the pool to be had, an approval is still carried out, and a refused one still appends nothing."""
    from api.http import routes

    def no_thread(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an approval waited on a thread of the pool")

    run_id = launch(client)["run_id"]
    paused(runtime, run_id)
    head = quiet(runtime)
    monkeypatch.setattr(routes, "run_in_threadpool", no_thread)
    problem = problem_of(client.post(f"/api/runs/{run_id}/steps/draft/reject"), 409)
    assert problem["state"] == "completed" and runtime.store.head() == head
    r = client.post(f"/api/runs/{run_id}/steps/gate/approve", json={"comment": "on the loop"})
    assert r.status_code == 200, r.text
    assert r.json()["decision"] == "approved" and r.json()["position"] > head
    monkeypatch.undo()
    assert ended(runtime, run_id) == "completed"


@pytest.fixture
def own(tmp_path) -> Iterator[tuple[TestClient, Runtime]]:
    """A client on a runtime of this test's own (a run that hangs cannot hold up the others)."""
    settings = Settings(db=f"sqlite:///{tmp_path / 'own.db'}", flows=("tests.api.api_flows",))
    rt = Runtime(settings).start()
    try:
        with authed_client(create_app(rt), issue_tokens(rt.store)["admin"]) as c:
            yield c, rt
    finally:
        rt.stop()


def test_approve_twice_at_once_one_wins_one_is_409_and_the_run_completes(own):
    client, runtime = own
    run_id = launch(client)["run_id"]
    paused(runtime, run_id)
    url = f"/api/runs/{run_id}/steps/gate/approve"
    with ThreadPoolExecutor(2) as pool:
        answers = sorted(r.status_code for r in pool.map(lambda _: client.post(url), range(2)))
    assert answers == [200, 409]
    problem = problem_of(client.post(url), 409)  # and once more, right away
    assert problem["state"] == "completed"
    assert ended(runtime, run_id) == "completed"
    resumed = [e for e in client.get(f"/api/runs/{run_id}/events").json() if e["type"] == "StepResumed"]
    assert len(resumed) == 1


def test_who_acts_is_the_token_never_a_header_or_a_body_field(client, runtime, tokens):
    """Changed with DESIGN §13: X-Baton-User used to be recorded as the approver. Now the principal is,
    and a request naming anyone else (header or ``by``) is refused, 403, with nothing appended."""
    run_id = launch(client)["run_id"]  # as routes-admin
    paused(runtime, run_id)
    head = quiet(runtime)
    url = f"/api/runs/{run_id}/steps/gate/reject"
    as_approver = {**bearer(tokens["approver"])}
    for claim in ({"headers": {**as_approver, "X-Baton-User": "bo"}, "json": {"comment": "not yet"}},
                  {"headers": as_approver, "json": {"comment": "not yet", "by": "bo"}}):
        problem = problem_of(client.post(url, **claim), 403)
        assert problem["type"].endswith("/identity-mismatch") and "'routes-approver'" in problem["detail"]
    assert runtime.store.head() == head
    r = client.post(url, json={"comment": "not yet", "by": "routes-approver"}, headers=as_approver)  # its own name
    assert r.status_code == 200 and r.json()["decision"] == "rejected"
    assert ended(runtime, run_id) == "rejected"
    events = client.get(f"/api/runs/{run_id}/events").json()
    assert events[0]["data"]["launched_by"] == "routes-admin"
    resumed = [e for e in events if e["type"] == "StepResumed"]
    assert resumed[0]["data"]["by"] == "routes-approver" and resumed[0]["data"]["comment"] == "not yet"
    assert events[-1]["type"] == "RunRejected" and events[-1]["data"]["by"] == "routes-approver"


def test_cancel_then_cancel_again_is_409(client, runtime):
    run_id = launch(client)["run_id"]
    paused(runtime, run_id)
    r = client.post(f"/api/runs/{run_id}/cancel")  # an empty body is fine
    assert r.status_code == 200 and r.json()["run_id"] == run_id
    assert client.get(f"/api/runs/{run_id}").json()["run"]["status"] == "cancelled"
    head = quiet(runtime)
    problem = problem_of(client.post(f"/api/runs/{run_id}/cancel", json={"reason": "again"}), 409)
    assert problem["state"] == "cancelled"
    assert runtime.store.head() == head


def test_cancel_twice_at_once_one_wins(client, runtime):
    # A run that waits for a person: a chain on the offline model can end before either cancel lands.
    run_id = launch(client)["run_id"]
    paused(runtime, run_id)
    url = f"/api/runs/{run_id}/cancel"
    with ThreadPoolExecutor(2) as pool:
        answers = [r for r in pool.map(lambda _: client.post(url, json={"reason": "changed my mind"}), range(2))]
    assert sorted(r.status_code for r in answers) == [200, 409]
    assert [r.json().get("state") for r in answers if r.status_code == 409] == ["cancelled"]
    assert ended(runtime, run_id) == "cancelled"


def test_unknown_run_or_step_is_404_and_appends_nothing(client, runtime):
    run_id = launch(client)["run_id"]
    paused(runtime, run_id)
    head = quiet(runtime)
    for method, path in [("GET", "/api/runs/nope"), ("GET", "/api/runs/nope/report"),
                         ("GET", "/api/runs/nope/events"), ("POST", "/api/runs/nope/cancel"),
                         ("POST", "/api/runs/nope/steps/gate/approve")]:
        assert problem_of(client.request(method, path), 404)["field"] == "run_id", path
    problem = problem_of(client.post(f"/api/runs/{run_id}/steps/nope/reject"), 404)
    assert problem["field"] == "step_id" and "nope" in problem["detail"]
    assert runtime.store.head() == head


def test_bad_command_bodies(client, runtime):
    run_id = launch(client)["run_id"]
    paused(runtime, run_id)
    head = quiet(runtime)
    problem_of(client.post(f"/api/runs/{run_id}/cancel", content=b"{oops"), 400)
    assert problem_of(client.post(f"/api/runs/{run_id}/steps/gate/approve", json={"comment": 3}),
                      422)["field"] == "comment"
    assert problem_of(client.post(f"/api/runs/{run_id}/steps/gate/approve", json={"by": "x", "vote": 1}),
                      422)["field"] == "vote"
    assert runtime.store.head() == head


# -- queries ------------------------------------------------------------------------------------


def test_events_as_json_and_json_lines(client, runtime):
    run_id = launch(client, "api-chain")["run_id"]
    assert ended(runtime, run_id) == "completed"
    events = client.get(f"/api/runs/{run_id}/events").json()
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "RunLaunched" and events[-1]["type"] == "RunCompleted"
    for e in events:
        assert {"position", "version", "type", "data", "metadata", "recorded_at", "hash"} <= set(e)
    for kwargs in ({"params": {"format": "jsonl"}}, {"headers": {"Accept": "application/x-ndjson"}}):
        r = client.get(f"/api/runs/{run_id}/events", **kwargs)
        assert r.headers["content-type"].startswith("application/x-ndjson")
        assert [json.loads(line) for line in r.text.splitlines()] == events
    assert problem_of(client.get(f"/api/runs/{run_id}/events?format=xml"), 422)["field"] == "format"


def test_report_is_markdown_once_the_run_ended(client, runtime):
    waiting = launch(client)["run_id"]
    paused(runtime, waiting)
    assert problem_of(client.get(f"/api/runs/{waiting}/report"), 404)["state"] == "paused"
    run_id = launch(client, "api-chain")["run_id"]
    assert ended(runtime, run_id) == "completed"
    r = client.get(f"/api/runs/{run_id}/report")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/markdown")
    assert r.text.startswith("#") and r.text == client.get(f"/api/runs/{run_id}").json()["report"]


def test_list_runs_filters_and_pages_newest_first(client, runtime):
    ids = [launch(client, "api-chain", project_id="p-list")["run_id"] for _ in range(3)]
    for run_id in ids:
        ended(runtime, run_id)
    page = client.get("/api/runs", params={"project_id": "p-list", "limit": 2}).json()
    assert [r["run_id"] for r in page["runs"]] == ids[::-1][:2] and page["next_cursor"]
    rest = client.get("/api/runs", params={"project_id": "p-list", "cursor": page["next_cursor"]}).json()
    assert [r["run_id"] for r in rest["runs"]] == ids[:1] and rest["next_cursor"] is None
    done = client.get("/api/runs", params={"project_id": "p-list", "status": "completed", "flow": "api-chain"})
    assert len(done.json()["runs"]) == 3
    assert client.get("/api/runs", params={"project_id": "p-list", "flow": "api-gate"}).json()["runs"] == []
    assert problem_of(client.get("/api/runs?status=happy"), 422)["field"] == "status"
    assert problem_of(client.get("/api/runs?limit=lots"), 422)["field"] == "limit"
    assert problem_of(client.get("/api/runs?min_position=-1"), 422)["field"] == "min_position"


def test_list_runs_finds_text_in_sql_across_pages(client, runtime):
    """?q= searches every run (not one loaded page): id, flow, question or project, ignoring case;
    % and _ are plain characters; paging works within the matches; a search too long is 422."""
    zebra = [launch(client, "api-chain", question=f"Why is the ZEBRA-{i} 50%_slow?")["run_id"] for i in range(3)]
    other = launch(client, "api-chain", question="Why is the giraffe 50% slow?")["run_id"]
    for run_id in (*zebra, other):
        ended(runtime, run_id)
    found = client.get("/api/runs", params={"q": "zebra", "limit": 2}).json()
    assert [r["run_id"] for r in found["runs"]] == zebra[::-1][:2] and found["next_cursor"]
    rest = client.get("/api/runs", params={"q": "zebra", "cursor": found["next_cursor"]}).json()
    assert [r["run_id"] for r in rest["runs"]] == zebra[:1] and rest["next_cursor"] is None
    assert [r["run_id"] for r in client.get("/api/runs", params={"q": "50%_S"}).json()["runs"]] == zebra[::-1]
    assert [r["run_id"] for r in client.get("/api/runs", params={"q": other.lower()}).json()["runs"]] == [other]
    assert client.get("/api/runs", params={"q": "zebra", "flow": "api-gate"}).json()["runs"] == []
    assert client.get("/api/runs", params={"q": "zebra", "project_id": "nope"}).json()["runs"] == []
    assert problem_of(client.get("/api/runs", params={"q": "z" * 201}), 422)["field"] == "q"
    assert problem_of(client.get("/api/runs", params={"q": "a\x00b"}), 422)["field"] == "q"


def test_flows_plan_health(client, runtime):
    flows = {f["name"]: f for f in client.get("/api/flows").json()}
    assert [s["step_id"] for s in flows["api-gate"]["steps"]] == ["draft", "gate", "publish"]
    assert {"name", "category", "description", "bands", "steps"} <= set(flows["research"])
    plan = client.get("/api/plan").json()
    assert {"in_progress", "planned_queued", "new_queued"} <= set(plan)
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["head"] == runtime.store.head()
    assert {part: health[part]["status"] for part in ("engine", "projector", "store")} == {
        "engine": "ok", "projector": "ok", "store": "ok"}


def test_nodes_lists_this_node_alive_and_the_runs_it_drives(client, runtime):
    run = launch(client)
    paused(runtime, run["run_id"])
    nodes = client.get("/api/nodes").json()
    me = next(n for n in nodes if n["node"] == runtime.engine.config.node)
    assert me["alive"] and me["lease_expires_at"] > 0 and not me["member"]  # SQLite: no cluster
    assert run["run_id"] in me["paused"] and run["run_id"] not in me["driving"]


def test_health_is_503_when_the_store_cannot_be_read(client, runtime, monkeypatch):
    def broken() -> int:
        raise OSError("disk gone")

    monkeypatch.setattr(runtime.store, "head", broken)
    r = client.get("/api/health")
    assert r.status_code == 503
    health = r.json()
    assert health["status"] == "down" and health["store"]["status"] == "down"
    assert "disk gone" in health["store"]["error"]
    assert health["engine"]["status"] == "ok" and health["projector"]["status"] == "ok"


def test_unknown_routes_and_methods_are_problems(client):
    problem_of(client.get("/api/nothing-here"), 404)
    problem_of(client.delete("/api/runs"), 405)


def test_openapi_describes_every_route(client):
    r = client.get("/api/openapi.json")
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    paths = {route.path for route in client.app.routes if route.path.startswith("/api/")}  # not the web console
    assert paths <= set(doc["paths"]), paths - set(doc["paths"])
    schemas = doc["components"]["schemas"]
    assert {"LaunchRequest", "Problem", "RunDetail", "Frame"} <= set(schemas)
    # Two spellings (DESIGN's flow/question, seed 002's flow_name/input): one of each pair is required.
    assert not schemas["LaunchRequest"].get("required")
    assert schemas["LaunchRequest"]["allOf"] == [
        {"anyOf": [{"required": ["flow"]}, {"required": ["flow_name"]}]},
        {"anyOf": [{"required": ["question"]}, {"required": ["input"]}]}]
    for path, operations in doc["paths"].items():
        for op in operations.values():
            for ref in _refs(op):
                assert ref.split("/")[-1] in schemas, (path, ref)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_an_unexpected_error_is_a_generic_500_problem(runtime, monkeypatch, caplog):
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(runtime.read_model, "list_runs", broken)
    with authed_client(create_app(runtime), issue_tokens(runtime.store)["viewer"],
                       raise_server_exceptions=False) as c:
        problem = problem_of(c.get("/api/runs"), 500)
    assert "secret" not in json.dumps(problem) and "log" in problem["detail"]
    assert any("secret internals" in (r.exc_text or "") or "secret internals" in str(r.exc_info)
               for r in caplog.records)


def test_engine_refusals_are_typed_problems(client, runtime, monkeypatch):
    """The engine's own errors: a run being handed over is a transient 503 with Retry-After,
    a launch already under way (repeated Idempotency-Key) a 409; a bare RuntimeError stays a 500."""
    def busy(run_id: str, *args: Any, **kwargs: Any) -> Any:
        raise RunBusy(run_id)

    def launching(*args: Any, **kwargs: Any) -> Any:
        raise LaunchInProgress("01LAUNCHING")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("engine internals")

    async def busy_deciding(decision: str, run_id: str, *args: Any, **kwargs: Any) -> Any:
        raise RunBusy(run_id)

    monkeypatch.setattr(runtime.engine, "cancel", busy)
    monkeypatch.setattr(runtime.engine, "decide_async", busy_deciding)  # approve and reject (awaited on the loop)
    for path in ("/api/runs/r1/steps/gate/approve", "/api/runs/r1/steps/gate/reject", "/api/runs/r1/cancel"):
        r = client.post(path)
        problem = problem_of(r, 503)
        assert r.headers["retry-after"] == "1", path
        assert problem["type"].endswith("/run-busy") and "r1" in problem["detail"]

    monkeypatch.setattr(runtime.engine, "launch", launching)
    r = client.post("/api/runs", json={"flow": "api-chain", "question": "q"}, headers={"Idempotency-Key": "k"})
    problem = problem_of(r, 409)
    assert problem["state"] == "launching" and problem["type"].endswith("/launch-in-progress")
    assert "retry-after" not in r.headers

    monkeypatch.setattr(runtime.engine, "cancel", broken)
    with authed_client(create_app(runtime), issue_tokens(runtime.store)["operator"],
                       raise_server_exceptions=False) as c:
        problem = problem_of(c.post("/api/runs/r1/cancel"), 500)
    assert problem["type"].endswith("/internal") and "internals" not in json.dumps(problem)
