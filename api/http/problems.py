"""Every error the API answers, as RFC 9457 problem+json, decided in one place.

``PROBLEMS`` maps an exception type to its status and title; ``details``
pulls out what a person needs to fix the cause (the field, the state, the
known flows). ``handlers()`` gives Starlette one handler per type, so routes
just raise the domain's own errors and never build an error response.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from actors.errors import (
    EngineTimeout,
    EngineUnavailable,
    FlowsModuleMissing,
    LaunchInProgress,
    NodeDidNotAnswer,
    RunBusy,
    RunOwnedElsewhere,
)
from actors.run_tasks import TaskCommandRefused
from actors.task_runs import LandingNotReady, TaskFilesRefused
from actors.workspace.errors import NotARepository, WorkspaceError
from api.http.schemas import BodyError, EmptyBody, MalformedJson, Problem
from eventstore import StoreError, StoreUnavailableError
from flows.auth import (
    ROLES,
    Forbidden,
    FourEyesRefused,
    IdentityMismatch,
    InvalidTokenName,
    TokenExists,
    Unauthenticated,
    UnknownRole,
    UnknownToken,
)
from flows.catalog import UnknownFlow
from flows.errors import NotWaiting, RunFinished, UnknownRun, UnknownStep
from flows.fork import NotRetryable
from flows.launch import LaunchError
from flows.projects import InvalidProjectId, ProjectError, ProjectExists, ProjectNotFound, UnknownProject
from flows.status import RunStatus
from flows.tasks.files import TaskGraphError
from flows.tasks.lifecycle import TaskTransitionError
from flows.text import UnstorableText

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://baton.dev/problems/"


class NotFound(LookupError):
    """Something a GET asked for does not exist (yet); ``state`` says how far the run is."""

    def __init__(self, detail: str, *, state: str | None = None) -> None:
        super().__init__(detail)
        self.state = state


class TooLarge(ValueError):
    """A request body is larger than ``limit`` bytes (``BATON_MAX_BODY_BYTES``)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than {limit} bytes (BATON_MAX_BODY_BYTES)")
        self.limit = limit


class Unavailable(RuntimeError):
    """A part this route needs is not running in this process (e.g. a read-only server)."""


class BadParameter(ValueError):
    """A query parameter or header has a value the route cannot use; ``field`` names it."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field


class HostNotAllowed(ValueError):
    """The Host header names a server this is not (DNS rebinding, or a name to add to the allow-list)."""

    def __init__(self, host: str) -> None:
        """Name the host and the setting that allows it."""
        self.host = host
        super().__init__(f"Host {host!r} is not a name of this server: add it to BATON_ALLOWED_HOSTS / "
                         f"--allowed-hosts if it is")


class ForeignOrigin(PermissionError):
    """A state-changing request or a WebSocket upgrade came from a page of another origin."""

    def __init__(self, origin: str) -> None:
        """Name the origin and the setting that allows it."""
        self.origin = origin
        super().__init__(f"Origin {origin!r} is not this server's: requests that change something, and "
                         f"WebSockets, are refused from other origins (BATON_CORS_ORIGINS lists allowed ones)")


class CsrfRefused(PermissionError):
    """A state-changing request made with the session cookie lacks its session's CSRF token."""


class UnsupportedMediaType(ValueError):
    """A state-changing request whose body is not declared ``application/json``."""

    def __init__(self, given: str) -> None:
        """Name what was declared."""
        self.given = given
        what = f"Content-Type {given!r}" if given else "no Content-Type"
        super().__init__(f"this request's body has {what}; send it as application/json")


