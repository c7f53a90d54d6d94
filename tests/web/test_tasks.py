"""The task-graph dashboard of a task run's pane, against a real server whose task agents talk to the scripted server.

The server runs the openai backend on ``tests.integration.scripted_llm``
with a registered git repository holding three task graphs: ``tasks/`` (ui
depends on api), ``stall/`` (after depends on slow, whose implementor goes
silent) and ``blocked/`` (one task whose implementor gives up). Each run is
launched through the API (``POST /api/projects/demo/task-runs``) and watched
in the console: its rows move only with the frames (no reload), and the
words a person says from a row (message, abort, skip) are recorded and
shown in it.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from actors.workspace.projects import ProjectBook
from eventstore import open_store
from tests.api.server import ApiServer
from tests.integration.scripted_llm import Call, ScriptedLLM, StallTurn, TextTurn, ToolTurn
from tests.integration.task_repo import TaskRepo, make_task_repo
from tests.web.support import assert_accessible, ended, shoot, wait_frame

MODEL = "coder"
APPROVE = TextTurn("---\nrecommendation: approve\n---\nLooks right.")


def task_file(tid: str, deps: str = "") -> str:
    dep_line = f"depends_on: [{deps}]\n" if deps else ""
    return f"---\nid: {tid}\ntitle: Task {tid}\nagent: implementation-specialist\n{dep_line}---\nWrite {tid}.txt.\n"


def writes(tid: str, *, first: list[Any] | None = None) -> list[Any]:
    """An implementor that (after ``first`` turns) writes ``<tid>.txt``, commits, and says it is done."""
    return [*(first or []), ToolTurn([Call("write_file", {"path": f"{tid}.txt", "content": f"{tid}\n"}),
                                      Call("commit", {"message": f"add {tid}.txt"})]), TextTurn(f"{tid} done")]


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedLLM]:
    server = ScriptedLLM().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> TaskRepo:
    files = {"tasks/api.md": task_file("api"), "tasks/ui.md": task_file("ui", "api"),
             "stall/slow.md": task_file("slow"), "stall/after.md": task_file("after", "slow"),
             "blocked/stuck.md": task_file("stuck"), "ship/ship.md": task_file("ship"), "README.md": "# demo\n"}
    return make_task_repo(tmp_path_factory.mktemp("web-tasks"), files)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, llm: ScriptedLLM, repo: TaskRepo) -> Iterator[ApiServer]:
    """``baton serve`` with the openai backend on the scripted server and the repository registered as ``demo``."""
    db = tmp_path_factory.mktemp("web-tasks-db") / "baton.db"
    with ApiServer(f"sqlite:///{db}", BATON_AGENT="openai", BATON_OPENAI_BASE_URL=llm.base_url, BATON_MODEL=MODEL,
                   BATON_WORKTREES=str(repo.worktrees)) as running:
        store = open_store(running.db_url)
        try:
            ProjectBook(store, time.time).add("demo", repo.root, allow=[["cat"]], by="tests")
        finally:
            store.close()
        yield running


def gate(tmp_path: Path) -> Path:
    """A FIFO: a task's ``cat`` of it blocks until the test opens the gate (no sleep-and-hope)."""
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    return fifo


