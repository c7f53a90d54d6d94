"""Two source trees of baton, and LangGraph, on the same workload in alternating rounds: CPU per step and steps/s.

    .venv/bin/python bench/step_ab.py --old DIR [--new DIR] [--backend sqlite|postgresql] [--rounds 5]
                                      [--workload W1|W2] [--shape sequential|concurrent] [--runs N]
                                      [--skip-langgraph] [--langgraph-sync]

A change to the engine or the store is measured against the tree before it
(``git archive <commit> | tar -x -C DIR``), never against a figure from
another day: the machine is shared, and its load moves both alike only when
they run in turns. Each round runs every side once, each in a fresh child
process (the same interpreter and packages; the tree's own modules first on
``sys.path``) on a scratch store of its own: one warm-up run, then the timed
ones, W1 (20-step chains) or W2 (1 -> 50 -> 1) of ``bench/engine.py``,
sequential (one run after another, 200-character outputs) or concurrent (all
launched at once, steps returning nothing). A child reports its wall time
its process's CPU (every thread; a PostgreSQL server's CPU is not in
it) and its voluntary context switches (a thread going to sleep: each
hand-off between threads costs at least one). The least CPU of the rounds
is beside the median: another process's load only ever adds to it. Prints one JSON line per round and side, then one per side with the
medians over the rounds and the ratios to the old tree and to LangGraph.

LangGraph runs with its default durability (``"async"``: a superstep's
checkpoint is written while the next one runs). ``--langgraph-sync`` adds a
side with ``durability="sync"`` (each checkpoint written before the next
superstep starts), the like-for-like peer of baton, which records each step
before it starts the next; every baton side then gets a ratio to each.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent

# workload -> (shape -> (flow attribute of engine_flows, LangGraph graph attribute, runs), steps per run)
WORKLOADS: dict[str, tuple[dict[str, tuple[str, str, int]], int]] = {
    "W1": ({"sequential": ("CHAIN_OUT", "w1_out", 100), "concurrent": ("CHAIN", "w1", 50)}, 20),
    "W2": ({"sequential": ("FAN_OUT", "w2_out", 20), "concurrent": ("FAN", "w2", 20)}, 52),
}


def child(args: argparse.Namespace) -> None:
    """One side's round, in this (fresh) process: print ``{"wall": s, "cpu": s, "steps": n}``."""
    tree = Path(args.tree) if args.tree else _HERE.parent
    sys.path[:0] = [str(tree), str(tree / "bench")]
    import engine as bench  # the tree's own bench/engine.py, on the tree's own modules

    shapes, steps_each = WORKLOADS[args.workload]
    flow_name, graph_attr, default_runs = shapes[args.shape]
    runs = args.runs or default_runs

    def timed(run: Any) -> dict[str, float]:
        u0, c0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time(), time.perf_counter()
        run()
        wall, cpu, u1 = time.perf_counter() - t0, time.process_time() - c0, resource.getrusage(resource.RUSAGE_SELF)
        return {"wall": wall, "cpu": cpu, "steps": runs * steps_each,
                "switches": u1.ru_nvcsw - u0.ru_nvcsw, "preempted": u1.ru_nivcsw - u0.ru_nivcsw}

    def baton(url: str) -> dict[str, float]:
        side = bench.BatonSide(url)
        flow = getattr(bench, flow_name, None) or getattr(__import__("engine_flows"), flow_name)
        go = side.run_sequential if args.shape == "sequential" else side.run_many
        projector = None
        if args.projector:  # what `baton serve` runs beside the engine: the read tables follow every step
            from projections import Projector  # the tree's own

            projector = Projector(side.store).start()

        def work(n: int) -> None:
            go(flow, n, steps_each)
            if projector is not None:  # its work on this round's events is part of the round's cost
                assert projector.wait_for(side.store.head(), 120), projector.last_error

        try:
            work(3 if args.shape == "sequential" else runs)  # warm-up
            return timed(lambda: work(runs))
        finally:
            if projector is not None:
                projector.stop()
            side.close()

    def langgraph(saver: Any) -> dict[str, float]:
        side = bench.lg.LangGraphSide(saver, durability="sync" if args.side == "langgraph-sync" else None)
        graph = getattr(side, graph_attr)
        go = side.run_sequential if args.shape == "sequential" else side.run_many
        go(graph, 3 if args.shape == "sequential" else runs, steps_each)  # warm-up
        return timed(lambda: go(graph, runs, steps_each))

    if args.backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="baton-step-ab-") as tmp:
            if args.side.startswith("langgraph"):
                with bench.lg.sqlite_saver(f"{tmp}/langgraph.db") as saver:
                    result = langgraph(saver)
            else:
                result = baton(f"sqlite:///{tmp}/baton.db")
    else:
        with bench.pg_database("ab") as name:
            if args.side.startswith("langgraph"):
                conninfo = f"host={bench.PG_ADMIN['host']} user={bench.PG_ADMIN['user']} dbname={name}"
                with bench.lg.postgres_saver(conninfo, max_size=50) as saver:
                    result = langgraph(saver)
            else:
                result = baton(f"postgresql+psycopg://{bench.PG_ADMIN['user']}@/{name}?host={bench.PG_ADMIN['host']}")
    print(json.dumps(result), flush=True)


