"""The projector and its read tables on a real store (both backends).

Most logs are driven through the pure core (``flows.decide`` / ``evolve``)
by the simulator of bench/projections.py: interleaved runs with retries,
skips, approvals, rejections, anomalies and cancels. The last test runs the
whole catalogue through the engine (actors, offline backend).
"""

from __future__ import annotations

import importlib.util
import sqlite3
import threading
from collections import defaultdict
from pathlib import Path

import pytest

from tests.pg import database_of_its_own
import sqlalchemy as sa

from eventstore import NewEvent, open_store
from flows.codec import event_from_data
from flows.events import (
    EVENT_TYPES,
    AnomalyDetected,
    RunLaunched,
    RunQueued,
    RunStarted,
    StepCancelled,
    StepFailed,
    StepPaused,
    StepSkipped,
    StepStarted,
    event_data,
)
from flows.state import RunState, evolve
from tests.projects import register
from projections import PROJECTION_VERSION, Projector, ReadModel, rebuild
from projections.tables import READ_TABLES, flow_runs, projection_checkpoints
from tests.integration.read_rows import dump

_BENCH = Path(__file__).resolve().parents[2] / "bench" / "projections.py"
_spec = importlib.util.spec_from_file_location("bench_projections", _BENCH)
assert _spec and _spec.loader
sim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sim)

WAIT = 20.0  # seconds: generous, and only ever spent when something is wrong


def fill(store, events: int, seed: int) -> int:
    """A simulated log, appended by 4 threads (group commit keeps the tests fast).

    Run ids depend on the seed: filling again with another seed adds other runs.
    """
    return sim.fill(store, events, seed=seed, writers=4)


def checkpoint(database: sa.Engine, name: str = "baton") -> tuple[int, int]:
    with database.connect() as conn:
        row = conn.execute(
            sa.select(projection_checkpoints.c.position, projection_checkpoints.c.version)
            .where(projection_checkpoints.c.name == name)
        ).first()
    return tuple(row) if row else None


def folded(store) -> dict[str, RunState]:
    """Every run's state, folded by flows.state.evolve from the log."""
    states: dict[str, RunState] = defaultdict(RunState)
    for rec in store.read_all(0):
        if rec.stream_id.startswith("run-") and rec.type in EVENT_TYPES:
            run_id = rec.stream_id[4:]
            states[run_id] = evolve(states[run_id], event_from_data(rec.type, rec.data), rec.position)
    return dict(states)


def assert_agrees_with_evolve(store, reads: ReadModel) -> int:
    """The tables say what evolve says: statuses, attempts, outputs, reports."""
    states = folded(store)
    assert states
    for run_id, state in states.items():
        got = reads.get_run(run_id)
        assert got is not None, run_id
        run = got["run"]
        assert run["status"] == state.status, run_id
        assert run["stream_version"] == state.version
        assert run["reason"] == state.reason
        assert run["steps_done"] == sum(1 for s in state.steps.values() if s.terminal)
        assert [s["step_id"] for s in got["steps"]] == [s.id for s in state.snapshot.steps]
        # The graph is read back from the run's RunLaunched (the step rows do not copy it).
        assert [(s["kind"], s["label"], s["deps"], s["trigger_rule"], s["condition"]) for s in got["steps"]] == [
            (spec.kind, spec.label or spec.id, list(spec.deps), spec.trigger_rule, spec.when)
            for spec in state.snapshot.steps]
        for step in got["steps"]:
            st = state.steps[step["step_id"]]
            assert (step["status"], step["attempt"], step["output"], step["error"], step["failures"]) == (
                st.status, st.attempt, st.output, st.error, st.failures), (run_id, step["step_id"])
            assert step["anomalies"] == st.anomalies
            # Read back from the events the row points at (the tables hold no long texts).
            assert (step["prompt"], step["fields"], step["fields_error"]) == (
                st.prompt, st.fields, st.fields_error), (run_id, step["step_id"])
        assert got["report"] == (state.report or None) == reads.report(run_id)
    return len(states)


