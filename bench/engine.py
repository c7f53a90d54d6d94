"""Engine benchmark: baton's actors + store against LangGraph, same process, same run.

    .venv/bin/python bench/engine.py [--backend sqlite|postgresql|both] [--skip-langgraph] [--rounds N]
                                     [--workloads W1,W2,W3,W4] [--shapes sequential,concurrent]
                                     [--w4-old DIR]

Every step is a ``code`` step (a module-level function, ``bench/engine_flows.py``)
that does no work, so the figures measure the orchestration: deciding,
recording, dispatching. For each backend the bench makes a scratch database
(a temporary SQLite file; a PostgreSQL database of its own, dropped at the
end) and an Engine with ``EngineConfig(max_active_runs=0, agent_slots=0)``:
no scheduler limits, so this is raw throughput, not the throttled default.

Two shapes of W1/W2:

- concurrent (as first measured): W1 is 50 runs of a 20-step chain, all
  launched at once, then waited for (steps/s = 1000 / wall seconds from the
  first launch to the last completion); W2 is 20 runs of 1 -> 50 parallel
  -> 1 (52 steps each, 1040 steps). Steps return nothing.
- sequential (as a new user tries it): W1 is 10 runs of the 20-step chain,
  W2 3 runs of the fan-out, one run after another (launch, wait, next);
  every step returns a 200-character output.

Then:

- W3: one run of three parallel steps sleeping 0.5 s, then a join: its wall
  time (ideal 0.5 s);
- W4: a run ``work -> approval -> finish`` paused at the approval, the engine
  stopped and a new one started on the same store (the restart), then the
  time from calling ``approve()`` to the run being completed. The new
  engine's recovery is let finish first and reported apart (``restart_s``).
- W4-fresh: the same, but resumed in a new process (``bench/engine_resume.py``:
  open the store, start the engine, approve, wait), its phases reported
  apart (interpreter start-up, imports, open, recovery, approve -> completed);
  LangGraph resumes its interrupted thread the same way
  (``Command(resume=...)`` in a new process), in alternating rounds.

Beside the sequential W1, in the same rounds, the database's own floor: the
driver alone committing, one transaction each, the two rows a sequential step
records (its StepCompleted and the next StepStarted, as baton recorded them)
into a copy of the events table in baton's own database (``CommitFloor``). The
figure then says how much of a step is that commit, how much is baton's own
work above it, and how much room the target leaves above the floor.

W1-W4 run on LangGraph too (``bench/engine_langgraph.py``: SqliteSaver /
PostgresSaver, the optional ``bench`` extra), in alternating rounds with
baton, so the load of a shared machine hits both sides alike. Each figure is
the best of ``--rounds`` rounds (the least disturbed one), with the median
beside it; ``ok`` compares best with best. ``*_cpu_us_per_step`` is this
process's CPU time per step (median round; a PostgreSQL server's own CPU is
not in it).

Prints one JSON line per figure.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE.parent), str(_HERE)]

from actors.config import EngineConfig  # noqa: E402
from actors.engine import Engine  # noqa: E402
from eventstore import open_store  # noqa: E402
from flows import Flow  # noqa: E402

import engine_langgraph as lg  # noqa: E402
from engine_flows import CHAIN, CHAIN_OUT, FAN, FAN_OUT, GATED, REGISTRY, SLEEPERS  # noqa: E402

PG_ADMIN = {"host": "/var/run/postgresql", "user": "root", "dbname": "postgres"}
CONFIG = EngineConfig(max_active_runs=0, agent_slots=0)
TARGET_RATIO = {"concurrent": 5.0, "sequential": 3.0}  # the targets against LangGraph
TARGET_W3_S = 0.55
TARGET_W4_S = 0.2
TARGET_W4_FRESH_S = 0.005  # approve -> completed in a fresh process, and below LangGraph's
WAIT_S = 600.0
RESUME_CHILD = _HERE / "engine_resume.py"
DBOS_CHILD = _HERE / "engine_dbos.py"

# (workload, flow, runs, steps per run, LangGraph graph attribute)
THROUGHPUT = [("W1", CHAIN, 50, 20, "w1"), ("W2", FAN, 20, 52, "w2")]
# The sequential shape: one run after another, 200-character outputs.
SEQUENTIAL = [("W1", CHAIN_OUT, 10, 20, "w1_out"), ("W2", FAN_OUT, 3, 52, "w2_out")]


# -- baton's side ---------------------------------------------------------------------------


class BatonSide:
    """One store and its engine; W4 replaces the engine (the restart)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.store = open_store(url)
        self.engine = Engine(self.store, REGISTRY, CONFIG).start()

    def close(self) -> None:
        self.engine.stop()
        self.store.close()

    def run_many(self, flow: Flow, runs: int, steps_each: int) -> float:
        """Launch ``runs`` runs at once, then wait for every one; wall seconds."""
        before = self.store.head()
        t0 = time.perf_counter()
        run_ids = [self.engine.launch(flow.name, "bench").run_id for _ in range(runs)]
        states = [self.engine.wait(run_id, timeout=WAIT_S) for run_id in run_ids]
        wall = time.perf_counter() - t0
        for state in states:
            done = sum(1 for s in state.steps.values() if s.status == "completed")
            if state.status != "completed" or done != steps_each:
                raise AssertionError(f"baton run ended {state.status} with {done} of {steps_each} steps")
        self.last_window = (before, self.store.head())
        return wall

    def run_sequential(self, flow: Flow, runs: int, steps_each: int) -> float:
        """``runs`` runs one after another (launch, wait, next); wall seconds for all."""
        before = self.store.head()
        t0 = time.perf_counter()
        for _ in range(runs):
            state = self.engine.wait(self.engine.launch(flow.name, "bench").run_id, timeout=WAIT_S)
            done = sum(1 for s in state.steps.values() if s.status == "completed")
            if state.status != "completed" or done != steps_each:
                raise AssertionError(f"baton run ended {state.status} with {done} of {steps_each} steps")
        wall = time.perf_counter() - t0
        self.last_window = (before, self.store.head())
        return wall

    def batching(self) -> dict[str, float]:
        """How the last ``run_many`` was recorded: events per append, appends per commit.

        Read from the log, outside the clock: the store stamps one
        ``recorded_at`` per group commit, and a stream gets at most one
        append per group (its RunActor waits for each append).
        """
        after, upto = self.last_window
        events = [e for e in self.store.read_all(after=after) if e.position <= upto]
        appends = {(e.stream_id, e.recorded_at) for e in events}
        commits = {e.recorded_at for e in events}
        return {"events": len(events), "events_per_append": round(len(events) / len(appends), 1),
                "appends_per_commit": round(len(appends) / len(commits), 1)}

    def run_one(self, flow: Flow) -> float:
        """One run, launch to completion; wall seconds."""
        t0 = time.perf_counter()
        state = self.engine.wait(self.engine.launch(flow.name, "bench").run_id, timeout=WAIT_S)
        wall = time.perf_counter() - t0
        if state.status != "completed":
            raise AssertionError(f"baton run ended {state.status}")
        return wall

    def approve_after_restart(self) -> tuple[float, float]:
        """(approve-to-completed seconds, restart seconds) for one gated run."""
        run_id = self.engine.launch(GATED.name, "bench").run_id
        self.engine.wait(run_id, lambda s: s.status == "paused", timeout=WAIT_S)
        self.engine.stop()
        t0 = time.perf_counter()
        self.engine = Engine(self.store, REGISTRY, CONFIG).start()
        self.engine.plan()  # answered once the orchestrator's recovery is done
        restart = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.engine.approve(run_id, "gate", by="bench")
        state = self.engine.wait(run_id, timeout=WAIT_S)
        elapsed = time.perf_counter() - t0
        if state.status != "completed":
            raise AssertionError(f"baton gated run ended {state.status}")
        return elapsed, restart

    def pause_gated(self, count: int) -> list[str]:
        """``count`` gated runs left paused at their approval; their ids."""
        run_ids = [self.engine.launch(GATED.name, "bench").run_id for _ in range(count)]
        for run_id in run_ids:
            self.engine.wait(run_id, lambda s: s.status == "paused", timeout=WAIT_S)
        return run_ids


