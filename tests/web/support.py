"""What the web console tests share besides fixtures: sizes, screenshots, runs through the API."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx

from tests.api.server import ApiServer, sse_events

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("BATON_SCREENSHOTS", ROOT / "build" / "screenshots"))
DESKTOP = {"width": 1280, "height": 900}
MOBILE = {"width": 390, "height": 844}


def shoot(page: Any, name: str, *, mobile_too: bool = True) -> None:
    """Save ``<name>-desktop.png`` (and ``<name>-mobile.png`` at 390x844), then restore the size."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    page.set_viewport_size(DESKTOP)
    page.screenshot(path=str(SCREENSHOTS / f"{name}-desktop.png"), full_page=True)
    if mobile_too:
        page.set_viewport_size(MOBILE)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-mobile.png"), full_page=True)
    page.set_viewport_size(size)


def launch_api(server: ApiServer, flow: str, question: str = "Why is the build slow?", **body: Any) -> str:
    """Launch a run through the HTTP API (not the console); its id."""
    r = httpx.post(server.url + "/api/runs", json={"flow": flow, "question": question, "band": "small", **body},
                   auth=server.auth)
    assert r.status_code == 201, r.text
    return r.json()["run_id"]


def run_of(server: ApiServer, run_id: str) -> dict[str, Any]:
    """GET /api/runs/{id}."""
    r = httpx.get(f"{server.url}/api/runs/{run_id}", auth=server.auth)
    assert r.status_code == 200, r.text
    return r.json()


def wait_frame(server: ApiServer, run_id: str, done: Any, what: str, timeout: float = 20.0) -> dict[str, Any]:
    """Follow the run's frames (SSE, from its start) until ``done(frame)``; the run then (GET)."""
    deadline = time.monotonic() + timeout
    with httpx.stream("GET", f"{server.url}/api/stream", params={"run_id": run_id, "after": 0},
                      timeout=httpx.Timeout(timeout, connect=5.0), auth=server.auth) as response:
        for event in sse_events(response):
            if done(event["data"]):
                return run_of(server, run_id)
            if time.monotonic() > deadline:
                break
    raise AssertionError(f"run {run_id}: timed out after {timeout} s waiting for {what}")


def ended(frame: dict[str, Any]) -> bool:
    """The run's terminal frame."""
    return frame.get("step_id") is None and frame.get("run_status") in ("completed", "failed", "rejected", "cancelled")


def paused(frame: dict[str, Any]) -> bool:
    """A step asks for approval."""
    return frame.get("type") == "approval_requested"


# -- accessibility ------------------------------------------------------------------------------------

FOCUSABLE = """() => {
  const keys = new Set();
  let n = 0;
  for (const el of document.querySelectorAll('a[href], button, input, select, textarea, summary')) {
    if (el.disabled || el.closest('[hidden]') || !el.getClientRects().length) continue;
    if (el.classList.contains('skip')) continue;
    // one stop per radio group and per tab list (arrow keys move inside them)
    el.dataset.kb = el.type === 'radio' ? 'radio:' + el.name
      : el.getAttribute('role') === 'tab' ? 'tablist' : `${el.tagName}#${el.id || ''}:${n++}:${el.textContent.trim()}`;
    keys.add(el.dataset.kb);
  }
  return [...keys];
}"""

ACTIVE = "() => document.activeElement && document.activeElement.dataset.kb || null"


def tab_through(page: Any) -> set[str]:
    """Press Tab until focus comes back around; the controls it stopped at."""
    reached: list[str] = []
    for _ in range(80):
        page.keyboard.press("Tab")
        key = page.evaluate(ACTIVE)
        if reached and key == reached[0]:
            break
        reached.append(key)
    return set(reached)


UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
  .filter(el => el.getClientRects().length || el.closest('.seg'))
  .filter(el => !(el.labels && el.labels.length)
                && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby'))
  .map(el => el.outerHTML)"""

COLOUR_ONLY = """() => [
  ...[...document.querySelectorAll('.status')]
    .filter(el => !el.querySelector('.word') || !el.querySelector('.word').textContent.trim()
                  || !el.querySelector('.dot').textContent.trim()),
  // a tool call's state and the stream's state are words too (the colour only repeats them)
  ...[...document.querySelectorAll('.tool-state, #conn')].filter(el => !/[a-z]{2,}/.test(el.textContent)),
].map(el => el.outerHTML)"""


def assert_accessible(page: Any, where: str) -> None:
    """Every control on the page is reached by Tab, every input has a label, no status is a colour alone."""
    wanted = set(page.evaluate(FOCUSABLE))
    reached = tab_through(page)
    assert wanted <= reached, f"{where}: not reachable with Tab: {wanted - reached}"
    assert page.evaluate(UNLABELLED) == [], f"{where}: inputs without a label"
    assert page.evaluate(COLOUR_ONLY) == [], f"{where}: a status shown by colour alone"
