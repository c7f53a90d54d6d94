"""Console sessions: a token exchanged for an HttpOnly cookie, and the CSRF token that goes with it.

``POST /api/login {token}`` checks the token and answers 204 with the cookie
``baton_session``: HttpOnly (no script reads it), SameSite=Strict (no other
site's page makes the browser send it), Path=/, Secure when the request came
over https (directly or through a proxy uvicorn trusts), Max-Age the
session's life. ``GET /api/session`` says who is logged in and gives the
session's CSRF token, which every state-changing request made with the
cookie must send back as ``X-CSRF-Token`` (``api.http.auth``).
``POST /api/logout`` ends the session.

Sessions live in this process's memory: a restart ends them all (the console
asks for a token again; tokens are in the store and survive), and a session
is known only to the server that made it. Each ends ``BATON_SESSION_TTL_S``
after its login, and at once when its token is revoked. Only the SHA-256 of
a session id is kept, so a dump of this process's memory holds no cookie
that opens anything.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.http import schemas
from api.http.problems import CsrfRefused
from api.http.routes import read_body
from flows.auth import Principal, Unauthenticated

SESSION_COOKIE = "baton_session"
CSRF_HEADER = "x-csrf-token"
MAX_SESSIONS = 10_000  # past this, a login ends the sessions closest to their end first


class Session(msgspec.Struct, frozen=True, kw_only=True):
    """One logged-in console: whose token it stands for, its CSRF token, and when it ends."""

    token_hash: str
    csrf: str
    expires_at: float


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()


class Sessions:
    """The sessions of this process (thread-safe), each ending ``ttl_s`` after it began."""

    def __init__(self, ttl_s: float, now: Callable[[], float] = time.time) -> None:
        """Sessions live ``ttl_s`` seconds; ``now`` is the clock (tests pass their own)."""
        self.ttl_s = ttl_s
        self._now = now
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    def begin(self, principal: Principal) -> tuple[str, Session]:
        """A new session for ``principal``'s token: its id (the cookie's value) and the session."""
        session_id = secrets.token_urlsafe(32)
        session = Session(token_hash=principal.token_hash, csrf=secrets.token_urlsafe(32),
                          expires_at=self._now() + self.ttl_s)
        with self._lock:
            if len(self._sessions) >= MAX_SESSIONS:
                self._prune()
            self._sessions[_key(session_id)] = session
        return session_id, session

    def get(self, session_id: str) -> Session | None:
        """The live session of that id, or None (unknown, or past its end: then it is forgotten)."""
        key = _key(session_id)
        with self._lock:
            session = self._sessions.get(key)
            if session is not None and session.expires_at <= self._now():
                del self._sessions[key]
                return None
        return session

    def end(self, session_id: str) -> None:
        """Forget the session (idempotent)."""
        with self._lock:
            self._sessions.pop(_key(session_id), None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _prune(self) -> None:
        """Forget ended sessions; if that is not enough, the tenth closest to their end (under the lock)."""
        now = self._now()
        self._sessions = {k: s for k, s in self._sessions.items() if s.expires_at > now}
        if len(self._sessions) >= MAX_SESSIONS:
            ordered = sorted(self._sessions.items(), key=lambda item: item[1].expires_at)
            self._sessions = dict(ordered[MAX_SESSIONS // 10:])


def check_csrf(sent: str, expected: str, what: str) -> None:
    """Raise CsrfRefused unless ``sent`` is the session's CSRF token (compared in constant time)."""
    if not hmac.compare_digest(sent.encode("utf-8", "surrogateescape"), expected.encode()):
        raise CsrfRefused(f"{what} was made with the session cookie but without its CSRF token: send the "
                          f"X-CSRF-Token header (GET /api/session gives it)")


# -- routes ---------------------------------------------------------------------------------------


def _cookie(response: Response, request: Request, value: str, max_age: int) -> None:
    response.set_cookie(SESSION_COOKIE, value, max_age=max_age, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


async def login(request: Request) -> Response:
    """POST /api/login {token}: 204 and the session cookie; 401 for a token that is not valid."""
    body = schemas.decode(await read_body(request), schemas.LoginRequest)
    tokens = request.app.state.tokens
    principal = tokens.principal(body.token)
    if principal is None:
        await run_in_threadpool(tokens.refresh)  # a token made a moment ago by another process
        principal = tokens.principal(body.token)
    if principal is None:
        raise Unauthenticated("that token is not valid (revoked, mistyped, or of another store)")
    sessions: Sessions = request.app.state.sessions
    session_id, session = sessions.begin(principal)
    response = Response(status_code=204, headers={"X-CSRF-Token": session.csrf})
    _cookie(response, request, session_id, int(sessions.ttl_s))
    return response


async def logout(request: Request) -> Response:
    """POST /api/logout: end the cookie's session (if it is one) and clear the cookie; 204.

    A live session must send its CSRF token, like any state change made with
    the cookie; an ended one is just cleared.
    """
    session_id = request.cookies.get(SESSION_COOKIE)
    sessions: Sessions = request.app.state.sessions
    if session_id:
        session = sessions.get(session_id)
        if session is not None:
            check_csrf(request.headers.get(CSRF_HEADER, ""), session.csrf, "POST /api/logout")
        sessions.end(session_id)
    response = Response(status_code=204)
    _cookie(response, request, "", 0)
    return response


async def session(request: Request) -> Response:
    """GET /api/session: who this request acts as, and the CSRF token of its session (null with a bearer)."""
    principal: Principal = request.user
    csrf = None
    if principal.via == "session":
        live = request.app.state.sessions.get(request.cookies.get(SESSION_COOKIE, ""))
        csrf = live.csrf if live is not None else None
    answer = schemas.SessionInfo(name=principal.name, role=principal.role.value, via=principal.via, csrf_token=csrf)
    headers = {"X-CSRF-Token": csrf} if csrf else None
    return Response(msgspec.json.encode(answer), media_type="application/json", headers=headers)


ROUTES = [
    Route("/api/login", login, methods=["POST"], name="login"),
    Route("/api/logout", logout, methods=["POST"], name="logout"),
    Route("/api/session", session, methods=["GET"], name="session"),
]
