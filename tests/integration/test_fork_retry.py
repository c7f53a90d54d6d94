"""Fork and retry on a real store, both backends, and across a restart of the engine (DESIGN §15)."""

from __future__ import annotations

import threading

import pytest

from actors.config import EngineConfig
from actors.engine import Engine
from eventstore import open_store
from flows import Flow, code
from flows.catalog import FlowRegistry
from flows.errors import UnknownRun, UnknownStep
from flows.events import stream_of
from flows.fork import NotRetryable
from projections import Framer

CALLS: dict[str, int] = {}
GATE = threading.Event()


def _count(name: str) -> int:
    CALLS[name] = CALLS.get(name, 0) + 1
    return CALLS[name]


def gather(ctx):
    _count(f"gather-{ctx.input['question']}")
    return {"items": [1, 2, 3]}


def check(ctx):
    """Fails the first time per question (a transient fault), unless the input says it is fixed."""
    if _count(f"check-{ctx.input['question']}") == 1 and not ctx.input.get("fixed"):
        raise RuntimeError("flaky on purpose")
    return f"checked {ctx.fields['gather']['items']}"


def hold(ctx):
    if not GATE.wait(10):
        raise RuntimeError("never released")
    return "held"


def publish(ctx):
    return "published " + ctx.outputs.get("check", "")


MENDING = Flow("mending", steps=[
    code("gather", fn=gather),
    code("check", fn=check, deps=["gather"]),
    code("publish", fn=publish, deps=["check"]),
])
HOLDING = Flow("holding", steps=[
    code("gather", fn=gather),
    code("check", fn=hold, deps=["gather"]),
])
REGISTRY = FlowRegistry([MENDING, HOLDING])


@pytest.fixture(autouse=True)
def _fresh_counts():
    CALLS.clear()


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


def _engine(store) -> Engine:
    return Engine(store, REGISTRY, EngineConfig(agent_slots=2, max_active_runs=4)).start()


def types_of(store, run_id):
    return [r.type for r in store.read_stream(stream_of(run_id))]


def test_retry_reruns_the_failed_step_and_what_follows_not_what_came_before(store):
    with _engine(store) as engine:
        parent = engine.launch("mending", "retry-1").run_id
        assert engine.wait(parent).status == "failed"
        head = store.head()
        with pytest.raises(NotRetryable):
            engine.retry(parent, "gather")  # it completed: fork it instead
        with pytest.raises(UnknownStep):
            engine.retry(parent, "nope")
        with pytest.raises(UnknownRun):
            engine.retry("01NOSUCHRUN00000000000000", "check")
        assert store.head() == head  # refused commands append nothing

        child = engine.retry(parent, "check", by="ann")
        state = engine.wait(child.run_id)
    assert state.status == "completed" and state.parent_run_id == parent
    assert CALLS["gather-retry-1"] == 1  # kept from the parent, not run again
    assert state.steps["publish"].output == "published checked [1, 2, 3]"
    records = store.read_stream(stream_of(child.run_id))
    assert [r.type for r in records[:5]] == ["RunLaunched", "RunForked", "StepStarted", "StepCompleted", "RunStarted"]
    forked = records[1].data
    parent_positions = [r.position for r in store.read_stream(stream_of(parent)) if r.data.get("step_id") == "gather"]
    assert (forked["parent_run_id"], forked["from_step"], forked["retry"]) == (parent, "check", True)
    assert forked["copied_positions"] == parent_positions and forked["by"] == "ann"
    frames = [f for rec in records[:2] for f in Framer().frames(rec)]
    assert [f["type"] for f in frames] == ["flow_run_started", "run_forked"]
    assert frames[1]["parent_run_id"] == parent and frames[1]["copied_steps"] == ["gather"]
    report = records[-1].data["report"]
    assert f"Retried from run `{parent}` at step `check`" in report
    assert f"{parent}@{parent_positions[0]}, {parent}@{parent_positions[1]}" in report


def test_fork_with_changed_inputs_after_a_restart(store):
    with _engine(store) as engine:
        parent = engine.launch("mending", "fork-1").run_id
        assert engine.wait(parent).status == "failed"
    with _engine(store) as engine:  # a new process: everything it needs is in the log
        child = engine.fork(parent, "check", inputs={"fixed": True})
        state = engine.wait(child.run_id)
    assert state.status == "completed" and state.launched.input == {"question": "fork-1", "fixed": True}
    assert CALLS["gather-fork-1"] == 1 and CALLS["check-fork-1"] == 2


def test_a_fork_interrupted_by_a_restart_is_recovered_with_its_copies(store):
    GATE.clear()
    with _engine(store) as engine:
        parent = engine.launch("holding", "restart-1").run_id
        engine.wait(parent, lambda s: s.steps["check"].status == "running")
        engine.cancel(parent, reason="stop")
        assert engine.wait(parent).status == "cancelled"
        child = engine.retry(parent, "check").run_id  # a cancelled step is retried
        engine.wait(child, lambda s: s.steps["check"].status == "running")
    GATE.set()
    with _engine(store) as engine:
        state = engine.wait(child)
    assert state.status == "completed" and state.steps["check"].output == "held"
    assert CALLS["gather-restart-1"] == 1
    assert "RunRecovered" in types_of(store, child)
