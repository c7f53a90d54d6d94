"""The OpenAPI 3.1 document of the HTTP API, served at /api/openapi.json.

Component schemas are generated from the msgspec Structs of ``api.http.schemas``
(the same types the request bodies are decoded into); the operations below
describe every route of ``api.http.routes`` and ``api.http.stream``. A test checks
that every route of the app appears here.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.http import schemas, task_routes
from api.http.problems import MEDIA_TYPE as PROBLEM
from api.http.routes import MAX_INTEGER
from api.http.sessions import SESSION_COOKIE
from flows.auth import ROLES, ROUTE_ROLES, Role

_REF = "#/components/schemas/{name}"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _REF.format(name=name)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM: {"schema": _ref("Problem")}}}


def _query(name: str, description: str, kind: str = "string", minimum: int = 0) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": kind}
    if kind == "integer":  # out of this range is 422 naming the parameter
        schema.update(minimum=minimum, maximum=MAX_INTEGER)
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _body(name: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(name)}}}


_MIN_POSITION = _query("min_position", "Wait (up to 2 s) until the read model reflects this position "
                       "(read-your-writes after a command). A position past the store's head is refused "
                       "(422, `field` is `min_position`): no event has it yet. When the wait runs out "
                       "the answer is served as it stands; its `Baton-Read-Position` header (on every "
                       "answer of the read model) says how far the read tables were, so a value below "
                       "`min_position` means the answer is stale.", "integer")
_RUN_ID = {**_path("run_id"), "description": "A run id (at most 128 characters, no NUL): otherwise 422, "
                                            "`field` is `run_id`."}
_READ_POSITION = {"Baton-Read-Position": {
    "description": "The position up to which the read tables reflected the log when this answer was read.",
    "schema": {"type": "integer"}}}
_TEXT = (" Text holding NUL or a lone surrogate (`\\ud800`-`\\udfff` without its pair) is refused "
         "(422, `unstorable-text`, `field` names it, e.g. `question` or `inputs.notes`): the read tables "
         "cannot store it.")
_USER = {"name": "X-Baton-User", "in": "header", "required": False, "schema": {"type": "string"},
         "description": "Not needed: who acts (recorded as `by` / `launched_by`) is the request's principal. "
                        "Naming anyone else is 403 `identity-mismatch`."}
_HOST = "A Host header that names no server of this one (`host-not-allowed`; see BATON_ALLOWED_HOSTS)."
_BAD_BODY = {"400": _problem("Malformed JSON (or, where a body is required, an empty one); or " + _HOST),
             "413": _problem("Body larger than BATON_MAX_BODY_BYTES."),
             "415": _problem("The body is not declared `application/json` (`unsupported-media-type`): a "
                             "state-changing request must be JSON, or have no body and no Content-Type."),
             "422": _problem("The body has the wrong shape; `field` names the field." + _TEXT)}


def _access(role: str, more403: str = "") -> dict[str, Any]:
    """The refusals of ``api.http.auth`` for a route that needs ``role``."""
    return {"400": _problem(_HOST),
            "401": {**_problem("No valid token: send `Authorization: Bearer <token>`, or log in "
                               "(`POST /api/login`) and send the session cookie."),
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}},
            "403": _problem(f"Needs the {role} role (`forbidden`, `role` names it); or, with the session "
                            "cookie, a missing or wrong `X-CSRF-Token` (`csrf`); or, on a request that changes "
                            "something, an `Origin` of another site (`foreign-origin`)." + more403)}


_IDENTITY = " Also `identity-mismatch`: `by` or X-Baton-User names someone other than the principal."
_MORE_403 = {
    "approve": " Also `four-eyes`: the step needs four eyes and the principal launched the run." + _IDENTITY,
    "reject": " Also `four-eyes`: the step needs four eyes and the principal launched the run." + _IDENTITY,
    "cancel": _IDENTITY,
    "launch": _IDENTITY,
    "fork": _IDENTITY,
    "retry": _IDENTITY,
}


def _guarded(op: dict[str, Any]) -> dict[str, Any]:
    """``op`` with what access it needs (``flows.auth.ROUTE_ROLES`` by its operationId) said, and the
    refusals of ``api.http.auth`` among its answers; public operations say ``security: []``."""
    role = ROUTE_ROLES.get(op["operationId"], Role.ADMIN)
    if role is None:
        return {**op, "security": [], "responses": {"400": _problem(_HOST), **op["responses"]}}
    responses = {**_access(role.value, _MORE_403.get(op["operationId"], "")), **op["responses"]}
    text = f"Needs the **{role.value}** role (or a higher one)."
    return {**op, "description": f"{op['description']} {text}" if "description" in op else text,
            "responses": dict(sorted(responses.items()))}
_BUSY = {"503": _problem("The run is being handed over between processes, or the store cannot record; "
                         "retry (a `Retry-After` header says when, if it knows).")}
_RESUME = [
    _query("run_id", "Only this run's frames."),
    _query("project_id", "Only frames of runs of this project."),
]
_ANY = {"type": "object", "additionalProperties": True}


def _decision(verb: str) -> dict[str, Any]:
    return {"post": {
        "summary": f"{verb.capitalize()} a paused approval step",
        "operationId": verb,
        "parameters": [_RUN_ID, _path("step_id"), _USER],
        "requestBody": _body("DecisionRequest", required=False),
        "responses": {"200": _json(_ref("CommandAccepted"), "Recorded as decided by the request's principal; "
                                                            "`position` is the StepResumed event."),
                      **_BAD_BODY,
                      "404": _problem("Unknown run or step."),
                      "409": _problem("The step is not waiting (`state` is its status), or the run has ended."),
                      **_BUSY},
    }}


def paths() -> dict[str, Any]:
    """The ``paths`` object: one entry per route."""
    return {
        "/api/runs": {
            "post": {
                "summary": "Launch a run",
                "operationId": "launch",
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                "schema": {"type": "string", "maxLength": 255},
                                "description": "The same key launches one run only; a repeat answers it "
                                               "(200); the key reused for a different launch is 422."},
                               _USER],
                "requestBody": _body("LaunchRequest"),
                "responses": {"201": _json(_ref("Launched"), "Launched; `position` is its RunLaunched event."),
                              "200": _json(_ref("Launched"), "The Idempotency-Key named an earlier run."),
                              **_BAD_BODY,
                              "409": _problem("A launch with this Idempotency-Key is under way right now "
                                              "(`state` is `launching`); retry to get its run."),
                              **_BUSY},
            },
            "get": {
                "summary": "List runs, newest first",
                "operationId": "list_runs",
                "parameters": [_query("project_id", "Filter (empty: runs of no project)."),
                               _query("status", "Filter: a run status (queued, running, paused, completed, "
                                                "failed, rejected, cancelled); another word is 422."),
                               _query("flow", "Filter: a flow name."),
                               _query("q", "Filter: runs whose id, flow, question or project contains this "
                                           "text, ignoring case; at most 200 characters (longer is 422)."),
                               _query("cursor", "`next_cursor` of the previous page: the id of the last run "
                                                "it listed. A cursor that names no run is 422, never "
                                                "another page."),
                               _query("limit", "Page size (1..500, default 50; above 500 gives 500; 0, "
                                               "negative or not a number is 422).", "integer", 1),
                               _MIN_POSITION],
                "responses": {"200": {**_json(_ref("RunPage"), "A page of runs."), "headers": _READ_POSITION},
                              "422": _problem("A bad filter, cursor, limit or min_position (a text filter "
                                              "holding NUL too); `field` names it.")},
            },
        },
        "/api/runs/{run_id}": {"get": {
            "summary": "A run, its steps and its report",
            "operationId": "get_run",
            "parameters": [_RUN_ID, _MIN_POSITION],
            "responses": {"200": {**_json(_ref("RunDetail"), "The run; `problems` lists its events the "
                                                             "read side could not apply (usually none)."),
                                  "headers": _READ_POSITION},
                          "404": _problem("Unknown run (`state` is `unreadable` when the log has it but the "
                                          "read side could not apply its launch)."),
                          "422": _problem("A bad run id or min_position; `field` names it.")},
        }},
        "/api/runs/{run_id}/events": {"get": {
            "summary": "The run's recorded events, in order (the audit log)",
            "operationId": "run_events",
            "parameters": [_RUN_ID, _query("format", "`json` (default) or `jsonl`."),
                           _query("after_version", "Skip the first N events (0 or more).", "integer")],
            "responses": {
                "200": {"description": "A JSON array, or JSON lines with `Accept: application/x-ndjson`.",
                        "content": {"application/json": {"schema": {"type": "array",
                                                                    "items": _ref("RecordedEventView")}},
                                    "application/x-ndjson": {"schema": _ref("RecordedEventView")}}},
                "404": _problem("Unknown run."),
                "422": _problem("A bad run id, `format` or `after_version`; `field` names it."),
            },
        }},
        "/api/runs/{run_id}/report": {"get": {
            "summary": "The run's report as markdown",
            "operationId": "run_report",
            "parameters": [_RUN_ID, _MIN_POSITION],
            "responses": {"200": {"description": "The report.", "headers": _READ_POSITION, "content": {"text/markdown": {"schema":
                                                                                             {"type": "string"}}}},
                          "404": _problem("Unknown run, or no report yet (`state` is the run's status)."),
                          "422": _problem("A bad run id or min_position; `field` names it.")},
        }},
        "/api/runs/{run_id}/cancel": {"post": {
            "summary": "Cancel a run",
            "operationId": "cancel",
            "parameters": [_RUN_ID, _USER],
            "requestBody": _body("CancelRequest", required=False),
            "responses": {"200": _json(_ref("CommandAccepted"), "Cancelled; `position` is RunCancelled."),
                          **_BAD_BODY, "404": _problem("Unknown run."),
                          "409": _problem("The run has already ended (`state` is its status)."), **_BUSY},
        }},
        "/api/runs/{run_id}/fork": {"post": {
            "summary": "Fork a run from a step: keep what came before, run the rest afresh",
            "operationId": "fork",
            "parameters": [_RUN_ID, _USER],
            "requestBody": _body("ForkRequest"),
            "responses": {"201": _json(_ref("Forked"), "The new run; its log begins with RunLaunched, RunForked "
                                                       "and the copies of the outcomes it kept."),
                          **_BAD_BODY, "404": _problem("Unknown run or step (`field` names it)."), **_BUSY},
        }},
        "/api/runs/{run_id}/steps/{step_id}/retry": {"post": {
            "summary": "Retry a failed, cancelled or lost step of an ended run (and what follows it), as a fork",
            "description": "In a task run (`POST /api/projects/{project_id}/task-runs`) it answers a blocked task instead: `text` is the "
                           "context the task starts again with, and the answer is `{run_id, step_id, action, "
                           "position}`; 409 `task-not-ready` / `task-command-refused` when that does not apply.",
            "operationId": "retry",
            "parameters": [_RUN_ID, _path("step_id"), _USER],
            "requestBody": _body("RetryRequest", required=False),
            "responses": {"201": _json(_ref("Forked"), "The new run."),
                          "200": _json(_ANY, "A task run's blocked task answered."),
                          **_BAD_BODY, "404": _problem("Unknown run or step."),
                          "409": _problem("The step did not fail, was not cancelled or lost, or the run has not "
                                          "ended (`state` is the step's status)."), **_BUSY},
        }},
        "/api/runs/{run_id}/steps/{step_id}/approve": _decision("approve"),
        "/api/runs/{run_id}/steps/{step_id}/reject": _decision("reject"),
        "/api/flows": {"get": {"summary": "The flow catalogue", "operationId": "flows",
                               "responses": {"200": _json({"type": "array", "items": _ANY},
                                                          "Each flow: name, category, description, bands, "
                                                          "steps graph.")}}},
        "/api/plan": {"get": {"summary": "The scheduler's plan, with reasons", "operationId": "plan",
                              "responses": {"200": _json(_ANY, "In progress, planned (with reasons), new."),
                                            "503": _problem("No engine in this process.")}}},
        "/api/nodes": {"get": {"summary": "The nodes sharing the store: leases, server, runs driven, slots held",
                               "operationId": "nodes",
                               "responses": {"200": _json({"type": "array", "items": _ANY},
                                                          "Each node: node, owner, alive, lease_expires_at, "
                                                          "member, url, driving, paused, slots.")}}},
        "/api/stream": {"get": {
            "summary": "Server-sent frames; resumable by Last-Event-ID",
            "operationId": "stream",
            "parameters": [*_RESUME,
                           {"name": "Last-Event-ID", "in": "header", "required": False,
                            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_INTEGER},
                            "description": "Resume after this position; "
                            "0 replays from the start; absent means live frames only."},
                           _query("last_event_id", "Same as the Last-Event-ID header.", "integer"),
                           _query("after", "Same as the Last-Event-ID header.", "integer")],
            "responses": {"200": {"description": "text/event-stream of Frame objects "
                                                 "(`id:` is the global position on durable frames).",
                                  "content": {"text/event-stream": {"schema": _ref("Frame")}}},
                          "422": _problem("A bad resume position.")},
        }},
        "/api/ws": {"get": {
            "summary": "WebSocket of the same frames (JSON text messages)",
            "operationId": "ws",
            "description": "Resume with `?after=N` or a first message `{\"after\": N, \"run_id\"?, "
                           "\"project_id\"?}`.",
            "parameters": [*_RESUME, _query("after", "Resume after this position.", "integer")],
            "responses": {"101": {"description": "Switching to the WebSocket protocol."}},
        }},
        "/api/login": {"post": {
            "summary": "Exchange a token for the console's session cookie",
            "operationId": "login",
            "requestBody": _body("LoginRequest"),
            "responses": {"204": {"description": "Logged in: `Set-Cookie: baton_session=...; HttpOnly; "
                                                 "SameSite=Strict` (Secure over https); `X-CSRF-Token` is the "
                                                 "session's CSRF token.",
                                  "headers": {"X-CSRF-Token": {"schema": {"type": "string"}},
                                              "Set-Cookie": {"schema": {"type": "string"}}}},
                          **_BAD_BODY,
                          "401": _problem("The token is not valid (revoked, mistyped, or of another store)."),
                          "403": _problem("An `Origin` of another site (`foreign-origin`).")},
        }},
        "/api/logout": {"post": {
            "summary": "End the console's session",
            "operationId": "logout",
            "description": "Clears the cookie. A live session must send its `X-CSRF-Token`.",
            "responses": {"204": {"description": "Logged out (or there was no session)."},
                          "403": _problem("A live session without its CSRF token (`csrf`), or an `Origin` of "
                                          "another site (`foreign-origin`)."),
                          "415": _BAD_BODY["415"]},
        }},
        "/api/session": {"get": {
            "summary": "Who this request acts as, and the session's CSRF token",
            "operationId": "session",
            "responses": {"200": {**_json(_ref("SessionInfo"), "`via` is token, session, or none (a server "
                                                               "started with --insecure-no-auth)."),
                                  "headers": {"X-CSRF-Token": {"schema": {"type": "string"}}}}},
        }},
        "/api/tokens": {
            "get": {"summary": "The valid tokens (never a token itself)", "operationId": "list_tokens",
                    "responses": {"200": _json({"type": "array", "items": _ref("TokenView")}, "By name.")}},
            "post": {"summary": "Make a token (its value is in this answer only)", "operationId": "create_token",
                     "requestBody": _body("TokenRequest"),
                     "responses": {"201": _json(_ref("TokenCreated"), "Made; `position` is its TokenIssued."),
                                   **_BAD_BODY,
                                   "409": _problem("A valid token has that name (`token-exists`)."),
                                   "422": _problem(f"A bad name (`invalid-token-name`), a role that is not "
                                                   f"one of {', '.join(ROLES)} (`unknown-role`), or a body of "
                                                   f"the wrong shape; `field` names it.")}},
        },
        "/api/tokens/{name}": {"delete": {
            "summary": "Revoke a token (and end the sessions made with it)",
            "operationId": "revoke_token",
            "parameters": [{**_path("name"), "description": "The token's name (at most 64 characters)."}],
            "responses": {"200": _json(_ref("TokenRevokedAnswer"), "Revoked; `position` is its TokenRevoked."),
                          "404": _problem("No valid token of that name (`unknown-token`)."),
                          "415": _BAD_BODY["415"],
                          "422": _problem("A name that cannot be a token's; `field` is `name`.")},
        }},
        "/api/projects": {
            "get": {"summary": "The registered projects (git repositories runs may read)",
                    "operationId": "list_projects",
                    "responses": {"200": _json({"type": "array", "items": _ref("ProjectView")}, "By id.")}},
            "post": {"summary": "Register a git work tree of the server's disk as a project (admin)",
                     "operationId": "add_project",
                     "requestBody": _body("ProjectRequest"),
                     "responses": {"201": _json(_ref("ProjectView"), "Registered."),
                                   "200": _json(_ref("ProjectView"), "Already registered so; nothing changed."),
                                   **_BAD_BODY,
                                   "409": _problem("The id is registered at another root (`project-exists`)."),
                                   "422": _problem("A bad id (`invalid-project-id`), a path that is not the top "
                                                   "level of a git work tree (`not-a-repository`), or a body of "
                                                   "the wrong shape; `field` names it.")}},
        },
        "/api/projects/{project_id}": {"delete": {
            "summary": "Remove a project (admin): no launch can name it from now on; runs pinned to it keep their pin",
            "operationId": "remove_project",
            "parameters": [_path("project_id"), _query("reason", "Why (recorded in ProjectRemoved; at most 1,000 "
                                                                 "characters).")],
            "responses": {"200": _json(_ref("ProjectRemovedAnswer"), "Removed; `position` is its ProjectRemoved."),
                          "404": _problem("No project of that id is registered (`unknown-project`)."),
                          "422": _problem("A `reason` that is too long or holds NUL; `field` is `reason`.")},
        }},
        "/api/health": {"get": {"summary": "Liveness and store reachability", "operationId": "health",
                                "responses": {"200": _json(_ref("Health"), "Up; `head` is the store's position. "
                                                           "`status` is `degraded` while the read side has "
                                                           "skipped events it could not apply (`problems`) "
                                                           "or its projector keeps failing "
                                                           "(`projector_error`)."),
                                              "503": _problem("The store cannot be read.")}}},
        "/api/openapi.json": {"get": {"summary": "This document", "operationId": "openapi",
                                      "responses": {"200": _json(_ANY, "OpenAPI 3.1.")}}},
    }


def document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    _, components = msgspec.json.schema_components(
        schemas.REQUESTS + schemas.RESPONSES + task_routes.REQUESTS, ref_template=_REF)
    # Every field of LaunchRequest has a default because each of two is needed in one of two spellings.
    components["LaunchRequest"]["allOf"] = [{"anyOf": [{"required": ["flow"]}, {"required": ["flow_name"]}]},
                                            {"anyOf": [{"required": ["question"]}, {"required": ["input"]}]}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "baton", "version": "0.1.0",
                 "description": "Commands, queries and the resumable frame stream of baton: launch, "
                                "approve, reject and cancel runs; read runs, steps, reports and the audit "
                                "log; follow frames over SSE or a WebSocket and resume by position. "
                                "Every operation but health and login needs a principal (a bearer token, "
                                "or the console's session cookie) whose role reaches the operation's: "
                                "viewer < operator < approver < admin. Errors are RFC 9457 problem+json."},
        "paths": {path: {method: _guarded(op) for method, op in ops.items()}
                  for path, ops in {**paths(), **task_routes.openapi_paths(_body, _json, _problem, _path,
                                                                          _BAD_BODY)}.items()},
        "components": {"schemas": components, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "A token from `baton tokens create` (the first `baton serve` of a store "
                                      "writes an admin one to its admin token file)."},
            "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                        "description": "The console's session (`POST /api/login`); state-changing requests "
                                       "made with it send `X-CSRF-Token` (from `GET /api/session`)."}}},
        "security": [{"bearer": []}, {"session": []}],
    }


async def openapi(request: Request) -> Response:
    """GET /api/openapi.json."""
    cached = getattr(request.app.state, "openapi", None)
    if cached is None:
        cached = request.app.state.openapi = msgspec.json.encode(document())
    return Response(cached, media_type="application/json")


ROUTES = [Route("/api/openapi.json", openapi, methods=["GET"], name="openapi")]
