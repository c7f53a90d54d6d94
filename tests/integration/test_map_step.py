"""Map steps on a real store, both backends: one attempt per item, results in order, cancel and restart mid-map."""

from __future__ import annotations

import threading
import time

import pytest

from actors.agents.offline import OfflineBackend
from actors.config import EngineConfig
from actors.engine import Engine
from eventstore import open_store
from flows import Flow, agent, code, map
from flows.catalog import FlowRegistry
from flows.events import stream_of
from projections import Framer

CALLS: dict[str, int] = {}
LOCK = threading.Lock()
GATE = threading.Event()
PEAK = {"now": 0, "max": 0}


def findings(ctx):
    return {"items": ctx.input.get("items", ["alpha", "beta", "gamma", "delta", "epsilon"])}


def check(ctx):
    """One item: counts its calls, tracks how many run at once, fails for "bad", waits at "wait"."""
    item = ctx.input["item"]
    with LOCK:
        CALLS[item] = CALLS.get(item, 0) + 1
        PEAK["now"] += 1
        PEAK["max"] = max(PEAK["max"], PEAK["now"])
    try:
        if item == "bad":
            raise ValueError("a bad finding")
        if item == "exit":
            raise SystemExit("an item that calls sys.exit()")
        if item == "big":
            return "x" * 3000
        if item == "wait" and not GATE.wait(10):
            raise RuntimeError("never released")
        time.sleep(0.02)
        return f"{ctx.input['index']}:{item.upper()}"
    finally:
        with LOCK:
            PEAK["now"] -= 1


def summary(ctx):
    return {"n": len(ctx.fields["verify"]["results"]), "first": ctx.fields["verify"]["results"][0]}


CODE_MAP = Flow("code-map", steps=[
    code("findings", fn=findings),
    map("verify", over="$findings.output.items", step=code("check", fn=check), max_parallel=2),
    code("summary", fn=summary, deps=["verify"], trigger_rule="all_done"),
])
AGENT_MAP = Flow("agent-map", steps=[
    code("findings", fn=findings),
    map("verify", over="$findings.output.items",
        step=agent("v", persona="reviewer", prompt="Verify finding $input.index: $input.item"), max_parallel=3),
])
TIMED_MAP = Flow("timed-map", steps=[
    code("findings", fn=findings),
    map("verify", over="$findings.output.items", step=code("check", fn=check, timeout_s=0.5), max_parallel=1),
])
TIMED_AGENT_MAP = Flow("timed-agent-map", steps=[
    code("findings", fn=findings),
    map("verify", over="$findings.output.items", max_parallel=3,
        step=agent("v", persona="reviewer", prompt="Verify $input.item", timeout_s=1.0)),
])
def flaky(ctx):
    """One item: fails the first ``fails`` tries of "flaky-N" (N = fails), then answers."""
    item = ctx.input["item"]
    with LOCK:
        CALLS[item] = CALLS.get(item, 0) + 1
        n = CALLS[item]
    if item.startswith("flaky-") and n <= int(item.split("-")[1]):
        raise ConnectionError(f"try {n} of {item} lost its server")
    return f"{item} ok"


RETRIED_MAP = Flow("retried-map", steps=[
    code("findings", fn=findings),
    map("verify", over="$findings.output.items", max_parallel=2,
        step=code("check", fn=flaky, retries=2, retry_delay_s=0.05)),
])


RETRIED_AGENT_MAP = Flow("retried-agent-map", steps=[
    code("findings", fn=findings),
    map("verify", over="$findings.output.items", max_parallel=3,
        step=agent("v", persona="reviewer", prompt="Verify $input.item", retries=1, retry_delay_s=0)),
])
REGISTRY = FlowRegistry([CODE_MAP, AGENT_MAP, TIMED_MAP, TIMED_AGENT_MAP, RETRIED_MAP, RETRIED_AGENT_MAP])


@pytest.fixture(autouse=True)
def _fresh():
    CALLS.clear()
    PEAK.update(now=0, max=0)
    GATE.clear()
    yield
    GATE.set()


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


def _engine(store) -> Engine:
    return Engine(store, REGISTRY, EngineConfig(agent_slots=2, max_active_runs=4)).start()


def _records(store, run_id, kind):
    return [r.data for r in store.read_stream(stream_of(run_id)) if r.type == kind]