def test_live_projector_follows_appends_and_agrees_with_evolve(store):
    with Projector(store, batch_size=50) as projector:
        head = fill(store, 600, seed=1)
        assert projector.wait_for(head, WAIT), projector.last_error
        assert projector.position == head
        reads = ReadModel(store.database, projector)
        runs = assert_agrees_with_evolve(store, reads)
        assert checkpoint(store.database) == (head, PROJECTION_VERSION)
    statuses = {r["status"] for r in reads.list_runs(limit=500)[0]}
    assert len(reads.list_runs(limit=500)[0]) == runs
    assert {"completed", "rejected"} <= statuses


def test_rebuild_gives_byte_for_byte_the_live_tables(store):
    # Some log before the projector starts (its first batches load rows from
    # the tables), the rest while it follows in small batches; then a rebuild
    # in pages that cut runs in two.
    appends = list(sim.simulate(800, seed=2))
    half = len(appends) // 2
    versions: dict[str, int] = {}

    def append(batch):
        for run_id, events in batch:
            stream = f"run-{run_id}"
            store.append(stream, [NewEvent(type(e).__name__, sim.event_data(e)) for e in events],
                         expected_version=versions.get(stream, 0))
            versions[stream] = versions.get(stream, 0) + len(events)

    append(appends[:half])
    with Projector(store, batch_size=7) as projector:
        append(appends[half:])
        assert projector.wait_for(store.head(), WAIT), projector.last_error
    live = dump(store.database)
    assert sum(len(rows) for rows in live.values()) > 100
    assert len(live["stream_frames"]) > 100  # the frames a resume sends, kept as the live projector built them

    stats = rebuild(store, chunk=97)
    assert stats.events == store.head() and stats.position == store.head()
    assert dump(store.database) == live
    rebuild(store)  # one page
    assert dump(store.database) == live
    assert checkpoint(store.database) == (store.head(), PROJECTION_VERSION)


def test_a_batch_and_its_checkpoint_commit_together(store):
    head1 = fill(store, 200, seed=3)
    failures = []

    def fail_once(conn):
        if not failures:
            # Every row of the batch is written by now; so is the checkpoint.
            failures.append(dump_in(conn))
            raise sa.exc.OperationalError("COMMIT", {}, sqlite3.OperationalError("database is locked"))

    with Projector(store, _before_commit=fail_once) as projector:
        assert projector.wait_for(head1, WAIT), projector.last_error
    assert failures and sum(map(len, failures[0].values())) > 0  # the batch was written, then...
    # ...rolled back as a whole, checkpoint included, and applied once on the retry.
    reads = ReadModel(store.database)
    assert_agrees_with_evolve(store, reads)
    live = dump(store.database)
    rebuild(store)
    assert dump(store.database) == live


def dump_in(conn: sa.Connection) -> dict[str, list[tuple]]:
    return {t.name: [tuple(r) for r in conn.execute(sa.select(t))] for t in READ_TABLES}


def test_a_failed_batch_leaves_tables_and_checkpoint_untouched(store):
    head1 = fill(store, 150, seed=4)
    with Projector(store) as projector:
        assert projector.wait_for(head1, WAIT)
    before, cp_before = dump(store.database), checkpoint(store.database)

    gate = threading.Event()

    def fail_until_opened(conn):
        if not gate.is_set():
            raise RuntimeError("injected failure after the writes")

    head2 = fill(store, 150, seed=5)
    projector = Projector(store, _before_commit=fail_until_opened).start()
    try:
        assert not projector.wait_for(head2, 0.5)
        assert "injected failure" in (projector.last_error or "")
        assert dump(store.database) == before and checkpoint(store.database) == cp_before
        gate.set()
        assert projector.wait_for(head2, WAIT), projector.last_error
    finally:
        projector.stop()
    assert projector.last_error is None
    assert_agrees_with_evolve(store, ReadModel(store.database))


