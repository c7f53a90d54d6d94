"""The engine end to end on a real store: actors, decisions, events (both backends)."""

from __future__ import annotations

import sys
import threading
import time

import pykka
import pytest

from actors.config import EngineConfig
from actors.engine import Engine
from actors.evidence_check import check_evidence
from actors.run import RunActor
from actors.runlog import fold_records
from eventstore import NewEvent, open_store
from flows import Flow, agent, approval, code
from flows.catalog import FlowRegistry
from flows.decide import finish
from flows.errors import NotWaiting, RunFinished, UnknownRun
from flows.events import event_data, stream_of
from flows.launch import LaunchParams, prepare

RELEASE = threading.Event()  # a code step blocks on it when a test needs a step to stay running
CALLS: dict[str, int] = {}


def count(name: str) -> int:
    CALLS[name] = CALLS.get(name, 0) + 1
    return CALLS[name]


def fold_angles(ctx):
    return {"angles": sorted(ctx.outputs), "n": len(ctx.outputs)}


def flaky(ctx):
    if count(f"flaky-{ctx.run_id}") < 3:
        raise RuntimeError("not yet")
    return "third time lucky"


def wait_for_release(ctx):
    if not RELEASE.wait(10):
        raise RuntimeError("never released")
    return "released"


def hang(ctx):
    """Far past its step's timeout: until RELEASE (a call to a server gone away, without a timeout)."""
    RELEASE.wait(60)
    return "too late"


def exits(ctx):
    sys.exit(3)


def odd_text(ctx):
    return "caf\udce9 \ud83d\ude00"  # a byte that was not UTF-8 (surrogateescape), a pair split in two


def int_keys(ctx):
    return {1: "one", "two": 2}


class Unreadable(Exception):
    def __str__(self):
        raise RuntimeError("no message")


def raises_unreadable(ctx):
    raise Unreadable()


def sleepy(ctx):
    time.sleep(0.5)
    return "late"


def boom(ctx):
    raise ValueError("broken on purpose")


THREADS: dict[str, threading.Thread] = {}  # run id -> the thread its step ran on


def note_thread(ctx):
    THREADS[ctx.run_id] = threading.current_thread()
    return "noted"


PARALLEL = Flow(
    "parallel",
    category="Analysis",
    steps=[
        agent("a", persona="researcher", prompt="Angle A on $input.question"),
        agent("b", persona="researcher", prompt="Angle B on $input.question"),
        agent("c", persona="researcher", prompt="Angle C on $input.question"),
        code("fold", fn=fold_angles, deps=["a", "b", "c"]),
        agent("synth", persona="synthesizer", deps=["fold"], prompt="Synthesize $fold.output and $a.output"),
    ],
)
GATED = Flow(
    "gated",
    category="Review",
    steps=[
        agent("draft", persona="writer", prompt="Draft: $input.question"),
        approval("gate", deps=["draft"], prompt="Publish $draft.output?", on_reject=["notify"]),
        code("publish", fn=fold_angles, deps=["gate"]),
        code("notify", fn=fold_angles, deps=["gate"]),
    ],
)
RETRYING = Flow("retrying", steps=[code("flaky", fn=flaky, retries=3, retry_delay_s=0.01)])
BLOCKING = Flow("blocking", steps=[code("hold", fn=wait_for_release), code("after", fn=fold_angles, deps=["hold"])])
TIMING_OUT = Flow("timing-out", steps=[code("slow", fn=sleepy, timeout_s=0.05)])
HUNG = Flow("hung", steps=[code("hang", fn=hang, timeout_s=0.1)])
EXITING = Flow("exiting", steps=[code("bye", fn=exits), code("after", fn=fold_angles, deps=["bye"])])
ODD = Flow("odd", steps=[code("text", fn=odd_text), code("keys", fn=int_keys)])
UNREADABLE = Flow("unreadable", steps=[code("s", fn=raises_unreadable)])
FAILING = Flow(
    "failing",
    steps=[
        code("broken", fn=boom),
        code("downstream", fn=fold_angles, deps=["broken"]),
        code("cleanup", fn=fold_angles, deps=["broken"], trigger_rule="all_done"),
    ],
)
NOTING = Flow("noting", steps=[code("note", fn=note_thread)])
SKIPPING = Flow("skipping", steps=[code("only", fn=fold_angles, when="$input.question == 'go'")])
REGISTRY = FlowRegistry([PARALLEL, GATED, RETRYING, BLOCKING, TIMING_OUT, HUNG, EXITING, ODD, UNREADABLE, FAILING, NOTING, SKIPPING])


