"""Every ``baton`` command, run as a subprocess the way a person runs it."""

from __future__ import annotations

import json
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pytest

from baton_cli import BATON, FIXTURE_FLOWS, REPO, Baton, clean_env
from eventstore import NewEvent, open_store
from tests.projects import register


def statuses(events) -> list[str]:
    return [e.type for e in events]


def test_flows_lists_the_catalogue_and_extra_modules(baton):
    out = baton.ok("flows").out
    for name in ("review-and-approve", "research", "code-review", "Review", "small, medium, large"):
        assert name in out
    assert "e2e-quick" in baton.ok("--flows", FIXTURE_FLOWS, "flows").out


def test_python_dash_m_runs_the_same_cli():
    proc = subprocess.run([sys.executable, "-m", "api.cli.main", "flows"], cwd=REPO, env=clean_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "review-and-approve" in proc.stdout


def test_help_lists_every_command():
    proc = subprocess.run([str(BATON), "--help"], env=clean_env(), capture_output=True, text=True, timeout=60)
    for command in ("serve", "demo", "flows", "launch", "runs", "show", "approve", "reject", "cancel", "tail",
                    "replay", "projections"):
        assert command in proc.stdout


def test_launch_drives_a_run_to_its_end(baton):
    result = baton.ok("launch", "research", "-q", "Why is the build slow?", "--band", "small")
    run_id = result.run_id
    assert f"run {run_id} completed" in result.out
    assert f"baton show {run_id}" in result.out
    assert statuses(baton.events(run_id))[-1] == "RunCompleted"


def test_launch_follow_shows_progress_and_the_report(baton, tmp_path):
    register(baton.url, tmp_path, "p1")
    result = baton.ok("--flows", FIXTURE_FLOWS, "launch", "e2e-quick", "-q", "What is quick?", "--follow",
                      "--project", "p1")
    run_id = result.run_id
    for step in ("prep", "a1", "a2", "join"):
        assert step in result.out
    assert "attempt" in result.out and "elapsed" in result.out  # the progress table's columns
    assert "# e2e-quick: completed" in result.out  # the report
    runs = baton.ok("runs", "--project", "p1").out
    assert run_id in runs and "completed" in runs


def test_launch_pauses_at_an_approval_and_says_how_to_go_on(shared):
    events = shared.events(shared.paused)
    assert statuses(events)[-1] == "StepPaused"
    assert events[-1].data["step_id"] == "approve"


def test_runs_lists_newest_first_with_filters(shared):
    out = shared.ok("runs").out
    assert out.index(shared.completed) < out.index(shared.paused)
    filtered = shared.ok("runs", "--status", "paused").out
    assert shared.paused in filtered and shared.completed not in filtered
    assert shared.completed in shared.ok("runs", "--flow", "e2e-quick", "--limit", "5").out


def test_show_prints_run_steps_and_report(shared):
    out = shared.ok("show", shared.completed).out
    assert shared.completed in out and "question: What is quick?" in out
    for step in ("prep", "a1", "a2", "join"):
        assert step in out
    assert "# e2e-quick: completed" in out
    report = shared.ok("show", shared.completed, "--report").out
    assert report.startswith("# e2e-quick: completed")
    paused = shared.ok("show", shared.paused).out
    assert "paused" in paused and "no report yet" in paused
    assert f"baton approve {shared.paused} approve" in paused


def test_approve_continues_a_paused_run_to_the_end(baton):
    launched = baton.ok("launch", "review-and-approve", "-q", "Review PR 42")
    run_id = launched.run_id
    assert f"run {run_id} is paused" in launched.out
    assert f"baton approve {run_id} approve" in launched.out
    assert f"baton reject {run_id} approve" in launched.out
    result = baton.ok("approve", run_id, "approve", "--comment", "ship it", "--by", "alice")
    assert f"run {run_id} completed" in result.out
    events = baton.events(run_id)
    resumed = [e for e in events if e.type == "StepResumed"]
    assert [(e.data["decision"], e.data["by"], e.data["comment"]) for e in resumed] == [
        ("approved", "alice", "ship it")]
    assert events[-1].type == "RunCompleted"


def test_approve_without_a_step_takes_the_one_waiting_and_refuses_when_none_waits(baton):
    run_id = baton.ok("launch", "review-and-approve", "-q", "Review PR 46").run_id
    result = baton.ok("approve", run_id, "--by", "alice")
    assert f"approved step 'approve' of run {run_id}" in result.out
    assert f"run {run_id} completed" in result.out
    again = baton("approve", run_id)
    assert again.code == 2
    assert f"run {run_id} has no step waiting for a person: nothing to approve" in again.err
    events = baton.events(run_id)
    assert [e.data["step_id"] for e in events if e.type == "StepResumed"] == ["approve"]


def test_reject_ends_the_run_rejected_and_still_records_it(baton):
    run_id = baton.ok("launch", "review-and-approve", "-q", "Review PR 43").run_id
    result = baton.ok("reject", run_id, "approve", "--comment", "not like this", "--follow")
    assert f"run {run_id} rejected" in result.out
    events = baton.events(run_id)
    assert events[-1].type == "RunRejected"
    completed = {e.data["step_id"] for e in events if e.type == "StepCompleted"}
    skipped = {e.data["step_id"] for e in events if e.type == "StepSkipped"}
    assert "record" in completed and "publish" in skipped


def test_cancel_ends_a_paused_run(baton):
    run_id = baton.ok("launch", "review-and-approve", "-q", "Review PR 44").run_id
    result = baton.ok("cancel", run_id, "--reason", "superseded")
    assert f"run {run_id} cancelled" in result.out
    events = baton.events(run_id)
    assert events[-1].type == "RunCancelled" and events[-1].data["reason"] == "superseded"
    # Every step has ended, but not every step did its work: `show` says how each ended.
    completed = sum(e.type == "StepCompleted" for e in events)
    skipped = sum(e.type == "StepSkipped" for e in events)
    assert completed and skipped
    total = completed + skipped
    assert f"steps {total}/{total} ended ({completed} completed, {skipped} skipped)" in baton.ok("show", run_id).out


def test_tail_prints_frames_until_the_run_ends(baton):
    run_id = baton.ok("launch", "review-and-approve", "-q", "Review PR 45").run_id
    tail = baton.popen("tail", run_id)
    try:
        baton.ok("approve", run_id, "approve")
        out, err = tail.communicate(timeout=30)
    finally:
        if tail.poll() is None:
            tail.kill()
    assert tail.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].split()[1:] == ["flow_run_started", run_id, "-", "launched"]
    assert f"approval_requested {run_id} approve paused" in out
    assert lines[-1].split()[1:] == ["flow_run_step_updated", run_id, "-", "completed"]
    positions = [int(line.split()[0]) for line in lines]
    assert positions == sorted(positions)
    head = baton.head()
    assert positions[-1] == head
    after = baton.ok("tail", run_id, "--after", str(head - 1)).out.splitlines()
    assert len(after) == 1 and after[0] == lines[-1]


