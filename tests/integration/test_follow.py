"""Following a run until it ends or pauses: one function (actors.runlog.follow) for Engine.wait and the CLI."""

from __future__ import annotations

import threading
import time

import pytest

from actors.errors import EngineTimeout, RunNotSettled
from actors.runlog import follow
from eventstore import NewEvent
from flows import Flow, agent, approval
from flows.decide import settled
from flows.events import (
    RunLaunched,
    RunStarted,
    StepCompleted,
    StepPaused,
    StepStarted,
    event_data,
    stream_of,
)
from flows.state import RunState, fold

WAIT = 10.0
FLOW = Flow("follow", category="Analysis", steps=[
    agent("a", persona="reviewer", prompt="A"),
    agent("b", persona="reviewer", prompt="B"),
    approval("gate", prompt="Go?"),
])


def batch(*events) -> list[NewEvent]:
    return [NewEvent(type(e).__name__, event_data(e), {"schema_version": 1}) for e in events]


def test_follow_sees_each_append_whole_and_stops_where_a_person_is_awaited(store):
    run_id, stream = "01FOLLOW00000000000000000A", stream_of("01FOLLOW00000000000000000A")
    store.append(stream, batch(RunLaunched(run_id=run_id, flow="follow", snapshot=FLOW.snapshot(), at=1.0),
                               RunStarted(run_id=run_id, at=1.0)), 0)
    seen: list[RunState] = []
    moved = threading.Condition()

    def on_state(state: RunState) -> None:
        with moved:
            seen.append(state)
            moved.notify_all()

    def append_and_wait(events: list[NewEvent], version: int) -> None:
        """Append, then wait until follow has shown the run at least that far (so each append is apart)."""
        recorded = store.append(stream, events, version)
        with moved:
            assert moved.wait_for(lambda: seen and seen[-1].version >= recorded[-1].version, WAIT)

    def drive() -> None:
        with moved:
            assert moved.wait_for(lambda: bool(seen), WAIT)
        # Appends of two events each: follow shows the state after each append, never after half of one.
        append_and_wait(batch(StepPaused(step_id="gate", prompt="Go?", at=2.0),
                              StepStarted(step_id="a", attempt=1, at=2.0)), 2)
        store.append(stream_of("someone-else"), batch(RunStarted(run_id="x", at=2.0)), 0)
        append_and_wait(batch(StepCompleted(step_id="a", attempt=1, output="A", at=3.0),
                              StepStarted(step_id="b", attempt=1, at=3.0)), 4)
        append_and_wait(batch(StepCompleted(step_id="b", attempt=1, output="B", at=4.0)), 6)

    writer = threading.Thread(target=drive)
    writer.start()
    try:
        state = follow(store, run_id, lambda s: settled(s, time.time()), on_state, timeout=WAIT)
    finally:
        writer.join()
    assert state.status == "paused" and state.version == 7
    assert [s.version for s in seen] == [2, 4, 6, 7]  # one state per append of the run, none halfway
    assert state == fold(_events(store, stream))


def _events(store, stream):
    from actors.runlog import decode

    return [(rec.position, decode(rec)) for rec in store.read_stream(stream)]


def test_follow_gives_up_after_its_timeout_with_the_state_it_saw(store):
    run_id = "01FOLLOW00000000000000000B"
    store.append(stream_of(run_id), batch(RunLaunched(run_id=run_id, flow="follow", snapshot=FLOW.snapshot(), at=1.0)),
                 0)
    with pytest.raises(RunNotSettled) as caught:
        follow(store, run_id, lambda s: s.terminal, timeout=0.3)
    assert isinstance(caught.value, EngineTimeout) and isinstance(caught.value, TimeoutError)
    assert caught.value.state.status == "queued"
    assert str(caught.value) == f"run {run_id} is still queued after 0.3 s"


