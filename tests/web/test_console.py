"""The web console in a real headless Chromium against a real ``baton serve`` process.

Each test drives the page as a person would (clicks, keys, downloads) and
waits on DOM conditions with timeouts, never on sleeps. Screenshots of each
page at desktop and mobile width go to ``build/screenshots/`` (conftest).
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path, PurePosixPath

import httpx
from playwright.sync_api import expect

from api.web.routes import STATIC
from tests.web.support import MOBILE, ROOT, UNLABELLED, assert_accessible, ended, launch_api, paused, run_of, shoot, wait_frame

RUN_URL = re.compile(r"#/runs/([0-9A-Z]{26})$")

# Records what the expanded step showed, each time it changed: which step, its
# status, and how much live text it had. Proves text streamed in over time and
# that the pane followed the active step, without sampling on a timer.
WATCH_DETAIL = """
window.__seen = [];
new MutationObserver(() => {
  const d = document.getElementById('step-detail');
  if (!d || d.hidden || !d.dataset.stepId) return;
  const pres = d.querySelectorAll('pre.stream');
  const text = pres.length ? pres[pres.length - 1].textContent : '';
  const rec = {step: d.dataset.stepId, status: d.dataset.status, len: text.length, head: text.slice(0, 40)};
  const last = window.__seen[window.__seen.length - 1];
  if (!last || last.step !== rec.step || last.status !== rec.status || last.len !== rec.len) window.__seen.push(rec);
}).observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
"""


def launch_from_launcher(page, server, category: str, flow: str, question: str) -> str:
    """Open the launcher, pick ``flow`` under ``category``, launch; the new run's id (from the URL)."""
    page.goto(server.url + "/#/launch")
    page.get_by_role("tab", name=re.compile(f"^{category}")).click()
    page.locator(f"input[name=flow][value={flow}]").check()
    page.get_by_label("Focus").fill(question)
    page.get_by_role("button", name="Launch").click()
    expect(page).to_have_url(RUN_URL)
    return RUN_URL.search(page.url).group(1)


def roster_ids(page) -> list[str]:
    return page.locator(".roster button.step").evaluate_all("els => els.map(e => e.dataset.stepId)")


# -- serving --------------------------------------------------------------------------------------


