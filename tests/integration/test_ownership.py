"""Two processes on one store: a run is driven by one of them at a time (DESIGN §8)."""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from actors.config import EngineConfig
from actors.engine import Engine
from eventstore.leases import Leases, dead_on_this_host
from flows import Flow, agent, approval
from flows.catalog import FlowRegistry
from flows.commands import inbox_of
from flows.events import stream_of
from tests.integration.scripted import ScriptedBackend

FLOW = Flow("owned", steps=[agent("work", persona="analyst", prompt="$input.question"),
                            approval("gate", deps=["work"], prompt="ok?")])
REGISTRY = FlowRegistry([FLOW])


def engine(store, node, backend) -> Engine:
    return Engine(store, REGISTRY, EngineConfig(node=node), backend=backend).start()


def test_a_second_process_does_not_take_over_a_live_run_but_hands_it_the_command(store):
    """b's cancel reaches a, the process driving the run, through a's inbox: a records it."""
    backend_a = ScriptedBackend(hold={"work"})
    a = engine(store, "host-a:1", backend_a)
    run_id = a.launch("owned", "q").run_id
    backend_a.wait_calls(1, run_id)
    b = engine(store, "host-b:2", ScriptedBackend())
    try:
        types = [r.type for r in store.read_stream(stream_of(run_id))]
        assert "RunRecovered" not in types and "StepFailed" not in types
        position = b.cancel(run_id, reason="superseded", by="bea")
        records = store.read_stream(stream_of(run_id))
        ended = next(r for r in records if r.type == "RunCancelled")
        assert ended.position == position and ended.data["by"] == "bea" and ended.data["reason"] == "superseded"
        assert {r.metadata["node"] for r in records} == {"host-a:1"}  # carried out by a, never taken over
        assert "RunRecovered" not in [r.type for r in records]
        inbox = store.read_stream(inbox_of("host-a:1"))
        assert [(r.type, r.metadata["node"]) for r in inbox] == [("CommandRequested", "host-b:2"),
                                                                ("CommandAnswered", "host-a:1")]
        assert inbox[1].data["position"] == position and inbox[1].data["refusal"] is None
    finally:
        a.stop()
        b.stop()


def test_a_paused_run_is_picked_up_by_any_process(store):
    backend_a = ScriptedBackend()
    a = engine(store, "host-a:1", backend_a)
    b = None
    try:
        run_id = a.launch("owned", "q").run_id
        a.wait(run_id, {"paused"})
        b = engine(store, "host-b:2", ScriptedBackend())
        b.approve(run_id, "gate", by="bea")  # a waiting run holds no thread: b takes it, a is not asked
        assert b.wait(run_id).status == "completed"
        assert store.read_stream(inbox_of("host-a:1")) == []
    finally:
        a.stop()
        if b is not None:
            b.stop()


def test_a_lease_of_a_dead_process_on_this_host_is_taken_at_once(store):
    leases = Leases(store.database, ttl_s=3600)
    dead = f"{socket.gethostname()}:{2**22 + 12345}"  # above pid_max: no such process
    assert leases.acquire("run-x", dead) is None
    assert leases.acquire("run-x", "elsewhere:1") is None  # not waiting out the hour
    assert leases.owner_of("run-x") == "elsewhere:1"
    assert leases.acquire("run-x", "third:3") == "elsewhere:1"
    leases.release("run-x", "elsewhere:1")
    assert leases.acquire("run-x", "third:3") is None