def test_restart_resumes_from_the_checkpoint_without_applying_twice(store):
    head1 = fill(store, 300, seed=6)
    with Projector(store, batch_size=40) as first:
        assert first.wait_for(head1, WAIT)
    head2 = fill(store, 300, seed=7)
    second = Projector(store, batch_size=40).start()
    try:
        assert not second.rebuilt_on_start
        assert second.position >= head1
        assert second.wait_for(head2, WAIT), second.last_error
    finally:
        second.stop()
    reads = ReadModel(store.database)
    assert_agrees_with_evolve(store, reads)
    anomalies = sum(1 for r in store.read_all(0) if r.type == AnomalyDetected.__name__)
    with store.database.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM anomalies")).scalar() == anomalies
        assert conn.execute(sa.text("SELECT coalesce(sum(anomalies), 0) FROM flow_runs")).scalar() == anomalies
    live = dump(store.database)
    rebuild(store)
    assert dump(store.database) == live


def test_a_version_bump_rebuilds_on_the_next_start(store):
    head = fill(store, 200, seed=8)
    with Projector(store) as projector:
        assert projector.wait_for(head, WAIT)
    good = dump(store.database)
    with store.database.begin() as conn:  # a row only a rebuild would put right
        conn.execute(sa.update(flow_runs).values(status="bogus"))

    same = Projector(store).start()
    same.stop()
    assert not same.rebuilt_on_start
    with store.database.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).where(flow_runs.c.status == "bogus")).scalar() > 0

    bumped = Projector(store, version=PROJECTION_VERSION + 1).start()
    try:
        assert bumped.rebuilt_on_start
        assert bumped.wait_for(head, WAIT), bumped.last_error
    finally:
        bumped.stop()
    assert dump(store.database) == good
    assert checkpoint(store.database) == (head, PROJECTION_VERSION + 1)


def test_a_missing_table_rebuilds_on_the_next_start(store):
    head = fill(store, 100, seed=9)
    with Projector(store) as projector:
        assert projector.wait_for(head, WAIT)
    good = dump(store.database)
    with store.database.begin() as conn:
        conn.execute(sa.text("DROP TABLE reports"))
    with Projector(store) as projector:
        assert projector.rebuilt_on_start
        assert projector.wait_for(head, WAIT)
    assert dump(store.database) == good


def test_step_events_move_the_run_status_only_while_the_run_is_under_way(store):
    """The status rules of flows.state.run_status, on logs the engine would not write: step
    events of a queued run, and stray step events after a run ended, leave its status alone;
    a skip or a cancel of a step re-decides running or paused like any other step event."""
    head = fill(store, 150, seed=18)
    ended = [r for r in folded(store).values() if r.status in ("completed", "failed")][:2]
    assert len(ended) == 2
    run = ended[0]
    late = [StepStarted(step_id=run.snapshot.steps[0].id, attempt=9, at=2e9),
            StepFailed(step_id=run.snapshot.steps[0].id, attempt=9, error="late", will_retry=True,
                           retry_at=2e9 + 1, at=2e9)]
    stream = f"run-{run.run_id}"
    store.append(stream, [NewEvent(type(e).__name__, event_data(e)) for e in late],
                 expected_version=run.version)

    spine = sim.SPINE.snapshot("large")
    queued_id, under_way_id = "01BENCHQUEUED0000001", "01BENCHUNDERWAY00001"
    launched = dict(flow=sim.SPINE.name, snapshot=spine, band="large", at=1.0)
    first, second, gate = spine.steps[0].id, spine.steps[1].id, spine.steps[6].id
    for run_id, events in (
        (queued_id, [RunLaunched(run_id=queued_id, **launched),
                     RunQueued(run_id=queued_id, at=1.0),
                     StepStarted(step_id=first, attempt=1, at=2.0)]),
        (under_way_id, [RunLaunched(run_id=under_way_id, **launched),
                        RunStarted(run_id=under_way_id, at=1.0),
                        StepStarted(step_id=first, attempt=1, at=2.0),
                        StepPaused(step_id=gate, prompt="publish?", at=3.0),
                        StepCancelled(step_id=first, attempt=1, at=4.0),  # only the gate is left: paused
                        StepSkipped(step_id=second, reason="cancelled", at=5.0)]),
    ):
        store.append(f"run-{run_id}", [NewEvent(type(e).__name__, event_data(e)) for e in events], 0)

    with Projector(store, batch_size=3) as projector:
        assert projector.wait_for(store.head(), WAIT), projector.last_error
    reads = ReadModel(store.database)
    assert_agrees_with_evolve(store, reads)
    assert reads.get_run(run.run_id)["run"]["status"] == run.status
    assert reads.get_run(queued_id)["run"]["status"] == "queued"
    assert reads.get_run(under_way_id)["run"]["status"] == "paused"
    live = dump(store.database)
    rebuild(store)
    assert dump(store.database) == live
    assert head < store.head()


