"""A run's state as a pure fold over its events: ``evolve(state, event) -> state``.

The fold trusts the log: decisions were taken when the events were recorded,
so replay never re-evaluates a condition or a trigger rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from msgspec.structs import replace

from flows.events import (
    AnomalyDetected,
    Event,
    MapItemCompleted,
    MapItemFailed,
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
    TaskDone,
    TaskEvent,
    TaskFailed,
    TasksPlanned,
    TaskStarted,
)
from flows.model import FlowSnapshot, StepSpec
from flows.status import (
    NOT_LAUNCHED,
    STEP_TERMINAL,
    WITH_OUTPUT,
    Counts,
    StepStatus,
    run_ended,
    run_status_counted,
    run_status_of,
    step_counts,
    step_ended,
    step_status_of,
    takes_run_event,
)
from flows.tasks import lifecycle as task_lifecycle
from flows.tasks import run as task_run

_SUCCEEDED = StepStatus.COMPLETED.value  # flows.status.succeeded, for the passes over every step


class StepState(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What the log says about one step. (Data only, never in a cycle: untracked by the cyclic
    collector, as events are.)"""

    status: str = StepStatus.PENDING
    attempt: int = 0
    output: str = ""
    fields: dict[str, Any] = {}
    fields_error: str = ""
    error: str = ""
    skip_reason: str = ""
    detail: str = ""
    not_before: float = 0.0
    started_at: float = 0.0
    ended_at: float = 0.0
    duration_s: float = 0.0
    failures: int = 0
    anomalies: int = 0
    stalls: int = 0  # AnomalyDetected of kind stall, over every attempt (the default stall policy reads it)
    guidance: str = ""
    persona: str = ""
    backend: str = ""
    model: str = ""
    prompt: str = ""
    decided_by: str = ""
    due_at: float = 0.0  # a paused approval's timer falls due then (0: none)
    items: list[Any] = []  # a map step: what it goes over
    item_outputs: dict[int, str] = {}  # a map step: the result of each item done, by index (kept across attempts)
    item_errors: dict[int, str] = {}  # a map step: why items failed, in the current attempt (a later try that
    # completed takes its item out)
    child_run_id: str = ""  # a subflow step: its child run

    @property
    def terminal(self) -> bool:
        """Whether the step has reached a final status."""
        return step_ended(self.status)


class RunState(msgspec.Struct, frozen=True, kw_only=True, dict=True):
    """What the log says about one run. ``version`` is its stream's version.

    Beside its fields, a state made by :func:`evolve` carries how many of its
    steps move and how many are paused (:func:`status_counts`), so a step's
    move decides the run's status without a pass over every step. They are
    not fields: they sit in the instance's ``__dict__``, which msgspec neither
    encodes, compares nor copies, so a state built any other way (the
    constructor, ``replace``, a decode) has none and they are counted again
    from its steps when first needed. Only the fold writes them.
    """

    run_id: str = ""
    status: str = NOT_LAUNCHED
    launched: RunLaunched | None = None
    steps: dict[str, StepState] = {}
    version: int = 0
    position: int = 0
    launched_at: float = 0.0
    started_at: float = 0.0
    ended_at: float = 0.0
    reason: str = ""
    queue_reason: str = ""
    recoveries: int = 0
    report: str = ""
    parent_run_id: str = ""  # a fork's (or a retry's) parent run
    forked_from: str = ""  # the step it was forked from
    tasks: task_lifecycle.TaskRunState | None = None
    """A task run's tasks (DESIGN §12), folded from the same stream; None for other runs."""

    @property
    def snapshot(self) -> FlowSnapshot:
        """The pinned graph (RunLaunched must have been folded)."""
        assert self.launched is not None, "run has no RunLaunched event"
        return self.launched.snapshot

    @property
    def terminal(self) -> bool:
        """Whether the run has ended."""
        return run_ended(self.status)

    def spec(self, step_id: str) -> StepSpec:
        """The pinned definition of one step."""
        return self.snapshot.step(step_id)

    def outputs(self) -> dict[str, str]:
        """What ``$step.output`` sees: the text of every completed step, and the
        approver's comment of a rejected approval (so on_reject steps can quote it)."""
        return {sid: s.output for sid, s in self.steps.items() if s.status in WITH_OUTPUT}  # has_output

    def fields(self) -> dict[str, dict[str, Any]]:
        """Frontmatter fields of every completed step."""
        return {sid: s.fields for sid, s in self.steps.items() if s.status == _SUCCEEDED}

    def running(self) -> list[str]:
        """Steps with an attempt under way."""
        return [sid for sid, s in self.steps.items() if s.status == StepStatus.RUNNING]


