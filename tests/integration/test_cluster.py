"""Several engines on one PostgreSQL form one cluster (DESIGN §16): one queue, capacity counted across them.

Three engines of this process stand for three nodes (distinct node names);
tests/e2e/test_cluster_nodes.py does the same with three ``baton serve``
processes, kill -9 and SIGTERM.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from actors.config import EngineConfig
from actors.engine import Engine
from eventstore import SqlStore, open_store
from flows import Flow, agent, code
from flows.catalog import FlowRegistry
from flows.events import stream_of
from tests.integration.scripted import ScriptedBackend

NODES = ("node-a", "node-b", "node-c")

QUICK = Flow("quick", steps=[code("one", fn=lambda ctx: "done")])
WORK = Flow("work", steps=[agent(f"w{i}", persona="analyst", prompt="$input.question") for i in range(3)])
REGISTRY = FlowRegistry([QUICK, WORK])


class CountingBackend(ScriptedBackend):
    """Holds every call until released; counts the calls in flight across all engines sharing it."""

    def __init__(self) -> None:
        super().__init__(hold={"w0", "w1", "w2"})
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def run(self, request, on_delta, cancel):  # type: ignore[no-untyped-def]
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            return super().run(request, on_delta, cancel)
        finally:
            with self.lock:
                self.now -= 1


@pytest.fixture
def pg_store(pg_url):
    store = open_store(pg_url, poll_interval=0.05)
    yield store
    store.close()


def cluster(store: SqlStore, backend=None, **config) -> list[Engine]:
    engines = []
    for node in NODES:
        cfg = EngineConfig(node=node, cluster=True, slot_pool="shared", **config)
        engines.append(Engine(store, REGISTRY, cfg, backend=backend or ScriptedBackend()).start())
    return engines


def settled(engine: Engine, check, timeout: float = 10.0) -> dict:  # type: ignore[no-untyped-def]
    """The cluster's plan once ``check(plan)`` holds (every launch has reached the queue), read again
    after each short pause; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check(plan := engine.plan()):
        assert time.monotonic() < deadline, f"the plan did not settle: {plan}"
        time.sleep(0.05)
    return plan


def drivers(store: SqlStore, run_id: str) -> set[str]:
    """Nodes that recorded RunStarted for the run."""
    return {r.metadata["node"] for r in store.read_stream(stream_of(run_id)) if r.type == "RunStarted"}


def members(store: SqlStore) -> set[str]:
    """The nodes that have joined the cluster (alive members), as ``baton nodes`` lists them."""
    from actors.cluster import nodes_of

    return {n["node"] for n in nodes_of(store) if n["member"] and n["alive"]}


def test_runs_launched_on_one_node_are_admitted_once_and_spread_over_every_node(pg_store):
    engines = cluster(pg_store)
    try:
        # A node's start returns before it has joined the cluster (on a loaded machine, after 12 quick
        # runs were spread): they are spread over the nodes that have joined.
        deadline = time.monotonic() + 10
        while members(pg_store) != set(NODES):
            assert time.monotonic() < deadline, f"not every node joined within 10 s: {members(pg_store)}"
            time.sleep(0.05)
        run_ids = [engines[0].launch("quick", f"q{i}").run_id for i in range(12)]
        for run_id in run_ids:
            assert engines[0].wait(run_id, {"completed"}, timeout=20).status == "completed"
        started = Counter()
        for run_id in run_ids:
            records = pg_store.read_stream(stream_of(run_id))
            assert [r.type for r in records].count("RunStarted") == 1, "admitted once"
            assert [r.type for r in records][:2] == ["RunLaunched", "RunQueued"]
            started.update(drivers(pg_store, run_id))
        assert set(started) == set(NODES), f"every node drives some runs: {started}"
    finally:
        for e in engines:
            e.stop()


