"""Waiting for the read side costs no thread: ``?min_position`` waits leave the server responsive.

Each GET with ``?min_position=`` beyond the projector waits (up to 2 s) for it
to catch up. Blocking calls of the routes share one small thread pool (the
SSE resumes, the store reads, health's probe); a wait that held a thread of
it made health take seconds behind a dozen such waits.

A ``min_position`` past the store's head is refused at once (422), so the
waits here ask for a position the store has but the read side has not
reached: the projector is held inside its commit until the test lets it go.
"""

from __future__ import annotations

import statistics
import threading
import time

import httpx
from starlette.testclient import TestClient
import uvicorn

from api.http.app import create_app
from api.runtime import Runtime
from api.settings import Settings
from eventstore import NewEvent
from projections import Projector, ReadModel
from tests.api.access import issue_tokens
from tests.api.server import Bearer, free_port

WAITS = 16


def test_min_position_waits_do_not_slow_health(sqlite_url):
    release = threading.Event()
    holding = threading.Event()
    armed = threading.Event()

    def held(conn):  # once armed, the projector's commit waits here: the read side stays behind the head
        if armed.is_set():
            holding.set()
            release.wait(30)

    runtime = Runtime(Settings(db=sqlite_url)).start(engine=False, projector=False)
    viewer = Bearer(issue_tokens(runtime.store)["viewer"])  # (events the projector commits before it is held)
    runtime.projector = Projector(runtime.store, _before_commit=held).start()
    assert runtime.projector.wait_for(runtime.store.head(), 10)
    armed.set()
    runtime.read_model = ReadModel(runtime.store.database, runtime.projector)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(runtime), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        head = runtime.store.append("note-1", [NewEvent("Note", {"n": 1})], 0)[0].position
        assert holding.wait(10), "the projector did not reach its commit"

        def health_times() -> list[float]:
            took = []
            for _ in range(5):
                began = time.perf_counter()
                httpx.get(f"{url}/api/health", timeout=30)
                took.append(time.perf_counter() - began)
            return took

        # The baseline, in the same state with no wait: health takes ~45 ms here on a quiet machine (its
        # reads meet the projector's open commit), ~100 ms on a loaded one; the waits must add nothing.
        alone = health_times()
        started = threading.Barrier(WAITS + 1)
        answers: list[int] = []

        def waiting_read() -> None:
            started.wait()
            answers.append(httpx.get(f"{url}/api/runs?min_position={head}", auth=viewer, timeout=30).status_code)

        readers = [threading.Thread(target=waiting_read) for _ in range(WAITS)]
        for reader in readers:
            reader.start()
        started.wait()
        time.sleep(0.3)  # the reads have reached the server and are waiting for the projector
        took = health_times()
        for reader in readers:
            reader.join(30)
        print(f"HEALTH under {WAITS} waits: {[round(t * 1000, 1) for t in took]} ms; "
              f"alone: {[round(t * 1000, 1) for t in alone]} ms")
        assert answers == [200] * WAITS  # a stale read after the wait (it says so in a header), not an error
        # A wait that held a pool thread made health take seconds (each wait runs 2 s).
        bound = 0.1 + 2 * statistics.median(alone)
        assert statistics.median(took) < bound, (
            f"health took {[round(t, 3) for t in took]} s behind {WAITS} waits, "
            f"{[round(t, 3) for t in alone]} s without them")
    finally:
        release.set()
        server.should_exit = True
        thread.join(10)
        runtime.stop()


def test_a_run_read_waits_for_what_the_engine_recorded_not_only_for_this_apps_commands(sqlite_url):
    """After a restart, the runs the engine recovered are recorded by the engine, not by a command of
    the app; a read of such a run right away showed the read tables' older view ("running, recoveries
    0"). A run read now waits for the run's last commit as the engine driving it knows it."""
    settings = Settings(db=sqlite_url, flows=("tests.api.api_flows",), offline_delay_s=3.0)
    runtime = Runtime(settings).start()
    try:
        viewer = {"Authorization": f"Bearer {issue_tokens(runtime.store)['viewer']}"}
        projector = runtime.projector
        assert projector.wait_for(runtime.store.head(), 10)
        projector.stop()  # the read tables stay behind what the engine records next, as after a restart
        run_id = runtime.engine.launch("api-chain", "why?").run_id  # the engine's events: no command of the app
        runtime.engine.wait(run_id, lambda s: s.steps["first"].status == "running", timeout=10)
        recorded = runtime.engine.recorded_position(run_id)
        assert projector.position < recorded
        threading.Timer(0.3, projector.start).start()
        with TestClient(create_app(runtime), base_url="http://localhost") as client:
            answer = client.get(f"/api/runs/{run_id}", headers=viewer)
        assert answer.status_code == 200, answer.text  # without the wait: 404, the launch not yet in the tables
        assert int(answer.headers["Baton-Read-Position"]) >= recorded
        assert {s["step_id"]: s["status"] for s in answer.json()["steps"]}["first"] == "running"
    finally:
        runtime.stop()
