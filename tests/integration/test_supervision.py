"""No actor dies of a failure and leaves the process "healthy" (pykka has no supervision of its own).

A store that cannot be read must never end the orchestrator or a RunActor;
an orchestrator that dies all the same (here: of a message it does not
know, as a bug would) is reported by ``Engine.health()`` and started again,
and the runs it was driving go on.
"""

from __future__ import annotations

import threading
import time

import pytest

from actors.clock import ManualClock
from actors.config import EngineConfig
from actors.engine import Engine
from eventstore import StoreUnavailableError, open_store
from flows import Flow, agent, approval, code
from flows.catalog import FlowRegistry


def tally(ctx):
    return {"n": len(ctx.outputs)}


GATED = Flow("sup-gated", steps=[agent("draft", persona="writer", prompt="Draft: $input.question"),
                                 approval("gate", deps=["draft"], prompt="ok?"),
                                 code("publish", fn=tally, deps=["gate"])])
HOLD = threading.Event()


def held(ctx):
    if not HOLD.wait(10):
        raise RuntimeError("never released")
    return "released"


HELD = Flow("sup-held", steps=[code("hold", fn=held), code("after", fn=tally, deps=["hold"])])
REGISTRY = FlowRegistry([GATED, HELD])


@pytest.fixture
def store(sqlite_url):
    s = open_store(sqlite_url)
    yield s
    s.close()


def kill_orchestrator(engine: Engine) -> None:
    """Make the orchestrator fail as a bug would: an exception inside one of its handlers."""
    ref = engine._orchestrator
    assert ref is not None
    ref.tell(object())  # no handler for it: TypeError in on_receive, and pykka ends the actor
    deadline = time.monotonic() + 5
    while ref.is_alive():
        assert time.monotonic() < deadline, "the orchestrator did not fail"
        time.sleep(0.01)


def test_a_dead_orchestrator_shows_in_health_and_is_started_again(store):
    clock = ManualClock()
    with Engine(store, REGISTRY, EngineConfig(), clock=clock) as engine:
        run_id = engine.launch("sup-gated", "q").run_id
        engine.wait(run_id, {"paused"})
        assert engine.health()["status"] == "ok"
        kill_orchestrator(engine)
        health = engine.health()
        assert health["status"] == "down" and "failed" in health["detail"]
        clock.advance(1.0)  # the restart falls due on the engine's clock
        health = engine.health()
        assert health["status"] == "ok" and health["restarts"] == 1
        assert {"in_progress", "planned_queued"} <= set(engine.plan())
        engine.approve(run_id, "gate", by="ann")
        assert engine.wait(run_id).status == "completed"


def test_a_command_to_a_dead_orchestrator_restarts_it_at_once_and_its_runs_go_on(store):
    with Engine(store, REGISTRY, EngineConfig(recover=False), clock=ManualClock()) as engine:
        run_id = engine.launch("sup-gated", "q").run_id
        engine.wait(run_id, {"paused"})
        kill_orchestrator(engine)
        began = time.monotonic()
        engine.approve(run_id, "gate", by="ann")  # not "Orchestrator not found": a new one takes it
        assert time.monotonic() - began < 5
        assert engine.wait(run_id).status == "completed"
        assert engine.health()["restarts"] == 1


def test_a_command_while_the_store_is_away_is_refused_at_once_and_records_nothing(store, monkeypatch):
    with Engine(store, REGISTRY) as engine:
        run_id = engine.launch("sup-gated", "q").run_id
        engine.wait(run_id, {"paused"})
        head = store.head()

        def away() -> None:
            raise StoreUnavailableError("the database is restarting (injected by the test)")

        monkeypatch.setattr(store._backend, "query", lambda *a, **k: away())
        with pytest.raises(StoreUnavailableError):
            store.head()  # the store now knows it cannot be read
        began = time.monotonic()
        for command in (lambda: engine.launch("sup-gated", "q2"), lambda: engine.approve(run_id, "gate")):
            with pytest.raises(StoreUnavailableError, match="nothing was recorded"):
                command()
        assert time.monotonic() - began < 1.0
        monkeypatch.undo()
        assert store.head() == head
        assert engine.health()["status"] == "ok"
        engine.approve(run_id, "gate", by="ann")
        assert engine.wait(run_id).status == "completed"


def test_recovery_at_start_waits_out_a_store_that_cannot_be_read(store, monkeypatch):
    HOLD.clear()
    first = Engine(store, REGISTRY, EngineConfig(node="first:1")).start()
    run_id = first.launch("sup-held", "q").run_id
    first.wait(run_id, lambda s: s.steps["hold"].status == "running")
    first.stop()  # the run is left unfinished, as a crash would leave it
    HOLD.set()
    real_query = store._backend.query

    def away(*args, **kwargs):
        raise StoreUnavailableError("the database is restarting (injected by the test)")

    monkeypatch.setattr(store._backend, "query", away)
    clock = ManualClock()
    with Engine(store, REGISTRY, EngineConfig(node="second:2"), clock=clock) as second:
        deadline = time.monotonic() + 5
        while clock.pending() < 2:  # the orchestrator has started: its retry and its lease renewal are due
            assert time.monotonic() < deadline, "the orchestrator did not schedule a retry of its recovery"
            time.sleep(0.01)
        assert second.health()["status"] == "ok"  # recovery failed, the orchestrator did not
        monkeypatch.setattr(store._backend, "query", real_query)
        clock.advance(1.0)  # the retry falls due
        second.wait(run_id, lambda s: s.steps["hold"].attempt == 2)  # recovered: the lost attempt is retried
        clock.advance(5.0)  # its retry delay
        assert second.wait(run_id).status == "completed"