def fold(events: list[tuple[int, Event]] | list[Event], state: RunState | None = None) -> RunState:
    """Fold events (or ``(position, event)`` pairs) into a state."""
    state = state or RunState()
    for item in events:
        if isinstance(item, tuple):
            state = evolve(state, item[1], item[0])
        else:
            state = evolve(state, item)
    return state


_COUNTS = "_counts"  # where a state keeps its counts (in its __dict__: not a field)


def status_counts(state: RunState) -> Counts:
    """``(moving, paused)`` over the run's steps (``flows.status.step_counts``; a retry is pending while
    ``not_before`` is set): kept by :func:`evolve` as steps move, counted over the steps for a state
    built otherwise."""
    counts: Counts | None = getattr(state, _COUNTS, None)
    if counts is None:
        moving = paused = 0
        for step in state.steps.values():
            m, p = step_counts(step.status, step.not_before)
            moving, paused = moving + m, paused + p
        counts = state.__dict__[_COUNTS] = (moving, paused)
    return counts


def run_status(state: RunState) -> str:
    """Running or paused for a started run that has not ended, its status kept otherwise: the rule
    (``flows.status.run_status_counted``) over the state's own steps."""
    return run_status_counted(state.status, *status_counts(state))


def _with_step(state: RunState, position: int, step_id: str, step: StepState, decides: bool = True) -> RunState:
    """The state after one step's state became ``step``: the one place the fold replaces a step's state,
    so the counts follow every change; ``decides``: the run's status is decided again from them."""
    steps = state.steps.copy()
    before = steps[step_id]
    steps[step_id] = step
    moving, paused = getattr(state, _COUNTS, None) or status_counts(state)
    m0, p0 = step_counts(before.status, before.not_before)
    m1, p1 = step_counts(step.status, step.not_before)
    counts = moving - m0 + m1, paused - p0 + p1
    status = run_status_counted(state.status, *counts) if decides else state.status
    new = replace(state, steps=steps, status=status, version=state.version + 1, position=position)
    new.__dict__[_COUNTS] = counts
    front = state.__dict__.get(_FRONTIER)
    if front is not None:
        if before.status != step.status or before.not_before != step.not_before:
            front = _moved_frontier(front, state, steps, step_id, before, step)
        new.__dict__[_FRONTIER] = front
    return new


def _keep_derived(state: RunState, new: RunState) -> RunState:
    """``new`` (the same steps as ``state``) with what ``state`` derived from its steps: its counts and
    its frontier, the only things a state keeps in its ``__dict__``."""
    new.__dict__.update(state.__dict__)
    return new


def at_position(state: RunState, position: int) -> RunState:
    """The state with its events' last position set (what a commit tells), its counts and frontier kept:
    a step moved by nothing needs no pass over every step again."""
    return _keep_derived(state, replace(state, position=position))


# -- the frontier: the steps a decision looks at -------------------------------------------------

_FRONTIER = "_frontier"  # where a state keeps its frontier (in its __dict__, as its counts)
_PENDING = StepStatus.PENDING.value


def frontier(state: RunState) -> tuple[int, ...]:
    """The indices (in the snapshot's order) of the pending steps a decision must look at: a step with
    no deps, with the ``always`` rule, a retry (``not_before`` set) or with at least one dep ended.

    Any other pending step waits whatever its trigger rule, so a decision passes it by without a
    look (``flows.decide``): in a 20-step chain it looks at one step, not twenty. Kept by the fold
    as steps move (only a moved step and the steps that depend on it can enter or leave it), found
    by a pass over every step for a state built otherwise.
    """
    front: tuple[int, ...] | None = state.__dict__.get(_FRONTIER)
    if front is None:
        steps = state.steps
        front = state.__dict__[_FRONTIER] = tuple(
            i for i, spec in enumerate(state.snapshot.steps) if _in_frontier(spec, steps))
    return front


