"""A start parks the runs waiting at an approval from the read tables, reading none of their streams.

Recovery (``Orchestrator._recover``) registers a run the read tables show
parked (``flow_runs.parked_until``: paused, nothing of its own to do, no event
after the projector's checkpoint) as paused, with its approval timer armed,
and reads its stream only when a command or its timer touches it. These tests
count the streams read at start, and check that such a run still answers an
approval, a rejection and its timer as a run loaded at start does.
"""

from __future__ import annotations

from collections import Counter

import pytest

from actors.clock import ManualClock
from actors.config import EngineConfig
from actors.engine import Engine
from actors.errors import EngineTimeout
from eventstore import open_store
from flows import Flow, approval, code
from flows.catalog import FlowRegistry
from flows.events import stream_of
from projections import Projector
from projections.queries import ReadModel


def after(ctx):
    return "after: " + ctx.outputs.get("gate", "")


GATED = Flow("parked-gated", steps=[code("before", fn=lambda ctx: "ready"),
                                    approval("gate", prompt="Ship?", deps=["before"]),
                                    code("after", fn=after, deps=["gate"])])
TIMED = Flow("parked-timed", steps=[approval("gate", prompt="Ship?", timeout_s=60),
                                    code("after", fn=after, deps=["gate"])])
TWO_GATES = Flow("parked-two-gates", steps=[approval("first", prompt="First?"),
                                            approval("second", prompt="Second?", deps=["first"], timeout_s=60),
                                            code("after", fn=after, deps=["second"])])
REGISTRY = FlowRegistry([GATED, TIMED, TWO_GATES])


@pytest.fixture
def store(store_url):
    s = open_store(store_url, poll_interval=0.05)
    yield s
    s.close()


def project(store) -> None:
    """Bring the read tables up to the log's head, then stop the projector (as a server stopping)."""
    projector = Projector(store).start()
    try:
        assert projector.wait_for(store.head(), timeout=30), projector.last_error
    finally:
        projector.stop()


class StreamReads:
    """Counts the run streams read through the store (``read_stream``, ``read_streams``, ``read_stream_and``)."""

    def __init__(self, store) -> None:
        self.store = store
        self.read: Counter[str] = Counter()
        one, many, one_and = store.read_stream, store.read_streams, store.read_stream_and

        def read_stream(stream_id, after_version=0):
            self.read[stream_id] += 1
            return one(stream_id, after_version)

        def read_streams(stream_ids):
            self.read.update(stream_ids)
            return many(stream_ids)

        def read_stream_and(stream_id, sql, params=()):
            self.read[stream_id] += 1
            return one_and(stream_id, sql, params)

        store.read_stream, store.read_streams, store.read_stream_and = read_stream, read_streams, read_stream_and

    def of(self, run_ids) -> dict[str, int]:
        return {run_id: self.read[stream_of(run_id)] for run_id in run_ids if self.read[stream_of(run_id)]}

    def close(self) -> None:
        del self.store.read_stream, self.store.read_streams, self.store.read_stream_and


def parked(store, flow: str, n: int, clock: ManualClock | None = None) -> list[str]:
    """``n`` runs of ``flow`` launched and waiting at their approval; the read tables then projected."""
    with Engine(store, REGISTRY, EngineConfig(max_active_runs=4), clock=clock) as engine:
        run_ids = [engine.launch(flow, f"q{i}").run_id for i in range(n)]
        for run_id in run_ids:
            engine.wait(run_id, {"paused"}, timeout=30)
    project(store)
    return run_ids


def restart(store, clock: ManualClock | None = None) -> Engine:
    return Engine(store, REGISTRY, EngineConfig(max_active_runs=4), clock=clock,
                  open_runs=ReadModel(store.database).open_runs).start()


def test_a_start_reads_no_stream_of_runs_parked_at_an_approval_and_they_still_finish(store):
    run_ids = parked(store, GATED.name, 8)
    reads = StreamReads(store)
    try:
        engine = restart(store)
        try:
            plan = engine.plan()
            assert [(r["run_id"], r["reason"]) for r in plan["planned_queued"]] == [
                (run_id, "approval") for run_id in run_ids]
            assert reads.of(run_ids) == {}, "the start read the streams of runs parked at an approval"
            engine.approve(run_ids[0], "gate", by="ann")
            engine.reject(run_ids[1], "gate", by="bob", comment="no")
            assert engine.wait(run_ids[0], timeout=30).status == "completed"
            rejected = engine.wait(run_ids[1], timeout=30)
            assert rejected.status == "rejected" and rejected.steps["gate"].decided_by == "bob"
            assert set(reads.of(run_ids)) == set(run_ids[:2])  # the others are still not read
            left = engine.plan()["planned_queued"]
            assert [(r["run_id"], r["reason"]) for r in left] == [(r, "approval") for r in run_ids[2:]]
        finally:
            engine.stop()
    finally:
        reads.close()


