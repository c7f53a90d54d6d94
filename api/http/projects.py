"""Projects over HTTP (DESIGN §11): register a git repository (admin), list them (viewer).

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
from api.http.routes import json_response, read_body
from flows.auth import Principal
from flows.projects import Project
from flows.text import check_text


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


ROUTES = [
    Route("/api/projects", list_projects, methods=["GET"], name="list_projects"),
    Route("/api/projects", add_project, methods=["POST"], name="add_project"),
]