def _in_frontier(spec: StepSpec, steps: dict[str, StepState]) -> bool:
    st = steps[spec.id]
    if st.status != _PENDING:
        return False
    return bool(st.not_before) or not spec.deps or spec.trigger_rule == "always" or dep_ended(spec, steps)


def dep_ended(spec: StepSpec, steps: dict[str, StepState]) -> bool:
    """Whether at least one of the step's deps has ended: every trigger rule but ``always`` waits until
    one has (a loop, not a generator: asked for each step of the frontier at each decision)."""
    for dep in spec.deps:
        if steps[dep].status in STEP_TERMINAL:
            return True
    return False


def _moved_frontier(front: tuple[int, ...], state: RunState, steps: dict[str, StepState], step_id: str,
                    before: StepState, after: StepState) -> tuple[int, ...]:
    """``front`` after ``step_id`` went from ``before`` to ``after``: only that step can enter or leave it
    as it becomes pending or not (or its retry time moves), and only the steps depending on it as it
    ends or is no longer ended."""
    snapshot = state.snapshot
    graph = snapshot.__dict__.get(_GRAPH) or _graph(snapshot)
    own, dependents = graph.get(step_id, ((), ()))  # (a step the snapshot lacks: a state built by hand)
    specs = snapshot.steps
    was, now = before.status, after.status
    if (was == _PENDING) != (now == _PENDING) or before.not_before != after.not_before:
        for i in own:
            front = _placed(front, i, _in_frontier(specs[i], steps))
    ended = now in STEP_TERMINAL
    if ended != (was in STEP_TERMINAL):
        for i in dependents:  # an ended dep lets a pending step in; one no longer ended may let it out
            front = _placed(front, i, steps[specs[i].id].status == _PENDING if ended else _in_frontier(specs[i], steps))
    return front


def _placed(front: tuple[int, ...], i: int, inside: bool) -> tuple[int, ...]:
    """``front`` with step ``i`` in it or not."""
    if inside == (i in front):
        return front
    return tuple(sorted((*front, i))) if inside else tuple(j for j in front if j != i)


_GRAPH = "_frontier_graph"  # in a snapshot's __dict__: which steps to look at again when one moves


def _graph(snapshot: FlowSnapshot) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """For each step id, the indices of its own step (a repeated id has several) and of the steps that
    depend on it."""
    own: dict[str, list[int]] = {}
    dependents: dict[str, list[int]] = {}
    for i, spec in enumerate(snapshot.steps):
        own.setdefault(spec.id, []).append(i)
        for dep in dict.fromkeys(spec.deps):
            dependents.setdefault(dep, []).append(i)
    graph = {sid: (tuple(own.get(sid, ())), tuple(dependents.get(sid, ()))) for sid in {*own, *dependents}}
    snapshot.__dict__[_GRAPH] = graph
    return graph


def evolve(state: RunState, event: Event, position: int = 0) -> RunState:
    """The state after ``event`` (recorded at ``position``, 0 when unknown).

    Every status comes from ``flows.status``: the run's from the run event
    (:func:`~flows.status.run_status_of`, which an ended run no longer takes),
    a step's from its event (:func:`~flows.status.step_status_of`), and the
    run's after a step moved from :func:`~flows.status.run_status_counted`
    over the counts the fold keeps (:func:`status_counts`). A second
    RunLaunched changes nothing: a run is launched once.
    """
    cls = event.__class__
    on = _ON.get(cls) or next((_ON[c] for c in cls.__mro__ if c in _ON), None)  # a subclass: its base's
    if on is not None:
        new = on(state, event, position or state.position)
    elif state.tasks is not None:  # a task event (flows.tasks.lifecycle folds it; others only count)
        return _task_moved(state, event, position or state.position)
    else:  # an event this fold does not know changes nothing else
        new = replace(state, version=state.version + 1, position=position or state.position)
    if new.steps is state.steps:  # no step changed: the counts and the frontier hold as they were
        _keep_derived(state, new)
    return new


