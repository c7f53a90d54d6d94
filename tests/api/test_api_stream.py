"""The frame stream through a real server process and real clients (httpx SSE, websockets).

Each test compares what a client received with the frames the log itself
gives (``projections.frames.Framer`` over the run's stream, read from the
same database): every durable frame, once, in order, whatever the
disconnects in between.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from eventstore import open_store
from projections.frames import Framer
from tests.api.server import ApiServer, is_terminal, sse_events

TIMEOUT = 20.0


def launch(server: ApiServer, flow: str = "api-chain", **body: Any) -> str:
    r = httpx.post(server.url + "/api/runs", json={"flow": flow, "question": "Why is the build slow?", **body},
                   auth=server.auth_as("operator"))
    assert r.status_code == 201, r.text
    return r.json()["run_id"]


def logged_frames(db_url: str, run_id: str) -> list[dict[str, Any]]:
    """The durable frames of a run, straight from its recorded events."""
    store = open_store(db_url)
    try:
        framer = Framer()
        frames = [f for rec in store.read_stream(f"run-{run_id}") for f in framer.frames(rec)]
    finally:
        store.close()
    return json.loads(json.dumps(frames))


def wait_for_events(db_url: str, run_id: str, done, what: str, timeout: float = TIMEOUT) -> None:
    """Follow the store (a subscription: woken by each append) until ``done(types)`` holds for the
    types of the run's recorded events; fail after ``timeout`` naming ``what``."""
    store = open_store(db_url)
    subscription = store.subscribe(after=0)
    types: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while not done(types):
            left = deadline - time.monotonic()
            assert left > 0, f"timed out after {timeout} s waiting for {what}; run {run_id} recorded {types}"
            rec = subscription.next_event(timeout=min(left, 1.0))
            if rec is not None and rec.stream_id == f"run-{run_id}":
                types.append(rec.type)
    finally:
        subscription.close()
        store.close()


def steps_done(n: int):
    return lambda types: types.count("StepCompleted") >= n


def ended(types: list[str]) -> bool:
    return "RunCompleted" in types


def run_of(server: ApiServer, run_id: str) -> dict[str, Any]:
    return httpx.get(f"{server.url}/api/runs/{run_id}", auth=server.auth).json()


def read_until_terminal(source: Any, run_id: str) -> list[dict[str, Any]]:
    """Events of ``run_id`` (durable and ephemeral) up to and including its terminal frame.

    ``source`` is a response, or the ``sse_events`` of one (to read on afterwards).
    """
    got = []
    for event in sse_events(source) if isinstance(source, httpx.Response) else source:
        if event["data"].get("run_id") != run_id:
            continue
        got.append(event)
        if is_terminal(event["data"]):
            return got
    raise AssertionError(f"the stream ended before run {run_id} did")


def durable(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["id"] is not None]


def test_live_frames_stream_deltas_while_a_step_runs(server):
    with httpx.stream("GET", server.url + "/api/stream", timeout=TIMEOUT, auth=server.auth) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        run_id = launch(server)
        events = read_until_terminal(response, run_id)

    frames = [e["data"] for e in events]
    assert frames[0]["type"] == "flow_run_started" and frames[0]["flow_name"] == "api-chain"
    assert [s["step_id"] for s in frames[0]["steps"]] == ["first", "second", "third", "fold"]
    # SSE id is the global position, and the data carries the same id
    for e in events:
        assert e["id"] == e["data"].get("id")
        assert e["event"] == e["data"]["type"]
    ids = [e["id"] for e in events if e["id"] is not None]
    assert ids == sorted(ids)
    # step_delta frames (no id) arrive while the step runs: after its running frame, before its completion
    for step in ("first", "second", "third"):
        kinds = [(f["type"], f.get("status")) for f in frames if f.get("step_id") == step]
        running = kinds.index(("flow_run_step_updated", "running"))
        completed = kinds.index(("flow_run_step_updated", "completed"))
        deltas = [i for i, k in enumerate(kinds) if k[0] == "step_delta"]
        assert deltas and running < min(deltas) and max(deltas) < completed, kinds
    assert all(e["id"] is None for e in events if e["data"]["type"] == "step_delta")
    last = frames[-1]
    assert last["run_status"] == "completed" and last["report"].startswith("#")
    assert durable(events) == logged_frames(server.db_url, run_id)


