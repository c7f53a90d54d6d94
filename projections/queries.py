"""What the HTTP layer and the CLI read: runs, steps, reports, anomalies, as JSON-able dicts.

Queries read the tables the projector keeps. For read-your-writes, give the
ReadModel the projector and call ``wait_for(position)`` with the position a
command returned before querying.

The tables point at the events holding what never changes or is long (the
graph a run was launched with, a step's output and prompt, a run's report)
rather than copying them; ``get_run`` and ``report`` read those few events by
position, in the same snapshot as the rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import msgspec
import sqlalchemy as sa

from flows.events import (
    Event,
    MapItemCompleted,
    MapItemFailed,
    RunLaunched,
    StepResumed,
    StepStarted,
    ToolCalled,
    ToolResult,
    stream_of,
)
from flows.kinds import StepKind
from flows.model import StepSpec
from flows.status import RUN_TERMINAL, RunStatus
from projections.batch import driver_of
from projections.source import decode_events, read_events, schema_version_column
from projections.tables import (
    PROJECTION_VERSION,
    STEP_FIELDS,
    anomalies,
    decode_steps,
    flow_runs,
    flow_steps,
    projection_checkpoints,
    projection_errors,
    reports,
)

_decode = msgspec.json.Decoder().decode

_RUN_JSON = ("inputs",)
# Step fields holding an event's position, and the key their text goes under.
_STEP_TEXTS = {"output_position": "output", "prompt_position": "prompt"}
_OUTPUT, _PROMPT = STEP_FIELDS.index("output_position"), STEP_FIELDS.index("prompt_position")
# The step's fields after those its dict starts with (below), in STEP_FIELDS order.
_STEP_REST = [(i, name) for i, name in enumerate(STEP_FIELDS) if name not in ("step_id", "ordinal", "persona", "due_at")]
_STEP_ID, _ORDINAL, _PERSONA = (STEP_FIELDS.index(name) for name in ("step_id", "ordinal", "persona"))
MAX_PAGE = 500
_OPEN_STATUSES = tuple(s.value for s in RunStatus if s.value not in RUN_TERMINAL)
_OPEN_RUNS = ("SELECT run_id, launched_position, parked_until, flow, launched_at FROM flow_runs WHERE status IN ("
              + ", ".join(f"'{s}'" for s in _OPEN_STATUSES) + ")")
"""The open runs (``ReadModel.open_runs``), through ``flow_runs_status_idx``."""


class Parked(NamedTuple):
    """A run the read tables show waiting only for a person (``flow_runs.parked_until``)."""

    flow: str
    launched_at: float
    due_at: float | None  # its earliest approval timer; None: none


class OpenRuns(NamedTuple):
    """``ReadModel.open_runs``: the runs not ended as of ``position`` (each with its launch position),
    and those of them parked at an approval (``parked``)."""

    position: int
    runs: dict[str, int]
    parked: dict[str, Parked]


class UnknownCursor(LookupError):
    """A list query's cursor names no run: it is not one a page handed out."""

    def __init__(self, cursor: str) -> None:
        shown = cursor if len(cursor) <= 64 else cursor[:64] + "..."
        super().__init__(f"cursor {shown!r} names no run; pass the next_cursor of the page before, "
                         "or no cursor for the first page")
        self.cursor = cursor


_CHILDREN = sa.select(flow_runs.c.run_id, flow_runs.c.flow, flow_runs.c.status, flow_runs.c.parent_link,
                      flow_runs.c.forked_from).order_by(flow_runs.c.run_id)
"""Runs started from a run (its forks and retries), oldest first."""


def _run_dict(row: Any) -> dict[str, Any]:
    out = dict(row)
    for name in _RUN_JSON:
        out[name] = _decode(out[name])
    return out


def _step_dict(values: list[Any], spec: StepSpec | None, events: dict[int, Event]) -> dict[str, Any]:
    """A step as the API shows it: its values (STEP_FIELDS), its spec in the pinned graph, its texts."""
    step_id = values[_STEP_ID]
    if spec is None:  # not in the graph the run was launched with: cannot happen, see apply
        spec = StepSpec(id=step_id, kind="")  # type: ignore[arg-type]  # shown as no kind
    out: dict[str, Any] = {
        "step_id": step_id,
        "ordinal": values[_ORDINAL],
        "kind": spec.kind,
        "persona": values[_PERSONA],
        "label": spec.label or spec.id,
        "deps": list(spec.deps),
        "trigger_rule": spec.trigger_rule,
        "condition": spec.when,
    }
    for index, name in _STEP_REST:
        text = _STEP_TEXTS.get(name)
        if text is None:
            out[name] = values[index]
        else:
            out[text] = _text(events.get(values[index]), text)
    out["agent"] = out["persona"]  # the frames' name for it (DESIGN §7)
    return out


