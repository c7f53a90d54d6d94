"""A run's state as a pure fold over its events: ``evolve(state, event) -> state``.

The fold trusts the log: decisions were taken when the events were recorded,
so replay never re-evaluates a condition or a trigger rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain
from operator import attrgetter
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
    StepStatus,
    has_output,
    run_ended,
    run_status_of,
    step_ended,
    step_status_of,
    succeeded,
    takes_run_event,
)
from flows.status import run_status as _run_status
from flows.tasks import lifecycle as task_lifecycle
from flows.tasks import run as task_run


class StepState(msgspec.Struct, frozen=True, kw_only=True):
    """What the log says about one step."""

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
    item_errors: dict[int, str] = {}  # a map step: why items failed, in the current attempt
    child_run_id: str = ""  # a subflow step: its child run

    @property
    def terminal(self) -> bool:
        """Whether the step has reached a final status."""
        return step_ended(self.status)


class RunState(msgspec.Struct, frozen=True, kw_only=True):
    """What the log says about one run. ``version`` is its stream's version."""

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
        return {sid: s.output for sid, s in self.steps.items() if has_output(s.status)}

    def fields(self) -> dict[str, dict[str, Any]]:
        """Frontmatter fields of every completed step."""
        return {sid: s.fields for sid, s in self.steps.items() if succeeded(s.status)}

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


def _step(state: RunState, step_id: str, **changes: Any) -> dict[str, StepState]:
    steps = dict(state.steps)
    steps[step_id] = replace(steps[step_id], **changes)
    return steps


def run_status(state: RunState, steps: dict[str, StepState], moved: str = "") -> str:
    """Running or paused, for a started run that has not ended (the rule: ``flows.status.run_status``).

    ``moved``: the step that just moved, looked at first (a step that started decides it at once,
    without a pass over every step).
    """
    statuses: Iterable[tuple[str, object]] = map(_STATUS_AND_RETRY, steps.values())
    if moved:
        statuses = chain((_STATUS_AND_RETRY(steps[moved]),), statuses)
    return _run_status(state.status, statuses)


_STATUS_AND_RETRY = attrgetter("status", "not_before")  # a retry is pending while not_before is set