class DbosSide:
    """DBOS (optional ``bench-dbos`` extra), W1 only: one process per round (see bench/engine_dbos.py)."""

    def __init__(self, backend: str, url: str) -> None:
        self.backend = backend
        self.url = url
        self.cpu: list[float] = []

    def run(self, shape: str, runs: int) -> float:
        """One round in a new DBOS process; its timed wall seconds (its CPU goes to ``cpu``)."""
        done = subprocess.run([sys.executable, str(DBOS_CHILD), self.backend, self.url, shape, str(runs)],
                              capture_output=True, text=True, timeout=WAIT_S)
        if done.returncode != 0:
            raise RuntimeError(f"the DBOS child failed: {done.stderr.strip()[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        self.cpu.append(result["cpu"])
        return result["wall"]


def fresh_process(*args: str, child: Path = RESUME_CHILD) -> dict[str, float]:
    """Run ``bench/engine_resume.py`` with ``args``; its phases (seconds), ``total`` = spawn to exit.

    ``child``: another checkout's copy of it, which imports that checkout's baton (``--w4-old``).
    """
    env = {**os.environ, "BENCH_SPAWN": repr(time.time())}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(child), *args], capture_output=True, text=True, env=env,
                          timeout=WAIT_S)
    total = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"the W4 child failed: {done.stderr.strip()[-2000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "total": total}


