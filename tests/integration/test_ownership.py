"""Two processes on one store: a run is driven by one of them at a time (DESIGN §8)."""

from __future__ import annotations

import socket

import pytest

from actors.config import EngineConfig
from actors.engine import Engine
from actors.errors import RunOwnedElsewhere
from eventstore import open_store
from eventstore.leases import Leases
from flows import Flow, agent, approval
from flows.catalog import FlowRegistry
from flows.events import stream_of
from tests.integration.scripted import ScriptedBackend

FLOW = Flow("owned", steps=[agent("work", persona="analyst", prompt="$input.question"),
                            approval("gate", deps=["work"], prompt="ok?")])
REGISTRY = FlowRegistry([FLOW])


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


def engine(store, node, backend) -> Engine:
    return Engine(store, REGISTRY, EngineConfig(node=node), backend=backend).start()


def test_a_second_process_does_not_take_over_a_live_run(store):
    backend_a = ScriptedBackend(hold={"work"})
    a = engine(store, "host-a:1", backend_a)
    run_id = a.launch("owned", "q").run_id
    backend_a.wait_calls(1, run_id)
    b = engine(store, "host-b:2", ScriptedBackend())
    try:
        types = [r.type for r in store.read_stream(stream_of(run_id))]
        assert "RunRecovered" not in types and "StepFailed" not in types
        with pytest.raises(RunOwnedElsewhere) as refused:
            b.cancel(run_id)
        assert refused.value.owner == "host-a:1"
        backend_a.release(run_id, "work")
        a.wait(run_id, {"paused"})
        a.stop()  # a clean stop gives its leases up
        a = None
        b.approve(run_id, "gate", by="bea")  # the paused run can be picked up anywhere
        assert b.wait(run_id).status == "completed"
    finally:
        if a is not None:
            a.stop()
        b.stop()


def test_a_lease_of_a_dead_process_on_this_host_is_taken_at_once(store):
    leases = Leases(store.engine, ttl_s=3600)
    dead = f"{socket.gethostname()}:{2**22 + 12345}"  # above pid_max: no such process
    assert leases.acquire("run-x", dead) is None
    assert leases.acquire("run-x", "elsewhere:1") is None  # not waiting out the hour
    assert leases.owner_of("run-x") == "elsewhere:1"
    assert leases.acquire("run-x", "third:3") == "elsewhere:1"
    leases.release("run-x", "elsewhere:1")
    assert leases.acquire("run-x", "third:3") is None


def test_the_api_refuses_a_command_for_a_run_driven_elsewhere_with_409(store):
    from starlette.testclient import TestClient

    from api.http.app import create_app
    from api.runtime import Runtime
    from api.settings import Settings

    backend_a = ScriptedBackend(hold={"work"})
    a = engine(store, "host-a:1", backend_a)
    try:
        run_id = a.launch("owned", "q").run_id
        backend_a.wait_calls(1, run_id)
        runtime = Runtime(Settings(db=store.url), store=store)
        runtime.registry.register(FLOW)
        runtime.start(recover=False)
        try:
            with TestClient(create_app(runtime)) as client:
                head = store.head()
                r = client.post(f"/api/runs/{run_id}/cancel", json={})
                assert r.status_code == 409, r.text
                body = r.json()
                assert body["owner"] == "host-a:1" and "another process" in body["detail"]
                assert store.head() == head
        finally:
            runtime.engine.stop()
            runtime.projector.stop()
        backend_a.release(run_id, "work")
    finally:
        a.stop()


def test_a_live_process_takes_over_the_runs_of_a_node_that_stopped_renewing(store):
    """No restart needed: the heartbeat that sees a node's lease gone recovers its runs."""
    from actors.clock import ManualClock
    from eventstore import NewEvent
    from flows.decide import start
    from flows.events import RunStarted, event_data
    from flows.launch import prepare
    from flows.state import RunState, evolve

    leases = Leases(store.engine, ttl_s=30)
    assert leases.acquire("node-ghost:1", "ghost:1") is None  # a process that is alive, for now
    launched = prepare(REGISTRY, run_id="01GHOST0000000000000000000", now=1.0, flow="owned", question="q")
    state = evolve(evolve(RunState(), launched), RunStarted(run_id=launched.run_id, at=1.0))
    events = [launched, RunStarted(run_id=launched.run_id, at=1.0), *start(state, ["work"], 1.0)]
    store.append(stream_of(launched.run_id), [NewEvent(type(e).__name__, event_data(e), {"node": "ghost:1"})
                                              for e in events], 0)
    clock = ManualClock()
    b = Engine(store, REGISTRY, EngineConfig(node="host-b:2", lease_ttl_s=30), backend=ScriptedBackend(),
               clock=clock).start()
    try:
        b.plan()  # recovery at start has run: the ghost's run was left alone
        assert "RunRecovered" not in [r.type for r in store.read_stream(stream_of(launched.run_id))]
        leases.release("node-ghost:1", "ghost:1")  # the ghost dies
        clock.advance(10)  # b's next heartbeat
        state = b.wait(launched.run_id, {"paused"}, timeout=10)
        lost = [r.data for r in store.read_stream(stream_of(launched.run_id)) if r.type == "StepFailed"]
        assert lost[0]["lost"] and state.steps["work"].status == "completed"
    finally:
        b.stop()


def test_a_second_live_process_cannot_take_a_node_name_in_use(store):
    from actors.errors import NodeInUse

    leases = Leases(store.engine, ttl_s=30)
    assert leases.acquire("node-shared", "otherhost:4242") is None  # a process elsewhere, alive
    with pytest.raises(NodeInUse) as refused:
        Engine(store, REGISTRY, EngineConfig(node="shared"), backend=ScriptedBackend()).start()
    assert refused.value.owner == "otherhost:4242" and "BATON_NODE" in str(refused.value)