def test_replay_refolds_every_run(shared):
    out = shared.ok("replay").out
    assert f"{shared.completed}  e2e-quick" in out and "completed" in out
    assert f"{shared.paused}  review-and-approve" in out and "paused" in out
    one = shared.ok("replay", "--run", shared.completed).out.splitlines()
    assert len(one) == 1 and one[0].startswith(shared.completed)


def test_replay_verify_passes_on_a_clean_log(shared):
    out = shared.ok("replay", "--verify").out
    assert "log verified:" in out and "hash chains intact" in out


def test_projections_rebuild_reports_its_rate(shared):
    out = shared.ok("projections", "rebuild").out
    assert "events/s" in out and f"position {shared.head()}" in out
    assert shared.completed in shared.ok("runs").out


def tamper(url: str, position: int) -> None:
    """Edit one event's data behind the store's back, dropping the append-only guard first."""
    if url.startswith("sqlite"):
        db = sqlite3.connect(url.removeprefix("sqlite:///"))
        db.execute("DROP TRIGGER events_refuse_update")
        db.execute("UPDATE events SET data = replace(data, 'offline', 'edited!') WHERE position = ?", (position,))
        db.commit()
        db.close()
        return
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    conninfo = f"dbname={u.database} user={u.username or ''} host={u.host or u.query.get('host', '')}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("ALTER TABLE events DISABLE TRIGGER events_refuse_update_delete")
        conn.execute("UPDATE events SET data = replace(data, 'offline', 'edited!') WHERE position = %s",
                     (position,))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_replay_verify_names_an_edited_event(backend, request, tmp_path):
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    b = Baton(url, tmp_path)
    run_id = b.ok("launch", "research", "-q", "Is the cache warm?", "--band", "small").run_id
    assert b.ok("replay", "--verify").code == 0
    target = next(e for e in b.events(run_id) if e.type == "StepCompleted" and "offline" in str(e.data))
    tamper(url, target.position)
    result = b("replay", "--verify")
    assert result.code == 1
    assert f"position {target.position}" in result.err and f"run-{run_id}" in result.err
    assert f"version {target.version}" in result.err
    assert result.err.strip().splitlines()[-1].startswith("baton: error: the log does not verify")
    assert "Traceback" not in result.err