def test_unknown_types_and_other_streams_are_skipped_but_counted(store):
    head = fill(store, 60, seed=10)
    store.append("idempotency-abc", [NewEvent("IdempotencyKeyClaimed", {"key": "k", "run_id": "r"})], 0)
    some_run = next(r.stream_id for r in store.read_all(0) if r.stream_id.startswith("run-"))
    version = len(store.read_stream(some_run))
    store.append(some_run, [NewEvent("SomethingFromTheFuture", {"x": 1})], expected_version=version)
    with Projector(store) as projector:
        assert projector.wait_for(store.head(), WAIT), projector.last_error
        assert projector.position == store.head() > head
        before = dump(store.database)
    assert checkpoint(store.database)[0] == store.head()
    rebuild(store)
    assert dump(store.database) == before


def test_wait_for_times_out_on_a_position_not_reached(store):
    with Projector(store) as projector:
        assert projector.wait_for(0, 0.1)
        assert not projector.wait_for(store.head() + 1, 0.2)


def test_two_projectors_share_the_tables_and_apply_each_batch_once(store):
    one = Projector(store, batch_size=5).start()
    two = Projector(store, batch_size=3).start()
    try:
        head = fill(store, 400, seed=11)
        assert one.wait_for(head, WAIT), one.last_error
        assert two.wait_for(head, WAIT), two.last_error
    finally:
        one.stop()
        two.stop()
    assert_agrees_with_evolve(store, ReadModel(store.database))
    live = dump(store.database)
    rebuild(store)
    assert dump(store.database) == live


# -- queries ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def projected(request, tmp_path_factory):
    """One projected log per backend, shared by the read-only query tests."""
    with database_of_its_own(request.param, tmp_path_factory.mktemp("queries")) as url:
        store = open_store(url, poll_interval=0.05)
        projector = Projector(store).start()
        try:
            head = fill(store, 300, seed=12)
            assert projector.wait_for(head, WAIT), projector.last_error
            yield store, ReadModel(store.database, projector)
        finally:
            projector.stop()
            store.close()