def test_console_page_and_files_carry_strict_headers(server):
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "http" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert re.search(r"<script(?![^>]*\bsrc=)", page.text) is None, "no inline script in the page"
    for path, media in (("/static/js/main.js", "text/javascript"), ("/static/app.css", "text/css")):
        r = httpx.get(server.url + path)  # no token: the console's files hold no data
        assert r.status_code == 200 and r.headers["content-type"].startswith(media), path
        assert r.headers["content-security-policy"] == csp and r.headers["x-content-type-options"] == "nosniff"
        # no-cache + ETag: revalidated on every load, so a changed file is the one that loads
        assert r.headers["cache-control"] == "no-cache" and r.headers["etag"]
        assert httpx.get(server.url + path, headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    assert httpx.get(server.url + "/static/nope.js").status_code == 404


def test_a_changed_file_is_the_one_that_loads(server):
    probe = STATIC / "_probe_test.txt"
    try:
        probe.write_text("one")
        first = httpx.get(server.url + "/static/_probe_test.txt")
        assert first.text == "one"
        probe.write_text("two, longer")
        second = httpx.get(server.url + "/static/_probe_test.txt", headers={"If-None-Match": first.headers["etag"]})
        assert second.status_code == 200 and second.text == "two, longer"
    finally:
        probe.unlink(missing_ok=True)


def test_every_console_file_ships_in_the_package():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["api.web"]
    files = [PurePosixPath(p.relative_to(STATIC.parent).as_posix()) for p in STATIC.rglob("*") if p.is_file()]
    assert files
    missing = [str(f) for f in files if not any(f.match(g) and len(f.parts) == len(PurePosixPath(g).parts)
                                                for g in globs)]
    assert not missing, f"console files outside pyproject's package-data (they would not ship): {missing}"


# -- the launcher and the run pane ----------------------------------------------------------------


def test_launch_from_the_launcher_and_watch_the_run_complete(page, server):
    page.add_init_script(WATCH_DETAIL)
    page.goto(server.url + "/#/launch")
    tabs = page.get_by_role("tab")
    expect(tabs).to_have_count(5)
    assert tabs.evaluate_all("ts => ts.map(t => t.dataset.category)") == [
        "Analysis", "Discovery", "Planning", "Authoring", "Review"]
    expect(page.get_by_role("tab", name=re.compile("^Analysis"))).to_have_attribute("aria-selected", "true")
    expect(page.locator("input[name=band][value=small]")).to_be_checked()
    expect(page.locator("#fast")).not_to_be_checked()
    shoot(page, "launch")

    page.locator("input[name=flow][value=api-chain]").check()
    page.get_by_label("Focus").fill("Why is the build slow?")
    page.get_by_role("button", name="Launch").click()
    expect(page).to_have_url(RUN_URL)
    run_id = RUN_URL.search(page.url).group(1)

    expect(page.locator(".roster button.step")).to_have_count(4)
    assert roster_ids(page) == ["first", "second", "third", "fold"]
    expect(page.locator(".head-status")).to_have_attribute("data-status", "completed", timeout=30_000)

    report = page.locator("#report")
    expect(report).to_be_visible()
    expect(report).to_contain_text("api-chain: completed")
    assert report.bounding_box()["y"] < page.locator(".roster").bounding_box()["y"], "the report is on top"
    for step in ("first", "second", "third", "fold"):
        expect(page.locator(f".roster button.step[data-step-id={step}] .word")).to_have_text("completed")
    assert run_of(server, run_id)["run"]["status"] == "completed"

    seen = page.evaluate("window.__seen")
    running = [s for s in seen if s["status"] == "running"]
    order = [s["step"] for i, s in enumerate(running) if i == 0 or running[i - 1]["step"] != s["step"]]
    assert order == ["first", "second", "third", "fold"], f"the pane followed the active step: {order}"
    for step in ("first", "second", "third"):  # the agent steps (fold is code: no deltas)
        lengths = sorted({s["len"] for s in running if s["step"] == step and s["len"]})
        assert len(lengths) >= 2, f"{step}'s text streamed in over several deltas: {lengths}"
    first_text = next(s["head"] for s in running if s["step"] == "first" and s["len"])
    assert first_text.startswith("---\nbackend: offline"), f"no delta of the first step was lost: {first_text!r}"
    shoot(page, "run-report")


def test_approve_a_gate_with_a_comment_and_see_the_report_on_top(page, server):
    run_id = launch_from_launcher(page, server, "Review", "api-gate", "Publish the release notes?")
    approve = page.get_by_role("button", name="Approve")
    expect(approve).to_be_visible()
    expect(page.locator("#step-detail")).to_have_attribute("data-step-id", "gate")
    expect(page.locator(".roster button.step[data-step-id=gate] .word")).to_have_text("paused")
    expect(page.locator(".head-status")).to_have_attribute("data-status", "paused")
    shoot(page, "run-gate")

    page.get_by_label("Comment").fill("ship it, after the")
    # A layout change (a phone turned) moves the detail into the roster: the box keeps the focus.
    desktop = page.viewport_size
    page.set_viewport_size(MOBILE)
    expect(page.locator(".roster li[data-step-id=gate] #approval-comment")).to_be_focused()
    page.keyboard.type(" benchmark")
    page.set_viewport_size(desktop)
    expect(page.locator(".detail-col #approval-comment")).to_be_focused()
    # Looking at another step redraws the detail (as a live frame may): what was typed is kept.
    page.locator(".roster button.step[data-step-id=draft]").click()
    expect(page.locator("#step-detail")).to_have_attribute("data-step-id", "draft")
    page.locator(".roster button.step[data-step-id=gate]").click()
    expect(page.get_by_label("Comment")).to_have_value("ship it, after the benchmark")
    approve.click()
    expect(page.locator(".head-status")).to_have_attribute("data-status", "completed", timeout=30_000)
    gate = next(s for s in run_of(server, run_id)["steps"] if s["step_id"] == "gate")
    assert gate["status"] == "completed" and gate["comment"] == "ship it, after the benchmark"
    report = page.locator("#report")
    expect(report).to_contain_text("approved")
    expect(report).to_contain_text("ship it, after the benchmark")
    assert report.bounding_box()["y"] < page.locator(".roster").bounding_box()["y"]


def test_reject_needs_no_comment_and_ends_the_run_rejected(page, server):
    run_id = launch_api(server, "api-gate", question="Reject me")
    wait_frame(server, run_id, paused, "the gate")
    page.goto(f"{server.url}/#/runs/{run_id}")
    page.get_by_role("button", name="Reject").click()
    expect(page.locator(".head-status")).to_have_attribute("data-status", "rejected", timeout=30_000)
    expect(page.locator(".roster button.step[data-step-id=gate] .word")).to_have_text("rejected")
    expect(page.locator("#cancel")).to_be_hidden()


def test_cancel_a_running_run(slow_page, slow_server):
    page = slow_page
    # A minute a step: the run is still running whenever the click lands (with 0.4 s steps it once
    # ended first on a loaded machine, and the confirm button had gone with the run).
    run_id = launch_api(slow_server, "api-chain", question="Cancel me")
    page.goto(f"{slow_server.url}/#/runs/{run_id}")
    expect(page.locator(".head-status")).to_have_attribute("data-status", "running")
    page.get_by_role("button", name="Cancel run").first.click()
    page.get_by_label("Reason").fill("wrong question")
    page.locator("#cancel-confirm").click()
    expect(page.locator(".head-status")).to_have_attribute("data-status", "cancelled", timeout=30_000)
    assert run_of(slow_server, run_id)["run"]["status"] == "cancelled"


# -- history and export ---------------------------------------------------------------------------


def test_reopen_from_history_and_export(page, server):
    run_id = launch_api(server, "api-chain", question="Export me, please")
    wait_frame(server, run_id, ended, "the run's end")
    page.goto(server.url + "/#/runs?status=completed&flow=api-chain")
    row = page.locator(f".run-row[data-run-id='{run_id}']")
    expect(row).to_be_visible()
    page.get_by_label("Search").fill("export me")
    expect(page.locator(".run-row")).to_have_count(1)
    assert "q=export" in page.url
    shoot(page, "runs")

    row.get_by_role("link").click()
    expect(page).to_have_url(re.compile(f"#/runs/{run_id}$"))
    report = page.locator("#report")
    expect(report).to_be_visible()
    assert report.bounding_box()["y"] < page.locator(".roster").bounding_box()["y"]
    markdown = httpx.get(f"{server.url}/api/runs/{run_id}/report", auth=server.auth).text

    page.get_by_role("button", name="Copy report").click()
    expect(page.locator("#toast")).to_contain_text("copied")
    assert page.evaluate("navigator.clipboard.readText()") == markdown

    with page.expect_download() as got:
        page.get_by_role("button", name="Download report as markdown").click()
    assert got.value.suggested_filename == f"baton-{run_id}.md"
    assert Path(got.value.path()).read_text() == markdown

    with page.expect_download() as got:
        page.get_by_role("button", name="Download audit log as JSON lines").click()
    assert got.value.suggested_filename == f"baton-{run_id}-events.jsonl"
    lines = Path(got.value.path()).read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert events == httpx.get(f"{server.url}/api/runs/{run_id}/events", auth=server.auth).json()
    assert events[0]["type"] == "RunLaunched" and events[-1]["type"] == "RunCompleted"


def test_a_forks_run_pane_says_which_steps_were_kept_from_its_parent(page, server):
    parent = launch_api(server, "api-chain", question="Fork me")
    wait_frame(server, parent, ended, "the parent's end")
    r = httpx.post(f"{server.url}/api/runs/{parent}/fork", json={"from_step": "third"}, auth=server.auth)
    assert r.status_code == 201, r.text
    child = r.json()["run_id"]
    wait_frame(server, child, ended, "the fork's end")
    page.goto(f"{server.url}/#/runs/{child}")
    detail = page.locator("#step-detail")
    page.locator(".roster button.step[data-step-id='second']").click()
    expect(detail).to_contain_text(f"Kept from run {parent}")
    page.locator(".roster button.step[data-step-id='third']").click()
    expect(detail).to_have_attribute("data-step-id", "third")
    expect(detail).not_to_contain_text("Kept from run")


def test_history_filters_newest_first_and_pages(page, server):
    ids = [launch_api(server, "api-gate", question=f"paging {i}", project_id="paging") for i in range(3)]
    for run_id in ids:
        wait_frame(server, run_id, paused, "the gate")
    page.goto(server.url + "/#/runs?project=paging&limit=2")
    rows = page.locator(".run-row")
    expect(rows).to_have_count(2)
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.runId)") == [ids[2], ids[1]], "newest first"
    page.get_by_role("button", name="Load older runs").click()
    expect(rows).to_have_count(3)
    assert rows.nth(2).get_attribute("data-run-id") == ids[0]
    expect(page.get_by_role("button", name="Load older runs")).to_be_hidden()
    for r in rows.all():
        expect(r.locator(".word")).to_have_text("paused")

    page.get_by_label("Status").select_option("completed")
    expect(page.locator(".summary")).to_have_text("No runs match these filters.")
    expect(rows).to_have_count(0)
    assert "status=completed" in page.url and "project=paging" in page.url
    page.get_by_label("Status").select_option("paused")
    expect(rows).to_have_count(2)

    # the search asks the API (?q=): it finds the run on the page not loaded yet
    page.get_by_label("Search").fill("PAGING 0")
    expect(rows).to_have_count(1)
    assert rows.first.get_attribute("data-run-id") == ids[0]
    expect(page.locator(".summary")).to_have_text("1 run matching “PAGING 0”")
    assert any("/api/runs?" in u and "q=PAGING+0" in u for u in page.requests), "the text filter is the API's"
    assert "q=PAGING" in page.url
    # the project picker filters by the API too: another project has none of them
    expect(page.locator("select#f-project")).to_be_visible()
    page.get_by_label("Search").fill("")
    expect(rows).to_have_count(2)
    page.get_by_label("Project").select_option("")
    expect(page.locator(".summary")).to_contain_text("runs")
    assert "project=" not in page.url


