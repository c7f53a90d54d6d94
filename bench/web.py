"""The web console in a real headless Chromium: launch-to-status and frame-to-paint.

    python bench/web.py [--runs 5] [--streams 2] [--rate 100] [--deltas 300]

Starts a paced model server here (OpenAI-compatible, streaming ``--deltas``
chunks per answer at ``--rate`` per second) and ``python -m api.http.app``
(the ``openai`` backend pointed at it) on a temporary SQLite file with the
flow of ``bench/web_flows.py`` (two agent steps in a row), opens the
console in Debian's Chromium (Playwright, ``executable_path``) with ``?perf``,
and measures two figures, each beside a baseline from the same run:

- ``launch_to_first_step_status_ms``: from the Launch click (the form's submit)
  to the moment after the first paint that shows a step's status, read from
  the page's clock (``window.batonConsole.perf``). Baseline: the API alone,
  from POST /api/runs to the first step's frame on an SSE stream already open.
- ``frame_to_paint_ms``: for each delta of the followed step, from the
  frame's arrival (the EventSource event) to the first moment after the paint
  that shows it (a task queued from requestAnimationFrame), at ``--rate``
  deltas per second on one step. Baseline: a bare page of the same origin
  appending the same frames to one <pre> (the browser's floor). Target: the
  console's p95 < 100 ms.

The rate each step's deltas actually arrived at in the page is reported
beside the figures. One JSON line per figure.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

import server_process  # beside this script (run as python bench/NAME.py)
import uvicorn

ROOT = Path(__file__).resolve().parents[1]
AUTH: dict[str, str] = {}  # the Authorization header of every request this bench sends (set at start)
FLOW = "bench-stream"
CHROMIUM = os.environ.get("BATON_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


class PacedModel:
    """An OpenAI-compatible server whose every answer streams ``deltas`` chunks at ``rate`` per second.

    Paced against the clock of the answer's start (not by sleeping a fixed
    gap after each chunk), so the rate holds however long a send takes.
    """

    def __init__(self, rate: float, deltas: int) -> None:
        self.rate, self.deltas = rate, deltas
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.base_url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"
        config = uvicorn.Config(self.app, interface="asgi3", lifespan="off", log_level="warning",
                                timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        began = time.monotonic()
        for i in range(self.deltas):
            wait = began + i / self.rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            chunk = {"choices": [{"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": None}]}
            await send({"type": "http.response.body", "body": f"data: {json.dumps(chunk)}\n\n".encode(),
                        "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()


class Server:
    """``python -m api.http.app`` on a free port, its agents answered by ``model_url``."""

    def __init__(self, db_url: str, model_url: str) -> None:
        token_file = Path(db_url.removeprefix("sqlite:///") + ".admin-token")  # beside the store
        self.process, self.url = server_process.start(lambda port: dict(
            BATON_DB=db_url, BATON_AGENT="openai", BATON_OPENAI_BASE_URL=model_url, BATON_MODEL="paced",
            BATON_FLOWS="web_flows", BATON_MAX_ACTIVE_RUNS="0", BATON_AGENT_SLOTS="0",
            PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "bench")])))
        # Access as in use: the admin token of the first start, as a bearer and as the console's cookie.
        AUTH["Authorization"] = f"Bearer {token_file.read_text().strip()}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def _sse(response: httpx.Response) -> Any:
    """The data of each SSE event (JSON), in order."""
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield json.loads(line[6:])


def _launch(url: str, question: str) -> str:
    r = httpx.post(url + "/api/runs", json={"flow": FLOW, "question": question, "band": "small"}, timeout=30,
                   headers=AUTH)
    r.raise_for_status()
    return r.json()["run_id"]


def _wait_end(url: str, run_id: str, timeout: float = 60) -> None:
    with httpx.stream("GET", url + "/api/stream", params={"run_id": run_id, "after": 0},
                      timeout=httpx.Timeout(timeout, connect=5), headers=AUTH) as response:
        for frame in _sse(response):
            if frame.get("step_id") is None and frame.get("run_status") in ("completed", "failed", "cancelled"):
                return
    raise RuntimeError(f"run {run_id} did not end")


def _cancel(url: str, run_id: str) -> None:
    httpx.post(f"{url}/api/runs/{run_id}/cancel", json={"reason": "measured"}, timeout=30, headers=AUTH)
    _wait_end(url, run_id)


def api_launch_to_first_step(url: str) -> float:
    """Milliseconds from POST /api/runs to the first step's frame, on a stream already open."""
    with httpx.stream("GET", url + "/api/stream", timeout=httpx.Timeout(60, connect=5), headers=AUTH) as response:
        frames = _sse(response)
        began = time.perf_counter()
        run_id = _launch(url, "api baseline")
        for frame in frames:
            if frame.get("run_id") == run_id and frame["type"] == "flow_run_step_updated" and frame.get("step_id"):
                elapsed = (time.perf_counter() - began) * 1000
                break
        else:
            raise RuntimeError("no step frame")
    _cancel(url, run_id)
    return elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


