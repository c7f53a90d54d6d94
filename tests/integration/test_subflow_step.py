"""Subflow steps on a real store, both backends: a child run of its own, linked both ways, its outcome the
step's; cancel cascades; a restart follows the child instead of launching another."""

from __future__ import annotations

import threading

import pytest

from actors.config import EngineConfig
from actors.engine import Engine
from eventstore import open_store
from flows import Flow, code, subflow
from flows.catalog import FlowRegistry
from flows.events import stream_of

GATE = threading.Event()
CALLS: dict[str, int] = {}


def dig(ctx):
    CALLS[ctx.run_id] = CALLS.get(ctx.run_id, 0) + 1
    if ctx.input.get("hold") and not GATE.wait(10):
        raise RuntimeError("never released")
    if ctx.input.get("fail"):
        raise RuntimeError("the child failed on purpose")
    return {"dug": ctx.input["question"], "depth": ctx.input.get("depth", 0)}


def triage(ctx):
    return {"area": "cache"}


def use(ctx):
    return "used " + ctx.fields["deep"]["status"]


CHILD = Flow("dig", steps=[code("dig", fn=dig)])
PARENT = Flow("parent", steps=[
    code("triage", fn=triage),
    subflow("deep", flow="dig", inputs={"question": "Dig into $triage.output.area", "depth": "2",
                                        "hold": "$input.hold", "fail": "$input.fail"}),
    code("use", fn=use, deps=["deep"]),
])
UNKNOWN = Flow("unknown-child", steps=[subflow("deep", flow="no-such-flow")])
TIMED = Flow("timed-parent", steps=[subflow("deep", flow="dig", timeout_s=0.3, inputs={"hold": "yes"})])
LOOP_A = Flow("loop-a", steps=[subflow("deeper", flow="loop-b")])  # each launches the other
LOOP_B = Flow("loop-b", steps=[subflow("deeper", flow="loop-a")])
REGISTRY = FlowRegistry([CHILD, PARENT, UNKNOWN, TIMED, LOOP_A, LOOP_B])


@pytest.fixture(autouse=True)
def _fresh():
    GATE.clear()
    CALLS.clear()
    yield
    GATE.set()


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


def _engine(store, **config) -> Engine:
    return Engine(store, REGISTRY, EngineConfig(**{"max_active_runs": 1, **config})).start()


def test_the_child_runs_on_its_own_stream_and_its_outcome_is_the_steps(store):
    with _engine(store) as engine:  # max_active_runs 1: the child counts, but never waits behind its parent
        parent = engine.wait(engine.launch("parent", "why slow?", inputs={"hold": "", "fail": ""}).run_id)
        child = engine.state(parent.steps["deep"].child_run_id)
    assert parent.status == "completed" and parent.steps["use"].output == "used completed"
    assert child.status == "completed" and child.launched.input["question"] == "Dig into cache"
    assert child.launched.input["depth"] == "2"
    assert (child.launched.parent_run_id, child.launched.parent_step) == (parent.run_id, "deep")
    assert parent.steps["deep"].fields == {"run_id": child.run_id, "status": "completed"}
    assert "# dig: completed" in parent.steps["deep"].output  # the child's report, nested in the parent's
    assert "# dig: completed" in parent.report


def test_the_child_counts_toward_capacity(store):
    with _engine(store, max_active_runs=2) as engine:
        run_id = engine.launch("parent", "q", inputs={"hold": "yes", "fail": ""}).run_id
        child_id = engine.wait(run_id, lambda s: s.steps["deep"].status == "running").steps["deep"].child_run_id
        engine.wait(child_id, lambda s: s.steps.get("dig") is not None and s.steps["dig"].status == "running")
        other = engine.launch("dig", "another", inputs={"hold": ""}).run_id
        queued = engine.wait(other, {"queued"})
        GATE.set()
        assert engine.wait(run_id).status == "completed" and engine.wait(other).status == "completed"
    assert queued.queue_reason == "capacity"