def test_a_lease_of_a_killed_process_not_yet_reaped_is_taken_at_once(store):
    """A server killed with kill -9 stays a zombie until its parent reaps it (a shell that started it in
    the background, a container's first process): signals still reach its pid, but it is gone. Its
    runs are recovered at the restart, not at the next heartbeat once something has reaped it."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        child.kill()
        deadline = time.monotonic() + 10
        while not Path(f"/proc/{child.pid}/stat").read_bytes().rpartition(b")")[2].split()[0] == b"Z":
            assert time.monotonic() < deadline, "the killed child did not become a zombie"
            time.sleep(0.01)
        zombie = f"{socket.gethostname()}:{child.pid}"
        leases = Leases(store.database, ttl_s=3600)
        assert leases.acquire("run-z", zombie) is None
        assert "run-z" not in leases.held()  # not a live owner for recovery
        assert leases.acquire("run-z", "elsewhere:1") is None  # not waiting out the hour
    finally:
        child.wait()


def test_a_process_is_gone_only_once_every_thread_of_it_has_ended():
    """The thread a pid names can end before the others: it is then a zombie while they still run. After
    a kill -9 that lasted 25-50 ms here, with the process's sockets open; a node that took the dead one's
    model slots in that time sent the model server one call more than the slots. So a process counts as
    gone only once every thread of it has ended, and by then its sockets are closed."""
    listener = socket.create_server(("127.0.0.1", 0))
    code = ("import ctypes, socket, threading, time\n"
            f"s = socket.create_connection(('127.0.0.1', {listener.getsockname()[1]}))\n"
            "threading.Thread(target=time.sleep, args=(60,)).start()\n"
            "print('ready', flush=True)\n"
            "ctypes.CDLL(None).pthread_exit(None)  # the first thread ends; the other runs on\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        conn, _ = listener.accept()
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child.pid}/stat").read_bytes().rpartition(b")")[2].split()[0] != b"Z":
            assert time.monotonic() < deadline, "the child's first thread did not end"
            time.sleep(0.01)
        owner = f"{socket.gethostname()}:{child.pid}"
        assert not dead_on_this_host(owner), "taken for gone while a thread of it still runs"
        assert not select.select([conn], [], [], 0)[0], "its socket is open"
        child.kill()
        deadline = time.monotonic() + 10
        while not dead_on_this_host(owner):
            assert time.monotonic() < deadline, "the killed child was never taken for gone"
        assert select.select([conn], [], [], 0)[0] and conn.recv(1) == b"", "gone, and its socket closed"
    finally:
        child.kill()
        child.wait()
        listener.close()


def test_the_api_hands_a_command_for_a_run_driven_elsewhere_to_its_driver(store):
    """Before: 409 "send the command there". Now the server hands it to the driver and answers its result."""
    from api.http.app import create_app
    from api.runtime import Runtime
    from api.settings import Settings
    from tests.api.access import authed_client, issue_tokens

    backend_a = ScriptedBackend(hold={"work"})
    a = engine(store, "host-a:1", backend_a)
    try:
        run_id = a.launch("owned", "q").run_id
        backend_a.wait_calls(1, run_id)
        runtime = Runtime(Settings(db=store.url), store=store)
        runtime.registry.register(FLOW)
        runtime.start(recover=False)
        try:
            with authed_client(create_app(runtime), issue_tokens(store)["admin"]) as client:
                r = client.post(f"/api/runs/{run_id}/steps/gate/approve", json={})
                assert r.status_code == 409, r.text  # a's refusal, as a would have answered it
                assert r.json()["state"] == "pending" and "not waiting" in r.json()["detail"]
                r = client.post(f"/api/runs/{run_id}/cancel", json={"reason": "stop"})
                assert r.status_code == 200, r.text
                last = store.read_stream(stream_of(run_id))[-1]
                assert last.type == "RunCancelled" and last.position == r.json()["position"]
                assert last.metadata["node"] == "host-a:1"
        finally:
            runtime.engine.stop()
            runtime.projector.stop()
    finally:
        a.stop()


def test_a_live_process_takes_over_the_runs_of_a_node_that_stopped_renewing(store):
    """No restart needed: the heartbeat that sees a node's lease gone recovers its runs."""
    from actors.clock import ManualClock
    from eventstore import NewEvent
    from flows.decide import start
    from flows.events import RunStarted, event_data
    from flows.launch import LaunchParams, prepare
    from flows.state import RunState, evolve

    leases = Leases(store.database, ttl_s=30)
    assert leases.acquire("node-ghost:1", "ghost:1") is None  # a process that is alive, for now
    launched = prepare(REGISTRY, LaunchParams("owned", "q"), run_id="01GHOST0000000000000000000", now=1.0)
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

    leases = Leases(store.database, ttl_s=30)
    assert leases.acquire("node-shared", "otherhost:4242") is None  # a process elsewhere, alive
    with pytest.raises(NodeInUse) as refused:
        Engine(store, REGISTRY, EngineConfig(node="shared"), backend=ScriptedBackend()).start()
    assert refused.value.owner == "otherhost:4242" and "BATON_NODE" in str(refused.value)