def open_gate(fifo: Path, timeout: float = 20.0) -> None:
    """Let the ``cat`` reading ``fifo`` finish, once it is reading."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO while no reader has it open
        except OSError as exc:
            if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                raise AssertionError(f"no task read the gate {fifo} in {timeout} s") from exc
            time.sleep(0.05)
            continue
        os.write(fd, b"go\n")
        os.close(fd)
        return


def launch_tasks(server: ApiServer, tasks_dir: str, **body: str) -> str:
    r = httpx.post(f"{server.url}/api/projects/demo/task-runs", json={"tasks_dir": tasks_dir, **body},
                   auth=server.auth_as("operator"), timeout=30)
    assert r.status_code == 201, r.text
    return str(r.json()["run_id"])


def rows(page: Any) -> Any:
    return page.locator("#taskboard tr.task-row")


def row(page: Any, task_id: str) -> Any:
    return page.locator(f"#taskboard tr.task-row[data-task-id={task_id}]")


def test_a_two_task_run_moves_row_by_row_live_and_ends_with_both_tasks_merged(page, server, llm, repo, tmp_path):
    # api first reads a FIFO: it stays in progress until the page has seen it so
    fifo = gate(tmp_path)
    llm.route(MODEL, "implementing task `api`", writes("api", first=[ToolTurn([Call("run", {"argv": ["cat", str(fifo)]})])]))
    llm.route(MODEL, "implementing task `ui`", writes("ui"))
    for tid in ("api", "ui"):
        llm.route(MODEL, f"Review task `{tid}`", [APPROVE])
    run_id = launch_tasks(server, "tasks")
    page.goto(f"{server.url}/#/runs/{run_id}")

    expect(rows(page)).to_have_count(2)
    api, ui = row(page, "api"), row(page, "ui")
    # api runs in its worktree while ui waits for it: each status a word and a dot
    expect(api).to_have_attribute("data-status", "inprogress")
    expect(api.locator("[data-field=status] .word")).to_have_text("running")
    expect(api.locator("[data-field=phase]")).to_have_text("coder")
    expect(api.locator("[data-field=worktree]")).to_contain_text(f"baton/{run_id}/api")
    expect(ui.locator("[data-field=status] .word")).to_have_text("queued")
    expect(ui.locator("[data-field=reason]")).to_contain_text("deps: waits for api")
    assert api.locator("[data-field=status] .dot").text_content() == "◐"
    # a running task takes a message and an abort; a queued one takes nothing
    expect(api.get_by_role("button", name="Message task api")).to_be_visible()
    expect(api.get_by_role("button", name="Abort task api")).to_be_visible()
    expect(ui.locator("[data-field=actions]")).to_have_text("—")
    # the stream drops while the tasks finish: the rows catch up when it is back (no reload)
    page.evaluate("window.batonConsole.feed.pause()")
    open_gate(fifo)
    wait_frame(server, run_id, ended, "the run's end", timeout=60)
    assert api.get_attribute("data-status") == "inprogress", "nothing reached the page while the stream was down"
    page.evaluate("window.batonConsole.feed.resume()")

    # the replayed frames move both rows to done, merged
    for r in (api, ui):
        expect(r).to_have_attribute("data-status", "done", timeout=60_000)
        expect(r.locator("[data-field=status] .word")).to_have_text("done")
        expect(r.locator("[data-field=reason]")).to_have_text("merged")
        expect(r.locator("[data-field=commits]")).to_contain_text("1 · merged")
        expect(r.locator("[data-field=reviews]")).to_have_text("1")
        expect(r.locator("[data-field=conflicts]")).to_have_text("0")
        expect(r.locator("[data-field=anomalies]")).to_have_text("0")
        expect(r.locator("[data-field=worktree]")).to_contain_text("worktree removed")
        expect(r.locator("[data-field=actions]")).to_have_text("—")
    expect(page.locator(".head-status")).to_have_attribute("data-status", "completed", timeout=20_000)
    expect(page.locator("#tasks-summary")).to_contain_text("2 of 2 done")
    for tid in ("api", "ui"):  # the steps below move with the tasks' durable frames too
        expect(page.locator(f".roster button.step[data-step-id={tid}]")).to_have_attribute("data-status", "completed")
    answer = httpx.get(f"{server.url}/api/runs/{run_id}/tasks", auth=server.auth).json()
    merges = {t["task_id"]: t["merge_commit"][:7] for t in answer["tasks"]}
    for tid, sha in merges.items():
        expect(row(page, tid).locator("[data-field=commits] .merge code")).to_have_text(sha)
    assert sorted(repo.git("log", "--merges", "--format=%s", f"baton/{run_id}/integrate").splitlines()) == [
        "baton: merge task api", "baton: merge task ui"]
    expect(page.locator("#report")).to_be_visible()
    shoot(page, "run-tasks")
    assert_accessible(page, "a completed task run")
    page.reload()  # reopened: the same rows, read from the log
    expect(rows(page)).to_have_count(2)
    for tid in ("api", "ui"):
        expect(row(page, tid).locator("[data-field=reason]")).to_have_text("merged")


def test_a_message_and_an_abort_from_the_row_of_a_running_task_show_in_its_row(page, server, llm):
    llm.route(MODEL, "implementing task `slow`", [StallTurn("working on it")])
    run_id = launch_tasks(server, "stall")
    page.goto(f"{server.url}/#/runs/{run_id}")
    slow, after = row(page, "slow"), row(page, "after")
    expect(slow).to_have_attribute("data-status", "inprogress", timeout=30_000)
    expect(slow.locator("[data-field=phase]")).to_have_text("coder", timeout=30_000)
    expect(slow.locator("[data-field=messages]")).to_have_text("0")

    slow.get_by_role("button", name="Message task slow").click()
    form = page.get_by_role("form", name="Message task slow")
    box = form.get_by_label("Message to the agent")
    expect(box).to_be_focused()
    box.fill("also add a README line")
    shoot(page, "run-tasks-message")
    assert_accessible(page, "a running task with its message form")
    form.get_by_role("button", name="Send").click()
    expect(page.locator("#tasks-said")).to_have_text("Message sent: task slow.")
    expect(form).to_have_count(0)
    expect(slow.locator("[data-field=messages]")).to_have_text("1")  # recorded (TaskMessaged) and re-read
    events = httpx.get(f"{server.url}/api/runs/{run_id}/events", auth=server.auth).json()
    assert [e["data"]["text"] for e in events if e["type"] == "TaskMessaged"] == ["also add a README line"]

    slow.get_by_role("button", name="Abort task slow").focus()
    page.keyboard.press("Enter")  # by keyboard: the form opens with the focus in it, Escape closes it
    form = page.get_by_role("form", name="Abort task slow")
    expect(form.get_by_label("Why (optional)")).to_be_focused()
    page.keyboard.press("Escape")
    expect(form).to_have_count(0)
    expect(slow.get_by_role("button", name="Abort task slow")).to_be_focused()
    slow.get_by_role("button", name="Abort task slow").click()
    form.get_by_label("Why (optional)").fill("wrong approach")
    form.get_by_role("button", name="Abort task").click()
    expect(slow).to_have_attribute("data-status", "aborted", timeout=30_000)
    expect(slow.locator("[data-field=status] .word")).to_have_text("aborted")
    expect(slow.locator("[data-field=reason]")).to_contain_text("wrong approach")
    expect(after.locator("[data-field=status] .word")).to_have_text("aborted")  # its dependent cannot finish
    expect(after.locator("[data-field=reason]")).to_contain_text("upstream slow did not finish")
    expect(page.locator(".head-status")).to_have_attribute("data-status", "failed", timeout=30_000)
    expect(slow.locator("[data-field=actions]")).to_have_text("—")


def test_a_blocked_task_takes_retry_or_skip_and_a_skip_ends_it(page, server, llm):
    llm.route(MODEL, "implementing task `stuck`",
              [ToolTurn([Call("blocked", {"reason": "the spec contradicts the code"})])])
    run_id = launch_tasks(server, "blocked")
    page.goto(f"{server.url}/#/runs/{run_id}")
    stuck = row(page, "stuck")
    expect(stuck).to_have_attribute("data-status", "blocked", timeout=30_000)
    expect(stuck.locator("[data-field=status] .word")).to_have_text("blocked")
    expect(stuck.locator("[data-field=reason]")).to_contain_text("the spec contradicts the code")
    expect(stuck.get_by_role("button", name="Retry task stuck")).to_be_visible()
    expect(page.locator(".roster button.step[data-step-id=stuck]")).to_have_attribute("data-status", "paused")
    expect(page.locator("#step-detail")).to_contain_text("answer it with Retry or Skip")  # no approve / reject
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    stuck.get_by_role("button", name="Skip task stuck").click()
    page.get_by_role("form", name="Skip task stuck").get_by_role("button", name="Skip task").click()
    expect(stuck.locator("[data-field=status] .word")).to_have_text("aborted", timeout=30_000)
    expect(stuck.locator("[data-field=reason]")).to_contain_text("skipped by")
    expect(page.locator(".head-status")).to_have_attribute("data-status", "failed", timeout=30_000)
    kinds = [e["type"] for e in httpx.get(f"{server.url}/api/runs/{run_id}/events", auth=server.auth).json()]
    assert "TaskAnswered" in kinds




def test_a_task_run_waits_at_its_landing_gate_and_the_approve_button_lands_it(page, server, llm, repo):
    from tests.web.support import paused

    llm.route(MODEL, "implementing task `ship`", writes("ship"))
    llm.route(MODEL, "Review task `ship`", [APPROVE])
    repo.git("branch", "release", "main")
    run_id = launch_tasks(server, "ship", target="release")
    page.goto(f"{server.url}/#/runs/{run_id}")
    wait_frame(server, run_id, paused, "the landing gate", timeout=60)
    expect(row(page, "ship")).to_have_attribute("data-status", "done", timeout=30_000)
    expect(page.locator(".head-status")).to_have_attribute("data-status", "paused", timeout=30_000)
    land = page.locator(".roster button.step[data-step-id=land]")
    expect(land).to_have_attribute("data-status", "paused")  # the console opens the waiting approval by itself
    expect(page.locator("#step-detail")).to_contain_text(f"baton/{run_id}/integrate")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator(".head-status")).to_have_attribute("data-status", "completed", timeout=30_000)
    expect(land).to_have_attribute("data-status", "completed")
    assert repo.git("rev-parse", "release").strip() == repo.git("rev-parse", f"baton/{run_id}/integrate").strip()