# -- one function per event type (found by the event's class: no chain of isinstance checks) ----


def _step_started(state: RunState, event: StepStarted, position: int) -> RunState:
    step = replace(
        state.steps[event.step_id],
        status=step_status_of(event),
        attempt=event.attempt,
        started_at=event.at,
        not_before=0.0,
        error="",
        persona=event.persona,
        backend=event.backend,
        model=event.model,
        prompt=event.prompt,
        items=event.items,
        item_errors={},
        child_run_id=event.child_run_id,
    )
    return _with_step(state, position, event.step_id, step)


def _step_completed(state: RunState, event: StepCompleted, position: int) -> RunState:
    step = replace(
        state.steps[event.step_id],
        status=step_status_of(event),
        output=event.output,
        fields=event.step_fields(),
        fields_error=event.fields_error,
        ended_at=event.at,
        duration_s=event.duration_s,
    )
    return _with_step(state, position, event.step_id, step)


def _step_failed(state: RunState, event: StepFailed, position: int) -> RunState:
    prev = state.steps[event.step_id]
    step = replace(
        prev,
        status=step_status_of(event),
        error=event.error,
        failures=prev.failures + (not event.lost),
        ended_at=event.at,
        duration_s=event.duration_s,
        not_before=(event.retry_at or event.at) if event.will_retry else prev.not_before,
    )
    return _with_step(state, position, event.step_id, step)


def _step_skipped(state: RunState, event: StepSkipped, position: int) -> RunState:
    step = replace(state.steps[event.step_id], status=step_status_of(event), skip_reason=event.reason,
                   detail=event.detail, ended_at=event.at)
    return _with_step(state, position, event.step_id, step)


def _step_paused(state: RunState, event: StepPaused, position: int) -> RunState:
    step = replace(state.steps[event.step_id], status=step_status_of(event), prompt=event.prompt,
                   started_at=event.at, due_at=event.due_at)
    return _with_step(state, position, event.step_id, step)


def _step_resumed(state: RunState, event: StepResumed, position: int) -> RunState:
    step = replace(state.steps[event.step_id], status=step_status_of(event), output=event.comment,
                   decided_by=event.decided_by, ended_at=event.at, due_at=0.0)
    return _with_step(state, position, event.step_id, step)


def _step_cancelled(state: RunState, event: StepCancelled, position: int) -> RunState:
    step = replace(state.steps[event.step_id], status=step_status_of(event), error=event.reason, ended_at=event.at)
    return _with_step(state, position, event.step_id, step)


def _anomaly(state: RunState, event: AnomalyDetected, position: int) -> RunState:
    prev = state.steps[event.step_id]
    step = replace(prev, anomalies=prev.anomalies + 1, stalls=prev.stalls + (event.kind == "stall"),
                   guidance=event.guidance or prev.guidance)
    return _with_step(state, position, event.step_id, step, decides=False)


def _map_item_completed(state: RunState, event: MapItemCompleted, position: int) -> RunState:
    prev = state.steps[event.step_id]
    errors = prev.item_errors  # a try of this attempt that failed before (the item's retries): done with now
    if event.index in errors:
        errors = {k: v for k, v in errors.items() if k != event.index}
    step = replace(prev, item_outputs={**prev.item_outputs, event.index: event.output}, item_errors=errors)
    return _with_step(state, position, event.step_id, step, decides=False)


def _map_item_failed(state: RunState, event: MapItemFailed, position: int) -> RunState:
    prev = state.steps[event.step_id]
    step = replace(prev, item_errors={**prev.item_errors, event.index: event.error})
    return _with_step(state, position, event.step_id, step, decides=False)


def _run_launched(state: RunState, event: RunLaunched, position: int) -> RunState:
    if state.launched is not None:
        return replace(state, version=state.version + 1, position=position)
    return replace(
        state,
        run_id=event.run_id,
        status=run_status_of(event),
        launched=event,
        steps={spec.id: StepState() for spec in event.snapshot.steps},  # counted at the first step event
        launched_at=event.at,
        tasks=task_run.initial_state(event.snapshot, event.input),
        version=state.version + 1,
        position=position,
    )


