"""kill -9 of a process running flows, then a restart on the same store (SQLite and PostgreSQL).

The first process launches runs of ``e2e-crash`` and is killed with SIGKILL
once some steps have completed and every run's ``hold`` step is running (so
no run can have finished). A second process starts an engine on the same
URL; its recovery must finish every run without losing a recorded output and
without running a completed step again.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import sqlalchemy as sa

from eventstore import open_store

REPO = Path(__file__).resolve().parents[2]
RUNS = 6


def child(*args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen([sys.executable, "-m", "tests.e2e.crash_worker", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_json_line(proc: subprocess.Popen, timeout: float) -> dict:
    """The child's first line of output, within ``timeout`` (its stderr on failure)."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        pytest.fail(f"no output from the child in {timeout} s: {proc.stderr.read()}")
    line = proc.stdout.readline()
    if not line:
        pytest.fail(f"the child exited ({proc.wait()}): {proc.stderr.read()}")
    return json.loads(line)


def wait_for_work_in_flight(store, run_ids: list[str], timeout: float = 30.0) -> None:
    """Follow the store until every run's ``hold`` is running and some agent steps completed."""
    streams = {f"run-{r}" for r in run_ids}
    holding: set[str] = set()
    agents_done = 0
    deadline = time.monotonic() + timeout
    subscription = store.subscribe(after=0)
    try:
        while len(holding) < len(run_ids) or agents_done < 4:
            left = deadline - time.monotonic()
            assert left > 0, f"in {timeout} s: {len(holding)} holds running, {agents_done} agent steps completed"
            rec = subscription.next_event(timeout=min(left, 1.0))
            if rec is None or rec.stream_id not in streams:
                continue
            if rec.type == "StepStarted" and rec.data["step_id"] == "hold":
                holding.add(rec.stream_id)
            if rec.type == "StepCompleted" and rec.data["step_id"] in ("a1", "a2"):
                agents_done += 1
    finally:
        subscription.close()


def pg_clock(store) -> object:
    with store.database.connect() as conn:
        return conn.execute(sa.text("SELECT clock_timestamp()")).scalar()


def wait_for_writer_gone(store, since: object, timeout: float = 30.0) -> None:
    """On PostgreSQL, until the writer session opened after ``since`` (the killed process's) is gone.

    A COMMIT the process had sent before SIGKILL still completes in its backend, which only then
    reads the closed socket and exits: the log read before that can lack a step that was started.
    """
    query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND application_name = 'baton-writer' AND backend_start > :since")
    deadline = time.monotonic() + timeout
    with store.database.connect() as conn:
        while conn.execute(query, {"since": since}).scalar():
            assert time.monotonic() < deadline, f"the killed process's writer session outlived it by {timeout} s"
            time.sleep(0.01)
            conn.rollback()


@pytest.mark.slow
def test_kill_9_then_restart_finishes_every_run(store_url, tmp_path):
    marker = tmp_path / "marker.txt"
    marker.touch()
    store = open_store(store_url)
    postgres = store_url.startswith("postgresql")
    since = pg_clock(store) if postgres else None
    first = child("launch", store_url, str(marker), str(RUNS))
    try:
        run_ids = read_json_line(first, timeout=30)["runs"]
        assert len(run_ids) == RUNS
        wait_for_work_in_flight(store, run_ids)
        os.kill(first.pid, signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL
        if postgres:
            wait_for_writer_gone(store, since)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()

    # What the log and the marker file hold at the moment of the kill.
    before = list(store.read_all())
    kill_head = store.head()
    assert before and before[-1].position == kill_head
    marks_before = marker.read_text().splitlines()
    completed = {(r.stream_id, r.data["step_id"]): r for r in before if r.type == "StepCompleted"}
    last_attempt: dict[tuple[str, str], tuple[str, int]] = {}
    for r in before:
        if r.type in ("StepStarted", "StepCompleted", "StepFailed"):
            last_attempt[(r.stream_id, r.data["step_id"])] = (r.type, r.data["attempt"])
    running = {key: att for key, (kind, att) in last_attempt.items() if kind == "StepStarted"}
    assert not [r for r in before if r.type == "RunCompleted"], "a run finished before the kill"
    assert len(completed) >= RUNS + 4  # every prep and some agent steps
    assert {s for (_, s) in running} >= {"hold"} and len(running) >= RUNS

    second = child("recover", store_url, *run_ids)
    try:
        out, err = second.communicate(timeout=90)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, err
    assert json.loads(out)["statuses"] == {r: "completed" for r in run_ids}

    after = list(store.read_all())
    by_key = {(r.stream_id, r.version): r for r in after}
    # every output recorded before the kill is still there, unchanged
    for rec in completed.values():
        now = by_key[(rec.stream_id, rec.version)]
        assert (now.position, now.type, now.data, now.hash) == (rec.position, rec.type, rec.data, rec.hash)
    assert [r for r in after if r.position <= kill_head] == before
    new = [r for r in after if r.position > kill_head]
    # no completed step started again, in the log ...
    restarted = {(r.stream_id, r.data["step_id"]) for r in new if r.type == "StepStarted"}
    assert not restarted & set(completed), sorted(restarted & set(completed))
    # ... nor outside it (the marker file)
    marks_after = marker.read_text().splitlines()
    assert marks_after[: len(marks_before)] == marks_before
    ran_again = {(f"run-{line.split()[0]}", line.split()[1]) for line in marks_after[len(marks_before):]}
    assert not ran_again & set(completed), sorted(ran_again & set(completed))
    # the attempts that were running at the kill were declared lost and tried again
    lost = {(r.stream_id, r.data["step_id"]): r.data["attempt"] for r in new
            if r.type == "StepFailed" and r.data.get("lost")}
    assert lost == running
    attempts = defaultdict(list)
    for r in new:
        if r.type == "StepStarted":
            attempts[(r.stream_id, r.data["step_id"])].append(r.data["attempt"])
    for key, attempt in running.items():
        assert attempts[key] == [attempt + 1], (key, attempts[key])
    recovered = {r.stream_id for r in new if r.type == "RunRecovered"}
    assert recovered == {f"run-{r}" for r in run_ids}
    assert {r.stream_id for r in new if r.type == "RunCompleted"} == recovered
    assert store.verify() == []
    store.close()