def test_a_failed_child_fails_the_step(store):
    with _engine(store) as engine:
        parent = engine.wait(engine.launch("parent", "q", inputs={"hold": "", "fail": "yes"}).run_id)
    assert parent.status == "failed" and "child run" in parent.steps["deep"].error
    assert parent.steps["use"].skip_reason == "upstream_failed"


def test_an_unknown_flow_fails_the_step_with_its_name(store):
    with _engine(store) as engine:
        parent = engine.wait(engine.launch("unknown-child", "q").run_id)
    assert parent.status == "failed" and "no-such-flow" in parent.steps["deep"].error


def test_cancelling_the_parent_cancels_the_child(store):
    with _engine(store, max_active_runs=2) as engine:
        run_id = engine.launch("parent", "q", inputs={"hold": "yes", "fail": ""}).run_id
        running = engine.wait(run_id, lambda s: s.steps["deep"].status == "running")
        child_id = running.steps["deep"].child_run_id
        engine.wait(child_id, lambda s: s.steps.get("dig") is not None and s.steps["dig"].status == "running")
        engine.cancel(run_id, reason="stop")
        child = engine.wait(child_id)
    assert child.status == "cancelled" and child.reason == f"parent run {run_id} cancelled"


def test_a_timed_out_subflow_step_cancels_its_child(store):
    with _engine(store, max_active_runs=2) as engine:
        parent = engine.wait(engine.launch("timed-parent", "q").run_id)
        child = engine.wait(parent.steps["deep"].child_run_id)
    assert parent.status == "failed" and parent.steps["deep"].error.startswith("timeout")
    assert child.status == "cancelled"


def test_a_restart_follows_the_child_instead_of_launching_another(store):
    with _engine(store, max_active_runs=2) as engine:
        run_id = engine.launch("parent", "q", inputs={"hold": "yes", "fail": ""}).run_id
        running = engine.wait(run_id, lambda s: s.steps["deep"].status == "running")
        child_id = running.steps["deep"].child_run_id
        engine.wait(child_id, lambda s: s.steps.get("dig") is not None and s.steps["dig"].status == "running")
    GATE.set()
    with _engine(store, max_active_runs=2) as engine:
        parent = engine.wait(run_id)
    assert parent.status == "completed" and parent.steps["deep"].child_run_id == child_id
    launched = [r for r in store.read_all(after=0) if r.type == "RunLaunched"]
    assert len(launched) == 2  # the parent and one child
    assert [r.type for r in store.read_stream(stream_of(run_id))].count("RunRecovered") == 1


def test_more_subflow_steps_waiting_than_step_threads_all_finish(store):
    """Each waiting subflow step holds a step thread while its child's steps need one too: with more
    parents than threads (no run limit), the waiting steps stop counting and every child gets a thread."""
    with _engine(store, max_active_runs=0, step_threads=2) as engine:
        ids = [engine.launch("parent", f"why slow {n}?", inputs={"hold": "", "fail": ""}).run_id for n in range(4)]
        parents = [engine.wait(run_id, timeout=30) for run_id in ids]
        children = [engine.state(p.steps["deep"].child_run_id) for p in parents]
    assert [p.status for p in parents] == ["completed"] * 4
    assert [c.status for c in children] == ["completed"] * 4


def test_subflows_leading_back_to_their_own_flow_stop_at_the_depth_limit(store):
    """Without a limit each run launched the next without end (750 nested runs in 4 s)."""
    from flows.children import MAX_DEPTH

    with _engine(store) as engine:
        root = engine.wait(engine.launch("loop-a", "how deep?").run_id, timeout=30)
    launched = [r.data for r in store.read_all(after=0) if r.type == "RunLaunched"]
    assert root.status == "failed"
    assert [d["depth"] for d in launched] == list(range(MAX_DEPTH + 1))  # the root, then one child per level
    deepest = [r.data for r in store.read_stream(stream_of(launched[-1]["run_id"])) if r.type == "StepFailed"]
    assert f"subflows nest at most {MAX_DEPTH} deep" in deepest[0]["error"]
    assert "child run" in root.steps["deeper"].error and "failed" in root.steps["deeper"].error
