"""The task-run routes (DESIGN §12): launch a project's task graph, look at its tasks, talk to one task.

| route | role |
|---|---|
| ``POST /api/projects/{project_id}/task-runs`` | operator |
| ``GET /api/runs/{run_id}/tasks`` | viewer |
| ``POST /api/runs/{run_id}/steps/{step_id}/message`` ``…/abort`` ``…/retry`` ``…/skip`` | operator |

The project is the registered one: its root and allow-list come from the
log (``actors.task_runs``), never from the request. A word on a task that
does not apply now (no question to answer, a task that is not running) is
refused with 409 and appends nothing.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from actors import task_runs
from api.http import schemas
from api.http.problems import BadParameter
from api.http.routes import (
    _actor,
    _engine,
    _runtime,
    json_response,
    path_run_id,
    read_body,
)
from flows.errors import UnknownRun
from flows.events import TaskEvent, ToolResult
from flows.projects import PROJECT_ID
from flows.tasks.launch import task_run_launched
from flows.tasks.lifecycle import DEFAULT_MAX_ROUNDS, plan


class TaskRunRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /api/projects/{project_id}/task-runs."""

    tasks_dir: str = task_runs.DEFAULT_TASKS_DIR
    base: str = "HEAD"
    target: str = ""
    max_rounds: int = 0
    model: str = ""
    title: str = ""
    land_timeout_s: float = 0.0
    """With a target: the landing gate is rejected by its timer after this many seconds (0: it waits)."""


class TaskWordRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST …/message (``text`` required), …/abort (``text``: why), …/retry (``text``: context), …/skip."""

    text: str = ""
    by: str = ""


async def launch_task_run(request: Request) -> Response:
    """Launch the project's task graph as one run; 422 with every problem of the task files."""
    project_id = request.path_params["project_id"]
    if not PROJECT_ID.fullmatch(project_id):
        raise BadParameter("project_id", f"{project_id!r} is not a project id")
    body = schemas.decode(await read_body(request), TaskRunRequest, empty_ok=True)
    by = _actor(request)
    engine = _engine(request)
    runtime = _runtime(request)
    max_rounds = body.max_rounds or getattr(runtime.settings, "task_max_rounds", DEFAULT_MAX_ROUNDS)
    if max_rounds < 1 or max_rounds > 20:
        raise BadParameter("max_rounds", "max_rounds must be between 1 and 20")
    if not 0 <= body.land_timeout_s <= 366 * 86400:
        raise BadParameter("land_timeout_s", "land_timeout_s must be between 0 and a year")

    def launch() -> Any:
        project = task_runs.project_of(runtime.store, project_id, engine.clock.now)
        graph = task_runs.plan(project, body.tasks_dir)
        from actors.engine import new_run_id  # one place makes run ids
        event = task_run_launched(graph, run_id=new_run_id(), now=engine.clock.now(), project_id=project_id,
                                  repo=project.root, allow=project.allow, base=body.base,
                                  target=body.target, max_rounds=max_rounds,
                                  model=body.model or engine.config.model, backend=engine.config.backend,
                                  launched_by=by, title=body.title, land_timeout_s=body.land_timeout_s)
        return engine.launch_tasks(event), [t.id for t in graph.tasks]

    launched, task_ids = await run_in_threadpool(launch)
    request.app.state.positions.saw(launched.position)
    return json_response({"run_id": launched.run_id, "position": launched.position, "tasks": task_ids}, 201,
                         headers={"Location": f"/api/runs/{launched.run_id}/tasks"})