def test_plan_shows_each_waiting_run_and_its_reason(page, server):
    run_id = launch_api(server, "api-gate", question="Plan me")
    wait_frame(server, run_id, paused, "the gate")
    page.goto(server.url + "/#/plan")
    row = page.locator(f".plan-row[data-run-id='{run_id}']")
    expect(row).to_be_visible()
    expect(row.locator(".reason")).to_have_text(re.compile("waiting for approval"))
    expect(row.locator(".why")).to_contain_text("approve or reject")
    expect(page.locator(".capacity")).to_contain_text("agent slots in use")
    shoot(page, "plan")
    # Changes come as deltas: a second parked run joins behind the first, and moves up when
    # the first is approved and leaves the plan.
    second = launch_api(server, "api-gate", question="Plan me too")
    later = page.locator(f".plan-row[data-run-id='{second}']")
    expect(later.locator(".pos")).to_have_text(re.compile(r"#\d+"))
    first_pos = int(row.locator(".pos").inner_text().lstrip("#"))
    expect(later.locator(".pos")).to_have_text(f"#{first_pos + 1}")
    r = httpx.post(f"{server.url}/api/runs/{run_id}/steps/gate/approve", json={"comment": "ok"},
                   auth=server.auth_as("approver"))
    assert r.status_code == 200, r.text
    expect(row).to_have_count(0)
    expect(later.locator(".pos")).to_have_text(f"#{first_pos}")
    page.goto(server.url + "/#/plan")  # the page read anew shows the same
    row = page.locator(f".plan-row[data-run-id='{second}']")
    expect(row.locator(".pos")).to_have_text(f"#{first_pos}")
    row.get_by_role("link").click()
    expect(page).to_have_url(re.compile(f"#/runs/{second}$"))
    expect(page.get_by_role("button", name="Approve")).to_be_visible()