def ghost_run(store, run_id: str) -> None:
    """A run whose agent step a process named ghost:1 started, as its log shows; the ghost holds its lease."""
    from eventstore import NewEvent
    from flows.decide import start
    from flows.events import RunStarted, event_data
    from flows.launch import LaunchParams, prepare
    from flows.state import RunState, evolve

    launched = prepare(REGISTRY, LaunchParams("owned", "q"), run_id=run_id, now=1.0)
    state = evolve(evolve(RunState(), launched), RunStarted(run_id=run_id, at=1.0))
    events = [launched, RunStarted(run_id=run_id, at=1.0), *start(state, ["work"], 1.0)]
    store.append(stream_of(run_id), [NewEvent(type(e).__name__, event_data(e), {"node": "ghost:1"})
                                     for e in events], 0)


def when_requested(store, node: str, then) -> threading.Thread:
    """Call ``then()`` once a command lands in ``node``'s inbox (followed through the store)."""
    subscription = store.subscribe(after=store.head())

    def watch() -> None:
        try:
            for rec in subscription:
                if rec.stream_id == inbox_of(node) and rec.type == "CommandRequested":
                    then()
                    return
        finally:
            subscription.close()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_driver_that_dies_before_answering_leaves_the_run_to_the_requester(store):
    leases = Leases(store.database, ttl_s=30)
    assert leases.acquire("node-ghost:1", "ghost:1") is None  # alive, but follows no inbox
    ghost_run(store, "01GHOSTDIES000000000000000")
    b = Engine(store, REGISTRY, EngineConfig(node="host-b:2", ask_timeout_s=20), backend=ScriptedBackend()).start()
    try:
        dies = when_requested(store, "ghost:1", lambda: leases.release("node-ghost:1", "ghost:1"))
        position = b.cancel("01GHOSTDIES000000000000000", by="bea")
        dies.join(5)
        records = store.read_stream(stream_of("01GHOSTDIES000000000000000"))
        assert records[-1].type == "RunCancelled" and records[-1].position == position
        assert records[-1].metadata["node"] == "host-b:2"  # b took the run over once the ghost was gone
        assert [r.type for r in store.read_stream(inbox_of("ghost:1"))] == ["CommandRequested"]
    finally:
        b.stop()


def test_a_live_driver_that_never_answers_times_out_and_nothing_is_recorded(store):
    from actors.errors import NodeDidNotAnswer

    leases = Leases(store.database, ttl_s=30)
    assert leases.acquire("node-ghost:1", "ghost:1") is None
    ghost_run(store, "01GHOSTSILENT0000000000000")
    before = store.read_stream(stream_of("01GHOSTSILENT0000000000000"))
    b = Engine(store, REGISTRY, EngineConfig(node="host-b:2", ask_timeout_s=1.5), backend=ScriptedBackend()).start()
    try:
        with pytest.raises(NodeDidNotAnswer) as silent:
            b.cancel("01GHOSTSILENT0000000000000")
        assert "ghost:1" in str(silent.value) and "01GHOSTSILENT0000000000000" in str(silent.value)
        assert store.read_stream(stream_of("01GHOSTSILENT0000000000000")) == before
    finally:
        b.stop()