async def run_tasks(request: Request) -> Response:
    """Every task of a task run: status, reason, phase, worktree, branch, last activity, commits, counters."""
    run_id = path_run_id(request)
    runtime = _runtime(request)
    state, history = await run_in_threadpool(task_runs.run_state, runtime.store, run_id)
    if state.launched is None:
        raise UnknownRun(run_id)
    if state.tasks is None:
        raise BadParameter("run_id", f"run {run_id} is not a task run")
    last: dict[str, float] = {}
    for _, event in history:
        if isinstance(event, (TaskEvent, ToolResult)):  # a task's phases and facts, and its implementor's calls
            last[event.step_id] = max(last.get(event.step_id, 0.0), event.at)
    calls = task_runs.tool_counts(state, history)
    slots = max(0, getattr(getattr(runtime.engine, "config", None), "agent_slots", 0) - len(state.tasks.inprogress()))
    views = plan(state.tasks, slots)
    tasks = []
    for tid, task in state.tasks.tasks.items():
        view = views[tid]
        tasks.append({
            "task_id": tid, "status": task.status.value, "reason": view.reason, "detail": view.detail,
            "waiting_on": list(view.waiting_on), "phase": task.phase.value if task.phase else None,
            "attempt": task.attempt, "worktree": task.worktree, "branch": task.branch,
            "worktree_removed": task.worktree_removed, "branch_deleted": task.branch_deleted,
            "last_activity": last.get(tid, 0.0), "commits": list(task.commits), "merge_commit": task.merge_commit,
            "review_rounds": task.round, "rejections": task.rejections, "conflicts": task.conflicts,
            "checks_failed": task.checks_failed, "messages": task.messages, "notices": task.notices,
            "anomalies": state.steps[tid].anomalies if tid in state.steps else 0,
            **calls[tid],
        })
    gate = state.steps.get(task_runs.LAND_STEP)
    landing = {"target": str(state.launched.input.get("target", "")),
               "gate": gate.status if gate is not None else None,  # None: launched without one
               "outcome": state.tasks.landing, "detail": state.tasks.landing_detail,
               "integration_worktree_removed": state.tasks.integration_removed}
    return json_response({"run_id": run_id, "status": state.status, "tasks": tasks,
                          "integration_head": state.tasks.integration_head, "landing": landing})


async def _word(request: Request, action: str) -> Response:
    run_id, step_id = path_run_id(request), request.path_params["step_id"]
    body = schemas.decode(await read_body(request), TaskWordRequest, empty_ok=True)
    by = _actor(request, body.by)
    position = await run_in_threadpool(_engine(request).task_command, run_id, step_id, action, text=body.text, by=by)
    request.app.state.positions.saw(position)
    return json_response({"run_id": run_id, "step_id": step_id, "action": action, "position": position})


async def task_message(request: Request) -> Response:
    """POST …/steps/{step_id}/message: the text reaches the running agent's next turn (409: not running)."""
    return await _word(request, "message")


async def task_abort(request: Request) -> Response:
    """POST …/steps/{step_id}/abort: stop one task (its work kept on its branch), not the run."""
    return await _word(request, "abort")


async def task_retry(request: Request) -> Response:
    """POST …/steps/{step_id}/retry: answer a blocked task with context; it starts again in its worktree."""
    return await _word(request, "retry")


async def task_skip(request: Request) -> Response:
    """POST …/steps/{step_id}/skip: answer a blocked task by ending it (its dependents are aborted)."""
    return await _word(request, "skip")


class LandRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /api/runs/{run_id}/land: ``target`` defaults to the branch the run was launched for."""

    target: str = ""
    by: str = ""


async def land_task_run(request: Request) -> Response:
    """Land a task run's integration branch on its target: fast-forward only (approver). A run waiting at
    its landing gate has the gate approved (the same as ``POST …/steps/land/approve``) and the landing it
    then records is the answer; an ended run (old logs, no target, rejected or refused) is landed here."""
    run_id = path_run_id(request)
    body = schemas.decode(await read_body(request), LandRequest, empty_ok=True)
    by = _actor(request, body.by)
    engine = _engine(request)
    env = engine.ctx.tasks
    if env is None:
        raise BadParameter("run_id", "this server runs no task runs (BATON_WORKTREES)")
    gated = await run_in_threadpool(task_runs.land_at_gate, engine, run_id, target=body.target, by=by)
    if gated is not None:  # the run waits at its landing gate: the command approves it, the run lands
        event, position = gated
    else:
        event, position = await run_in_threadpool(task_runs.land, _runtime(request).store, run_id, env,
                                                  target=body.target, by=by, now=engine.clock.now())
    request.app.state.positions.saw(position)
    landed = type(event).__name__ == "RunLanded"
    return json_response({"run_id": run_id, "landed": landed, "target": getattr(event, "target", ""),
                          "commit": getattr(event, "commit", ""), "reason": getattr(event, "reason", ""),
                          "position": position})


ROUTES = [
    Route("/api/projects/{project_id}/task-runs", launch_task_run, methods=["POST"], name="launch_task_run"),
    Route("/api/runs/{run_id}/tasks", run_tasks, methods=["GET"], name="run_tasks"),
    Route("/api/runs/{run_id}/steps/{step_id}/message", task_message, methods=["POST"], name="task_message"),
    Route("/api/runs/{run_id}/steps/{step_id}/abort", task_abort, methods=["POST"], name="task_abort"),
    # …/retry is one route with the step retry of DESIGN §15: api.http.routes.retry hands a task run's here.
    Route("/api/runs/{run_id}/steps/{step_id}/skip", task_skip, methods=["POST"], name="task_skip"),
    Route("/api/runs/{run_id}/land", land_task_run, methods=["POST"], name="land_task_run"),
]


REQUESTS: tuple[Any, ...] = (TaskRunRequest, TaskWordRequest, LandRequest)
"""The request bodies of these routes (components of the OpenAPI document)."""


def openapi_paths(body: Any, json: Any, problem: Any, path: Any, bad_body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI entries of these routes (``api.http.openapi`` passes its builders)."""
    any_object = {"type": "object", "additionalProperties": True}
    words: dict[str, Any] = {}
    for action, doc in (("message", "A message to the running agent's next turn"), ("abort", "Abort one task"),
                        ("skip", "Answer a blocked task: end it (its dependents are aborted)")):
        words[f"/api/runs/{{run_id}}/steps/{{step_id}}/{action}"] = {"post": {
            "summary": doc, "operationId": f"task_{action}",
            "parameters": [path("run_id"), path("step_id")], "requestBody": body("TaskWordRequest", required=False),
            "responses": {"200": json(any_object, "Recorded; `position` is its first event."), **bad_body,
                          "409": problem("It does not apply now: the task is not running, there is no question "
                                         "to answer, or the run ended (`task-not-ready`, `task-command-refused`)."),
                          "503": problem("No engine in this process.")}}}
    return {
        "/api/projects/{project_id}/task-runs": {"post": {
            "summary": "Launch the project's task graph as one run", "operationId": "launch_task_run",
            "parameters": [path("project_id")], "requestBody": body("TaskRunRequest", required=False),
            "responses": {"201": json(any_object, "Launched: `run_id`, `position`, `tasks` in plan order."),
                          **bad_body,
                          "404": problem("No project of that id (`unknown-project`)."),
                          "503": problem("No engine in this process.")}}},
        "/api/runs/{run_id}/tasks": {"get": {
            "summary": "Every task of a task run", "operationId": "run_tasks", "parameters": [path("run_id")],
            "responses": {"200": json(any_object, "Each task: status, reason, phase, worktree, branch, last "
                                                  "activity, commits, review rounds, conflicts, failed checks, the "
                                                  "implementor's tool calls, tool errors and malformed calls; "
                                                  "`landing`: the target, the landing gate's status, the landing's "
                                                  "outcome (`landed`, `refused` or empty) and whether the "
                                                  "integration worktree was removed."),
                          "404": problem("No such run."),
                          "422": problem("Not a task run.")}}},
        **words,
        "/api/runs/{run_id}/land": {"post": {
            "summary": "Land a task run on its target branch (fast-forward only): approves its landing gate, "
                       "or lands an ended run",
            "operationId": "land_task_run", "parameters": [path("run_id")],
            "requestBody": body("LandRequest", required=False),
            "responses": {"200": json(any_object, "`landed` and its `commit`, or the `reason` it was refused "
                                                  "(not a fast-forward, or the target is checked out)."),
                          **bad_body,
                          "409": problem("The run is not a task run, is under way and not at its landing gate, "
                                         "or has no target (`landing-not-ready`).")}}},
    }
