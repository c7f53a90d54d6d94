"""How each event changes the read rows: plain dicts, mutated in memory.

A batch of events is applied to a ``Workset`` (the rows of the runs it
touches, loaded once) and written back once; that is what makes a rebuild
fast. Every status comes from the rules of ``flows.status``, as in
``flows.state.evolve`` (the integration tests fold every run with ``evolve``
and compare, after every event in tests/integration/test_status_agreement.py).

Everything written is a function of the events: no clock, no randomness.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from itertools import chain
from operator import itemgetter
from typing import Any

import msgspec

from flows.events import (
    AnomalyDetected,
    Event,
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
    TaskReviewed,
    TaskStarted,
)
from flows.status import (
    RunStatus,
    StepStatus,
    run_ended,
    run_status,
    run_status_of,
    step_ended,
    step_status_of,
    takes_run_event,
)
from flows.tasks.run import is_task_run, step_move
from projections.tables import STEP_FIELDS

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder(order="deterministic")


def to_json(value: Any) -> str:
    """Canonical JSON text (sorted keys): equal values give equal bytes."""
    if not value:  # most fields/usage/unresolved are empty: skip the encoder
        return "{}" if isinstance(value, dict) else "[]"
    return _encoder.encode(value).decode()


Row = dict[str, Any]


class RunRows:
    """One run's row and its steps' rows (in graph order, keyed by STEP_FIELDS), with what changed.

    ``stored`` is False until the rows were first written: new rows are
    plain inserts (COPY on PostgreSQL), stored ones upserts.
    """

    __slots__ = ("dirty_run", "dirty_steps", "run", "steps", "stored")

    def __init__(self, run: Row, steps: dict[str, Row], *, new: bool) -> None:
        self.run = run
        self.steps = steps
        self.stored = not new
        self.dirty_run = new
        self.dirty_steps = new  # the steps are written together, in one row

    @property
    def terminal(self) -> bool:
        """Whether the run has ended (nothing but stray events can change it now)."""
        return run_ended(self.run["status"])


class Workset:
    """The rows a batch reads and writes, and the rows it only adds."""

    __slots__ = ("anomalies", "frames", "problems", "reports", "runs")

    def __init__(self) -> None:
        self.runs: dict[str, RunRows] = {}
        self.reports: dict[str, Row] = {}
        self.anomalies: list[Row] = []
        self.problems: list[Row] = []  # projection_errors: events that could not be applied
        # stream_frames rows, as tuples in column order (position, run_id, project_id, body)
        self.frames: list[tuple[int, str, str, bytes]] = []

    def clean(self) -> None:
        """Forget what was written, keep the rows (they are now what the tables hold)."""
        for rows in self.runs.values():
            rows.dirty_run = False
            rows.dirty_steps = False
            rows.stored = True
        self.reports.clear()
        self.anomalies.clear()
        self.problems.clear()
        self.frames.clear()


def apply(work: Workset, items: Iterable[tuple[str, Event, int, int]]) -> int:
    """Apply ``(run_id, event, position, stream version)`` items in order; returns how many changed rows.

    One loop for a whole page (a replay calls it for millions of events).
    """
    runs = work.runs
    handlers = _HANDLERS
    applied = 0
    for run_id, event, position, version in items:
        handler = handlers.get(event.__class__)
        if handler is None:
            continue
        rows = runs.get(run_id)
        if handler is _launched:
            if rows is not None:
                continue
            rows = _launched(work, run_id, event, position)  # type: ignore[arg-type]
        elif rows is None:
            log.warning("projection skips event %d: run %s was never launched", position, run_id)
            continue
        elif handler(work, rows, event, position) is False:
            continue
        run = rows.run
        run["stream_version"] = version
        run["last_position"] = position
        rows.dirty_run = True
        applied += 1
    return applied


def finish_rows(rows: RunRows) -> None:
    """Derived columns of a run, computed once before its row is written."""
    run = rows.run
    run["steps_done"] = sum(1 for s in rows.steps.values() if step_ended(s["status"]))
    run["parked_until"] = parked_until(run, rows.steps) if run["status"] == _RUN_PAUSED else None


_RUN_PAUSED, _PAUSED, _PENDING = RunStatus.PAUSED.value, StepStatus.PAUSED.value, StepStatus.PENDING.value
_decode_waits = msgspec.json.Decoder(dict[str, list[str]]).decode


def parked_until(run: Row, steps: dict[str, Row]) -> float | None:
    """``flow_runs.parked_until`` of a paused run: its earliest approval timer (0: none) when it
    only waits for a person, None when it may have work of its own (or is a task run).

    What ``flows.decide.has_work`` says of the run, erring towards None: a step running, a retry
    pending, or a pending step that is not sure to wait (no deps, trigger rule ``always``, or a dep
    ended, which leaves it to the trigger rules) all make it None; the start then loads the run.
    """
    waits_text = run["waits"]
    if not waits_text:
        return None  # a task run
    waits: dict[str, list[str]] | None = None
    due = 0.0
    for step_id, step in steps.items():
        status = step["status"]
        if status == _PAUSED:
            at = step["due_at"]
            if at and (not due or at < due):
                due = at
        elif status == _PENDING:
            if step["retry_at"] is not None:
                return None
            if waits is None:
                waits = _decode_waits(waits_text)
            deps = waits.get(step_id)
            if not deps:
                return None
            for dep in deps:
                row = steps.get(dep)
                if row is None or step_ended(row["status"]):
                    return None
        elif not step_ended(status):  # running
            return None
    return due


# -- one function per event type ---------------------------------------------------------


_STEP_DEFAULTS: Row = dict.fromkeys(STEP_FIELDS)  # in STEP_FIELDS order, as written
_STEP_DEFAULTS.update({
    "status": StepStatus.PENDING,
    "attempt": 0,
    "failures": 0,
    "error": "",
    "skip_reason": "",
    "detail": "",
    "output_position": 0,
    "fields": {},  # never changed in place, only replaced: the rows may share it
    "fields_error": "",
    "usage": {},
    "prompt_position": 0,
    "unresolved": [],
    "backend": "",
    "model": "",
    "decided_by": "",
    "comment": "",
    "anomalies": 0,
    "due_at": 0.0,
    "kept_from": "",
})


def _launched(work: Workset, run_id: str, e: RunLaunched, position: int) -> RunRows:
    snap = e.snapshot
    steps: dict[str, Row] = {}
    for ordinal, spec in enumerate(snap.steps):
        row = _STEP_DEFAULTS.copy()
        row["step_id"] = spec.id
        row["ordinal"] = ordinal
        row["persona"] = spec.persona
        row["last_position"] = position
        steps[spec.id] = row
    inputs = dict(e.input)
    run = {
        "run_id": run_id,
        "flow": e.flow,
        "category": snap.category,
        "band": e.band,
        "model": e.model,
        "backend": e.backend,
        "project_id": e.project_id,
        "question": str(inputs.get("question", "")),
        "inputs": to_json(inputs),
        "status": run_status_of(e),
        "queue_reason": "",
        "plan_position": 0,
        "launched_by": e.launched_by,
        "idempotency_key": e.idempotency_key,
        "launched_position": position,
        "launched_at": e.at,
        "started_at": None,
        "ended_at": None,
        "reason": "",
        "ended_by": "",
        "steps_total": len(steps),
        "steps_done": 0,
        "recoveries": 0,
        "anomalies": 0,
        "stream_version": 0,
        "last_position": position,
        "parent_run_id": e.parent_run_id,
        "parent_link": "subflow" if e.parent_run_id else "",
        "forked_from": e.parent_step,
        "waits": "" if is_task_run(snap) else to_json(
            {spec.id: list(spec.deps) for spec in snap.steps if spec.deps and spec.trigger_rule != "always"}),
        "parked_until": None,
    }
    rows = work.runs[run_id] = RunRows(run, steps, new=True)
    return rows


def _run_status(rows: RunRows, moved: Row) -> str:
    """``flows.status.run_status`` over the rows, the step that ``moved`` first (a running one settles
    it at once). A retry is pending while ``retry_at`` is set (``not_before`` in the fold)."""
    return run_status(rows.run["status"], map(_STATUS_AND_RETRY, chain((moved,), rows.steps.values())))


_STATUS_AND_RETRY = itemgetter("status", "retry_at")


def _step(rows: RunRows, step_id: str, position: int) -> Row | None:
    row = rows.steps.get(step_id)
    if row is None:
        log.warning("projection skips event %d: run %s has no step %r",
                    position, rows.run["run_id"], step_id)
        return None
    rows.dirty_steps = True
    row["last_position"] = position
    return row


def _ended_already(rows: RunRows, position: int) -> bool:
    """Whether the run takes no more run events (``flows.status.takes_run_event``); logged when so."""
    if takes_run_event(rows.run["status"]):
        return False
    # The engine never moves a run after its end (optimistic concurrency on its
    # stream); a log that does is kept with its first ending and report.
    log.warning("projection skips event %d: run %s had already ended", position, rows.run["run_id"])
    return True


def _queued(work: Workset, rows: RunRows, e: RunQueued, position: int) -> bool:
    if _ended_already(rows, position):
        return False
    rows.run.update(status=run_status_of(e), queue_reason=e.reason, plan_position=e.plan_position)
    return True


def _started(work: Workset, rows: RunRows, e: RunStarted, position: int) -> bool:
    if _ended_already(rows, position):
        return False
    rows.run.update(status=run_status_of(e), queue_reason="", plan_position=e.plan_position, started_at=e.at)
    return True


def _step_started(work: Workset, rows: RunRows, e: StepStarted, position: int) -> bool:
    row = _step(rows, e.step_id, position)
    if row is None:
        return False
    row["status"] = step_status_of(e)
    row["attempt"] = e.attempt
    row["started_at"] = e.at
    row["retry_at"] = None
    row["error"] = ""
    row["backend"] = e.backend
    row["model"] = e.model
    row["prompt_position"] = position
    row["unresolved"] = e.unresolved
    if e.persona:
        row["persona"] = e.persona
    rows.run["status"] = _run_status(rows, row)
    return True


def _step_completed(work: Workset, rows: RunRows, e: StepCompleted, position: int) -> bool:
    row = _step(rows, e.step_id, position)
    if row is None:
        return False
    row["status"] = step_status_of(e)
    row["output_position"] = position
    row["fields"] = e.step_fields()
    row["fields_error"] = e.fields_error
    row["usage"] = e.usage
    row["ended_at"] = e.at
    row["duration_s"] = e.duration_s
    rows.run["status"] = _run_status(rows, row)
    return True


def _step_failed(work: Workset, rows: RunRows, e: StepFailed, position: int) -> bool:
    row = _step(rows, e.step_id, position)
    if row is None:
        return False
    row.update(
        status=step_status_of(e), error=e.error, failures=row["failures"] + (not e.lost), ended_at=e.at,
        duration_s=e.duration_s,
    )
    if e.will_retry:
        row["retry_at"] = e.retry_at or e.at
    rows.run["status"] = _run_status(rows, row)
    return True


def _step_cancelled(work: Workset, rows: RunRows, e: StepCancelled, position: int) -> bool:
    row = _step(rows, e.step_id, position)
    if row is None:
        return False
    row.update(status=step_status_of(e), error=e.reason, ended_at=e.at)
    rows.run["status"] = _run_status(rows, row)
    return True


def _step_skipped(work: Workset, rows: RunRows, e: StepSkipped, position: int) -> bool:
    row = _step(rows, e.step_id, position)
    if row is None:
        return False
    row["status"] = step_status_of(e)
    row["skip_reason"] = e.reason
    row["detail"] = e.detail
    row["ended_at"] = e.at
    rows.run["status"] = _run_status(rows, row)
    return True


def _step_paused(work: Workset, rows: RunRows, e: StepPaused, position: int) -> bool:
    row = _step(rows, e.step_id, position)
    if row is None:
        return False
    row["status"] = step_status_of(e)
    row["prompt_position"] = position
    row["started_at"] = e.at
    row["due_at"] = e.due_at
    rows.run["status"] = _run_status(rows, row)
    return True


def _step_resumed(work: Workset, rows: RunRows, e: StepResumed, position: int) -> bool:
    row = _step(rows, e.step_id, position)
    if row is None:
        return False
    # As in evolve: the approver's comment is the gate's output ($gate.output).
    row.update(
        status=step_status_of(e),
        output_position=position, comment=e.comment, decided_by=e.decided_by, ended_at=e.at, due_at=0.0,
    )
    rows.run["status"] = _run_status(rows, row)
    return True


def _forked(work: Workset, rows: RunRows, e: RunForked, position: int) -> None:
    rows.run["parent_run_id"] = e.parent_run_id
    rows.run["parent_link"] = "retry" if e.retry else "fork"
    rows.run["forked_from"] = e.from_step
    for step_id in e.copied_steps:  # their outcomes follow as copies: the parent's, not run again here
        row = _step(rows, step_id, position)
        if row is not None:
            row["kept_from"] = e.parent_run_id


def _recovered(work: Workset, rows: RunRows, e: RunRecovered, position: int) -> None:
    rows.run["recoveries"] += 1


def _anomaly(work: Workset, rows: RunRows, e: AnomalyDetected, position: int) -> None:
    run_id = rows.run["run_id"]
    row = _step(rows, e.step_id, position)
    if row is not None:
        row["anomalies"] += 1
    rows.run["anomalies"] += 1
    work.anomalies.append({
        "position": position, "run_id": run_id, "step_id": e.step_id, "attempt": e.attempt,
        "kind": e.kind, "severity": e.severity, "detail": e.detail, "action": e.action,
        "guidance": e.guidance, "at": e.at,
    })


def _ended(work: Workset, rows: RunRows, e: RunCompleted | RunFailed | RunRejected | RunCancelled,
           position: int) -> bool:
    if _ended_already(rows, position):
        return False
    run = rows.run
    status = run["status"] = run_status_of(e)
    run["ended_at"] = e.at
    if not isinstance(e, RunCompleted):
        run["reason"] = e.reason
    if isinstance(e, (RunRejected, RunCancelled)):
        run["ended_by"] = e.by
    work.reports[run["run_id"]] = {
        "run_id": run["run_id"], "status": status, "position": position, "at": e.at,
    }
    return True


def _task_moved(work: Workset, rows: RunRows, e: TaskEvent, position: int) -> bool:
    """A task event of a task run (DESIGN §12): its step's row moves as ``flows.tasks.run.step_move`` says."""
    move = step_move(e)
    if move is None:
        return False
    row = _step(rows, e.step_id, position)
    if row is None:
        return False
    status, skip_reason = move
    row.update(status=status, skip_reason=skip_reason)
    attempt = getattr(e, "attempt", None)
    if attempt is not None:
        row["attempt"] = attempt
    if isinstance(e, TaskStarted):
        row.update(started_at=e.at, error="", retry_at=None, backend="tasks")
    elif status in ("failed", "cancelled", "skipped", "completed"):
        row["ended_at"] = e.at
        row["error"] = getattr(e, "error", "") or getattr(e, "reason", "")
    elif status == "pending" and isinstance(e, TaskFailed):
        row["retry_at"] = e.at  # retried at once: the run is still running
    rows.run["status"] = _run_status(rows, row)
    return True


_HANDLERS: dict[type, Callable[..., Any]] = {
    RunLaunched: _launched,
    RunQueued: _queued,
    RunStarted: _started,
    StepStarted: _step_started,
    StepCompleted: _step_completed,
    StepFailed: _step_failed,
    StepCancelled: _step_cancelled,
    StepSkipped: _step_skipped,
    StepPaused: _step_paused,
    StepResumed: _step_resumed,
    RunRecovered: _recovered,
    AnomalyDetected: _anomaly,
    RunCompleted: _ended,
    RunFailed: _ended,
    RunRejected: _ended,
    RunCancelled: _ended,
    **dict.fromkeys((TaskStarted, TaskBlocked, TaskReviewed, TaskAnswered, TaskFailed, TaskDone, TaskAborted),
                    _task_moved),
    RunForked: _forked,
}