# -- mobile, keyboard, labels ---------------------------------------------------------------------


def _same_line(boxes: list[dict]) -> bool:
    return len(boxes) > 1 and max(b["y"] for b in boxes) - min(b["y"] for b in boxes) < 2


def test_mobile_width_one_column_inline_roster_controls_on_one_line(page, server):
    run_id = launch_api(server, "api-gate", question="Mobile")
    wait_frame(server, run_id, paused, "the gate")
    page.set_viewport_size(MOBILE)
    page.goto(f"{server.url}/#/runs/{run_id}")
    expect(page.get_by_role("button", name="Approve")).to_be_visible()

    # the expanded step opens inside its own roster row: the roster expands inline
    expect(page.locator(".roster li[data-step-id=gate] #step-detail")).to_have_count(1)
    roster, head = page.locator(".roster").bounding_box(), page.locator(".run-head").bounding_box()
    assert abs(roster["x"] - head["x"]) < 2 and abs(roster["width"] - head["width"]) < 2, "one column"
    controls = [b.bounding_box() for b in page.locator(".controls button:visible").all()]
    assert len(controls) == 4 and _same_line(controls), f"run controls on one line: {controls}"
    assert all(b["x"] >= 0 and b["x"] + b["width"] <= MOBILE["width"] for b in controls)
    decision = [page.locator(s).bounding_box() for s in ("#approve", "#reject")]
    assert _same_line(decision), f"approve and reject on one line: {decision}"
    nav = [a.bounding_box() for a in page.locator(".topbar nav a").all()]
    assert _same_line(nav)
    assert page.evaluate("document.documentElement.scrollWidth") <= MOBILE["width"], "no sideways scrolling"

    page.locator(".roster button.step[data-step-id=draft]").click()
    expect(page.locator(".roster li[data-step-id=draft] #step-detail")).to_have_count(1)
    expect(page.locator(".roster button.step[data-step-id=gate]")).to_have_attribute("aria-expanded", "false")
    expect(page.locator("button.step[aria-expanded=true]")).to_have_count(1)

    # at desktop width the same pane has two columns and the detail moves beside the roster
    page.set_viewport_size({"width": 1280, "height": 900})
    expect(page.locator(".detail-col #step-detail")).to_have_count(1)
    assert page.locator(".detail-col").bounding_box()["x"] > page.locator(".roster").bounding_box()["x"] + 100

    page.set_viewport_size(MOBILE)
    page.goto(server.url + "/#/launch")
    expect(page.get_by_role("tab")).to_have_count(5)
    sizes = [b.bounding_box() for b in page.locator(".segmented .seg").all()]
    assert _same_line(sizes) and page.evaluate("document.documentElement.scrollWidth") <= MOBILE["width"]
    tabs = [t.bounding_box() for t in page.get_by_role("tab").all()]
    assert _same_line(tabs) and all(t["x"] + t["width"] <= MOBILE["width"] for t in tabs), f"every tab in view: {tabs}"


