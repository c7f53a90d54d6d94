"""What a RunActor does for a task run (DESIGN §12): start attempts, append their events, people's words.

A mixin of :class:`actors.run.RunActor`, kept apart so the run actor's own
file stays about every run. The rule is the run actor's: load, decide,
append, act. Every task event, whoever asks for it (an attempt's thread, a
person, a decision), passes the lifecycle guard (``flows.tasks.run.refusal``,
i.e. ``lifecycle.check``) before it is staged, so nothing starts a task
early, merges it twice or answers a question nobody asked.
"""

from __future__ import annotations

import logging
import queue
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from actors import messages as m
from actors.agents import CancelToken
from actors.agents.toolloop import PersonMessage
from actors.step import Answer, Attempt, Call, StepActor
from actors.task_attempt import TaskAttempt, TaskEnv, check_inputs
from actors.errors import ActorsError
from flows.errors import BatonError
from flows.events import Answer as TaskAnswer
from flows.events import Event, IntegrationCreated, TaskAborted, TaskFailed, TaskMessaged, TaskStarted
from flows.kinds import StepKind
from flows.redact import redactor
from flows.tasks import run as task_run
from flows.tasks.lifecycle import TaskTransitionError, answer_events
from flows.text import check_text

if TYPE_CHECKING:
    from actors.run import RunActor

log = logging.getLogger(__name__)

TASK_ACTIONS = ("message", "abort", "retry", "skip")
"""What a person may say to one task (routes ``POST /api/runs/{id}/steps/{step}/<action>``)."""


class TaskCommandRefused(ActorsError, ValueError):
    """A person's word on a task that does not apply now (the message says why); nothing was appended."""