def _run_moved(state: RunState, event: Event, position: int, **changes: Any) -> RunState:
    """A run event: the status it sets, with ``changes``; nothing but the version for an ended run."""
    if not takes_run_event(state.status):
        return replace(state, version=state.version + 1, position=position)
    return replace(state, status=run_status_of(event), version=state.version + 1, position=position, **changes)


def _run_queued(state: RunState, event: RunQueued, position: int) -> RunState:
    return _run_moved(state, event, position, queue_reason=event.reason)


def _run_started(state: RunState, event: RunStarted, position: int) -> RunState:
    return _run_moved(state, event, position, queue_reason="", started_at=event.at)


def _run_completed(state: RunState, event: RunCompleted, position: int) -> RunState:
    return _run_moved(state, event, position, ended_at=event.at, report=event.report)


def _run_ended(state: RunState, event: RunFailed | RunRejected | RunCancelled, position: int) -> RunState:
    return _run_moved(state, event, position, ended_at=event.at, reason=event.reason, report=event.report)


def _run_forked(state: RunState, event: RunForked, position: int) -> RunState:
    return replace(state, parent_run_id=event.parent_run_id, forked_from=event.from_step,
                   version=state.version + 1, position=position)


def _run_recovered(state: RunState, event: RunRecovered, position: int) -> RunState:
    return replace(state, recoveries=state.recoveries + 1, version=state.version + 1, position=position)


_ON: dict[type[Event], Callable[[RunState, Any, int], RunState]] = {
    StepStarted: _step_started,
    StepCompleted: _step_completed,
    StepFailed: _step_failed,
    StepSkipped: _step_skipped,
    StepPaused: _step_paused,
    StepResumed: _step_resumed,
    StepCancelled: _step_cancelled,
    AnomalyDetected: _anomaly,
    MapItemCompleted: _map_item_completed,
    MapItemFailed: _map_item_failed,
    RunLaunched: _run_launched,
    RunQueued: _run_queued,
    RunStarted: _run_started,
    RunCompleted: _run_completed,
    RunFailed: _run_ended,
    RunRejected: _run_ended,
    RunCancelled: _run_ended,
    RunForked: _run_forked,
    RunRecovered: _run_recovered,
}


def _task_moved(state: RunState, event: Event, position: int) -> RunState:
    """A task event: the task state moves, and the task's step mirrors its status (flows.tasks.run)."""
    assert state.tasks is not None
    tasks = task_lifecycle.evolve(state.tasks, event)
    moved = [event.step_id] if isinstance(event, TaskEvent) else list(event.step_ids) if isinstance(
        event, TasksPlanned) else []
    folded = state  # each moved step put in by _with_step; the run's status decided once, at the end
    for sid in moved:
        if sid not in tasks.tasks or sid not in state.steps:
            continue
        task = tasks.tasks[sid]
        status, skip_reason = task_run.step_status(task, event)
        changes: dict[str, Any] = dict(status=status, attempt=task.attempt, skip_reason=skip_reason)
        if isinstance(event, TaskStarted):
            changes.update(started_at=event.at, error="", persona=state.spec(sid).persona, backend="tasks")
        elif step_ended(status):
            changes.update(ended_at=event.at, error="" if status == StepStatus.COMPLETED else task.reason)
        if isinstance(event, TaskDone):
            changes["output"] = f"merged {event.merge_commit[:12]}" if event.merge_commit else "nothing to merge"
        if isinstance(event, TaskFailed):
            changes["failures"] = folded.steps[sid].failures + (not event.lost)
            changes["not_before"] = event.at if event.will_retry else 0.0  # retried at once: still running
        elif isinstance(event, TaskStarted):
            changes["not_before"] = 0.0
        if status == StepStatus.PAUSED:
            changes["detail"] = task.reason
        folded = _with_step(folded, position, sid, replace(folded.steps[sid], **changes), decides=False)
    counts = status_counts(folded)
    new = replace(folded, tasks=tasks, status=run_status_counted(state.status, *counts), version=state.version + 1,
                  position=position)
    new.__dict__[_COUNTS] = counts
    return new