def test_agent_slots_and_max_active_runs_are_counted_across_the_nodes(pg_store):
    backend = CountingBackend()
    engines = cluster(pg_store, backend, agent_slots=2, max_active_runs=3)
    try:
        run_ids = [engines[i % 3].launch("work", f"q{i}").run_id for i in range(5)]
        backend.wait_calls(2, timeout=10)
        plan = settled(engines[1], lambda p: len(p["in_progress"]) + len(p["planned_queued"]) == 5)
        assert plan["cluster"] and plan["slots_in_use"] == 2
        assert len(plan["in_progress"]) == 3 and all(r["node"] in NODES for r in plan["in_progress"])
        assert [p["reason"] for p in plan["planned_queued"]] == ["capacity", "capacity"]
        assert engines[2].plan()["in_progress"] == plan["in_progress"], "the same plan from every node"
        done: set[str] = set()
        while len(done) < len(run_ids) * 3:
            for run_id, step_id in backend.wait_calls(1, timeout=10):
                backend.release(run_id, step_id)
                done.add(f"{run_id}/{step_id}")
        for run_id in run_ids:
            assert engines[0].wait(run_id, {"completed"}, timeout=20).status == "completed"
        assert backend.most == 2, f"at most 2 calls at once across the three nodes (saw {backend.most})"
    finally:
        for e in engines:
            e.stop()


def test_a_stopping_node_hands_its_runs_to_the_others_at_once(pg_store):
    backend = CountingBackend()
    engines = cluster(pg_store, backend, lease_ttl_s=60.0, agent_slots=0)  # a lease far longer than a hand-off
    try:
        run_ids = [engines[0].launch("work", f"q{i}").run_id for i in range(6)]
        backend.wait_calls(18, timeout=10)
        plan = engines[0].plan()
        leaving = plan["in_progress"][0]["node"]
        theirs = [r["run_id"] for r in plan["in_progress"] if r["node"] == leaving]
        engines[NODES.index(leaving)].stop()
        stayed = [e for e in engines if e.config.node != leaving]
        started = time.monotonic()
        for run_id in theirs:  # taken over by another node (RunRecovered), well before the lease would end
            stayed[0].wait(run_id, lambda s: s.recoveries > 0, timeout=5)
        assert time.monotonic() - started < 5
        recovered_by = {r.metadata["node"] for run_id in theirs for r in pg_store.read_stream(stream_of(run_id))
                        if r.type == "RunRecovered"}
        assert recovered_by and leaving not in recovered_by
        assert leaving not in {r["node"] for r in stayed[0].plan()["in_progress"]}
        finish(backend, stayed[0], run_ids)
        for run_id in run_ids:
            done = Counter((r.data["step_id"], r.data["attempt"]) for r in pg_store.read_stream(stream_of(run_id))
                           if r.type == "StepCompleted")
            assert set(done.values()) == {1}, "no step recorded twice"
    finally:
        for e in engines:
            e.stop()


def finish(backend: CountingBackend, engine: Engine, run_ids: list[str], timeout: float = 20.0) -> None:
    """Answer every held call of the runs until each has ended."""
    deadline = time.monotonic() + timeout
    left = set(run_ids)
    while left:
        assert time.monotonic() < deadline, f"runs not ended: {left}"
        for run_id, step_id in backend.running():
            backend.release(run_id, step_id)
        for run_id in list(left):
            if engine.wait(run_id, lambda s: True, timeout=1).terminal:
                left.discard(run_id)
        if left:
            try:
                backend.wait_calls(1, timeout=0.5)
            except AssertionError:
                pass


def test_a_node_that_lost_its_lease_is_fenced_from_the_queue_and_the_slots(pg_store):
    from eventstore.cluster import ClusterTables, member_lease
    from eventstore.leases import Leases

    leases = Leases(pg_store.database, ttl_s=30.0)
    a = ClusterTables(pg_store.database, leases, "node-a", "host:1")
    b = ClusterTables(pg_store.database, leases, "node-b", "host:2")
    assert a.join() is None and b.join() is None
    assert a.reserve("http://gpu/v1", 4, in_use=0, wanted=3) == 3
    assert b.reserve("http://gpu/v1", 4, in_use=0, wanted=3) == 1, "only what a does not hold"
    a.enqueue("r1", "quick", 1.0)
    leases.release(member_lease("node-a"), "host:1")
    assert leases.acquire(member_lease("node-a"), "host:9") is None  # another process took node-a's name
    assert a.admit(0, 0.0).items == (), "a fenced node admits nothing"
    assert a.reserve("http://gpu/v1", 4, in_use=0, wanted=3) == 0, "a fenced node gets no slot"
    assert b.reserve("http://gpu/v1", 4, in_use=1, wanted=4) == 4, "a's slots came back when it lost its lease"
    assert [i.item_id for i in b.admit(0, 0.0).items] == ["r1"]
    assert [(i.item_id, i.state, i.node) for i in a.items()] == [("r1", "active", "node-b")]