class CommitFloor:
    """The database's floor under a sequential step: its two rows committed by the driver alone.

    A copy of the events table (``raw_events``, same columns, keys and indexes) in baton's own
    database, so the same file (SQLite's WAL) or server is measured. Each step is one autocommitted
    multi-row INSERT: the driver's fastest durable commit of those rows, lower than baton's own
    (which also checks the stream's version), so the room it leaves is if anything overstated. On
    PostgreSQL it is prepared and run through libpq, as baton's commit is (``eventstore.postgres._direct``),
    not through psycopg's cursor.
    """

    def __init__(self, store: Any) -> None:
        from store import Raw  # bench/store.py's copy of the events table and driver connection (same pragmas)

        from eventstore.codec import encode_json

        raw = Raw(store)
        self.conn = raw.conn
        self.encode = encode_json
        row = raw.insert.split(" VALUES ", 1)[1]
        self.insert = f"{raw.insert}, {row}"  # Raw's one-row INSERT with a second row: a step's two in one statement
        self.rows: list[tuple[Any, ...]] = []
        self.stream = 0
        self.pgconn: Any = None
        if raw.dialect != "sqlite":
            from psycopg.pq import ExecStatus

            from eventstore.postgres import _numbered

            self.ok = ExecStatus.COMMAND_OK
            self.pgconn = raw.conn.pgconn
            prepared = self.pgconn.prepare(b"baton_floor", _numbered(self.insert))
            assert prepared.status == self.ok, prepared.error_message

    def take_step(self, store: Any) -> None:
        """Copy the rows of the last sequential step baton recorded: a StepCompleted and the StepStarted
        after it, with their metadata and hashes as recorded."""
        last = list(store.read_all(after=max(store.head() - 60, 0)))
        pairs = [(a, b) for a, b in zip(last, last[1:]) if (a.type, b.type) == ("StepCompleted", "StepStarted")]
        a, b = pairs[-1]
        self.rows = [(e.type, self.encode(e.data), self.encode(e.metadata), e.recorded_at, e.hash) for e in (a, b)]

    def run(self, steps: int) -> float:
        """``steps`` commits of a step's two rows, each in a stream of its own; wall seconds for all."""
        self.stream += 1
        stream = f"floor-{self.stream}"
        params = []
        for i in range(steps):
            row: list[Any] = []
            for k, (type_, data, metadata, at, hash_) in enumerate(self.rows):
                row += [uuid.uuid4().hex, stream, 2 * i + k + 1, type_, data, metadata, at, hash_]
            params.append(row)
        commit: Callable[[Any], Any] = functools.partial(self.conn.execute, self.insert)
        if self.pgconn is not None:  # libpq takes the values as text
            params = [[str(value).encode() for value in row] for row in params]
            commit = self._commit_pg
        t0 = time.perf_counter()
        for row in params:
            commit(row)
        return time.perf_counter() - t0

    def _commit_pg(self, values: list[bytes]) -> None:
        result = self.pgconn.exec_prepared(b"baton_floor", values)
        assert result.status == self.ok, result.error_message

    def close(self) -> None:
        self.conn.close()


