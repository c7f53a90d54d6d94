"""The console's run pane for runs from runs (DESIGN §15): a map's items, a subflow's child run and the way back;
and a reopened run's anomalies, listed on their step.

A real ``baton serve`` with the map and subflow flows of the API tests, and a real headless Chromium
(conftest). Each test waits on DOM conditions with timeouts, never on sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import expect

from tests.api.server import ApiServer
from tests.web.support import ended, launch_api, paused, shoot, wait_frame


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """As conftest's, with the flows of runs from runs (api-map, api-parent) and a step that keeps failing
    (web-flaky) beside the API tests' own."""
    db = tmp_path_factory.mktemp("web-runs-from-runs") / "baton.db"
    with ApiServer(f"sqlite:///{db}", BATON_OFFLINE_DELAY_S="0.2",
                   BATON_FLOWS="tests.api.api_flows,tests.api.api_runs_flows,tests.web.flaky_flows") as running:
        yield running


def test_a_maps_items_show_with_their_results_live_and_when_reopened(page, server):
    run_id = launch_api(server, "api-map", question="Two things")
    page.goto(f"{server.url}/#/runs/{run_id}")
    page.locator(".roster button.step[data-step-id='review']").click()
    detail = page.locator("#step-detail")
    items = detail.locator(".map-items li.map-item")
    expect(detail.locator(".map-items .facts")).to_have_text("2 of 2 items done", timeout=20_000)
    expect(items).to_have_count(2)
    expect(items.nth(0)).to_have_attribute("data-status", "completed")
    expect(items.nth(0)).to_contain_text("#0")
    expect(items.nth(0)).to_contain_text("one")
    expect(items.nth(1)).to_contain_text("two")
    expect(items.nth(1).locator(".item-output")).to_contain_text("→ ")
    shoot(page, "run-map-items")
    page.reload()  # no frame of the map's items comes again: they are read from the run's events
    page.locator(".roster button.step[data-step-id='review']").click()
    expect(detail.locator(".map-items .facts")).to_have_text("2 of 2 items done")
    expect(detail.locator(".map-items li.map-item[data-status='completed']")).to_have_count(2)


def test_a_map_opened_after_an_items_frame_still_lists_every_item(page, server, tmp_path):
    """The page opened while the map ran, on another step: only the last item's frame reached it. Opening
    the map then reads the items from the run's events, not from that one frame."""
    release = tmp_path / "release"
    run_id = launch_api(server, "web-slow-map", question=str(release))
    wait_frame(server, run_id, lambda f: f.get("type") == "map_item" and f.get("index") == 1, "items a and b")
    page.goto(f"{server.url}/#/runs/{run_id}")
    page.locator(".roster button.step[data-step-id='list']").click()  # the person looks elsewhere
    release.touch()  # the last item ends now
    expect(page.locator(".roster button.step[data-step-id='each'] .word")).to_have_text("completed", timeout=20_000)
    page.locator(".roster button.step[data-step-id='each']").click()
    detail = page.locator("#step-detail")
    expect(detail.locator(".map-items .facts")).to_have_text("3 of 3 items done")
    expect(detail.locator(".map-items li.map-item")).to_have_count(3)
    expect(detail.locator(".map-items li.map-item").nth(0)).to_contain_text("→ A")


def test_a_map_that_starts_after_the_page_opened_lists_its_items_before_they_end(page, server, tmp_path):
    """The snapshot had the map pending: when it starts, the page reads its items from the run's detail, so
    the one still under way is named, and its frame then completes it."""
    release = tmp_path / "release"
    run_id = launch_api(server, "web-gated-map", question="Gated", inputs={"items": ["a", "b", {"slow": str(release)}]})
    wait_frame(server, run_id, paused, "the gate")
    page.goto(f"{server.url}/#/runs/{run_id}")
    expect(page.get_by_role("button", name="Approve")).to_be_visible()
    r = httpx.post(f"{server.url}/api/runs/{run_id}/steps/gate/approve", json={}, auth=server.auth)
    assert r.status_code == 200, r.text
    # the page follows the active step: the map, once it runs (a click would fold it up again)
    expect(page.locator("#step-detail")).to_have_attribute("data-step-id", "each")
    items = page.locator("#step-detail .map-items li.map-item")
    expect(items).to_have_count(3)
    expect(items.nth(2)).to_contain_text("slow")
    expect(items.nth(2)).to_have_attribute("data-status", "pending")  # no frame says that: the detail does
    release.touch()  # the last item ends now
    expect(page.locator("#step-detail .map-items .facts")).to_have_text("3 of 3 items done", timeout=20_000)


