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
| ToolCalled | ``tool_call`` {step_id, attempt, call_id, tool, arguments, turn, seq, role} |
| ToolResult | ``tool_result`` {step_id, attempt, call_id, tool, ok, outcome, error, bytes, truncated, sha256, result (its first FRAME_RESULT_CHARS characters; the event has it whole), result_cut, role} |
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

A replay (a stream resuming from a position) gets the same frames already
encoded, without their dicts: ``Framer.encode_rows`` builds most of them as
``msgspec.Struct``s of their own shape (``projections.frame_structs``;
keep both in step: tests/unit/test_frames.py compares their bytes on every
framed type). The projector keeps each event's frames encoded
(``projections.kept_frames``). A run's report goes into its last frame as the JSON
text it was stored as, not decoded and encoded again, whenever that text is
what msgspec would write for it (``with_report_text``), and a launch's plan
is built and encoded once per distinct snapshot text, not decoded again for
every run launched with it (``Framer._with_plan``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import msgspec

from eventstore import RecordedEvent
from flows.codec import CODEC
from flows.events import (
    RUN_STREAM_PREFIX,
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
from projections.frame_structs import (
    ENDS,
    FRAME_RESULT_CHARS,
    LAUNCH_TEXT,
    LAUNCHED,
    PLAIN_ROWS,
    REPORT_TEXT,
    SNAPSHOT,
    STRUCTS,
    UNUSUAL,
    UNUSUAL_TEXT,
    decode_unless,
    plan_steps,
    with_report_text,
)
from projections.source import FramedRow, decode, read_event, suspect_search

log = logging.getLogger(__name__)

Frame = dict[str, Any]

# The event types that give frames (the table above, the cases of ``frames_of``: keep them together);
# a reader of the log for frames asks the database for these alone (``projections.source.read_framed``).
FRAMED_TYPES: frozenset[str] = frozenset(cls.__name__ for cls in (
    RunLaunched, RunQueued, RunStarted, StepStarted, StepCompleted, StepFailed, StepCancelled, StepSkipped,
    StepPaused, StepResumed, AnomalyDetected, ToolCalled, ToolResult, RunCompleted, RunFailed, RunRejected,
    RunCancelled, RunForked, MapItemCompleted, MapItemFailed,
    # the task events that can move their step (``flows.tasks.run.step_move``; the others give no frame)
    TaskStarted, TaskBlocked, TaskReviewed, TaskAnswered, TaskFailed, TaskDone, TaskAborted))


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
        self._plans: dict[bytes, msgspec.Raw | None] = {}  # a launch's plan steps (as JSON) by its snapshot's text
        self._tables_of: dict[type, Any] = {}  # encode_rows' tables, by the kind of a page's data

    def learn(self, projects: Mapping[str, str]) -> None:
        """Know these runs' projects (``run -> project``) without asking ``project_of`` for each."""
        for run_id, project in projects.items():
            self._projects.setdefault(run_id, project)

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
        out = frames_of(base, event)
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

    def encode_rows(self, rows: Sequence[FramedRow], project_id: str | None = None) -> Encoded:
        """The frames of these run events, already JSON: what ``event_frames`` gives for each, encoded as
        ``msgspec.json`` encodes those dicts (byte for byte), without building the dicts.

        ``rows`` are ``projections.source.read_framed_rows``'s. With ``project_id``,
        the frames of other projects' runs are left out (as ``Subscriber.matches``
        leaves them out). What a stream resuming from a position sends: each
        row's data is decoded into its event as a projection decodes it (a row
        that does not decode is logged and gives no frame, as ``frames``), and
        its frames are built as ``msgspec.Struct``s of their own shape
        (``STRUCTS``; the few other types as their dicts) and encoded at once,
        one row after the other: a page's events are never all alive together.
        """
        out = Encoded()
        if not rows:
            return out
        ids, types, texts = out.ids, out.types, out.json
        add_id, add_type, add_text = ids.append, types.append, texts.append
        projects = self._projects
        encode = _encode
        data = rows[0][3]
        # A page's data is all JSON text (bytes from either database's query, str from another caller)
        # or all JSON values.
        if not isinstance(data, (bytes, str)):
            for position, run_id, type_name, data, schema_version in rows:
                self._encode_row(out, position, run_id, type_name, data, schema_version, project_id, None, {})
            return out
        suspect = suspect_search(data)
        # Types read with part of their text kept as it is (not while an upcaster reads the type):
        # the ending events' report, a launch's snapshot (``with_report_text``, ``_with_plan``).
        plain, partly = self._tables(type(data), suspect)
        for position, run_id, type_name, data, schema_version in rows:
            # Most rows: a type of one frame built as a Struct, no escape to take care of, a run that is
            # neither launched nor ended by it (``PLAIN_ROWS``); the others, and any surprise, row by row.
            how = plain.get(type_name)
            if how is not None and suspect(data) is None:
                try:
                    event = how[0](data)
                except (msgspec.DecodeError, ValueError):
                    pass  # _encode_row's read_event says why, and skips it
                else:
                    project = projects.get(run_id)
                    if project is None:
                        project = self._project(run_id)
                    if project_id is None or project == project_id:
                        built = how[1](position, run_id, project, event)
                        add_id(position)
                        add_type(built.type)
                        add_text(encode(built))
                    continue
            self._encode_row(out, position, run_id, type_name, data, schema_version, project_id, suspect, partly)
        return out

    def _tables(self, kind: type, suspect: Callable[[Any], Any]) -> tuple[
            dict[str, tuple[Callable[[Any], Any], Callable[..., Any]]], dict[str, Callable[[Any], Event | None]]]:
        """For pages of data of this kind (bytes or str): the plain types' (decode, build), and the types
        read partly as text, kept while the codec's table of fast decoders stays the same."""
        fast = CODEC.fast()
        cached = self._tables_of.get(kind)
        if cached is not None and cached[0] is fast:
            return cached[1], cached[2]
        plain = {name: (decoder.decode, STRUCTS[CODEC.types[name]]) for name, decoder in fast.items()
                 if CODEC.types.get(name) in PLAIN_ROWS}
        unusual = (UNUSUAL if kind is bytes else UNUSUAL_TEXT).search
        partly: dict[str, Callable[[Any], Event | None]] = {
            name: functools.partial(with_report_text, d, unusual) for name, d in REPORT_TEXT.items() if name in fast}
        if LAUNCHED in fast:
            partly[LAUNCHED] = functools.partial(self._with_plan, suspect)
        self._tables_of[kind] = (fast, plain, partly)
        return plain, partly

    def _encode_row(self, out: Encoded, position: int, run_id: str, type_name: str, data: Any,
                    schema_version: Any, project_id: str | None, suspect: Callable[[Any], Any] | None,
                    partly: dict[str, Callable[[Any], Event | None]]) -> None:
        """One row's frames into ``out``, whatever its type and text (``encode_rows``' careful path)."""
        event: Event | None = None
        if type_name in partly:
            event = partly[type_name](data)
        if event is None and suspect is not None:
            decoder = CODEC.fast().get(type_name)
            if decoder is not None:
                event = decode_unless(decoder, suspect, data)  # None: read_event says why, and skips it
        if event is None:
            event = read_event(type_name, data, schema_version, position)
            if event is None:
                return
        cls = type(event)
        projects = self._projects
        if isinstance(event, RunLaunched):
            projects[run_id] = event.project_id
        project = projects.get(run_id)
        if project is None:
            project = self._project(run_id)
        if project_id is None or project == project_id:
            build = STRUCTS.get(cls)
            built = build(position, run_id, project, event) if build is not None else None
            structs: Iterable[Any] = (built if type(built) is tuple else (built,)) if built is not None else \
                frames_of({"id": position, "run_id": run_id, "project_id": project}, event)
            for frame in structs:
                out.ids.append(position)
                out.types.append(frame["type"] if type(frame) is dict else frame.type)
                out.json.append(_encode(frame))
        if cls in ENDS:
            projects.pop(run_id, None)

    def _with_plan(self, suspect: Callable[[Any], Any], data: bytes | str) -> Event | None:
        """The RunLaunched in ``data`` with its frame's plan steps in place of its snapshot
        (``_RunLaunchedText``), or None (then decoded as usual): a log holds a few distinct
        snapshots (one per flow and band) thousands of times over, and decoding one costs more
        than the rest of the event. Each distinct snapshot text is decoded (and so validated)
        once, as a ``FlowSnapshot``, exactly as inside the event: the same text gives the same
        answer, so a launch whose snapshot does not decode still gives no frame. The plan is kept
        as its steps' JSON (``msgspec.Raw``): each launch's frame copies it, not encoding it again."""
        event = decode_unless(LAUNCH_TEXT, suspect, data)
        if event is None:
            return None
        text = bytes(event.snapshot)
        plan = self._plans.get(text, _UNSEEN)
        if plan is _UNSEEN:
            try:
                plan = msgspec.Raw(_encode(plan_steps(SNAPSHOT.decode(text))))
            except (msgspec.DecodeError, ValueError):
                plan = None
            if len(self._plans) >= _PLANS_KEPT:
                self._plans.clear()
            self._plans[text] = plan
        if plan is None:
            return None
        return msgspec.structs.replace(event, snapshot=plan)  # type: ignore[no-any-return]

    def encode_records(self, records: Iterable[RecordedEvent], project_id: str | None = None) -> Encoded:
        """``encode_rows`` for recorded events (data already JSON values); other streams give none."""
        cut = len(RUN_STREAM_PREFIX)
        return self.encode_rows([(r.position, r.stream_id[cut:], r.type, r.data, r.metadata.get("schema_version"))
                                 for r in records if r.stream_id.startswith(RUN_STREAM_PREFIX)], project_id)


class Encoded:
    """Durable frames already encoded: ``ids`` (their SSE id), ``types`` (their ``type``), ``json``
    (the frame as ``msgspec.json`` encodes its dict), in order. What ``Framer.encode_rows`` makes."""

    __slots__ = ("ids", "types", "json")

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.types: list[str] = []
        self.json: list[bytes] = []

    def __len__(self) -> int:
        return len(self.ids)

    def frames(self) -> list[Frame]:
        """The frames as dicts again (decoded from their JSON)."""
        return [_decode(text) for text in self.json]


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(dict[str, Any]).decode


def _step_frame(base: Frame, event: Event, **fields: Any) -> Frame:
    return {**base, "type": "flow_run_step_updated", "step_id": event.step_id,  # type: ignore[attr-defined]
            "status": step_status_of(event), "at": event.at, **fields}


def _run_frame(base: Frame, event: Event, **fields: Any) -> Frame:
    status = run_status_of(event)
    return {**base, "type": "flow_run_step_updated", "step_id": None, "status": status,
            "run_status": status, "at": event.at, **fields}


def frames_of(base: Frame, e: Event) -> list[Frame]:
    """The frames of one event (the table above) as dicts, each starting with ``base``'s keys
    (``id``, ``run_id``, ``project_id``); [] for an event that gives none."""
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
                     "tool": e.tool, "arguments": e.arguments, "turn": e.turn, "seq": e.seq, "role": e.role, "at": e.at}]
        case ToolResult():
            return [{**base, "type": "tool_result", "step_id": e.step_id, "attempt": e.attempt, "call_id": e.call_id,
                     "tool": e.tool, "ok": e.ok, "outcome": e.outcome, "error": e.error, "bytes": e.bytes,
                     "truncated": e.truncated, "sha256": e.sha256, "result": e.result[:FRAME_RESULT_CHARS],
                     "result_cut": len(e.result) > FRAME_RESULT_CHARS, "role": e.role, "at": e.at}]
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


_PLANS_KEPT = 256  # distinct snapshots a replay keeps decoded (then it starts again)
_UNSEEN: Any = object()
