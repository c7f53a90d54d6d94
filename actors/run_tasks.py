"""What a RunActor does for a task run (DESIGN §12): start attempts, append their events, people's words.

Functions of the :class:`actors.run.RunActor` (its handlers call them on its
thread), kept apart so the run actor's own file stays about every run. The rule is the run actor's: load, decide,
append, act. Every task event, whoever asks for it (an attempt's thread, a
person, a decision), passes the lifecycle guard (``flows.tasks.run.refusal``,
i.e. ``lifecycle.check``) before it is staged, so nothing starts a task
early, merges it twice or answers a question nobody asked.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from msgspec.structs import replace

from actors import messages as m
from actors import task_runs
from actors.agents import CancelToken
from actors.agents.toolloop import PersonMessage
from actors.errors import TaskCommandRefused
from actors.step import Answer, Attempt, Call, StepActor
from actors.task_attempt import TaskAttempt, TaskEnv, check_inputs, forget_machinery, machinery
from actors.task_runs import reconciliation
from flows import anomaly
from flows.errors import BatonError
from flows.events import Answer as TaskAnswer
from flows.events import (
    Event,
    IntegrationCreated,
    IntegrationRemoved,
    LandingRefused,
    Phase,
    TaskAborted,
    TaskEvent,
    TaskFailed,
    TaskMessaged,
    TasksPlanned,
    TaskStarted,
    ToolResult,
)
from flows.kinds import StepKind
from flows.redact import redactor
from flows.tasks import run as task_run
from flows.tasks.lifecycle import TaskTransitionError, answer_events
from flows.tasks.lifecycle import evolve as task_evolve
from flows.text import check_text, encodable_fields

if TYPE_CHECKING:
    from actors.run import RunActor

log = logging.getLogger(__name__)

TASK_ACTIONS = ("message", "abort", "retry", "skip")
"""What a person may say to one task (routes ``POST /api/runs/{id}/steps/{step}/<action>``)."""


def start_task(actor: RunActor, event: TaskStarted, *, finish_merged: bool = False,
               abandon_only: bool = False) -> None:
    """Run the attempt ``event`` accepted on the step pool (``finish_merged``: only its cleanup is left)."""
    ctx, state = actor.ctx, actor.state
    attempt = Attempt(event.step_id, event.attempt, StepKind.TASK, CancelToken(), time.monotonic(),
                      ctx.clock.now())
    env: TaskEnv | None = getattr(ctx, "tasks", None)
    launched = state.launched
    assert launched is not None and state.tasks is not None
    problem = "this engine has no task settings (BATON_WORKTREES)" if env is None else (
        env.refusal or check_inputs(dict(launched.input)))
    if problem:
        actor._refuse(attempt, problem)
        return
    assert env is not None
    if event.step_id in actor.held:
        step_id = event.step_id
        attempt.release = lambda: actor._tell_orchestrator(m.ReleaseSlots(actor.run_id, held=(step_id,)))
    run_ref, step_id, number = actor.actor_ref, event.step_id, event.attempt

    def append(events: list[Event]) -> None:
        reply: Future[Any] = Future()
        # (a model's review, a command's output: as the store can encode them, flows.text.encodable)
        run_ref.tell(m.TaskEvents(step_id, number, [encodable_fields(e) for e in events], reply))
        reply.result(timeout=max(ctx.config.ask_timeout_s, 30.0))

    task = TaskAttempt(run_id=actor.run_id, spec=state.spec(step_id), attempt=number, context=event.context,
                       inputs=dict(launched.input), model=launched.model, max_rounds=state.tasks.max_rounds,
                       integration_created=state.tasks.integration_created, env=env, append=append,
                       finish_merged=finish_merged, merge_commit=state.tasks.tasks[step_id].merge_commit,
                       in_cleanup=state.tasks.tasks[step_id].phase is Phase.CLEANUP, abandon_only=abandon_only)
    actor.task_inboxes[step_id] = task.inbox
    actor.task_attempts[step_id] = task

    def run(token: CancelToken, delta: Any) -> Answer:
        return Answer(task.run(token))

    actor.attempts[step_id] = attempt
    StepActor(actor.actor_ref, attempt, Call(run, "the task"), run_id=actor.run_id, bus=ctx.bus, clock=ctx.clock,
              redact=redactor(ctx.config.known_secrets)).start(ctx.steps)

def on_task_events(actor: RunActor, msg: m.TaskEvents) -> None:
    """An attempt's events: guarded, appended at once (the attempt waits for them to be durable)."""
    assert actor.state.tasks is not None
    now = actor.ctx.clock.now()  # the attempt's thread does not stamp: the engine's clock decides `at`
    events = [e if e.at else replace(e, at=now) for e in msg.events
              if not (isinstance(e, IntegrationCreated) and actor.state.tasks.integration_created)]
    problem = task_run.refusal(actor.state.tasks, events) if not actor.stopped else "the run's actor stopped"
    if problem is not None:
        _fail(msg.reply, TaskTransitionError(problem))
        return
    actor._stage([*events, *_watch_tools(actor, msg.step_id, msg.attempt, events, now)])
    recorded = actor._flush(reply=msg.reply)
    if recorded is not None:
        _resolve(msg.reply, recorded[-1].position if recorded else actor.state.position)

