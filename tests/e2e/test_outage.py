"""A real ``baton serve`` (``python -m api.http.app``) rides out a store outage with runs in flight.

The test's own PostgreSQL database refuses connections for 5 s, 35 s (past
the old writer's 30 s of retrying, which killed the engine for good) and
120 s; the SQLite file is made read-only (immutable) for 10 s. During the
outage health answers 503 naming the store, and a launch is refused at once
with a 503; afterwards health is 200 again with no part of the engine
restarted, every run finishes, and the log holds each run's terminal event
once, no step recorded as completed twice, and intact hash chains.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from eventstore import open_store
from tests.api.server import ApiServer
from tests.integration.test_store_outage import pg_refusing, sqlite_read_only

RUNS = 6
TERMINAL = {"completed", "failed", "rejected", "cancelled"}


def statuses(server: ApiServer, run_ids: list[str]) -> dict[str, str]:
    return {r: httpx.get(f"{server.url}/api/runs/{r}", timeout=10, auth=server.auth).json()["run"]["status"]
            for r in run_ids}


def ride_out(url: str, outage: Any, seconds: float) -> dict[str, float]:
    """Cut the store for ``seconds`` under a server with RUNS runs in flight; check and measure the recovery."""
    figures: dict[str, float] = {"outage_s": seconds}
    with ApiServer(url, BATON_OFFLINE_DELAY_S="1.5", BATON_AGENT_SLOTS="4") as server:
        run_ids = []
        for i in range(RUNS):
            r = httpx.post(f"{server.url}/api/runs", json={"flow": "api-chain", "question": f"outage {i}"},
                           auth=server.auth)
            assert r.status_code == 201, r.text
            run_ids.append(r.json()["run_id"])
        deadline = time.monotonic() + 20
        while set(statuses(server, run_ids).values()) != {"running"}:
            assert time.monotonic() < deadline, "the runs did not start"
            time.sleep(0.2)
        health_during: list[tuple[int, dict[str, Any]]] = []
        with outage(url) as end:
            cut = time.monotonic()
            refused_launch: httpx.Response | None = None
            while time.monotonic() - cut < seconds:
                r = httpx.get(f"{server.url}/api/health", timeout=10)
                health_during.append((r.status_code, r.json()))
                if refused_launch is None and time.monotonic() - cut > 2:
                    began = time.monotonic()
                    refused_launch = httpx.post(f"{server.url}/api/runs", timeout=30,
                                                json={"flow": "api-chain", "question": "during the outage"},
                                                auth=server.auth)
                    figures["launch_refused_in_s"] = time.monotonic() - began
                time.sleep(0.5)
            end()
            restored = time.monotonic()
        assert refused_launch is not None and refused_launch.status_code == 503, refused_launch.text
        assert figures["launch_refused_in_s"] < 5
        assert refused_launch.json()["type"].endswith("/store-unavailable")
        down = [body for code, body in health_during if code == 503]
        assert down and all(body["store"]["status"] == "down" for body in down), health_during[-1]
        while httpx.get(f"{server.url}/api/health", timeout=10).status_code != 200:
            assert time.monotonic() - restored < 30, "health stayed 503 after the store came back"
            time.sleep(0.1)
        figures["health_ok_after_s"] = time.monotonic() - restored
        while not set(statuses(server, run_ids).values()) <= TERMINAL:
            assert time.monotonic() - restored < 90, f"runs not finished: {statuses(server, run_ids)}"
            time.sleep(0.2)
        figures["runs_done_after_s"] = time.monotonic() - restored
        assert set(statuses(server, run_ids).values()) == {"completed"}, server.log()
        health = httpx.get(f"{server.url}/api/health", timeout=10).json()
        assert health["status"] == "ok" and health["engine"]["restarts"] == 0, health
    with open_store(url) as store:
        assert store.verify() == []
        for run_id in run_ids:
            types = [r.type for r in store.read_stream(f"run-{run_id}")]
            assert types.count("RunLaunched") == 1 and types.count("RunCompleted") == 1, types
            done = Counter(r.data["step_id"] for r in store.read_stream(f"run-{run_id}")
                           if r.type == "StepCompleted")
            assert set(done) == {"first", "second", "third", "fold"} and max(done.values()) == 1, done
    print("OUTAGE FIGURES", json.dumps({k: round(v, 2) for k, v in figures.items()}))
    return figures


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("seconds", [5, 35, 120])
def test_serve_rides_out_postgresql_refusing_connections(pg_url, seconds):
    ride_out(pg_url, pg_refusing, seconds)


@pytest.mark.slow
def test_serve_rides_out_a_read_only_sqlite_file(sqlite_url):
    ride_out(sqlite_url, sqlite_read_only, 10)


@pytest.mark.slow
def test_sigterm_stops_serve_within_10_s_while_the_database_refuses_connections(pg_url):
    with ApiServer(pg_url, BATON_OFFLINE_DELAY_S="1.5") as server:
        for i in range(3):
            assert httpx.post(f"{server.url}/api/runs", json={"flow": "api-chain", "question": f"q{i}"}
                              , auth=server.auth).status_code == 201
        with pg_refusing(pg_url):
            time.sleep(3)  # long enough for steps to finish and their appends to wait on the database
            code, took = server.sigterm()
        assert code is not None and took <= 10, f"serve took {took:.1f} s to stop (exit {code}):\n{server.log()}"
        print(f"SIGTERM: serve stopped in {took:.1f} s (exit {code})")
