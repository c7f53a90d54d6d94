"""The scheduler's four rules (DESIGN §5), fair slots, the plan across a restart."""

from __future__ import annotations

import time

import pytest

from actors.config import EngineConfig
from actors.engine import Engine
from eventstore import open_store
from flows import Flow, agent, approval
from flows.catalog import FlowRegistry
from flows.events import stream_of
from tests.integration.scripted import ScriptedBackend

SINGLE = Flow("single", steps=[agent("work", persona="analyst", prompt="Work on $input.question")])
GATED_AGENT = Flow("gated-agent", steps=[agent("draft", persona="writer", prompt="Draft $input.question"),
                                         approval("gate", deps=["draft"], prompt="Go on?")])
FAN = Flow("fan", steps=[agent(f"w{i}", persona="analyst", prompt=f"part {i} of $input.question") for i in range(6)])
REGISTRY = FlowRegistry([SINGLE, GATED_AGENT, FAN])


@pytest.fixture
def store(sqlite_url):
    s = open_store(sqlite_url)
    yield s
    s.close()


def engine_with(store, backend, **config) -> Engine:
    return Engine(store, REGISTRY, EngineConfig(**config), backend=backend).start()


def wait_until(predicate, timeout: float = 10.0) -> None:
    """Wait for a condition of the engine's own state (not an event in the log)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def waiting_for_slot(engine, run_id) -> int:
    plan = engine.plan()
    return next((r["steps_waiting_for_slot"] for r in plan["in_progress"] + plan["planned_queued"]
                 if r["run_id"] == run_id), 0)


def events(store, run_id):
    return [(r.type, r.data) for r in store.read_stream(stream_of(run_id))]


def test_new_work_while_idle_is_planned_and_started_at_once(store):
    engine = engine_with(store, ScriptedBackend(), max_active_runs=1, agent_slots=1)
    try:
        run_id = engine.launch("single", "q").run_id
        first = store.read_stream(stream_of(run_id))[:2]
        assert [r.type for r in first] == ["RunLaunched", "RunStarted"]
        assert first[1].position == first[0].position + 1  # one append: the launch and its start
        assert engine.wait(run_id).status == "completed"
    finally:
        engine.stop()


def test_queued_work_says_why_and_is_not_kicked_while_a_step_runs(store):
    backend = ScriptedBackend(hold={"work"})
    engine = engine_with(store, backend, max_active_runs=1, agent_slots=4)
    frames: list[dict] = []
    engine.bus.subscribe(frames.append)
    try:
        a = engine.launch("single", "a").run_id
        backend.wait_calls(1, a)
        b = engine.launch("single", "b").run_id
        kind, data = events(store, b)[1]
        assert (kind, data["reason"], data["plan_position"]) == ("RunQueued", "capacity", 1)
        plan = engine.plan()
        assert [r["run_id"] for r in plan["in_progress"]] == [a]
        assert plan["planned_queued"][0]["run_id"] == b and plan["planned_queued"][0]["reason"] == "capacity"
        assert any(f["type"] == "plan_delta" and [r["run_id"] for r in f["planned_queued"]] == [b] for f in frames)
        # More queued work arrives while A's step runs: it queues behind B; neither B is started
        # nor A re-kicked (A's stream still ends at its step's start).
        c = engine.launch("single", "c").run_id
        assert [(r["run_id"], r["position"]) for r in engine.plan()["planned_queued"]] == [(b, 1), (c, 2)]
        assert [t for t, _ in events(store, b)] == ["RunLaunched", "RunQueued"]
        assert [t for t, _ in events(store, a)] == ["RunLaunched", "RunStarted", "StepStarted"]
        engine.cancel(c)
        backend.release(a, "work")
        assert engine.wait(a).status == "completed"
        state = engine.wait(b, {"running", "completed"})
        assert state.started_at >= engine.state(a).ended_at  # B started as A ended, not before
        backend.release(b, "work")
        assert engine.wait(b).status == "completed"
    finally:
        engine.stop()


def test_nothing_in_progress_starts_planned_work_at_once(store):
    backend = ScriptedBackend(hold={"draft", "work"})
    engine = engine_with(store, backend, max_active_runs=1)
    try:
        a = engine.launch("gated-agent", "a").run_id
        backend.wait_calls(1, a)  # A is in progress (its draft runs)
        b = engine.launch("single", "b").run_id
        assert [t for t, _ in events(store, b)] == ["RunLaunched", "RunQueued"]
        backend.release(a, "draft")
        engine.wait(a, {"paused"})  # A now waits for a person: nothing is in progress
        state = engine.wait(b, {"running"})
        assert [t for t, _ in events(store, b)][:3] == ["RunLaunched", "RunQueued", "RunStarted"]
        assert state.started_at >= engine.state(a).steps["gate"].started_at  # started when A paused
        plan = engine.plan()
        assert {"run_id": a, "reason": "approval"}.items() <= plan["planned_queued"][0].items()
    finally:
        engine.stop()


def test_a_wide_fan_out_cannot_hold_back_a_later_run(store):
    backend = ScriptedBackend(hold={f"w{i}" for i in range(6)} | {"work"})
    engine = engine_with(store, backend, agent_slots=2, max_active_runs=0)
    try:
        wide = engine.launch("fan", "wide").run_id
        first_two = backend.wait_calls(2, wide)
        late = engine.launch("single", "late").run_id
        wait_until(lambda: waiting_for_slot(engine, late) == 1)
        blocked = {r["run_id"]: r for r in engine.plan()["planned_queued"]}
        assert blocked[late]["reason"] == "blocked" and "agent slot" in blocked[late]["detail"]
        # the wide run waits with 4 steps; the late run asked for one slot. The next slot is the late run's.
        backend.release(wide, first_two[0][1])
        calls = backend.wait_calls(3)
        assert calls[2] == (late, "work")
        assert len(backend.running(wide)) == 2
        backend.release(late, "work")
        for i in range(6):
            backend.release(wide, f"w{i}")
        assert engine.wait(wide).status == "completed" and engine.wait(late).status == "completed"
    finally:
        engine.stop()


def test_plan_survives_a_restart_and_queued_runs_can_be_cancelled(store):
    backend = ScriptedBackend(hold={"work"})
    engine = engine_with(store, backend, max_active_runs=1)
    a = engine.launch("single", "a").run_id
    backend.wait_calls(1, a)
    b = engine.launch("single", "b").run_id
    c = engine.launch("single", "c").run_id
    engine.stop()

    backend = ScriptedBackend(hold={"work"})
    engine = engine_with(store, backend, max_active_runs=1)
    try:
        plan = engine.plan()
        assert [r["run_id"] for r in plan["in_progress"]] == [a]
        assert [(r["run_id"], r["position"], r["reason"]) for r in plan["planned_queued"]] == [
            (b, 1, "capacity"), (c, 2, "capacity")]
        engine.cancel(b, reason="not needed")
        assert engine.state(b).status == "cancelled"
        assert [r["run_id"] for r in engine.plan()["planned_queued"]] == [c]
        backend.wait_calls(1, a)  # the recovered attempt of A
        backend.release(a, "work")
        assert engine.wait(a).status == "completed"
        engine.wait(c, {"running"})
        backend.release(c, "work")
        assert engine.wait(c).status == "completed"
    finally:
        engine.stop()


def test_plan_changes_made_with_nobody_listening_reach_a_later_listener_as_one_delta(store):
    """An engine with no frame listener gathers its plan changes; a listener that reads the plan
    and then follows the deltas still ends with the plan the engine has."""
    from actors.scheduler import apply_delta

    engine = engine_with(store, ScriptedBackend(), max_active_runs=0, agent_slots=0)
    try:
        parked = [engine.launch("gated-agent", f"q{i}").run_id for i in range(3)]
        for run_id in parked:
            engine.wait(run_id, {"paused"})
        # The plan follows the RunActors' reports, which come just after their commits: wait may see a
        # run paused in the log a moment before the orchestrator has been told.
        wait_until(lambda: [r["run_id"] for r in engine.plan()["planned_queued"]] == parked)
        plan = engine.plan()
        assert [r["run_id"] for r in plan["planned_queued"]] == parked
        frames: list[dict] = []
        engine.bus.subscribe(frames.append)
        engine.approve(parked[0], "gate", by="someone")
        assert engine.wait(parked[0]).status == "completed"
        wait_until(lambda: any(parked[0] in f.get("removed", ()) for f in frames))
        for frame in frames:
            if frame["type"] == "plan_delta" and frame["seq"] > plan["seq"]:
                assert frame["seq"] == plan["seq"] + 1
                plan = apply_delta(plan, frame)
        assert plan == engine.plan()
        assert [r["run_id"] for r in plan["planned_queued"]] == parked[1:]
    finally:
        engine.stop()