@pytest.fixture
def engine(store):
    e = Engine(store, REGISTRY, EngineConfig(agent_slots=4, max_active_runs=8)).start()
    yield e
    e.stop()


def types_of(store, run_id):
    return [r.type for r in store.read_stream(stream_of(run_id))]


def run_actors() -> list[str]:
    return [ref.actor_urn for ref in pykka.ActorRegistry.get_by_class(RunActor)]


class TestEngine:
    def test_parallel_branches_join_and_report(self, engine, store):
        launched = engine.launch("parallel", "why is the build slow?")
        state = engine.wait(launched.run_id)
        assert state.status == "completed"
        events = store.read_stream(stream_of(launched.run_id))
        assert events[0].position == launched.position and events[0].type == "RunLaunched"
        started = [e.data["step_id"] for e in events if e.type == "StepStarted"]
        assert set(started[:3]) == {"a", "b", "c"} and started[3:] == ["fold", "synth"]
        assert state.steps["fold"].fields == {"angles": ["a", "b", "c"], "n": 3}
        synth_prompt = next(e.data["prompt"] for e in events if e.type == "StepStarted" and e.data["step_id"] == "synth")
        assert '"n":3' in synth_prompt and "[offline backend" in synth_prompt
        report = events[-1].data["report"]
        assert events[-1].type == "RunCompleted" and "## Provenance" in report and "## After-action review" in report

    def test_approval_pauses_without_a_thread_then_resumes(self, engine, store):
        run_id = engine.launch("gated", "release notes for 1.2").run_id
        engine.wait(run_id, {"paused"})
        deadline = time.monotonic() + 5
        while run_actors() and time.monotonic() < deadline:  # the actor is stopped once it says it is idle
            time.sleep(0.01)
        assert run_actors() == []
        position = engine.approve(run_id, "gate", by="ann", comment="ship it")
        state = engine.wait(run_id)
        assert state.status == "completed"
        assert state.steps["gate"].output == "ship it" and state.steps["gate"].decided_by == "ann"
        resumed = [e for e in store.read_stream(stream_of(run_id)) if e.type == "StepResumed"]
        assert resumed[0].position == position

    def test_a_launch_and_the_step_it_starts_are_recorded_in_one_commit_on_the_launchers_behalf(self, engine, store):
        launched = engine.launch("noting", "which thread?", launched_by="ann")
        assert engine.wait(launched.run_id).status == "completed"
        records = store.read_stream(stream_of(launched.run_id))
        first = records[:3]
        assert [r.type for r in first] == ["RunLaunched", "RunStarted", "StepStarted"]
        assert launched.position == first[0].position
        assert len({r.recorded_at for r in first}) == 1  # one commit: the first step waited for no second
        # as the steps an approval starts are the approver's: the launch is the cause, the launcher the actor
        assert {(r.metadata["actor"], r.metadata["causation_id"]) for r in first} == {("ann", "command:launch")}
        assert store.verify() == []

    def test_a_run_decided_whole_at_its_launch_is_one_commit_with_its_report(self, engine, store):
        launched = engine.launch("skipping", "stop")
        state = engine.wait(launched.run_id)
        assert state.status == "completed" and state.steps["only"].skip_reason == "condition"
        records = store.read_stream(stream_of(launched.run_id))
        assert [r.type for r in records] == ["RunLaunched", "RunStarted", "StepSkipped", "RunCompleted"]
        assert len({r.recorded_at for r in records}) == 1
        # the report, as a commit of its own after the skip would have rendered it from the log
        folded, history = fold_records(records[:-1], launched.run_id)
        last = records[-1]
        assert last.data["report"] == finish(folded, history, last.data["at"], check_evidence(folded)).report
        assert "$input.question == 'go' was false" in last.data["report"]
        assert store.verify() == []

    def test_an_approved_run_ends_in_the_commit_of_its_last_step_with_the_report_it_always_had(self, engine, store):
        run_id = engine.launch("gated", "release notes for 1.3").run_id
        engine.wait(run_id, {"paused"})
        engine.approve(run_id, "gate", by="ann")
        assert engine.wait(run_id).status == "completed"
        records = store.read_stream(stream_of(run_id))
        ended, last = records[-2], records[-1]
        assert (ended.type, last.type) == ("StepCompleted", "RunCompleted")
        assert last.recorded_at == ended.recorded_at  # one commit, not a commit of its own after it
        # the report, and who and what it follows from, as a commit of its own rendered them from the log
        state, history = fold_records(records[:-1], run_id)
        assert last.data["report"] == finish(state, history, last.data["at"], check_evidence(state)).report
        assert last.metadata["causation_id"] == f"position:{ended.position}"
        assert last.metadata["actor"] == f"baton@{engine.ctx.config.node}"
        assert store.verify() == []

    def test_reject_skips_dependents_but_on_reject_steps_run(self, engine):
        run_id = engine.launch("gated", "release notes").run_id
        engine.wait(run_id, {"paused"})
        engine.reject(run_id, "gate", by="bob", comment="not yet")
        state = engine.wait(run_id)
        assert state.status == "rejected"
        assert state.steps["publish"].status == "skipped" and state.steps["publish"].skip_reason == "rejected"
        assert state.steps["notify"].status == "completed"

    def test_rejected_commands_append_nothing(self, engine, store):
        run_id = engine.launch("gated", "x").run_id
        engine.wait(run_id, {"paused"})
        head = store.head()
        with pytest.raises(NotWaiting):
            engine.approve(run_id, "draft")
        with pytest.raises(UnknownRun):
            engine.cancel("01NOSUCHRUN00000000000000")
        assert store.head() == head
        engine.approve(run_id, "gate")
        engine.wait(run_id)
        head = store.head()
        with pytest.raises(RunFinished):
            engine.approve(run_id, "gate")
        with pytest.raises(RunFinished):
            engine.cancel(run_id)
        assert store.head() == head

    def test_retries_until_success(self, engine, store):
        run_id = engine.launch("retrying", "go").run_id
        state = engine.wait(run_id)
        assert state.status == "completed" and state.steps["flaky"].attempt == 3
        failed = [e.data for e in store.read_stream(stream_of(run_id)) if e.type == "StepFailed"]
        assert [f["will_retry"] for f in failed] == [True, True]
        assert failed[1]["retry_at"] - failed[1]["at"] == pytest.approx(0.02)  # backoff doubles

    def test_timeout_fails_the_attempt(self, engine):
        state = engine.wait(engine.launch("timing-out", "go").run_id)
        assert state.status == "failed" and state.steps["slow"].error.startswith("timeout")

    def test_steps_still_run_while_a_timed_out_function_never_returns(self, store):
        """A code step's function cannot be interrupted: its timed-out attempt is recorded as failed, and
        the thread stuck in it stops counting toward the step threads' cap, so other runs' steps run."""
        RELEASE.clear()
        try:
            with Engine(store, REGISTRY, EngineConfig(max_active_runs=0, step_threads=1)).start() as engine:
                hung = engine.wait(engine.launch("hung", "go").run_id)
                after = [engine.wait(engine.launch("noting", f"go {n}").run_id, timeout=5) for n in range(2)]
                assert not RELEASE.is_set()  # the function is still inside
        finally:
            RELEASE.set()
        assert hung.status == "failed" and hung.steps["hang"].error.startswith("timeout")
        assert [s.status for s in after] == ["completed", "completed"]

    def test_a_function_calling_sys_exit_fails_its_step_and_the_run_goes_on(self, engine):
        state = engine.wait(engine.launch("exiting", "go").run_id, timeout=10)
        assert state.status == "failed" and state.steps["bye"].error == "SystemExit: 3"
        assert state.steps["after"].skip_reason == "upstream_failed"

    def test_outputs_utf8_or_json_cannot_carry_as_they_are_are_recorded_not_retried_for_ever(self, engine, store):
        """Text with a lone surrogate and a dict with a key that is not a string made the append fail: the
        run was driven again, ran the step again, and failed the same way, for ever."""
        state = engine.wait(engine.launch("odd", "go").run_id, timeout=10)
        assert state.status == "completed"
        assert state.steps["text"].output == "caf\ufffd \U0001F600"
        assert state.steps["keys"].fields == {"1": "one", "two": 2}
        assert store.verify() == []

    def test_an_exception_whose_message_cannot_be_read_fails_its_step(self, engine):
        state = engine.wait(engine.launch("unreadable", "go").run_id, timeout=10)
        assert state.status == "failed"
        assert state.steps["s"].error == "Unreadable: (its message could not be read: RuntimeError)"

    def test_a_fault_in_baton_around_a_step_fails_that_attempt_instead_of_losing_it(self, engine, monkeypatch):
        def broken(result):
            raise RuntimeError("injected")

        monkeypatch.setattr("actors.step._encodable", broken)
        state = engine.wait(engine.launch("noting", "go").run_id, timeout=10)
        assert state.status == "failed"
        assert state.steps["note"].error == "baton could not record this attempt's outcome: RuntimeError: injected"

    def test_failure_skips_downstream_and_all_done_cleanup_runs(self, engine):
        state = engine.wait(engine.launch("failing", "go").run_id)
        assert state.status == "failed"
        assert state.steps["downstream"].skip_reason == "upstream_failed"
        assert state.steps["cleanup"].status == "completed"
        assert "ValueError: broken on purpose" in state.steps["broken"].error

    def test_cancel_stops_a_running_step_and_ends_the_run(self, engine, store):
        RELEASE.clear()
        run_id = engine.launch("blocking", "go").run_id
        engine.wait(run_id, lambda s: s.steps["hold"].status == "running")
        engine.cancel(run_id, reason="changed my mind", by="ann")
        state = engine.wait(run_id)
        RELEASE.set()
        assert state.status == "cancelled"
        assert state.steps["hold"].status == "cancelled" and state.steps["after"].skip_reason == "cancelled"
        assert types_of(store, run_id)[-1] == "RunCancelled"
        with pytest.raises(RunFinished):
            engine.cancel(run_id)


