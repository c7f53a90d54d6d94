"""Frame latency from append to SSE clients, and the projection rebuild rate beside its baseline.

    python bench/api.py [--runs 20] [--clients 1,100] [--repeat 5] [--pg]

Starts a real server (``python -m api.http.app`` in a subprocess, offline agents)
on a temporary SQLite file (and, with ``--pg``, on a temporary PostgreSQL
database), connects N SSE clients spread over a few worker processes (so
the clients' own parsing does not queue behind itself), launches runs of a
small catalogue flow over HTTP, and measures, for every durable frame at
every client, ``arrival time - recorded_at`` of the event behind it
(``recorded_at`` is taken by the store just before its commit, on the same
machine's clock). Ephemeral step_delta frames flow too, as they would in
use, but are not timed (they have no position).

Then the projection rebuild rate against the raw scan of the same table,
with ``bench/projections.py``'s ``measure_rebuild`` (same run, same file).

One JSON line per figure. Targets: p99 < 50 ms at 100 clients; rebuild >= 25%
of the raw scan rate.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

import server_process  # beside this script (run as python bench/NAME.py)

ROOT = Path(__file__).resolve().parents[1]
FLOW, BAND = "investigate", "small"
CLIENTS_PER_WORKER = 50


def _load_projections_bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_projections", ROOT / "bench" / "projections.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the server --------------------------------------------------------------------------------


class Server:
    """``python -m api.http.app`` on a free port with offline agents."""

    def __init__(self, db_url: str) -> None:
        self._tokens = tempfile.TemporaryDirectory()
        token_file = Path(self._tokens.name) / "admin-token"
        self.process, self.url = server_process.start(lambda port: dict(
            BATON_DB=db_url, BATON_AGENT="offline", BATON_OFFLINE_DELAY_S="0.05", BATON_MAX_ACTIVE_RUNS="0",
            BATON_AGENT_SLOTS="0", BATON_TOKEN_FILE=str(token_file), PYTHONPATH=str(ROOT)))
        # Access as in use: the admin token the first start wrote (clients send it as a bearer).
        self.token = token_file.read_text().strip()

    def stop(self) -> None:
        self._tokens.cleanup()
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()


# -- the clients (in worker processes) -----------------------------------------------------------


_ID = re.compile(rb"(?m)^id: (\d+)$")


async def _client(url: str, token: str, ready: asyncio.Event, arrivals: dict[int, float]) -> None:
    # A bare asyncio connection that scans raw bytes for id lines: the clients
    # share the machine with the server, and an HTTP library's per-chunk cost
    # would be timed as the server's. (Chunk-size lines are hex digits alone:
    # they never match ``id: N``.)
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET /api/stream HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n"
                 f"Authorization: Bearer {token}\r\n\r\n".encode())
    await writer.drain()
    status = await reader.readline()
    assert b" 200 " in status, status
    ready.set()
    tail = b""
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            now = time.time()
            data = tail + chunk
            cut = data.rfind(b"\n\n") + 2
            if cut < 2:
                tail = data
                continue
            tail = data[cut:]
            for match in _ID.finditer(data, 0, cut):
                arrivals.setdefault(int(match.group(1)), now)  # frames of one event share an id
    finally:
        writer.close()


async def _worker_main(url: str, token: str, n: int, conn: Any) -> None:
    arrivals: list[dict[int, float]] = [{} for _ in range(n)]
    readies = [asyncio.Event() for _ in range(n)]
    tasks = [asyncio.create_task(_client(url, token, readies[i], arrivals[i])) for i in range(n)]
    await asyncio.gather(*(r.wait() for r in readies))
    conn.send("ready")
    head = await asyncio.to_thread(conn.recv)
    deadline = time.monotonic() + 60
    while any(max(seen, default=0) < head for seen in arrivals) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    conn.send(arrivals)


def _worker(url: str, token: str, n: int, conn: Any) -> None:
    asyncio.run(_worker_main(url, token, n, conn))


# -- measuring --------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure_latency(server: Server, db_url: str, clients: int, runs: int) -> dict[str, Any]:
    """Launch ``runs`` runs with ``clients`` SSE clients connected; latency of every durable frame."""
    from eventstore import open_store

    ctx = mp.get_context("spawn")
    workers = []
    left = clients
    while left:
        n = min(CLIENTS_PER_WORKER, left)
        left -= n
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_worker, args=(server.url, server.token, n, child), daemon=True)
        process.start()
        workers.append((process, parent))
    for _, conn in workers:
        assert conn.poll(60) and conn.recv() == "ready"

    began = time.monotonic()
    with httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {server.token}"}) as http:
        start = http.get("/api/health").json()["head"]
        run_ids = []
        for _ in range(runs):
            r = http.post("/api/runs", json={"flow": FLOW, "band": BAND, "question": "Why is the build slow?"})
            run_ids.append(r.json()["run_id"])
            time.sleep(0.05)  # a steady trickle of launches, not one burst
        deadline = time.monotonic() + 120
        for run_id in run_ids:
            while http.get(f"/api/runs/{run_id}").json()["run"]["status"] not in ("completed", "failed"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"run {run_id} did not end")
                time.sleep(0.05)
        head = http.get("/api/health").json()["head"]
    wall_s = time.monotonic() - began
    for _, conn in workers:
        conn.send(head)
    arrivals: list[dict[int, float]] = []
    for process, conn in workers:
        arrivals += conn.recv()
        process.join(10)

    store = open_store(db_url)
    try:
        recorded = {e.position: e.recorded_at for e in store.read_all(after=start) if e.position <= head}
    finally:
        store.close()
    latencies = [(t - recorded[pid]) * 1000 for seen in arrivals for pid, t in seen.items() if pid in recorded]
    frames_per_client = [len([p for p in seen if p > start]) for seen in arrivals]
    return {
        "clients": clients,
        "events": len(recorded),
        "events_per_s": round(len(recorded) / wall_s),
        "frames_timed": len(latencies),
        "min_frames_per_client": min(frames_per_client),
        "p50_ms": round(_percentile(latencies, 0.50), 2),
        "p99_ms": round(_percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2),
    }


def run_backend(db_url: str, clients: list[int], runs: int, repeat: int) -> None:
    """One JSON line per client count: the median round (by p99) of ``repeat``, and every round's p99.

    Rounds are repeated because the figure is a tail on a shared machine:
    another process's burst lands in one round, not in all of them.
    """
    server = Server(db_url)
    try:
        for n in clients:
            rounds = [measure_latency(server, db_url, n, runs) for _ in range(repeat)]
            rounds.sort(key=lambda r: r["p99_ms"])
            median = rounds[len(rounds) // 2]
            print(json.dumps({
                "bench": "api.sse_latency",
                "backend": "postgresql" if db_url.startswith("postgresql") else "sqlite",
                "runs": runs, **median,
                "p99_ms_rounds": [r["p99_ms"] for r in rounds],
                "target_p99_ms": 50,
                "cpus": os.cpu_count(),
                "load_avg_1m": round(os.getloadavg()[0], 2),
            }), flush=True)
    finally:
        server.stop()


def main(argv: list[str]) -> None:
    runs, clients, pg, repeat = 20, [1, 100], False, 5
    while argv:
        flag = argv.pop(0)
        if flag == "--runs":
            runs = int(argv.pop(0))
        elif flag == "--clients":
            clients = [int(c) for c in argv.pop(0).split(",")]
        elif flag == "--repeat":
            repeat = int(argv.pop(0))
        elif flag == "--pg":
            pg = True
        else:
            raise SystemExit(f"unknown argument {flag!r}\n{__doc__}")
    projections = _load_projections_bench()
    with tempfile.TemporaryDirectory() as tmp:
        run_backend(f"sqlite:///{tmp}/api.db", clients, runs, repeat)
        print(json.dumps(projections.measure_rebuild(f"sqlite:///{tmp}/rebuild.db")), flush=True)
    if pg:
        temporary = projections._temporary_pg()
        if temporary is not None:
            url, drop = temporary
            try:
                run_backend(url, clients, runs, repeat)
            finally:
                drop()


if __name__ == "__main__":
    main(sys.argv[1:])