def test_a_paused_run_is_settled_only_when_nothing_but_a_person_can_move_it():
    launched = RunLaunched(run_id="r", flow="follow", snapshot=FLOW.snapshot(), at=1.0)
    paused = fold([launched, RunStarted(run_id="r", at=1.0), StepPaused(step_id="gate", at=1.0)])
    assert paused.status == "paused"
    assert not settled(paused, 2.0)  # a and b may start (they wait for a slot): the run moves on alone
    done = fold([launched, RunStarted(run_id="r", at=1.0), StepPaused(step_id="gate", at=1.0),
                 StepStarted(step_id="a", attempt=1, at=1.0), StepCompleted(step_id="a", attempt=1, at=2.0),
                 StepStarted(step_id="b", attempt=1, at=2.0), StepCompleted(step_id="b", attempt=1, at=3.0)])
    assert done.status == "paused" and settled(done, 4.0)


def test_a_wait_on_a_run_driven_here_gives_up_after_its_timeout_with_the_state_it_saw(sqlite_url):
    """Engine.wait on a run this engine drives watches its RunActor (actors.watch): the same timeout."""
    from actors.config import EngineConfig
    from actors.engine import Engine
    from eventstore import open_store
    from flows import StepContext, code
    from flows.catalog import FlowRegistry

    release = threading.Event()

    def hold(ctx: StepContext) -> str:
        release.wait(10)
        return "let go"

    registry = FlowRegistry([Flow("watch-hold", category="Analysis", description="a step held by the test",
                                  steps=[code("hold", fn=hold)])])
    store = open_store(sqlite_url)
    engine = Engine(store, registry, EngineConfig()).start()
    try:
        run_id = engine.launch("watch-hold", "hold on").run_id
        engine.wait(run_id, lambda s: s.steps["hold"].status == "running", timeout=10)
        with pytest.raises(RunNotSettled) as caught:
            engine.wait(run_id, timeout=0.3)
        assert caught.value.state.steps["hold"].status == "running"
        assert str(caught.value) == f"run {run_id} is still running after 0.3 s"
        release.set()
        assert engine.wait(run_id, timeout=10).steps["hold"].output == "let go"
    finally:
        release.set()
        engine.stop()
        store.close()


def test_a_wait_takes_the_last_state_its_run_actor_published_even_when_the_actor_stopped_first():
    """A run's last commit and its actor's stop come moments apart, often before the waiting thread wakes:
    the wait returns the ended state it was published, instead of going back to the store for it."""
    from actors.watch import RunWatch

    watch, owner, run_id = RunWatch(), object(), "01WATCH0000000000000000000"
    running, ended = RunState(run_id=run_id, status="running"), RunState(run_id=run_id, status="completed")
    watch.publish(run_id, owner, running)
    asked = threading.Event()
    stopped = threading.Event()

    def until(state: RunState) -> bool:
        if state is running:  # the waiter is registered: the run ends and its actor stops before it sleeps
            asked.set()
            assert stopped.wait(WAIT)
        return state.status == "completed"

    got: list[RunState | None] = []
    waiter = threading.Thread(target=lambda: got.append(
        watch.wait(run_id, until, None, time.monotonic() + WAIT, WAIT)))
    waiter.start()
    assert asked.wait(WAIT)
    watch.publish(run_id, owner, ended)
    watch.gone(run_id, owner)
    stopped.set()
    waiter.join(WAIT)
    assert got == [ended]


def test_a_wait_goes_back_to_the_store_when_the_actor_stopped_without_publishing_what_it_waits_for():
    from actors.watch import RunWatch

    watch, owner, run_id = RunWatch(), object(), "01WATCH0000000000000000001"
    watch.publish(run_id, owner, RunState(run_id=run_id, status="running"))
    got: list[RunState | None] = []
    waiter = threading.Thread(target=lambda: got.append(
        watch.wait(run_id, lambda s: s.status == "completed", None, time.monotonic() + WAIT, WAIT)))
    waiter.start()
    watch.publish(run_id, owner, RunState(run_id=run_id, status="paused"))
    watch.gone(run_id, owner)
    waiter.join(WAIT)
    assert got == [None]


