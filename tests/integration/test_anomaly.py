"""The anomaly watch with an injected clock: stalls, repeated errors, malformed output."""

from __future__ import annotations

import pytest

from actors.clock import ManualClock
from actors.config import EngineConfig
from actors.engine import Engine
from flows import Flow, agent
from flows.catalog import FlowRegistry
from flows.events import stream_of
from tests.integration.scripted import ScriptedBackend


def flow(policy: str) -> Flow:
    return Flow(
        f"watched-{policy}",
        on_anomaly=policy,
        steps=[
            agent("classify", persona="triager", prompt="Classify $input.question", retries=10, retry_delay_s=0),
            agent("act", persona="analyst", deps=["classify"], when="$classify.output.severity == 'high'",
                  prompt="Act on $classify.output.severity"),
        ],
    )


REGISTRY = FlowRegistry([flow("notify"), flow("nudge"), flow("abort")])
GOOD = "---\nseverity: high\n---\nE1 (prompt:1, direct): it is high."
BROKEN = "---\nseverity: [high\n---\nE1 (prompt:1, direct): unparseable frontmatter."


@pytest.fixture
def clock():
    return ManualClock()


def start(store, clock, backend) -> Engine:
    return Engine(store, REGISTRY, EngineConfig(stall_s=60, max_step_errors=5), backend=backend, clock=clock).start()


def anomalies(store, run_id):
    return [r.data for r in store.read_stream(stream_of(run_id)) if r.type == "AnomalyDetected"]


def wait_for_event(engine, store, run_id, type_name, count=1, **fields):
    def seen(_state) -> bool:
        found = [r for r in store.read_stream(stream_of(run_id)) if r.type == type_name
                 and all(r.data.get(k) == v for k, v in fields.items())]
        return len(found) >= count
    engine.wait(run_id, seen, timeout=10)


@pytest.mark.parametrize("policy", ["notify", "nudge", "abort"])
def test_stall(store, clock, policy):
    backend = ScriptedBackend(hold={"classify"})
    backend.answer("classify", GOOD, GOOD)
    engine = start(store, clock, backend)
    try:
        run_id = engine.launch(f"watched-{policy}", "q").run_id
        backend.wait_calls(1, run_id)
        clock.advance(59)
        assert anomalies(store, run_id) == []  # 59 s of silence is not yet a stall
        clock.advance(2)
        wait_for_event(engine, store, run_id, "AnomalyDetected")
        (found,) = anomalies(store, run_id)
        assert (found["kind"], found["severity"], found["action"]) == ("stall", "medium", policy)
        if policy == "notify":
            assert engine.state(run_id).steps["classify"].status == "running"
            backend.release(run_id, "classify")
            assert engine.wait(run_id).status == "completed"
        elif policy == "nudge":
            backend.wait_calls(2, run_id)
            second = backend.calls[1]
            assert second.attempt == 2 and "no output for 61 s" in second.prompt
            backend.release(run_id, "classify")
            assert engine.wait(run_id).status == "completed"
        else:
            state = engine.wait(run_id)
            assert state.steps["classify"].status == "cancelled" and state.status == "failed"
    finally:
        engine.stop()


@pytest.mark.parametrize("policy", ["notify", "abort"])
def test_more_than_five_errors(store, clock, policy):
    backend = ScriptedBackend()
    engine = start(store, clock, backend)
    original = backend.run
    failures = {"n": 0}

    def failing(request, on_delta, cancel):
        if request.step_id == "classify" and failures["n"] < 7:
            failures["n"] += 1
            from actors.agents import AgentError
            raise AgentError("backend said no")
        return original(request, on_delta, cancel)

    backend.run = failing
    try:
        run_id = engine.launch(f"watched-{policy}", "q").run_id
        state = engine.wait(run_id)
        found = anomalies(store, run_id)
        assert found and found[0]["kind"] == "errors" and found[0]["severity"] == "medium"
        assert "6 failed attempts" in found[0]["detail"]
        if policy == "abort":
            assert state.status == "failed" and state.steps["classify"].attempt == 6
        else:
            assert state.status == "completed" and state.steps["classify"].attempt == 8
    finally:
        engine.stop()


@pytest.mark.parametrize("policy", ["notify", "nudge", "abort"])
def test_malformed_frontmatter_that_a_later_step_needs(store, clock, policy):
    backend = ScriptedBackend()
    backend.answer("classify", BROKEN, GOOD)
    engine = start(store, clock, backend)
    try:
        run_id = engine.launch(f"watched-{policy}", "q").run_id
        state = engine.wait(run_id)
        (found,) = anomalies(store, run_id)
        assert (found["kind"], found["severity"], found["action"]) == ("malformed", "high", policy)
        assert "severity" in found["detail"]
        if policy == "nudge":
            retry = [c for c in backend.calls if c.step_id == "classify"][1]
            assert "frontmatter could not be parsed" in retry.prompt
            assert state.status == "completed" and state.steps["act"].status == "completed"
        elif policy == "notify":  # the output stands; the condition sees no severity and skips
            assert state.steps["act"].status == "skipped" and state.status == "completed"
        else:
            assert state.steps["classify"].status == "cancelled" and state.status == "failed"
    finally:
        engine.stop()


def test_a_runs_detail_lists_each_steps_anomalies_as_their_frames_carried_them(store, clock):
    """GET /api/runs/{id} (ReadModel.get_run) lists a step's anomalies: a page opened after the
    anomaly frames went out shows them on the step, not only as the run's count."""
    from projections import Projector, ReadModel

    backend = ScriptedBackend()
    backend.answer("classify", BROKEN, GOOD)
    engine = start(store, clock, backend)
    try:
        run_id = engine.launch("watched-notify", "q").run_id
        engine.wait(run_id)
    finally:
        engine.stop()
    (recorded,) = [r for r in store.read_stream(stream_of(run_id)) if r.type == "AnomalyDetected"]
    with Projector(store) as projector:
        assert projector.wait_for(store.head(), 10), projector.last_error
        detail = ReadModel(store.database, projector).get_run(run_id)
    assert detail is not None and detail["run"]["anomalies"] == 1
    steps = {s["step_id"]: s for s in detail["steps"]}
    assert steps["classify"]["anomalies"] == 1  # the count, beside the records
    (seen,) = steps["classify"]["anomaly_records"]
    assert seen == {"position": recorded.position, "attempt": 1, "kind": "malformed", "severity": "high",
                    "detail": recorded.data["detail"], "action": "notify", "at": recorded.data["at"]}
    assert steps["act"]["anomaly_records"] == []