# -- rounds and figures ---------------------------------------------------------------------


CPU: dict[str, list[float]] = {}  # the last alternate()'s process CPU seconds per round, per side


def alternate(rounds: int, sides: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Run each side once per round, in turn (plus one untimed warm-up each).

    Also keeps each round's CPU time of this process in ``CPU`` (the sides
    never run at once, so it is that side's; a PostgreSQL server's is not in it).
    """
    for fn in sides.values():
        fn()
    out: dict[str, list[float]] = {name: [] for name in sides}
    CPU.clear()
    CPU.update({name: [] for name in sides})
    for _ in range(rounds):
        for name, fn in sides.items():
            c0 = time.process_time()
            out[name].append(fn())
            CPU[name].append(time.process_time() - c0)
    return out


def _r(x: float | None, digits: int = 0) -> float | None:
    if x is None:
        return None
    return round(x, digits) if digits else float(round(x))


def throughput_figure(backend: str, shape: str, workload: str, steps: int, walls: dict[str, list[float]]) -> dict:
    baton = [steps / w for w in walls["baton"]]
    line: dict[str, Any] = {
        "bench": "engine", "backend": backend, "shape": shape, "workload": workload, "steps": steps,
        "baton_cpu_us_per_step": _r(statistics.median(CPU["baton"]) / steps * 1e6) if CPU.get("baton") else None,
        "baton_steps_per_s": _r(max(baton)), "baton_steps_per_s_median": _r(statistics.median(baton)),
    }
    if "langgraph" in walls:
        graph = [steps / w for w in walls["langgraph"]]
        line.update(
            langgraph_steps_per_s=_r(max(graph)), langgraph_steps_per_s_median=_r(statistics.median(graph)),
            ratio=_r(max(baton) / max(graph), 2),
            ratio_median=_r(statistics.median(baton) / statistics.median(graph), 2),
            langgraph_cpu_us_per_step=_r(statistics.median(CPU["langgraph"]) / steps * 1e6),
        )
    line["target_ratio"] = TARGET_RATIO[shape]
    line["ok"] = line["ratio"] >= TARGET_RATIO[shape] if "ratio" in line else None
    if "floor" in walls:  # medians, in µs a step: the commit's floor, baton above it, the room the target leaves
        baton_us = statistics.median(walls["baton"]) / steps * 1e6
        floor_us = statistics.median(walls["floor"]) / steps * 1e6
        line.update(baton_us_per_step=_r(baton_us), floor_us_per_step=_r(floor_us),
                    baton_above_floor_us=_r(baton_us - floor_us))
        if "langgraph" in walls:
            target_us = statistics.median(walls["langgraph"]) / steps * 1e6 / TARGET_RATIO[shape]
            line.update(target_us_per_step=_r(target_us), room_above_floor_us=_r(target_us - floor_us))
    return line


def median_phases(timings: list[dict[str, float]]) -> dict[str, float]:
    """Each phase's median over the rounds, in milliseconds."""
    return {k: _r(statistics.median(t[k] for t in timings) * 1000, 2) for k in timings[0]
            if k not in ("side", "timeline_ms")}