def test_a_wide_maps_detail_lists_its_first_items_and_every_failed_one(page, server):
    """300 items: the first 200 and the failed #250 are listed, the rest counted (a page redraws the
    detail at each item's frame: 1,024 rows each time would freeze it)."""
    run_id = launch_api(server, "web-wide-map", question="Wide")
    wait_frame(server, run_id, ended, "the run's end")
    page.goto(f"{server.url}/#/runs/{run_id}")
    page.locator(".roster button.step[data-step-id='each']").click()
    detail = page.locator("#step-detail")
    expect(detail.locator(".map-items .facts")).to_have_text("299 of 300 items done, 1 failed")
    expect(detail.locator(".map-items li.map-item")).to_have_count(201)
    expect(detail.locator(".map-items li.map-item").last).to_contain_text("#250")
    expect(detail.locator(".map-items li.map-item").last).to_contain_text("item 250 is bad")
    expect(detail.locator(".map-items p.hint")).to_have_text(
        "99 more items not shown here (Log, or baton show --json, has them all).")


def test_a_subflow_step_says_its_child_completed_when_it_did_while_the_page_watched(page, server):
    """The child's status comes from the step's frames: running when it starts, completed with it."""
    parent = launch_api(server, "web-gated-parent", question="Watch it nest")
    wait_frame(server, parent, paused, "the gate")
    page.goto(f"{server.url}/#/runs/{parent}")
    expect(page.get_by_role("button", name="Approve")).to_be_visible()
    r = httpx.post(f"{server.url}/api/runs/{parent}/steps/gate/approve", json={}, auth=server.auth)
    assert r.status_code == 200, r.text
    expect(page.locator("#step-detail")).to_have_attribute("data-step-id", "child")  # it follows the step
    expect(page.locator("#step-detail .child-line")).to_contain_text("(completed)", timeout=20_000)


def test_a_subflow_step_links_its_child_run_and_the_child_links_back(page, server):
    parent = launch_api(server, "api-parent", question="Nest it")
    done = wait_frame(server, parent, ended, "the parent's end")
    assert done["run"]["status"] == "completed"
    child = next(c["run_id"] for c in done["children"] if c["parent_link"] == "subflow")
    page.goto(f"{server.url}/#/runs/{parent}")
    page.locator(".roster button.step[data-step-id='child']").click()
    link = page.locator("#step-detail a.child-run")
    expect(link).to_have_attribute("title", child)
    expect(link).to_have_text(child)  # a child's id is shown whole: its tail alone says nothing
    expect(page.locator("#step-detail .child-line")).to_contain_text("(completed)")
    link.click()
    expect(page).to_have_url(f"{server.url}/#/runs/{child}")
    back = page.locator("a.parent-run")
    expect(back).to_have_attribute("title", parent)
    expect(page.locator(".stats")).to_contain_text("Child of")
    expect(page.locator(".stats")).to_contain_text("(step child)")
    page.locator(".roster button.step[data-step-id='review']").click()
    expect(page.locator("#step-detail .map-items .facts")).to_have_text("2 of 2 items done")
    back.click()
    expect(page).to_have_url(f"{server.url}/#/runs/{parent}")


def test_a_reopened_runs_step_lists_the_anomalies_recorded_on_it(page, server):
    """The anomaly frames went out before the page opened: the step still lists them (GET /api/runs/{id})."""
    run_id = launch_api(server, "web-flaky", question="Flaky")
    done = wait_frame(server, run_id, ended, "the run's end")
    assert done["run"]["status"] == "failed" and done["run"]["anomalies"] == 1
    page.goto(f"{server.url}/#/runs/{run_id}")
    page.locator(".roster button.step[data-step-id='flaky']").click()
    found = page.locator("#step-detail p.anomaly")
    expect(found).to_have_count(1)
    expect(found).to_contain_text("errors (medium)")


def test_the_feed_listens_for_every_frame_type_the_run_pane_folds():
    """An SSE frame type the feed does not listen for never reaches the page: the run pane handled
    ``map_item`` and ``run_forked`` for a while and never saw one live."""
    import re

    from api.web.routes import STATIC

    feed = (STATIC / "js" / "feed.js").read_text()
    listened = set(re.findall(r"'([a-z_]+)'", feed[feed.index("FRAME_TYPES = ["):feed.index("];")]))
    folded = set(re.findall(r"case '([a-z_]+)'", (STATIC / "js" / "runmodel.js").read_text()))
    assert folded and folded <= listened, sorted(folded - listened)
