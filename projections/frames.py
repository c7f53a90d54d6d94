"""The durable frames of the stream (DESIGN §7), as a pure function of recorded events.

Every frame is a JSON-able dict with ``type``, ``id`` (the global position of
the event behind it: the SSE id a consumer resumes from), ``run_id`` and
``project_id`` (so the stream can filter without a query). One event may give
several frames; they share its ``id``, and a consumer resuming after that id
gets none of them again.

| event | frames |
|---|---|
| RunLaunched | ``flow_run_started`` {flow_name, band, steps[{step_id, agent, kind, label, deps}], parent_run_id? parent_step? (a subflow's child)} |
| RunQueued / RunStarted | ``flow_run_step_updated`` with ``step_id`` None, ``status`` and ``run_status`` queued / running, ``reason``, ``plan_position`` |
| StepStarted (a map's: ``items``, its count; a subflow's: ``child_run_id``), StepCompleted, StepFailed, StepCancelled, StepSkipped, StepResumed | ``flow_run_step_updated`` {step_id, status, attempt?, error?, detail?, ...} |
| StepPaused | ``flow_run_step_updated`` (status paused), then ``approval_requested`` {step_id, prompt} |
| a task event that moves its task's step (``flows.tasks.run.step_move``: TaskStarted, TaskBlocked, a capped TaskReviewed, a retry's TaskAnswered, TaskFailed, TaskDone, TaskAborted) | ``flow_run_step_updated`` {step_id, status, attempt?, reason (a skip's), error?, will_retry?} |
| AnomalyDetected | ``anomaly`` {step_id, attempt, kind, severity, detail, action} |
| ToolCalled | ``tool_call`` {step_id, attempt, call_id, tool, arguments, turn, seq} |
| ToolResult | ``tool_result`` {step_id, attempt, call_id, tool, ok, outcome, error, bytes, truncated, sha256, result (its first FRAME_RESULT_CHARS characters; the event has it whole), result_cut} |
| RunCompleted / RunFailed / RunRejected / RunCancelled | ``flow_run_step_updated`` with ``step_id`` None, the terminal ``status`` and ``run_status``, ``reason``, ``by``, ``report`` |
| MapItemCompleted / MapItemFailed | ``map_item`` {step_id, attempt, index, item, status completed / failed, output? error?} |
| RunForked | ``run_forked`` {parent_run_id, from_step, retry, copied_steps}: the steps whose outcomes follow as copies |
| RunRecovered, and events of other streams or types | none |

Every status is the one ``flows.status`` gives: a step frame's ``status`` is
``step_status_of`` its event (a failed attempt that will be retried leaves the
step ``pending``), a run frame's is ``run_status_of`` its event. Step frames
carry no ``run_status``: whether the run is now running or paused depends on
its other steps, which a consumer folds with ``flows.status.run_status`` (the
web console restates it in runmodel.js). The run's last frame is the terminal
one, with its report.

Token deltas (``step_delta``) and the scheduler's ``plan_updated`` are
ephemeral and come from the engine, not from here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eventstore import RecordedEvent
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
    TaskReviewed,
    TaskStarted,
    ToolCalled,
    ToolResult,
    run_id_of,
)
from flows.status import ENDING_STATUS, run_status_of, step_status_of
from flows.tasks.run import step_move
from projections.source import decode

Frame = dict[str, Any]

# The event types that give frames (the table above, the cases of ``_frames``: keep them together);
# a reader of the log for frames asks the database for these alone (``projections.source.read_framed``).
FRAMED_TYPES: frozenset[str] = frozenset(cls.__name__ for cls in (
    RunLaunched, RunQueued, RunStarted, StepStarted, StepCompleted, StepFailed, StepCancelled, StepSkipped,
    StepPaused, StepResumed, AnomalyDetected, ToolCalled, ToolResult, RunCompleted, RunFailed, RunRejected,
    RunCancelled, RunForked, MapItemCompleted, MapItemFailed,
    # the task events that can move their step (``flows.tasks.run.step_move``; the others give no frame)
    TaskStarted, TaskBlocked, TaskReviewed, TaskAnswered, TaskFailed, TaskDone, TaskAborted))
FRAME_RESULT_CHARS = 2_000
"""Characters of a tool result a ``tool_result`` frame carries (a result may hold 32 KB: the event has it whole)."""


class Framer:
    """Turns recorded events into frames, remembering a little about each run.

    It learns each run's flow name, band and project from its RunLaunched and
    forgets them when the run ends. For a run whose RunLaunched it never saw
    (a consumer resuming mid-log), ``project_of(run_id)`` is asked once, if
    given (e.g. ``ReadModel.run_project``); otherwise the project is "".
    """

    def __init__(self, project_of: Callable[[str], str | None] | None = None) -> None:
        self._project_of = project_of
        self._projects: dict[str, str] = {}

    def frames(self, recorded: RecordedEvent) -> list[Frame]:
        """The frames of one recorded event, in order ([] when it has none)."""
        run_id = run_id_of(recorded.stream_id)
        if run_id is None:
            return []
        event = decode(recorded.type, recorded.data, recorded.position, recorded.metadata.get("schema_version"))
        if event is None:
            return []
        return self.event_frames(run_id, event, recorded.position)

    def event_frames(self, run_id: str, event: Event, position: int) -> list[Frame]:
        """The frames of one decoded event of run ``run_id`` at ``position`` ([] when it has none)."""
        if isinstance(event, RunLaunched):
            self._projects[run_id] = event.project_id
        project_id = self._project(run_id)
        base = {"id": position, "run_id": run_id, "project_id": project_id}
        out = _frames(base, event)
        if type(event) in ENDING_STATUS:
            self._projects.pop(run_id, None)
        return out

    def _project(self, run_id: str) -> str:
        project = self._projects.get(run_id)
        if project is None and self._project_of is not None:
            project = self._project_of(run_id)
            if project is not None:  # None: not projected yet; ask again next time
                self._projects[run_id] = project
        return project or ""


def _step_frame(base: Frame, event: Event, **fields: Any) -> Frame:
    return {**base, "type": "flow_run_step_updated", "step_id": event.step_id,  # type: ignore[attr-defined]
            "status": step_status_of(event), "at": event.at, **fields}


def _run_frame(base: Frame, event: Event, **fields: Any) -> Frame:
    status = run_status_of(event)
    return {**base, "type": "flow_run_step_updated", "step_id": None, "status": status,
            "run_status": status, "at": event.at, **fields}


def _frames(base: Frame, e: Event) -> list[Frame]:
    match e:  # most events are a step's start and end: they are matched first
        case StepStarted():
            extra: dict[str, Any] = {"items": len(e.items)} if e.items else {}
            if e.child_run_id:
                extra["child_run_id"] = e.child_run_id
            return [_step_frame(base, e, attempt=e.attempt, agent=e.persona, kind=e.kind,
                                backend=e.backend, model=e.model, **extra)]
        case StepCompleted():
            return [_step_frame(base, e, attempt=e.attempt, duration_s=e.duration_s,
                                output=e.output)]
        case RunLaunched():
            steps = [
                {"step_id": s.id, "agent": s.persona, "kind": s.kind, "label": s.label or s.id,
                 "deps": list(s.deps)}
                for s in e.snapshot.steps
            ]
            parent = {"parent_run_id": e.parent_run_id, "parent_step": e.parent_step} if e.parent_run_id else {}
            return [{**base, "type": "flow_run_started", "flow_name": e.flow, "band": e.band,
                     "question": str(e.input.get("question", "")), "steps": steps, "at": e.at, **parent}]
        case MapItemCompleted():
            return [{**base, "type": "map_item", "step_id": e.step_id, "attempt": e.attempt, "index": e.index,
                     "item": e.item, "status": "completed", "output": e.output, "at": e.at}]
        case MapItemFailed():
            return [{**base, "type": "map_item", "step_id": e.step_id, "attempt": e.attempt, "index": e.index,
                     "item": e.item, "status": "failed", "error": e.error, "at": e.at}]
        case RunForked():
            return [{**base, "type": "run_forked", "parent_run_id": e.parent_run_id, "from_step": e.from_step,
                     "retry": e.retry, "copied_steps": list(e.copied_steps), "at": e.at}]
        case RunQueued():
            return [_run_frame(base, e, reason=e.reason, plan_position=e.plan_position)]
        case RunStarted():
            return [_run_frame(base, e, reason=e.reason, plan_position=e.plan_position)]
        case StepFailed():
            return [_step_frame(base, e, attempt=e.attempt,
                                error=e.error, will_retry=e.will_retry, retry_at=e.retry_at or None)]
        case StepCancelled():
            return [_step_frame(base, e, attempt=e.attempt, error=e.reason)]
        case StepSkipped():
            return [_step_frame(base, e, reason=e.reason, detail=e.detail)]
        case StepPaused():
            return [
                _step_frame(base, e),
                {**base, "type": "approval_requested", "step_id": e.step_id, "prompt": e.prompt, "at": e.at,
                 "due_at": e.due_at or None},
            ]
        case StepResumed():
            return [_step_frame(base, e, decision=e.decision, by=e.by, comment=e.comment, timer=e.timer or None)]
        case AnomalyDetected():
            return [{**base, "type": "anomaly", "step_id": e.step_id, "attempt": e.attempt, "kind": e.kind,
                     "severity": e.severity, "detail": e.detail, "action": e.action, "at": e.at}]
        case ToolCalled():
            return [{**base, "type": "tool_call", "step_id": e.step_id, "attempt": e.attempt, "call_id": e.call_id,
                     "tool": e.tool, "arguments": e.arguments, "turn": e.turn, "seq": e.seq, "at": e.at}]
        case ToolResult():
            return [{**base, "type": "tool_result", "step_id": e.step_id, "attempt": e.attempt, "call_id": e.call_id,
                     "tool": e.tool, "ok": e.ok, "outcome": e.outcome, "error": e.error, "bytes": e.bytes,
                     "truncated": e.truncated, "sha256": e.sha256, "result": e.result[:FRAME_RESULT_CHARS],
                     "result_cut": len(e.result) > FRAME_RESULT_CHARS, "at": e.at}]
        case TaskEvent():
            return _task_frames(base, e)
        case RunCompleted() | RunFailed() | RunRejected() | RunCancelled():
            reason = getattr(e, "reason", "")
            by = getattr(e, "by", "")
            return [_run_frame(base, e, reason=reason, by=by, report=e.report)]
    return []


def _task_frames(base: Frame, e: TaskEvent) -> list[Frame]:
    """A task's step moves as the projector moves its row (``step_move``); the ``task_updated`` frames with
    the task's phase are the engine's (ephemeral), so a console that dropped them still sees every status."""
    move = step_move(e)
    if move is None:
        return []
    status, skip_reason = move
    frame: Frame = {**base, "type": "flow_run_step_updated", "step_id": e.step_id, "status": status, "at": e.at}
    attempt = getattr(e, "attempt", None)
    if attempt is not None:
        frame["attempt"] = attempt
    if skip_reason:
        frame["reason"] = skip_reason
    if isinstance(e, TaskFailed):
        frame.update(error=e.error, will_retry=e.will_retry)
    elif isinstance(e, TaskAborted):
        frame["error"] = e.reason
    elif isinstance(e, TaskBlocked):
        frame["detail"] = e.reason
    return [frame]
