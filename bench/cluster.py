"""What a cluster's coordination costs: one node against three on one PostgreSQL (DESIGN §16).

    .venv/bin/python bench/cluster.py [--runs 300] [--latency-runs 200] [--rounds 3]

Each node is a process of its own running an engine as ``baton serve`` runs
it (a cluster node: recovery on, ``cluster=True``), no HTTP. Node 0 launches
every run (the shared queue hands them out). On this 2-core machine three
nodes cannot be faster than one; the figures say what the coordination costs:

- ``throughput``: no-op code steps per second, a burst of ``--runs`` runs of
  four steps each, from the first launch to the last run's end (the events'
  own times). Target: three nodes >= 0.8 x one node (the median over the
  rounds of each round's three-node figure over its one-node figure).
- ``spread``: runs each node admitted, as a share of an even split. Target:
  every node within +-20 %.
- ``admission latency``: from the launch's commit (RunLaunched and
  RunQueued recorded: the launch call returned) to RunStarted's time, of runs
  launched one at a time (nothing else running), p50 and p99. Target: p99 <
  50 ms with three nodes (the median round's).

Prints one JSON line per figure; exit code 0 when every target is met.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

PG_ADMIN = os.environ.get("BATON_BENCH_PG", "postgresql+psycopg://root@/postgres?host=/var/run/postgresql")
STEPS = 4


def nothing(ctx: object) -> str:
    """A no-op code step."""
    return "ok"


def registry():  # type: ignore[no-untyped-def]
    from flows import Flow, code
    from flows.catalog import FlowRegistry

    steps = [code("s0", fn=nothing), *(code(f"s{i}", fn=nothing, deps=[f"s{i - 1}"]) for i in range(1, STEPS))]
    return FlowRegistry([Flow("bench-noop", steps=steps)])


# -- a node --------------------------------------------------------------------------------------


def node(url: str, name: str) -> None:
    """A node: an engine in a cluster; reads commands from stdin (``launch N`` / ``one`` / ``quit``)."""
    from actors.config import EngineConfig
    from actors.engine import Engine
    from eventstore import open_store

    store = open_store(url)
    config = EngineConfig(node=name, cluster=True, max_active_runs=0, agent_slots=0, lease_ttl_s=30.0)
    engine = Engine(store, registry(), config).start()
    engine.plan()  # answered once the orchestrator has joined the cluster
    print(json.dumps({"ready": name}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        if words[0] == "launch":
            ids = [engine.launch("bench-noop", f"q{i}").run_id for i in range(int(words[1]))]
            print(json.dumps({"runs": ids}), flush=True)
        elif words[0] == "one":  # launch one run and wait for its end
            run_id = engine.launch("bench-noop", "one").run_id
            queued = time.time()  # the launch (RunLaunched, RunQueued) is committed
            engine.wait(run_id, timeout=30)
            print(json.dumps({"runs": [run_id], "queued": queued}), flush=True)
    engine.stop()
    store.close()


# -- the parent ----------------------------------------------------------------------------------


@contextmanager
def pg_database() -> Iterator[str]:
    import psycopg
    import sqlalchemy as sa

    admin = sa.engine.make_url(PG_ADMIN)
    name = f"baton_bench_cluster_{uuid.uuid4().hex[:8]}"
    conninfo = {k: v for k, v in dict(dbname=admin.database or "postgres", user=admin.username,
                                      host=admin.query.get("host", admin.host), password=admin.password,
                                      port=admin.port).items() if v}
    with psycopg.connect(**conninfo, autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(**conninfo, autocommit=True) as conn:  # type: ignore[arg-type]
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Node:
    def __init__(self, url: str, name: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, __file__, "--node", name, "--url", url], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        assert "ready" in self.read()

    def read(self) -> dict:  # type: ignore[type-arg]
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"node exited with {self.proc.wait()}")
        return json.loads(line)  # type: ignore[no-any-return]

    def tell(self, line: str) -> dict:  # type: ignore[type-arg]
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(30)


def measure(nodes: int, runs: int, latency_runs: int) -> dict:  # type: ignore[type-arg]
    from actors.runlog import follow
    from eventstore import open_store
    from flows.events import stream_of

    with pg_database() as url:
        store = open_store(url)
        started = [Node(url, f"node-{i}") for i in range(nodes)]
        try:
            # Admission latency: one run at a time, nothing else in the queue.
            latencies = []
            for _ in range(latency_runs):
                told = started[0].tell("one")
                at = {r.type: r.data["at"] for r in store.read_stream(stream_of(told["runs"][0]))
                      if r.type in ("RunQueued", "RunStarted")}
                latencies.append(max(0.0, at["RunStarted"] - told["queued"]))
            # Throughput and spread: a burst.
            ids = started[0].tell(f"launch {runs}")["runs"]
            for run_id in ids:
                follow(store, run_id, lambda s: s.terminal, timeout=600)
            first = last = None
            admitted: Counter[str] = Counter()
            steps = 0
            for run_id in ids:
                for r in store.read_stream(stream_of(run_id)):
                    at = r.data.get("at")
                    if r.type == "RunLaunched":
                        first = at if first is None else min(first, at)
                    if r.type == "RunCompleted":
                        last = at if last is None else max(last, at)
                    if r.type == "RunStarted":
                        admitted[r.metadata["node"]] += 1
                    if r.type == "StepCompleted":
                        steps += 1
            assert steps == runs * STEPS, f"{steps} steps completed of {runs * STEPS}"
        finally:
            for n in started:
                n.stop()
            store.close()
    assert first is not None and last is not None
    latencies.sort()
    return {"nodes": nodes, "runs": runs, "steps_per_s": round(steps / (last - first), 1),
            "admitted": dict(sorted(admitted.items())),
            "latency_p50_ms": round(1000 * statistics.median(latencies), 2),
            "latency_p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 2)}


def median_round(rounds: list[dict]) -> dict:  # type: ignore[type-arg]
    """The round of median throughput."""
    return sorted(rounds, key=lambda r: r["steps_per_s"])[len(rounds) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each; the median round counts")
    parser.add_argument("--node", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.node:
        node(args.url, args.node)
        return 0
    ones, threes = [], []
    for _ in range(args.rounds):  # alternated, so a busy moment of the machine hits both alike
        ones.append(measure(1, args.runs, args.latency_runs))
        print(json.dumps({"figure": "one node", **ones[-1]}), flush=True)
        threes.append(measure(3, args.runs, args.latency_runs))
        print(json.dumps({"figure": "three nodes", **threes[-1]}), flush=True)
    # Each round's three against the same round's one (the machine's load drifts between rounds).
    ratios = sorted(t["steps_per_s"] / o["steps_per_s"] for o, t in zip(ones, threes))
    ratio = ratios[len(ratios) // 2]
    three = median_round(threes)
    p99 = sorted(t["latency_p99_ms"] for t in threes)[len(threes) // 2]
    even = args.runs / 3
    spread = {n: round(c / even - 1, 3) for n, c in three["admitted"].items()}
    ok = {"throughput": ratio >= 0.8, "spread": len(spread) == 3 and all(abs(v) <= 0.2 for v in spread.values()),
          "latency": p99 < 50}
    print(json.dumps({"figure": "three vs one", "throughput_ratio": round(ratio, 3),
                      "ratios": [round(r, 3) for r in ratios], "target": 0.8,
                      "spread_vs_even": spread, "spread_target": 0.2,
                      "latency_p99_ms": p99, "latency_target_ms": 50, "ok": ok}), flush=True)
    return 0 if all(ok.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
