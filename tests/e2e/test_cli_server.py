"""``baton`` commands with a ``baton serve`` on the same store: they go through it, and a command for a run
driven by another process reaches that process (through the server's HTTP API, or the driver's inbox)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time

import httpx
import pytest

from actors.runlog import follow
from baton_cli import BATON, FIXTURE_FLOWS, REPO, Baton, clean_env
from eventstore import open_store
from tests.api.server import ApiServer, free_port

SERVER_NODE = "srv-1"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server (node srv-1, the fixture flows) on a store of this module's own, and a ``baton`` on it."""
    path = tmp_path_factory.mktemp("served")
    b = Baton(f"sqlite:///{path / 'baton.db'}", path)
    with ApiServer(b.url, BATON_FLOWS=FIXTURE_FLOWS, BATON_NODE=SERVER_NODE, BATON_OFFLINE_DELAY_S="0") as server:
        b.server = server  # type: ignore[attr-defined]
        yield b


def nodes(b: Baton, run_id: str) -> set[str]:
    return {e.metadata["node"] for e in b.events(run_id)}


def test_commands_go_through_a_live_server_of_the_same_store(served):
    launched = served.ok("launch", "review-and-approve", "-q", "Review PR 70")
    run_id = launched.run_id
    assert f"run {run_id} is paused" in launched.out and "approve" in launched.out  # the same words as in-process
    assert nodes(served, run_id) == {SERVER_NODE}  # the server's engine drove it, not this command
    # Through a server, who acts is the token's name (here the admin token the server wrote beside the
    # store, which the command found there): --by naming someone else is refused before anything is sent.
    head = served.head()
    claimed = served("approve", run_id[:20], "approve", "--by", "alice", "--comment", "ok")
    assert claimed.code == 2 and "--by is 'alice', but this request comes from 'admin'" in claimed.err
    assert served.head() == head
    done = served.ok("approve", run_id[:20], "--comment", "ok")  # the one waiting step, read from the server
    assert f"approved step 'approve' of run {run_id}" in done.out and "by admin" in done.out
    assert f"run {run_id} completed" in done.out
    assert nodes(served, run_id) == {SERVER_NODE}
    events = served.events(run_id)
    resumed = next(e for e in events if e.type == "StepResumed")
    assert (resumed.data["by"], resumed.data["comment"]) == ("admin", "ok")
    assert events[0].data["launched_by"] == "admin"
    assert run_id in served.ok("runs").out
    assert "# review-and-approve: completed" in served.ok("show", run_id).out
    assert json.loads(served.ok("show", run_id, "--json").out)["run"]["status"] == "completed"
    assert "plan from the server's scheduler" in served.ok("plan").out


def test_a_flow_the_server_does_not_know_says_how_to_launch_it(served, tmp_path):
    (tmp_path / "mine.py").write_text(
        "from flows import Flow, code\n\ndef one(ctx):\n    return 'x'\n\n"
        "mine = Flow('mine-only', steps=[code('one', fn=one)])\n")
    here = Baton(served.url, tmp_path)
    result = here("--flows", "mine", "launch", "mine-only", "-q", "x")
    assert result.code == 2 and "unknown flow 'mine-only'" in result.err and "--local" in result.err
    assert "run " in here.ok("--flows", "mine", "--local", "launch", "mine-only", "-q", "x").out


def test_local_carries_the_command_out_in_this_process(served):
    run_id = served.ok("--local", "launch", "research", "-q", "Here?", "--band", "small").run_id
    assert SERVER_NODE not in nodes(served, run_id)


def test_follow_through_the_server_shows_the_table_and_the_report(served):
    out = served.ok("--flows", FIXTURE_FLOWS, "launch", "e2e-quick", "-q", "Followed", "--follow").out
    for step in ("prep", "a1", "a2", "join"):
        assert step in out
    assert "# e2e-quick: completed" in out