def test_a_started_engine_has_a_step_thread_ready_before_its_first_step(store):
    """The first attempt of a fresh process (an approval's next step) does not wait for a thread to start."""
    engine = Engine(store, REGISTRY, EngineConfig()).start()
    try:
        before = set(threading.enumerate())
        run_id = engine.launch("noting", "which thread?").run_id
        assert engine.wait(run_id).status == "completed"
        assert THREADS[run_id] in before
    finally:
        engine.stop()


def test_run_actors_run_on_threads_the_engine_keeps(store, monkeypatch):
    """A run's first message (a launch, an approval) waits for no thread to start: ten runs one after
    another take turns on two or three kept threads, not ten new ones."""
    engine = Engine(store, REGISTRY, EngineConfig()).start()
    seen: set[threading.Thread] = set()
    on_start = RunActor.on_start
    monkeypatch.setattr(RunActor, "on_start", lambda self: (seen.add(threading.current_thread()), on_start(self)))
    try:
        for _ in range(10):
            assert engine.wait(engine.launch("noting", "which threads?").run_id).status == "completed"
        assert len(seen) <= 3
    finally:
        engine.stop()


def test_a_step_goes_to_its_thread_once_the_run_actor_is_done_with_the_message_that_started_it(store, monkeypatch):
    """Handed over earlier, the step's thread would wake only to wait for the GIL the RunActor holds."""
    engine = Engine(store, REGISTRY, EngineConfig()).start()
    order: list[str] = []
    hand_over, arm = engine._steps.run_then, RunActor._arm_approval_timer  # the last thing _flush does
    monkeypatch.setattr(engine._steps, "run_then", lambda work, then: (order.append("handed"), hand_over(work, then)))
    monkeypatch.setattr(RunActor, "_arm_approval_timer", lambda self, at: (order.append("flushed"), arm(self, at)))
    try:
        run_id = engine.launch("noting", "in which order?").run_id
        assert engine.wait(run_id).status == "completed"
        assert order[:2] == ["flushed", "handed"]
    finally:
        engine.stop()