def test_each_item_runs_once_and_the_results_come_in_order(store):
    with _engine(store) as engine:
        state = engine.wait(engine.launch("code-map", "go").run_id)
    assert state.status == "completed"
    assert state.steps["verify"].fields["results"] == ["0:ALPHA", "1:BETA", "2:GAMMA", "3:DELTA", "4:EPSILON"]
    assert state.steps["summary"].fields == {"n": 5, "first": "0:ALPHA"}
    assert set(CALLS.values()) == {1} and 1 <= PEAK["max"] <= 2  # never more than max_parallel at once
    items = _records(store, state.run_id, "MapItemCompleted")
    assert sorted((i["index"], i["item"]) for i in items) == list(enumerate(["alpha", "beta", "gamma", "delta",
                                                                             "epsilon"]))
    assert _records(store, state.run_id, "StepStarted")[1]["items"] == ["alpha", "beta", "gamma", "delta", "epsilon"]
    framer = Framer()
    frames = [f for rec in store.read_stream(stream_of(state.run_id)) for f in framer.frames(rec)]
    mapped = [f for f in frames if f["type"] == "map_item"]
    assert len(mapped) == 5 and {f["status"] for f in mapped} == {"completed"} and mapped[0]["step_id"] == "verify"


def test_an_agent_map_records_each_items_prompt(store):
    with _engine(store) as engine:
        state = engine.wait(engine.launch("agent-map", "go", inputs={"items": ["x", "y"]}).run_id)
    assert state.status == "completed" and len(state.steps["verify"].fields["results"]) == 2
    prompts = sorted(i["prompt"] for i in _records(store, state.run_id, "MapItemCompleted"))
    assert prompts == ["Verify finding 0: x", "Verify finding 1: y"]


class CountingBackend(OfflineBackend):
    """The offline backend, a little slow, counting how many calls run at once."""

    def __init__(self, delay_s: float = 0.05) -> None:
        super().__init__()
        self.now = self.peak = 0
        self.delay_s = delay_s
        self.lock = threading.Lock()

    def run(self, request, delta, token):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            time.sleep(self.delay_s)
            return super().run(request, delta, token)
        finally:
            with self.lock:
                self.now -= 1


class FlakyBackend(CountingBackend):
    """CountingBackend whose first call for each item fails."""

    def __init__(self) -> None:
        super().__init__(delay_s=0.05)
        self.seen: set[str] = set()

    def run(self, request, delta, token):
        with self.lock:
            first = request.prompt not in self.seen
            self.seen.add(request.prompt)
        if first:
            from actors.agents import AgentError
            raise AgentError("the model server answered 503")
        return super().run(request, delta, token)


def test_agent_items_take_the_agent_slots(store):
    """agent_slots 1: a map of agents with max_parallel 3 still calls the model once at a time, and every
    slot is given back when the items end."""
    backend = CountingBackend()
    with Engine(store, REGISTRY, EngineConfig(agent_slots=1, max_active_runs=4), backend=backend).start() as engine:
        run_id = engine.launch("agent-map", "go", inputs={"items": ["x", "y", "z", "w"]}).run_id
        state = engine.wait(run_id)
        plan = engine.plan()
    assert state.status == "completed" and len(state.steps["verify"].fields["results"]) == 4
    assert backend.peak == 1
    assert all(p["slots_held"] == 0 for p in plan["in_progress"])  # every slot given back


def test_an_items_time_limit_runs_from_its_call_not_from_its_wait_for_an_agent_slot(store):
    """One agent slot, three items of 0.4 s at once, 1 s each: the third waits 0.8 s for the slot and
    must not time out for it (Airflow's execution_timeout starts when the task runs, not when queued)."""
    backend = CountingBackend(delay_s=0.4)
    with Engine(store, REGISTRY, EngineConfig(agent_slots=1, max_active_runs=4), backend=backend).start() as engine:
        state = engine.wait(engine.launch("timed-agent-map", "go", inputs={"items": ["x", "y", "z"]}).run_id)
    assert state.steps["verify"].status == "completed", state.steps["verify"].error
    assert backend.peak == 1 and len(state.steps["verify"].fields["results"]) == 3


