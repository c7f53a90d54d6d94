"""RunActor message orderings that are rare in real time, forced here."""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pykka
import pytest

from actors import messages as m
from actors.agents import OfflineBackend
from actors.bus import FrameBus
from actors.clock import RealClock
from actors.config import EngineConfig
from actors.context import EngineContext
from actors.run import RunActor
from eventstore import open_store
from eventstore.leases import Leases
from flows import Flow, code
from flows.catalog import FlowRegistry
from flows.errors import NotWaiting
from flows.launch import LaunchParams, prepare

HOLD = threading.Event()


def hold(ctx):
    HOLD.wait(10)
    return "held"


def done(ctx):
    return "done"


FLOW = Flow("held", steps=[code("hold", fn=hold), code("next", fn=done, deps=["hold"])])
REGISTRY = FlowRegistry([FLOW])


class Inbox(pykka.ThreadingActor):
    """Stands in for the orchestrator: keeps what the RunActor tells it."""

    def __init__(self) -> None:
        super().__init__()
        self.got: list = []

    def on_receive(self, message):
        if message == "read":
            return list(self.got)
        self.got.append(message)


class Gate:
    """Holds the RunActor's thread until the test has queued what it wants behind it."""

    def __init__(self) -> None:
        self.open = threading.Event()


class GatedRunActor(RunActor):
    def _on_gate(self, msg: Gate) -> None:
        msg.open.wait(10)

    _handlers = {**RunActor._handlers, Gate: _on_gate}


@pytest.fixture
def parts(sqlite_url):
    store = open_store(sqlite_url)
    pool = ThreadPoolExecutor(8)
    clock = RealClock()
    ctx = EngineContext(store, REGISTRY, OfflineBackend(), FrameBus(), clock, EngineConfig(agent_slots=0),
                        Leases(store.database), pool)
    inbox = Inbox.start()
    yield ctx, inbox
    pykka.ActorRegistry.stop_all()
    pool.shutdown(wait=False)
    clock.stop()
    store.close()


def test_a_refused_command_between_a_result_and_its_flush_does_not_idle_the_run(parts):
    ctx, inbox = parts
    HOLD.clear()
    event = prepare(REGISTRY, LaunchParams("held", "q"), run_id="01RACE0000000000000000000A", now=time.time())
    actor = GatedRunActor.start(ctx, inbox, event.run_id)
    launched: Future = Future()
    actor.tell(m.Launch(event, True, "test", 0, launched))
    launched.result(5)
    gate, refused = Gate(), Future()
    actor.tell(gate)  # the actor's thread waits here while the next two messages queue behind it
    actor.tell(m.StepResult("hold", 1, output="early"))  # its Flush will queue behind the Resume
    actor.tell(m.Resume("hold", "approved", "", "", refused))
    gate.open.set()
    with pytest.raises(NotWaiting):
        refused.result(5)
    HOLD.set()
    deadline = time.monotonic() + 5
    while not any(isinstance(x, m.RunEnded) for x in inbox.ask("read")):
        assert time.monotonic() < deadline, f"the run did not end: {inbox.ask('read')}"
        time.sleep(0.01)
    idle = [x for x in inbox.ask("read") if isinstance(x, m.RunIdle)]
    assert idle == []  # a running run never said it was idle


def test_a_chains_steps_and_their_results_are_handled_on_one_thread_and_a_cancel_is_not_held_by_a_step(
        tmp_path, monkeypatch):
    """A run holds no thread of its own (actors.mailbox): each step's result is handled on the thread of the
    step that made it, which then runs the next step, so a sequential run wakes no other thread per step;
    while a step runs, a cancel is handled at once on another thread."""
    from actors.engine import Engine
    from actors.orchestrator import Orchestrator

    threads: list[str] = []
    handled: list[str] = []  # the threads StepResults were handled on
    on_receive = RunActor.on_receive

    def spy(self, message):
        if isinstance(message, m.StepResult):
            handled.append(threading.current_thread().name)
        return on_receive(self, message)

    monkeypatch.setattr(RunActor, "on_receive", spy)

    def record(ctx):
        threads.append(threading.current_thread().name)
        return "ok"

    chain = Flow("threads", steps=[code(f"s{i}", fn=record, deps=[f"s{i - 1}"] if i else []) for i in range(5)])
    stuck = Flow("stuck", steps=[code("hold", fn=hold)])
    store = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    engine = Engine(store, FlowRegistry([chain, stuck]), EngineConfig()).start()
    try:
        state = engine.wait(engine.launch("threads", "q").run_id, timeout=10)
        assert state.status == "completed" and len(threads) == 5
        assert len(set(threads)) == 1, threads  # one step thread ...
        assert handled == threads, (handled, threads)  # ... which handled each result: no hand-off

        HOLD.clear()
        run_id = engine.launch("stuck", "q").run_id
        engine.wait(run_id, lambda s: s.steps["hold"].status == "running", timeout=10)
        engine.cancel(run_id, by="test")
        assert engine.wait(run_id, timeout=5).status == "cancelled"  # the step still holds its thread
    finally:
        HOLD.set()
        engine.stop()
        store.close()
    assert isinstance(Orchestrator._create_actor_inbox(), queue.SimpleQueue)
