"""The HTTP composition root: ``create_app(runtime)`` and ``serve(settings)``.

    runtime = Runtime(settings).start()
    app = create_app(runtime)          # Starlette; the caller owns the runtime
    serve(settings)                    # `baton serve`: runtime + uvicorn, exit code

``python -m api.http.app`` serves with settings from the BATON_* environment
(the tests run the server this way, in a subprocess).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from actors import cpus
from actors.runlog import server_lease
from api import failures
from api.http import admin, openapi, problems, projects, routes, stream, task_routes
from api.http import sessions as login
from api.http.auth import AccessMiddleware, TokenIndex, unserved_routes
from api.http.connections import (
    ACCEPT_BURST,
    ConnectionGuard,
    connection_cap,
    guarded_protocol,
    raise_open_files_limit,
)
from api.http.hub import DEFAULT_BUFFER, FrameHub
from api.http.listen import ListenError, listen, url_of
from api.http.sessions import Sessions
from api.runtime import Runtime
from api.sealer import Sealer
from api.settings import Settings, SettingsError, from_env, os_user, require_model, require_safe_auth, safe_url
from api.tokens import TokenBook, bootstrap
from api.web import routes as web
from eventstore.leases import default_owner

log = logging.getLogger("baton.api")

CORS_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID", "X-CSRF-Token"]
SHUTDOWN_S = 10.0  # a stop signal ends the process within this, whatever is running
GRACE_S = 3.0  # of which requests in progress get this long to finish


def create_app(runtime: Runtime, *, heartbeat_s: float = 15.0, stream_buffer: int = DEFAULT_BUFFER) -> Starlette:
    """The Starlette app over a started ``runtime`` (which the caller starts and stops).

    The lifespan only starts the frame hub (one store subscription and one
    thread) and stops it; ``heartbeat_s`` is the SSE comment interval and
    ``stream_buffer`` how many frames a stream client may fall behind before
    it is closed (it then resumes by id).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        hub.start()
        try:
            # After the hub follows the store: a token event from now on refreshes the index, and this
            # read has every earlier one, so none falls between the two.
            try:
                await asyncio.to_thread(tokens.refresh)
            except Exception as exc:  # the store away: the index stays stale, and each request refreshes it
                log.warning("cannot read the auth stream yet (%s: %s); requests will retry", type(exc).__name__, exc)
            yield
        finally:
            hub.stop()

    settings = runtime.settings
    bus = runtime.bus  # the engine publishes deltas and plan updates on the runtime's bus
    read_model = runtime.read_model
    tokens = TokenIndex(runtime.store)
    hub = FrameHub(runtime.store, bus=bus,
                   project_of=read_model.run_project if read_model is not None else None,
                   open_projects=getattr(read_model, "open_run_projects", None),
                   buffer=stream_buffer, observers=[tokens.observe])
    sessions = Sessions(settings.session_ttl_s)
    served = [*routes.ROUTES, *stream.ROUTES, *openapi.ROUTES, *login.ROUTES, *admin.ROUTES, *projects.ROUTES, *web.ROUTES,
              *task_routes.ROUTES]
    unguarded = unserved_routes(served)
    if unguarded:  # a route nobody said who may call: refuse to serve it rather than guess
        raise RuntimeError(f"routes without a role in flows.auth.ROUTE_ROLES: {', '.join(unguarded)}")
    middleware = [Middleware(AccessMiddleware, routes=served, tokens=tokens, sessions=sessions, settings=settings)]
    if settings.cors_origins:
        middleware.insert(0, Middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                                        allow_methods=["GET", "POST", "DELETE"], allow_headers=CORS_HEADERS,
                                        expose_headers=["Baton-Read-Position", "Location"]))
    app = Starlette(routes=served, middleware=middleware, exception_handlers=problems.handlers(),
                    lifespan=lifespan)
    app.state.runtime = runtime
    app.state.hub = hub
    app.state.tokens = tokens
    app.state.sessions = sessions
    app.state.positions = routes.Positions()
    app.state.heartbeat_s = heartbeat_s
    return app