def _watch_tools(actor: RunActor, step_id: str, attempt: int, events: list[Event], now: float) -> list[Event]:
    """The anomaly watch over a batch of a task's calls (DESIGN §11), per agent of the attempt (the
    implementor's and the reviewer's calls are tallied apart): ``AnomalyDetected`` to append after them."""
    found: list[Event] = []
    for role in dict.fromkeys(e.role for e in events if isinstance(e, ToolResult)):
        results = [e for e in events if isinstance(e, ToolResult) and e.role == role]
        key = f"{step_id}\0{role}"  # not a step id: a task's agents keep tallies of their own
        before = actor.tool_tallies.get(key, anomaly.ToolTally())
        if before.attempt != attempt:
            before = anomaly.ToolTally(attempt=attempt)
        after = actor.tool_tallies[key] = anomaly.tally_tools(before, attempt, results)
        found += anomaly.after_task_tool_results(actor.state, step_id, attempt, role or "implementor", before,
                                                 after, results, now)
    return found


def on_task_command(actor: RunActor, msg: m.TaskCommand) -> None:
    """A person's message, abort, retry or skip of one task."""
    actor.actor, actor.cause = msg.by or "anonymous", f"command:task-{msg.action}"
    try:
        events = _command_events(actor, msg)
    except (BatonError, ValueError) as exc:
        _fail(msg.reply, exc)
        actor.actor = actor.cause = ""
        actor._report_idle()
        return
    actor._stage(events)
    recorded = actor._commit(reply=msg.reply)  # recorded now; decided after the acts below (an abort's
    if recorded is None:                       # cleanup must be under way before the run may end)
        return
    _resolve(msg.reply, recorded[0].position if recorded else actor.state.position)
    if msg.action == "message":
        inbox = actor.task_inboxes.get(msg.step_id)
        if inbox is not None:
            inbox.put(PersonMessage(msg.text, msg.by))
    for event in events:
        if not isinstance(event, TaskAborted):
            continue
        if event.step_id in actor.attempts:
            # Stopped, not forgotten: the attempt cleans up (salvage, branch kept) and then reports.
            actor.attempts[event.step_id].token.cancel()
            continue
        task = actor.state.tasks.tasks[event.step_id] if actor.state.tasks else None
        if task is not None and task.worktree and not task.worktree_removed:  # aborted while it waited
            start_task(actor, TaskStarted(step_id=event.step_id, attempt=task.attempt, at=event.at),
                       abandon_only=True)
    actor._flush()


def _command_events(actor: RunActor, msg: m.TaskCommand) -> list[Event]:
    state = actor.state
    if state.tasks is None or state.launched is None:
        raise TaskCommandRefused(f"run {actor.run_id} is not a task run")
    if state.terminal:
        raise TaskCommandRefused(f"run {actor.run_id} has ended ({state.status})")
    if msg.step_id not in state.tasks.tasks:
        raise TaskCommandRefused(f"run {actor.run_id} has no task {msg.step_id!r}; its tasks are "
                                 + ", ".join(state.tasks.tasks))
    check_text("text", msg.text)
    now = actor.ctx.clock.now()
    events: list[Event]
    if msg.action == "message":
        if not msg.text.strip():
            raise TaskCommandRefused("a message needs a text")
        events = [TaskMessaged(step_id=msg.step_id, text=msg.text, by=msg.by, at=now)]
    elif msg.action == "abort":
        reason = f"aborted by {msg.by or 'a person'}" + (f": {msg.text}" if msg.text else "")
        events = [TaskAborted(step_id=msg.step_id, reason=reason, by=msg.by, at=now)]
    elif msg.action in ("retry", "skip"):
        return answer_events(state.tasks, msg.step_id, TaskAnswer(msg.action), context=msg.text, by=msg.by,
                             now=now)
    else:
        raise TaskCommandRefused(f"unknown task action {msg.action!r}; actions are {', '.join(TASK_ACTIONS)}")
    problem = task_run.refusal(state.tasks, events)
    if problem is not None:
        raise TaskTransitionError(problem)
    return events