def test_recovery_restarts_lost_attempts(store_url):
    """A process died with an attempt running: the next start records it lost and runs it again."""
    store = open_store(store_url)
    try:
        launched = prepare(REGISTRY, LaunchParams("parallel", "q"), run_id="01RECOVERED000000000000000",
                           now=time.time())
        from flows.decide import start
        from flows.events import RunStarted
        from flows.state import RunState, evolve

        state = evolve(evolve(RunState(), launched), RunStarted(run_id=launched.run_id, at=time.time()))
        started = start(state, ["a"], time.time())
        events = [launched, RunStarted(run_id=launched.run_id, at=time.time()), *started]
        store.append(stream_of(launched.run_id), [NewEvent(type(e).__name__, event_data(e)) for e in events], 0)
        with Engine(store, REGISTRY) as engine:
            state = engine.wait(launched.run_id)
        assert state.status == "completed"
        types = types_of(store, launched.run_id)
        assert "RunRecovered" in types
        lost = [r.data for r in store.read_stream(stream_of(launched.run_id)) if r.type == "StepFailed"]
        assert lost and lost[0]["lost"] and lost[0]["step_id"] == "a"
        assert state.steps["a"].attempt == 2
    finally:
        store.close()


def test_concurrent_launches_with_one_idempotency_key_make_one_run(store_url):
    from concurrent.futures import ThreadPoolExecutor

    store = open_store(store_url)
    try:
        with Engine(store, REGISTRY) as engine:
            keys = [f"key-{i}" for i in range(8)]
            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(lambda k: engine.launch("parallel", "q", idempotency_key=k),
                                        [k for k in keys for _ in range(4)]))
            for key in keys:
                mine = [a for a, k in zip(answers, [k for k in keys for _ in range(4)]) if k == key]
                assert len({a.run_id for a in mine}) == 1 and sum(a.created for a in mine) == 1
                assert len({a.position for a in mine}) == 1
                assert engine.wait(mine[0].run_id).status == "completed"
            launches = [r for r in store.read_all() if r.type == "RunLaunched"]
            assert len(launches) == len(keys)
    finally:
        store.close()