def test_resume_after_a_disconnect_in_the_middle_of_a_run(server):
    with httpx.stream("GET", server.url + "/api/stream", timeout=TIMEOUT, auth=server.auth) as response:
        run_id = launch(server)
        first: list[dict[str, Any]] = []
        last_id = None
        for event in sse_events(response):
            if event["id"] is not None:
                last_id = event["id"]  # what a browser keeps: the last id on this connection
            if event["data"].get("run_id") == run_id and event["id"] is not None:
                first.append(event["data"])
                if len(first) == 4:
                    break
    # the client is gone; let the run move on without it
    wait_for_events(server.db_url, run_id, steps_done(2), "two steps done")
    headers = {"Last-Event-ID": str(last_id)}
    with httpx.stream("GET", f"{server.url}/api/stream?run_id={run_id}", headers=headers,
                      timeout=TIMEOUT, auth=server.auth) as response:
        second = durable(read_until_terminal(response, run_id))

    union = first + second
    ids = [f["id"] for f in union]
    assert ids == sorted(ids), "frames out of order"
    assert union == logged_frames(server.db_url, run_id), "a frame was lost or repeated"
    assert union[-1]["run_status"] == "completed" and union[-1]["report"]


def test_last_event_id_zero_replays_from_the_start(server):
    run_id = launch(server)
    wait_for_events(server.db_url, run_id, ended, "the run to complete")
    expected = logged_frames(server.db_url, run_id)
    with httpx.stream("GET", f"{server.url}/api/stream?run_id={run_id}", headers={"Last-Event-ID": "0"},
                      timeout=TIMEOUT, auth=server.auth) as response:
        assert durable(read_until_terminal(response, run_id)) == expected
    # unfiltered, ?last_event_id=0 gives every run's frames; this run's are all there, in order
    with httpx.stream("GET", f"{server.url}/api/stream?last_event_id=0", timeout=TIMEOUT,
                      auth=server.auth) as response:
        events = read_until_terminal(response, run_id)
    assert durable(events) == expected


def test_without_a_resume_position_only_live_frames_come(server):
    done = launch(server)
    wait_for_events(server.db_url, done, ended, "the run to complete")
    with httpx.stream("GET", server.url + "/api/stream", timeout=TIMEOUT, auth=server.auth) as response:
        fresh = launch(server)
        events = list(_take(sse_events(response), lambda e: e["id"] is not None, 1))
    assert events[0]["data"]["run_id"] == fresh and events[0]["data"]["type"] == "flow_run_started"


def test_project_filter_replays_and_follows_only_that_project(server):
    mine = launch(server, project_id="p-mine")
    other = launch(server, project_id="p-other")
    wait_for_events(server.db_url, other, ended, "the other run to complete")
    with httpx.stream("GET", f"{server.url}/api/stream?project_id=p-mine", headers={"Last-Event-ID": "0"},
                      timeout=TIMEOUT, auth=server.auth) as response:
        stream = sse_events(response)
        events = read_until_terminal(stream, mine)
        late = launch(server, project_id="p-mine")
        events += read_until_terminal(stream, late)
    assert {e["data"]["run_id"] for e in events} == {mine, late}
    assert {e["data"]["project_id"] for e in events} == {"p-mine"}
    assert durable(events) == logged_frames(server.db_url, mine) + logged_frames(server.db_url, late)


def test_a_bad_last_event_id_is_a_problem(server):
    r = httpx.get(server.url + "/api/stream", headers={"Last-Event-ID": "soon"}, auth=server.auth)
    assert r.status_code == 422
    assert r.json()["field"] == "Last-Event-ID"


def _take(events, keep, n):
    for event in events:
        if keep(event):
            yield event
            n -= 1
            if n == 0:
                return


def _ws_frames(ws, run_id: str, stop) -> list[dict[str, Any]]:
    got = []
    while True:
        frame = json.loads(ws.recv(timeout=TIMEOUT))
        if frame.get("run_id") != run_id:
            continue
        got.append(frame)
        if stop(got):
            return got


def test_websocket_resumes_from_its_position(server):
    ws_url = server.url.replace("http", "ws") + "/api/ws"
    run_id = launch(server)
    with ws_connect(ws_url, additional_headers=server.headers("viewer")) as ws:
        ws.send(json.dumps({"after": 0, "run_id": run_id}))
        first = _ws_frames(ws, run_id, lambda got: sum(f.get("id") is not None for f in got) >= 3)
    first = [f for f in first if f.get("id") is not None]
    wait_for_events(server.db_url, run_id, steps_done(2), "two steps done")
    with ws_connect(f"{ws_url}?run_id={run_id}&after={first[-1]['id']}", additional_headers=server.headers()) as ws:
        second = _ws_frames(ws, run_id, lambda got: is_terminal(got[-1]))
    union = first + [f for f in second if f.get("id") is not None]
    assert union == logged_frames(server.db_url, run_id)
    assert any(f["type"] == "step_delta" for f in second)


