"""Access to the HTTP API (DESIGN §13): one middleware in front of every route.

``AccessMiddleware`` decides, for every request and WebSocket upgrade, in
this order:

1. **Host**: the Host header must name this server (``localhost``, the bind
   address, an IP literal, or a name in ``BATON_ALLOWED_HOSTS``); else 400.
   A page on ``evil.example`` whose name an attacker re-points at 127.0.0.1
   (DNS rebinding) sends ``Host: evil.example`` and is refused. An IP
   literal cannot be rebound (it names no domain), so any one is served.
2. **Origin**: a state-changing request (POST, DELETE, ...) or a WebSocket
   upgrade that carries an ``Origin`` other than this server's own (or one
   of ``BATON_CORS_ORIGINS``) is refused, 403 ``foreign-origin``; ``Origin:
   null`` is foreign. Clients that are not browsers send no Origin.
3. **Principal**: ``Authorization: Bearer <token>``, else the console's
   session cookie (``api.http.sessions``). None, or one that is not valid:
   401 (``WWW-Authenticate: Bearer``).
4. **CSRF**: a state-changing request authenticated by the cookie must send
   ``X-CSRF-Token`` equal to its session's token; else 403 ``csrf``. (A
   bearer token is never sent by a browser on its own, so it needs none.)
5. **Role**: the route's role (``flows.auth.ROUTE_ROLES``) against the
   principal's; 403 naming the role needed.
6. **Body type**: a state-changing request with a body (or any
   Content-Type) must be ``application/json``; else 415. A ``text/plain``
   or typeless POST is what a foreign page may send without a preflight.

The principal is then ``request.user`` (Starlette's convention) for the
routes to record as ``launched_by`` / ``by``. Every refusal is the
problem+json of ``api.http.problems``, like any other error.

With ``--insecure-no-auth`` (loopback only) steps 3-5 are skipped and
everyone is ``flows.auth.ANONYMOUS``; Host, Origin and body type are
checked all the same.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from api.http import problems
from api.http.problems import ForeignOrigin, HostNotAllowed, UnsupportedMediaType
from api.http.sessions import CSRF_HEADER, SESSION_COOKIE, Sessions, check_csrf
from api.settings import LOOPBACK_NAMES, Settings
from api.tokens import TokenBook
from eventstore import EventStore, RecordedEvent
from flows.auth import (
    ANONYMOUS,
    AUTH_STREAM,
    ROUTE_ROLES,
    TOKEN_PREFIX,
    Principal,
    Role,
    Token,
    TokenRegistry,
    authenticate,
    check_access,
)

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOKEN_CHARS = len(TOKEN_PREFIX) + 43  # a token as api.tokens.new_token makes them


class TokenIndex:
    """The valid tokens, in memory, following the ``auth`` stream (thread-safe).

    ``refresh()`` folds the events appended since the last one (a small read
    of one stream). The server calls it at start, whenever its frame hub
    sees an ``auth`` event go by (``observe``: a token revoked by any
    process is refused within the store's poll interval, at once when the
    revocation went through this server), and when a well-formed token is
    not found (a token created a moment ago by a ``baton`` command).
    """

    def __init__(self, store: EventStore) -> None:
        """Fold nothing yet: ``refresh()`` reads the stream."""
        self._book = TokenBook(store, now=lambda: 0.0)
        self._lock = threading.Lock()
        self._registry = TokenRegistry()
        self._by_hash: dict[str, Token] = {}
        self._stale = True  # until the first refresh

    @property
    def registry(self) -> TokenRegistry:
        """The registry as last folded."""
        return self._registry

    @property
    def stale(self) -> bool:
        """True when an auth event went by that could not be read (the store failed): refresh before trusting."""
        return self._stale

    def refresh(self) -> None:
        """Fold the auth events recorded since the last refresh; the store's error if it cannot be read."""
        with self._lock:
            try:
                fresh = self._book.registry(self._registry)
            except Exception:
                self._stale = True
                raise
            self._stale = False
            if fresh.version != self._registry.version:
                self._registry, self._by_hash = fresh, fresh.by_hash()

    def observe(self, records: Sequence[RecordedEvent]) -> None:
        """A frame hub's batch of recorded events: refresh when one is of the auth stream.

        When that fails (the store went away), the index is ``stale`` and
        every request refreshes it first, refused (503) while it cannot: a
        revocation is never missed.
        """
        if any(rec.stream_id == AUTH_STREAM for rec in records):
            self._stale = True
            self.refresh()

    def principal(self, presented: str) -> Principal | None:
        """The principal of a presented token, or None (no refresh: see ``AccessMiddleware``)."""
        return authenticate(self._by_hash, presented)

    def valid(self, digest: str) -> Token | None:
        """The valid token whose hash is ``digest`` (a session's), or None once it was revoked."""
        found = self._by_hash.get(digest)
        return found if found is not None and hmac.compare_digest(found.token_hash, digest) else None