def test_a_store_failure_mid_run_stops_the_actor_and_the_run_is_driven_again(store_url):
    from tests.integration.flaky_store import FlakyStore

    store = open_store(store_url)
    flaky = FlakyStore(store)
    try:
        with Engine(flaky, REGISTRY) as engine:
            RELEASE.clear()
            run_id = engine.launch("blocking", "go").run_id
            engine.wait(run_id, lambda s: s.steps["hold"].status == "running")
            flaky.fail_next(2)  # the step's result and the first retry cannot be recorded
            RELEASE.set()
            state = engine.wait(run_id, timeout=20)
        assert state.status == "completed" and flaky.refused == 2
        types = types_of(store, run_id)
        assert "RunRecovered" in types  # driven again, by this same process
    finally:
        store.close()


@pytest.mark.parametrize("claimed_by", ["a process that crashed", "this process, whose launch failed"])
def test_a_retry_of_a_key_claimed_by_a_launch_that_never_landed_is_launched_at_once(store_url, claimed_by):
    import hashlib

    store = open_store(store_url)
    try:
        with Engine(store, REGISTRY) as engine:
            node = "gone-host:4242" if claimed_by.startswith("a process") else engine.config.node
            stream = "idempotency-" + hashlib.sha256(b"crash-key").hexdigest()[:40]
            # What a crash between recording the key and recording the launch leaves behind.
            store.append(stream, [NewEvent("IdempotencyKeyClaimed", {"key": "crash-key", "run_id": "R-lost"},
                                           {"node": node})], 0)
            began = time.monotonic()
            launched = engine.launch("parallel", "q", idempotency_key="crash-key")
            took = time.monotonic() - began
            assert took < 3.0, f"the retry waited {took:.1f} s for a launch nobody was making"
            assert launched.run_id == "R-lost" and launched.created
            assert engine.wait("R-lost").status == "completed"
            again = engine.launch("parallel", "q", idempotency_key="crash-key")
            assert again == type(launched)("R-lost", launched.position, created=False)
            assert len([r for r in store.read_all() if r.type == "RunLaunched"]) == 1
    finally:
        store.close()


