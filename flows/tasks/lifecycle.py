"""A task run's lifecycle as a pure fold, the guard on every transition, and the scheduling decision.

- :func:`evolve` folds one event into :class:`TaskRunState`. It trusts the
  log (a recorded event is a fact) and never raises on one.
- :func:`check` says why an event may **not** be appended now (``None``
  when it may): the decide side calls it before every append, so a task
  never starts before its deps are done and is never merged twice, whatever
  asks (a decision, a tool, a person, a retry after a crash). :func:`apply`
  is check-then-evolve.
- :func:`lifecycle` gives each task exactly one status and one reason
  (seed 001): ``new_queued``; ``planned_queued`` with ``deps`` (naming the
  unfinished ones), ``capacity``, ``review`` or ``blocked``; ``inprogress``
  with its phase; then ``done``, ``failed``, ``blocked`` or ``aborted``.
- :func:`decide_tasks` is the coordinator's scheduling: plan what is new,
  abort what can never start, and start ready tasks while there are slots.
  Starvation prevention (seed 001): after it, no planned task is ready while
  a slot is free. Phase moves are not decided here: they follow from what
  the actors report (a commit, a check's exit code, a verdict, a merge).
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
from msgspec.structs import replace

from flows.errors import BatonError
from flows.events import Event
from flows.tasks.events import (
    Answer,
    IntegrationCreated,
    IntegrationRemoved,
    LandingRefused,
    Phase,
    RunLanded,
    TaskAborted,
    TaskAnswered,
    TaskBlocked,
    TaskChecked,
    TaskCleanedUp,
    TaskCommitted,
    TaskDone,
    TaskEvent,
    TaskFailed,
    TaskMergeConflicted,
    TaskMerged,
    TaskMessaged,
    TaskNotified,
    TaskPhaseChanged,
    TaskRebased,
    TaskReviewed,
    TasksPlanned,
    TaskStarted,
    TaskStatus,
    TaskWorktreeCreated,
    WaitReason,
)
from flows.tasks.files import TaskStepSpec

NEXT_PHASES: dict[Phase, frozenset[Phase]] = {
    Phase.WORKTREE: frozenset({Phase.CODER}),
    Phase.CODER: frozenset({Phase.CHECKS}),
    Phase.CHECKS: frozenset({Phase.REVIEW, Phase.CODER}),  # a failing check goes back to the implementor
    Phase.REVIEW: frozenset({Phase.MERGE, Phase.CODER}),  # rejected: back with the review
    Phase.MERGE: frozenset({Phase.CLEANUP, Phase.CODER}),  # conflict: back on the new base
    Phase.CLEANUP: frozenset(),
}
"""The phase machine of one attempt (DESIGN §12's order, with the three ways back to the coder)."""
DEFAULT_MAX_ROUNDS = 3
"""Review rejections before a person is asked (``planned_queued`` with reason ``review``)."""


class TaskState(msgspec.Struct, frozen=True, kw_only=True):
    """What the log says about one task."""

    status: TaskStatus = TaskStatus.NEW_QUEUED
    phase: Phase | None = None
    attempt: int = 0
    round: int = 0
    """Review rounds of the current attempt (1 at the first review)."""
    rejections: int = 0
    reason: str = ""
    """The last error, block reason, abort reason or review that explains the status."""
    review_capped: bool = False
    approved: bool = False
    """The last review of this attempt approved what is on the branch now."""
    worktree: str = ""
    branch: str = ""
    worktree_removed: bool = False
    branch_deleted: bool = False
    branch_head: str = ""
    """The last sha the log knows the branch at (commit, rebase, cleanup)."""
    base: str = ""
    """The integration head the branch was made from (the branch's own work is base..branch_head)."""
    commits: tuple[str, ...] = ()
    merges: int = 0
    merged_head: str = ""
    merge_commit: str = ""
    conflicts: int = 0
    checks_failed: int = 0
    messages: int = 0
    notices: int = 0
    context: str = ""
    """What the next attempt starts with (a person's context after ``retry``)."""
    retries_left: int = 0
    plan_position: int = 0


class TaskRunState(msgspec.Struct, frozen=True, kw_only=True):
    """Every task's state and the pinned graph (deps), folded from the run's task events."""

    specs: dict[str, TaskStepSpec] = {}
    tasks: dict[str, TaskState] = {}
    max_rounds: int = DEFAULT_MAX_ROUNDS
    integration_created: bool = False
    integration_head: str = ""
    """The integration branch's head as the log knows it: the base, then each merge commit."""
    integration_removed: bool = False
    """The run ended and its integration worktree was removed (``IntegrationRemoved``); the branch stays."""
    landing: str = ""
    """``landed`` or ``refused`` once a landing was recorded (``RunLanded`` / ``LandingRefused``), else ``""``."""
    landing_detail: str = ""
    """The commit landed, or why landing was refused."""
    version: int = 0

    def deps(self, task_id: str) -> tuple[str, ...]:
        """The ids ``task_id`` depends on."""
        return self.specs[task_id].deps

    def inprogress(self) -> list[str]:
        """Tasks with an attempt under way (they hold a slot)."""
        return [tid for tid, t in self.tasks.items() if t.status is TaskStatus.INPROGRESS]


class Lifecycle(msgspec.Struct, frozen=True, kw_only=True):
    """One task's status and the one reason for it, as ``/api/plan`` shows it."""

    status: TaskStatus
    reason: str
    """For planned_queued a :class:`WaitReason` value; for inprogress a :class:`Phase` value;
    otherwise a short word (``launched``, ``merged``, ``failed``, ``blocked``, ``aborted``)."""
    detail: str = ""
    waiting_on: tuple[str, ...] = ()
    position: int = 0


class TaskTransitionError(BatonError, ValueError):
    """An event that may not be appended in the task's current state; the message says why."""


def start_state(steps: Iterable[TaskStepSpec], *, max_rounds: int = DEFAULT_MAX_ROUNDS) -> TaskRunState:
    """The state a task run starts in (every task new_queued), from its pinned steps."""
    specs = {s.id: s for s in steps}
    return TaskRunState(specs=specs, tasks={tid: TaskState(retries_left=s.retries) for tid, s in specs.items()},
                        max_rounds=max_rounds)


# -- the fold ---------------------------------------------------------------


def evolve(state: TaskRunState, event: Event) -> TaskRunState:
    """The state after one recorded event; events of other kinds only count."""
    if isinstance(event, IntegrationCreated):
        return replace(state, integration_created=True, integration_head=event.base, version=state.version + 1)
    if isinstance(event, IntegrationRemoved):
        return replace(state, integration_removed=True, version=state.version + 1)
    if isinstance(event, RunLanded):
        return replace(state, landing="landed", landing_detail=event.commit, version=state.version + 1)
    if isinstance(event, LandingRefused):
        return replace(state, landing="refused", landing_detail=event.reason, version=state.version + 1)
    tasks = _fold_task_event(state, event)
    # a merge that changed nothing (``merge_commit=""``) leaves the integration head where it was
    head = event.merge_commit or state.integration_head if isinstance(event, TaskMerged) else state.integration_head
    return replace(state, tasks=tasks if tasks is not None else state.tasks, integration_head=head,
                   version=state.version + 1)


def _fold_task_event(state: TaskRunState, event: Event) -> dict[str, TaskState] | None:
    if isinstance(event, TasksPlanned):
        tasks = dict(state.tasks)
        base = sum(1 for t in tasks.values() if t.plan_position)
        for n, tid in enumerate(event.step_ids, 1):
            if tid in tasks and tasks[tid].status is TaskStatus.NEW_QUEUED:
                tasks[tid] = replace(tasks[tid], status=TaskStatus.PLANNED_QUEUED, plan_position=base + n)
        return tasks
    if not isinstance(event, TaskEvent) or event.step_id not in state.tasks:
        return None
    step_id = event.step_id
    task = state.tasks[step_id]
    changed = _task_after(task, event, state.max_rounds)
    return {**state.tasks, step_id: changed} if changed is not task else None


def _task_after(task: TaskState, event: Event, max_rounds: int) -> TaskState:
    match event:
        case TaskStarted():
            return replace(task, status=TaskStatus.INPROGRESS, phase=Phase.WORKTREE, attempt=event.attempt,
                           round=0, approved=False, reason="", review_capped=False, context=event.context)
        case TaskPhaseChanged():
            # Back to the coder: whatever it changes must be reviewed again.
            return replace(task, phase=event.phase, approved=task.approved and event.phase is not Phase.CODER)
        case TaskWorktreeCreated():
            if event.reused:
                return replace(task, worktree=event.path, branch=event.branch, worktree_removed=False,
                               branch_deleted=False)
            return replace(task, worktree=event.path, branch=event.branch, worktree_removed=False,
                           branch_deleted=False, branch_head=event.base, base=event.base)
        case TaskCommitted():
            return replace(task, commits=(*task.commits, event.commit), branch_head=event.commit)
        case TaskChecked():
            return replace(task, checks_failed=task.checks_failed + (not event.ok))
        case TaskReviewed():
            if event.approved:
                return replace(task, round=event.round, approved=True)
            rejections = task.rejections + 1
            if event.round >= max_rounds:
                return replace(task, round=event.round, rejections=rejections, status=TaskStatus.PLANNED_QUEUED,
                               phase=None, review_capped=True, reason=event.review)
            return replace(task, round=event.round, rejections=rejections, reason=event.review)
        case TaskMerged():
            return replace(task, merges=task.merges + 1, merged_head=event.task_head,
                           merge_commit=event.merge_commit)
        case TaskMergeConflicted():
            return replace(task, conflicts=task.conflicts + 1, reason="conflict in " + ", ".join(event.files))
        case TaskRebased():
            return replace(task, branch_head=event.head)
        case TaskMessaged():
            return replace(task, messages=task.messages + 1)
        case TaskNotified():
            return replace(task, notices=task.notices + 1)
        case TaskBlocked():
            return replace(task, status=TaskStatus.BLOCKED, phase=None, reason=event.reason)
        case TaskAnswered():
            if event.answer is Answer.RETRY:
                return replace(task, status=TaskStatus.PLANNED_QUEUED, phase=None, review_capped=False,
                               context=event.context, reason="")
            return task  # skip and abort are followed by TaskAborted events, which end tasks
        case TaskFailed():
            status = TaskStatus.PLANNED_QUEUED if event.will_retry else TaskStatus.FAILED
            left = task.retries_left - (1 if event.will_retry and not event.lost else 0)
            return replace(task, status=status, phase=None, reason=event.error, retries_left=max(left, 0))
        case TaskDone():
            return replace(task, status=TaskStatus.DONE, phase=None, reason="")
        case TaskAborted():
            return replace(task, status=TaskStatus.ABORTED, phase=None, reason=event.reason, review_capped=False)
        case TaskCleanedUp():
            return replace(task, worktree_removed=task.worktree_removed or event.worktree_removed,
                           branch_deleted=task.branch_deleted or event.branch_deleted,
                           branch_head=event.branch_head or task.branch_head)
    return task


def fold(events: Iterable[Event], state: TaskRunState) -> TaskRunState:
    """Fold ``events`` into ``state`` in order."""
    for event in events:
        state = evolve(state, event)
    return state


# -- the guard ----------------------------------------------------------------


def check(state: TaskRunState, event: Event) -> str | None:
    """Why ``event`` may not be appended in ``state``; ``None`` when it may."""
    if isinstance(event, TasksPlanned):
        for tid in event.step_ids:
            if tid not in state.tasks:
                return f"unknown task {tid!r}"
            if state.tasks[tid].status is not TaskStatus.NEW_QUEUED:
                return f"task {tid!r} is {state.tasks[tid].status.value}, not new_queued"
        return None
    if not isinstance(event, TaskEvent):
        return None  # run-level events (IntegrationCreated, GitCompensated, ...) are not about one task
    step_id = event.step_id
    if step_id not in state.tasks:
        return f"unknown task {step_id!r}"
    task = state.tasks[step_id]
    status, phase = task.status, task.phase
    attempt = getattr(event, "attempt", None)
    if attempt is not None and not isinstance(event, TaskStarted) and attempt != task.attempt:
        return f"task {step_id!r}: attempt {attempt} is not the current attempt {task.attempt}"
    match event:
        case TaskStarted():
            if status is not TaskStatus.PLANNED_QUEUED or task.review_capped:
                why = " (its review rounds ran out: a person answers first)" if task.review_capped else ""
                return f"task {step_id!r} is {status.value}, it cannot start{why}"
            unfinished = [d for d in state.deps(step_id) if state.tasks[d].status is not TaskStatus.DONE]
            if unfinished:
                return f"task {step_id!r} cannot start: {', '.join(unfinished)} not done"
            if task.merges:
                return f"task {step_id!r} is already merged"
            if event.attempt != task.attempt + 1:
                return f"task {step_id!r}: the next attempt is {task.attempt + 1}, not {event.attempt}"
            return None
        case TaskPhaseChanged():
            if status is not TaskStatus.INPROGRESS or phase is None:
                return f"task {step_id!r} is {status.value}, not in progress"
            if event.phase not in NEXT_PHASES[phase]:
                return f"task {step_id!r}: phase {phase.value} cannot go to {event.phase.value}"
            if event.phase is Phase.MERGE and not task.approved:
                return f"task {step_id!r} cannot merge: the last review did not approve it"
            if event.phase is Phase.CLEANUP and not task.merges:
                return f"task {step_id!r} cannot clean up as done: it is not merged"
            return None
        case TaskMessaged():
            return None if status is TaskStatus.INPROGRESS else f"task {step_id!r} is {status.value}, not running"
        case TaskAnswered():
            waiting = status is TaskStatus.BLOCKED or task.review_capped
            return None if waiting else f"task {step_id!r} is {status.value}: there is no question to answer"
        case TaskAborted():
            return f"task {step_id!r} has already ended ({status.value})" if status.terminal else None
        case TaskCleanedUp():
            ok = status.terminal or status is TaskStatus.BLOCKED or task.review_capped or phase is Phase.CLEANUP
            return None if ok else f"task {step_id!r} is {status.value}: its worktree is still in use"
        case TaskFailed() | TaskBlocked():
            return None if status is TaskStatus.INPROGRESS else f"task {step_id!r} is {status.value}, not running"
    if status is not TaskStatus.INPROGRESS:
        return f"task {step_id!r} is {status.value}, not in progress ({type(event).__name__})"
    return _phase_rule(step_id, task, event)


_PHASE_OF: dict[type[Event], tuple[Phase, ...]] = {
    TaskWorktreeCreated: (Phase.WORKTREE,),
    TaskCommitted: (Phase.CODER, Phase.CHECKS),
    TaskNotified: (Phase.CODER,),
    TaskChecked: (Phase.CHECKS,),
    TaskReviewed: (Phase.REVIEW,),
    TaskMerged: (Phase.MERGE,),
    TaskMergeConflicted: (Phase.MERGE,),
    TaskRebased: (Phase.MERGE, Phase.CODER),
    TaskDone: (Phase.CLEANUP,),
}


def _phase_rule(step_id: str, task: TaskState, event: Event) -> str | None:
    phases = _PHASE_OF.get(type(event))
    if phases is not None and task.phase not in phases:
        shown = task.phase.value if task.phase else "none"
        return f"task {step_id!r}: {type(event).__name__} belongs to phase {phases[0].value}, not {shown}"
    if isinstance(event, TaskMerged) and task.merges:
        return f"task {step_id!r} is already merged (at {task.merge_commit[:12]}); it is never merged twice"
    if isinstance(event, TaskReviewed) and event.round != task.round + 1:
        return f"task {step_id!r}: the next review round is {task.round + 1}, not {event.round}"
    if isinstance(event, TaskDone) and not task.merges:
        return f"task {step_id!r} is not merged"
    return None


def apply(state: TaskRunState, event: Event) -> TaskRunState:
    """``evolve`` after :func:`check`; raises :class:`TaskTransitionError` with the reason."""
    problem = check(state, event)
    if problem is not None:
        raise TaskTransitionError(problem)
    return evolve(state, event)


# -- the view -------------------------------------------------------------------


def lifecycle(state: TaskRunState, task_id: str, free_slots: int) -> Lifecycle:
    """Task ``task_id``'s one status and its one reason; ``free_slots`` is what the run may still start."""
    task = state.tasks[task_id]
    status = task.status
    if status is TaskStatus.NEW_QUEUED:
        return Lifecycle(status=status, reason="launched", detail="not yet taken into the plan")
    if status is TaskStatus.INPROGRESS:
        assert task.phase is not None, "an attempt in progress is always in a phase"
        return Lifecycle(status=status, reason=task.phase.value, detail=f"attempt {task.attempt}",
                         position=task.plan_position)
    if status is TaskStatus.PLANNED_QUEUED:
        return _waiting(state, task_id, task, free_slots)
    words = {TaskStatus.DONE: "merged", TaskStatus.FAILED: "failed", TaskStatus.BLOCKED: "blocked",
             TaskStatus.ABORTED: "aborted"}
    detail = task.merge_commit if status is TaskStatus.DONE else task.reason
    return Lifecycle(status=status, reason=words[status], detail=detail, position=task.plan_position)


def _waiting(state: TaskRunState, task_id: str, task: TaskState, free_slots: int) -> Lifecycle:
    pos = task.plan_position
    if task.review_capped:
        return Lifecycle(status=task.status, reason=WaitReason.REVIEW.value, position=pos,
                         detail=f"rejected in {task.round} review rounds; a person decides")
    deps = state.deps(task_id)
    stuck = tuple(d for d in deps if state.tasks[d].status is not TaskStatus.DONE
                  and (state.tasks[d].status in (TaskStatus.BLOCKED, TaskStatus.FAILED, TaskStatus.ABORTED)
                       or state.tasks[d].review_capped))
    if stuck:
        return Lifecycle(status=task.status, reason=WaitReason.BLOCKED.value, waiting_on=stuck, position=pos,
                         detail="waits for a person's answer on " + ", ".join(stuck))
    unfinished = tuple(d for d in deps if state.tasks[d].status is not TaskStatus.DONE)
    if unfinished:
        return Lifecycle(status=task.status, reason=WaitReason.DEPS.value, waiting_on=unfinished, position=pos,
                         detail="waits for " + ", ".join(unfinished))
    detail = "every slot is taken" if free_slots <= 0 else "ready: starts at the next decision"
    return Lifecycle(status=task.status, reason=WaitReason.CAPACITY.value, detail=detail, position=pos)


def plan(state: TaskRunState, free_slots: int) -> dict[str, Lifecycle]:
    """Every task's lifecycle (what ``/api/plan`` and ``plan_updated`` frames carry for a task run)."""
    return {tid: lifecycle(state, tid, free_slots) for tid in state.tasks}


# -- the decision -------------------------------------------------------------------


def ready(state: TaskRunState) -> list[str]:
    """Planned tasks whose deps are all done, in plan order (the ones a free slot would start)."""
    out = [tid for tid, t in state.tasks.items()
           if t.status is TaskStatus.PLANNED_QUEUED and not t.review_capped
           and all(state.tasks[d].status is TaskStatus.DONE for d in state.deps(tid))]
    return sorted(out, key=lambda tid: (state.tasks[tid].plan_position, tid))


def decide_tasks(state: TaskRunState, slots: int, *, now: float = 0.0) -> list[Event]:
    """Plan new tasks, abort those that can never start, start ready ones while slots allow.

    ``slots`` is how many tasks of this run may be in progress at once (the
    scheduler's grant, within ``BATON_AGENT_SLOTS``). Deterministic: the same
    state gives the same events.
    """
    events: list[Event] = []
    new = [tid for tid, t in state.tasks.items() if t.status is TaskStatus.NEW_QUEUED]
    if new:
        order = {tid: n for n, tid in enumerate(state.specs)}  # the pinned steps are in wave order
        events.append(TasksPlanned(step_ids=sorted(new, key=order.__getitem__), at=now))
        state = evolve(state, events[-1])
    for tid in _doomed(state):
        dead = [d for d in state.deps(tid) if state.tasks[d].status in (TaskStatus.FAILED, TaskStatus.ABORTED)]
        events.append(TaskAborted(step_id=tid, reason=f"upstream {', '.join(dead)} did not finish", by="baton",
                                  at=now))
        state = evolve(state, events[-1])
    free = slots - len(state.inprogress())
    for tid in ready(state)[: max(free, 0)]:
        events.append(TaskStarted(step_id=tid, attempt=state.tasks[tid].attempt + 1, context=state.tasks[tid].context,
                                  at=now))
    return events


def _doomed(state: TaskRunState) -> list[str]:
    """Queued tasks that can never start: a dep failed or was aborted (transitively, in one pass per call)."""
    dead = {tid for tid, t in state.tasks.items() if t.status in (TaskStatus.FAILED, TaskStatus.ABORTED)}
    out: list[str] = []
    changed = True
    while changed:
        changed = False
        for tid, t in state.tasks.items():
            if tid in dead or t.status not in (TaskStatus.NEW_QUEUED, TaskStatus.PLANNED_QUEUED):
                continue
            if any(d in dead for d in state.deps(tid)):
                dead.add(tid)
                out.append(tid)
                changed = True
    return out


def answer_events(state: TaskRunState, task_id: str, answer: Answer, *, context: str = "", by: str = "",
                  now: float = 0.0) -> list[Event]:
    """The events of a person's answer to a blocked task (raises :class:`TaskTransitionError` when none is due).

    ``skip`` ends the task as aborted; ``abort`` ends every task that has not
    ended (the actors then stop the running ones and clean up).
    """
    answered = TaskAnswered(step_id=task_id, answer=answer, context=context, by=by, at=now)
    problem = check(state, answered)
    if problem:
        raise TaskTransitionError(problem)
    events: list[Event] = [answered]
    if answer is Answer.SKIP:
        events.append(TaskAborted(step_id=task_id, reason=f"skipped by {by or 'a person'}", by=by, at=now))
    elif answer is Answer.ABORT:
        events += [TaskAborted(step_id=tid, reason=f"run aborted by {by or 'a person'}", by=by, at=now)
                   for tid, t in state.tasks.items() if not t.status.terminal]
    return events