def test_list_runs_newest_first_with_cursor_paging(projected):
    store, reads = projected
    everything, cursor = reads.list_runs(limit=500)
    assert cursor is None
    ids = [r["run_id"] for r in everything]
    assert ids == sorted(ids, reverse=True) and len(ids) > 12

    paged, cursor, pages = [], None, 0
    while True:
        rows, cursor = reads.list_runs(cursor=cursor, limit=5)
        paged += [r["run_id"] for r in rows]
        pages += 1
        if cursor is None:
            break
    assert paged == ids and pages == -(-len(ids) // 5)


def test_list_runs_filters(projected):
    store, reads = projected
    everything, _ = reads.list_runs(limit=500)
    for column in ("project_id", "status", "flow"):
        value = everything[len(everything) // 2][column]
        rows, _ = reads.list_runs(limit=500, **{column: value})
        assert rows and [r["run_id"] for r in rows] == [r["run_id"] for r in everything if r[column] == value]
    project, status = everything[0]["project_id"], everything[0]["status"]
    rows, _ = reads.list_runs(project_id=project, status=status, limit=500)
    assert {(r["project_id"], r["status"]) for r in rows} == {(project, status)}
    assert reads.list_runs(flow="no-such-flow") == ([], None)


def test_get_run_shape(projected):
    store, reads = projected
    rows, _ = reads.list_runs(status="completed", limit=1)
    run_id = rows[0]["run_id"]
    got = reads.get_run(run_id)
    assert set(got) == {"run", "steps", "report", "problems", "children"} and got["problems"] == got["children"] == []
    run = got["run"]
    assert run["run_id"] == run_id and run["status"] == "completed"
    assert run["question"] and run["inputs"]["question"] == run["question"]
    assert run["launched_at"] <= run["started_at"] <= run["ended_at"]
    assert run["steps_done"] == run["steps_total"] == len(got["steps"])
    assert [s["ordinal"] for s in got["steps"]] == list(range(len(got["steps"])))
    step = got["steps"][0]
    for key in ("step_id", "status", "kind", "agent", "label", "deps", "attempt", "output", "fields",
                "started_at", "ended_at", "prompt", "unresolved"):
        assert key in step
    assert isinstance(step["deps"], list) and isinstance(step["fields"], dict)
    assert got["report"].startswith("# ") and reads.report(run_id) == got["report"]
    assert reads.run_project(run_id) == run["project_id"]
    assert reads.get_run("nope") is None and reads.report("nope") is None and reads.run_project("nope") is None


def test_anomalies_query(projected):
    store, reads = projected
    with store.database.connect() as conn:
        run_id = conn.execute(sa.text("SELECT run_id FROM anomalies ORDER BY position LIMIT 1")).scalar()
    assert run_id, "the simulated log has anomalies"
    found = reads.anomalies(run_id)
    assert found and all(a["run_id"] == run_id and a["kind"] == "stall" for a in found)
    assert [a["position"] for a in found] == sorted(a["position"] for a in found)
    assert reads.get_run(run_id)["run"]["anomalies"] == len(found)


def test_a_query_right_after_an_append_sees_it(projected):
    store, reads = projected
    rows, _ = reads.list_runs(status="completed", limit=1)
    run_id = rows[0]["run_id"]
    stream = f"run-{run_id}"
    recorded = store.append(stream, [NewEvent("RunRecovered", {"node": "n1", "steps": [], "at": 1.0})],
                            expected_version=len(store.read_stream(stream)))
    assert reads.wait_for(recorded[-1].position, WAIT)
    assert reads.get_run(run_id)["run"]["recoveries"] == 1


# -- real runs of the whole catalogue, by the engine ------------------------------------------


def test_rebuild_matches_the_live_tables_after_real_runs_of_every_catalogue_flow(store, tmp_path):
    """Launch every built-in flow (and one rejected, one cancelled) through the engine,
    approve every approval, wait for every end; then rebuild and compare every table."""
    engine_mod = pytest.importorskip("actors.engine")
    from actors.config import EngineConfig
    from flows.catalog import builtin

    registry = builtin()
    assert len(registry) >= 10
    terminal = {"completed", "failed", "rejected", "cancelled"}
    register(store, tmp_path, "p0", "p1", "p2", "p9")
    projector = Projector(store, batch_size=20).start()
    engine = engine_mod.Engine(store, registry, EngineConfig(agent_slots=4, max_active_runs=6)).start()
    try:
        runs = {}
        for number, flow in enumerate(registry):
            band = ("small", "medium", "large")[number % 3]
            launched = engine.launch(flow.name, f"how does {flow.name} hold up?", band=band,
                                     project_id=f"p{number % 3}", launched_by="tests")
            runs[launched.run_id] = flow
        gated = next(f for f in registry if any(s.kind.value == "approval" for s in f.steps))
        rejected = engine.launch(gated.name, "reject this one", project_id="p9").run_id
        cancelled = engine.launch(registry.names()[0], "cancel this one", project_id="p9").run_id
        engine.cancel(cancelled, reason="not needed", by="tests")
        for run_id in [*runs, rejected]:
            while (state := engine.wait(run_id, terminal | {"paused"}, timeout=WAIT)).status == "paused":
                for step_id, st in state.steps.items():
                    if st.status == "paused":
                        decide = engine.reject if run_id == rejected else engine.approve
                        decide(run_id, step_id, by="reviewer", comment="seen")
                engine.wait(run_id, lambda s: s.status != "paused", timeout=WAIT)
        head = store.head()
        assert head > 15 * 10  # real runs: every step of every flow recorded
        assert projector.wait_for(head, WAIT), projector.last_error
        reads = ReadModel(store.database, projector)
        for run_id in [*runs, rejected, cancelled]:
            got = reads.get_run(run_id)
            assert got["run"]["status"] == engine.state(run_id).status
            assert got["run"]["status"] in terminal and got["report"]
        assert reads.get_run(rejected)["run"]["status"] == "rejected"
        assert reads.get_run(cancelled)["run"]["status"] == "cancelled"
        assert {reads.get_run(r)["run"]["flow"] for r in runs} == set(registry.names())
    finally:
        engine.stop()
        projector.stop()
    assert_agrees_with_evolve(store, ReadModel(store.database))
    live = dump(store.database)
    rebuild(store, chunk=50)
    assert dump(store.database) == live


def test_sqlite_write_lock_held_elsewhere_is_waited_out(sqlite_url):
    """Another connection holds SQLite's write lock past the busy timeout: the
    projector neither dies nor reports an error; it commits once the lock is free."""
    store = open_store(sqlite_url, busy_timeout_ms=50, poll_interval=0.05)
    try:
        with Projector(store) as projector:
            assert projector.wait_for(fill(store, 100, seed=13), WAIT)
        head = fill(store, 100, seed=14)
        blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            projector = Projector(store).start()
            assert not projector.wait_for(head, 0.5)  # it is waiting for the lock...
            assert projector.running and projector.last_error is None
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert projector.wait_for(head, WAIT), projector.last_error  # ...and then it commits
        projector.stop()
        assert_agrees_with_evolve(store, ReadModel(store.database))
    finally:
        store.close()


def test_closing_the_store_under_a_running_projector_ends_its_thread(sqlite_url):
    store = open_store(sqlite_url, poll_interval=0.05)
    projector = Projector(store).start()
    assert projector.wait_for(fill(store, 30, seed=15), WAIT)
    store.close()
    projector._thread.join(WAIT)
    assert not projector.running
    projector.stop()


def test_an_event_that_does_not_decode_is_skipped_and_counted(store):
    """A row written behind the store's back (bad JSON, or data that does not fit its
    type) is logged and skipped by the live projector and by a rebuild alike."""
    with Projector(store, batch_size=10) as projector:
        head = fill(store, 60, seed=16)
        assert projector.wait_for(head, WAIT)
        run_stream = next(r.stream_id for r in store.read_all(0) if r.stream_id.startswith("run-"))
        with store.database.begin() as conn:
            for offset, (type_name, data) in enumerate([("StepStarted", "{not json"),
                                                        ("StepStarted", '{"step_id": 1, "attempt": "x"}')]):
                conn.execute(sa.text(
                    "INSERT INTO events (position, event_id, stream_id, version, type, data, metadata, "
                    "recorded_at, hash) VALUES (:p, :id, :s, :v, :t, :d, '{}', 0, '')"
                ), {"p": head + 1 + offset, "id": f"corrupt-{offset}", "s": run_stream, "v": 1000 + offset,
                    "t": type_name, "d": data})
        after = fill(store, 60, seed=17)
        assert after > head + 2
        assert projector.wait_for(after, WAIT), projector.last_error
    live = dump(store.database)
    rebuild(store, chunk=7)
    assert dump(store.database) == live
    assert checkpoint(store.database)[0] == after
