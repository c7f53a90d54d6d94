"""Commands and queries of DESIGN §7, as Starlette endpoints.

Routes only translate: they read and check the request (``api.http.schemas``),
call the engine, the read model or the store, and shape the answer. Errors
are the domain's own exceptions, turned into problem+json by
``api.http.problems`` in one place. Blocking calls (the engine's ask, database
reads) run in the thread pool so the event loop keeps serving the stream.

Read-your-writes: every command answers the position of the event it
appended, and ``Positions`` remembers the highest one. Every GET of the read
model first waits (briefly) for the projector to reach it, or the
``?min_position=`` the client passes (e.g. from a command sent to another
server sharing the database).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from actors import task_runs
from actors.cluster import nodes_of
from api.http import schemas
from api.http.problems import BadParameter, NotFound, TooLarge, Unavailable
from api.http.schemas import (
    CancelRequest,
    DecisionRequest,
    ForkRequest,
    LaunchRequest,
    RetryRequest,
)
from flows.auth import Principal, check_identity
from flows.errors import UnknownRun
from flows.events import stream_of
from flows.launch import LaunchParams
from flows.status import RUN_STATUSES
from flows.text import check_text, describe, find_unstorable
from projections.queries import UnknownCursor

JSON = "application/json"
NDJSON = "application/x-ndjson"
MARKDOWN = "text/markdown; charset=utf-8"
READ_WAIT_S = 2.0  # how long a GET waits for the projector to catch up with a command
HEALTH_PROBLEMS = 20  # skipped events /api/health lists (the newest); problems_total counts them all
MAX_INTEGER = 2**63 - 1  # the largest position or version a store column holds (SQLite INTEGER, PG bigint)
MAX_ID_CHARS = 128  # a run id (a ULID is 26): longer is not an id the API ever gave out
MAX_SEARCH_CHARS = 200  # ?q= of GET /api/runs: a search, not a document
READ_POSITION = "Baton-Read-Position"  # header: how far the read tables were when a GET read them

_encode = msgspec.json.Encoder().encode


class Positions:
    """The highest position a command of this app appended (for read-your-writes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.last = 0

    def saw(self, position: int) -> int:
        """Remember ``position``; returns it."""
        with self._lock:
            self.last = max(self.last, position)
        return position


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``value`` as JSON (msgspec-encoded)."""
    return Response(_encode(value), status_code=status, media_type=JSON, headers=headers)


# -- request helpers ------------------------------------------------------------------------


def _runtime(request: Request) -> Any:
    return request.app.state.runtime


def _engine(request: Request) -> Any:
    engine = _runtime(request).engine
    if engine is None:
        raise Unavailable("this server was started without the engine; it serves reads only")
    return engine


async def read_body(request: Request) -> bytes:
    """The body, refused with TooLarge past ``settings.max_body_bytes``.

    Content-Length is checked first (nothing is read); a chunked body is
    counted as it arrives and refused as soon as it passes the limit.
    """
    limit = _runtime(request).settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise BadParameter("Content-Length", f"Content-Length {declared!r} is not a number") from None
        if length > limit:
            raise TooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def int_param(request: Request, name: str, default: int | None = None, *, minimum: int = 0) -> int | None:
    """An integer query parameter, or BadParameter naming it."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadParameter(name, f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise BadParameter(name, f"{name} must be at least {minimum}")
    if value > MAX_INTEGER:  # the store's positions and versions are 64-bit: a larger one is no position
        raise BadParameter(name, f"{name} must be at most {MAX_INTEGER}")
    return value


def text_param(request: Request, name: str) -> str | None:
    """A text query parameter (None when absent or empty), or BadParameter naming it when it holds
    what no stored text can (NUL: PostgreSQL would refuse the query itself)."""
    raw = request.query_params.get(name)
    if not raw:
        return None
    offset = find_unstorable(raw)
    if offset is not None:
        raise BadParameter(name, f"{name} {describe(raw, offset)}")
    return raw


def path_run_id(request: Request) -> str:
    """The ``{run_id}`` of the path, or BadParameter when it cannot be a run id at all."""
    run_id: str = request.path_params["run_id"]
    offset = find_unstorable(run_id)
    if offset is not None:
        raise BadParameter("run_id", f"run_id {describe(run_id, offset)}")
    if len(run_id) > MAX_ID_CHARS:
        raise BadParameter("run_id", f"a run id is at most {MAX_ID_CHARS} characters, not {len(run_id)}")
    return run_id


async def read_your_writes(request: Request, run_id: str | None = None) -> dict[str, str]:
    """Wait (up to READ_WAIT_S) until the read model reflects this app's commands and ``min_position``;
    with ``run_id``, also the run's last commit when this server's engine drives it (what the engine
    recorded on its own: a recovery after a restart, a step's end), so a run read here is never older
    than the run this server drives.

    A ``min_position`` past the store's head is refused (BadParameter): no
    wait could reach it, and an answer would look fresh while it is not.
    Returns the headers of the answer: ``Baton-Read-Position``, how far the
    read tables were (below what was asked when the projector did not get
    there in time: the answer is stale, and says so).
    """
    asked = int_param(request, "min_position", 0) or 0
    runtime = _runtime(request)
    driven = runtime.engine.recorded_position(run_id) if run_id and runtime.engine is not None else 0
    wanted = max(request.app.state.positions.last, asked, driven)
    read_model = runtime.read_model
    projector = getattr(read_model, "projector", None)
    if asked and (projector is None or projector.position < asked):
        head = await asyncio.to_thread(runtime.store.head)
        if asked > head:
            raise BadParameter("min_position", f"min_position={asked} is past the store's head ({head}): "
                                               "no event has that position yet")
    if projector is None:
        return {}
    if wanted and projector.position < wanted:
        # A stale read after the wait beats none: the answer still says how far it got. The wait
        # holds no thread: threads of the shared pool serve reads, stream resumes and health.
        await projector.wait_for_async(wanted, READ_WAIT_S)
    return {READ_POSITION: str(projector.position)}


def _actor(request: Request, claimed: str = "") -> str:
    """Who acts: the request's principal (``api.http.auth``), never what the request says of itself.

    A ``by`` field or an ``X-Baton-User`` header naming someone else is
    refused (IdentityMismatch, 403) rather than ignored: the caller would
    otherwise believe the log records the name it gave.
    """
    principal: Principal = request.user
    check_text("by", claimed)  # text no event could hold is refused as such first (422), like any field
    check_identity("by", claimed, principal)
    check_identity("X-Baton-User", request.headers.get("x-baton-user", ""), principal)
    return principal.name


# -- commands -------------------------------------------------------------------------------


async def launch(request: Request) -> Response:
    """POST /api/runs: launch a run; an Idempotency-Key seen before answers the same run (200)."""
    body = schemas.decode(await read_body(request), LaunchRequest)
    engine = _engine(request)
    named = body.flow or body.flow_name
    if named:  # an unknown flow is named before what the body lacks, as the engine orders them
        check_text("flow", named)
        engine.registry.get(named)
    key = request.headers.get("idempotency-key", "")
    params = body.params(launched_by=_actor(request), idempotency_key=key)
    if len(key) > 255:
        raise BadParameter("Idempotency-Key", "an Idempotency-Key is at most 255 characters")
    launched = await run_in_threadpool(engine.launch, params)
    if not launched.created:
        await _same_request(request, launched.run_id, params)
    request.app.state.positions.saw(launched.position)
    answer = schemas.Launched(run_id=launched.run_id, position=launched.position, created=launched.created)
    return json_response(answer, 201 if launched.created else 200,
                         headers={"Location": f"/api/runs/{launched.run_id}"})


async def _same_request(request: Request, run_id: str, params: LaunchParams) -> None:
    """Refuse a key reused for a different launch: answering the earlier run would hide the mistake."""
    records = await run_in_threadpool(_runtime(request).store.read_stream, stream_of(run_id))
    earlier = {"fast": False, **(records[0].data if records else {})}  # logs from before `fast` lack it
    wanted = {"flow": params.flow, "band": params.band, "project_id": params.project_id,
              "input": {**params.inputs, "question": params.question}, "fast": params.fast}
    key = params.idempotency_key
    if any(earlier.get(name) != value for name, value in wanted.items()):
        raise BadParameter("Idempotency-Key", f"Idempotency-Key {key!r} was used for a different launch "
                                              f"(run {run_id}); use a new key for a new request")


async def cancel(request: Request) -> Response:
    """POST /api/runs/{run_id}/cancel; 409 if the run has already ended."""
    run_id = path_run_id(request)
    body = schemas.decode(await read_body(request), CancelRequest, empty_ok=True)
    position = await run_in_threadpool(_engine(request).cancel, run_id, reason=body.reason,
                                       by=_actor(request, body.by))
    request.app.state.positions.saw(position)
    return json_response(schemas.CommandAccepted(run_id=run_id, position=position))


async def fork(request: Request) -> Response:
    """POST /api/runs/{run_id}/fork: a new run from this run's log (DESIGN §15); 201 with the new run."""
    run_id = path_run_id(request)
    body = schemas.decode(await read_body(request), ForkRequest)
    check_text("from_step", body.from_step)
    forked = await run_in_threadpool(_engine(request).fork, run_id, body.from_step, inputs=body.inputs,
                                     by=_actor(request, body.by))
    return _forked(request, forked.run_id, forked.position, run_id, body.from_step)


async def retry(request: Request) -> Response:
    """POST /api/runs/{run_id}/steps/{step_id}/retry: re-run a failed, cancelled or lost step of an ended
    run and what follows it, as a fork; 409 for a step that did not end so.

    One path, two meanings (DESIGN §12 and §15): in a task run it answers a blocked task, with ``text`` as
    context (``api.http.task_routes.task_retry``), and the run goes on; in any other run it forks.
    """
    run_id, step_id = path_run_id(request), request.path_params["step_id"]
    state = await run_in_threadpool(_engine(request).state, run_id)
    if state.tasks is not None:
        from api.http import task_routes  # late: task_routes builds on this module

        return await task_routes.task_retry(request)
    body = schemas.decode(await read_body(request), RetryRequest, empty_ok=True)
    if body.text:
        raise BadParameter("text", "only a task run's retry takes `text` (this run is not a task run)")
    forked = await run_in_threadpool(_engine(request).retry, run_id, step_id, by=_actor(request, body.by))
    return _forked(request, forked.run_id, forked.position, run_id, step_id)


def _forked(request: Request, run_id: str, position: int, parent: str, step_id: str) -> Response:
    request.app.state.positions.saw(position)
    answer = schemas.Forked(run_id=run_id, position=position, parent_run_id=parent, from_step=step_id)
    return json_response(answer, 201, headers={"Location": f"/api/runs/{run_id}"})


async def approve(request: Request) -> Response:
    """POST /api/runs/{run_id}/steps/{step_id}/approve; 409 if that step is not waiting."""
    return await _decide(request, "approve")


async def reject(request: Request) -> Response:
    """POST /api/runs/{run_id}/steps/{step_id}/reject; 409 if that step is not waiting."""
    return await _decide(request, "reject")


async def _decide(request: Request, decision: str) -> Response:
    run_id, step_id = path_run_id(request), request.path_params["step_id"]
    body = schemas.decode(await read_body(request), DecisionRequest, empty_ok=True)
    engine = _engine(request)
    # awaited on the loop: no thread of the pool waits for the engine's answer (Engine.command_async)
    position = await engine.decide_async(decision, run_id, step_id, by=_actor(request, body.by),
                                         comment=body.comment)
    request.app.state.positions.saw(position)
    return json_response(schemas.CommandAccepted(
        run_id=run_id, step_id=step_id, position=position,
        decision="approved" if decision == "approve" else "rejected"))


# -- queries --------------------------------------------------------------------------------


async def list_runs(request: Request) -> Response:
    """GET /api/runs: newest first; filters project_id, status, flow, q (text); cursor paging."""
    status = text_param(request, "status")
    if status is not None and status not in RUN_STATUSES:
        raise BadParameter("status", f"unknown run status {status!r}; statuses are {', '.join(RUN_STATUSES)}")
    limit = int_param(request, "limit", 50, minimum=1)
    project_id = request.query_params.get("project_id")  # "" is a filter too: runs of no project
    if project_id:
        project_id = text_param(request, "project_id")
    flow, cursor = text_param(request, "flow"), text_param(request, "cursor")
    text = text_param(request, "q")
    text = text.strip() if text else None
    if text and len(text) > MAX_SEARCH_CHARS:
        raise BadParameter("q", f"q is at most {MAX_SEARCH_CHARS} characters, not {len(text)}")
    headers = await read_your_writes(request)
    try:
        runs, next_cursor = await run_in_threadpool(
            _runtime(request).read_model.list_runs, project_id=project_id, status=status, flow=flow,
            cursor=cursor, limit=limit, text=text or None,
        )
    except UnknownCursor as exc:
        raise BadParameter("cursor", str(exc)) from None
    return json_response({"runs": runs, "next_cursor": next_cursor}, headers=headers)


async def get_run(request: Request) -> Response:
    """GET /api/runs/{run_id}: the run, its steps and its report."""
    run_id = path_run_id(request)
    headers = await read_your_writes(request, run_id)
    read_model = _runtime(request).read_model
    found = await run_in_threadpool(read_model.get_run, run_id)
    if found is None:
        await _unreadable(request, run_id)
        raise UnknownRun(run_id)
    return json_response(found, headers=headers)


async def _unreadable(request: Request, run_id: str) -> None:
    """NotFound saying why, when the run is in the log but the read side could not apply its launch."""
    problems = await run_in_threadpool(_runtime(request).read_model.projection_errors, run_id)
    if problems:
        first = problems[0]
        raise NotFound(f"run {run_id} is in the log, but the read side could not apply its event at position "
                       f"{first['position']} ({first['event_type']}): {first['error']}; its events are at "
                       f"/api/runs/{run_id}/events", state="unreadable")


async def run_report(request: Request) -> Response:
    """GET /api/runs/{run_id}/report: the report as markdown; 404 until the run has one."""
    run_id = path_run_id(request)
    headers = await read_your_writes(request, run_id)
    read_model = _runtime(request).read_model
    markdown = await run_in_threadpool(read_model.report, run_id)
    if markdown is None:
        found = await run_in_threadpool(read_model.get_run, run_id)
        if found is None:
            await _unreadable(request, run_id)
            raise UnknownRun(run_id)
        status = found["run"]["status"]
        raise NotFound(f"run {run_id} has no report yet (it is {status})", state=status)
    return Response(markdown, media_type=MARKDOWN,
                    headers={**headers, "Content-Disposition": f'inline; filename="baton-{run_id}.md"'})


def _event_view(rec: Any) -> dict[str, Any]:
    return {"position": rec.position, "stream_id": rec.stream_id, "version": rec.version, "type": rec.type,
            "data": rec.data, "metadata": rec.metadata, "recorded_at": rec.recorded_at, "hash": rec.hash,
            "event_id": rec.id}


async def run_events(request: Request) -> Response:
    """GET /api/runs/{run_id}/events: the run's recorded events in order (JSON array or JSON lines).

    Read from the store itself, not a projection: this is the audit log.
    ``?after_version=N`` skips the first N.
    """
    run_id = path_run_id(request)
    after = int_param(request, "after_version", 0) or 0
    store = _runtime(request).store
    records = await run_in_threadpool(store.read_stream, stream_of(run_id), after)
    if not records and (after == 0 or not await run_in_threadpool(store.read_stream, stream_of(run_id))):
        raise UnknownRun(run_id)
    views = [_event_view(r) for r in records]
    fmt = request.query_params.get("format", "")
    if fmt not in ("", "json", "jsonl", "ndjson"):
        raise BadParameter("format", f"format={fmt!r}: use json or jsonl")
    if fmt in ("jsonl", "ndjson") or (not fmt and NDJSON in request.headers.get("accept", "")):
        return Response(b"".join(_encode(v) + b"\n" for v in views), media_type=NDJSON)
    return json_response(views)


async def flows(request: Request) -> Response:
    """GET /api/flows: the catalogue (name, category, description, steps graph, bands)."""
    return json_response([f.describe() for f in _runtime(request).registry])


async def plan(request: Request) -> Response:
    """GET /api/plan: the scheduler's plan, with the reason each planned run waits (and a task run's tasks)."""
    engine = _engine(request)
    found = await run_in_threadpool(engine.plan)
    return json_response(await run_in_threadpool(task_runs.plan_with_tasks, found, _runtime(request).store))


async def nodes(request: Request) -> Response:
    """GET /api/nodes: the nodes sharing the store, their leases, and the runs each drives."""
    return json_response(await run_in_threadpool(nodes_of, _runtime(request).store))


HEALTH_PROBE_S = 2.0  # how long health waits for the store to answer before calling it down


async def health(request: Request) -> Response:
    """GET /api/health: the engine, the projector and the store, each on its own; 503 unless all are ok."""
    runtime = _runtime(request)
    store = await _store_health(runtime.store)
    engine = (schemas.EngineHealth(**runtime.engine.health()) if runtime.engine is not None
              else schemas.EngineHealth(status="off", detail="this server was started without the engine"))
    projector_ = getattr(runtime.read_model, "projector", None)
    problems, total, _ = await asyncio.to_thread(_projection_health, runtime.read_model, projector_)
    projector = _projector_health(projector_, total)
    parts = (engine, projector, store)
    down = any(part.status == "down" for part in parts)
    status = "down" if down else "degraded" if any(part.status == "degraded" for part in parts) else "ok"
    return json_response(schemas.Health(
        status=status, engine=engine, projector=projector, store=store, head=store.head,
        projector_position=projector.position, stream_clients=len(request.app.state.hub.subscribers),
        problems=[schemas.ProjectionProblem(**p) for p in problems], problems_total=total, projector_error=projector.error,
    ), 503 if down else 200)


def _projection_health(read_model: Any, projector: Any) -> tuple[list[dict[str, Any]], int, str | None]:
    """The events the read side skipped (newest first, a few), how many in all, and the projector's
    current error (a database it keeps retrying), for /api/health."""
    error = None if projector is None else projector.last_error
    if read_model is None:
        return [], 0, error
    try:
        problems, total = read_model.projection_problems(limit=HEALTH_PROBLEMS)
    except Exception as exc:  # the read tables being rebuilt, or the database away: say so
        return [], 0, error or f"cannot read projection_errors: {type(exc).__name__}: {exc}"
    return problems, total, error


async def _store_health(store: Any) -> schemas.StoreHealth:
    """Whether the store answers (a read of its head, within HEALTH_PROBE_S) and commits (its writer)."""
    try:
        head = await asyncio.wait_for(asyncio.to_thread(store.head), HEALTH_PROBE_S)
    except TimeoutError:
        return schemas.StoreHealth(status="down", error=f"the store did not answer within {HEALTH_PROBE_S:g} s")
    except Exception as exc:
        return schemas.StoreHealth(status="down", error=" ".join(f"{type(exc).__name__}: {exc}".split()))
    outage = store.outage() if hasattr(store, "outage") else None
    if outage is not None:
        return schemas.StoreHealth(status="down", head=head, error=f"appends cannot be committed: {outage.error}",
                                   since=outage.since)
    return schemas.StoreHealth(status="ok", head=head)


def _projector_health(projector: Any, skipped: int = 0) -> schemas.ProjectorHealth:
    """``down`` while it is not running or keeps failing on its database (it retries); ``degraded`` while
    it follows the store but has skipped events it could not apply (``skipped``, listed in ``problems``)."""
    if projector is None:
        return schemas.ProjectorHealth(status="off")
    if not projector.running:
        return schemas.ProjectorHealth(status="down", position=projector.position,
                                       error=projector.last_error or "the projector is not running")
    if projector.last_error:
        return schemas.ProjectorHealth(status="down", position=projector.position, error=projector.last_error)
    if skipped:
        return schemas.ProjectorHealth(status="degraded", position=projector.position,
                                       error=f"{skipped} event(s) could not be applied and were skipped")
    return schemas.ProjectorHealth(status="ok", position=projector.position)


ROUTES = [
    Route("/api/runs", launch, methods=["POST"], name="launch"),
    Route("/api/runs", list_runs, methods=["GET"], name="list_runs"),
    Route("/api/runs/{run_id}", get_run, methods=["GET"], name="get_run"),
    Route("/api/runs/{run_id}/events", run_events, methods=["GET"], name="run_events"),
    Route("/api/runs/{run_id}/report", run_report, methods=["GET"], name="run_report"),
    Route("/api/runs/{run_id}/cancel", cancel, methods=["POST"], name="cancel"),
    Route("/api/runs/{run_id}/steps/{step_id}/approve", approve, methods=["POST"], name="approve"),
    Route("/api/runs/{run_id}/steps/{step_id}/reject", reject, methods=["POST"], name="reject"),
    Route("/api/runs/{run_id}/fork", fork, methods=["POST"], name="fork"),
    Route("/api/runs/{run_id}/steps/{step_id}/retry", retry, methods=["POST"], name="retry"),
    Route("/api/flows", flows, methods=["GET"], name="flows"),
    Route("/api/plan", plan, methods=["GET"], name="plan"),
    Route("/api/nodes", nodes, methods=["GET"], name="nodes"),
    Route("/api/health", health, methods=["GET"], name="health"),
]