def test_recovery_reads_the_open_runs_from_the_read_tables_and_only_the_log_after_them(store_url):
    """With the read tables current up to a checkpoint, a restart finds the unfinished runs from
    them and from the log after that checkpoint alone: a run parked before it, one parked after it
    (the projector stopped), none of the finished ones, and no read of the log before it."""
    from projections import Projector
    from projections.queries import ReadModel

    store = open_store(store_url)
    try:
        with Engine(store, REGISTRY, EngineConfig(recover=False)) as engine:
            done = engine.launch("parallel", "q").run_id
            assert engine.wait(done).status == "completed"
            before = engine.launch("gated", "q").run_id
            engine.wait(before, {"paused"})
            projector = Projector(store).start()
            projector.wait_for(store.head(), timeout=20)
            projector.stop()
            checkpoint = store.head()
            after = engine.launch("gated", "q").run_id
            engine.wait(after, {"paused"})
        reads = ReadModel(store.database)
        position, open_runs, parked = reads.open_runs()
        assert position == checkpoint and set(open_runs) == {before} and set(parked) == {before}
        scans = []
        read_all = store.read_all

        def spy(after=0, limit=None, *, types=None):
            scans.append(after)
            return read_all(after, limit, types=types)

        store.read_all = spy
        with Engine(store, REGISTRY, open_runs=reads.open_runs) as engine:
            plan = engine.plan()
            assert [(r["run_id"], r["reason"]) for r in plan["planned_queued"]] == [
                (before, "approval"), (after, "approval")]
            assert scans and min(scans) >= checkpoint, "recovery read the log before the checkpoint"
            engine.approve(after, "gate", by="someone")
            assert engine.wait(after).status == "completed"
        del store.read_all
        # Read tables of another version say nothing: the whole log is read, with the same result.
        with Engine(store, REGISTRY, open_runs=lambda: None) as engine:
            assert [r["run_id"] for r in engine.plan()["planned_queued"]] == [before]
    finally:
        store.close()


def test_an_approval_of_a_run_another_process_paused_reads_its_stream_and_the_leases_in_one_round_trip(store):
    """The ownership check of a command for a run this process did not drive needs the leases read after
    the run's stream (is the node that recorded its last event alive?): both go in one read of the
    store (on PostgreSQL one round trip, not two). The answer is still the fresh one."""
    first = Engine(store, REGISTRY, EngineConfig(node="paused-it")).start()
    try:
        run_id = first.launch("gated", "release notes for 1.4").run_id
        first.wait(run_id, {"paused"})
    finally:
        first.stop()  # its node lease goes with it
    engine = Engine(store, REGISTRY, EngineConfig(node="approves-it")).start()
    engine.plan()  # its recovery is done
    backend = store._backend
    reads: list[list[str]] = []
    one, many = backend.query, backend.query_many
    try:
        backend.query = lambda sql, params=(): (reads.append([sql]), one(sql, params))[1]
        backend.query_many = lambda statements: (reads.append([sql for sql, _ in statements]), many(statements))[1]
        engine.approve(run_id, "gate", by="ann")
        del backend.query, backend.query_many
        assert engine.wait(run_id).status == "completed"
    finally:
        backend.__dict__.pop("query", None), backend.__dict__.pop("query_many", None)
        engine.stop()
    stream_reads = [statements for statements in reads if "FROM events WHERE stream_id" in statements[0]]
    assert len(stream_reads) == 1 and len(stream_reads[0]) == 2 and "FROM leases" in stream_reads[0][1], reads
