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
``msgspec.Struct``s of their own shape (``_STRUCTS``, below the dict
builders; keep both in step: tests/unit/test_frames.py compares their bytes
on every framed type). A run's report goes into its last frame as the JSON
text it was stored as, not decoded and encoded again, whenever that text is
what msgspec would write for it (``_with_report_text``), and a launch's plan
is built and encoded once per distinct snapshot text, not decoded again for
every run launched with it (``Framer._with_plan``).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

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
from flows.model import FlowSnapshot
from flows.status import ENDING_STATUS, run_status_of, step_status_of
from flows.tasks.run import step_move
from projections.source import FramedRow, decode, read_event, suspect_search

log = logging.getLogger(__name__)

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

    def encode_rows(self, rows: Sequence[FramedRow], project_id: str | None = None) -> Encoded:
        """The frames of these run events, already JSON: what ``event_frames`` gives for each, encoded as
        ``msgspec.json`` encodes those dicts (byte for byte), without building the dicts.

        ``rows`` are ``projections.source.read_framed_rows``'s. With ``project_id``,
        the frames of other projects' runs are left out (as ``Subscriber.matches``
        leaves them out). What a stream resuming from a position sends: each
        row's data is decoded into its event as a projection decodes it (a row
        that does not decode is logged and gives no frame, as ``frames``), and
        its frames are built as ``msgspec.Struct``s of their own shape
        (``_STRUCTS``; the few other types as their dicts) and encoded at once,
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
        # the ending events' report, a launch's snapshot (``_with_report_text``, ``_with_plan``).
        plain, partly = self._tables(type(data), suspect)
        for position, run_id, type_name, data, schema_version in rows:
            # Most rows: a type of one frame built as a Struct, no escape to take care of, a run that is
            # neither launched nor ended by it (``_PLAIN_ROWS``); the others, and any surprise, row by row.
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
        plain = {name: (decoder.decode, _STRUCTS[CODEC.types[name]]) for name, decoder in fast.items()
                 if CODEC.types.get(name) in _PLAIN_ROWS}
        unusual = (_UNUSUAL if kind is bytes else _UNUSUAL_TEXT).search
        partly: dict[str, Callable[[Any], Event | None]] = {
            name: functools.partial(_with_report_text, d, unusual) for name, d in _REPORT_TEXT.items() if name in fast}
        if _LAUNCHED in fast:
            partly[_LAUNCHED] = functools.partial(self._with_plan, suspect)
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
                event = _decode_unless(decoder, suspect, data)  # None: read_event says why, and skips it
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
            build = _STRUCTS.get(cls)
            built = build(position, run_id, project, event) if build is not None else None
            structs: Iterable[Any] = (built if type(built) is tuple else (built,)) if built is not None else \
                _frames({"id": position, "run_id": run_id, "project_id": project}, event)
            for frame in structs:
                out.ids.append(position)
                out.types.append(frame["type"] if type(frame) is dict else frame.type)
                out.json.append(_encode(frame))
        if cls in _ENDS:
            projects.pop(run_id, None)

    def _with_plan(self, suspect: Callable[[Any], Any], data: bytes | str) -> Event | None:
        """The RunLaunched in ``data`` with its frame's plan steps in place of its snapshot
        (``_RunLaunchedText``), or None (then decoded as usual): a log holds a few distinct
        snapshots (one per flow and band) thousands of times over, and decoding one costs more
        than the rest of the event. Each distinct snapshot text is decoded (and so validated)
        once, as a ``FlowSnapshot``, exactly as inside the event: the same text gives the same
        answer, so a launch whose snapshot does not decode still gives no frame. The plan is kept
        as its steps' JSON (``msgspec.Raw``): each launch's frame copies it, not encoding it again."""
        event = _decode_unless(_LAUNCH_TEXT, suspect, data)
        if event is None:
            return None
        text = bytes(event.snapshot)
        plan = self._plans.get(text, _UNSEEN)
        if plan is _UNSEEN:
            try:
                plan = msgspec.Raw(_encode(_plan_steps(_SNAPSHOT.decode(text))))
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


def kept_sse(position: int, run_id: str, project_id: str, event: Event) -> bytes:
    """The frames of one decoded event as a stream sends them (text/event-stream: ``id:``, ``event:`` and
    ``data:`` lines, a blank line after each), b"" for an event that gives none: a ``stream_frames`` row's
    body (``projections.tables``). The same bytes as ``event_frames`` encoded by ``sse_lines``.

    The projector keeps these for every event it applies; a resume sends them as they are. So they are
    the event as decoded then: a change to a frame's shape here or to an upcaster must bump
    ``projections.tables.PROJECTION_VERSION`` (the next start rebuilds them).
    """
    build = _STRUCTS.get(event.__class__)
    if build is not None:
        built: Any = build(position, run_id, project_id, event)
        if type(built) is not tuple:
            return b"id: %d\nevent: %b\ndata: %b\n\n" % (position, built.type.encode(), _encode(built))
        frames: Iterable[Any] = built
    else:
        frames = _frames({"id": position, "run_id": run_id, "project_id": project_id}, event)
    return b"".join(b"id: %d\nevent: %b\ndata: %b\n\n" % (
        position, (frame["type"] if type(frame) is dict else frame.type).encode(), _encode(frame))
        for frame in frames)


def kept_rows(items: Iterable[tuple[str, Event, int, int]], project_of: Callable[[str], str | None]
              ) -> list[tuple[int, str, str, bytes]]:
    """The ``stream_frames`` rows (position, run_id, project_id, body) of these decoded run events
    (``projections.source.Item``s, in order): one for each event that gives frames.

    ``project_of(run_id)`` is the project the read tables hold for a run (None: not launched); a
    launch in ``items`` names its own, as the stream's ``Framer`` learns it. An event whose frames
    cannot be built is logged and keeps none (a replay of it would fail the same way).
    """
    out: list[tuple[int, str, str, bytes]] = []
    add = out.append
    projects: dict[str, str] = {}
    structs = _STRUCTS
    for run_id, event, position, _ in items:
        cls = event.__class__
        if cls not in structs and not isinstance(event, (TaskEvent, RunForked)):
            continue  # gives no frame (RunRecovered, the other task events' phases are checked by _frames)
        if cls is RunLaunched:
            project = projects[run_id] = event.project_id  # type: ignore[attr-defined]
        else:
            known = projects.get(run_id)
            if known is not None:
                project = known
            else:
                project = projects[run_id] = project_of(run_id) or ""
        try:
            body = kept_sse(position, run_id, project, event)
        except Exception:
            log.exception("cannot build the frames of event %d (%s of run %s)", position, cls.__name__, run_id)
            continue
        if body:
            add((position, run_id, project, body))
    return out


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


class KeptPage:
    """Durable frames as the projector kept them (``stream_frames``): ``sse``, their text/event-stream
    bytes in order, as one value; ``last``, the position a resume goes on from after them.

    An SSE stream sends ``sse`` as it is. ``ids``, ``types`` and ``json`` (``Encoded``'s, for a
    WebSocket and for tests) are read out of it when asked for: a frame's JSON never holds a line
    break, so each frame is the text up to its blank line.
    """

    __slots__ = ("sse", "last", "_split")

    def __init__(self, sse: bytes, last: int) -> None:
        self.sse = sse
        self.last = last
        self._split: Encoded | None = None

    def __len__(self) -> int:
        return self.sse.count(b"\n\n")

    def _encoded(self) -> Encoded:
        if self._split is None:
            out = self._split = Encoded()
            for lines in self.sse.split(b"\n\n")[:-1]:
                fid, kind, data = lines.split(b"\n", 2)
                out.ids.append(int(fid[4:]))
                out.types.append(kind[7:].decode())
                out.json.append(data[6:])
        return self._split

    @property
    def ids(self) -> list[int]:
        return self._encoded().ids

    @property
    def types(self) -> list[str]:
        return self._encoded().types

    @property
    def json(self) -> list[bytes]:
        return self._encoded().json

    def frames(self) -> list[Frame]:
        """The frames as dicts again (decoded from their JSON)."""
        return self._encoded().frames()


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(dict[str, Any]).decode


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


# -- frames as Structs of their own shape, for a replay (``Framer.encode``) ----------------------------
#
# Each Struct's fields are in the order of the frame dict's keys above (a Struct encodes its fields in
# the order they are declared, base class first), so it encodes to the same bytes as the dict; a key
# the dict has only sometimes is UNSET (left out) otherwise. tests/unit/test_frames.py compares both
# encodings on every framed type. The frame types left out here (task events, forks) are built as
# their dict: they are few in a log.


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
    status = _ENDS[type(e)]
    return _RunEndedF(i, r, p, _STEP, None, status, status, e.at, getattr(e, "reason", ""), getattr(e, "by", ""),
                      e.report)


def _run_launched(i: int, r: str, p: str, e: RunLaunched) -> _Frame:
    return _launched(i, r, p, e, _plan_steps(e.snapshot))


def _plan_steps(snapshot: FlowSnapshot) -> list[_PlanStepF]:
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


_STRUCTS: dict[type[Event], _Build] = {
    StepStarted: _step_started, StepCompleted: _step_completed, StepFailed: _step_failed,
    StepCancelled: _step_cancelled, StepSkipped: _step_skipped, StepPaused: _step_paused,
    StepResumed: _step_resumed, RunQueued: _run_moved, RunStarted: _run_moved, RunCompleted: _run_ended,
    RunFailed: _run_ended, RunRejected: _run_ended, RunCancelled: _run_ended, RunLaunched: _run_launched,
    MapItemCompleted: _map_completed, MapItemFailed: _map_failed, AnomalyDetected: _anomaly,
    ToolCalled: _tool_called, ToolResult: _tool_result,
}
"""The framed event types built as Structs; the others (``_frames``) as dicts."""
_PLAIN_ROWS = frozenset({StepStarted, StepCompleted, StepFailed, StepCancelled, StepSkipped, StepResumed, RunQueued,
                         RunStarted, MapItemCompleted, MapItemFailed, AnomalyDetected, ToolCalled, ToolResult})
"""The types ``encode_rows`` frames on its shortest path: one frame each, built as a Struct, and the run
neither learned (RunLaunched) nor forgotten (an ending) by them."""


# -- a run's report passed through as its JSON text -------------------------------------------------
#
# A run's last event carries its report (markdown, kilobytes: 30% of a replay's bytes on the
# bench/scale.py store). A replay decodes that event with the report left as its JSON text
# (``msgspec.Raw``) and the frame embeds that text as it is, when it is exactly what encoding the
# decoded report would give (``_with_report_text``): the live frame's bytes.

_ENDED_WITH_REPORT = (RunCompleted, RunFailed, RunRejected, RunCancelled)
_REPORT_TEXT: dict[str, msgspec.json.Decoder[Any]] = {}
_ENDS: dict[type, Any] = dict(ENDING_STATUS)
"""The status each ending event gives its run, by its class: the real ones and their report-as-text ones."""
for _cls in _ENDED_WITH_REPORT:
    _text: type[Event] = msgspec.defstruct(  # type: ignore[assignment]  # an Event: it is its base
        f"_{_cls.__name__}Text", [("report", msgspec.Raw, msgspec.Raw(b'""'))], bases=(_cls,), tag=_cls.__name__,
        frozen=True)
    _REPORT_TEXT[_cls.__name__] = msgspec.json.Decoder(_text)
    _ENDS[_text] = ENDING_STATUS[_cls]
    _STRUCTS[_text] = _run_ended

# Escapes msgspec never writes (it writes \" \\ \b \f \n \r \t, and \u00XX in lower case for the
# other control characters): text another writer made, or a NUL / lone surrogate to make storable.
_UNUSUAL_TEXT = re.compile(r"\\(?:/|u(?!00(?:0[1-7bef]|1[0-9a-f])))")
_UNUSUAL = re.compile(_UNUSUAL_TEXT.pattern.encode())


def _decode_unless(decoder: msgspec.json.Decoder[Any], suspect: Callable[[Any], Any], data: bytes | str) -> Any:
    """``data`` decoded by ``decoder``, or None when ``suspect`` finds something in it or it does not decode
    (either way the row is then decoded the usual way, which names the problem)."""
    if suspect(data) is not None:
        return None
    try:
        return decoder.decode(data)
    except (msgspec.DecodeError, ValueError):
        return None


def _with_report_text(decoder: msgspec.json.Decoder[Any], unusual: Callable[[Any], Any],
                      data: bytes | str) -> Event | None:
    """The ending event in ``data`` with its report as JSON text, or None (then decoded as usual) when
    that text might not be what msgspec encodes the decoded report to: an escape msgspec does not
    write anywhere in the row, a report that is not a string, bytes that are not UTF-8."""
    event = _decode_unless(decoder, unusual, data)
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
_LAUNCHED = RunLaunched.__name__
_RunLaunchedText: type[Event] = msgspec.defstruct(  # type: ignore[assignment]  # an Event: it is its base
    "_RunLaunchedText", [("snapshot", msgspec.Raw)], bases=(RunLaunched,), tag=_LAUNCHED, frozen=True, kw_only=True)
_LAUNCH_TEXT: msgspec.json.Decoder[Any] = msgspec.json.Decoder(_RunLaunchedText)
_SNAPSHOT = msgspec.json.Decoder(FlowSnapshot)
_PLANS_KEPT = 256  # distinct snapshots a replay keeps decoded (then it starts again)
_UNSEEN: Any = object()


def _run_launched_planned(i: int, r: str, p: str, e: Any) -> _Frame:
    return _launched(i, r, p, e, e.snapshot)


_STRUCTS[_RunLaunchedText] = _run_launched_planned
