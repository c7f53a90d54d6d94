"""RunActor message orderings that are rare in real time, forced here."""

from __future__ import annotations

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


def test_the_actors_inboxes_are_simple_queues():
    """Every step's result crosses the RunActor's inbox: a C SimpleQueue, not pykka's default
    queue.Queue (a Python lock and condition on each put and get)."""
    import queue

    from actors.orchestrator import Orchestrator

    assert isinstance(RunActor._create_actor_inbox(), queue.SimpleQueue)
    assert isinstance(Orchestrator._create_actor_inbox(), queue.SimpleQueue)