def test_demo_runs_approves_reports_and_verifies(tmp_path):
    proc = subprocess.run([str(BATON), "demo"], cwd=tmp_path, env=clean_env(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "offline backend" in out
    assert "demo: approving step 'approve' on your behalf (in real use: BATON_DB=sqlite:///baton-demo.db " in out
    assert "# review-and-approve: completed" in out
    assert "log verified:" in out
    assert (tmp_path / "baton-demo.db").exists()  # BATON_DB unset: the demo keeps to its own file


def test_the_demo_prints_follow_up_commands_that_work_where_baton_is_not_on_path(tmp_path):
    """Before: "baton show ..." lines, and "baton: command not found" in a shell without the venv."""
    env = clean_env(PATH="/usr/bin:/bin")  # baton is not on it: make demo runs .venv/bin/baton
    out = subprocess.run([str(BATON), "demo"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60).stdout
    follow_ups = [line.split(": ", 1)[1] for line in out.splitlines()
                  if line.startswith(("the report as plain markdown: ", "verify the log yourself: "))]
    assert len(follow_ups) == 2 and all(str(BATON) in line for line in follow_ups), out
    assert "/activate" in out  # and how to put baton on the PATH
    for line in follow_ups:
        ran = subprocess.run(["sh", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0 and ran.stdout, f"{line}: {ran.stdout}{ran.stderr}"


def test_a_failed_run_exits_1(baton):
    result = baton("--flows", FIXTURE_FLOWS, "launch", "e2e-failing", "-q", "Will it break?")
    assert result.code == 1, result.out + result.err
    assert f"run {result.run_id} failed" in result.out and "Traceback" not in result.err


def read_lines_until(proc: subprocess.Popen, done, timeout: float = 30.0, *, stderr: bool = False) -> list[str]:
    """Lines from a running command's stdout (or stderr) until ``done(line)``, within ``timeout``.

    A thread reads them: select() on a text pipe misses lines already in its buffer.
    """
    lines: queue.Queue = queue.Queue()
    pipe = proc.stderr if stderr else proc.stdout
    threading.Thread(target=lambda: [lines.put(line) for line in pipe], daemon=True).start()
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while not got or not done(got[-1]):
        try:
            got.append(lines.get(timeout=max(deadline - time.monotonic(), 0.01)).rstrip("\n"))
        except queue.Empty:
            pytest.fail(f"gave up waiting after {timeout} s; got {got}")
    return got


def test_tail_follows_every_run_until_interrupted(baton):
    # Ctrl-C as a terminal sends it: a suite started in the background (`make test &`) inherits SIGINT
    # ignored, and Python then keeps ignoring it, as a background job should.
    tail = baton.popen("tail", "--after", str(baton.head()),
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        run_id = baton.ok("--flows", FIXTURE_FLOWS, "launch", "e2e-quick", "-q", "Tail me").run_id
        lines = read_lines_until(tail, lambda line: line.endswith(f"{run_id} - completed"))
        tail.send_signal(signal.SIGINT)
        assert tail.wait(timeout=10) == 0
    finally:
        if tail.poll() is None:
            tail.kill()
    assert lines[0].split()[1:] == ["flow_run_started", run_id, "-", "launched"]
    frames = [json.loads(line) for line in baton.ok("tail", run_id, "--json").out.splitlines()]
    assert [f["id"] for f in frames] == [int(line.split()[0]) for line in lines]
    assert frames[-1]["run_status"] == "completed" and frames[-1]["report"].startswith("# e2e-quick")


def test_replay_verify_names_a_run_whose_steps_never_ended(baton):
    run_id = baton.ok("launch", "review-and-approve", "-q", "Review PR 46").run_id
    with open_store(baton.url) as store:  # a buggy writer, not a tamperer: the hash chain stays intact
        version = len(store.read_stream(f"run-{run_id}"))
        store.append(f"run-{run_id}", [NewEvent("RunCompleted", {"report": "forged", "at": time.time()})],
                     expected_version=version)
        assert store.verify() == []
    result = baton("replay", "--verify")
    assert result.code == 1
    assert f"run-{run_id}" in result.err and f"version {version + 1}" in result.err
    assert "never ended" in result.err and "approve" in result.err


def test_serve_answers_http_and_stops_on_ctrl_c(baton):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = baton.popen("serve", "--host", "127.0.0.1", "--port", str(port))
    try:
        lines = read_lines_until(server, lambda line: "Uvicorn running on" in line, stderr=True)  # listening now
        banner = next(line for line in lines if line.startswith("baton: serving"))
        assert f"http://127.0.0.1:{port}/api" in banner and f"store {baton.url}" in banner
        assert "backend offline" in banner  # which backend (and model) the agent steps call
        health = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=20) == 0
    finally:
        if server.poll() is None:
            server.kill()


def test_a_command_goes_by_its_own_node_name_not_baton_node(baton):
    """BATON_NODE names a long-lived ``baton serve``; a command sharing it would be refused or impersonate it."""
    run_id = baton.ok("launch", "research", "-q", "Who wrote this?", "--band", "small", BATON_NODE="api-1").run_id
    nodes = {e.metadata.get("node") for e in baton.events(run_id)}
    assert nodes and "api-1" not in nodes and all(nodes), nodes


def test_control_characters_and_markup_in_user_text_are_printed_escaped(baton):
    """A terminal escape in a question, a name or a comment must not reach the terminal raw, and
    rich markup in it must not be interpreted: the person sees what was typed."""
    question = "Review \x1b[31mred\x1b[0m [bold]this[/bold] \x07now"
    launched = baton.ok("launch", "review-and-approve", "-q", question)
    run_id = launched.run_id
    decided = baton.ok("approve", run_id, "approve", "--by", "\x1b[31mroot", "--comment", "[red]ok\x1b]0;x\x07")
    outputs = [launched.out, decided.out, baton.ok("runs").out, baton.ok("show", run_id).out,
               baton.ok("show", run_id, "--report").out, baton.ok("tail", run_id).out]
    for out in outputs:
        assert "\x1b" not in out and "\x07" not in out, out
    shown = outputs[3]
    assert "\\x1b[31mroot" in shown  # the approver, escaped, in the steps table
    assert "[bold]this[/bold]" in outputs[2] and "[bold]this[/bold]" in shown  # markup shown as typed
    assert "by \\x1b[31mroot" in decided.out


def test_tail_into_a_reader_that_stops_early_ends_quietly(baton, tmp_path):
    """``baton tail | head -1``: once head has its line and exits, tail ends without a traceback."""
    baton.ok("--flows", FIXTURE_FLOWS, "launch", "e2e-quick", "-q", "First")
    err = tmp_path / "tail.err"
    pipeline = subprocess.Popen(["sh", "-c", f"'{BATON}' tail --after 0 2>'{err}' | head -1"], cwd=baton.cwd,
                                env=clean_env(BATON_DB=baton.url), stdout=subprocess.PIPE, text=True)
    try:
        first = pipeline.stdout.readline()  # head printed its line and exited; tail waits for news
        assert "flow_run_started" in first
        baton.ok("--flows", FIXTURE_FLOWS, "launch", "e2e-quick", "-q", "Second")  # news: tail writes, the pipe is gone
        assert pipeline.wait(timeout=30) == 0
    finally:
        if pipeline.poll() is None:
            pipeline.kill()
    assert "Traceback" not in err.read_text() and "Error" not in err.read_text(), err.read_text()