def test_every_control_is_reachable_by_keyboard_and_labelled(page, server):
    run_id = launch_api(server, "api-gate", question="Keyboard")
    wait_frame(server, run_id, paused, "the gate")
    pages = {"/#/launch": "[role=tab]", "/#/runs": ".run-row", f"/#/runs/{run_id}": "#approve", "/#/plan": ".plan-row"}
    for path, ready in pages.items():
        page.goto(server.url + path)
        expect(page.locator(ready).first).to_be_visible()
        if path == "/#/runs":  # the project filter becomes a picker once /api/projects answers: wait for it
            expect(page.locator("select#f-project")).to_be_visible()
        assert_accessible(page, path)

    # the launcher works from the keyboard alone: arrows pick a category, Enter launches
    page.goto(server.url + "/#/launch")
    page.get_by_role("tab", name=re.compile("^Analysis")).focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name=re.compile("^Discovery"))).to_be_focused()
    expect(page.get_by_role("tab", name=re.compile("^Discovery"))).to_have_attribute("aria-selected", "true")
    page.keyboard.press("End")
    expect(page.get_by_role("tab", name=re.compile("^Review"))).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.locator("input[name=flow]:checked")).to_be_focused()
    page.keyboard.press("ArrowDown")  # the next flow of the category
    checked = page.locator("input[name=flow]:checked").get_attribute("value")
    page.locator("#focus").focus()
    page.keyboard.type("From the keyboard")
    page.keyboard.press("Control+Enter")
    expect(page).to_have_url(RUN_URL)
    assert run_of(server, RUN_URL.search(page.url).group(1))["run"]["flow"] == checked

    # Enter on a roster step expands it, again collapses it
    page.goto(f"{server.url}/#/runs/{run_id}")
    draft = page.locator(".roster button.step[data-step-id=draft]")
    expect(draft).to_be_visible()
    draft.focus()
    page.keyboard.press("Enter")
    expect(page.locator(".roster button.step[data-step-id=draft]")).to_have_attribute("aria-expanded", "true")
    page.locator(".roster button.step[data-step-id=draft]").focus()
    page.keyboard.press("Enter")
    expect(page.locator(".roster button.step[data-step-id=draft]")).to_have_attribute("aria-expanded", "false")


