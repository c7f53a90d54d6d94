"""Tokens over HTTP (admin only): list, create (the token is in the answer, once), revoke.

``baton tokens ...`` goes through these when a server of the store runs, so
the revocation takes effect on that server before the command returns: the
route refreshes the server's token index after appending. Who acts is the
request's principal, recorded as ``by``.
"""

from __future__ import annotations

import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.http import schemas
from api.http.problems import BadParameter
from api.http.routes import json_response, read_body
from api.tokens import TokenBook
from flows.auth import Principal
from flows.text import check_text


def _book(request: Request) -> TokenBook:
    return TokenBook(request.app.state.runtime.store, now=time.time)


async def list_tokens(request: Request) -> Response:
    """GET /api/tokens: every valid token (name, role, who issued it, when); never a token itself."""
    tokens = await run_in_threadpool(_book(request).tokens)
    return json_response([schemas.TokenView(name=t.name, role=t.role.value, issued_by=t.issued_by,
                                            issued_at=t.issued_at) for t in tokens])


async def create_token(request: Request) -> Response:
    """POST /api/tokens {name, role}: 201 with the token, shown this once."""
    body = schemas.decode(await read_body(request), schemas.TokenRequest)
    check_text("name", body.name)
    principal: Principal = request.user
    issued = await run_in_threadpool(_book(request).create, body.name, body.role, by=principal.name)
    await run_in_threadpool(request.app.state.tokens.refresh)
    request.app.state.positions.saw(issued.position)
    return json_response(schemas.TokenCreated(name=issued.name, role=issued.role.value, token=issued.token,
                                              position=issued.position), 201)


async def revoke_token(request: Request) -> Response:
    """DELETE /api/tokens/{name}: the token no longer opens anything, here at once (sessions made with it end)."""
    name: str = request.path_params["name"]
    if len(name) > 64:
        raise BadParameter("name", "a token name is at most 64 characters")
    check_text("name", name)
    principal: Principal = request.user
    position = await run_in_threadpool(_book(request).revoke, name, by=principal.name)
    await run_in_threadpool(request.app.state.tokens.refresh)
    request.app.state.positions.saw(position)
    return json_response(schemas.TokenRevokedAnswer(name=name, position=position))


ROUTES = [
    Route("/api/tokens", list_tokens, methods=["GET"], name="list_tokens"),
    Route("/api/tokens", create_token, methods=["POST"], name="create_token"),
    Route("/api/tokens/{name}", revoke_token, methods=["DELETE"], name="revoke_token"),
]