class HostPolicy:
    """Which Host headers and Origins this server answers (see the module's steps 1 and 2)."""

    def __init__(self, settings: Settings) -> None:
        """The names of the settings: bind address, localhost, loopback, BATON_ALLOWED_HOSTS."""
        names = {*LOOPBACK_NAMES, settings.host, *settings.allowed_hosts}
        self.any_host = "*" in names
        self.hosts = frozenset(n.strip("[]").lower() for n in names if n != "*")
        self.origins = frozenset(o.rstrip("/").lower() for o in settings.cors_origins)

    def check_host(self, host_header: str) -> None:
        """Raise HostNotAllowed unless ``host_header`` (``name[:port]``) names this server."""
        if self.any_host:
            return
        name = _host_name(host_header)
        if name in self.hosts:
            return
        try:
            ipaddress.ip_address(name)
            return
        except ValueError:
            raise HostNotAllowed(host_header) from None

    def check_origin(self, origin: str, host_header: str) -> None:
        """Raise ForeignOrigin unless ``origin`` is this server's own (same host and port) or an allowed one."""
        if origin.rstrip("/").lower() in self.origins:
            return
        parts = urlsplit(origin)
        if origin != "null" and parts.scheme in ("http", "https") and parts.netloc.lower() == host_header.lower():
            return
        raise ForeignOrigin(origin)


def _host_name(host_header: str) -> str:
    """The name of a Host header, without its port ("[::1]:8765" -> "::1")."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def required_role(routes: Iterable[BaseRoute], scope: Scope) -> tuple[str, Role | None]:
    """The name of the route ``scope`` reaches and the role it needs.

    A path of the API no route takes whole (404, or 405 for a wrong method)
    needs a viewer, so that nobody learns the API's shape without a token;
    any other path is the console's (public, static).
    """
    partial = False
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            name = getattr(route, "name", "") or ""
            return name, ROUTE_ROLES.get(name, Role.ADMIN)
        partial = partial or match is Match.PARTIAL
    if partial or scope["path"].startswith("/api/"):
        return "", Role.VIEWER
    return "", None


def unserved_routes(routes: Iterable[BaseRoute]) -> list[str]:
    """Names of routes with no entry in ROUTE_ROLES (the app refuses to start with one)."""
    return [getattr(r, "name", "") or repr(r) for r in routes if getattr(r, "name", None) not in ROUTE_ROLES]


class AccessMiddleware:
    """The checks of the module's docstring, in front of ``app``; a refusal never reaches a route."""

    def __init__(self, app: ASGIApp, *, routes: Sequence[BaseRoute], tokens: TokenIndex, sessions: Sessions,
                 settings: Settings) -> None:
        """Guard ``app``, whose routes are ``routes``."""
        self.app = app
        self.routes = routes
        self.tokens = tokens
        self.sessions = sessions
        self.hosts = HostPolicy(settings)
        self.auth = not settings.insecure_no_auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check, then pass the request (with ``scope["user"]``) on, or answer the refusal."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        try:
            principal = await self._check(conn, scope)
        except Exception as exc:
            await self._refuse(exc, scope, receive, send)
            return
        scope["user"] = principal
        await self.app(scope, receive, send)

    async def _check(self, conn: HTTPConnection, scope: Scope) -> Principal | None:
        headers = conn.headers
        host = headers.get("host", "")
        self.hosts.check_host(host)
        websocket = scope["type"] == "websocket"
        changes = websocket or scope["method"] not in SAFE_METHODS
        origin = headers.get("origin")
        if changes and origin is not None:
            self.hosts.check_origin(origin, host)
        _, needed = required_role(self.routes, scope)
        what = f"{scope.get('method', 'WS')} {scope['path']}"
        if not self.auth:
            principal: Principal | None = ANONYMOUS
        elif needed is None:
            # A public route is not authenticated at all: /api/health must answer while the store (which
            # an index refresh reads) is away, and login checks its token itself.
            principal = None
        else:
            principal, csrf = await self._principal(conn)
            if principal is not None and csrf is not None and changes and not websocket:
                check_csrf(headers.get(CSRF_HEADER, ""), csrf, what)
            check_access(principal, needed, what)
        if changes and not websocket:
            _check_body_type(headers)
        return principal

    async def _principal(self, conn: HTTPConnection) -> tuple[Principal | None, str | None]:
        """The bearer token's principal, else the session cookie's (and its CSRF token)."""
        if self.tokens.stale:
            await run_in_threadpool(self.tokens.refresh)
        authorization = conn.headers.get("authorization")
        if authorization is not None:
            scheme, _, presented = authorization.partition(" ")
            if scheme.lower() != "bearer":
                return None, None
            presented = presented.strip()
            principal = self.tokens.principal(presented)
            if principal is None and len(presented) == TOKEN_CHARS and presented.startswith(TOKEN_PREFIX):
                await run_in_threadpool(self.tokens.refresh)  # made a moment ago, by another process?
                principal = self.tokens.principal(presented)
            return principal, None
        session_id = conn.cookies.get(SESSION_COOKIE)
        if session_id:
            session = self.sessions.get(session_id)
            if session is not None:
                token = self.tokens.valid(session.token_hash)
                if token is None:  # its token was revoked: the session ends with it
                    self.sessions.end(session_id)
                    return None, None
                principal = Principal(name=token.name, role=token.role, via="session", token_hash=token.token_hash)
                return principal, session.csrf
        return None, None

    async def _refuse(self, exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
        response = problems.from_exception(exc, scope["path"])
        if scope["type"] == "websocket":
            if "websocket.http.response" in scope.get("extensions", {}):
                await response(scope, receive, send)  # Starlette sends it as the denial response
            else:
                await send({"type": "websocket.close", "code": 1008, "reason": str(exc)[:120]})
            return
        await response(scope, receive, send)


def _check_body_type(headers: Any) -> None:
    """Raise UnsupportedMediaType for a body (or a declared type) that is not JSON."""
    declared = headers.get("content-type")
    has_body = headers.get("transfer-encoding") is not None or headers.get("content-length", "0") not in ("", "0")
    if declared is None:
        if has_body:
            raise UnsupportedMediaType("")
        return
    media = declared.split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMediaType(declared)
