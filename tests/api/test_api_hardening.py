"""What a poisoned read model and bad parameters did to the API, on both backends.

On PostgreSQL a launch whose question held NUL was accepted (201); the
projector then retried it forever, every later run answered 404 and
``/api/health`` still said ok. ``?flow=%00`` was a 500. ``?cursor=zzz``
answered the first page, ``?min_position`` past the head stale data as if
fresh. Each case: the answer a client now gets, and nothing appended by a
refused command (``head()`` before and after).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from starlette.testclient import TestClient

from api.http.app import create_app
from api.runtime import Runtime
from api.settings import Settings
from eventstore import NewEvent
from flows.events import AnomalyDetected, RunStarted, event_data
from tests.api.access import authed_client, issue_tokens
from tests.pg import database_of_its_own

JSON_BODY = {"Content-Type": "application/json"}  # every body below is JSON, or nothing

PROBLEM = "application/problem+json"
FFFD = "\ufffd"


@contextmanager
def _runtime(backend: str, tmp_path_factory: Any) -> Iterator[Runtime]:
    with database_of_its_own(backend, tmp_path_factory.mktemp("hardening")) as url:
        with Runtime(Settings(db=url, flows=("tests.api.api_flows",))).start() as rt:
            yield rt


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def runtime(request, tmp_path_factory) -> Iterator[Runtime]:
    with _runtime(request.param, tmp_path_factory) as rt:
        yield rt


@pytest.fixture(scope="module")
def client(runtime) -> Iterator[TestClient]:
    with authed_client(create_app(runtime), issue_tokens(runtime.store)["admin"], headers=JSON_BODY) as c:
        yield c


def problem_of(r: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == status and body["detail"]
    if field is not None:
        assert body.get("field") == field, body
    return body


def quiet(runtime: Runtime) -> int:
    """The head once no run moves (each ended or waits for a person) and the read side has it all."""
    settled = {"paused", "completed", "failed", "rejected", "cancelled"}
    assert runtime.projector.wait_for(runtime.store.head(), 10), runtime.projector.last_error
    for status in ("queued", "running"):
        for run in runtime.read_model.list_runs(status=status, limit=500)[0]:
            runtime.engine.wait(run["run_id"], settled, timeout=10)
    head = runtime.store.head()
    assert runtime.projector.wait_for(head, 10), runtime.projector.last_error
    return head


def launch(client: TestClient, flow: str = "api-gate", question: str = "fine") -> str:
    r = client.post("/api/runs", json={"flow": flow, "question": question})
    assert r.status_code == 201, r.text
    return r.json()["run_id"]


def paused(runtime: Runtime, client: TestClient) -> str:
    run_id = launch(client)
    runtime.engine.wait(run_id, {"paused"}, timeout=10)
    return run_id


# -- text the read tables cannot hold is refused at the door ------------------------------------

BAD_TEXT = [  # (the raw JSON body, the field named)
    (b'{"flow": "api-chain", "question": "a\\u0000b"}', "question"),
    (b'{"flow": "api-chain", "question": "a\\ud800b"}', "question"),  # a lone surrogate escape
    (b'{"flow": "api-chain", "question": "\\udfff"}', "question"),
    (b'{"flow": "api-chain", "question": "q", "inputs": {"notes": "x\\u0000"}}', "inputs.notes"),
    (b'{"flow": "api-chain", "question": "q", "inputs": {"list": ["ok", "\\udc80"]}}', "inputs.list[1]"),
    (b'{"flow": "api-chain", "question": "q", "inputs": {"k\\u0000": 1}}', "inputs"),
    (b'{"flow": "api-chain", "question": "q", "band": "small\\u0000"}', "band"),
    (b'{"flow": "api-chain", "question": "q", "model": "m\\ud800"}', "model"),
    (b'{"flow": "api-chain", "question": "q", "project_id": "p\\u0000"}', "project_id"),
    (b'{"flow": "api-chain\\u0000", "question": "q"}', "flow"),
]


@pytest.mark.parametrize("body,field", BAD_TEXT, ids=[f for _, f in BAD_TEXT])
def test_a_launch_with_text_the_tables_cannot_hold_is_422_naming_the_field(client, runtime, body, field):
    head = quiet(runtime)
    problem = problem_of(client.post("/api/runs", content=body, headers={"Content-Type": "application/json"}),
                         422, field)
    assert problem["type"].endswith("/unstorable-text")
    assert ("NUL" in problem["detail"]) != ("surrogate" in problem["detail"])
    assert runtime.store.head() == head


def test_a_body_that_is_not_json_even_leniently_is_still_400(client, runtime):
    head = quiet(runtime)
    for body in (b'{"flow": "api-chain", "question": "\\ud800', b'{"flow": NaN, "question": "q"}',
                 b'{"flow": "api-chain", "question": "\xff"}'):
        problem_of(client.post("/api/runs", content=body), 400)
    assert runtime.store.head() == head


def test_decisions_refuse_a_comment_reason_or_name_they_cannot_store(client, runtime):
    run_id = paused(runtime, client)
    head = quiet(runtime)
    for verb in ("approve", "reject"):
        url = f"/api/runs/{run_id}/steps/gate/{verb}"
        problem_of(client.post(url, content=b'{"comment": "ok\\u0000"}'), 422, "comment")
        problem_of(client.post(url, content=b'{"comment": "\\ud83d"}'), 422, "comment")
        problem_of(client.post(url, content=b'{"by": "\\u0000"}'), 422, "by")
    problem_of(client.post(f"/api/runs/{run_id}/cancel", content=b'{"reason": "stop\\u0000"}'), 422, "reason")
    problem_of(client.post(f"/api/runs/{run_id}/cancel", content=b'{"by": "x\\udc00"}'), 422, "by")
    assert runtime.store.head() == head
    # The run still waits, and takes a decision it can store.
    r = client.post(f"/api/runs/{run_id}/steps/gate/approve", json={"comment": "ship it \U0001F680"})
    assert r.status_code == 200, r.text


# -- bad parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize("query,field", [
    ("flow=%00", "flow"), ("project_id=%00", "project_id"), ("project_id=a%00b", "project_id"),
    ("status=%00", "status"), ("status=bogus", "status"), ("cursor=%00", "cursor"),
    ("cursor=zzz", "cursor"), ("cursor=01ARZ3NDEKTSV4RRFFQ69G5FAV", "cursor"),
    ("limit=0", "limit"), ("limit=-1", "limit"), ("limit=ten", "limit"),
    ("min_position=-1", "min_position"), ("min_position=x", "min_position"),
])
def test_a_bad_list_parameter_is_422_naming_it(client, runtime, query, field):
    problem_of(client.get(f"/api/runs?{query}"), 422, field)


def test_a_cursor_that_names_no_run_is_refused_not_answered_with_another_page(client, runtime):
    ids = [launch(client, "api-chain") for _ in range(3)]
    quiet(runtime)
    page = client.get("/api/runs", params={"limit": 2}).json()
    assert [r["run_id"] for r in page["runs"]] == ids[::-1][:2]
    rest = client.get("/api/runs", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert rest["runs"][0]["run_id"] == ids[0]
    problem = problem_of(client.get("/api/runs", params={"cursor": "zzz"}), 422, "cursor")
    assert "zzz" in problem["detail"]


def test_min_position_past_the_head_is_refused_and_answers_say_how_far_they_read(client, runtime):
    head = quiet(runtime)
    problem = problem_of(client.get(f"/api/runs?min_position={head + 1000}"), 422, "min_position")
    assert str(head) in problem["detail"] and "head" in problem["detail"]
    run_id = launch(client)
    problem_of(client.get(f"/api/runs/{run_id}?min_position={runtime.store.head() + 1000}"), 422,
               "min_position")
    quiet(runtime)
    at_head = runtime.store.head()
    for path in ("/api/runs", f"/api/runs/{run_id}"):
        r = client.get(path, params={"min_position": at_head})
        assert r.status_code == 200 and int(r.headers["baton-read-position"]) >= at_head


@pytest.mark.parametrize("method,path", [
    ("GET", "/api/runs/{id}"), ("GET", "/api/runs/{id}/events"), ("GET", "/api/runs/{id}/report"),
    ("POST", "/api/runs/{id}/cancel"), ("POST", "/api/runs/{id}/steps/gate/approve"),
    ("POST", "/api/runs/{id}/steps/gate/reject"),
])
def test_an_odd_run_id_is_4xx_naming_it_never_500(client, runtime, method, path):
    head = quiet(runtime)
    for odd, status in (("a%00b", 422), ("x" * 2000, 422), ("01ARZ3NDEKTSV4RRFFQ69G5FAV", 404), ("%E2%9C%93", 404)):
        problem_of(client.request(method, path.format(id=odd)), status, "run_id")
    assert runtime.store.head() == head


# -- a log that already holds what the tables cannot take ---------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def own(request, tmp_path_factory) -> Iterator[tuple[TestClient, Runtime]]:
    """A client on a runtime of this test's own: its health is degraded on purpose."""
    with _runtime(request.param, tmp_path_factory) as rt:
        with authed_client(create_app(rt), issue_tokens(rt.store)["admin"], headers=JSON_BODY) as c:
            yield c, rt