# type -> (status, slug, title). Order matters only for subclasses: the first match wins.
PROBLEMS: list[tuple[type[BaseException], int, str, str]] = [
    # Access (api.http.auth, flows.auth): who may call what, from where, with what body.
    (HostNotAllowed, 400, "host-not-allowed", "This server does not answer to that Host"),
    (Unauthenticated, 401, "unauthenticated", "A valid token is needed"),
    (Forbidden, 403, "forbidden", "Your role does not allow this"),
    (CsrfRefused, 403, "csrf", "The CSRF token is missing or wrong"),
    (ForeignOrigin, 403, "foreign-origin", "Requests from another origin are refused"),
    (IdentityMismatch, 403, "identity-mismatch", "The request names someone other than its sender"),
    (FourEyesRefused, 403, "four-eyes", "Four eyes: the run's launcher cannot decide this step"),
    (UnsupportedMediaType, 415, "unsupported-media-type", "The body must be application/json"),
    (InvalidTokenName, 422, "invalid-token-name", "The token name is not acceptable"),
    (UnknownRole, 422, "unknown-role", "No role of that name"),
    (TokenExists, 409, "token-exists", "A token of that name exists"),
    (UnknownToken, 404, "unknown-token", "No token of that name"),
    # The client went away (or was cut off for sending its body too slowly): nobody reads this answer.
    (ClientDisconnect, 400, "client-disconnected", "The client disconnected before its request was read"),
    (EmptyBody, 400, "empty-body", "The request body is empty"),
    (MalformedJson, 400, "malformed-json", "The request body is not valid JSON"),
    (BodyError, 422, "invalid-body", "The request body is not acceptable"),
    (TooLarge, 413, "body-too-large", "The request body is too large"),
    (BadParameter, 422, "invalid-parameter", "A parameter is not acceptable"),
    (UnstorableText, 422, "unstorable-text", "The request holds text that cannot be stored"),
    (UnknownFlow, 422, "unknown-flow", "No flow of that name"),
    (LaunchError, 422, "invalid-launch", "The launch request is not acceptable"),
    (ProjectNotFound, 404, "unknown-project", "No project of that id"),
    (UnknownProject, 422, "unknown-project", "No project of that id"),
    (InvalidProjectId, 422, "invalid-project-id", "The project id is not acceptable"),
    (ProjectExists, 409, "project-exists", "A project of that id is registered elsewhere"),
    (ProjectError, 422, "invalid-project", "The project is not acceptable"),
    (NotARepository, 422, "not-a-repository", "The path is not the top level of a git work tree"),
    (WorkspaceError, 409, "workspace-unavailable", "The project's repository cannot be read as it is now"),
    (UnknownRun, 404, "unknown-run", "No such run"),
    (UnknownStep, 404, "unknown-step", "No such step in this run"),
    (NotFound, 404, "not-found", "Not found"),
    (NotWaiting, 409, "step-not-waiting", "The step is not waiting for a decision"),
    (RunFinished, 409, "run-finished", "The run has already ended"),
    (NotRetryable, 409, "not-retryable", "The step did not fail, was not cancelled or lost, or the run has not ended"),
    (RunOwnedElsewhere, 409, "run-owned-elsewhere", "Another process is driving this run"),
    (LaunchInProgress, 409, "launch-in-progress", "This launch is already under way"),
    (FlowsModuleMissing, 409, "flows-module-missing", "This server cannot import a flows module the run needs"),
    # Task runs (DESIGN §12).
    (TaskGraphError, 422, "invalid-task-graph", "The task files do not make a graph"),
    (TaskFilesRefused, 422, "task-files-refused", "The task files cannot be read"),
    (LandingNotReady, 409, "landing-not-ready", "This run cannot be landed now"),
    (TaskTransitionError, 409, "task-not-ready", "The task is not where this applies"),
    (TaskCommandRefused, 409, "task-command-refused", "That does not apply to this task now"),
    (RunBusy, 503, "run-busy", "The run is being handed over; try again shortly"),
    (EngineTimeout, 503, "engine-timeout", "The engine did not answer in time"),
    (NodeDidNotAnswer, 503, "node-timeout", "The process driving the run did not answer in time"),
    (EngineUnavailable, 503, "engine-unavailable", "The engine is not running; it is being restarted"),
    (StoreUnavailableError, 503, "store-unavailable", "The event store cannot be reached"),
    (Unavailable, 503, "unavailable", "Not available in this process"),
    (StoreError, 503, "store-error", "The event store refused the operation"),
]