RAW_PAGE = """async () => {
  window.__raw = [];
  const node = document.createTextNode('');
  const pre = document.createElement('pre');
  pre.append(node);
  document.body.append(pre);
  let pending = [];
  let scheduled = false;
  const es = new EventSource('/api/stream');
  es.addEventListener('step_delta', (e) => {
    const t = performance.now();
    node.appendData(JSON.parse(e.data).text);
    pending.push(t);
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => setTimeout(() => {
      const now = performance.now();
      for (const p of pending) window.__raw.push(now - p);
      pending = [];
      scheduled = false;
    }, 0));
  });
  await new Promise((resolve) => es.addEventListener('open', resolve));
}"""

RATES = """runId => {
  const byStep = {};
  for (const f of window.batonConsole.feed.ring) {
    if (f.type !== 'step_delta' || f.run_id !== runId) continue;
    (byStep[f.step_id] = byStep[f.step_id] || []).push(f.received);
  }
  return Object.values(byStep).filter(ts => ts.length > 2)
    .map(ts => (ts.length - 1) / ((ts[ts.length - 1] - ts[0]) / 1000));
}"""


def measure(url: str, launches: int, streams: int) -> list[dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        token = AUTH["Authorization"].removeprefix("Bearer ")
        login = httpx.post(url + "/api/login", json={"token": token}, timeout=10)
        context.add_cookies([{"name": "baton_session", "value": login.cookies["baton_session"], "url": url}])
        page = context.new_page()
        page.set_default_timeout(120_000)

        def launch_in_console(question: str) -> str:
            page.goto(url + "/?perf=1#/launch")
            page.wait_for_selector(f"input[name=flow][value={FLOW}]")
            page.evaluate("() => { window.batonConsole.perf.marks = {}; window.batonConsole.perf.paints = []; }")
            page.check(f"input[name=flow][value={FLOW}]")
            page.fill("#focus", question)
            page.click("#launch")
            page.wait_for_function("() => window.batonConsole.perf.marks.firstStepStatus > 0")
            return page.url.rsplit("/", 1)[1]

        launch_ms = []
        for i in range(launches):
            run_id = launch_in_console(f"launch {i}")
            marks = page.evaluate("() => window.batonConsole.perf.marks")
            launch_ms.append(marks["firstStepStatus"] - marks["launchClick"])
            _cancel(url, run_id)

        paints, rates = [], []
        for i in range(streams):
            run_id = launch_in_console(f"stream {i}")
            page.wait_for_selector(".head-status[data-status=completed]")
            paints += page.evaluate("() => window.batonConsole.perf.paints")
            rates += page.evaluate(RATES, run_id)

        api_ms = [api_launch_to_first_step(url) for _ in range(launches)]

        page.goto(url + "/api/health")  # a bare page of the same origin: no console
        page.evaluate(RAW_PAGE)
        for i in range(streams):
            _wait_end(url, _launch(url, f"bare page {i}"))
        raw = page.evaluate("() => window.__raw")
        browser.close()

    def summary(values: list[float]) -> dict[str, float]:
        return {"p50": round(percentile(values, .5), 1), "p95": round(percentile(values, .95), 1),
                "max": round(max(values), 1)}

    return [
        {"figure": "launch_to_first_step_status_ms", "runs": launches, "console": summary(launch_ms),
         "baseline_api_only": summary(api_ms)},
        {"figure": "frame_to_paint_ms", "deltas": len(paints), "rate_per_s_median": round(percentile(rates, .5), 1),
         "console": summary(paints), "baseline_bare_page": summary(raw), "target_p95_ms": 100,
         "ok": percentile(paints, .95) < 100},
    ]


def main(argv: list[str]) -> None:
    launches, streams, rate, deltas = 5, 2, 100.0, 300
    while argv:
        flag = argv.pop(0)
        if flag == "--runs":
            launches = int(argv.pop(0))
        elif flag == "--streams":
            streams = int(argv.pop(0))
        elif flag == "--rate":
            rate = float(argv.pop(0))
        elif flag == "--deltas":
            deltas = int(argv.pop(0))
        else:
            raise SystemExit(f"unknown argument {flag!r}\n{__doc__}")
    model = PacedModel(rate, deltas)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            server = Server(f"sqlite:///{tmp}/web.db", model.base_url)
            try:
                for line in measure(server.url, launches, streams):
                    line.update(set_rate_per_s=rate, deltas_per_step=deltas, cpus=os.cpu_count(),
                                load_avg_1m=round(os.getloadavg()[0], 2))
                    print(json.dumps(line), flush=True)
            finally:
                server.stop()
    finally:
        model.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
