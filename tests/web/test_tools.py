"""Tool calls in the run pane, against a real server whose agents talk to the scripted OpenAI server.

The server runs the openai backend (BATON_AGENT=openai) against
``tests.integration.scripted_llm``: a launch from the console with a project
makes the explorer stream a tool call, the engine runs it against the
project, and the ``tool_call`` / ``tool_result`` frames show inline in the
expanded step while it runs; a reopened run shows the same calls from
``GET /api/runs/{id}`` (the result text read from the audit log on demand),
with the tokens the model reported in the header and the roster.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.api.server import ApiServer
from tests.integration.scripted_llm import Call, ScriptedLLM, StallTurn, TextTurn, ToolTurn, usage_of
from tests.projects import register
from tests.web.support import assert_accessible, launch_api, paused, run_of, shoot, wait_frame

RUN_URL = re.compile(r"#/runs/([0-9A-Z]{26})$")
MODEL = "scripted"
READ = Call("read_file", {"path": "README.md"})
ANSWER = 'It is a test project.\n\nE1: "A test project" (source: README.md:1; trust: direct)\n'


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedLLM]:
    server = ScriptedLLM().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, llm: ScriptedLLM) -> Iterator[ApiServer]:
    """``baton serve`` (the API process) with the openai backend on the scripted server, one project."""
    db = tmp_path_factory.mktemp("web-tools") / "baton.db"
    with ApiServer(f"sqlite:///{db}", BATON_AGENT="openai", BATON_OPENAI_BASE_URL=llm.base_url,
                   BATON_MODEL=MODEL, BATON_FLOWS="tests.web.web_flows") as running:
        register(running.db_url, db.parent, "demo")
        yield running


def test_launch_with_a_project_and_watch_a_tool_call_and_its_result_inline(page, server, llm):
    llm.script(MODEL, [ToolTurn([READ]), StallTurn("Reading done; thinking")])  # stays running until cancelled
    page.goto(server.url + "/#/launch")
    picker = page.get_by_label("Project", exact=True)
    expect(picker).to_be_visible()
    picker.select_option("demo")
    page.locator("input[name=flow][value=web-tools]").check()
    page.get_by_label("Focus").fill("What is this project?")
    page.get_by_role("button", name="Launch").click()
    expect(page).to_have_url(RUN_URL)
    run_id = RUN_URL.search(page.url).group(1)

    # the pane follows the running explorer: its call, then its result, inline, then the model's text
    box = page.locator("#step-detail[data-step-id=explore] .stream-box")
    tool = box.locator(".tool")
    expect(tool).to_have_count(1)
    expect(tool).to_have_attribute("data-state", "ok")
    expect(tool.locator("code")).to_have_text("read_file")
    expect(tool.locator(".tool-state")).to_contain_text("ok")  # a word, not a colour alone
    expect(tool.locator(".tool-args")).to_have_text('{"path": "README.md"}')
    expect(tool.locator(".tool-result")).to_contain_text("# A test project")
    expect(box.locator("pre.stream").last).to_contain_text("Reading done")
    assert box.evaluate("b => [...b.children].map(c => c.className)")[0] == "tool", "the call comes before the text"
    detail = run_of(server, run_id)
    assert detail["run"]["project_id"] == "demo"
    assert [c["tool"] for c in detail["steps"][0]["tool_calls"]] == ["read_file"]
    expect(page.locator("#tool-calls")).to_have_text("1")
    shoot(page, "run-tools")

    page.get_by_role("button", name="Cancel run").first.click()
    page.locator("#cancel-confirm").click()
    expect(page.locator(".head-status")).to_have_attribute("data-status", "cancelled", timeout=20_000)


def test_a_reopened_run_shows_its_calls_results_and_tokens(page, server, llm):
    llm.script(MODEL, [ToolTurn([READ, Call("nope", {})]), TextTurn(ANSWER)])
    run_id = launch_api(server, "web-tools", question="Reopen me", project_id="demo")
    wait_frame(server, run_id, paused, "the gate")
    page.goto(f"{server.url}/#/runs/{run_id}")

    first, second = usage_of(1), usage_of(2)
    total = first["total_tokens"] + second["total_tokens"]
    prompt = first["prompt_tokens"] + second["prompt_tokens"]
    completion = first["completion_tokens"] + second["completion_tokens"]
    expect(page.locator("#tokens")).to_have_text(f"{total:,} ({prompt:,} in · {completion:,} out)")
    expect(page.locator("#tool-calls")).to_have_text("2")
    explore = page.locator(".roster button.step[data-step-id=explore]")
    expect(explore.locator(".meta")).to_contain_text(f"{total:,} tokens")

    explore.click()
    detail = page.locator("#step-detail[data-step-id=explore]")
    expect(detail.locator(".facts")).to_contain_text(f"{total:,} tokens ({prompt:,} in, {completion:,} out)")
    expect(detail.locator(".facts")).to_contain_text("2 model turns")
    tools = detail.locator(".tool")
    expect(tools).to_have_count(2)
    expect(tools.nth(0)).to_have_attribute("data-state", "ok")
    expect(tools.nth(1)).to_have_attribute("data-state", "failed")
    expect(tools.nth(1).locator(".tool-state")).to_have_text("✕ failed: malformed")
    # the snapshot has no result text: it is read from the audit log when asked for
    tools.nth(0).locator("summary").click()
    expect(tools.nth(0).locator(".tool-result")).to_contain_text("# A test project")
    expect(detail.locator("pre.output")).to_contain_text("It is a test project.")
    shoot(page, "run-tools-reopened")
    assert_accessible(page, "a run with tool calls")  # the Result toggles and Prompt are Tab stops too

    page.locator(".roster button.step[data-step-id=gate]").click()  # picked by hand: the pane no longer follows
    page.get_by_role("button", name="Approve").click()
    expect(page.locator(".head-status")).to_have_attribute("data-status", "completed", timeout=20_000)
    expect(page.locator("#report")).to_be_visible()