def test_a_named_server_needs_no_store_here(served, tmp_path):
    run_id = served.ok("launch", "review-and-approve", "-q", "Review PR 71").run_id
    far = Baton(f"sqlite:///{tmp_path / 'not-here.db'}", tmp_path)
    refused = far("show", run_id[:12], BATON_URL=served.server.url)  # no token here: the server says 401
    assert refused.code == 2 and "needs a valid token" in refused.err and "BATON_TOKEN" in refused.err
    token = {"BATON_URL": served.server.url, "BATON_TOKEN": served.server.tokens["operator"]}
    shown = far.ok("show", run_id[:12], **token).out  # the prefix, resolved by the server's list
    assert f"run {run_id}" in shown
    cancelled = far.ok("cancel", run_id, **token).out
    assert f"run {run_id} cancelled" in cancelled and f"by test-operator-{served.server.port}" in cancelled
    assert not (tmp_path / "not-here.db").exists()


def test_a_named_server_that_does_not_answer_is_one_error_line(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    result = Baton(f"sqlite:///{tmp_path / 'b.db'}", tmp_path)("runs", "--server", url)
    assert result.code == 1 and result.err.startswith(f"baton: error: no answer from the baton server at {url}")
    assert len(result.err.strip().splitlines()) == 1


def launch_held(served, tmp_path) -> tuple[str, str]:
    """An e2e-hold run launched through the server's API: its code step runs until ``release`` exists."""
    release = str(tmp_path / f"release-{time.monotonic_ns()}")
    r = httpx.post(served.server.url + "/api/runs", json={"flow": "e2e-hold", "question": release}, timeout=30,
                   auth=served.server.auth)
    assert r.status_code == 201, r.text
    return r.json()["run_id"], release


def wait_until_held(b: Baton, run_id: str, timeout: float = 30.0) -> None:
    """Wait (on the store's subscription) until the run's holding step has started."""
    deadline = time.monotonic() + timeout
    with open_store(b.url) as store, store.subscribe(after=0) as subscription:
        while not any(e.type == "StepStarted" for e in store.read_stream(f"run-{run_id}")):
            assert time.monotonic() < deadline, f"run {run_id} never started its step"
            subscription.next_event(timeout=0.5)


def test_a_command_from_this_process_reaches_the_server_driving_the_run(served, tmp_path):
    """--local: no HTTP; the command goes to the server's inbox through the store, and the server records it."""
    run_id, release = launch_held(served, tmp_path)
    try:
        wait_until_held(served, run_id)
        out = served.ok("--local", "cancel", run_id, "--reason", "from a shell", "--by", "carol").out
        assert f"run {run_id} cancelled" in out
        last = served.events(run_id)[-1]
        assert last.type == "RunCancelled" and last.metadata["node"] == SERVER_NODE and last.data["by"] == "carol"
        assert "RunRecovered" not in [e.type for e in served.events(run_id)]  # never taken over
        with open_store(served.url) as store:
            assert [r.type for r in store.read_stream(f"inbox-{SERVER_NODE}")][-2:] == ["CommandRequested",
                                                                                     "CommandAnswered"]
        assert "log verified" in served.ok("replay", "--verify").out  # inbox streams are not runs: replay skips them
    finally:
        open(release, "w").close()


def test_a_command_from_the_api_reaches_the_cli_process_driving_the_run(served, tmp_path):
    """Before: 409 "send the command there". The CLI's engine follows its inbox and carries the cancel out."""
    release = str(tmp_path / "release-cli")
    cli = subprocess.Popen([str(BATON), "--local", "--flows", FIXTURE_FLOWS, "launch", "e2e-hold", "-q", release],
                           cwd=served.cwd, env=clean_env(BATON_DB=served.url), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        run_id = cli.stdout.readline().split()[2]  # "launched run <id> ..."

        wait_until_held(served, run_id)
        r = httpx.post(f"{served.server.url}/api/runs/{run_id}/cancel", json={"reason": "from the api"},
                       timeout=60, auth=served.server.auth)
        assert r.status_code == 200, r.text
        last = served.events(run_id)[-1]
        assert last.type == "RunCancelled" and last.position == r.json()["position"]
        assert last.metadata["node"] == next(iter(nodes(served, run_id) - {SERVER_NODE}))  # the CLI's own node
        assert SERVER_NODE not in nodes(served, run_id)
        open(release, "w").close()
        out, err = cli.communicate(timeout=60)
        assert cli.returncode == 0 and f"run {run_id} cancelled" in out, out + err
    finally:
        open(release, "w").close()
        if cli.poll() is None:
            cli.kill()


def test_approve_without_the_flows_module_goes_to_the_server_that_has_it(tmp_path):
    from test_cli_flows_modules import flows_dir

    work = flows_dir(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    b = Baton(f"sqlite:///{tmp_path / 'baton.db'}", elsewhere)
    env = {"BATON_FLOWS": "myflows", "BATON_NODE": SERVER_NODE,
           "PYTHONPATH": os.pathsep.join([str(REPO), str(work)])}
    with ApiServer(b.url, **env):
        run_id = Baton(b.url, work).ok("--local", "--flows", "myflows", "launch", "gated-code", "-q", "go?").run_id
        done = b.ok("approve", run_id, "gate")  # this shell cannot import myflows; the server can
        assert f"run {run_id} completed" in done.out
        assert b.events(run_id)[-1].metadata["node"] == SERVER_NODE


def test_tasks_answer_and_land_go_through_the_server_driving_the_task_run(tmp_path):
    """`baton tasks answer` and `baton tasks land` choose the server as `baton approve` does: its routes carry
    them out and its engine drives the run (before, this shell took the run and drove it itself)."""
    from actors.workspace.projects import ProjectBook
    from tests.integration.scripted_llm import Call, ScriptedLLM, TextTurn, ToolTurn
    from tests.integration.task_repo import make_task_repo

    repo = make_task_repo(tmp_path)
    (repo.root / "tasks").mkdir()
    (repo.root / "tasks" / "a.md").write_text("---\nid: a\ntitle: Task a\nagent: implementation-specialist\n---\n"
                                               "Write a.txt.\n")
    repo.git("branch", "release", "main")
    b = Baton(f"sqlite:///{tmp_path / 'baton.db'}", tmp_path)
    with open_store(b.url) as store:
        ProjectBook(store, time.time).add("demo", repo.root, by="tester")
    llm = ScriptedLLM().start()
    llm.route("coder", ("task `a`", "use the sandbox"), [
        ToolTurn([Call("write_file", {"path": "a.txt", "content": "a\n"}), Call("commit", {"message": "a"})]),
        TextTurn("done")])
    llm.route("coder", "implementing task `a`", [ToolTurn([Call("blocked", {"reason": "which account?"})])])
    llm.route("coder", "Review task `a`", [TextTurn("---\nrecommendation: approve\n---\nok")])
    env = {"BATON_NODE": SERVER_NODE, "BATON_WORKTREES": str(tmp_path / "wt"), "BATON_AGENT": "openai",
           "BATON_OPENAI_BASE_URL": llm.base_url, "BATON_MODEL": "coder",
           **{k: v for k, v in repo.env.items() if k.startswith("GIT_")}}
    try:
        with ApiServer(b.url, **env) as server:
            made = httpx.post(f"{server.url}/api/projects/demo/task-runs", json={"target": "release"}, timeout=30,
                              auth=server.auth_as("operator"))
            assert made.status_code == 201, made.text
            run_id = made.json()["run_id"]
            with open_store(b.url) as store:  # the task is blocked: the run waits for a person
                follow(store, run_id, lambda s: s.terminal or s.status == "paused", timeout=60)
            answered = b.ok("tasks", "answer", run_id, "a", "retry", "--text", "use the sandbox")
            assert f"run {run_id}: paused" in answered.out  # every task merged: it waits at its landing gate
            assert "retry recorded" in answered.err
            landed = b.ok("tasks", "land", run_id)
            head = repo.git("rev-parse", f"baton/{run_id}/integrate").strip()
            assert f"landed release at {head[:12]}" in landed.out
            refused = b("tasks", "answer", run_id, "a", "abort")  # the run has ended: refused there, 409 -> exit 2
            assert refused.code == 2 and f"run {run_id} has ended (completed)" in refused.err, refused.err
    finally:
        llm.stop()
    events = b.events(run_id)
    assert nodes(b, run_id) == {SERVER_NODE}  # the server drove every step; this shell never took the run
    answer = next(e for e in events if e.type == "TaskAnswered")
    assert (answer.data["answer"], answer.data["context"], answer.data["by"]) == ("retry", "use the sandbox", "admin")
    assert repo.git("rev-parse", "release").strip() == head
    assert not any(f"/wt/{run_id}/" in p for p in repo.worktree_paths())


def test_a_launch_followed_through_a_server_waits_for_it_to_come_back_after_a_kill(tmp_path):
    """kill -9 of the server used to end ``baton launch`` with "lost the baton server". Now the command says so
    on stderr and tries again; a new server on the same store and address recovers the run, and the command
    follows it to its end, exit 0, as if nothing had happened."""
    b = Baton(f"sqlite:///{tmp_path / 'baton.db'}", tmp_path)
    release = str(tmp_path / "release")
    first = ApiServer(b.url, BATON_FLOWS=FIXTURE_FLOWS, BATON_OFFLINE_DELAY_S="0")
    with first:
        cli = b.popen("--flows", FIXTURE_FLOWS, "launch", "e2e-hold", "-q", release)
        try:
            run_id = cli.stdout.readline().split()[2]  # "launched run <id> ..."
            wait_until_held(b, run_id)
            err: queue.Queue[str] = queue.Queue()
            threading.Thread(target=lambda: [err.put(line) for line in cli.stderr], daemon=True).start()
            first.process.kill()
            first.process.wait(10)
            said = err.get(timeout=30)
            assert f"baton server at {first.url}" in said and "trying again for 60 s" in said, said
            assert cli.poll() is None  # still following
            second = ApiServer(b.url, port=first.port, BATON_FLOWS=FIXTURE_FLOWS, BATON_OFFLINE_DELAY_S="0")
            second.tokens = first.tokens
            with second:
                open(release, "w").close()
                out = cli.stdout.read()  # not communicate(): the thread above reads stderr
                assert cli.wait(60) == 0 and f"run {run_id} completed" in out, out
                back, lines = f"the baton server at {first.url} is back; following run {run_id}", []
                while not any(back in line for line in lines):  # said on stderr before the end
                    lines.append(err.get(timeout=5))
                types = [e.type for e in b.events(run_id)]
                assert types.count("RunRecovered") == 1 and types[-1] == "RunCompleted", types
        finally:
            open(release, "w").close()
            if cli.poll() is None:
                cli.kill()


def test_a_launch_gives_up_on_a_server_that_does_not_come_back(tmp_path):
    """BATON_RECONNECT_S bounds the wait: then one error line, exit 1, naming how to find the run later."""
    b = Baton(f"sqlite:///{tmp_path / 'baton.db'}", tmp_path)
    release = str(tmp_path / "release")
    server = ApiServer(b.url, BATON_FLOWS=FIXTURE_FLOWS, BATON_OFFLINE_DELAY_S="0")
    with server:
        cli = subprocess.Popen([str(BATON), "--flows", FIXTURE_FLOWS, "launch", "e2e-hold", "-q", release],
                               cwd=tmp_path, env=clean_env(BATON_DB=b.url, BATON_RECONNECT_S="1"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            run_id = cli.stdout.readline().split()[2]
            wait_until_held(b, run_id)
            server.process.kill()
            out, err = cli.communicate(timeout=30)
            assert cli.returncode == 1, out + err
            assert "trying again for 1 s" in err and "waited 1 s for it to come back" in err, err
            assert f"baton show {run_id}" in err and "Traceback" not in err
        finally:
            open(release, "w").close()
            if cli.poll() is None:
                cli.kill()