def test_a_wait_that_comes_after_the_run_ended_here_takes_its_final_state_not_the_store(sqlite_url, monkeypatch):
    """Launch many, then wait for each: most have ended before their wait. Their final states are kept
    by the watch; reading and folding each run's stream again was 18% of the CPU of 50 W1 chains."""
    from actors import engine as engine_module
    from actors.config import EngineConfig
    from actors.engine import Engine
    from eventstore import open_store
    from flows import code
    from flows.catalog import FlowRegistry

    registry = FlowRegistry([Flow("watch-quick", category="Analysis", description="two quick steps",
                                  steps=[code("a", fn=lambda ctx: "x"), code("b", fn=lambda ctx: "y", deps=["a"])])])
    store = open_store(sqlite_url)
    engine = Engine(store, registry, EngineConfig()).start()
    try:
        run_ids = [engine.launch("watch-quick", f"run {i}").run_id for i in range(3)]
        for run_id in run_ids:  # each ends, and its actor stops, before the waits below
            engine.wait(run_id, timeout=10)
            deadline = time.monotonic() + WAIT
            while run_id in engine.ctx.watch._states:
                assert time.monotonic() < deadline, "the run's actor did not stop"
                time.sleep(0.01)

        def no_store(*args, **kwargs):
            raise AssertionError("the wait read the store for a run that ended here")

        monkeypatch.setattr(engine_module, "follow", no_store)
        for run_id in run_ids:
            state = engine.wait(run_id, timeout=10)
            assert state.status == "completed" and state.steps["b"].output == "y"
            assert engine.recorded_position(run_id) == state.position > 0
        monkeypatch.undo()  # a wait for what the final state does not show goes to the store, and times out there
        with pytest.raises(RunNotSettled):
            engine.wait(run_ids[0], {"paused"}, timeout=0.2)
    finally:
        engine.stop()
        store.close()


def test_the_watch_keeps_the_final_states_of_the_last_runs_that_ended_only(monkeypatch):
    from actors import watch as watch_module
    from actors.watch import RunWatch

    monkeypatch.setattr(watch_module, "ENDED_KEPT", 2)
    watch, owner = RunWatch(), object()
    for i in range(3):
        run_id = f"01WATCH000000000000000001{i}"
        watch.publish(run_id, owner, RunState(run_id=run_id, status="completed", position=10 + i))
        watch.gone(run_id, owner)
    paused = "01WATCH0000000000000000019"  # stopped while paused: it goes on later, maybe elsewhere
    watch.publish(paused, owner, RunState(run_id=paused, status="paused", position=20))
    watch.gone(paused, owner)
    forever = time.monotonic() + WAIT
    assert [watch.position(f"01WATCH000000000000000001{i}") for i in range(3)] == [0, 11, 12]
    assert watch.wait(paused, lambda s: True, None, forever, WAIT) is None and watch.position(paused) == 0
    kept = watch.wait("01WATCH0000000000000000012", lambda s: s.status == "completed", None, forever, WAIT)
    assert kept is not None and kept.position == 12


def test_the_watch_keeps_final_states_within_a_budget_of_output_characters(monkeypatch):
    from actors import watch as watch_module
    from actors.watch import RunWatch
    from flows.state import StepState

    monkeypatch.setattr(watch_module, "ENDED_BYTES", 1000)
    watch, owner = RunWatch(), object()

    def ended(run_id: str, chars: int) -> None:
        state = RunState(run_id=run_id, status="completed", position=1, steps={"a": StepState(output="x" * chars)})
        watch.publish(run_id, owner, state)
        watch.gone(run_id, owner)

    ended("01WATCH0000000000000000030", 400)
    ended("01WATCH0000000000000000031", 400)
    ended("01WATCH0000000000000000032", 400)  # 1,200 characters: the oldest goes
    ended("01WATCH0000000000000000033", 5000)  # bigger than the whole budget: not kept, and nothing goes for it
    assert [watch.position(f"01WATCH00000000000000000{i}") for i in range(30, 34)] == [0, 1, 1, 0]
