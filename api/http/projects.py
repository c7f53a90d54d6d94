"""Projects over HTTP (DESIGN §11): register a git repository (admin), list them (viewer), remove one (admin).

A project is the only way a run reads files: a launch names a ``project_id``
and never a path. Registering takes a path on the *server's* disk, so it is
an admin's act, recorded with who did it (the request's principal).
"""

from __future__ import annotations

import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from actors.workspace.projects import ProjectBook
from api.http import schemas
from api.http.problems import BadParameter
from api.http.routes import json_response, read_body, text_param
from flows.auth import Principal
from flows.projects import PROJECT_ID, Project, ProjectNotFound, UnknownProject
from flows.text import check_text

MAX_REASON_CHARS = 1000  # why a project was removed: a sentence, recorded in the log


def _book(request: Request) -> ProjectBook:
    return ProjectBook(request.app.state.runtime.store, now=time.time)


def view(project: Project) -> schemas.ProjectView:
    """A project as the API shows it."""
    return schemas.ProjectView(project_id=project.project_id, root=project.root,
                               registered_by=project.registered_by, registered_at=project.registered_at)


async def list_projects(request: Request) -> Response:
    """GET /api/projects: every registered project, by id."""
    projects = await run_in_threadpool(_book(request).projects)
    return json_response([view(p) for p in projects])


async def add_project(request: Request) -> Response:
    """POST /api/projects {project_id, path}: 201 with the project (200 when it was registered so already)."""
    body = schemas.decode(await read_body(request), schemas.ProjectRequest)
    check_text("project_id", body.project_id)
    check_text("path", body.path)
    principal: Principal = request.user
    book = _book(request)
    before = await run_in_threadpool(book.registry)
    project = await run_in_threadpool(book.add, body.project_id, body.path, by=principal.name)
    created = body.project_id not in before.projects
    return json_response(view(project), 201 if created else 200)


async def remove_project(request: Request) -> Response:
    """DELETE /api/projects/{project_id}[?reason=]: no launch can name it from now on; runs pinned to it keep
    their pin. 404 when no project of that id is registered (nothing appended)."""
    project_id: str = request.path_params["project_id"]
    if not PROJECT_ID.fullmatch(project_id):
        raise ProjectNotFound(project_id)
    reason = text_param(request, "reason") or ""
    if len(reason) > MAX_REASON_CHARS:
        raise BadParameter("reason", f"reason is at most {MAX_REASON_CHARS} characters, not {len(reason)}")
    principal: Principal = request.user
    book = _book(request)
    try:
        position = await run_in_threadpool(book.remove, project_id, by=principal.name, reason=reason)
    except UnknownProject as exc:
        raise ProjectNotFound(project_id, exc.known) from None
    request.app.state.positions.saw(position)
    return json_response(schemas.ProjectRemovedAnswer(project_id=project_id, position=position))


ROUTES = [
    Route("/api/projects", list_projects, methods=["GET"], name="list_projects"),
    Route("/api/projects", add_project, methods=["POST"], name="add_project"),
    Route("/api/projects/{project_id}", remove_project, methods=["DELETE"], name="remove_project"),
]