def test_websocket_refuses_a_bad_resume_message(server):
    with ws_connect(server.url.replace("http", "ws") + "/api/ws", additional_headers=server.headers()) as ws:
        ws.send(json.dumps({"after": "yesterday"}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=TIMEOUT)
    assert closed.value.rcvd.code == 1008 and "after" in closed.value.rcvd.reason


def test_unreachable_database_exits_non_zero_naming_it(tmp_path):
    url = "postgresql+psycopg://nobody:s3cret@127.0.0.1:1/x"
    server = ApiServer(url, start_timeout=20)
    with pytest.raises(RuntimeError):
        with server:
            pass
    assert server.process is not None and server.process.returncode == 1  # a failure at run time, as in the CLI
    log = server.log()
    line = next(line for line in log.splitlines() if line.startswith("baton: error: "))
    assert "postgresql+psycopg://nobody:***@127.0.0.1:1/x" in line and "cannot reach" in line
    assert "s3cret" not in log and "Traceback" not in log  # an expected failure: one line, no traceback


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_ends_open_streams_and_exits_cleanly(tmp_path, sig):
    with ApiServer(f"sqlite:///{tmp_path / 'stop.db'}") as server:
        with httpx.stream("GET", server.url + "/api/stream", timeout=TIMEOUT, auth=server.auth) as response:
            server.process.send_signal(sig)
            for _ in sse_events(response):  # ends when the server ends the stream
                pass
        assert server.process.wait(10) == 0, server.log()
    assert "Traceback" not in server.log()


@pytest.mark.postgres
def test_stream_and_commands_on_postgresql(pg_url):
    with ApiServer(pg_url) as server:
        with httpx.stream("GET", server.url + "/api/stream", timeout=TIMEOUT, auth=server.auth) as response:
            run_id = launch(server, "api-gate")
            events = []
            for event in sse_events(response):
                if event["data"].get("run_id") != run_id:
                    continue
                events.append(event)
                if event["data"]["type"] == "approval_requested":
                    r = httpx.post(f"{server.url}/api/runs/{run_id}/steps/gate/approve", json={"comment": "ok"},
                                   auth=server.auth_as("approver"))
                    assert r.status_code == 200, r.text
                if is_terminal(event["data"]):
                    break
        assert durable(events) == logged_frames(pg_url, run_id)
        assert durable(events)[-1]["run_status"] == "completed"
        detail = run_of(server, run_id)
        assert {s["step_id"]: s["status"] for s in detail["steps"]} == {
            "draft": "completed", "gate": "completed", "publish": "completed"}
        with httpx.stream("GET", f"{server.url}/api/stream?run_id={run_id}", headers={"Last-Event-ID": "0"},
                          timeout=TIMEOUT, auth=server.auth) as response:
            assert durable(read_until_terminal(response, run_id)) == durable(events)


def test_plan_starts_whole_then_changes_come_as_deltas(server):
    """``plan=1``: the whole plan first; then one small ``plan_delta`` per change, which applied in
    order give the plan GET /api/plan returns (a parked run appears, then leaves when approved)."""
    from actors.scheduler import apply_delta

    with httpx.stream("GET", server.url + "/api/stream?plan=1", timeout=TIMEOUT, auth=server.auth) as response:
        stream = sse_events(response)
        first = next(stream)
        assert first["event"] == "plan_updated" and first["id"] is None
        plan = first["data"]["plan"]
        run_id = launch(server, "api-gate")
        seen_parked = False
        for event in stream:
            frame = event["data"]
            if event["event"] == "plan_delta":
                assert event["id"] is None and frame["epoch"] == plan["epoch"]
                if frame["seq"] <= plan["seq"]:
                    continue  # older than the plan the stream began with
                assert frame["seq"] == plan["seq"] + 1, "a delta was missed"
                plan = apply_delta(plan, frame)
                assert {r["run_id"] for r in frame["in_progress"] + frame["planned_queued"]} | set(
                    frame["removed"]) <= {run_id}, "a delta names only the runs that changed"
                parked = [r for r in plan["planned_queued"] if r["run_id"] == run_id]
                if parked and not seen_parked:
                    seen_parked = True
                    assert parked[0]["reason"] == "approval"
                    r = httpx.post(f"{server.url}/api/runs/{run_id}/steps/gate/approve", json={"comment": "ok"},
                                   auth=server.auth_as("approver"))
                    assert r.status_code == 200, r.text
                elif seen_parked and frame["removed"] == [run_id]:
                    break
    assert seen_parked
    assert httpx.get(server.url + "/api/plan", auth=server.auth).json() == plan
    assert httpx.get(server.url + "/api/stream?plan=maybe", auth=server.auth).status_code == 422