def _specs(event: Event | None) -> dict[str, StepSpec]:
    """The steps of the graph a run was launched with, by id."""
    if not isinstance(event, RunLaunched):
        return {}
    return {spec.id: spec for spec in event.snapshot.steps}


def _text(event: Event | None, name: str) -> str:
    """A step's ``output`` or ``prompt`` as the event at its position holds it ("" for none)."""
    if event is None:
        return ""
    if isinstance(event, StepResumed):  # as in evolve: the approver's comment is the gate's output
        return event.comment
    return getattr(event, name, "")


# A run's report is in its terminal event, which its reports row points at.
_REPORT = ("SELECT e.position, e.type, e.data, {0} FROM reports r JOIN events e ON e.position = r.position "
           "WHERE r.run_id = :run_id")
# The run's row and the position of its terminal event (NULL until it ended), in one read.
_RUN = (
    sa.select(flow_runs, reports.c.position.label("report_position"))
    .select_from(flow_runs.outerjoin(reports, reports.c.run_id == flow_runs.c.run_id))
)


_STEP_ANOMALIES = (sa.select(anomalies.c.position, anomalies.c.step_id, anomalies.c.attempt, anomalies.c.kind,
                             anomalies.c.severity, anomalies.c.detail, anomalies.c.action, anomalies.c.at)
                   .order_by(anomalies.c.position))


