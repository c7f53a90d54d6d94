"""The web console's routes: ``/`` (the page) and ``/static/...`` (its files), from the package.

The console is static files only (no build step, no CDN, no network at run
time); it talks to the JSON API and ``/api/stream`` like any other client.
Every answer carries a strict Content-Security-Policy (scripts, styles and
connections from this origin only; no inline script, no frames, no remote
origin), ``X-Content-Type-Options: nosniff`` and ``Cache-Control: no-cache``
with an ETag: the browser revalidates each file on every load (a 304 when
unchanged), so a changed file is always the one that loads, without hashed
names and the build step they would need.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).resolve().parent / "static"

CSP = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "font-src 'self'",
    "manifest-src 'self'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# Module scripts are refused under nosniff unless served as JavaScript; the
# platform's mime.types is not trusted to say so.
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml"}


class ConsoleFiles(StaticFiles):
    """StaticFiles with the console's security and cache headers on every answer (304s included)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        """The file at ``path`` (or 404/304), with the console's headers."""
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        media = TYPES.get(Path(path).suffix)
        if media is not None and response.status_code == 200:
            response.headers["Content-Type"] = media
        return response


files = ConsoleFiles(directory=STATIC)


async def index(request: Request) -> Response:
    """GET /: the console's page (it routes itself with the URL's #fragment)."""
    return await files.get_response("index.html", request.scope)


ROUTES = [
    Route("/", index, methods=["GET", "HEAD"], name="console"),
    Mount("/static", app=files, name="static"),
]