def w4_fresh(backend: str, baton: BatonSide, graph: Any, graph_conn: str, rounds: int,
             old: Path | None = None) -> dict:
    """W4 in a fresh process: pause runs here, then resume each in a new process, baton and peer in turn.

    The first round of each side is a warm-up (the OS's file cache), not counted. ``old``: another
    checkout of baton (the tree before a change), resumed by its own child in the same rounds.
    """
    run_ids = baton.pause_gated(rounds + 1)
    old_ids = baton.pause_gated(rounds + 1) if old is not None else []
    thread_ids = [graph.pause_gated() for _ in range(rounds + 1)] if graph is not None else []
    baton.engine.stop()  # the process that paused the runs is gone: the child recovers them
    timings: dict[str, list[dict[str, float]]] = {"baton": [], "langgraph": [], "old": []}
    try:
        for i in range(rounds + 1):
            b = fresh_process("baton", baton.url, run_ids[i])
            o = (fresh_process("baton", baton.url, old_ids[i], child=old / "bench" / RESUME_CHILD.name)
                 if old is not None else None)
            g = fresh_process("langgraph", backend, graph_conn, thread_ids[i]) if graph is not None else None
            if i:
                timings["baton"].append(b)
                if o is not None:
                    timings["old"].append(o)
                if g is not None:
                    timings["langgraph"].append(g)
    finally:
        baton.engine = Engine(baton.store, REGISTRY, CONFIG).start()
    resume = [t["resume"] for t in timings["baton"]]
    line: dict[str, Any] = {
        "bench": "engine", "backend": backend, "shape": "sequential", "workload": "W4-fresh",
        "where": "a new process: open the store, start the engine, approve, wait",
        "approve_to_complete_ms": _r(min(resume) * 1000, 2),
        "approve_to_complete_ms_median": _r(statistics.median(resume) * 1000, 2),
        "baton_phases_ms_median": median_phases(timings["baton"]),
        "baton_timelines_ms": [t["timeline_ms"] for t in timings["baton"]],
        "events_in_store": baton.store.head(),
    }
    if timings["old"]:
        before = [t["resume"] for t in timings["old"]]
        line.update(old_tree=str(old), old_approve_to_complete_ms=_r(min(before) * 1000, 2),
                    old_approve_to_complete_ms_median=_r(statistics.median(before) * 1000, 2),
                    old_phases_ms_median=median_phases(timings["old"]),
                    old_timelines_ms=[t["timeline_ms"] for t in timings["old"]])
    if timings["langgraph"]:
        peer = [t["resume"] for t in timings["langgraph"]]
        line.update(langgraph_resume_ms=_r(min(peer) * 1000, 2),
                    langgraph_resume_ms_median=_r(statistics.median(peer) * 1000, 2),
                    langgraph_phases_ms_median=median_phases(timings["langgraph"]))
    ok = min(resume) <= TARGET_W4_FRESH_S
    if timings["langgraph"]:
        ok = ok and min(resume) < min(t["resume"] for t in timings["langgraph"])
    return {**line, "target_ms": TARGET_W4_FRESH_S * 1000, "ok": ok}