def test_fair_shares_split_what_is_wanted():
    from eventstore.cluster import fair_shares

    assert fair_shares(4, {"a": 10, "b": 1}) == {"a": 3, "b": 1}
    assert fair_shares(4, {"a": 10, "b": 10, "c": 10}) == {"a": 2, "b": 1, "c": 1}
    assert fair_shares(5, {"a": 0, "b": 2}) == {"a": 0, "b": 2}


class RecordingTables:
    """The queue writer's side of ClusterTables (``apply``): each commit's changes, recorded."""

    def __init__(self) -> None:
        self.commits: list[dict[str, str]] = []
        self.committed = threading.Event()

    def apply(self, changes: dict[str, str]) -> None:
        self.commits.append(dict(changes))
        self.committed.set()


def wait_until(check, timeout: float = 10.0, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.02)


def test_queue_changes_go_in_one_transaction_each_run_keeping_its_last(pg_store):
    from eventstore.cluster import ClusterTables
    from eventstore.leases import Leases

    a = ClusterTables(pg_store.database, Leases(pg_store.database, ttl_s=30.0), "node-a", "host:1")
    assert a.join() is None
    for run_id in ("r1", "r2", "r3"):
        assert a.adopt(run_id, "quick", 1.0, "paused")
    a.enqueue("r4", "quick", 2.0)
    a.apply({"r1": "", "r2": "active", "r3": "paused", "r4": "active"})
    assert [(i.item_id, i.state, i.node) for i in a.items()] == [
        ("r2", "active", "node-a"), ("r3", "paused", "node-a"), ("r4", "queued", "")], \
        "r1 ended; a queued item is admitted by the queue, never by a change"


def test_the_queue_writer_lets_an_approved_runs_changes_gather_into_one_commit():
    """An approved run is active again, then ended a few ms later: the writer waits GATHER_S after a
    first change, so both go in one commit, as the run's last change (one DELETE, not an UPDATE and
    then a DELETE); nothing is committed before that pause, and a stopping writer does not wait it."""
    from actors.cluster import QueueWriter

    tables = RecordingTables()
    writer = QueueWriter(tables, gather_s=30.0)  # type: ignore[arg-type]
    try:
        writer.put("r1", "active")
        assert not tables.committed.wait(0.3), "committed the first change without letting the next join it"
        writer.put("r1", "")
        writer.put("r2", "paused")
        assert writer.pending()
    finally:
        started = time.monotonic()
        writer.close()
    assert time.monotonic() - started < 5.0, "the writer waited out its pause while stopping"
    assert tables.commits == [{"r1": "", "r2": "paused"}]


def test_a_nodes_admission_counts_its_changes_not_yet_committed_and_others_see_room_once_committed(
        pg_store, monkeypatch):
    from actors.cluster import Cluster
    from eventstore import StoreError
    from eventstore.cluster import ClusterTables
    from eventstore.leases import Leases

    leases = Leases(pg_store.database, ttl_s=30.0)
    a = Cluster(pg_store.database, leases, "node-a", "pool", 1, 0, lambda kind: None, read=pg_store.read_sql)
    b = ClusterTables(pg_store.database, leases, "node-b", "host:2")
    try:
        assert b.join() is None
        assert a.tables.adopt("r1", "quick", 1.0, "paused")
        a.tables.enqueue("r2", "quick", 2.0)
        failed = threading.Event()
        apply = a.tables.apply

        def flaky(changes):  # type: ignore[no-untyped-def]
            if not failed.is_set():  # the writer's first commit fails (the store away for a moment)
                failed.set()
                raise StoreError("the store is away")
            return apply(changes)

        monkeypatch.setattr(a.tables, "apply", flaky)
        a.active("r1")  # an approval answered on node-a: r1 takes the cluster's one place again
        assert failed.wait(5)
        assert a.admit() == ([], False), "node-a counts r1 active before it admits (its change committed first)"
        assert [(i.item_id, i.state) for i in b.items()] == [("r1", "active"), ("r2", "queued")]
        assert b.admit(1, 0.0).items == (), "no room in the cluster"
        a.ended("r1")  # r1 ended on node-a: committed by the writer's thread, then the room is free
        wait_until(lambda: [i.item_id for i in b.items()] == ["r2"], what="r1's row gone")
        assert [i.item_id for i in b.admit(1, 0.0).items] == ["r2"], "another node sees the room free"
    finally:
        a.close()


