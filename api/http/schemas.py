"""The shapes the HTTP API takes and gives, as msgspec Structs.

Request bodies are decoded straight into these (``decode``), so a wrong type,
a missing field or an unknown field is refused before any command runs, with
the path of the field at fault. The response Structs document what the
routes answer; the OpenAPI document (``api.http.openapi``) is generated from all
of them, so the schema and the validation cannot drift apart.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

import msgspec

from flows.launch import DEFAULT_BAND, LaunchParams

T = TypeVar("T")


class BodyError(ValueError):
    """A request body has the wrong shape (422): a wrong type, a missing or an
    unknown field. ``field`` is the dotted path of the field at fault, when
    there is one. Its subclasses are the bodies that are not JSON at all (400)."""

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class EmptyBody(BodyError):
    """A route that needs a body (launch) got none at all (400)."""


class MalformedJson(BodyError):
    """The body is not valid JSON (400)."""


# -- requests ------------------------------------------------------------------------------


class LaunchRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /api/runs: launch a run of ``flow`` on ``question``.

    Seed 002's spelling is accepted as well: ``flow_name`` for ``flow``, and
    ``input: {question, ...}`` for ``question`` and ``inputs``. Either
    spelling, or both when they agree; when they disagree the answer is 422
    naming the field. ``band`` defaults to small; ``fast`` asks every agent
    step for a concise answer.
    """

    flow: str = ""
    question: str | msgspec.UnsetType = msgspec.UNSET  # (absent or empty: two answers, see ``params``)
    band: str = DEFAULT_BAND
    model: str = ""
    project_id: str = ""
    inputs: dict[str, Any] = {}
    flow_name: str = ""
    input: dict[str, Any] = {}
    fast: bool = False

    def params(self, *, launched_by: str, idempotency_key: str) -> LaunchParams:
        """The request in one spelling, as the value a launch travels as; BodyError (422) names a clash.

        ``launched_by`` and ``idempotency_key`` come from the request's
        principal and headers, not its body.
        """
        if self.flow and self.flow_name and self.flow != self.flow_name:
            raise BodyError(f"`flow` is {self.flow!r} but `flow_name` is {self.flow_name!r}; give the flow once",
                            "flow_name")
        flow = self.flow or self.flow_name
        if not flow:
            raise BodyError("Object missing required field `flow` (or `flow_name`)", "flow")
        inputs = {k: v for k, v in self.input.items() if k != "question"}
        for name, value in self.inputs.items():
            if name in inputs and inputs[name] != value:
                raise BodyError(f"`inputs.{name}` and `input.{name}` differ; give it once", f"input.{name}")
            inputs[name] = value
        if self.question is msgspec.UNSET and "question" not in self.input:
            raise BodyError("Object missing required field `question` (or `input.question`)", "question")
        # Given empty, it is not missing: the launch refuses it for what it is (an empty question).
        question = "" if self.question is msgspec.UNSET else self.question
        if "question" in self.input:
            given = self.input["question"]
            if not isinstance(given, str):
                raise BodyError(f"Expected `str`, got `{type(given).__name__}` - at `$.input.question`",
                                "input.question")
            if question and given != question:
                raise BodyError("`question` and `input.question` differ; give the question once", "input.question")
            question = question or given
        return LaunchParams(flow, question, band=self.band, model=self.model, project_id=self.project_id,
                            inputs=inputs, fast=self.fast, launched_by=launched_by, idempotency_key=idempotency_key)


class CancelRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /api/runs/{run_id}/cancel; every field is optional (an empty body is fine).

    Who cancels is the request's principal; ``by``, when given, must name it (else 403).
    """

    reason: str = ""
    by: str = ""


class DecisionRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST .../approve and .../reject.

    Who decides is the request's principal; ``by``, when given, must name it (else 403).
    """

    comment: str = ""
    by: str = ""


class ForkRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /api/runs/{run_id}/fork: a new run that keeps the outcomes of the steps not downstream of
    ``from_step`` and runs the rest, with ``inputs`` changed where given (the question is one of them).

    Who forks is the request's principal; ``by``, when given, must name it (else 403).
    """

    from_step: str
    inputs: dict[str, Any] = {}
    by: str = ""


class RetryRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /api/runs/{run_id}/steps/{step_id}/retry; every field is optional (an empty body is fine).

    ``text`` is a task run's only: the context a blocked task starts again with.
    """

    text: str = ""
    by: str = ""


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /api/login: a token (``baton tokens create``) to exchange for the session cookie."""

    token: str


class TokenRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /api/tokens: a token for ``name`` (who it acts as in the log) with ``role``."""

    name: str
    role: str = "viewer"


class ProjectRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /api/projects: register the git work tree at ``path`` (on the server's disk) as ``project_id``."""

    project_id: str
    path: str


# -- responses -----------------------------------------------------------------------------


class Launched(msgspec.Struct, kw_only=True):
    """The answer to a launch; ``created`` is false when the Idempotency-Key named an earlier run."""

    run_id: str
    position: int
    created: bool = True


class Forked(msgspec.Struct, kw_only=True):
    """The answer to a fork or a retry: the new run, the position of its RunLaunched, and its parent."""

    run_id: str
    position: int
    parent_run_id: str
    from_step: str


class CommandAccepted(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The answer to cancel / approve / reject: the position of the event it appended.

    Pass ``position`` as ``?min_position=`` to a later GET (of any server
    sharing the database) to read your own write.
    """

    run_id: str
    position: int
    step_id: str | None = None
    decision: str | None = None


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An RFC 9457 problem (``application/problem+json``).

    ``field`` names the request field at fault; ``state`` the status of the
    run or step that made a command impossible.
    """

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    field: str | None = None
    state: str | None = None
    known: list[str] | None = None
    owner: str | None = None  # the process driving a run (run-owned-elsewhere)
    module: str | None = None  # the flows module a run needs and this server cannot import
    role: str | None = None  # the role the request needed (forbidden)


class SessionInfo(msgspec.Struct, kw_only=True):
    """GET /api/session: who the request acts as (``via``: token, session, or none without auth) and,
    for a console session, the CSRF token its state-changing requests must send as X-CSRF-Token."""

    name: str
    role: str
    via: str
    csrf_token: str | None = None


class TokenView(msgspec.Struct, kw_only=True):
    """A valid token as GET /api/tokens lists it (the token itself is never shown again)."""

    name: str
    role: str
    issued_by: str
    issued_at: float


class TokenCreated(msgspec.Struct, kw_only=True):
    """POST /api/tokens: the new token, shown this once; ``position`` is its TokenIssued event."""

    name: str
    role: str
    token: str
    position: int


class ProjectView(msgspec.Struct, kw_only=True):
    """A registered project: its id (what a launch names), its root, who registered it and when."""

    project_id: str
    root: str
    registered_by: str = ""
    registered_at: float = 0.0


class ProjectRemovedAnswer(msgspec.Struct, kw_only=True):
    """DELETE /api/projects/{project_id}: ``position`` is the ProjectRemoved event."""

    project_id: str
    position: int


class TokenRevokedAnswer(msgspec.Struct, kw_only=True):
    """DELETE /api/tokens/{name}: ``position`` is the TokenRevoked event."""

    name: str
    position: int


class RunSummary(msgspec.Struct, kw_only=True):
    """A run as the read model keeps it (more fields may be present)."""

    run_id: str
    flow: str
    band: str
    status: str
    project_id: str
    question: str
    launched_at: float
    ended_at: float | None = None


class ToolCallView(msgspec.Struct, kw_only=True):
    """A tool call of a step and its result's facts; the result's text is in the ToolResult
    event at ``result_position`` (``/events``). ``ok`` is null while the call has no result yet."""

    call_id: str
    attempt: int
    turn: int
    seq: int
    tool: str
    arguments: str
    position: int
    ok: bool | None = None
    outcome: str = ""
    error: str = ""
    bytes: int = 0
    truncated: bool = False
    sha256: str = ""
    result_position: int = 0
    role: str = ""
    """Which agent of the step made the call: "" its own (a task's implementor), "reviewer" a task's reviewer."""


class AnomalyView(msgspec.Struct, kw_only=True):
    """An anomaly the watch recorded on a step (AnomalyDetected at ``position``; the ``anomaly`` frame's fields)."""

    position: int
    attempt: int
    kind: str
    severity: str
    detail: str
    action: str
    at: float


class MapItemView(msgspec.Struct, kw_only=True):
    """An item of a map step (GET /api/runs/{id}): ``pending`` until its try ends, ``completed`` (its
    result kept across attempts; ``output`` its first 2,000 characters, ``output_cut`` when longer), or
    ``failed`` in the current attempt (``error``). ``position`` is the event that says so."""

    index: int
    item: Any
    status: str
    output: str = ""
    output_cut: bool = False
    error: str = ""
    attempt: int
    position: int


class StepSummary(msgspec.Struct, kw_only=True):
    """A step of a run as the read model keeps it (more fields may be present).

    ``usage`` has the token counts (summed over the model turns of a tool loop,
    with ``turns``: each turn's usage, and the loop's ``tool_calls``,
    ``tool_errors`` and ``malformed_calls``); ``tool_calls`` lists the calls;
    ``anomalies`` counts what the anomaly watch recorded on it, and ``anomaly_records`` lists it,
    oldest first; a map step has its ``items``.
    """

    step_id: str
    status: str
    kind: str
    agent: str
    usage: dict[str, Any] = {}
    tool_calls: list[ToolCallView] = []
    anomalies: int = 0
    anomaly_records: list[AnomalyView] = []
    items: list[MapItemView] | None = None


class RunPage(msgspec.Struct, kw_only=True):
    """GET /api/runs: a page of runs, newest first; pass ``next_cursor`` as ``cursor`` for the next."""

    runs: list[RunSummary]
    next_cursor: str | None


class ProjectionProblem(msgspec.Struct, kw_only=True):
    """An event the read side could not apply: it was skipped (the events after it were applied),
    and stays listed until a version that can apply it rebuilds the read tables."""

    position: int
    run_id: str
    event_type: str
    error: str


class RunChild(msgspec.Struct, kw_only=True):
    """A run started from this one: ``parent_link`` says how (fork, retry), ``forked_from`` from which step."""

    run_id: str
    flow: str
    status: str
    parent_link: str
    forked_from: str


class RunDetail(msgspec.Struct, kw_only=True):
    """GET /api/runs/{run_id}: the run, its steps in graph order, and its report (null until it ends).

    ``problems`` lists the run's events the read side could not apply (usually none): what the
    answer shows is then missing their effect; ``/events`` has them as recorded.
    """

    run: RunSummary
    steps: list[StepSummary]
    report: str | None
    problems: list[ProjectionProblem] = []
    children: list[RunChild] = []


class RecordedEventView(msgspec.Struct, kw_only=True):
    """One event of a run's stream, as recorded (the audit log)."""

    position: int
    stream_id: str
    version: int
    type: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: float
    hash: str


class EngineHealth(msgspec.Struct, kw_only=True):
    """The engine: ``ok`` while its orchestrator runs, ``down`` if it failed (it is restarted), ``off``
    in a server started without it (reads only)."""

    status: str
    detail: str
    restarts: int = 0


class ProjectorHealth(msgspec.Struct, kw_only=True):
    """The read side: ``ok`` while it follows the store, ``down`` while it cannot apply events (``error``
    says why; it retries from its checkpoint), ``off`` when this process runs none."""

    status: str
    position: int | None = None
    error: str | None = None


class StoreHealth(msgspec.Struct, kw_only=True):
    """The event store: ``ok`` when it answers and commits, ``down`` when it cannot be read or written
    (``error`` says why, ``since`` when the writer started failing, as a Unix time)."""

    status: str
    head: int | None = None
    error: str | None = None
    since: float | None = None


class Health(msgspec.Struct, kw_only=True):
    """GET /api/health: each part of the process on its own; ``status`` is ``ok`` only when every part
    is (HTTP 200), else ``down`` (HTTP 503). ``head`` is the store's last position."""

    status: str
    engine: EngineHealth
    projector: ProjectorHealth
    store: StoreHealth
    head: int | None
    projector_position: int | None
    stream_clients: int
    problems: list[ProjectionProblem] = []
    problems_total: int = 0
    projector_error: str | None = None


class Frame(msgspec.Struct, kw_only=True):
    """A stream frame (SSE ``data:`` / WebSocket message). Durable frames carry ``id``,
    the global position of the event behind them; ``step_delta`` and
    ``plan_updated`` are ephemeral and have none. Other fields depend on ``type``."""

    type: str
    id: int | None = None
    run_id: str | None = None
    project_id: str | None = None


REQUESTS: tuple[type, ...] = (LaunchRequest, CancelRequest, DecisionRequest, LoginRequest, TokenRequest,
                              ProjectRequest, ForkRequest, RetryRequest)
RESPONSES: tuple[type, ...] = (Launched, CommandAccepted, Problem, RunPage, RunDetail, RecordedEventView,
                               EngineHealth, ProjectorHealth, StoreHealth, Health, ProjectionProblem, Frame,
                               SessionInfo, TokenView, TokenCreated, TokenRevokedAnswer, ProjectView, ProjectRemovedAnswer,
                               Forked, RunChild)


# -- decoding ------------------------------------------------------------------------------

_PATH = re.compile(r"at `\$((?:\.[^`\[]+|\[\d+\])*)`")
# How deep a body may nest objects and arrays. Real bodies nest a few levels; a deep
# one (1,000 levels in ``inputs``) would overflow the decoder's recursion limit and every
# later reader of the event it lands in, so it is refused before decoding.
MAX_DEPTH = 64
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(rb"[\[\]{}]")
_NAMED = re.compile(r"field `([^`]+)`")


def field_of(message: str) -> str | None:
    """The dotted path of the field a msgspec ValidationError names ("band", "inputs.x").

    msgspec says ``... - at `$.inputs.x``` for a field's value and
    ``Object missing required field `question``` (or ``unknown field``) for a key.
    """
    parts: list[str] = []
    path = _PATH.search(message)
    if path and path.group(1):
        parts += [p for p in re.split(r"\.|\[(\d+)\]", path.group(1)) if p]
    named = _NAMED.search(message)
    if named:
        parts.append(named.group(1))
    return ".".join(parts) or None


def decode(body: bytes, kind: type[T], *, empty_ok: bool = False) -> T:
    """``body`` as a ``kind``; raises EmptyBody, MalformedJson (400) or BodyError (422, wrong shape).

    With ``empty_ok``, an empty body means "every field at its default".
    """
    if not body.strip():
        if empty_ok:
            return kind()
        raise EmptyBody("the request body is empty; this request needs a JSON object")
    _check_depth(body)
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise _shape_error(exc) from None
    except msgspec.DecodeError as exc:
        value = _lenient(body)
        if value is _MALFORMED:
            raise MalformedJson(f"malformed JSON: {exc}") from None
    # Valid JSON that msgspec refuses: a \ud800-\udfff escape without its pair. Decoded, so that
    # the command's own check names the field that holds it (flows.text) instead of "malformed".
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        raise _shape_error(exc) from None


def _shape_error(exc: msgspec.ValidationError) -> BodyError:
    message = str(exc)
    if message.startswith("Expected `object`") and " - at " not in message:
        return BodyError(f"the body must be a JSON object: {message}")
    return BodyError(message, field_of(message))


_MALFORMED = object()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _lenient(body: bytes) -> Any:
    """``body`` decoded by the standard library, which (as RFC 8259 allows) takes lone surrogate
    escapes; ``_MALFORMED`` when it is not JSON for it either (or not UTF-8)."""
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return _MALFORMED


def _check_depth(body: bytes) -> None:
    """Refuse a body nested deeper than MAX_DEPTH (BodyError naming the field where it happens).

    Counted without recursion: strings are blanked out first (a bracket inside one
    does not count), then brackets are counted. Malformed JSON passes here and is
    refused by the decoder.
    """
    depth = 0
    for bracket in _BRACKET.finditer(_STRING.sub(b'""', body)):
        depth += 1 if bracket.group() in (b"[", b"{") else -1
        if depth > MAX_DEPTH:
            field = _deep_field(body)
            where = f"field {field!r} is" if field else "the body is"
            raise BodyError(f"{where} nested more than {MAX_DEPTH} levels deep; flatten it", field)


def _deep_field(body: bytes, parts: int = 2) -> str | None:
    """The dotted path (its first ``parts`` keys) to where the body passes MAX_DEPTH."""
    path: list[str | None] = []  # per open bracket: the key it is the value of (None in arrays)
    key: str | None = None
    at = 0
    text = body
    while at < len(text):
        char = text[at:at + 1]
        if char == b'"':
            string = _STRING.match(text, at)
            if string is None:
                return None
            at = string.end()
            rest = text[at:at + 64].lstrip()
            if rest.startswith(b":"):
                key = string.group()[1:-1].decode("utf-8", "replace")
            continue
        if char in (b"[", b"{"):
            path.append(key)
            key = None
            if len(path) > MAX_DEPTH:
                names = [name for name in path if name is not None][:parts]
                return ".".join(names) or None
        elif char in (b"]", b"}"):
            if path:
                path.pop()
            key = None
        elif char == b",":
            key = None
        at += 1
    return None
