"""A run pane whose stream drops catches up without a reload, with nothing shown twice.

Its own server (it is restarted here) and its own browser. The pane marks the
page (``window.__marker``) before the drop: a reload would lose the mark.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
from playwright.sync_api import expect

from tests.web.support import ROOT, ended, launch_api, paused, run_of, wait_frame


def open_paused_run(page, server, question: str) -> str:
    run_id = launch_api(server, "api-gate", question=question)
    wait_frame(server, run_id, paused, "the gate")
    page.goto(f"{server.url}/#/runs/{run_id}")
    expect(page.get_by_role("button", name="Approve")).to_be_visible()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    page.evaluate("window.__marker = 'still the same page'")
    return run_id


def assert_caught_up(page, run_id: str, comment: str) -> None:
    expect(page.locator(".head-status")).to_have_attribute("data-status", "completed", timeout=30_000)
    expect(page.locator("#report")).to_be_visible()
    expect(page.locator("#report")).to_contain_text(comment)
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    ids = page.locator(".roster li").evaluate_all("els => els.map(e => e.dataset.stepId)")
    assert ids == ["draft", "gate", "publish"], f"each step shown once: {ids}"
    for step in ids:
        expect(page.locator(f".roster button.step[data-step-id={step}] .word")).to_have_text("completed")
    assert page.locator("#report").count() == 1 and page.locator(".report h2").count() >= 1
    assert page.evaluate("window.__marker") == "still the same page", "the page was not reloaded"


def test_a_dropped_stream_catches_up_on_what_it_missed(page, server):
    run_id = open_paused_run(page, server, "Drop the stream")
    page.evaluate("window.batonConsole.feed.pause()")
    expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    expect(page.locator(".notice")).to_contain_text("reconnecting")

    comment = "approved while the stream was down"
    r = httpx.post(f"{server.url}/api/runs/{run_id}/steps/gate/approve", json={"comment": comment},
                   auth=server.auth_as("approver"))
    assert r.status_code == 200, r.text
    wait_frame(server, run_id, ended, "the run's end")
    assert page.locator(".head-status").get_attribute("data-status") == "paused", "nothing reached the pane yet"

    page.evaluate("window.batonConsole.feed.resume()")
    assert_caught_up(page, run_id, comment)
    # the frames replayed after the resume were applied once: the step texts are not doubled
    publish = next(s for s in run_of(server, run_id)["steps"] if s["step_id"] == "publish")
    button = page.locator(".roster button.step[data-step-id=publish]")
    if button.get_attribute("aria-expanded") != "true":
        button.click()
    expect(page.locator("#step-detail[data-step-id=publish] pre.output")).to_have_text(publish["output"])


def test_a_server_restart_mid_run_is_caught_up_by_the_stream(page, server):
    run_id = open_paused_run(page, server, "Restart the server")
    server.__exit__()  # the server stops: its streams end
    expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")

    # While the server is away the run goes on elsewhere: the CLI approves it and drives it to its end.
    comment = "approved while the console was away"
    done = subprocess.run([sys.executable, "-m", "api.cli.main", "approve", run_id, "gate", "--comment", comment],
                          cwd=ROOT, env=server.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    server.__enter__()  # the same port and database
    # Sessions live in the server's memory: after a restart the console asks for a token again, and then
    # catches up where it was, without a reload.
    expect(page.get_by_role("dialog")).to_be_visible(timeout=30_000)
    page.get_by_label("Access token").fill(server.tokens["approver"])
    page.get_by_role("button", name="Log in").click()
    assert_caught_up(page, run_id, comment)
    assert page.evaluate("window.batonConsole.feed.drops") >= 1
