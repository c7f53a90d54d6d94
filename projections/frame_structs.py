"""Durable frames as ``msgspec.Struct``s of their own shape: how a replay builds and encodes them.

``projections.frames`` builds each event's frames as dicts (``frames_of``: the live path, and the
table in its docstring). A replay (``Framer.encode_rows``) and the projector's kept frames
(``kept_sse``) build most of them here instead, as Structs that encode to the same bytes without
a dict: ``STRUCTS`` maps an event's class to its builder, ``(position, run_id, project_id, event)
-> frame`` (or a tuple of frames).

Each Struct's fields are in the order of its frame dict's keys (a Struct encodes its fields in the
order they are declared, base class first), so it encodes to the same bytes as the dict; a key the
dict has only sometimes is UNSET (left out) otherwise. tests/unit/test_frames.py compares both
encodings on every framed type. The frame types left out here (task events, forks) are built as
their dict: they are few in a log. A change to a frame's shape is made in both places.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from flows.events import (
    AnomalyDetected,
    Event,
    MapItemCompleted,
    MapItemFailed,
    RunCancelled,
    RunCompleted,
    RunFailed,
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
    ToolCalled,
    ToolResult,
)
from flows.model import FlowSnapshot
from flows.status import ENDING_STATUS, run_status_of, step_status_of

FRAME_RESULT_CHARS = 2_000
"""Characters of a tool result a ``tool_result`` frame carries (a result may hold 32 KB: the event has it whole)."""


class _Frame(msgspec.Struct):
    id: int
    run_id: str
    project_id: str
    type: str


class _StepF(_Frame):
    step_id: str
    status: str | None
    at: float


class _StepStartedF(_StepF):
    attempt: int
    agent: str
    kind: str
    backend: str
    model: str
    items: int | UnsetType = UNSET
    child_run_id: str | UnsetType = UNSET


class _StepCompletedF(_StepF):
    attempt: int
    duration_s: float
    output: str


class _StepFailedF(_StepF):
    attempt: int
    error: str
    will_retry: bool
    retry_at: float | None


class _StepCancelledF(_StepF):
    attempt: int
    error: str


class _StepSkippedF(_StepF):
    reason: str
    detail: str


class _StepResumedF(_StepF):
    decision: str
    by: str
    comment: str
    timer: str | None


class _ApprovalF(_Frame):
    step_id: str
    prompt: str
    at: float
    due_at: float | None


class _RunF(_Frame):
    step_id: None
    status: str | None
    run_status: str | None
    at: float


class _RunMovedF(_RunF):
    reason: str
    plan_position: int


class _RunEndedF(_RunF):
    reason: str
    by: str
    report: str


class _PlanStepF(msgspec.Struct):
    step_id: str
    agent: str
    kind: str
    label: str
    deps: list[str]


class _LaunchedF(_Frame):
    flow_name: str
    band: str
    question: str
    steps: list[_PlanStepF] | msgspec.Raw  # Raw: the steps already encoded (a replay's, ``Framer._with_plan``)
    at: float
    parent_run_id: str | UnsetType = UNSET
    parent_step: str | UnsetType = UNSET


class _MapItemF(_Frame, kw_only=True):
    step_id: str
    attempt: int
    index: int
    item: Any
    status: str
    output: str | UnsetType = UNSET
    error: str | UnsetType = UNSET
    at: float


class _AnomalyF(_Frame):
    step_id: str
    attempt: int
    kind: str
    severity: str
    detail: str
    action: str
    at: float


class _ToolCallF(_Frame):
    step_id: str
    attempt: int
    call_id: str
    tool: str
    arguments: str
    turn: int
    seq: int
    role: str
    at: float


class _ToolResultF(_Frame):
    step_id: str
    attempt: int
    call_id: str
    tool: str
    ok: bool
    outcome: str
    error: str
    bytes: int
    truncated: bool
    sha256: str
    result: str
    result_cut: bool
    role: str
    at: float


_STEP = "flow_run_step_updated"
_Build = Callable[[int, str, str, Any], "_Frame | tuple[_Frame, ...]"]
# The status a step's start and end give (``step_status_of``), looked up once: most frames are theirs
_RUNNING = step_status_of(StepStarted(step_id="", attempt=0))
_COMPLETED = step_status_of(StepCompleted(step_id="", attempt=0))


def _step_started(i: int, r: str, p: str, e: StepStarted) -> _Frame:
    return _StepStartedF(i, r, p, _STEP, e.step_id, _RUNNING, e.at, e.attempt, e.persona, e.kind, e.backend,
                         e.model, len(e.items) if e.items else UNSET, e.child_run_id or UNSET)


def _step_completed(i: int, r: str, p: str, e: StepCompleted) -> _Frame:
    return _StepCompletedF(i, r, p, _STEP, e.step_id, _COMPLETED, e.at, e.attempt, e.duration_s, e.output)


def _step_failed(i: int, r: str, p: str, e: StepFailed) -> _Frame:
    return _StepFailedF(id=i, run_id=r, project_id=p, type=_STEP, step_id=e.step_id, status=step_status_of(e),
                        at=e.at, attempt=e.attempt, error=e.error, will_retry=e.will_retry,
                        retry_at=e.retry_at or None)


def _step_cancelled(i: int, r: str, p: str, e: StepCancelled) -> _Frame:
    return _StepCancelledF(id=i, run_id=r, project_id=p, type=_STEP, step_id=e.step_id, status=step_status_of(e),
                           at=e.at, attempt=e.attempt, error=e.reason)


def _step_skipped(i: int, r: str, p: str, e: StepSkipped) -> _Frame:
    return _StepSkippedF(id=i, run_id=r, project_id=p, type=_STEP, step_id=e.step_id, status=step_status_of(e),
                         at=e.at, reason=e.reason, detail=e.detail)


def _step_paused(i: int, r: str, p: str, e: StepPaused) -> tuple[_Frame, _Frame]:
    return (_StepF(id=i, run_id=r, project_id=p, type=_STEP, step_id=e.step_id, status=step_status_of(e), at=e.at),
            _ApprovalF(id=i, run_id=r, project_id=p, type="approval_requested", step_id=e.step_id, prompt=e.prompt,
                       at=e.at, due_at=e.due_at or None))


def _step_resumed(i: int, r: str, p: str, e: StepResumed) -> _Frame:
    return _StepResumedF(id=i, run_id=r, project_id=p, type=_STEP, step_id=e.step_id, status=step_status_of(e),
                         at=e.at, decision=e.decision, by=e.by, comment=e.comment, timer=e.timer or None)


def _run_moved(i: int, r: str, p: str, e: RunQueued | RunStarted) -> _Frame:
    status = run_status_of(e)
    return _RunMovedF(i, r, p, _STEP, None, status, status, e.at, e.reason, e.plan_position)


def _run_ended(i: int, r: str, p: str, e: RunCompleted | RunFailed | RunRejected | RunCancelled) -> _Frame:
    status = ENDS[type(e)]
    return _RunEndedF(i, r, p, _STEP, None, status, status, e.at, getattr(e, "reason", ""), getattr(e, "by", ""),
                      e.report)


def _run_launched(i: int, r: str, p: str, e: RunLaunched) -> _Frame:
    return _launched(i, r, p, e, plan_steps(e.snapshot))


def plan_steps(snapshot: FlowSnapshot) -> list[_PlanStepF]:
    return [_PlanStepF(s.id, s.persona, s.kind, s.label or s.id, list(s.deps)) for s in snapshot.steps]


def _launched(i: int, r: str, p: str, e: RunLaunched, steps: list[_PlanStepF] | msgspec.Raw) -> _Frame:
    parent = e.parent_run_id
    return _LaunchedF(i, r, p, "flow_run_started", e.flow, e.band, str(e.input.get("question", "")), steps, e.at,
                      parent if parent else UNSET, e.parent_step if parent else UNSET)


def _map_completed(i: int, r: str, p: str, e: MapItemCompleted) -> _Frame:
    return _MapItemF(id=i, run_id=r, project_id=p, type="map_item", step_id=e.step_id, attempt=e.attempt,
                     index=e.index, item=e.item, status="completed", output=e.output, at=e.at)


def _map_failed(i: int, r: str, p: str, e: MapItemFailed) -> _Frame:
    return _MapItemF(id=i, run_id=r, project_id=p, type="map_item", step_id=e.step_id, attempt=e.attempt,
                     index=e.index, item=e.item, status="failed", error=e.error, at=e.at)


def _anomaly(i: int, r: str, p: str, e: AnomalyDetected) -> _Frame:
    return _AnomalyF(id=i, run_id=r, project_id=p, type="anomaly", step_id=e.step_id, attempt=e.attempt,
                     kind=e.kind, severity=e.severity, detail=e.detail, action=e.action, at=e.at)


def _tool_called(i: int, r: str, p: str, e: ToolCalled) -> _Frame:
    return _ToolCallF(id=i, run_id=r, project_id=p, type="tool_call", step_id=e.step_id, attempt=e.attempt,
                      call_id=e.call_id, tool=e.tool, arguments=e.arguments, turn=e.turn, seq=e.seq, role=e.role,
                      at=e.at)


def _tool_result(i: int, r: str, p: str, e: ToolResult) -> _Frame:
    return _ToolResultF(id=i, run_id=r, project_id=p, type="tool_result", step_id=e.step_id, attempt=e.attempt,
                        call_id=e.call_id, tool=e.tool, ok=e.ok, outcome=e.outcome, error=e.error, bytes=e.bytes,
                        truncated=e.truncated, sha256=e.sha256, result=e.result[:FRAME_RESULT_CHARS],
                        result_cut=len(e.result) > FRAME_RESULT_CHARS, role=e.role, at=e.at)


STRUCTS: dict[type[Event], _Build] = {
    StepStarted: _step_started, StepCompleted: _step_completed, StepFailed: _step_failed,
    StepCancelled: _step_cancelled, StepSkipped: _step_skipped, StepPaused: _step_paused,
    StepResumed: _step_resumed, RunQueued: _run_moved, RunStarted: _run_moved, RunCompleted: _run_ended,
    RunFailed: _run_ended, RunRejected: _run_ended, RunCancelled: _run_ended, RunLaunched: _run_launched,
    MapItemCompleted: _map_completed, MapItemFailed: _map_failed, AnomalyDetected: _anomaly,
    ToolCalled: _tool_called, ToolResult: _tool_result,
}
"""The framed event types built as Structs; the others (``projections.frames.frames_of``) as dicts."""
PLAIN_ROWS = frozenset({StepStarted, StepCompleted, StepFailed, StepCancelled, StepSkipped, StepResumed, RunQueued,
                         RunStarted, MapItemCompleted, MapItemFailed, AnomalyDetected, ToolCalled, ToolResult})
"""The types ``encode_rows`` frames on its shortest path: one frame each, built as a Struct, and the run
neither learned (RunLaunched) nor forgotten (an ending) by them."""


# -- a run's report passed through as its JSON text -------------------------------------------------
#
# A run's last event carries its report (markdown, kilobytes: 30% of a replay's bytes on the
# bench/scale.py store). A replay decodes that event with the report left as its JSON text
# (``msgspec.Raw``) and the frame embeds that text as it is, when it is exactly what encoding the
# decoded report would give (``with_report_text``): the live frame's bytes.

_ENDED_WITH_REPORT = (RunCompleted, RunFailed, RunRejected, RunCancelled)
REPORT_TEXT: dict[str, msgspec.json.Decoder[Any]] = {}
ENDS: dict[type, Any] = dict(ENDING_STATUS)
"""The status each ending event gives its run, by its class: the real ones and their report-as-text ones."""
for _cls in _ENDED_WITH_REPORT:
    _text: type[Event] = msgspec.defstruct(  # type: ignore[assignment]  # an Event: it is its base
        f"_{_cls.__name__}Text", [("report", msgspec.Raw, msgspec.Raw(b'""'))], bases=(_cls,), tag=_cls.__name__,
        frozen=True)
    REPORT_TEXT[_cls.__name__] = msgspec.json.Decoder(_text)
    ENDS[_text] = ENDING_STATUS[_cls]
    STRUCTS[_text] = _run_ended

# Escapes msgspec never writes (it writes \" \\ \b \f \n \r \t, and \u00XX in lower case for the
# other control characters): text another writer made, or a NUL / lone surrogate to make storable.
UNUSUAL_TEXT = re.compile(r"\\(?:/|u(?!00(?:0[1-7bef]|1[0-9a-f])))")
UNUSUAL = re.compile(UNUSUAL_TEXT.pattern.encode())


def decode_unless(decoder: msgspec.json.Decoder[Any], suspect: Callable[[Any], Any], data: bytes | str) -> Any:
    """``data`` decoded by ``decoder``, or None when ``suspect`` finds something in it or it does not decode
    (either way the row is then decoded the usual way, which names the problem)."""
    if suspect(data) is not None:
        return None
    try:
        return decoder.decode(data)
    except (msgspec.DecodeError, ValueError):
        return None


def with_report_text(decoder: msgspec.json.Decoder[Any], unusual: Callable[[Any], Any],
                      data: bytes | str) -> Event | None:
    """The ending event in ``data`` with its report as JSON text, or None (then decoded as usual) when
    that text might not be what msgspec encodes the decoded report to: an escape msgspec does not
    write anywhere in the row, a report that is not a string, bytes that are not UTF-8."""
    event = decode_unless(decoder, unusual, data)
    if event is None:
        return None
    text = event.report
    if memoryview(text)[0] != 0x22:  # not a string: the usual decoding refuses it
        return None
    if isinstance(data, bytes) and not data.isascii():
        try:
            str(text, "utf-8")  # msgspec.Raw does not check it
        except UnicodeDecodeError:
            return None
    return event  # type: ignore[no-any-return]


# A launch read with its snapshot left as JSON text (``Framer._with_plan``, which puts the frame's plan
# steps in its place: ``_run_launched_planned`` builds the frame from them).
LAUNCHED = RunLaunched.__name__
_RunLaunchedText: type[Event] = msgspec.defstruct(  # type: ignore[assignment]  # an Event: it is its base
    "_RunLaunchedText", [("snapshot", msgspec.Raw)], bases=(RunLaunched,), tag=LAUNCHED, frozen=True, kw_only=True)
LAUNCH_TEXT: msgspec.json.Decoder[Any] = msgspec.json.Decoder(_RunLaunchedText)
SNAPSHOT = msgspec.json.Decoder(FlowSnapshot)



def _run_launched_planned(i: int, r: str, p: str, e: Any) -> _Frame:
    return _launched(i, r, p, e, e.snapshot)


STRUCTS[_RunLaunchedText] = _run_launched_planned
