"""A baton server for ``bench/scale.py``, timing each phase of its start.

    BATON_DB=... BATON_PORT=... BATON_FLOWS=scale_flows python bench/scale_server.py

What ``baton serve`` does (Runtime, projector, engine, HTTP app on uvicorn),
with a clock between the parts. Once uvicorn listens it prints one JSON line
(seconds): ``startup`` (spawn to this module's first line; the parent passes
``BENCH_SPAWN``), ``imports``, ``open`` (store and flows), ``projector``
(its start: the version check), ``catch_up`` (until the projector reached
the head the store had at start; 0 when the read tables were current),
``cpu`` (the process's CPU seconds
until then), ``recovery`` (``Engine.start()`` until the orchestrator answers: its
recovery of unfinished runs is done), ``http`` (the app and uvicorn
listening), and ``ready`` = spawn to listening with the engine answering.
Serves until SIGINT.
"""

from __future__ import annotations

import time

T_MAIN = time.time()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]


def main() -> None:
    t0 = time.perf_counter()
    import uvicorn

    from api.http.app import StreamingServer, create_app
    from api.http.connections import ConnectionGuard, connection_cap, guarded_protocol, raise_open_files_limit
    from api.runtime import Runtime
    from api.settings import from_env

    t1 = time.perf_counter()
    settings = from_env()
    if settings.one_cpu:  # as `baton serve` does (api.http.app.serve), before any thread starts
        from actors import cpus

        cpus.pin()
    runtime = Runtime(settings)
    t2 = time.perf_counter()
    runtime.start(engine=False)  # the projector only (and the read model)
    t3 = time.perf_counter()
    head = runtime.store.head()
    assert runtime.projector is not None
    runtime.projector.wait_for(head, timeout=3600)
    t4 = time.perf_counter()
    runtime.engine = runtime._engine(recover=True)
    runtime.engine.plan()  # answered once the orchestrator's recovery is done
    t5 = time.perf_counter()
    app = create_app(runtime)
    # the protocol `baton serve` runs (api.http.app.serve): the connection guard's, over httptools when installed
    guard = ConnectionGuard(connection_cap(settings.max_connections, raise_open_files_limit()),
                            settings.header_timeout_s, settings.body_timeout_s)
    config = uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=5, http=guarded_protocol(guard))
    server = StreamingServer(config, app.state.hub)
    spawn = float(os.environ.get("BENCH_SPAWN", T_MAIN))

    def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.001)
        t6 = time.perf_counter()
        print(json.dumps({"startup": T_MAIN - spawn, "imports": t1 - t0, "open": t2 - t1, "projector": t3 - t2,
                          "catch_up": t4 - t3, "recovery": t5 - t4, "http": t6 - t5,
                          "ready": time.time() - spawn, "cpu": time.process_time(), "head": head,
                          "pid": os.getpid()}), flush=True)

    threading.Thread(target=announce, daemon=True).start()
    try:
        server.run()
    finally:
        runtime.stop()


if __name__ == "__main__":
    main()