def one_round(args: argparse.Namespace, side: str, tree: str) -> dict[str, float]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--side", side, "--tree", tree,
           "--backend", args.backend, "--workload", args.workload, "--shape", args.shape, "--runs", str(args.runs),
           *(["--projector"] if args.projector else [])]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        raise RuntimeError(f"{side} ({tree}) failed: {done.stderr.strip()[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="", help="the tree to compare against")
    parser.add_argument("--new", default=str(_HERE.parent), help="the tree under test (default: this one)")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="W1")
    parser.add_argument("--shape", choices=["sequential", "concurrent"], default="sequential")
    parser.add_argument("--runs", type=int, default=0, help="timed runs per round (default: per workload)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-langgraph", action="store_true")
    parser.add_argument("--projector", action="store_true",
                        help="run each tree's projector beside its engine (as `baton serve` does), its work timed too")
    parser.add_argument("--langgraph-sync", action="store_true", help="also LangGraph with durability='sync'")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side", default="baton", help=argparse.SUPPRESS)
    parser.add_argument("--tree", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    sides = {"new": ("baton", args.new)}
    if args.old:
        sides = {"old": ("baton", args.old), **sides}
    if not args.skip_langgraph:
        sides["langgraph"] = ("langgraph", args.new)
        if args.langgraph_sync:
            sides["langgraph-sync"] = ("langgraph-sync", args.new)
    base = {"bench": "step_ab", "backend": args.backend, "workload": args.workload, "shape": args.shape}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    for n in range(args.rounds):
        order = list(sides) if n % 2 == 0 else list(reversed(sides))  # neither side always goes first
        for name in order:
            side, tree = sides[name]
            r = one_round(args, side, tree)
            results[name].append(r)
            print(json.dumps({**base, "round": n, "side": name, "tree": tree,
                              "steps_per_s": round(r["steps"] / r["wall"]),
                              "cpu_us_per_step": round(r["cpu"] / r["steps"] * 1e6),
                              "switches_per_step": round(r["switches"] / r["steps"], 2),
                              "loadavg_1m": round(os.getloadavg()[0], 2)}), flush=True)
    medians = {name: {"steps_per_s": statistics.median(r["steps"] / r["wall"] for r in rs),
                      "cpu_us_per_step": statistics.median(r["cpu"] / r["steps"] * 1e6 for r in rs),
                      "cpu_us_per_step_min": min(r["cpu"] / r["steps"] * 1e6 for r in rs),
                      "switches_per_step": statistics.median(r["switches"] / r["steps"] for r in rs)}
               for name, rs in results.items()}
    for name, m in medians.items():
        line: dict[str, Any] = {**base, "side": name, "tree": sides[name][1], "rounds": args.rounds,
                                "steps_per_s_median": round(m["steps_per_s"]),
                                "cpu_us_per_step_median": round(m["cpu_us_per_step"]),
                                "cpu_us_per_step_min": round(m["cpu_us_per_step_min"]),
                                "switches_per_step_median": round(m["switches_per_step"], 2)}
        if "langgraph" in medians and not name.startswith("langgraph"):
            line["ratio_to_langgraph"] = round(m["steps_per_s"] / medians["langgraph"]["steps_per_s"], 2)
        if "langgraph-sync" in medians and not name.startswith("langgraph"):
            line["ratio_to_langgraph_sync"] = round(m["steps_per_s"] / medians["langgraph-sync"]["steps_per_s"], 2)
        if "old" in medians and name == "new":
            line["cpu_vs_old"] = round(m["cpu_us_per_step"] / medians["old"]["cpu_us_per_step"] - 1, 3)
            line["cpu_min_vs_old"] = round(m["cpu_us_per_step_min"] / medians["old"]["cpu_us_per_step_min"] - 1, 3)
            line["speed_vs_old"] = round(m["steps_per_s"] / medians["old"]["steps_per_s"] - 1, 3)
        print(json.dumps({**line, "loadavg_1m": round(os.getloadavg()[0], 2)}), flush=True)


if __name__ == "__main__":
    main()