# Headers a problem of that type carries: a transient refusal says when to try again.
HEADERS: dict[type[BaseException], dict[str, str]] = {
    Unauthenticated: {"WWW-Authenticate": 'Bearer realm="baton"'},
    RunBusy: {"Retry-After": "1"},
    EngineUnavailable: {"Retry-After": "2"},
    StoreUnavailableError: {"Retry-After": "5"},
}


def details(exc: BaseException) -> dict[str, Any]:
    """The fields of the problem body that come from the exception itself."""
    match exc:
        case Forbidden():
            return {"detail": str(exc), "role": exc.needed.value}
        case IdentityMismatch():
            return {"detail": str(exc), "field": exc.field}
        case FourEyesRefused():
            return {"detail": str(exc), "field": "step_id"}
        case InvalidTokenName() | TokenExists() | UnknownToken():
            return {"detail": str(exc), "field": "name"}
        case UnknownRole():
            return {"detail": str(exc), "field": "role", "known": list(ROLES)}
        case BodyError():
            return {"detail": exc.detail, "field": exc.field}
        case UnknownFlow():
            return {"detail": str(exc), "field": "flow", "known": list(exc.known)}
        case LaunchError() | UnstorableText():
            return {"detail": str(exc), "field": exc.field}
        case BadParameter():
            return {"detail": str(exc), "field": exc.field}
        case NotWaiting():
            return {"detail": str(exc), "state": exc.status}
        case RunFinished():
            return {"detail": str(exc), "state": exc.status}
        case NotRetryable():
            return {"detail": str(exc), "state": exc.status, "field": "step_id"}
        case RunOwnedElsewhere():
            return {"detail": str(exc), "state": RunStatus.RUNNING, "owner": exc.owner}
        case FlowsModuleMissing():
            return {"detail": str(exc), "module": exc.module}
        case LaunchInProgress():
            return {"detail": str(exc), "state": "launching"}
        case UnknownProject():
            return {"detail": str(exc), "field": "project_id", "known": exc.known}
        case InvalidProjectId() | ProjectExists() | ProjectError():
            return {"detail": str(exc), "field": "project_id"}
        case NotARepository():
            return {"detail": str(exc), "field": "path"}
        case UnknownStep():
            return {"detail": str(exc), "field": "step_id"}
        case UnknownRun():
            return {"detail": str(exc), "field": "run_id"}
        case NotFound():
            return {"detail": str(exc), "state": exc.state}
    return {"detail": str(exc)}


def problem(status: int, slug: str, title: str, detail: str, *, instance: str | None = None,
            headers: dict[str, str] | None = None, **extra: Any) -> Response:
    """A problem+json response."""
    body = Problem(type=TYPE_BASE + slug, title=title, status=status, detail=detail, instance=instance,
                   **{k: v for k, v in extra.items() if v is not None})
    return Response(msgspec.json.encode(body), status_code=status, media_type=MEDIA_TYPE, headers=headers)


def from_exception(exc: BaseException, instance: str | None = None) -> Response:
    """The one response for ``exc``: its mapped status, or a generic 500 (logged)."""
    for kind, status, slug, title in PROBLEMS:
        if isinstance(exc, kind):
            fields = details(exc)
            headers = next((h for k, h in HEADERS.items() if isinstance(exc, k)), None)
            return problem(status, slug, title, instance=instance, headers=headers, **fields)
    if isinstance(exc, HTTPException):
        slug = {404: "no-route", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem(exc.status_code, slug, str(exc.detail), str(exc.detail), instance=instance)
    # Unknown failures keep their text out of the response (it may carry internals) but in the log.
    log.error("unhandled error on %s", instance, exc_info=exc)
    return problem(500, "internal", "Internal server error",
                   "the server failed to handle this request; the error is in its log", instance=instance)


def handlers() -> dict[Any, Callable[[Request, Exception], Response]]:
    """Starlette ``exception_handlers``: every mapped type, HTTPException, and Exception (500)."""

    def handle(request: Request, exc: Exception) -> Response:
        return from_exception(exc, request.url.path)

    mapping: dict[Any, Callable[[Request, Exception], Response]] = {kind: handle for kind, *_ in PROBLEMS}
    mapping[HTTPException] = handle
    mapping[Exception] = handle
    return mapping