# -- frames: unknown, duplicated, tool calls -------------------------------------------------------


def test_frames_seen_twice_change_nothing_unknown_ones_are_harmless_tools_show_inline(page, server):
    run_id = launch_api(server, "api-gate", question="Frames")
    wait_frame(server, run_id, paused, "the gate")
    page.goto(f"{server.url}/#/runs/{run_id}")
    expect(page.get_by_role("button", name="Approve")).to_be_visible()
    last = run_of(server, run_id)["run"]["last_position"]

    def send(frame):
        page.evaluate("f => window.batonConsole.feed._receive({type: f.type, data: JSON.stringify(f)})",
                      {"run_id": run_id, **frame})

    # tool frames are not emitted by this server yet: injected here as the feed would receive them
    n = last + 10_000
    send({"type": "flow_run_step_updated", "id": n + 1, "step_id": "publish", "status": "running", "attempt": 1})
    page.locator(".roster button.step[data-step-id=publish]").click()
    send({"type": "step_delta", "step_id": "publish", "attempt": 1, "text": "Reading the README. "})
    call = {"type": "tool_call", "id": n + 2, "step_id": "publish", "call_id": "c1", "tool": "read_file",
            "arguments": {"path": "README.md"}}
    send(call)
    send({"type": "step_delta", "step_id": "publish", "attempt": 1, "text": "It says baton."})
    result = {"type": "tool_result", "id": n + 3, "step_id": "publish", "call_id": "c1", "tool": "read_file",
              "ok": True, "result": "# baton"}
    send(result)
    for frame in (call, result, {"type": "flow_run_step_updated", "id": n + 1, "step_id": "publish",
                                 "status": "running", "attempt": 1}):
        send(frame)  # seen twice: nothing changes
    send({"type": "some_future_frame", "id": n + 4, "step_id": "publish", "whatever": [1, 2]})
    send({"type": "step_delta", "step_id": "publish", "attempt": 1, "text": " Done."})

    box = page.locator("#step-detail .stream-box")
    expect(box.locator(".tool")).to_have_count(1)
    expect(box.locator(".tool")).to_have_attribute("data-state", "ok")
    expect(box.locator(".tool")).to_contain_text("read_file")
    expect(box.locator(".tool .tool-result")).to_have_text("# baton")
    texts = box.locator("pre.stream").all_text_contents()
    assert texts == ["Reading the README. ", "It says baton. Done."], texts
    assert roster_ids(page) == ["draft", "gate", "publish"], "no step was added twice"
    expect(page.locator(".roster button.step[data-step-id=publish] .word")).to_have_text("running")

    # a step redrawn by a frame keeps the keyboard focus of a person tabbing through the roster
    page.locator(".roster button.step[data-step-id=publish]").focus()
    send({"type": "flow_run_step_updated", "id": n + 5, "step_id": "publish", "status": "failed", "attempt": 1,
          "error": "boom"})
    expect(page.locator(".roster button.step[data-step-id=publish] .word")).to_have_text("failed")
    expect(page.locator(".roster button.step[data-step-id=publish]")).to_be_focused()


