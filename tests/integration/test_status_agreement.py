"""The three status implementations agree on real logs: the fold, the projector's rows, the frames.

Every built-in flow is driven through a real Engine (offline backend, SQLite),
with approvals approved and rejected, a run cancelled while it waits, and a
small flow whose steps fail (a retry pending beside a waiting approval, a step
that gives up, a dependent skipped as upstream_failed). Then each run's log is
read back and, after every event, the run's and every step's status are
compared as:

``flows.state.evolve`` folds them, ``projections.apply`` writes them into the
read rows, and a consumer of ``projections.frames`` folds the frames
(``tests.status_views``). The live projector's tables are compared at the end.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from actors.config import EngineConfig
from actors.engine import Engine
from actors.runlog import decode, fold_records
from eventstore import open_store
from flows import Flow, StepContext, StepKind, agent, approval, code
from flows.catalog import builtin
from flows.events import stream_of
from flows.state import RunState
from flows.status import RUN_TERMINAL, RunStatus, StepStatus
from projections import Projector, ReadModel
from tests.status_views import views

WAIT = 60.0  # a queued run waits for the runs ahead of it: on a loaded 2-core machine 30 s ran out once


def fails_first(ctx: StepContext) -> str:
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails on purpose")
    return "second attempt"


def always_fails(ctx: StepContext) -> str:
    raise ValueError("broken on purpose")


RELEASE = threading.Event()


def hold(ctx: StepContext) -> str:
    """Runs until the test lets it go (after cancelling its run: a running step is cancelled)."""
    RELEASE.wait(WAIT)
    return "let go"


FAILING = Flow(
    "status-failing",
    category="Analysis",
    description="a retry beside a waiting approval, a step that gives up, a skip it causes",
    steps=[
        code("flaky", fn=fails_first, retries=1, retry_delay_s=0.3),
        approval("gate", prompt="Go on with $input.question?"),
        code("boom", fn=always_fails, deps=["flaky"]),
        agent("after", persona="reviewer", prompt="Review $boom.output", deps=["boom", "gate"]),
    ],
)


HOLDING = Flow(
    "status-holding",
    category="Analysis",
    description="a step that is still running when its run is cancelled",
    steps=[code("hold", fn=hold), agent("later", persona="reviewer", prompt="After $hold.output", deps=["hold"])],
)


def drive(engine: Engine, waited: list[RunState] | None = None) -> dict[str, str]:
    """Run every flow: approve every approval, except in one run (rejected) and one (cancelled while
    paused); cancel the holding flow while its step runs. Returns run id -> how it was driven; every
    state ``engine.wait`` returned goes to ``waited``.
    """
    registry = engine.registry
    runs: dict[str, str] = {}
    for number, flow in enumerate(f for f in registry if f.name != HOLDING.name):
        band = ("small", "medium", "large")[number % 3]
        runs[engine.launch(flow.name, f"how does {flow.name} hold up?", band=band).run_id] = "approve"
    gated = [f for f in registry if f.name != FAILING.name and any(s.kind == StepKind.APPROVAL for s in f.steps)]
    runs[engine.launch(gated[0].name, "reject this one", band="large").run_id] = "reject"
    runs[engine.launch(gated[-1].name, "cancel this one", band="large").run_id] = "cancel"
    RELEASE.clear()  # (set by the drive of an earlier test in this process: its step would end at once)
    held = engine.launch(HOLDING.name, "cancel it while it runs").run_id
    engine.wait(held, lambda s: s.steps["hold"].status == StepStatus.RUNNING, timeout=WAIT)
    engine.cancel(held, reason="stop it", by="tests")
    RELEASE.set()
    runs[held] = "cancel"
    for run_id, how in runs.items():
        awaited = RUN_TERMINAL | {RunStatus.PAUSED}
        while (state := engine.wait(run_id, awaited, timeout=WAIT)).status == RunStatus.PAUSED:
            if waited is not None:
                waited.append(state)
            waiting = [sid for sid, st in state.steps.items() if st.status == StepStatus.PAUSED]
            if how == "cancel":
                engine.cancel(run_id, reason="not needed", by="tests")
            for step_id in waiting if how != "cancel" else ():
                decide = engine.reject if how == "reject" else engine.approve
                decide(run_id, step_id, by="reviewer", comment="seen")
            moved = engine.wait(run_id, lambda s: s.status != RunStatus.PAUSED, timeout=WAIT)
            if waited is not None:
                waited.append(moved)
        if waited is not None:
            waited.append(state)
    return runs


@pytest.fixture
def driven(sqlite_url):
    store = open_store(sqlite_url, poll_interval=0.05)
    registry = builtin()
    registry.register(FAILING)
    registry.register(HOLDING)
    engine = Engine(store, registry, EngineConfig(agent_slots=4, max_active_runs=6)).start()
    try:
        waited: list[RunState] = []
        runs = drive(engine, waited)
        yield store, runs, {run_id: engine.state(run_id) for run_id in runs}, waited
    finally:
        engine.stop()
        store.close()


def test_fold_rows_and_frames_agree_on_every_status_after_every_event_of_every_catalogue_flow(driven):
    store, runs, states, _ = driven
    ends = {states[r].status for r in runs}
    assert ends == {"completed", "failed", "rejected", "cancelled"}  # every way a run ends was driven
    seen_run: set[str] = set()
    seen_step: set[str] = set()
    for run_id in runs:
        records = store.read_stream(stream_of(run_id))
        for version, said in enumerate(views(records, decode), 1):
            where = f"run {run_id} ({states[run_id].launched.flow}) after event {version} ({records[version - 1].type})"
            assert said["rows"] == said["fold"], where
            assert said["frames"] == said["fold"], where
            seen_run.add(said["fold"][0])
            seen_step.update(said["fold"][1].values())
    # The logs went through every status a run and a step can have, so every rule was compared.
    assert seen_run == set(RunStatus)
    assert seen_step == set(StepStatus)
    failing = next(r for r in runs if states[r].launched.flow == FAILING.name)
    assert states[failing].status == RunStatus.FAILED
    assert states[failing].steps["after"].skip_reason == "upstream_failed"


def test_the_live_projector_ends_where_the_fold_does(driven):
    store, runs, states, _ = driven
    with Projector(store, batch_size=7) as projector:
        assert projector.wait_for(store.head(), WAIT), projector.last_error
        reads = ReadModel(store.database, projector)
        for run_id, state in states.items():
            got = reads.get_run(run_id)
            assert got["run"]["status"] == state.status
            assert {s["step_id"]: s["status"] for s in got["steps"]} == {
                sid: st.status for sid, st in state.steps.items()}


def test_a_wait_on_a_run_driven_here_returns_the_logs_own_fold(driven):
    """Engine.wait takes a run's state from its RunActor's commits (actors.watch), not from the log:
    each state it returned is, field for field, the fold of the log up to that state's version."""
    store, runs, _, waited = driven
    assert len(waited) > len(runs)  # the pauses and the ends
    for state in waited:
        records = store.read_stream(stream_of(state.run_id))
        assert fold_records(records[: state.version], state.run_id)[0] == state, (state.run_id, state.version)