def _step_anomalies(conn: sa.Connection, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """A run's anomalies by step, oldest first (what the ``anomaly`` frames carried)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in conn.execute(_STEP_ANOMALIES.where(anomalies.c.run_id == run_id)).mappings():
        found = dict(row)
        out.setdefault(found.pop("step_id"), []).append(found)
    return out


def _problems(conn: sa.Connection, run_id: str) -> list[dict[str, Any]]:
    query = (sa.select(projection_errors).where(projection_errors.c.run_id == run_id)
             .order_by(projection_errors.c.position))
    return [dict(r) for r in conn.execute(query).mappings()]


class ReadModel:
    """Queries over the read tables of one database.

    ``database`` is the store's (``store.database``); ``projector``, when given,
    makes ``wait_for`` wait for the live projector; ``read``, when given, runs a SELECT (``?``
    placeholders) on the store's own reading connections (``SqlEventStore.read_sql``): the one-row
    lookups asked once per run (``run_project``) are then one round trip, not a pooled checkout's.
    """

    def __init__(self, database: sa.Engine, projector: Any = None,
                 read: Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]] | None = None) -> None:
        self.database = database
        self.projector = projector
        self._read = read

    def wait_for(self, position: int, timeout: float = 5.0) -> bool:
        """Wait until the tables reflect ``position``; True at once without a projector."""
        if self.projector is None or not position:
            return True
        return bool(self.projector.wait_for(position, timeout))

    def list_runs(
        self,
        project_id: str | None = None,
        status: str | None = None,
        flow: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
        text: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Runs newest first, filtered; and the cursor of the next page (None on the last).

        ``text`` keeps the runs whose id, flow, question or project holds it,
        ignoring case (``%`` and ``_`` in it are plain characters): filtered
        in SQL, so paging works through every run, not only a loaded page.

        The cursor is the last run id of the page: run ids are ULIDs, so
        "older than the cursor" is ``run_id < cursor`` and paging is stable
        while new runs arrive. A cursor that names no run raises
        UnknownCursor: compared as text, garbage such as ``zzz`` would
        otherwise quietly answer some other page (the first, for ``zzz``).
        """
        limit = max(1, min(int(limit), MAX_PAGE))
        query = sa.select(flow_runs)
        if project_id is not None:
            query = query.where(flow_runs.c.project_id == project_id)
        if status is not None:
            query = query.where(flow_runs.c.status == status)
        if flow is not None:
            query = query.where(flow_runs.c.flow == flow)
        if text:
            query = query.where(_text_matches(text))
        if cursor:
            query = query.where(flow_runs.c.run_id < cursor)
        query = query.order_by(flow_runs.c.run_id.desc()).limit(limit + 1)
        with self.database.connect() as conn:
            known = sa.select(flow_runs.c.run_id).where(flow_runs.c.run_id == cursor)
            if cursor and conn.execute(known).first() is None:
                raise UnknownCursor(cursor)
            rows = [_run_dict(r) for r in conn.execute(query).mappings()]
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (rows[-1]["run_id"] if more else None)

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """``{"run": {...}, "steps": [...], "report": markdown or None}``; None for an unknown run.

        Read in one transaction, so the run, its steps and its report agree.
        """
        with self._snapshot() as conn:
            row = conn.execute(_RUN.where(flow_runs.c.run_id == run_id)).mappings().first()
            if row is None:
                return None
            run = dict(row)
            ended = run.pop("report_position") or 0
            text = conn.execute(sa.select(flow_steps.c.steps).where(flow_steps.c.run_id == run_id)).scalar()
            steps = decode_steps(text) if text else []
            # Every event the answer needs, in one read: the launch (the steps'
            # specs), the steps' outputs and prompts, the report.
            launched = run["launched_position"]
            texts = [s[i] for s in steps for i in (_OUTPUT, _PROMPT)]
            events = read_events(conn, [launched, *texts, ended])
            problems = _problems(conn, run_id)
            children = [dict(r) for r in conn.execute(_CHILDREN.where(flow_runs.c.parent_run_id == run_id)).mappings()]
            calls = tool_calls(conn, run_id)
            seen = _step_anomalies(conn, run_id) if run["anomalies"] else {}
            specs = _specs(events.get(launched))
            maps = {sid for sid, spec in specs.items() if spec.kind == StepKind.MAP}
            items = map_items(conn, run_id, maps) if maps else {}
        step_list = [_step_dict(s, specs.get(s[_STEP_ID]), events) for s in steps]
        for step in step_list:
            step["tool_calls"] = calls.get(step["step_id"], [])
            step["anomaly_records"] = seen.get(step["step_id"], [])  # beside "anomalies", their count
            if step["step_id"] in maps:
                step["items"] = items.get(step["step_id"], [])
        out = _run_dict(run)
        out["usage"] = run_usage(step_list)
        markdown = getattr(events.get(ended), "report", "")
        return {"run": out, "steps": step_list, "report": markdown or None, "problems": problems,
                "children": children}

    def projection_errors(self, run_id: str) -> list[dict[str, Any]]:
        """The events of a run the projector could not apply (and skipped), oldest first.

        Each is ``{position, run_id, event_type, error}``. A run whose
        launch is among them has no row (``get_run`` is None) though the log
        has it.
        """
        with self.database.connect() as conn:
            return _problems(conn, run_id)

    def projection_problems(self, limit: int = 20) -> tuple[list[dict[str, Any]], int]:
        """The newest ``limit`` events the projector skipped, of any run, and how many there are in all."""
        newest = sa.select(projection_errors).order_by(projection_errors.c.position.desc()).limit(limit)
        with self._snapshot() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(projection_errors)).scalar_one()
            rows = [dict(r) for r in conn.execute(newest).mappings()] if total else []
        return rows, total

    def open_runs(self, name: str = "baton") -> OpenRuns | None:
        """The runs that had not ended as of the projection's checkpoint ``position``, each with the
        position of its launch, and those of them that only wait for a person (``OpenRuns``); None
        when the read tables cannot say (never built, or built by another ``PROJECTION_VERSION``).

        What an engine's recovery starts from (DESIGN §4): it then reads only
        the log after ``position``, and parks the ``parked`` runs without reading
        their streams. One indexed read of the runs not ended
        (``flow_runs_status_idx``), in the snapshot that holds the checkpoint,
        so its cost follows the unfinished runs, not the log. A run with an
        event the projector skipped is included whatever its row says (its
        row may be wrong), and never parked; its launch position is then the skipped event's
        when it has no row.
        """
        checkpoint = sa.select(projection_checkpoints.c.position, projection_checkpoints.c.version).where(
            projection_checkpoints.c.name == name)
        with self._snapshot() as conn:
            row = conn.execute(checkpoint).first()
            if row is None or row.version != PROJECTION_VERSION:
                return None
            runs: dict[str, int] = {}
            parked: dict[str, Parked] = {}
            # On the driver's cursor: a start reads every open run (10,000 parked: 25 ms through
            # SQLAlchemy's rows, most of what is left of a start's recovery).
            for run_id, launched_position, until, flow, launched_at in driver_of(conn).execute(_OPEN_RUNS).fetchall():
                runs[run_id] = launched_position
                if until is not None:
                    parked[run_id] = Parked(flow, launched_at, until or None)
            skipped = sa.select(projection_errors.c.run_id, sa.func.min(projection_errors.c.position)).where(
                projection_errors.c.run_id != "").group_by(projection_errors.c.run_id)
            for run_id, position in list(conn.execute(skipped)):
                parked.pop(run_id, None)
                if run_id not in runs:
                    launched = conn.execute(sa.select(flow_runs.c.launched_position)
                                            .where(flow_runs.c.run_id == run_id)).scalar()
                    runs[run_id] = launched if launched is not None else position
        return OpenRuns(row.position, runs, parked)

    @contextmanager
    def _snapshot(self) -> Iterator[sa.Connection]:
        """A connection whose reads all see one committed state of the tables."""
        with self.database.connect() as conn:
            if conn.dialect.name == "sqlite":
                # pysqlite opens no transaction for SELECTs; one BEGIN gives
                # the reads a single WAL snapshot (ended by the rollback on close).
                driver_of(conn).execute("BEGIN")
                yield conn
            else:
                with conn.execution_options(isolation_level="REPEATABLE READ").begin():
                    yield conn

    def report(self, run_id: str) -> str | None:
        """The run's report markdown; None until the run has ended (or when it has none)."""
        with self.database.connect() as conn:
            query = sa.text(_REPORT.format(schema_version_column(conn.dialect.name, "e.")))
            events = decode_events(conn.execute(query, {"run_id": run_id}))
        return next((getattr(e, "report", "") for e in events.values()), "") or None

    def anomalies(self, run_id: str) -> list[dict[str, Any]]:
        """The anomalies seen in a run, in the order they were recorded."""
        query = sa.select(anomalies).where(anomalies.c.run_id == run_id).order_by(anomalies.c.position)
        with self.database.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def open_run_projects(self) -> dict[str, str]:
        """``{run: project}`` of every run not ended as the read tables know ("" for none): what a
        frame hub learns at its start (one indexed read), instead of one ``run_project`` per run."""
        if self._read is not None:
            marks = ", ".join("?" for _ in _OPEN_STATUSES)
            rows = self._read(f"SELECT run_id, project_id FROM flow_runs WHERE status IN ({marks})",
                              tuple(_OPEN_STATUSES))
            return {str(r[0]): str(r[1]) for r in rows}
        query = sa.select(flow_runs.c.run_id, flow_runs.c.project_id).where(flow_runs.c.status.in_(_OPEN_STATUSES))
        with self.database.connect() as conn:
            return {r[0]: r[1] for r in conn.execute(query)}

    def run_project(self, run_id: str) -> str | None:
        """The project a run belongs to ("" for none); None for an unknown run."""
        if self._read is not None:
            rows = self._read("SELECT project_id FROM flow_runs WHERE run_id = ?", (run_id,))
            return str(rows[0][0]) if rows else None
        with self.database.connect() as conn:
            return conn.execute(
                sa.select(flow_runs.c.project_id).where(flow_runs.c.run_id == run_id)
            ).scalar()