def test_a_reviewers_call_with_the_implementors_call_id_is_its_own_call_and_says_who_made_it(page, server):
    """A task's implementor and reviewer are two conversations, each numbering its calls: both have a
    "call_1". The frames carry ``role``; the step shows two calls, the reviewer's named."""
    run_id = launch_api(server, "api-gate", question="Two agents")
    wait_frame(server, run_id, paused, "the gate")
    page.goto(f"{server.url}/#/runs/{run_id}")
    expect(page.get_by_role("button", name="Approve")).to_be_visible()
    n = run_of(server, run_id)["run"]["last_position"] + 10_000

    def send(frame):
        page.evaluate("f => window.batonConsole.feed._receive({type: f.type, data: JSON.stringify(f)})",
                      {"run_id": run_id, "step_id": "publish", "attempt": 1, **frame})

    send({"type": "flow_run_step_updated", "id": n + 1, "status": "running"})
    page.locator(".roster button.step[data-step-id=publish]").click()
    send({"type": "tool_call", "id": n + 2, "call_id": "call_1", "tool": "write_file", "arguments": {"path": "a"},
          "role": ""})
    send({"type": "tool_call", "id": n + 3, "call_id": "call_1", "tool": "read_file", "arguments": {"path": "a"},
          "role": "reviewer"})
    send({"type": "tool_result", "id": n + 4, "call_id": "call_1", "tool": "read_file", "ok": True, "result": "A",
          "role": "reviewer"})
    calls = page.locator("#step-detail .stream-box .tool")
    expect(calls).to_have_count(2)
    expect(calls.nth(0)).to_have_attribute("data-state", "running")  # the implementor's: no result yet
    expect(calls.nth(0)).not_to_contain_text("reviewer")
    expect(calls.nth(1)).to_have_attribute("data-role", "reviewer")
    expect(calls.nth(1)).to_contain_text("read_file (reviewer)")
    expect(calls.nth(1).locator(".tool-result")).to_have_text("A")


# -- login ----------------------------------------------------------------------------------------


def test_log_in_with_a_token_then_commands_carry_the_csrf_token_and_log_out(anonymous_page, server):
    """The whole login, against the real routes: no session, so the first /api request answers 401 and
    the console asks for a token; a wrong one is said so, a good one gives an HttpOnly SameSite=Strict
    cookie, and every state-changing request then sends the session's CSRF token."""
    page = anonymous_page
    posts: list[dict[str, str]] = []
    page.on("request", lambda r: posts.append({"url": r.url, **r.headers}) if r.method == "POST" else None)
    page.goto(server.url + "/#/runs")
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(page.get_by_label("Access token")).to_be_focused()
    shoot(page, "login")
    assert page.evaluate(UNLABELLED) == [], "the login dialog's input has a label"
    page.get_by_label("Access token").fill("baton_not-a-token")
    page.keyboard.press("Enter")  # the keyboard alone logs in
    expect(page.locator("#login-error")).to_contain_text("not accepted")
    page.get_by_label("Access token").fill(server.tokens["operator"])
    page.get_by_role("button", name="Log in").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#who")).to_contain_text(f"test-operator-{server.port} (operator)")
    expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    [cookie] = [c for c in page.context.cookies() if c["name"] == "baton_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie").find("baton_session") == -1, "no script may read the session"

    run_id = launch_from_launcher(page, server, "Analysis", "api-chain", "With a session")
    csrf = page.evaluate("fetch('/api/session').then(r => r.json()).then(s => s.csrf_token)")
    launch = next(p for p in posts if p["url"].endswith("/api/runs"))
    assert csrf and launch.get("x-csrf-token") == csrf
    events = httpx.get(f"{server.url}/api/runs/{run_id}/events", auth=server.auth).json()
    assert events[0]["data"]["launched_by"] == f"test-operator-{server.port}"  # the token's name, from the session

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("dialog")).to_be_visible()  # the page reloads and meets a 401 again
