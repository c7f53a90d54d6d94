"""A run's status after a step moved comes from counts the fold keeps (flows.state), not a pass over every step.

The counts must give exactly what the pass gave: after every event of any log
(hypothesis writes them in any order, on every catalogue flow and on a task
run), the counts equal those taken over the steps by their definition, and
the run's status after a step's move is ``flows.status.run_status`` over
every step, the pass the fold made before and the projector still makes.
The counts are not fields: a state built without the fold (its constructor,
``replace``, a decode) has none and counts them from its own steps, so a
state whose steps were swapped cannot carry counts that lie. The same holds
for the frontier the fold keeps (the pending steps a decision looks at), and
a decision is the same from a state that kept it or found it again.
"""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from flows import Flow, agent, approval
from flows.catalog import builtin
from flows.events import (
    AnomalyDetected,
    Answer,
    Event,
    MapItemCompleted,
    MapItemFailed,
    Phase,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunForked,
    RunLaunched,
    RunQueued,
    RunRecovered,
    RunRejected,
    RunStarted,
    StepCancelled,
    StepCompleted,
    StepFailed,
    StepPaused,
    StepResumed,
    StepSkipped,
    StepStarted,
    TaskAborted,
    TaskAnswered,
    TaskBlocked,
    TaskDone,
    TaskEvent,
    TaskFailed,
    TaskPhaseChanged,
    TaskReviewed,
    TasksPlanned,
    TaskStarted,
)
from flows.model import FlowSnapshot
from flows.decide import decide
from flows.state import RunState, at_position, evolve, fold, frontier, status_counts
from flows.state import run_status as fold_run_status
from flows.status import NOT_LAUNCHED, RUN_STATUSES, STEP_TERMINAL, StepStatus, run_status, run_status_counted, step_counts
from flows.tasks import load_task_graph
from flows.tasks.launch import task_run_launched

STEP_MOVES = (StepStarted, StepCompleted, StepFailed, StepSkipped, StepPaused, StepResumed, StepCancelled)
"""The step events after which the run's status is decided again (and, in a task run, every task event)."""


def counted(state: RunState) -> tuple[int, int]:
    """``(moving, paused)`` by the definition, over every step: an attempt under way or a retry pending
    (``not_before`` set on a pending step) moves; a paused step waits for a person."""
    steps = state.steps.values()
    return (sum(s.status == "running" or (s.status == "pending" and s.not_before != 0.0) for s in steps),
            sum(s.status == "paused" for s in steps))


def scanned_status(before: RunState, after: RunState) -> str:
    """The run's status after a step's move as the fold used to decide it: a pass over every step."""
    return run_status(before.status, [(s.status, s.not_before) for s in after.steps.values()])


def check(events: list[Event]) -> RunState:
    """Fold ``events`` and check the counts and the status after each; the same log is folded beside it
    with every state rebuilt without its counts (as any state made outside the fold is)."""
    state = rebuilt = RunState()
    for n, event in enumerate(events, 1):
        before = state
        state = evolve(state, event, n)
        assert status_counts(state) == counted(state), (n, event)
        moved = at_position(state, n + 1000)  # what the RunActor does after each commit: the counts go with it
        assert (moved.position, status_counts(moved), moved) == (n + 1000, counted(state), replace(state, position=n + 1000))
        if isinstance(event, STEP_MOVES) or (before.tasks is not None and isinstance(event, TaskEvent | TasksPlanned)):
            assert state.status == scanned_status(before, state), (n, event)
        else:
            assert state.status in (before.status, event_status(before, event)), (n, event)
        rebuilt = evolve(replace(rebuilt), event, n)  # replace() copies the fields alone: no counts
        assert rebuilt == state and rebuilt.status == state.status, (n, event)
        assert status_counts(rebuilt) == counted(rebuilt), (n, event)
        if state.launched is not None:  # the frontier the fold keeps (asked at each state, so it is kept)
            assert frontier(state) == frontier(moved) == in_frontier(state), (n, event)
            assert decided(state) == decided(replace(state)), (n, event)  # kept frontier or found by a pass
    return state


def in_frontier(state: RunState) -> tuple[int, ...]:
    """The steps a decision looks at, by the definition: pending, and with no deps, the ``always`` rule, a
    retry time, or a dep that has ended."""
    steps = state.steps
    return tuple(i for i, spec in enumerate(state.snapshot.steps) if steps[spec.id].status == "pending" and (
        steps[spec.id].not_before != 0.0 or not spec.deps or spec.trigger_rule == "always"
        or any(steps[dep].status in STEP_TERMINAL for dep in spec.deps)))


def decided(state: RunState) -> object:
    """What ``decide`` makes of the state at a time past every retry (or the error it raises)."""
    try:
        return decide(state, 60.0)
    except Exception as exc:  # a log the engine would not write may break a decision: the same way twice
        return type(exc), str(exc)