def evolve(state: RunState, event: Event, position: int = 0) -> RunState:
    """The state after ``event`` (recorded at ``position``, 0 when unknown).

    Every status comes from ``flows.status``: the run's from the run event
    (:func:`~flows.status.run_status_of`, which an ended run no longer takes),
    a step's from its event (:func:`~flows.status.step_status_of`), and the
    run's after a step moved from :func:`run_status`. A second RunLaunched changes nothing: a run is launched once.
    """
    common: dict[str, Any] = {"version": state.version + 1, "position": position or state.position}
    match event:
        case StepStarted():
            steps = _step(
                state,
                event.step_id,
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
            return replace(state, steps=steps, status=run_status(state, steps, event.step_id), **common)
        case StepCompleted():
            steps = _step(
                state,
                event.step_id,
                status=step_status_of(event),
                output=event.output,
                fields=event.step_fields(),
                fields_error=event.fields_error,
                ended_at=event.at,
                duration_s=event.duration_s,
            )
            return replace(state, steps=steps, status=run_status(state, steps), **common)
        case StepFailed():
            prev = state.steps[event.step_id]
            changes: dict[str, Any] = dict(
                status=step_status_of(event),
                error=event.error,
                failures=prev.failures + (not event.lost),
                ended_at=event.at,
                duration_s=event.duration_s,
            )
            if event.will_retry:
                changes["not_before"] = event.retry_at or event.at
            steps = _step(state, event.step_id, **changes)
            return replace(state, steps=steps, status=run_status(state, steps), **common)
        case StepSkipped():
            steps = _step(
                state, event.step_id, status=step_status_of(event), skip_reason=event.reason, detail=event.detail,
                ended_at=event.at,
            )
            return replace(state, steps=steps, status=run_status(state, steps), **common)
        case StepPaused():
            steps = _step(state, event.step_id, status=step_status_of(event), prompt=event.prompt, started_at=event.at,
                          due_at=event.due_at)
            return replace(state, steps=steps, status=run_status(state, steps), **common)
        case StepResumed():
            steps = _step(
                state,
                event.step_id,
                status=step_status_of(event),
                output=event.comment,
                decided_by=event.decided_by,
                ended_at=event.at,
                due_at=0.0,
            )
            return replace(state, steps=steps, status=run_status(state, steps), **common)
        case StepCancelled():
            steps = _step(state, event.step_id, status=step_status_of(event), error=event.reason, ended_at=event.at)
            return replace(state, steps=steps, status=run_status(state, steps), **common)
        case AnomalyDetected():
            prev = state.steps[event.step_id]
            steps = _step(
                state, event.step_id, anomalies=prev.anomalies + 1, stalls=prev.stalls + (event.kind == "stall"),
                guidance=event.guidance or prev.guidance,
            )
            return replace(state, steps=steps, **common)
        case RunLaunched():
            if state.launched is not None:
                return replace(state, **common)
            steps = {spec.id: StepState() for spec in event.snapshot.steps}
            return replace(
                state,
                run_id=event.run_id,
                status=run_status_of(event),
                launched=event,
                steps=steps,
                launched_at=event.at,
                tasks=task_run.initial_state(event.snapshot, event.input),
                **common,
            )
        case RunQueued() | RunStarted() | RunCompleted() | RunFailed() | RunRejected() | RunCancelled() if (
            not takes_run_event(state.status)
        ):
            return replace(state, **common)
        case RunQueued():
            return replace(state, status=run_status_of(event), queue_reason=event.reason, **common)
        case RunStarted():
            return replace(state, status=run_status_of(event), queue_reason="", started_at=event.at, **common)
        case MapItemCompleted():
            prev = state.steps[event.step_id]
            steps = _step(state, event.step_id, item_outputs={**prev.item_outputs, event.index: event.output})
            return replace(state, steps=steps, **common)
        case MapItemFailed():
            prev = state.steps[event.step_id]
            steps = _step(state, event.step_id, item_errors={**prev.item_errors, event.index: event.error})
            return replace(state, steps=steps, **common)
        case RunForked():
            return replace(state, parent_run_id=event.parent_run_id, forked_from=event.from_step, **common)
        case RunRecovered():
            return replace(state, recoveries=state.recoveries + 1, **common)
        case RunCompleted():
            return replace(state, status=run_status_of(event), ended_at=event.at, report=event.report, **common)
        case RunFailed() | RunRejected() | RunCancelled():
            return replace(state, status=run_status_of(event), ended_at=event.at, reason=event.reason,
                           report=event.report, **common)
    if state.tasks is not None:  # a task event (flows.tasks.lifecycle folds it; others only count)
        return _task_moved(state, event, common)
    return replace(state, **common)  # an event this fold does not know changes nothing else


def _task_moved(state: RunState, event: Event, common: dict[str, Any]) -> RunState:
    """A task event: the task state moves, and the task's step mirrors its status (flows.tasks.run)."""
    assert state.tasks is not None
    tasks = task_lifecycle.evolve(state.tasks, event)
    moved = [event.step_id] if isinstance(event, TaskEvent) else list(event.step_ids) if isinstance(
        event, TasksPlanned) else []
    steps = state.steps
    for sid in moved:
        if sid not in tasks.tasks or sid not in steps:
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
            changes["failures"] = steps[sid].failures + (not event.lost)
            changes["not_before"] = event.at if event.will_retry else 0.0  # retried at once: still running
        elif isinstance(event, TaskStarted):
            changes["not_before"] = 0.0
        if status == StepStatus.PAUSED:
            changes["detail"] = task.reason
        steps = _step(replace(state, steps=steps), sid, **changes)
    return replace(state, tasks=tasks, steps=steps, status=run_status(state, steps), **common)