def test_a_run_the_rows_show_parked_has_nothing_to_do_but_wait_for_a_person(driven):
    """``flow_runs.parked_until`` (what a start parks a run by without reading its stream) is never set
    on a run the fold says has work of its own, after any event; its timer is the fold's. It errs
    towards unset, but is set at a plain waiting approval, and not beside a pending retry."""
    from flows.decide import decide, has_work
    from projections.apply import Workset, apply, parked_until

    store, runs, _, _ = driven
    seen = Counter()
    for run_id in runs:
        records = store.read_stream(stream_of(run_id))
        work = Workset()
        for version, rec in enumerate(records, 1):
            apply(work, [(run_id, decode(rec), rec.position, rec.version)])
            rows = work.runs[run_id]
            if rows.run["status"] != RunStatus.PAUSED:
                continue
            until = parked_until(rows.run, rows.steps)
            state = fold_records(records[:version], run_id)[0]
            now = until - 0.001 if until else rec.data.get("at", 0.0) + 1e6
            where = f"run {run_id} ({state.launched.flow}) after event {version} ({rec.type})"
            seen[until is not None] += 1
            if until is not None:
                assert state.status == RunStatus.PAUSED and not has_work(state, now), where
                assert decide(state, now).timer_at == (until or None), where
    assert seen[True] and seen[False], seen