class TaskRunMixin:
    """The task half of a RunActor."""

    task_inboxes: dict[str, queue.SimpleQueue[PersonMessage]]

    def _start_task(self: RunActor, event: TaskStarted) -> None:
        """Run the attempt ``event`` accepted on the step pool."""
        ctx, state = self.ctx, self.state
        attempt = Attempt(event.step_id, event.attempt, StepKind.TASK, CancelToken(), time.monotonic(),
                          ctx.clock.now())
        env: TaskEnv | None = getattr(ctx, "tasks", None)
        launched = state.launched
        assert launched is not None and state.tasks is not None
        problem = "this engine has no task settings (BATON_WORKTREES)" if env is None else check_inputs(
            dict(launched.input))
        if problem:
            self._refuse(attempt, problem)
            return
        assert env is not None
        if event.step_id in self.held:
            step_id = event.step_id
            attempt.release = lambda: self._tell_orchestrator(m.ReleaseSlots(self.run_id, held=(step_id,)))
        run_ref, step_id, number = self.actor_ref, event.step_id, event.attempt

        def append(events: list[Event]) -> None:
            reply: Future[Any] = Future()
            run_ref.tell(m.TaskEvents(step_id, number, list(events), reply))
            reply.result(timeout=max(ctx.config.ask_timeout_s, 30.0))

        task = TaskAttempt(run_id=self.run_id, spec=state.spec(step_id), attempt=number, context=event.context,
                           inputs=dict(launched.input), model=launched.model, max_rounds=state.tasks.max_rounds,
                           integration_created=state.tasks.integration_created, env=env, append=append)
        self.task_inboxes[step_id] = task.inbox

        def run(token: CancelToken, delta: Any) -> Answer:
            return Answer(task.run(token))

        self.attempts[step_id] = attempt
        StepActor(self.actor_ref, attempt, Call(run, "the task"), run_id=self.run_id, bus=ctx.bus, clock=ctx.clock,
                  redact=redactor(ctx.config.known_secrets)).start(ctx.steps)

    def _on_task_events(self: RunActor, msg: m.TaskEvents) -> None:
        """An attempt's events: guarded, appended at once (the attempt waits for them to be durable)."""
        assert self.state.tasks is not None
        events = [e for e in msg.events
                  if not (isinstance(e, IntegrationCreated) and self.state.tasks.integration_created)]
        problem = task_run.refusal(self.state.tasks, events) if not self.stopped else "the run's actor stopped"
        if problem is not None:
            _fail(msg.reply, TaskTransitionError(problem))
            return
        self._stage(events)
        recorded = self._flush(reply=msg.reply)
        if recorded is not None:
            _resolve(msg.reply, recorded[-1].position if recorded else self.state.position)

    def _on_task_command(self: RunActor, msg: m.TaskCommand) -> None:
        """A person's message, abort, retry or skip of one task."""
        self.actor, self.cause = msg.by or "anonymous", f"command:task-{msg.action}"
        try:
            events = self._task_command_events(msg)
        except (BatonError, ValueError) as exc:
            _fail(msg.reply, exc)
            self.actor = self.cause = ""
            self._report_idle()
            return
        self._stage(events)
        recorded = self._flush(reply=msg.reply)
        if recorded is None:
            return
        _resolve(msg.reply, recorded[0].position if recorded else self.state.position)
        if msg.action == "message":
            inbox = self.task_inboxes.get(msg.step_id)
            if inbox is not None:
                inbox.put(PersonMessage(msg.text, msg.by))
        for event in events:
            if isinstance(event, TaskAborted) and event.step_id in self.attempts:
                self._end_attempt(event.step_id, cancel=True)  # the attempt cleans up (salvage, branch kept)

    def _task_command_events(self: RunActor, msg: m.TaskCommand) -> list[Event]:
        state = self.state
        if state.tasks is None or state.launched is None:
            raise TaskCommandRefused(f"run {self.run_id} is not a task run")
        if state.terminal:
            raise TaskCommandRefused(f"run {self.run_id} has ended ({state.status})")
        if msg.step_id not in state.tasks.tasks:
            raise TaskCommandRefused(f"run {self.run_id} has no task {msg.step_id!r}; its tasks are "
                                     + ", ".join(state.tasks.tasks))
        check_text("text", msg.text)
        now = self.ctx.clock.now()
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

    def _task_result(self: RunActor, msg: m.StepResult) -> None:
        """The attempt's thread returned: the slot is free; an error it raised fails the attempt."""
        self._end_attempt(msg.step_id)
        self.task_inboxes.pop(msg.step_id, None)
        tasks = self.state.tasks
        if msg.cancelled or not msg.failed or tasks is None:
            self._queue_flush()
            return
        task = tasks.tasks.get(msg.step_id)
        if task is None or task.attempt != msg.attempt or task.status.value != "inprogress":
            self._queue_flush()
            return
        error = redactor(self.ctx.config.known_secrets)(msg.error)
        log.info("task %s of run %s failed: %s", msg.step_id, self.run_id, error)
        self._stage([TaskFailed(step_id=msg.step_id, attempt=msg.attempt, error=error,
                                will_retry=task.retries_left > 0, at=self.ctx.clock.now())])
        self._queue_flush()

    def _publish_tasks(self: RunActor, events: list[Event]) -> None:
        """``task_updated`` frames: one per task an event moved, with its status and phase."""
        tasks = self.state.tasks
        if tasks is None or self.ctx.bus is None:
            return
        for sid in dict.fromkeys(getattr(e, "step_id", "") for e in events):
            task = tasks.tasks.get(sid)
            if task is None:
                continue
            self.ctx.bus.publish({"type": "task_updated", "run_id": self.run_id, "step_id": sid,
                                  "status": task.status.value, "phase": task.phase.value if task.phase else "",
                                  "attempt": task.attempt, "reason": task.reason[:500]})


def _resolve(reply: Future[Any] | None, value: Any) -> None:
    if reply is not None and not reply.done():
        reply.set_result(value)


def _fail(reply: Future[Any] | None, exc: BaseException) -> None:
    if reply is not None and not reply.done():
        reply.set_exception(exc)


__all__ = ["TASK_ACTIONS", "TaskCommandRefused", "TaskRunMixin"]
