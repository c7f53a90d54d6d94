"""A task run inside the engine's run: the glue between ``RunState`` and the task lifecycle (pure).

A task run is a run whose pinned steps are all of kind ``task`` (DESIGN §12).
Its ``RunState`` carries a :class:`~flows.tasks.lifecycle.TaskRunState`
folded from the same stream (``RunState.tasks``), and each task's step
status mirrors the task's lifecycle status (:func:`step_status`), so what
reads steps (the run's status rule, its outcome, the runs list) needs no
second rule. What decides for a task run is here, behind ``flows.decide``:

- :func:`decide_run` plans new tasks, aborts those that can never start and
  lists the ready ones (they wait for an agent slot like agent steps);
- :func:`start` turns granted slots into ``TaskStarted``;
- :func:`recover` fails the attempts a crash lost (retried, not counted);
- :func:`refusal` is the guard (``lifecycle.check``) over a batch;
- :func:`landing_gate` and :func:`open_gate`: a task run launched with a
  target ends with an approval step (:data:`LAND_STEP`, pinned at launch
  after the tasks). Once every task has ended it opens: paused for a person
  when every task merged and something changed, skipped otherwise (the branch
  is kept). Approved, the actors land (fast-forward only, one
  compare-and-swap: ``RunLanded`` or ``LandingRefused``) and the run
  completes; rejected, the run ends rejected with the branch kept
  (``flows.decide`` sequences it, the approval machinery decides it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from flows.events import (
    Answer,
    Event,
    StepPaused,
    StepSkipped,
    TaskAborted,
    TaskAnswered,
    TaskBlocked,
    TaskDone,
    TaskFailed,
    TaskReviewed,
    TaskStarted,
)
from flows.kinds import StepKind
from flows.model import FlowSnapshot, StepSpec
from flows.tasks.events import TaskStatus
from flows.tasks.files import TaskStepSpec
from flows.tasks.lifecycle import (
    DEFAULT_MAX_ROUNDS,
    TaskRunState,
    TaskState,
    check,
    decide_tasks,
    evolve,
    ready,
    start_state,
)
from flows.tasks.lifecycle import plan as lifecycle_plan
from flows.tasks.reconcile import integration_branch

MAX_ROUNDS_INPUT = "max_rounds"
"""The run input that pins the review rounds before a person is asked (``BATON_TASK_MAX_ROUNDS``)."""


LAND_STEP = "land"
"""The id of a task run's landing gate (an approval step; reserved as a task id: ``flows.tasks.files``)."""


def is_gate(spec: StepSpec) -> bool:
    """Whether a pinned step is a task run's landing gate."""
    return spec.id == LAND_STEP and spec.kind == StepKind.APPROVAL


def is_task_run(snapshot: FlowSnapshot) -> bool:
    """Whether the pinned graph is a task graph (its steps are tasks, and perhaps the landing gate)."""
    return (any(s.kind == StepKind.TASK for s in snapshot.steps)
            and all(s.kind == StepKind.TASK or is_gate(s) for s in snapshot.steps))


def landing_gate(tasks: Sequence[StepSpec], target: str, *, timeout_s: float = 0.0,
                 on_timeout: str = "") -> StepSpec:
    """The approval a task run with a target ends with, after its leaf tasks (pinned at launch)."""
    needed = {d for s in tasks for d in s.deps}
    return StepSpec(id=LAND_STEP, kind=StepKind.APPROVAL, label=f"land on {target}",
                    deps=tuple(s.id for s in tasks if s.id not in needed), timeout_s=timeout_s,
                    on_timeout=on_timeout,
                    prompt=f"Land the integration branch on {target} (fast-forward only)?")


def open_gate(tasks: TaskRunState, spec: StepSpec, *, run_id: str, target: str, now: float) -> Event:
    """The gate's event once every task has ended: paused for a person when every task merged and
    something changed; skipped otherwise (``upstream_failed`` when a task did not finish, ``condition``
    when nothing changed), the integration branch kept either way."""
    branch = integration_branch(run_id)
    unfinished = [tid for tid, t in tasks.tasks.items() if t.status is not TaskStatus.DONE]
    if unfinished:
        return StepSkipped(step_id=spec.id, reason="upstream_failed", at=now,
                           detail=f"not landed: {', '.join(unfinished)} did not finish; {branch} is kept")
    merged = [tid for tid, t in tasks.tasks.items() if t.merge_commit]
    if not merged:
        return StepSkipped(step_id=spec.id, reason="condition", at=now,
                           detail=f"nothing to land: no task changed anything ({target} stays as it is)")
    head = tasks.integration_head
    prompt = (f"Every task is merged into {branch}" + (f" (at {head[:12]})" if head else "")
              + f": {len(merged)} of {len(tasks.tasks)} changed something. Approve to fast-forward {target} "
              f"to it (fast-forward only: otherwise it is refused with the reason and the branch kept); "
              f"reject to keep the branch and end the run rejected.")
    return StepPaused(step_id=spec.id, prompt=prompt, at=now,
                      due_at=now + spec.timeout_s if spec.timeout_s else 0.0)


def task_spec(spec: StepSpec) -> TaskStepSpec:
    """A pinned step as the lifecycle reads it."""
    return msgspec.convert(msgspec.to_builtins(spec), TaskStepSpec)


def initial_state(snapshot: FlowSnapshot, inputs: Mapping[str, Any]) -> TaskRunState | None:
    """The task state a run starts with, or None for a run that is not a task run."""
    if not is_task_run(snapshot):
        return None
    rounds = inputs.get(MAX_ROUNDS_INPUT, DEFAULT_MAX_ROUNDS)
    max_rounds = rounds if isinstance(rounds, int) and rounds >= 1 else DEFAULT_MAX_ROUNDS
    return start_state([task_spec(s) for s in snapshot.steps if s.kind == StepKind.TASK], max_rounds=max_rounds)


