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