def test_a_stopping_node_commits_its_queue_changes_first(pg_store):
    from actors.cluster import Cluster
    from eventstore.leases import Leases

    a = Cluster(pg_store.database, Leases(pg_store.database, ttl_s=30.0), "node-a", "pool", 0, 0, lambda kind: None)
    assert a.tables.adopt("r1", "quick", 1.0, "active") and a.tables.adopt("r2", "quick", 1.0, "active")
    a.ended("r1")
    a.paused("r2")
    a.close()
    assert [(i.item_id, i.state) for i in a.tables.items()] == [("r2", "paused")]


def test_adopting_many_runs_at_once_decides_each_as_adopting_it_alone(pg_store):
    """A recovery adopts every run it found in one transaction; each run's outcome is the one-by-one rule:
    new ones join (queued ones the queue), a queued one or one a live member drives stays as it is, one
    whose driver is gone becomes this member's in the state it had."""
    from eventstore.cluster import ClusterTables
    from eventstore.leases import Leases

    leases = Leases(pg_store.database, ttl_s=30.0)
    a, b, gone = (ClusterTables(pg_store.database, leases, node, f"host:{i}")
                  for i, node in enumerate(("node-a", "node-b", "node-x")))
    assert a.join() is None and b.join() is None and gone.join() is None
    assert b.adopt("held", "quick", 1.0, "active")
    assert gone.adopt("orphan", "quick", 1.0, "paused")
    gone.leave()
    b.enqueue("waiting", "quick", 1.0)
    ours = a.adopt_many([("held", "quick", 1.0, "paused"), ("orphan", "quick", 1.0, "active"),
                         ("waiting", "quick", 1.0, "active"), ("new-paused", "quick", 2.0, "paused"),
                         ("new-active", "quick", 2.0, "active"), ("new-queued", "quick", 3.0, "queued")])
    assert ours == {"orphan", "new-paused", "new-active"}
    assert sorted((i.item_id, i.state, i.node) for i in a.items()) == [
        ("held", "active", "node-b"), ("new-active", "active", "node-a"), ("new-paused", "paused", "node-a"),
        ("new-queued", "queued", ""), ("orphan", "paused", "node-a"), ("waiting", "queued", "")]
    assert a.adopt_many([]) == set()