def step_status(task: TaskState, event: Event | None = None) -> tuple[str, str]:
    """``(step status, skip reason)`` a task's lifecycle status gives its step.

    Blocked, or waiting after its review rounds ran out, is ``paused`` (a
    person is asked); an abort the coordinator decided because an upstream
    cannot finish is a skip (``upstream_failed``); a person's abort is a
    cancel. Both fail the run if the task is a leaf (flows.status).
    """
    status = task.status
    if status is TaskStatus.INPROGRESS:
        return "running", ""
    if status is TaskStatus.BLOCKED or (status is TaskStatus.PLANNED_QUEUED and task.review_capped):
        return "paused", ""
    if status in (TaskStatus.NEW_QUEUED, TaskStatus.PLANNED_QUEUED):
        return "pending", ""
    if status is TaskStatus.DONE:
        return "completed", ""
    if status is TaskStatus.FAILED:
        return "failed", ""
    if isinstance(event, TaskAborted) and event.by == "baton":
        return "skipped", "upstream_failed"
    return "cancelled", ""


def step_move(event: Event) -> tuple[str, str] | None:
    """``(step status, skip reason)`` a task event gives its task's step, from the event alone; None when
    it does not move the step. What the projector applies; it agrees with :func:`step_status` over the fold
    (tests/unit/test_task_run_state.py checks it on every event of whole runs)."""
    match event:
        case TaskStarted():
            return "running", ""
        case TaskBlocked():
            return "paused", ""
        case TaskReviewed() if not event.approved and event.capped:
            return "paused", ""
        case TaskAnswered() if event.answer is Answer.RETRY:
            return "pending", ""
        case TaskFailed():
            return ("pending", "") if event.will_retry else ("failed", "")
        case TaskDone():
            return "completed", ""
        case TaskAborted():
            return ("skipped", "upstream_failed") if event.by == "baton" else ("cancelled", "")
    return None


def decide_run(tasks: TaskRunState) -> tuple[list[Event], list[str], bool]:
    """``(events, ready task ids, finished)``: plan and abort now; ready tasks wait for slots."""
    events = decide_tasks(tasks, 0)  # no slot here: starts follow the scheduler's grants (start)
    after = tasks
    for event in events:
        after = evolve(after, event)
    finished = all(t.status.terminal for t in after.tasks.values())
    return events, [] if finished else ready(after), finished


def start(tasks: TaskRunState, task_ids: Iterable[str], now: float) -> list[Event]:
    """``TaskStarted`` for granted tasks still ready (the guard decides: never early, never twice)."""
    events: list[Event] = []
    for tid in task_ids:
        task = tasks.tasks.get(tid)
        if task is None:
            continue
        started = TaskStarted(step_id=tid, attempt=task.attempt + 1, context=task.context, at=now)
        if check(tasks, started) is None:
            events.append(started)
            tasks = evolve(tasks, started)
    return events


def recover(tasks: TaskRunState, now: float) -> list[Event]:
    """After a restart: every attempt in progress was lost; it is tried again (a lost attempt costs no retry).

    Not one whose merge is recorded: it is never merged again; its cleanup is finished instead
    (``actors.run_tasks.resume_merged``).
    """
    return [TaskFailed(step_id=tid, attempt=t.attempt, error="lost: the process running it stopped",
                       will_retry=True, lost=True, at=now)
            for tid, t in tasks.tasks.items() if t.status is TaskStatus.INPROGRESS and not t.merges]


def plan_view(tasks: TaskRunState, free_slots: int) -> dict[str, dict[str, Any]]:
    """Each task's entry in the plan (seed 001: one status and one reason): ``{task: {status, reason,
    detail, waiting_on, phase}}``, what ``GET /api/plan`` and the ``plan_updated`` / ``plan_delta`` frames
    carry under a task run's ``tasks``."""
    views = lifecycle_plan(tasks, free_slots)
    out: dict[str, dict[str, Any]] = {}
    for tid, v in views.items():
        phase = tasks.tasks[tid].phase
        out[tid] = {"status": v.status.value, "reason": v.reason, "detail": v.detail,
                    "waiting_on": list(v.waiting_on), "phase": phase.value if phase else None}
    return out


def abort_all(tasks: TaskRunState, reason: str, *, by: str, now: float) -> list[Event]:
    """``TaskAborted`` for every task not ended, each the guard allows (the run is cancelled: no task goes on;
    their worktrees are removed and their unmerged branches kept after the run's end, ``actors.run_tasks``)."""
    events: list[Event] = []
    for tid, task in tasks.tasks.items():
        if task.status.terminal:
            continue
        aborted = TaskAborted(step_id=tid, reason=reason, by=by, at=now)
        if check(tasks, aborted) is None:
            events.append(aborted)
            tasks = evolve(tasks, aborted)
    return events


def refusal(tasks: TaskRunState, events: Iterable[Event]) -> str | None:
    """Why one of ``events`` may not be appended after the ones before it; None when all may."""
    for event in events:
        problem = check(tasks, event)
        if problem is not None:
            return problem
        tasks = evolve(tasks, event)
    return None


__all__ = ["LAND_STEP", "MAX_ROUNDS_INPUT", "abort_all", "decide_run", "initial_state", "is_gate", "is_task_run", "landing_gate",
           "open_gate", "plan_view", "recover", "refusal", "start", "step_move", "step_status", "task_spec"]