def test_a_failed_item_is_tried_again_alone_and_each_try_is_recorded(store):
    """The inner step's retries are each item's, as a mapped task instance is retried in Airflow: the
    other items are not run again, every failed try is in the log, and only the last try decides."""
    with _engine(store) as engine:
        run_id = engine.launch("retried-map", "go", inputs={"items": ["a", "flaky-2", "b", "flaky-3"]}).run_id
        state = engine.wait(run_id, timeout=10)
    verify = state.steps["verify"]
    assert verify.status == "failed" and verify.attempt == 1
    assert verify.error == ("1 of 4 items failed (indexes [3]); item 3: ConnectionError: try 3 of flaky-3 lost its "
                            "server (try 3 of 3)")
    assert CALLS == {"a": 1, "flaky-2": 3, "b": 1, "flaky-3": 3}
    tries = [(f["index"], f["error"]) for f in _records(store, run_id, "MapItemFailed")]
    assert sorted(tries) == [
        (1, "ConnectionError: try 1 of flaky-2 lost its server (try 1 of 3; tried again in 0.05 s)"),
        (1, "ConnectionError: try 2 of flaky-2 lost its server (try 2 of 3; tried again in 0.05 s)"),
        (3, "ConnectionError: try 1 of flaky-3 lost its server (try 1 of 3; tried again in 0.05 s)"),
        (3, "ConnectionError: try 2 of flaky-3 lost its server (try 2 of 3; tried again in 0.05 s)"),
        (3, "ConnectionError: try 3 of flaky-3 lost its server (try 3 of 3)")]
    done = {i["index"]: i["output"] for i in _records(store, run_id, "MapItemCompleted")}
    assert done == {0: "a ok", 1: "flaky-2 ok", 2: "b ok"}
    assert verify.item_errors == {3: "ConnectionError: try 3 of flaky-3 lost its server (try 3 of 3)"}

    # GET /api/runs/{id} (and baton show) list the items as the fold knows them: the last try decides
    from projections import Projector, ReadModel

    with Projector(store) as projector:
        assert projector.wait_for(store.head(), 10), projector.last_error
        detail = ReadModel(store.database, projector).get_run(run_id)
    assert detail is not None
    items = {s["step_id"]: s.get("items") for s in detail["steps"]}
    assert items["findings"] is None  # only a map step has items
    assert [(i["index"], i["item"], i["status"], i["output"], i["error"]) for i in items["verify"]] == [
        (0, "a", "completed", "a ok", ""), (1, "flaky-2", "completed", "flaky-2 ok", ""),
        (2, "b", "completed", "b ok", ""),
        (3, "flaky-3", "failed", "", "ConnectionError: try 3 of flaky-3 lost its server (try 3 of 3)")]


def test_an_agent_items_retry_waits_for_an_agent_slot_of_its_own(store):
    """One slot: an item's retry asks for the slot again (its first grant is spent), so the model is
    still called once at a time, and every slot is given back."""
    backend = FlakyBackend()
    with Engine(store, REGISTRY, EngineConfig(agent_slots=1, max_active_runs=4), backend=backend).start() as engine:
        state = engine.wait(engine.launch("retried-agent-map", "go", inputs={"items": ["x", "y", "z"]}).run_id,
                            timeout=10)
        plan = engine.plan()
    assert state.steps["verify"].status == "completed", state.steps["verify"].error
    assert len(state.steps["verify"].fields["results"]) == 3 and backend.peak == 1
    assert len(_records(store, state.run_id, "MapItemFailed")) == 3  # each item's first try
    assert all(p["slots_held"] == 0 for p in plan["in_progress"])


def test_an_empty_list_completes_at_once(store):
    with _engine(store) as engine:
        state = engine.wait(engine.launch("code-map", "go", inputs={"items": []}).run_id)
    assert state.status == "failed"  # summary reads results[0] of nothing: the map itself completed
    assert state.steps["verify"].status == "completed" and state.steps["verify"].fields == {"results": []}
    assert _records(store, state.run_id, "MapItemCompleted") == [] and CALLS == {}


def test_a_failed_item_fails_the_map_and_the_trigger_rule_sees_one_step(store):
    with _engine(store) as engine:
        state = engine.wait(engine.launch("code-map", "go", inputs={"items": ["ok", "bad", "fine"]}).run_id)
    assert state.steps["verify"].status == "failed"
    assert "1 of 3 items failed (indexes [1]); item 1: ValueError: a bad finding" in state.steps["verify"].error
    assert state.steps["summary"].status == "failed"  # all_done ran it; it found no results to read
    assert [i["index"] for i in _records(store, state.run_id, "MapItemFailed")] == [1]


def test_an_item_past_its_inner_steps_timeout_fails_alone_and_the_items_behind_it_still_run(store):
    """The inner step's timeout_s is each item's limit, as each mapped task instance has its own in
    Airflow. The hung item's function cannot be interrupted: its thread stops counting, so with
    max_parallel=1 the item after it still starts."""
    with _engine(store) as engine:
        run_id = engine.launch("timed-map", "go", inputs={"items": ["alpha", "wait", "beta"]}).run_id
        state = engine.wait(run_id, timeout=5)  # the hung item waits 10 s for GATE
    verify = state.steps["verify"]
    assert verify.status == "failed"
    assert verify.error == "1 of 3 items failed (indexes [1]); item 1: timeout after 0.5 s"
    assert CALLS == {"alpha": 1, "wait": 1, "beta": 1}
    assert [i["index"] for i in _records(store, run_id, "MapItemCompleted")] == [0, 2]
    (failed,) = _records(store, run_id, "MapItemFailed")
    assert failed["index"] == 1 and 0.5 <= failed["duration_s"] < 2