def test_a_node_recovering_many_parked_runs_adopts_them_in_one_transaction(pg_url):
    """Start-up with N runs parked at an approval: one locked read of the cluster queue, not N (10,000
    parked runs took 25 s on PostgreSQL, one transaction and one flush to disk each); every run is
    recovered, paused, and an approval then finishes it."""
    import sqlalchemy as sa

    from flows import approval

    gate = Flow("gate", steps=[approval("ok", prompt="Go?"), code("after", deps=["ok"], fn=lambda ctx: "done")])
    registry = FlowRegistry([gate])
    config = EngineConfig(node="node-a", cluster=True, slot_pool="shared")
    store = open_store(pg_url, poll_interval=0.05)
    engine = Engine(store, registry, config).start()
    try:
        run_ids = [engine.launch("gate", f"q{i}").run_id for i in range(12)]
        for run_id in run_ids:
            engine.wait(run_id, lambda s: s.status.value == "paused", timeout=10)
    finally:
        engine.stop()
        store.close()
    store = open_store(pg_url, poll_interval=0.05)
    locked: list[str] = []

    def count(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        if "FROM cluster_queue WHERE item_id" in statement and "FOR UPDATE" in statement:
            locked.append(statement)

    sa.event.listen(store.database, "before_cursor_execute", count)
    engine = Engine(store, registry, config).start()
    try:
        plan = engine.plan()
        assert sorted((r["run_id"], r["reason"], r["node"]) for r in plan["planned_queued"]) == sorted(
            (run_id, "approval", "node-a") for run_id in run_ids)
        assert len(locked) == 1, f"{len(locked)} locked reads of the queue for {len(run_ids)} runs recovered"
        engine.approve(run_ids[0], "ok", by="tester")
        assert engine.wait(run_ids[0], lambda s: s.terminal, timeout=10).status.value == "completed"
    finally:
        engine.stop()
        store.close()


def test_a_runs_end_reads_the_queue_only_in_the_queue_writers_commit_and_a_queued_run_still_starts(
        pg_store, monkeypatch):
    """A run that ends frees room: its node's queue writer commits the end and, in the same transaction,
    asks whether a run waits (then names the least busy node to admit it). The orchestrator no longer
    asks the same again on its own thread: two reads of the queue per run (its launch's), not three; and
    a run queued behind a full cluster still starts when the run before it ends."""
    from eventstore.cluster import ClusterTables

    reads: list[str] = []
    queued = ClusterTables.queued
    monkeypatch.setattr(ClusterTables, "queued", lambda self: (reads.append(self.node), queued(self))[1])
    backend = ScriptedBackend(hold={"w0"})
    engine = Engine(pg_store, REGISTRY, EngineConfig(node="node-a", cluster=True, slot_pool="shared",
                                                     max_active_runs=1), backend=backend).start()
    try:
        engine.plan()
        before = len(reads)
        for i in range(4):  # one after another: nothing ever waits in the queue
            assert engine.wait(engine.launch("quick", f"q{i}").run_id, timeout=20).status == "completed"
        wait_until(lambda: pg_store.read_sql("SELECT count(*) FROM cluster_queue")[0][0] == 0,
                   what="every end committed")
        time.sleep(0.2)  # anything the ends would still ask
        assert len(reads) - before <= 8, f"{len(reads) - before} reads of the queue for 4 runs"
        held = engine.launch("work", "held").run_id
        backend.wait_calls(1, held)
        waiting = engine.launch("quick", "waits").run_id
        assert engine.wait(waiting, {"queued"}, timeout=20).status == "queued"
        backend.release(held, "w0")
        assert engine.wait(waiting, timeout=20).status == "completed"
        assert engine.wait(held, timeout=20).status == "completed"
    finally:
        engine.stop()


def test_an_enqueue_admits_the_head_in_its_own_transaction_where_an_admission_would(pg_store):
    """The node that enqueues a run admits the queue's head in the same transaction, as its admission
    would: with room, in launch order, only when it is among the least busy, and never fenced. The
    transaction also commits that node's queue changes not yet committed (the room they free counts)."""
    from eventstore.cluster import ClusterTables, member_lease
    from eventstore.leases import Leases

    leases = Leases(pg_store.database, ttl_s=30.0)
    a = ClusterTables(pg_store.database, leases, "node-a", "host:1")
    b = ClusterTables(pg_store.database, leases, "node-b", "host:2")
    assert a.join() is None and b.join() is None

    def state() -> list[tuple[str, str, str]]:
        return [(i.item_id, i.state, i.node) for i in a.items()]

    assert a.adopt("r0", "quick", 1.0, "active")
    first = a.enqueue("r1", "quick", 2.0, {"r0": ""}, admit=True, max_active=1)  # r0's end not yet committed
    assert [i.item_id for i in first.taken] == ["r1"] and state() == [("r1", "active", "node-a")]
    full = b.enqueue("r2", "quick", 3.0, admit=True, max_active=1)
    assert full.taken == () and state()[1:] == [("r2", "queued", "")], "no room: r2 waits"
    freed = a.enqueue("r3", "quick", 4.0, {"r1": ""}, admit=True, max_active=2, patience_s=60.0)
    assert [i.item_id for i in freed.taken] == ["r2"], "r1 ended: room, and the head (r2, not r3) goes first"
    leaving = a.enqueue("r4", "quick", 5.0, admit=True, max_active=0, patience_s=60.0)
    assert leaving.taken == () and leaving.deferred and leaving.named == "node-b", \
        "node-a drives r2, node-b nothing: the head is left to node-b"
    assert [i.item_id for i in b.admit(0, 0.0).items] == ["r3"]
    a.apply({"r2": "", "r3": ""})
    leases.release(member_lease("node-a"), "host:1")
    assert leases.acquire(member_lease("node-a"), "host:9") is None  # another process took node-a's name
    fenced = a.enqueue("r5", "quick", 6.0, admit=True)
    assert fenced.taken == (), "a fenced node admits nothing (the process now holding node-a's name may)"
    assert state() == [("r4", "queued", ""), ("r5", "queued", "")]


def test_nodes_enqueueing_at_once_admit_no_more_than_the_cluster_has_room_for(pg_store):
    """Each enqueue admits in its own transaction, seeing the others' rows only once they commit; the
    admission lock still lets exactly as many in as there is room. Five rounds of four at once."""
    from eventstore.cluster import ClusterTables
    from eventstore.leases import Leases

    leases = Leases(pg_store.database, ttl_s=30.0)
    nodes = [ClusterTables(pg_store.database, leases, f"node-{n}", f"host:{n}") for n in range(4)]
    assert all(node.join() is None for node in nodes)
    for round_ in range(5):
        barrier = threading.Barrier(len(nodes))
        taken: list[str] = []

        def enqueue(node: ClusterTables, run_id: str) -> None:
            barrier.wait(5)
            taken.extend(i.item_id for i in node.enqueue(run_id, "quick", 1.0, admit=True, max_active=2).taken)

        threads = [threading.Thread(target=enqueue, args=(node, f"r{round_}-{n}")) for n, node in enumerate(nodes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        items = nodes[0].items()
        assert len(taken) == 2, f"round {round_}: {len(taken)} runs admitted with room for 2: {taken}"
        assert sorted(i.item_id for i in items if i.state == "active") == sorted(taken)
        assert sum(i.state == "queued" for i in items) == len(nodes) - 2
        nodes[0].apply({i.item_id: "" for i in items})


def test_queue_changes_handed_to_a_transaction_that_fails_are_kept_for_the_writers_next_commit():
    from actors.cluster import QueueWriter
    from eventstore import StoreError

    tables = RecordingTables()
    writer = QueueWriter(tables, gather_s=30.0)  # type: ignore[arg-type]
    try:
        writer.put("r1", "")
        with pytest.raises(StoreError), writer.handed() as changes:
            assert changes == {"r1": ""} and not writer.pending()
            writer.put("r2", "paused")  # a change put meanwhile is kept with them
            raise StoreError("the store is away")
        assert writer.pending() and not tables.commits
    finally:
        writer.close()
    assert tables.commits == [{"r1": "", "r2": "paused"}]


def test_runs_launched_on_a_cluster_of_one_are_admitted_with_their_enqueue(pg_store, monkeypatch):
    """Launch to first step on PostgreSQL: a node with room admits a run in its enqueue's transaction, so
    no admission transaction of its own runs (nor a NOTIFY hop to this node), whether the cluster is idle
    or busy with the run before; each run is still recorded queued, then started as admitted."""
    from actors.cluster import START_CLAIMED
    from eventstore.cluster import ClusterTables

    admissions: list[str] = []
    admit = ClusterTables.admit
    monkeypatch.setattr(ClusterTables, "admit", lambda self, *a: (admissions.append(self.node), admit(self, *a))[1])
    engine = Engine(pg_store, REGISTRY, EngineConfig(node="node-a", cluster=True, slot_pool="shared")).start()
    try:
        one_by_one = [engine.launch("quick", f"q{i}").run_id for i in range(4)
                      if engine.wait(engine.launch("quick", f"p{i}").run_id, timeout=20)]  # idle, then busy
        for run_id in one_by_one:
            assert engine.wait(run_id, timeout=20).status == "completed"
            records = pg_store.read_stream(stream_of(run_id))
            assert [r.type for r in records][:3] == ["RunLaunched", "RunQueued", "RunStarted"]
            assert records[2].data["reason"] == START_CLAIMED and records[2].metadata["node"] == "node-a"
        assert admissions == [], "an admission transaction ran for a run this node could admit at once"
    finally:
        engine.stop()