def event_status(before: RunState, event: Event) -> str:
    """A run event's status (what the fold takes from it when the run has not ended)."""
    return {RunLaunched: "queued", RunQueued: "queued", RunStarted: "running", RunCompleted: "completed",
            RunFailed: "failed", RunRejected: "rejected", RunCancelled: "cancelled"}.get(type(event), before.status)


# --- what hypothesis writes ------------------------------------------------------------------


def step_events(step_ids: list[str]) -> st.SearchStrategy[Event]:
    """Events of a run and its steps, any of its steps, in any order (the engine would not write most logs)."""
    step = st.sampled_from(step_ids)
    at = st.floats(min_value=1.0, max_value=100.0)
    return st.one_of(
        st.builds(RunQueued, run_id=st.just("r1"), at=at),
        st.builds(RunStarted, run_id=st.just("r1"), at=at),
        st.builds(StepStarted, step_id=step, attempt=st.integers(1, 3), at=at),
        st.builds(StepCompleted, step_id=step, attempt=st.integers(1, 3), output=st.just("out"), at=at),
        st.builds(StepFailed, step_id=step, attempt=st.integers(1, 3), error=st.just("x"),
                  will_retry=st.booleans(), retry_at=st.sampled_from([0.0, 50.0]), lost=st.booleans(), at=at),
        st.builds(StepCancelled, step_id=step, attempt=st.integers(1, 3), at=at),
        st.builds(StepSkipped, step_id=step, reason=st.sampled_from(["condition", "upstream_failed", "rejected"]),
                  at=at),
        st.builds(StepPaused, step_id=step, at=at),
        st.builds(StepResumed, step_id=step, decision=st.sampled_from(["approved", "rejected"]), at=at),
        st.builds(AnomalyDetected, step_id=step, kind=st.sampled_from(["stall", "loop"]), at=at),
        st.builds(MapItemCompleted, step_id=step, index=st.integers(0, 3), output=st.just("item"), at=at),
        st.builds(MapItemFailed, step_id=step, index=st.integers(0, 3), error=st.just("bad item"), at=at),
        st.builds(RunRecovered, steps=st.lists(step, max_size=2), at=at),
        st.builds(RunForked, parent_run_id=st.just("p1"), from_step=step, at=at),
        st.builds(RunCompleted, at=at),
        st.builds(RunFailed, reason=st.just("f"), at=at),
        st.builds(RunRejected, reason=st.just("r"), at=at),
        st.builds(RunCancelled, reason=st.just("c"), at=at),
    )


def launched(snapshot: FlowSnapshot, at: float = 1.0) -> RunLaunched:
    return RunLaunched(run_id="r1", flow=snapshot.name, snapshot=snapshot, at=at)


CATALOGUE = sorted(builtin(), key=lambda flow: flow.name)
SLOW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("flow", CATALOGUE, ids=[flow.name for flow in CATALOGUE])
@SLOW
@given(data=st.data())
def test_every_catalogue_flow_counts_as_the_pass_over_its_steps(flow: Flow, data: st.DataObject) -> None:
    snapshot = flow.snapshot(data.draw(st.sampled_from(["small", "medium", "large"])))
    ids = [s.id for s in snapshot.steps]
    start = data.draw(st.sampled_from([[], [RunStarted(run_id="r1", at=1.0)]]))  # most logs start the run
    events = data.draw(st.lists(st.one_of(step_events(ids), st.just(launched(snapshot, 9.0))), max_size=40))
    check([launched(snapshot), *start, *events])


TASKS = {"tasks/a.md": "---\nid: a\ntitle: A\nagent: implementation-specialist\n---\nDo a.\n",
         "tasks/b.md": "---\nid: b\ntitle: B\nagent: implementation-specialist\ndepends_on: [a]\n---\nDo b.\n",
         "tasks/c.md": "---\nid: c\ntitle: C\nagent: implementation-specialist\ndepends_on: [a]\n---\nDo c.\n"}


