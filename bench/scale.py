"""How baton's costs grow with the log and the queue: stores of 10k, 100k and 1M events.

    .venv/bin/python bench/scale.py [--backend sqlite|postgresql|both] [--sizes 10k,100k,1M]
                                    [--parts start,reads,verify,rebuild,resume,plan,approvals]
                                    [--parked 100,1000,10000] [--rounds 3] [--cache DIR]

Stores. A template of each kind of run is recorded once by the real engine
(``bench/scale_flows.py``: ``scale-chain``, eight code steps with 200-character
outputs, and ``scale-review``, a step, a person's approval, a last step; each
finished run ends with its report). The generator then writes copies of them,
each with its own run id and event ids, eight runs interleaved as concurrent
runs would be, with the hash chain computed exactly as the store computes it
(``eventstore.chain.event_hash``): 80% finished chains, 20% finished reviews,
and 25 unfinished runs spread through the log (20 paused at their approval,
5 stopped mid-chain, for the recovery to drive). Rows go in by bulk insert
(executemany in one transaction on SQLite, COPY on PostgreSQL) into a table
made by ``open_store``; then the read tables are built with
``projections.rebuild`` and ``store.verify()`` must find nothing. Stores are
kept between runs (``--cache``, default ``/tmp/baton-bench-scale``, outside
the repository; PostgreSQL: databases ``baton_scale_*``) and every
measurement works on a copy (a file copy; ``CREATE DATABASE ... TEMPLATE``),
so the cached ones never change. ``--drop-cache`` removes them all.

Figures, for each size (one JSON line each, with ``growth``: the exponent k
of cost ~ n^k between the sizes, and its class: O(1) below 0.2, O(n) from 0.8):

- ``start``: a new server process (``bench/scale_server.py``: what ``baton
  serve`` does) from spawn to listening with the engine answering, its
  phases apart (interpreter, imports, open, projector, catch-up,
  recovery, HTTP); a fresh copy of the store each round;
- ``reads``: GET /api/runs and GET /api/runs/{id} (a finished run) latency
  over HTTP, and launch -> first step completed (POST, then the step's frame
  on an open SSE stream);
- ``resume``: an SSE client resuming from position 0 (``?after=0``), frames/s
  and events/s until it reaches the head, beside the baseline: the driver's
  own scan of the same rows (position, stream, type, data), rows/s;
- ``verify``: ``baton replay --verify`` in a process of its own: wall time,
  CPU, peak RSS (``/usr/bin/time``), events/s, beside ``baton flows`` (the
  process start-up alone);
- ``rebuild``: ``baton projections rebuild`` likewise.

Queue figures (stores of N runs parked at an approval, no other runs):

- ``plan``: with one SSE client connected, 20 runs of ``scale-chain``
  (after one to warm up) launched one after another over HTTP: the POST's
  latency and launch -> completed (median, best, p95), and per launch the
  server's CPU and the bytes the client received (``plan_delta`` frames
  apart), totals over the 20 divided by 20, at N = 100, 1,000, 10,000;
- ``approvals`` (``--rounds`` drains of each kind, alternating, then their best and
  median): 500 of 1,000 parked runs approved over HTTP by 8 client
  threads, each on a keep-alive socket of its own (``Poster``: the load
  generator's own CPU is printed per run beside the server's); runs/s from
  the first POST to the last run completed: with one SSE client connected
  (completion seen by its frames; the engine then also builds a plan frame
  per change), and with none (completion counted in the store by the bench).

Baselines in the same run: the driver's raw scan for the resume, ``baton
flows`` (the process start-up alone) for the CLI figures; for each approvals
drain, measured just before it on the same server and store, the HTTP floor
(the same 8 sockets POSTing a body the server refuses before the engine:
its requests/s) and the database's own commit rate (8 connections on
PostgreSQL, one on SQLite with baton's pragmas, each committing a one-row
INSERT): the drain is printed as a ratio to each, which moves less than
runs/s with this machine's phases. Otherwise these are baton's own growth
curves, each read against the same figure at the other sizes (and the
targets of the issue they were written for).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec

_HERE = Path(__file__).resolve().parent
ROOT = _HERE.parent
sys.path[:0] = [str(ROOT), str(_HERE)]

from eventstore import open_store  # noqa: E402
from eventstore.chain import event_hash  # noqa: E402
from eventstore.store import new_event_id  # noqa: E402

PG_ADMIN = {"host": "/var/run/postgresql", "user": "root", "dbname": "postgres"}
GEN = 1  # bump when the generated stores change shape: cached ones are then made again
LANES = 8  # runs interleaved in the log, as concurrent runs would be
PAUSED, STOPPED = 20, 5  # unfinished runs in a "mix" store
PLAN_LAUNCHES = 20
APPROVALS = 500
SERVER = _HERE / "scale_server.py"
SPY_DIR = ""  # --spy: where py-spy's raw stacks of the server go (resume, plan, approvals)
_COLS = "position, event_id, stream_id, version, type, data, metadata, recorded_at, hash"


def parse_size(text: str) -> int:
    text = text.strip().lower().replace("_", "").replace(",", "")
    mult = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("km")) * mult)


def label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def emit(line: dict[str, Any]) -> None:
    print(json.dumps({"bench": "scale", **line}), flush=True)


# -- templates: runs recorded by the real engine ----------------------------------------------


Template = list[tuple[str, str, str, float]]  # (type, data, metadata, seconds after the launch)


def record_templates() -> dict[str, tuple[str, Template]]:
    """One finished chain, one finished (approved) review, one paused review: (run id, events)."""
    from actors.config import EngineConfig
    from actors.engine import Engine
    from flows.catalog import FlowRegistry

    import scale_flows

    registry = FlowRegistry([scale_flows.scale_chain, scale_flows.scale_review])
    with tempfile.TemporaryDirectory(prefix="baton-scale-template-") as tmp:
        store = open_store(f"sqlite:///{tmp}/t.db")
        engine = Engine(store, registry, EngineConfig(max_active_runs=0, agent_slots=0)).start()
        try:
            chain = engine.launch("scale-chain", "How does the log grow?").run_id
            engine.wait(chain)
            review = engine.launch("scale-review", "Ship it?").run_id
            engine.wait(review, lambda s: s.status == "paused")
            engine.approve(review, "gate", by="bench", comment="looks right")
            engine.wait(review)
            paused = engine.launch("scale-review", "Ship it?").run_id
            engine.wait(paused, lambda s: s.status == "paused")
        finally:
            engine.stop()
        out = {}
        for name, run_id in (("chain", chain), ("review", review), ("paused", paused)):
            records = store.read_stream(f"run-{run_id}")
            start = records[0].recorded_at
            rows = store._backend.query(  # the stored text, byte for byte as hashed
                "SELECT type, data, metadata, recorded_at FROM events WHERE stream_id = ? ORDER BY version",
                (f"run-{run_id}",))
            out[name] = (run_id, [(t, d, m, at - start) for t, d, m, at in rows])
        store.close()
    chain_events = out["chain"][1]
    # stopped mid-chain: up to the fifth step's start (its process died there)
    starts = [i for i, e in enumerate(chain_events) if e[0] == "StepStarted"]
    out["stopped"] = (out["chain"][0], chain_events[: starts[4] + 1])
    return out


def run_plan(kind: str, events: int, templates: dict[str, tuple[str, Template]]) -> list[str]:
    """The kinds of the runs of a store, in launch order."""
    if kind.startswith("parked"):
        return ["paused"] * events  # ``events`` is the number of parked runs here
    sizes = {k: len(v[1]) for k, v in templates.items()}
    unfinished = PAUSED * sizes["paused"] + STOPPED * sizes["stopped"]
    mean = 0.8 * sizes["chain"] + 0.2 * sizes["review"]
    finished = max(0, round((events - unfinished) / mean))
    rng = random.Random(events)
    kinds = ["chain" if rng.random() < 0.8 else "review" for _ in range(finished)]
    total = len(kinds) + PAUSED + STOPPED
    for i, name in enumerate(["paused"] * PAUSED + ["stopped"] * STOPPED):
        kinds.insert(min(len(kinds), (i + 1) * total // (PAUSED + STOPPED + 1)), name)
    return kinds


def generate_rows(kinds: list[str], templates: dict[str, tuple[str, Template]]) -> Iterator[tuple]:
    """Rows of the events table, runs interleaved ``LANES`` at a time, chained as the store chains them."""
    from ulid import ULID

    base = time.time() - 86400.0
    lanes: list[deque] = []
    todo = iter(kinds)
    position = 0
    clock = base

    def start_run() -> deque | None:
        kind = next(todo, None)
        if kind is None:
            return None
        template_id, events = templates[kind]
        run_id = str(ULID())
        stream = f"run-{run_id}"
        return deque((stream, template_id, run_id, i + 1, e) for i, e in enumerate(events))

    heads: dict[str, str] = {}
    for _ in range(LANES):
        lane = start_run()
        if lane is not None:
            lanes.append(lane)
    while lanes:
        for lane in list(lanes):
            stream, template_id, run_id, version, (type_, data, metadata, _) = lane.popleft()
            data = data.replace(template_id, run_id)
            metadata = metadata.replace(template_id, run_id)
            previous = heads.pop(stream, "")
            hash_ = event_hash(previous, type_, data)
            position += 1
            clock += 0.002
            yield (position, new_event_id(), stream, version, type_, data, metadata, clock, hash_)
            if lane:
                heads[stream] = hash_
            else:
                lanes.remove(lane)
                fresh = start_run()
                if fresh is not None:
                    lanes.append(fresh)


# -- stores: cached goldens and their copies --------------------------------------------------


class Stores:
    """Makes (once) and copies (per measurement) the stores of one backend."""

    def __init__(self, backend: str, cache: Path, templates: Any, prefix: str = "baton_scale") -> None:
        self.backend = backend
        self.cache = cache
        self.prefix = prefix  # of the cached stores' names (files and databases)
        self._templates = templates
        self._clones: list[str] = []

    def templates(self) -> dict[str, tuple[str, Template]]:
        if callable(self._templates):
            self._templates = self._templates()
        return self._templates

    def golden(self, kind: str, n: int) -> str:
        """The cached store's URL (made now if missing)."""
        from projections.tables import PROJECTION_VERSION  # read tables of another version: another store

        name = f"{self.prefix}_{kind}_{label(n).lower()}_g{GEN}_p{PROJECTION_VERSION}"
        if self.backend == "sqlite":
            path = self.cache / f"{name}.db"
            if not path.exists():
                tmp = self.cache / f"{name}.tmp.db"
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{tmp}{suffix}").unlink(missing_ok=True)
                self._make(f"sqlite:///{tmp}", kind, n)
                tmp.rename(path)
            return f"sqlite:///{path}"
        if not pg_exists(name):
            tmp = f"{name}_tmp"
            pg_admin(f'DROP DATABASE IF EXISTS "{tmp}" WITH (FORCE)', f'CREATE DATABASE "{tmp}"')
            self._make(pg_url(tmp), kind, n)
            pg_admin(f'ALTER DATABASE "{tmp}" RENAME TO "{name}"')
        return pg_url(name)

    def _make(self, url: str, kind: str, n: int) -> None:
        t0 = time.perf_counter()
        kinds = run_plan(kind, n, self.templates())
        store = open_store(url)  # the schema, exactly as the store makes it
        store.close()
        rows = generate_rows(kinds, self.templates())
        count = 0
        if self.backend == "sqlite":
            conn = sqlite3.connect(url.removeprefix("sqlite:///"))
            conn.execute("PRAGMA synchronous = OFF")
            while True:
                chunk = [r for _, r in zip(range(100_000), rows)]
                if not chunk:
                    break
                with conn:
                    conn.executemany(f"INSERT INTO events ({_COLS}) VALUES (?,?,?,?,?,?,?,?,?)", chunk)
                count += len(chunk)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
        else:
            import psycopg

            with psycopg.connect(pg_conninfo(url), autocommit=True) as conn:
                with conn.cursor() as cur:
                    with cur.copy(f"COPY events ({_COLS}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
                            count += 1
                conn.execute("SELECT setval('events_position_seq', (SELECT max(position) FROM events))")
                conn.execute("VACUUM ANALYZE events")
        t1 = time.perf_counter()
        from projections import rebuild

        store = open_store(url)
        try:
            stats = rebuild(store)
            t2 = time.perf_counter()
            problems = store.verify()
            if problems:
                raise RuntimeError(f"the generated store does not verify: {problems[:3]}")
        finally:
            store.close()
        emit({"backend": self.backend, "made": kind, "events": count, "runs": len(kinds),
              "insert_s": round(t1 - t0, 1), "rebuild_s": round(stats.seconds, 1),
              "verify_s": round(time.perf_counter() - t2, 1)})

    @contextmanager
    def copy(self, kind: str, n: int) -> Iterator[str]:
        """A throw-away copy of the cached store."""
        golden = self.golden(kind, n)
        if self.backend == "sqlite":
            with tempfile.TemporaryDirectory(prefix="baton-scale-copy-", dir=self.cache) as tmp:
                shutil.copyfile(golden.removeprefix("sqlite:///"), f"{tmp}/copy.db")
                yield f"sqlite:///{tmp}/copy.db"
            return
        source = pg_name(golden)
        name = f"baton_scale_copy_{uuid.uuid4().hex[:8]}"
        pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
        try:
            yield pg_url(name)
        finally:
            pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_url(name: str) -> str:
    return f"postgresql+psycopg://{PG_ADMIN['user']}@/{name}?host={PG_ADMIN['host']}"


def pg_name(url: str) -> str:
    from sqlalchemy.engine import make_url

    return str(make_url(url).database)


def pg_conninfo(url: str) -> str:
    name = pg_name(url)
    return f"host={PG_ADMIN['host']} user={PG_ADMIN['user']} dbname={name}"


def pg_admin(*statements: str) -> None:
    import psycopg

    with psycopg.connect(**PG_ADMIN, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def pg_exists(name: str) -> bool:
    import psycopg

    with psycopg.connect(**PG_ADMIN, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


# -- a server process and its clients ---------------------------------------------------------


class Server:
    """``bench/scale_server.py`` on a store: its start-up phases, its URL, its CPU."""

    def __init__(self, url: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
        env.update(BATON_DB=url, BATON_AGENT="offline", BATON_PORT=str(self.port), BATON_MAX_ACTIVE_RUNS="0",
                   BATON_AGENT_SLOTS="0", BATON_FLOWS="scale_flows", BATON_INSECURE_NO_AUTH="1",
                   PYTHONPATH=os.pathsep.join([str(ROOT), str(_HERE)]), BENCH_SPAWN=repr(time.time()))
        self.process = subprocess.Popen([sys.executable, str(SERVER)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line:
            err = self.process.stderr.read() if self.process.stderr else ""
            raise RuntimeError(f"the server did not start: {err[-2000:]}")
        self.phases = json.loads(line)
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for _ in self.process.stderr:
            pass

    def cpu(self) -> float:
        """The server's CPU seconds so far (user + system)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @contextmanager
    def spied(self, name: str) -> Iterator[None]:
        """py-spy records this server (raw stacks, GIL holder only) while the block runs, if ``SPY_DIR`` is set."""
        if not SPY_DIR:
            yield
            return
        out = Path(SPY_DIR) / f"{name}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-r", "250", "-f", "raw",
                                "--gil", "-o", str(out), "--pid", str(self.process.pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # py-spy attaches
        try:
            yield
        finally:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Poster:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads the answer, over a bare socket.

    The approvals drain's load generator. httpx spent 1.4-1.5 ms of the bench process's CPU per
    approval (request building, its transport's locks and events, response models): on a 2-CPU
    machine that shares the server's CPUs, the load generator took a third of what the drain
    measures. This one sends pre-encoded bytes and parses only the status line and Content-Length.
    """

    def __init__(self, base: str) -> None:
        self.host, port = base.removeprefix("http://").split(":")
        self.sock = socket.create_connection((self.host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POST ``body`` (JSON) to ``path``: (status, response body)."""
        self.sock.sendall(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.host.encode(), len(body), body))
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = next((int(line.split(b":", 1)[1]) for line in lines[1:]
                       if line[:15].lower() == b"content-length:"), None)
        if length is None:
            raise RuntimeError(f"no Content-Length in the answer to POST {path}: {head[:300]!r}")
        while len(self.buf) < length:
            self._more()
        answer, self.buf = self.buf[:length], self.buf[length:]
        return status, answer

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


class Stream:
    """One SSE client in a thread: every frame's type, run, step and size, as it arrives."""

    def __init__(self, base: str, query: str = "") -> None:
        host, port = base.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)))
        self.sock.sendall(f"GET /api/stream{query} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
                          .encode())
        self.bytes = 0
        self.plan_bytes = 0
        self.frames: list[tuple[float, str, str, Any, Any]] = []  # (arrival, type, run_id, step_id, status)
        self.cond = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        tail = b""
        decode = msgspec.json.decode
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                with self.cond:
                    self.closed = True
                    self.cond.notify_all()
                return
            now = time.perf_counter()
            with self.cond:
                self.bytes += len(chunk)
            data = tail + chunk
            cut = data.rfind(b"\n\n") + 2
            tail = data[cut:] if cut >= 2 else data
            if cut < 2:
                continue
            got = []
            for block in data[:cut].split(b"\n\n"):
                if b"\ndata: " not in block and not block.startswith(b"data: "):
                    continue
                size = len(block) + 2
                kind = block.split(b"event: ", 1)[1].split(b"\n", 1)[0].decode() if b"event: " in block else ""
                body = decode(block.split(b"data: ", 1)[1])
                got.append((now, kind, body.get("run_id"), body.get("step_id"), body.get("status"), size))
            with self.cond:
                for now_, kind, run_id, step_id, status, size in got:
                    if kind in ("plan_updated", "plan_delta"):
                        self.plan_bytes += size
                    self.frames.append((now_, kind, run_id, step_id, status))
                self.cond.notify_all()

    def wait_for(self, test: Any, timeout: float = 60.0, start: int = 0) -> tuple[float, int]:
        """(arrival, index) of the first frame from ``start`` on that passes ``test``."""
        deadline = time.monotonic() + timeout
        with self.cond:
            i = start
            while True:
                while i < len(self.frames):
                    if test(self.frames[i]):
                        return self.frames[i][0], i
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise TimeoutError("the awaited frame did not come")
                self.cond.wait(left)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


def resume_from_zero(base: str, head: int) -> dict[str, float]:
    """An SSE client resuming at position 0, reading raw bytes until the id of ``head``: its rate."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    t0 = time.perf_counter()
    sock.sendall(f"GET /api/stream?after=0 HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
                 .encode())
    frames = received = 0
    tail = b""
    target = f"\nid: {head}\n".encode()
    try:
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("the stream ended before the head")
            received += len(chunk)
            data = tail + chunk
            frames += data.count(b"\nevent: ") - tail.count(b"\nevent: ")
            if target in data:
                break
            tail = data[-64:]
    finally:
        sock.close()
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "frames": frames, "bytes": received, "frames_per_s": frames / wall,
            "events_per_s": head / wall}


def raw_scan(url: str) -> float:
    """The baseline of a resume: the driver's own scan of every row a frame needs (rows/s), no store code."""
    sql = "SELECT position, stream_id, type, data FROM events ORDER BY position"
    t0 = time.perf_counter()
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        rows = sum(1 for _ in conn.execute(sql))
        conn.close()
    else:
        import psycopg

        with psycopg.connect(pg_conninfo(url)) as conn, conn.cursor(name="scan") as cur:
            cur.itersize = 5000
            cur.execute(sql)
            rows = sum(1 for _ in cur)
    return rows / (time.perf_counter() - t0)


def post(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.post(path, json=body)
    if answer.status_code >= 300:
        raise RuntimeError(f"POST {path}: {answer.status_code} {answer.text[:300]}")
    return answer.json()


def summary(values: list[float], digits: int = 2) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return {"median": round(statistics.median(ordered), digits), "best": round(ordered[0], digits),
            "p95": round(p95, digits)}


def wait4(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str, float]:
    """Run ``cmd`` under ``/usr/bin/time``; (wall seconds, peak RSS in MB, its output, CPU seconds).

    Through ``time`` rather than our own ``wait4``: Linux starts a child's
    peak RSS at its parent's RSS when it forks, and this process holds far
    more than ``time`` does.
    """
    with tempfile.TemporaryDirectory(prefix="baton-scale-time-") as tmp:
        report = Path(tmp) / "time.txt"
        t0 = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", "-o", str(report), *cmd], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - t0
        text = done.stdout.decode(errors="replace")
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[-2:])} exited {done.returncode}: {text[-1500:]}")
        rss_kb, user, system = report.read_text().split()[-3:]
    return wall, int(rss_kb) / 1024, text, float(user) + float(system)


def cli_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    env.update(BATON_DB=url, BATON_FLOWS="scale_flows", PYTHONPATH=os.pathsep.join([str(ROOT), str(_HERE)]))
    return env


# -- the measurements -------------------------------------------------------------------------


def measure_start(stores: Stores, n: int, rounds: int) -> dict[str, Any]:
    phases = []
    for _ in range(rounds):
        with stores.copy("mix", n) as url:
            server = Server(url)
            server.stop()
            phases.append(server.phases)
    keys = ["ready", "cpu", "startup", "imports", "open", "projector", "catch_up", "recovery", "http"]
    return {"figure": "start", "unit": "ms", **{k: round(statistics.median(p[k] for p in phases) * 1000, 1)
                                                 for k in keys},
            "ready_best": round(min(p["ready"] for p in phases) * 1000, 1), "value": statistics.median(
                p["recovery"] for p in phases), "growth_of": "recovery", "rounds": rounds}


def measure_reads(stores: Stores, n: int, rounds: int, parts: set[str]) -> Iterator[dict[str, Any]]:
    with stores.copy("mix", n) as url:
        server = Server(url)
        try:
            with httpx.Client(base_url=server.base, timeout=120) as client:
                if "reads" in parts:
                    client.get("/api/runs")
                    listed = []
                    for _ in range(30):
                        t0 = time.perf_counter()
                        page = client.get("/api/runs").json()
                        listed.append((time.perf_counter() - t0) * 1000)
                    finished = [r["run_id"] for r in page["runs"] if r["status"] == "completed"]
                    got = []
                    for i in range(30):
                        t0 = time.perf_counter()
                        client.get(f"/api/runs/{finished[i % len(finished)]}").raise_for_status()
                        got.append((time.perf_counter() - t0) * 1000)
                    yield {"figure": "get_runs", "unit": "ms", **summary(listed), "value": statistics.median(listed)}
                    yield {"figure": "get_run", "unit": "ms", **summary(got), "value": statistics.median(got)}
                    stream = Stream(server.base)
                    time.sleep(0.2)  # the stream's request reaches the hub
                    firsts = []
                    for i in range(max(rounds, 5) + 1):
                        t0 = time.perf_counter()
                        run_id = post(client, "/api/runs", {"flow": "scale-chain", "question": "q"})["run_id"]
                        at, _ = stream.wait_for(lambda f, r=run_id: f[2] == r and f[3] == "s0"
                                                and f[4] == "completed")
                        if i:
                            firsts.append((at - t0) * 1000)
                    stream.close()
                    yield {"figure": "launch_to_first_step", "unit": "ms", **summary(firsts),
                           "value": statistics.median(firsts)}
                if "resume" in parts:
                    head = int(client.get("/api/health").json()["head"])
                    with server.spied(f"resume-{stores.backend}-{label(n)}"):
                        result = resume_from_zero(server.base, head)
                    baseline = raw_scan(url)
                    yield {"figure": "sse_resume_from_0", "unit": "frames/s", "head": head,
                           "raw_scan_rows_per_s": round(baseline), "ratio_to_raw": round(
                               result["frames_per_s"] / baseline, 3),
                           "frames": result["frames"], "mb": round(result["bytes"] / 1e6, 1),
                           "wall_s": round(result["wall_s"], 2), "events_per_s": round(result["events_per_s"]),
                           "frames_per_s": round(result["frames_per_s"]), "value": result["wall_s"]}
        finally:
            server.stop()


def measure_cli(stores: Stores, n: int, command: list[str], figure: str) -> dict[str, Any]:
    """A ``baton`` command in a process of its own, and ``baton flows`` (start-up alone) just before it.

    ``net`` = the command's wall time less ``baton flows``'s: what the work
    itself took (the process start and imports cost ~0.5-1.5 s here).
    """
    with stores.copy("mix", n) as url:
        baton = str(Path(sys.executable).parent / "baton")
        base_wall, base_rss, _, base_cpu = wait4([baton, "flows"], cli_env(url))
        wall, rss, text, cpu = wait4([baton, *command], cli_env(url))
    net = max(wall - base_wall, 1e-3)
    line: dict[str, Any] = {"figure": figure, "unit": "s", "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                            "startup_wall_s": round(base_wall, 2), "startup_cpu_s": round(base_cpu, 2),
                            "net_s": round(net, 2), "peak_rss_mb": round(rss), "startup_rss_mb": round(base_rss),
                            "events_per_s": round(n / net), "value": net}
    if figure == "verify":
        line["ok"] = "hash chains intact" in text
    return line


def growth(points: list[tuple[int, float]]) -> dict[str, Any]:
    """The exponent k of cost ~ n^k between the two largest sizes (and the whole range), and its class."""
    points = sorted(p for p in points if p[1] and p[1] > 0)
    if len(points) < 2:
        return {}
    (n1, c1), (n2, c2) = points[-2], points[-1]
    k = math.log(c2 / c1) / math.log(n2 / n1)
    k_all = math.log(points[-1][1] / points[0][1]) / math.log(points[-1][0] / points[0][0])
    klass = "O(1)" if k < 0.2 else "O(n)" if k >= 0.8 else f"O(n^{k:.1f})"
    return {"growth_exponent": round(k, 2), "growth_exponent_all": round(k_all, 2), "growth": klass}


def measure_plan(stores: Stores, parked: int) -> dict[str, Any]:
    with stores.copy("parked", parked) as url:
        server = Server(url)
        try:
            stream = Stream(server.base)
            time.sleep(0.2)
            with httpx.Client(base_url=server.base, timeout=120) as client:
                rows = []
                start = 0
                for i in range(PLAN_LAUNCHES + 1):
                    if i == 1:  # the first launch warms up
                        with stream.cond:
                            b0, p0 = stream.bytes, stream.plan_bytes
                        c0 = server.cpu()
                    with stream.cond:
                        start = len(stream.frames)
                    t0 = time.perf_counter()
                    run_id = post(client, "/api/runs", {"flow": "scale-chain", "question": "q"})["run_id"]
                    t1 = time.perf_counter()
                    at, _ = stream.wait_for(lambda f, r=run_id: f[2] == r and f[3] is None and f[4] == "completed",
                                            start=start)
                    if i:
                        rows.append(((t1 - t0) * 1000, (at - t0) * 1000))
                time.sleep(0.2)  # the frames the last run's end sets off (the plan) arrive too
                with stream.cond:
                    got, plan = stream.bytes - b0, stream.plan_bytes - p0
                cpu = server.cpu() - c0
            stream.close()
        finally:
            server.stop()
    post_ms, done_ms = zip(*rows)
    launches = len(rows)
    return {"figure": "plan_launch", "parked": parked, "launches": launches, "post_ms": summary(list(post_ms)),
            "launch_to_completed_ms": summary(list(done_ms)),
            "server_cpu_ms_per_launch": round(cpu / launches * 1000, 1),
            "client_bytes_per_launch": round(got / launches), "plan_bytes_per_launch": round(plan / launches),
            "server_start_ms": round(server.phases["ready"] * 1000),
            "recovery_ms": round(server.phases["recovery"] * 1000)}


FLOOR_POSTS = 2000  # the HTTP floor's requests, over the drain's sockets
FLOOR_COMMITS = 1000  # the database floor's commits, over its connections


def http_floor(server: Server, threads: int) -> dict[str, float]:
    """``threads`` keep-alive sockets POSTing an approval whose body the server refuses (422) before the
    engine: what its HTTP layer alone answers per second, and its CPU per request."""
    each = FLOOR_POSTS // threads

    def worker() -> None:
        poster = Poster(server.base)
        try:
            for _ in range(each):
                status, _ = poster.post("/api/runs/x/steps/gate/approve", b'{"comment":1}')
                assert status == 422, status
        finally:
            poster.close()

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    c0, t0 = server.cpu(), time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall, cpu = time.perf_counter() - t0, server.cpu() - c0
    return {"http_floor_rps": round(each * threads / wall), "http_floor_cpu_ms": round(cpu / (each * threads) * 1000, 3)}


def db_floor(url: str, backend: str, threads: int) -> float:
    """The database's own commits/s on the drain's store: one-row INSERTs, each its own transaction, from
    ``threads`` connections on PostgreSQL and one on SQLite (a single writer), with baton's pragmas."""
    if backend == "sqlite":
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS bench_floor (id TEXT PRIMARY KEY, body TEXT)")
        t0 = time.perf_counter()
        for _ in range(FLOOR_COMMITS):
            conn.execute("INSERT INTO bench_floor VALUES (?, ?)", (uuid.uuid4().hex, "x" * 200))
        wall = time.perf_counter() - t0
        conn.close()
        return FLOOR_COMMITS / wall
    import psycopg

    with psycopg.connect(pg_conninfo(url), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_floor (id text PRIMARY KEY, body text)")
    each = FLOOR_COMMITS // threads

    def worker() -> None:
        with psycopg.connect(pg_conninfo(url), autocommit=True) as conn:
            for _ in range(each):
                conn.execute("INSERT INTO bench_floor VALUES (%s, %s)", (uuid.uuid4().hex, "x" * 200), prepare=True)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return each * threads / (time.perf_counter() - t0)


class Endings:
    """The runs completed since it was made, counted in the store by the bench itself (a RunCompleted after
    the head it saw): how a drain without a stream client learns it is done without asking the server
    (its answers to 500-run pages, polled, took the server's CPU at the drain's end)."""

    _COUNT = "SELECT count(*) FROM events WHERE position > {} AND type = 'RunCompleted'"

    def __init__(self, url: str, backend: str) -> None:
        if backend == "sqlite":
            self.conn: Any = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        else:
            import psycopg

            self.conn = psycopg.connect(pg_conninfo(url), autocommit=True)
        self.head = int(self.conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0])

    def count(self) -> int:
        return int(self.conn.execute(self._COUNT.format(self.head)).fetchone()[0])

    def close(self) -> None:
        self.conn.close()


def measure_approvals(stores: Stores, parked: int, count: int, threads: int = 8, *,
                      watched: bool = True) -> dict[str, Any]:
    """Approve ``count`` parked runs over HTTP; runs/s until the last one completed.

    ``watched``: one SSE client is connected (as a web console would be), and
    tells when each run completed; otherwise nobody streams (the engine then
    builds no plan frames) and the bench counts the RunCompleted events in the
    store itself (``Endings``), asking the server nothing.
    """
    with stores.copy("parked", parked) as url:
        server = Server(url)
        try:
            with httpx.Client(base_url=server.base, timeout=120) as client:
                paused: list[str] = []
                cursor = None
                while len(paused) < count:
                    q = {"status": "paused", "limit": 200, **({"cursor": cursor} if cursor else {})}
                    page = client.get("/api/runs", params=q).json()
                    paused += [r["run_id"] for r in page["runs"]]
                    cursor = page.get("next_cursor")
                    if not cursor:
                        break
            todo = paused[:count]
            floors = http_floor(server, threads)
            db_commits = db_floor(url, stores.backend, threads)
            stream = Stream(server.base) if watched else None
            ended = None if watched else Endings(url, stores.backend)
            time.sleep(0.2)
            wanted = set(todo)
            c0, own0 = server.cpu(), time.process_time()
            t0 = time.perf_counter()
            queue = deque(todo)
            lock = threading.Lock()
            failures: list[str] = []

            def worker() -> None:
                poster = Poster(server.base)
                try:
                    while True:
                        with lock:
                            if not queue:
                                return
                            run_id = queue.popleft()
                        status, answer = poster.post(f"/api/runs/{run_id}/steps/gate/approve", b'{"comment":"ok"}')
                        if status >= 300:
                            failures.append(f"{status} {answer[:200]!r}")
                finally:
                    poster.close()

            spying = server.spied(f"approvals-{stores.backend}-{'watched' if watched else 'unwatched'}")
            spying.__enter__()
            workers = [threading.Thread(target=worker) for _ in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            posted = time.perf_counter()
            if stream is not None:
                done: set[str] = set()
                index = 0
                while len(done) < len(wanted):
                    at, index = stream.wait_for(lambda f: f[2] in wanted and f[2] not in done and f[3] is None
                                                and f[4] == "completed", timeout=300, start=index)
                    done.add(stream.frames[index][2])
                stream.close()
            else:
                assert ended is not None
                deadline = time.monotonic() + 300
                while ended.count() < len(wanted):
                    if time.monotonic() > deadline:
                        raise TimeoutError("the approved runs did not all complete")
                    time.sleep(0.005)
                ended.close()
                at = time.perf_counter()
            wall = at - t0
            cpu, own = server.cpu() - c0, time.process_time() - own0
            spying.__exit__(None, None, None)
        finally:
            server.stop()
    if failures:
        raise RuntimeError(f"{len(failures)} approvals failed: {failures[:3]}")
    rate = len(todo) / wall
    return {"figure": "approvals_drain", "stream_client": watched, "unit": "runs/s", "runs": len(todo),
            "client_threads": threads,
            "runs_per_s": round(rate, 1), "posts_done_s": round(posted - t0, 2),
            **floors, "db_commits_per_s": round(db_commits),
            "ratio_to_http_floor": round(rate / floors["http_floor_rps"], 3),
            "ratio_to_db_commits": round(rate / db_commits, 3),
            "server_cpu_ms_per_run": round(cpu / len(todo) * 1000, 2),
            "client_cpu_ms_per_run": round(own / len(todo) * 1000, 2), "parked": parked}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--sizes", default="10k,100k,1M")
    parser.add_argument("--parts", default="start,reads,resume,verify,rebuild,plan,approvals")
    parser.add_argument("--parked", default="100,1000,10000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", default="/tmp/baton-bench-scale")
    parser.add_argument("--drop-cache", action="store_true", help="remove every cached store, then exit")
    parser.add_argument("--spy", default="", help="a folder: record the server with py-spy during resume and approvals")
    args = parser.parse_args()
    cache = Path(args.cache)
    global SPY_DIR
    SPY_DIR = args.spy
    if args.drop_cache:
        shutil.rmtree(cache, ignore_errors=True)
        import psycopg

        with psycopg.connect(**PG_ADMIN, autocommit=True) as conn:
            names = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'baton_scale_%'")]
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        emit({"dropped": [str(cache), *names]})
        return
    cache.mkdir(parents=True, exist_ok=True)
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    parked = [parse_size(s) for s in args.parked.split(",") if s.strip()]
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    emit({"cpus": os.cpu_count(), "python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version,
          "loadavg_1m": round(os.getloadavg()[0], 2), "sizes": sizes, "parts": sorted(parts)})
    templates: Any = record_templates
    for backend in backends:
        stores = Stores(backend, cache, templates)
        curves: dict[str, list[tuple[int, float]]] = {}
        for n in sizes:
            stores.golden("mix", n)
            measures: list[Any] = []
            if "start" in parts:
                measures.append(lambda: [measure_start(stores, n, args.rounds)])
            if parts & {"reads", "resume"}:
                measures.append(lambda: measure_reads(stores, n, args.rounds, parts))
            if "verify" in parts:
                measures.append(lambda: [measure_cli(stores, n, ["replay", "--verify"], "verify")])
            if "rebuild" in parts:
                measures.append(lambda: [measure_cli(stores, n, ["projections", "rebuild"], "rebuild")])
            for measure in measures:
                for line in measure():
                    line = {"backend": backend, "events": n, **line, "loadavg_1m": round(os.getloadavg()[0], 2)}
                    curves.setdefault(line["figure"], []).append((n, line["value"]))
                    emit(line)
        for figure, points in curves.items():
            emit({"backend": backend, "figure": figure, "sizes": [p[0] for p in points], **growth(points)})
        if "plan" in parts:
            plan_points = []
            for count in parked:
                line = {"backend": backend, **measure_plan(stores, count), "loadavg_1m": round(os.getloadavg()[0], 2)}
                plan_points.append((count, line["server_cpu_ms_per_launch"]))
                emit(line)
            emit({"backend": backend, "figure": "plan_launch", "parked": parked, "measure": "server CPU per launch",
                  **growth(plan_points),
                  "flat_ratio": round(max(p[1] for p in plan_points) / min(p[1] for p in plan_points), 2),
                  "target_flat_ratio": 1.5})
        if "approvals" in parts:  # --rounds drains of each kind, alternating: a drain moves ±30% by itself
            drains: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
            for _ in range(args.rounds):
                for watched in (True, False):
                    line = measure_approvals(stores, 1000, APPROVALS, watched=watched)
                    drains[watched].append(line)
                    emit({"backend": backend, **line, "target_runs_per_s": 400,
                          "loadavg_1m": round(os.getloadavg()[0], 2)})
            for watched, lines in drains.items():
                emit({"backend": backend, "figure": "approvals_drain_rounds", "stream_client": watched,
                      "rounds": len(lines), **{f"{key}_best_median": [max(v), round(statistics.median(v), 3)]
                                               for key in ("runs_per_s", "ratio_to_http_floor")
                                               for v in [[line[key] for line in lines]]},
                      "server_cpu_ms_per_run_median": round(statistics.median(line["server_cpu_ms_per_run"] for line in lines), 2),
                      "target_runs_per_s": 400})
        templates = stores._templates  # recorded once for both backends


if __name__ == "__main__":
    main()