def test_a_poisoned_log_is_readable_and_health_says_degraded_with_the_position(own):
    client, runtime = own
    assert client.get("/api/health").json()["status"] == "ok"
    store = runtime.store
    # As an older version wrote it: a launch whose question holds NUL, straight into the log.
    nul = launch(client, "api-gate", "placeholder")
    runtime.engine.wait(nul, {"paused"}, timeout=10)
    stream = f"run-{nul}"
    first = store.read_stream(stream)
    data = {**first[0].data, "input": {"question": "a\x00b"}}
    poisoned = "01J0000000000000000000NULL"
    store.append(f"run-{poisoned}", [NewEvent("RunLaunched", {**data, "run_id": poisoned}),
                                     NewEvent("RunStarted", event_data(RunStarted(run_id=poisoned, at=2.0)))], 0)
    # An event no database can apply (anomalies.attempt is an integer column).
    bad = store.append(stream, [NewEvent("AnomalyDetected", event_data(AnomalyDetected(
        step_id="draft", attempt=2**63, kind="stall", severity="high", detail="?", at=9.0)))],
        len(first))[0].position
    after = launch(client, "api-chain", "and after it?")
    runtime.engine.wait(after, timeout=10)
    head = runtime.store.head()  # (the poisoned run was never driven: it stays "running")
    assert runtime.projector.wait_for(head, 10), runtime.projector.last_error

    detail = client.get(f"/api/runs/{poisoned}", params={"min_position": head})
    assert detail.status_code == 200, detail.text
    assert detail.json()["run"]["question"] == f"a{FFFD}b" and detail.json()["run"]["status"] == "running"
    events = client.get(f"/api/runs/{poisoned}/events").json()
    assert events[0]["data"]["input"]["question"] == "a\x00b"  # the audit log as recorded
    assert client.get(f"/api/runs/{after}").json()["run"]["status"] == "completed"
    assert client.get("/api/runs", params={"min_position": head}).status_code == 200

    health = client.get("/api/health").json()
    assert health["status"] == "degraded" and health["problems_total"] == 1, health
    [problem] = health["problems"]
    assert (problem["position"], problem["run_id"], problem["event_type"]) == (bad, nul, "AnomalyDetected")
    assert "OverflowError" in problem["error"]
    run = client.get(f"/api/runs/{nul}").json()
    assert [p["position"] for p in run["problems"]] == [bad]
    assert run["run"]["status"] == "paused"  # everything else of that run is there