def bench_backend(backend: str, baton_url: str, saver: Any, graph_conn: str,
                  args: argparse.Namespace, dbos: DbosSide | None = None) -> Iterator[dict]:
    """Every workload asked for, on one backend; yields the figures as they are measured."""
    baton = BatonSide(baton_url)
    graph = lg.LangGraphSide(saver) if saver is not None else None
    floor = CommitFloor(baton.store)
    try:
        for shape in args.shapes:
            for workload, flow, runs, steps_each, attr in (THROUGHPUT if shape == "concurrent" else SEQUENTIAL):
                if workload not in args.workloads:
                    continue
                if shape == "concurrent":
                    sides = {"baton": lambda f=flow, n=runs, k=steps_each: baton.run_many(f, n, k)}
                    if graph is not None:
                        sides["langgraph"] = (lambda g=getattr(graph, attr), n=runs, k=steps_each:
                                              graph.run_many(g, n, k))
                else:
                    sides = {"baton": lambda f=flow, n=runs, k=steps_each: baton.run_sequential(f, n, k)}
                    if graph is not None:
                        sides["langgraph"] = (lambda g=getattr(graph, attr), n=runs, k=steps_each:
                                              graph.run_sequential(g, n, k))
                    if workload == "W1":
                        baton.run_sequential(flow, 1, steps_each)  # a step of its own for the floor to copy
                        floor.take_step(baton.store)
                        sides["floor"] = lambda n=runs * steps_each: floor.run(n)
                if dbos is not None and workload == "W1":
                    sides["dbos"] = lambda n=runs, sh=shape: dbos.run(sh, n)
                    dbos.cpu.clear()
                walls = alternate(args.rounds, sides)
                line = throughput_figure(backend, shape, workload, runs * steps_each, walls)
                if "dbos" in walls:
                    rates = [runs * steps_each / w for w in walls["dbos"]]
                    best = max(runs * steps_each / w for w in walls["baton"])
                    line.update(dbos_steps_per_s=_r(max(rates)), dbos_steps_per_s_median=_r(statistics.median(rates)),
                                dbos_ratio=_r(best / max(rates), 2),
                                dbos_cpu_us_per_step=_r(statistics.median(dbos.cpu[1:]) / (runs * steps_each) * 1e6))
                yield {**line, "runs": runs, "baton_batching": baton.batching()}
        if "W3" in args.workloads:
            sides = {"baton": lambda: baton.run_one(SLEEPERS)}
            if graph is not None:
                sides["langgraph"] = lambda: graph.run_one(graph.w3, 4)
            walls = alternate(args.rounds, sides)
            line: dict[str, Any] = {
                "bench": "engine", "backend": backend, "workload": "W3",
                "wall_s": _r(min(walls["baton"]), 3), "wall_s_median": _r(statistics.median(walls["baton"]), 3),
            }
            if "langgraph" in walls:
                line.update(langgraph_wall_s=_r(min(walls["langgraph"]), 3),
                            langgraph_wall_s_median=_r(statistics.median(walls["langgraph"]), 3))
            yield {**line, "target_s": TARGET_W3_S, "ok": min(walls["baton"]) <= TARGET_W3_S}
        if "W4" in args.workloads:
            baton.approve_after_restart()  # warm-up
            timings = [baton.approve_after_restart() for _ in range(args.rounds)]
            approve = [t[0] for t in timings]
            yield {
                "bench": "engine", "backend": backend, "shape": "sequential", "workload": "W4",
                "where": "same process, new Engine on the same store",
                "approve_to_complete_s": _r(min(approve), 4),
                "approve_to_complete_s_median": _r(statistics.median(approve), 4),
                "restart_s": _r(statistics.median(t[1] for t in timings), 3),
                "events_in_store": baton.store.head(),  # what the restart's recovery scans
                "target_s": TARGET_W4_S, "ok": min(approve) <= TARGET_W4_S,
            }
            yield w4_fresh(backend, baton, graph, graph_conn, args.rounds, args.w4_old)
    finally:
        floor.close()
        baton.close()


# -- scratch databases ----------------------------------------------------------------------


@contextmanager
def pg_database(tag: str) -> Iterator[str]:
    """A new PostgreSQL database (its name), dropped on the way out."""
    import psycopg

    name = f"baton_bench_engine_{tag}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(**PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(**PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_sqlite(args: argparse.Namespace, with_langgraph: bool) -> Iterator[dict]:
    with tempfile.TemporaryDirectory(prefix="baton-bench-engine-") as tmp:
        dbos = DbosSide("sqlite", f"sqlite:///{tmp}/dbos.db") if args.with_dbos else None
        if not with_langgraph:
            yield from bench_backend("sqlite", f"sqlite:///{tmp}/baton.db", None, "", args, dbos)
            return
        with lg.sqlite_saver(f"{tmp}/langgraph.db") as saver:
            yield from bench_backend("sqlite", f"sqlite:///{tmp}/baton.db", saver, f"{tmp}/langgraph.db", args,
                                     dbos)