def _text_matches(text: str) -> sa.ColumnElement[bool]:
    """Runs whose id, flow, question or project contains ``text``, case folded (LIKE, wildcards escaped)."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = f"%{escaped}%"
    columns = (flow_runs.c.run_id, flow_runs.c.flow, flow_runs.c.question, flow_runs.c.project_id)
    return sa.or_(*(sa.func.lower(c).like(pattern, escape="\\") for c in columns))


_TOOL_EVENTS = ("SELECT position, type, data, {0} FROM events WHERE stream_id = :stream "
                "AND type IN ('ToolCalled', 'ToolResult') ORDER BY version")


def tool_calls(conn: sa.Connection, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """A run's tool calls by step, in the order they were made, each with its result's facts (DESIGN §11).

    Read from the run's own events (not a read table): they are only read
    with one run, through the stream's index. A result's text is not copied:
    ``result_position`` is the ToolResult event that holds it
    (``GET /api/runs/{id}/events``).
    """
    query = sa.text(_TOOL_EVENTS.format(schema_version_column(conn.dialect.name)))
    events = decode_events(conn.execute(query, {"stream": stream_of(run_id)}))
    calls: dict[str, list[dict[str, Any]]] = {}
    made: dict[tuple[str, int, str, str], dict[str, Any]] = {}  # (step, attempt, role, call id)
    for position in sorted(events):
        event = events[position]
        if isinstance(event, ToolCalled):
            call = {"call_id": event.call_id, "attempt": event.attempt, "turn": event.turn, "seq": event.seq,
                    "tool": event.tool, "arguments": event.arguments, "position": position, "ok": None,
                    "outcome": "", "error": "", "bytes": 0, "truncated": False, "sha256": "",
                    "result_position": 0, "role": event.role}
            calls.setdefault(event.step_id, []).append(call)
            made[(event.step_id, event.attempt, event.role, event.call_id)] = call
        elif isinstance(event, ToolResult):
            found = made.get((event.step_id, event.attempt, event.role, event.call_id))
            if found is not None:
                found.update(ok=event.ok, outcome=event.outcome, error=event.error, bytes=event.bytes,
                             truncated=event.truncated, sha256=event.sha256, result_position=position)
    return calls


_MAP_EVENTS = ("SELECT position, type, data, {0} FROM events WHERE stream_id = :stream "
               "AND type IN ('StepStarted', 'MapItemCompleted', 'MapItemFailed') ORDER BY version")
ITEM_OUTPUT_CHARS = 2000  # of an item's result in a run's detail; the MapItemCompleted at ``position`` has it whole


def map_items(conn: sa.Connection, run_id: str, steps: set[str]) -> dict[str, list[dict[str, Any]]]:
    """The items of a run's map ``steps`` as the fold knows them, each ``{index, item, status, output,
    output_cut, error, attempt, position}``: ``pending`` until its try ends, ``completed`` (in any
    attempt: a result is kept), or ``failed`` (in the current attempt only: a new one runs it again, and
    a later try of the same attempt that completed replaces it). Read from the run's own events."""
    query = sa.text(_MAP_EVENTS.format(schema_version_column(conn.dialect.name)))
    events = decode_events(conn.execute(query, {"stream": stream_of(run_id)}))
    out: dict[str, list[dict[str, Any]]] = {}
    current: dict[str, int] = {}
    for position in sorted(events):
        event = events[position]
        if event.step_id not in steps:  # type: ignore[attr-defined]  # each of the three has a step_id
            continue
        if isinstance(event, StepStarted):
            current[event.step_id] = event.attempt
            kept = out.get(event.step_id, [])
            out[event.step_id] = [
                kept[i] if i < len(kept) and kept[i]["status"] == "completed" else
                {"index": i, "item": item, "status": "pending", "output": "", "output_cut": False, "error": "",
                 "attempt": event.attempt, "position": position}
                for i, item in enumerate(event.items)]
        elif isinstance(event, (MapItemCompleted, MapItemFailed)):
            items = out.get(event.step_id, [])
            if not 0 <= event.index < len(items):
                continue
            if isinstance(event, MapItemFailed):
                if event.attempt == current.get(event.step_id):
                    items[event.index].update(status="failed", error=event.error, attempt=event.attempt,
                                              position=position)
            else:
                items[event.index].update(status="completed", output=event.output[:ITEM_OUTPUT_CHARS],
                                          output_cut=len(event.output) > ITEM_OUTPUT_CHARS, error="",
                                          attempt=event.attempt, position=position)
    return out


def run_usage(steps: list[dict[str, Any]]) -> dict[str, int]:
    """Token and tool-call totals over a run's steps (each step's ``usage`` as its last attempt recorded it)."""
    total: dict[str, int] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "tool_calls": 0}
    for step in steps:
        usage = step.get("usage") or {}
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            value = usage.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                total[key] += value
        total["tool_calls"] += len(step.get("tool_calls", ()))
    return total
