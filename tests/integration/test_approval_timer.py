"""Approval timeouts on a real store: the timer decides on_timeout, survives restarts, and names itself.

Time is a ManualClock: a 60 s timeout takes no wall time.
"""

from __future__ import annotations

import pytest

from actors.clock import ManualClock
from actors.config import EngineConfig
from actors.engine import Engine
from actors.errors import EngineTimeout
from eventstore import open_store
from flows import Flow, approval, code
from flows.catalog import FlowRegistry
from flows.events import stream_of


def after(ctx):
    return "after the gate: " + ctx.outputs.get("gate", "")


TIMED_REJECT = Flow("timed-reject", steps=[approval("gate", prompt="Ship?", timeout_s=60),
                                           code("after", fn=after, deps=["gate"])])
TIMED_APPROVE = Flow("timed-approve", steps=[approval("gate", prompt="Ship?", timeout_s=60, on_timeout="approve"),
                                             code("after", fn=after, deps=["gate"])])
REGISTRY = FlowRegistry([TIMED_REJECT, TIMED_APPROVE])


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


def _engine(store, clock: ManualClock) -> Engine:
    return Engine(store, REGISTRY, EngineConfig(max_active_runs=4), clock=clock).start()


def _advance_until_ended(engine: Engine, clock: ManualClock, run_id: str, step: float = 30.0):
    """Move time on in steps until the run ends (the timer is armed once the run has gone idle)."""
    for _ in range(40):
        clock.advance(step)
        try:
            return engine.wait(run_id, timeout=0.25)
        except EngineTimeout:
            continue
    raise AssertionError(f"run {run_id} did not end: {engine.state(run_id).status}")


@pytest.mark.parametrize(("flow", "status", "decision"), [("timed-reject", "rejected", "rejected"),
                                                          ("timed-approve", "completed", "approved")])
def test_the_timer_decides_on_timeout(store, flow, status, decision):
    clock = ManualClock()
    with _engine(store, clock) as engine:
        run_id = engine.launch(flow, "ship?").run_id
        paused = engine.wait(run_id, {"paused"})
        assert paused.steps["gate"].due_at == pytest.approx(clock.now() + 60)
        state = _advance_until_ended(engine, clock, run_id)
    assert state.status == status and state.steps["gate"].decided_by == "timer gate.timeout_s=60"
    resumed = next(r for r in store.read_stream(stream_of(run_id)) if r.type == "StepResumed")
    assert resumed.data["decision"] == decision and resumed.data["by"] == ""
    assert resumed.data["timer"] == "gate.timeout_s=60"
    assert resumed.data["at"] >= paused.steps["gate"].due_at


@pytest.mark.parametrize("gone_s", [10.0, 600.0])  # the process comes back before the timer is due, and after
def test_the_timer_survives_a_restart(store, gone_s):
    clock = ManualClock()
    with _engine(store, clock) as engine:
        run_id = engine.launch("timed-reject", "ship?").run_id
        due = engine.wait(run_id, {"paused"}).steps["gate"].due_at
    later = ManualClock(start=clock.now() + gone_s)
    with _engine(store, later) as engine:
        state = _advance_until_ended(engine, later, run_id)
    assert state.status == "rejected" and state.steps["after"].skip_reason == "rejected"
    resumed = next(r for r in store.read_stream(stream_of(run_id)) if r.type == "StepResumed")
    assert resumed.data["timer"] and resumed.data["at"] >= due


def test_a_person_before_the_timer_wins(store):
    clock = ManualClock()
    with _engine(store, clock) as engine:
        run_id = engine.launch("timed-reject", "ship?").run_id
        engine.wait(run_id, {"paused"})
        engine.approve(run_id, "gate", by="ann")
        state = engine.wait(run_id)
        clock.advance(120)
    assert state.status == "completed" and state.steps["gate"].decided_by == "ann"
    assert [r.type for r in store.read_stream(stream_of(run_id))].count("StepResumed") == 1