def test_a_list_longer_than_a_map_goes_over_fails_the_map_naming_its_length(store):
    from flows.mapping import MAX_ITEMS

    with _engine(store) as engine:
        items = [f"f{n}" for n in range(MAX_ITEMS + 1)]
        state = engine.wait(engine.launch("code-map", "go", inputs={"items": items}).run_id, timeout=10)
    assert state.steps["verify"].status == "failed"
    assert state.steps["verify"].error == (
        f"over $findings.output.items: {MAX_ITEMS + 1:,} items, more than a map goes over ({MAX_ITEMS:,})")
    assert CALLS == {}  # not one item started


def test_an_item_whose_output_is_over_the_limit_is_that_item_failing(store):
    """A step's output over BATON_MAX_OUTPUT_BYTES fails it; a map's items were not checked, so 1,024
    items of a megabyte each made a map's results a gigabyte."""
    engine = Engine(store, REGISTRY, EngineConfig(agent_slots=2, max_active_runs=4, max_output_bytes=1000)).start()
    with engine:
        state = engine.wait(engine.launch("code-map", "go", inputs={"items": ["ok", "big"]}).run_id, timeout=10)
    assert state.steps["verify"].status == "failed"
    assert "item 1: OutputTooLarge: output too large: the item returned 2.9 KB, over the limit of" in (
        state.steps["verify"].error)
    assert [i["index"] for i in _records(store, state.run_id, "MapItemCompleted")] == [0]


def test_an_item_calling_sys_exit_is_that_item_failing(store):
    with _engine(store) as engine:
        state = engine.wait(engine.launch("code-map", "go", inputs={"items": ["ok", "exit"]}).run_id, timeout=10)
    assert state.steps["verify"].status == "failed"
    assert "item 1: SystemExit: an item that calls sys.exit()" in state.steps["verify"].error
    assert [i["index"] for i in _records(store, state.run_id, "MapItemCompleted")] == [0]


def test_cancel_mid_map_ends_the_run(store):
    with _engine(store) as engine:
        run_id = engine.launch("code-map", "go", inputs={"items": ["a", "wait", "wait", "c"]}).run_id
        engine.wait(run_id, lambda s: 0 in s.steps["verify"].item_outputs)
        engine.cancel(run_id, reason="enough")
        state = engine.wait(run_id)
    assert state.status == "cancelled" and state.steps["verify"].status == "cancelled"
    assert "c" not in CALLS  # max_parallel 2: both "wait" items held the places, and nothing started after


def test_a_restart_mid_map_runs_only_the_items_without_a_result(store):
    with _engine(store) as engine:
        run_id = engine.launch("code-map", "go", inputs={"items": ["a", "wait", "b"]}).run_id
        engine.wait(run_id, lambda s: {0, 2} <= set(s.steps["verify"].item_outputs))
    GATE.set()
    with _engine(store) as engine:
        state = engine.wait(run_id)
    assert state.status == "completed"
    assert state.steps["verify"].fields["results"] == ["0:A", "1:WAIT", "2:B"]
    assert CALLS["a"] == 1 and CALLS["b"] == 1  # kept from before the restart


HUNG_ITEM_SCRIPT = '''
import time
from actors.config import EngineConfig
from actors.engine import Engine
from eventstore import open_store
from flows import Flow, code, map
from flows.catalog import FlowRegistry

def findings(ctx):
    return {"items": ["a", "b"]}

def hang(ctx):
    time.sleep(60)  # a call that never answers
    return "too late"

FLOW = Flow("hung-map", steps=[code("findings", fn=findings),
                               map("each", over="$findings.output.items", step=code("x", fn=hang))])
store = open_store(URL)
engine = Engine(store, FlowRegistry([FLOW]), EngineConfig()).start()
run_id = engine.launch("hung-map", "go").run_id
engine.wait(run_id, lambda s: s.steps["each"].status == "running")
engine.cancel(run_id, reason="enough", by="ann")
print(engine.wait(run_id).status, flush=True)
engine.stop()
store.close()
'''


def test_a_process_exits_without_waiting_for_a_cancelled_maps_item_still_inside_its_function(tmp_path):
    """Like a code step's, a map item's function cannot be interrupted: its thread is a daemon, so
    `baton launch` or `baton serve` ends once the map is cancelled, not when the function returns."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "hung_map.py"
    script.write_text(f"URL = {f'sqlite:///{tmp_path}/hung.db'!r}\n" + HUNG_ITEM_SCRIPT)
    repo = str(Path(__file__).resolve().parents[2])
    done = subprocess.run([sys.executable, str(script)], cwd=repo, env={"PYTHONPATH": repo, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "cancelled"
