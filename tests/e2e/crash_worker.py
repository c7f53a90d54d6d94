"""A baton process for the kill -9 test, run as ``python -m tests.e2e.crash_worker`` from the repo root.

    crash_worker launch URL MARKER N   launch N runs of e2e-crash, print their ids (one JSON
                                       line), then keep driving them until killed
    crash_worker recover URL RUN...    start an engine (which recovers the runs), wait until
                                       each run has ended, print their statuses, exit 0

Both build the process the way ``baton`` does: ``api.runtime.Runtime`` from Settings.
"""

from __future__ import annotations

import json
import sys
import threading

from api.runtime import Runtime
from api.settings import Settings

FLOWS = ("tests.e2e.flows_fixture",)


def settings(url: str) -> Settings:
    """Offline agents slow enough (0.3 s each) that the kill finds work in flight."""
    return Settings(db=url, flows=FLOWS, agent="offline", offline_delay_s=0.3, agent_slots=4, max_active_runs=8)


def launch(url: str, marker: str, n: int) -> None:
    """Launch ``n`` runs and drive them for ever (the test kills this process)."""
    rt = Runtime(settings(url)).start(projector=False)
    assert rt.engine is not None
    run_ids = [
        rt.engine.launch("e2e-crash", f"crash test {i}", band="medium",
                         inputs={"marker": marker, "hold_s": 60}).run_id
        for i in range(n)
    ]
    print(json.dumps({"runs": run_ids}), flush=True)
    threading.Event().wait()  # never returns: SIGKILL ends this process


def recover(url: str, run_ids: list[str]) -> int:
    """Start an engine on the same store and wait for every run to end."""
    rt = Runtime(settings(url)).start(projector=False)
    assert rt.engine is not None
    try:
        statuses = {run_id: rt.engine.wait(run_id, timeout=60).status for run_id in run_ids}
    finally:
        rt.stop()
    print(json.dumps({"statuses": statuses}), flush=True)
    return 0


def main(argv: list[str]) -> int:
    """Dispatch ``launch`` / ``recover``."""
    if argv[0] == "launch":
        launch(argv[1], argv[2], int(argv[3]))
        return 0
    if argv[0] == "recover":
        return recover(argv[1], argv[2:])
    print(f"unknown mode {argv[0]!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
