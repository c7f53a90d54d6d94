"""Waiting for the read side costs no thread: far-ahead ``?min_position`` waits leave the server responsive.

Each GET with ``?min_position=`` beyond the projector waits (up to 2 s) for it
to catch up. Blocking calls of the routes share one small thread pool (the
SSE resumes, the store reads, health's probe); a wait that held a thread of
it made health take seconds behind a dozen such waits.
"""

from __future__ import annotations

import statistics
import threading
import time

import httpx

WAITS = 16


def test_far_ahead_min_position_waits_do_not_slow_health(server):
    started = threading.Barrier(WAITS + 1)
    answers: list[int] = []

    def far_ahead_read() -> None:
        started.wait()
        answers.append(httpx.get(f"{server.url}/api/runs?min_position=1000000000", timeout=30).status_code)

    readers = [threading.Thread(target=far_ahead_read) for _ in range(WAITS)]
    for reader in readers:
        reader.start()
    started.wait()
    time.sleep(0.3)  # the reads have reached the server and are waiting for the projector
    took = []
    for _ in range(5):
        began = time.perf_counter()
        r = httpx.get(f"{server.url}/api/health", timeout=30)
        assert r.status_code == 200, r.text
        took.append(time.perf_counter() - began)
    for reader in readers:
        reader.join(30)
    print(f"HEALTH under {WAITS} far-ahead waits: {[round(t * 1000, 1) for t in took]} ms")
    assert answers == [200] * WAITS  # a stale read after the wait, not an error
    assert statistics.median(took) < 0.1, f"health took {[round(t, 3) for t in took]} s behind {WAITS} waits"