class StreamingServer(uvicorn.Server):
    """uvicorn's server, which on a stop signal also ends the open streams, and returns.

    Open SSE responses never finish on their own, so uvicorn's graceful
    shutdown would wait for them forever; ending them lets it close in time
    (consumers resume by id elsewhere). And where uvicorn re-raises the
    signal after its shutdown (SIGTERM's default action kills the process on
    the spot), this one just returns, so ``serve`` still stops the runtime.
    """

    def __init__(self, config: uvicorn.Config, hub: FrameHub, on_ready: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self.hub = hub
        self.on_ready = on_ready
        self.stopped = threading.Event()  # set once the whole process has stopped (the runtime too)
        self._deadline: threading.Thread | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's start; then, once it accepts connections, ``on_ready`` and uvicorn's usual ready line.

        uvicorn logs "Uvicorn running on ..." only for a socket it bound
        itself; ``serve`` binds its own (to refuse a port in use before
        anything starts), so the line is logged here, as uvicorn words it.
        """
        await super().startup(sockets)
        if self.started and sockets is not None:
            if self.on_ready is not None:
                self.on_ready()
            host, port = self.config.host, sockets[0].getsockname()[1]
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            logging.getLogger("uvicorn.error").info("Uvicorn running on http://%s (Press CTRL+C to quit)", address)

    def handle_exit(self, sig: int, frame: Any) -> None:
        """Signal handler: end the streams (on the loop), then uvicorn's own handling.

        The first signal also arms a deadline: if the process has not stopped
        SHUTDOWN_S later (an append waiting on a database that is away, a
        request that will not end), it exits anyway. Every recorded event is
        already durable, and unfinished runs are recovered by the next start,
        as after a crash.
        """
        loop = self.hub.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.hub.end_streams)
        if self._deadline is None:
            self._deadline = threading.Thread(target=self._exit_at_deadline, name="baton-stop-deadline",
                                              daemon=True)
            self._deadline.start()
        super().handle_exit(sig, frame)

    def _exit_at_deadline(self) -> None:
        if not self.stopped.wait(SHUTDOWN_S - 0.5):
            log.error("baton serve did not stop within %.0f s of the signal; exiting now (recorded events are "
                      "durable; unfinished runs are recovered at the next start)", SHUTDOWN_S)
            logging.shutdown()
            os._exit(1)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Route SIGINT/SIGTERM to ``handle_exit`` while serving; restore, never re-raise."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def serve(settings: Settings, **uvicorn_options: Any) -> int:
    """Start the runtime and serve HTTP until interrupted; the process's exit code.

    A start that fails (the port in use, a store that cannot be reached, a
    bad URL, a flows module that does not import, a backend refusing its
    settings, the openai backend without a model, another live process
    going by this node name) stops whatever had started, prints one line,
    ``baton: error: ...``, and returns the CLI's code for it (2: fix the
    input; 1: a failure at run time), before any banner. The port is bound
    first, so nothing starts on a port that is taken.

    While it serves, the server holds a lease ``server-<url>`` (renewed with
    its node lease) so that ``baton`` commands on the same store find it and
    go through it (``api.cli.discovery.discover``).
    """
    open_files = raise_open_files_limit()  # before the runtime opens anything: the engine's files come first
    try:
        require_model(settings)
        require_safe_auth(settings)
        sock = listen(settings.host, settings.port, ACCEPT_BURST)  # the guard counts on this backlog
    except (SettingsError, ListenError) as exc:
        return failures.fail(failures.EXIT_USAGE if isinstance(exc, SettingsError) else failures.EXIT_FAILED,
                             str(exc))
    if settings.one_cpu:  # before the runtime starts a thread: they all inherit it (its child processes do not)
        cpus.pin()
    try:
        runtime = Runtime(settings).start()
    except Exception as exc:
        sock.close()
        if not failures.known(exc):
            log.info("baton serve could not start", exc_info=exc)  # an unforeseen error's traceback, with -v
        return failures.fail(failures.exit_code(exc), failures.describe(exc, settings.db))
    url = url_of(settings.host, sock.getsockname()[1])
    lease, owner = server_lease(url), default_owner()
    engine = runtime.engine
    assert engine is not None
    server: StreamingServer | None = None
    sealer = Sealer(runtime.store, settings.seal_interval_s, print_seal)
    try:
        sealer.start()
        try:
            access = access_lines(runtime, settings, url)
        except OSError as exc:  # the token file cannot be written: nobody could use the token
            return failures.fail(failures.EXIT_FAILED, f"cannot write the admin token file: {exc}")
        for line in access:
            print(line, file=sys.stderr, flush=True)
        app = create_app(runtime)
        guard = ConnectionGuard(connection_cap(settings.max_connections, open_files), settings.header_timeout_s,
                                settings.body_timeout_s)
        options = {"timeout_graceful_shutdown": GRACE_S, "http": guarded_protocol(guard), "backlog": ACCEPT_BURST,
                   **uvicorn_options}
        config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info",
                                lifespan="on", **options)

        def ready() -> None:  # accepting connections: say so, and let baton commands find this server
            engine.ctx.leases.acquire(lease, owner)
            print(f"baton: serving {url}/ (web console; API at {url}/api) (store {safe_url(settings.db)}; "
                  f"{backend_line(settings)})", file=sys.stderr, flush=True)

        server = StreamingServer(config, app.state.hub, on_ready=ready)
        try:
            server.run(sockets=[sock])
        except SystemExit as exc:  # uvicorn exits when it cannot start
            return int(exc.code or 1)
        return 0 if server.started else 1
    finally:
        with contextlib.suppress(Exception):  # a store that went away: the lease ends with its TTL
            engine.ctx.leases.release(lease, owner)
        if runtime.engine is not None:  # the engine's last events first, then the shutdown seal
            runtime.engine.stop()
            runtime.engine = None
        sealer.stop(seal=server is not None)  # a start that failed before serving leaves no seal behind
        runtime.stop()
        if server is not None:
            server.stopped.set()
        sock.close()


def print_seal(seal: object) -> None:
    """A seal the server made, on its output: keep it outside the database (``baton replay --verify --seal``)."""
    print(f"baton: sealed the log: {seal}", file=sys.stderr, flush=True)
    log.info("sealed the log: %s", seal)


def access_lines(runtime: Runtime, settings: Settings, url: str) -> list[str]:
    """What ``baton serve`` says about access at every start; on a store with no valid token, it first
    makes an admin token and writes it to the admin token file (DESIGN §13).

    Raises OSError when that file cannot be written (nothing else is said then).
    """
    if settings.insecure_no_auth:
        return [f"baton: WARNING: --insecure-no-auth: no token is asked; anyone who reaches {url} acts as "
                f"'anonymous' with every right, and the log records nobody's identity. Serving on loopback only."]
    path = settings.admin_token_file()
    book = TokenBook(runtime.store, now=time.time)
    issued = bootstrap(book, path, by=f"baton serve ({os_user()})")
    if issued is not None:
        return [f"baton: first start on this store: an admin token is in {path} (readable by you only); baton "
                f"commands here use it, and the console asks for it. Give others their own: baton tokens create "
                f"NAME --role viewer|operator|approver|admin"]
    where = f"the admin token file is {path}" if path.exists() else f"no admin token file at {path}"
    return [f"baton: every request but /api/health needs a token ({where}; baton tokens create NAME --role ... "
            f"makes more)"]


def backend_line(settings: Settings) -> str:
    """Which backend agent steps call, and with which model, for the banner."""
    if settings.agent == "offline":
        return "backend offline: deterministic labelled text, no model called"
    if settings.agent == "openai":
        return f"backend openai at {settings.openai_base_url}, model {settings.model}"
    model = f", model {settings.model}" if settings.model else ""
    return f"backend cli: {settings.cli_command}{model}"


def main() -> int:
    """``python -m api.http.app``: serve with settings from the BATON_* environment."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = from_env()
    except SettingsError as exc:
        return failures.fail(failures.EXIT_USAGE, str(exc))
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