def task_result(actor: RunActor, msg: m.StepResult) -> None:
    """The attempt's thread returned: the slot is free; an error it raised fails the attempt."""
    actor._end_attempt(msg.step_id)
    actor.task_inboxes.pop(msg.step_id, None)
    actor.task_attempts.pop(msg.step_id, None)
    tasks = actor.state.tasks
    ended = tasks.tasks.get(msg.step_id) if tasks is not None else None
    if (ended is not None and ended.status.value == "aborted" and ended.worktree and not ended.worktree_removed
            and ended.attempt == msg.attempt):
        # Aborted after the attempt had ended its work (blocked) but before it reported back: the abort found
        # it still listed, so only cancelled it; its worktree is removed now, its branch kept.
        start_task(actor, TaskStarted(step_id=msg.step_id, attempt=msg.attempt, at=actor.ctx.clock.now()),
                   abandon_only=True)
        actor._queue_flush()
        return
    if msg.cancelled or not msg.failed or tasks is None:
        actor._queue_flush()
        return
    task = tasks.tasks.get(msg.step_id)
    if task is None or task.attempt != msg.attempt or task.status.value != "inprogress":
        actor._queue_flush()
        return
    error = redactor(actor.ctx.config.known_secrets)(msg.error)
    log.info("task %s of run %s failed: %s", msg.step_id, actor.run_id, error)
    final = task.retries_left <= 0
    actor._stage([TaskFailed(step_id=msg.step_id, attempt=msg.attempt, error=error, will_retry=not final,
                             at=actor.ctx.clock.now())])
    actor._queue_flush()  # queued first: the failure is recorded before the cleanup below can append
    if final and task.worktree and not task.worktree_removed:  # no retry will use it: remove it, keep the branch
        start_task(actor, TaskStarted(step_id=msg.step_id, attempt=msg.attempt, at=actor.ctx.clock.now()),
                   abandon_only=True)


def publish(actor: RunActor, events: list[Event]) -> None:
    """``task_updated`` frames: one per task an event moved, with its status and phase; and the run's plan
    entry's ``tasks`` (the orchestrator's plan, so ``plan_delta`` frames carry them) when they changed."""
    tasks = actor.state.tasks
    if tasks is None:
        return
    if any(isinstance(e, (TaskEvent, TasksPlanned)) for e in events):
        view = task_run.plan_view(tasks, 0 if actor.requested else 1)  # asked for and not granted: no slot
        if view != actor.task_view:
            actor.task_view = view
            actor._tell_orchestrator(m.TasksChanged(actor.run_id, view))
    if actor.ctx.bus is None:
        return
    for sid in dict.fromkeys(getattr(e, "step_id", "") for e in events):
        task = tasks.tasks.get(sid)
        if task is None:
            continue
        actor.ctx.bus.publish({"type": "task_updated", "run_id": actor.run_id, "step_id": sid,
                              "status": task.status.value, "phase": task.phase.value if task.phase else "",
                              "attempt": task.attempt, "reason": task.reason[:500]})



def reconcile_at_recovery(actor: RunActor) -> None:
    """Before a task run's lost attempts are failed: git against the log (docs/TASKS.md §7), as events.

    A merge git made that the log missed is recorded (never redone), half
    merges are undone, stale locks removed; what the guard refuses is left
    out (and logged): reconciliation never moves a task the log forbids.
    """
    env: TaskEnv | None = getattr(actor.ctx, "tasks", None)
    state = actor.state
    if env is None or state.tasks is None:
        return
    try:
        lines, events = reconciliation(state, env, now=actor.ctx.clock.now())
    except Exception as exc:  # noqa: BLE001  (git away or the repository moved: recovery goes on; cleanup later)
        log.warning("run %s: reconciliation at recovery failed: %s", actor.run_id, exc)
        return
    for line in lines:
        log.info("run %s: reconciliation: %s", actor.run_id, line)
    tasks = state.tasks
    kept: list[Event] = []
    for event in events:
        problem = task_run.refusal(tasks, [event])
        if problem is not None:
            log.warning("run %s: reconciliation's %s left out: %s", actor.run_id, type(event).__name__, problem)
            continue
        kept.append(event)
        tasks = task_evolve(tasks, event)
    actor._stage(kept)


def resume_merged(actor: RunActor) -> None:
    """Attempts in progress whose merge is recorded but no thread runs (recovered): finish their cleanup."""
    tasks = actor.state.tasks
    if tasks is None or actor.state.terminal or actor.stopped:
        return
    for tid, task in tasks.tasks.items():
        if task.status.value == "inprogress" and task.merges and tid not in actor.attempts:
            start_task(actor, TaskStarted(step_id=tid, attempt=task.attempt, at=actor.ctx.clock.now()),
                       finish_merged=True)