def run_postgresql(args: argparse.Namespace, with_langgraph: bool) -> Iterator[dict]:
    host = PG_ADMIN["host"]
    with pg_database("baton") as baton_db, pg_database("dbos") as dbos_db:
        url = f"postgresql+psycopg://{PG_ADMIN['user']}@/{baton_db}?host={host}"
        dbos = (DbosSide("postgresql", f"postgresql://{PG_ADMIN['user']}@/{dbos_db}?host={host}")
                if args.with_dbos else None)
        if not with_langgraph:
            yield from bench_backend("postgresql", url, None, "", args, dbos)
            return
        with pg_database("langgraph") as graph_db:
            conninfo = f"host={host} user={PG_ADMIN['user']} dbname={graph_db}"
            with lg.postgres_saver(conninfo, max_size=50) as saver:
                yield from bench_backend("postgresql", url, saver, conninfo, args, dbos)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--skip-langgraph", action="store_true", help="baton only (no baseline, no ratio)")
    parser.add_argument("--skip-dbos", action="store_true", help="no DBOS peer (it is skipped anyway when absent)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per figure (default 5)")
    parser.add_argument("--workloads", default="W1,W2,W3,W4", help="comma-separated subset of W1,W2,W3,W4")
    parser.add_argument("--shapes", default="sequential,concurrent",
                        help="comma-separated: sequential (one run after another, 200-character outputs), "
                             "concurrent (runs launched at once)")
    parser.add_argument("--w4-old", type=Path, default=None, metavar="DIR",
                        help="W4-fresh also resumes runs with the baton of another checkout (the tree before a "
                             "change), in the same alternating rounds")
    args = parser.parse_args()
    args.workloads = {w.strip().upper() for w in args.workloads.split(",")}
    args.shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    for shape in args.shapes:
        if shape not in TARGET_RATIO:
            parser.error(f"--shapes: {shape!r} is neither sequential nor concurrent")

    with_langgraph = False
    graph_version: str | None = None
    if args.skip_langgraph:
        print(json.dumps({"bench": "engine", "langgraph": None, "skipped": "langgraph baseline",
                          "reason": "--skip-langgraph"}), flush=True)
    else:
        with_langgraph, detail = lg.available()
        if with_langgraph:
            graph_version = detail
        else:
            print(json.dumps({"bench": "engine", "langgraph": None, "skipped": "langgraph baseline",
                              "reason": detail}), flush=True)
    args.with_dbos = False
    dbos_version: str | None = None
    if args.skip_dbos:
        print(json.dumps({"bench": "engine", "dbos": None, "skipped": "dbos peer", "reason": "--skip-dbos"}),
              flush=True)
    else:
        import engine_dbos

        args.with_dbos, detail = engine_dbos.available()
        if args.with_dbos:
            dbos_version = detail
        else:
            print(json.dumps({"bench": "engine", "dbos": None, "skipped": "dbos peer", "reason": detail}),
                  flush=True)
    print(json.dumps({
        "bench": "engine", "machine": platform.machine(), "dbos": dbos_version, "cpus": os.cpu_count(),
        "python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "langgraph": graph_version,
        "engine_config": {"max_active_runs": CONFIG.max_active_runs, "agent_slots": CONFIG.agent_slots},
        "note": "no scheduler limits: raw throughput", "rounds": args.rounds,
        "loadavg_1m": round(os.getloadavg()[0], 2), "shapes": args.shapes,
    }), flush=True)
    if args.backend in ("sqlite", "both"):
        for line in run_sqlite(args, with_langgraph):
            print(json.dumps(line), flush=True)
    if args.backend in ("postgresql", "both"):
        for line in run_postgresql(args, with_langgraph):
            print(json.dumps(line), flush=True)
    # the load others put on a shared machine, to read the figures against
    print(json.dumps({"bench": "engine", "done": True, "loadavg_1m": round(os.getloadavg()[0], 2)}), flush=True)


if __name__ == "__main__":
    main()
