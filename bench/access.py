"""What access checks cost a request: the same route with a bearer token, with a session cookie, and without
auth (the baseline), measured in the same run.

    python bench/access.py [--requests 20000]

Calls the app straight through ASGI (no socket, no HTTP client), so the
difference between the figures is the middleware's: Host and Origin checks,
the route's role, the token's SHA-256 and lookup (or the session's), and the
role check. ``GET /api/session`` is the route: it does almost nothing else.
Also: a well-formed token that is not valid, which makes the server re-read
the ``auth`` stream once (it may be a token made a moment ago elsewhere).

One JSON line per figure, each with the baseline beside it.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.http.app import create_app  # noqa: E402
from api.runtime import Runtime  # noqa: E402
from api.settings import Settings  # noqa: E402
from api.tokens import TokenBook  # noqa: E402


async def call(app: Any, headers: list[tuple[bytes, bytes]]) -> int:
    """One GET /api/session through the app; its status."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/api/session", "raw_path": b"/api/session", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"localhost:8765"), *headers], "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 8765)}
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def rounds_us(cases: dict[str, tuple[Any, list[tuple[bytes, bytes]], int, int]], rounds: int = 7
                    ) -> dict[str, float]:
    """Microseconds per request of each case (app, headers, requests, expected status): the median of
    ``rounds`` rounds, the cases alternating within each round so that a busy moment costs them alike."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (app, headers, n, expect) in cases.items():
            began = time.perf_counter()
            for _ in range(n):
                status = await call(app, headers)
            times[name].append((time.perf_counter() - began) / n * 1e6)
            assert status == expect, (name, status)
    return {name: statistics.median(values) for name, values in times.items()}


def app_of(db: str, *, auth: bool) -> tuple[Runtime, Any, str]:
    """A runtime (store only) and its app, with a viewer token among 200 others."""
    runtime = Runtime(Settings(db=db, insecure_no_auth=not auth)).start(engine=False, projector=False)
    book = TokenBook(runtime.store, time.time)
    token = book.create("bench", "viewer", by="bench").token
    for i in range(200):  # a registry of a realistic size
        book.create(f"other-{i}", "viewer", by="bench")
    app = create_app(runtime)
    app.state.tokens.refresh()
    return runtime, app, token


def main(argv: list[str]) -> None:
    n = int(argv[argv.index("--requests") + 1]) if "--requests" in argv else 20000
    with tempfile.TemporaryDirectory() as tmp:
        open_rt, open_app, _ = app_of(f"sqlite:///{tmp}/open.db", auth=False)
        auth_rt, auth_app, token = app_of(f"sqlite:///{tmp}/auth.db", auth=True)
        try:
            from flows.auth import authenticate

            principal = authenticate(auth_app.state.tokens.registry.by_hash(), token)
            session_id, _ = auth_app.state.sessions.begin(principal)
            results = asyncio.run(rounds_us({
                "none": (open_app, [], n, 200),
                "bearer": (auth_app, [(b"authorization", f"Bearer {token}".encode())], n, 200),
                "session": (auth_app, [(b"cookie", f"baton_session={session_id}".encode())], n, 200),
                "unknown_token": (auth_app, [(b"authorization", b"Bearer baton_" + b"x" * 43)], max(n // 20, 100),
                                  401),
            }))
        finally:
            open_rt.stop()
            auth_rt.stop()
    base = round(results["none"], 1)
    common = {"route": "GET /api/session", "requests_per_round": n, "baseline_no_auth_us": base,
              "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}
    for name in ("bearer", "session", "unknown_token"):
        value = round(results[name], 1)
        print(json.dumps({"bench": f"access.{name}_us_per_request", "value": value,
                          "overhead_us": round(value - base, 1), **common}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