def land_at_gate(actor: RunActor) -> None:
    """The landing gate was approved and no landing is recorded (``Decision.land``): land now.

    The approval (``StepResumed``) is the intent, recorded before git acts; the landing is one
    compare-and-swap of the target ref, and its fact (``RunLanded`` / ``LandingRefused``) is staged
    here and appended by the next flush, after which the run finishes. Killed in between, the run is
    recovered with the gate approved and no landing: this runs again and finds the target already at
    the integration head (recorded as landed, never moved twice).
    """
    state = actor.state
    assert state.launched is not None
    env: TaskEnv | None = getattr(actor.ctx, "tasks", None)
    target = str(state.launched.input.get("target", ""))
    now = actor.ctx.clock.now()
    event: Event
    if env is None:
        event = LandingRefused(target=target, reason="this engine has no task settings (BATON_WORKTREES)", at=now)
    else:
        try:
            event = task_runs.landing(state, env, target, now)
        except Exception as exc:  # noqa: BLE001  (git away, a timeout: the branch is kept, the reason given)
            log.warning("run %s: landing on %s failed: %s", actor.run_id, target, exc)
            event = LandingRefused(target=target, reason=f"landing failed: {exc}", at=now)
    actor._stage([event])
    actor._queue_flush()


def clean_up_after_cancel(actor: RunActor) -> None:
    """A cancelled task run has ended (its tasks aborted in the cancel's batch, their attempts cancelled):
    remove what can go safely, as events, on a thread of its own once the cancelled attempts' threads are
    done with git (``task_runs.clean_up_cancelled``). Killed before it finishes: ``baton tasks cleanup``."""
    env: TaskEnv | None = getattr(actor.ctx, "tasks", None)
    state = actor.state
    if env is None or state.tasks is None or state.status != "cancelled":
        return
    attempts = list(actor.task_attempts.values())
    if not attempts and all(not t.worktree or t.worktree_removed for t in state.tasks.tasks.values()):
        return  # no task worktree left (cancelled at the landing gate, or before any task started)
    store, run_id, clock = actor.ctx.store, actor.run_id, actor.ctx.clock
    wait_s = env.run_timeout_s + max(actor.ctx.config.ask_timeout_s, 30.0)  # a check or a refused append

    def clean() -> None:
        try:
            for line in task_runs.clean_up_cancelled(store, run_id, env, attempts, clock.now, wait_s):
                log.info("run %s: cleanup after cancel: %s", run_id, line)
        except Exception as exc:  # noqa: BLE001  (the store closed, git failed: `baton tasks cleanup` finishes it)
            log.warning("run %s: the cleanup after cancel stopped: %s; run `baton tasks cleanup %s`", run_id, exc,
                        run_id)
        finally:
            forget_machinery(run_id)

    threading.Thread(target=clean, name=f"baton-cancel-cleanup-{run_id}", daemon=True).start()


def close_integration(actor: RunActor) -> None:
    """At the run's end: remove the integration worktree (the branch stays: it is the result), recorded as
    ``IntegrationRemoved`` (staged; the caller appends it). Nothing when there is none or it went already.

    Killed before the event, the worktree is gone and the log still has it: an ended run needs none
    (reconciliation agrees); a run recovered before its end makes it again if it needs it.
    """
    env: TaskEnv | None = getattr(actor.ctx, "tasks", None)
    state = actor.state
    if env is None or state.tasks is None or state.launched is None or not state.tasks.integration_created:
        return
    if state.tasks.integration_removed:
        return
    git = machinery(str(state.launched.input.get("repo", "")), actor.run_id, env)
    try:
        head = git.close_integration()
    except Exception as exc:  # noqa: BLE001  (left for `baton tasks cleanup`, which removes it as unaccounted)
        log.warning("run %s: the integration worktree was not removed: %s", actor.run_id, exc)
        return
    actor._stage([IntegrationRemoved(branch=git.integration_branch, path=str(git.integration_path), head=head,
                                     at=actor.ctx.clock.now())])


def _resolve(reply: Future[Any] | None, value: Any) -> None:
    if reply is not None and not reply.done():
        reply.set_result(value)


def _fail(reply: Future[Any] | None, exc: BaseException) -> None:
    if reply is not None and not reply.done():
        reply.set_exception(exc)


__all__ = ["TASK_ACTIONS", "TaskCommandRefused", "clean_up_after_cancel", "close_integration", "land_at_gate",
           "on_task_command", "on_task_events", "publish", "reconcile_at_recovery", "resume_merged", "start_task", "task_result"]