def advance_until_ended(engine: Engine, clock: ManualClock, run_id: str):
    for _ in range(40):
        clock.advance(30.0)
        try:
            return engine.wait(run_id, timeout=0.25)
        except EngineTimeout:
            continue
    raise AssertionError(f"run {run_id} did not end: {engine.state(run_id).status}")


def test_the_approval_timer_of_a_run_parked_from_the_read_tables_fires_after_a_restart(store):
    clock = ManualClock()
    (run_id,) = parked(store, TIMED.name, 1, clock)
    later = ManualClock(start=clock.now() + 10)  # back before the timer is due
    reads = StreamReads(store)
    try:
        engine = restart(store, later)
        try:
            assert [r["run_id"] for r in engine.plan()["planned_queued"]] == [run_id]
            assert reads.of([run_id]) == {}
            state = advance_until_ended(engine, later, run_id)
        finally:
            engine.stop()
    finally:
        reads.close()
    assert state.status == "rejected" and state.steps["gate"].decided_by == "timer gate.timeout_s=60"


def test_a_run_with_events_after_the_checkpoint_is_read_at_start_and_keeps_its_new_timer(store):
    """The read tables show both runs parked at ``first``; one was approved after their checkpoint and
    now waits at ``second``, whose timer only its log knows: that run is read, the other is not."""
    clock = ManualClock()
    still, moved = parked(store, TWO_GATES.name, 2, clock)
    with Engine(store, REGISTRY, EngineConfig(max_active_runs=4, recover=False), clock=clock) as engine:
        engine.approve(moved, "first", by="ann")
        engine.wait(moved, lambda s: s.steps["second"].status == "paused", timeout=30)
    later = ManualClock(start=clock.now())
    reads = StreamReads(store)
    try:
        engine = restart(store, later)
        try:
            assert {r["run_id"] for r in engine.plan()["planned_queued"]} == {still, moved}
            assert set(reads.of([still, moved])) == {moved}
            state = advance_until_ended(engine, later, moved)
            assert engine.state(still).status == "paused"
        finally:
            engine.stop()
    finally:
        reads.close()
    assert state.status == "rejected" and state.steps["second"].decided_by == "timer second.timeout_s=60"


def test_a_cluster_parks_runs_from_the_read_tables_and_keeps_its_adoption_rules(pg_url):
    """Two nodes on PostgreSQL: runs parked by a live node stay that node's when another starts; once it
    stops and hands them off, the other takes them; neither start reads their streams."""
    import time

    store = open_store(pg_url, poll_interval=0.05)
    reads = None

    def node(name: str) -> Engine:
        config = EngineConfig(node=name, cluster=True, slot_pool="shared", lease_ttl_s=60.0)
        return Engine(store, REGISTRY, config, open_runs=ReadModel(store.database).open_runs).start()

    a = node("node-a")
    try:
        run_ids = [a.launch(GATED.name, f"q{i}").run_id for i in range(6)]
        for run_id in run_ids:
            a.wait(run_id, {"paused"}, timeout=30)
        project(store)
        reads = StreamReads(store)
        b = node("node-b")
        try:
            planned = sorted((r["run_id"], r["reason"], r["node"]) for r in b.plan()["planned_queued"])
            assert planned == sorted((run_id, "approval", "node-a") for run_id in run_ids)
            a.stop()  # hands its runs off: node-b adopts them
            deadline = time.monotonic() + 10
            while {r["node"] for r in b.plan()["planned_queued"]} != {"node-b"}:
                assert time.monotonic() < deadline, b.plan()
                time.sleep(0.05)
            assert sorted(r["run_id"] for r in b.plan()["planned_queued"]) == sorted(run_ids)
            assert reads.of(run_ids) == {}, "a start read the streams of runs parked at an approval"
            b.approve(run_ids[0], "gate", by="ann")
            assert b.wait(run_ids[0], timeout=30).status == "completed"
        finally:
            b.stop()
    finally:
        a.stop()
        if reads is not None:
            reads.close()
        store.close()


def test_a_launch_reads_no_stream_of_its_new_run(store):
    """A launched run's id was just made: its actor starts from an empty state instead of reading its
    (empty) stream, one query a run fewer on the way to its first step."""
    reads = StreamReads(store)
    try:
        with Engine(store, REGISTRY, EngineConfig()) as engine:
            run_ids = [engine.launch(GATED.name, f"q{i}").run_id for i in range(3)]  # (answered once recorded)
            assert reads.of(run_ids) == {}
            for run_id in run_ids:  # (a wait on a run whose actor has stopped, parked, follows the store)
                assert engine.wait(run_id, {"paused"}, timeout=30).steps["before"].output == "ready"
            before = reads.read[stream_of(run_ids[0])]
            engine.approve(run_ids[0], "gate")  # a command on a parked run still reads its stream first
            assert reads.read[stream_of(run_ids[0])] == before + 1
    finally:
        reads.close()