def task_events(task_ids: list[str]) -> st.SearchStrategy[Event]:
    task = st.sampled_from(task_ids)
    at = st.floats(min_value=1.0, max_value=100.0)
    return st.one_of(
        st.builds(TasksPlanned, step_ids=st.lists(task, min_size=1, max_size=3), at=at),
        st.builds(TaskStarted, step_id=task, attempt=st.integers(1, 3), at=at),
        st.builds(TaskPhaseChanged, step_id=task, attempt=st.just(1), phase=st.sampled_from(list(Phase)), at=at),
        st.builds(TaskBlocked, step_id=task, attempt=st.just(1), reason=st.just("stuck"), at=at),
        st.builds(TaskReviewed, step_id=task, attempt=st.just(1), round=st.integers(1, 3), approved=st.booleans(),
                  capped=st.booleans(), at=at),
        st.builds(TaskAnswered, step_id=task, answer=st.sampled_from(list(Answer)), at=at),
        st.builds(TaskFailed, step_id=task, attempt=st.just(1), error=st.just("x"), will_retry=st.booleans(),
                  lost=st.booleans(), at=at),
        st.builds(TaskDone, step_id=task, attempt=st.just(1), at=at),
        st.builds(TaskAborted, step_id=task, reason=st.just("no"), by=st.sampled_from(["baton", "ana"]), at=at),
    )


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_task_run_counts_as_the_pass_over_its_steps(data: st.DataObject) -> None:
    """Task events move several steps at once (TasksPlanned) and leave a failed task's retry pending."""
    event = task_run_launched(load_task_graph(TASKS.items()), run_id="r1", now=1.0, project_id="p", repo="/repo",
                              allow=[], base="main", target="main", max_rounds=2)
    ids = [s.id for s in event.snapshot.steps]  # the tasks and the landing gate
    tasks = [i for i in ids if i != "land"]
    events = data.draw(st.lists(st.one_of(task_events(tasks), step_events(ids)), max_size=40))
    check([event, RunStarted(run_id="r1", at=1.0), *events])


FLOW = Flow("counts", category="Analysis", steps=[
    agent("a", persona="reviewer", prompt="A"),
    approval("gate", prompt="Go?"),
    agent("b", persona="reviewer", prompt="B $a.output", deps=["a"]),
])


def test_a_retry_pending_beside_an_approval_keeps_the_run_running_until_it_is_taken_up() -> None:
    snapshot = FLOW.snapshot()
    state = check([launched(snapshot), RunStarted(run_id="r1", at=1.0), StepStarted(step_id="a", attempt=1, at=2.0),
                   StepPaused(step_id="gate", at=3.0),
                   StepFailed(step_id="a", attempt=1, error="x", will_retry=True, retry_at=9.0, at=4.0)])
    assert (state.status, status_counts(state)) == ("running", (1, 1))
    state = check([launched(snapshot), RunStarted(run_id="r1", at=1.0), StepStarted(step_id="a", attempt=1, at=2.0),
                   StepPaused(step_id="gate", at=3.0), StepFailed(step_id="a", attempt=1, error="x", at=4.0)])
    assert (state.status, status_counts(state)) == ("paused", (0, 1))


def test_a_state_whose_steps_were_swapped_counts_its_own_steps() -> None:
    """``replace(state, steps=...)`` (as tests and callers may build one) keeps nothing of the old counts."""
    snapshot = FLOW.snapshot()
    running = fold([launched(snapshot), RunStarted(run_id="r1", at=1.0), StepStarted(step_id="a", attempt=1, at=2.0)])
    assert status_counts(running) == (1, 0)
    paused = fold([StepPaused(step_id="gate", at=3.0)], running)
    swapped = replace(running, steps={**running.steps, "a": paused.steps["b"], "gate": paused.steps["gate"]})
    assert status_counts(swapped) == (0, 1) and fold_run_status(swapped) == "paused"
    after = evolve(swapped, AnomalyDetected(step_id="b", at=4.0))  # a move that decides nothing: counts carried
    assert status_counts(after) == (0, 1)
    assert evolve(after, StepSkipped(step_id="b", reason="condition", at=5.0)).status == "paused"
    assert evolve(running, StepSkipped(step_id="b", reason="condition", at=5.0)).status == "running"


def test_the_counts_are_no_field_a_state_can_be_given_or_that_is_encoded() -> None:
    state = fold([launched(FLOW.snapshot()), RunStarted(run_id="r1", at=1.0),
                  StepStarted(step_id="a", attempt=1, at=2.0)])
    assert "_counts" not in {f.name for f in msgspec.structs.fields(RunState)}
    assert b"_counts" not in msgspec.json.encode(state)
    with pytest.raises(TypeError):
        RunState(_counts=(0, 0))  # type: ignore[call-arg]
    decoded = msgspec.json.decode(msgspec.json.encode(replace(state, launched=None)), type=RunState)
    assert status_counts(decoded) == (1, 0) and decoded == replace(state, launched=None)


def test_the_pass_over_the_steps_is_the_rule_over_their_summed_counts() -> None:
    """``run_status`` (the projector's pass, ``step_counts`` inlined) against ``run_status_counted`` over
    ``step_counts`` summed: every run status, every list of up to three steps in any status, retry or not."""
    one = [(status.value, retry) for status in StepStatus for retry in (0.0, 50.0)]
    lists = [[]] + [[a] for a in one] + [[a, b] for a in one for b in one] + [
        [a, b, c] for a in one for b in one for c in one]
    for current in [*RUN_STATUSES, NOT_LAUNCHED]:
        for steps in lists:
            counts = [step_counts(status, retry) for status, retry in steps]
            want = run_status_counted(current, sum(m for m, _ in counts), sum(p for _, p in counts))
            assert run_status(current, steps) == want, (current, steps)
