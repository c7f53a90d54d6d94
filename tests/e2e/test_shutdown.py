"""A baton process ends when its work says so, not when a step's function returns.

Step functions run on threads that cannot be interrupted: a code step that
sleeps for ten minutes keeps its thread for ten minutes. Neither a ``baton
launch`` whose step timed out nor a ``baton serve`` told to stop may wait
for it (nor for any other thread of the engine).
"""

from __future__ import annotations

import subprocess
import time

import httpx

from tests.api.server import ApiServer
from tests.e2e.baton_cli import BATON, clean_env

FLOWS = "tests.e2e.slow_flows"


def test_launch_exits_once_a_timed_out_code_step_fails_the_run(sqlite_url, tmp_path):
    began = time.monotonic()
    proc = subprocess.run([str(BATON), "--flows", FLOWS, "launch", "e2e-oversleep", "-q", "nap"], cwd=tmp_path,
                          env=clean_env(BATON_DB=sqlite_url), capture_output=True, text=True, timeout=120)
    took = time.monotonic() - began
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "failed" in proc.stdout
    assert took < 20, f"baton launch took {took:.0f} s: it waited for the step's function, not for the run"


def test_sigterm_stops_serve_within_10_s_with_steps_running(sqlite_url):
    with ApiServer(sqlite_url, BATON_FLOWS=FLOWS) as server:
        for i in range(3):
            r = httpx.post(server.url + "/api/runs", json={"flow": "e2e-busy", "question": f"q{i}"}, auth=server.auth)
            assert r.status_code == 201, r.text
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # every step is running: its thread is busy in time.sleep
            runs = httpx.get(server.url + "/api/runs", auth=server.auth).json()["runs"]
            if len(runs) == 3 and all(r["status"] == "running" for r in runs):
                break
            time.sleep(0.1)
        code, took = server.sigterm()
        assert code is not None and took <= 10, f"serve took {took:.1f} s to stop (exit {code}):\n{server.log()}"
        print(f"SIGTERM: serve stopped in {took:.1f} s (exit {code})")
        assert code == 0, server.log()
