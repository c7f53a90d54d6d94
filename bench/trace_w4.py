"""Where a fresh process's W4 approval spends its time, stamp by stamp (PostgreSQL or SQLite).

    python bench/trace_w4.py [--backend postgresql|sqlite] [--rounds N] [--warm]

Pauses N+1 gated runs (``work -> approval -> finish``) in this process, stops its engine, then
resumes each in a new process (this file's ``child`` mode) whose engine has stamps on the approval's
critical path: the orchestrator's command, the run's stream read, the lease read, the RunActor's
start, each group commit (begin / end), the step thread, the watcher's wake-up. Prints each round's
stamps (ms after ``approve()``) and, per stamp, the best and the median over the rounds (the first
round, a warm-up, is dropped). ``--warm``: the child approves a second paused run after the first,
in the same process, so a cold path can be told from a warm one.
"""

from __future__ import annotations

import time

T_MAIN = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

STAMPS: list[tuple[str, float]] = []


def stamp(name: str) -> None:
    STAMPS.append((name, time.perf_counter()))


def wrap(owner: Any, attr: str, name: str, *, end: bool = False) -> None:
    """Stamp ``name`` when ``owner.attr`` is called (and ``name/`` when it returns, with ``end``)."""
    fn = getattr(owner, attr)

    def traced(*args: Any, **kwargs: Any) -> Any:
        stamp(name)
        try:
            return fn(*args, **kwargs)
        finally:
            if end:
                stamp(name + "/")

    setattr(owner, attr, traced)


def child(url: str, run_ids: list[str]) -> None:
    from actors import orchestrator, run, watch
    from actors.config import EngineConfig
    from actors.engine import Engine
    from eventstore import open_store

    from engine_flows import REGISTRY

    wrap(orchestrator.Orchestrator, "_on_command", "orch.command")
    wrap(orchestrator, "load_with_owner", "orch.load", end=True)
    if hasattr(orchestrator, "load_with_owner_and_leases"):  # the stream and the leases in one read
        wrap(orchestrator, "load_with_owner_and_leases", "orch.load+leases", end=True)
    if hasattr(orchestrator.Orchestrator, "_live_nodes_with"):  # a tree before actors/liveness.py
        wrap(orchestrator.Orchestrator, "_live_nodes_with", "orch.leases", end=True)
    else:
        from actors import liveness

        wrap(liveness.Liveness, "live_with", "orch.leases", end=True)
    wrap(run.RunActor, "_on_resume", "actor.resume")
    wrap(run.RunActor, "_commit", "actor.commit", end=True)
    wrap(run.RunActor, "_start_attempt", "actor.start_attempt", end=True)
    wrap(run.RunActor, "_on_result", "actor.result")
    wrap(watch.RunWatch, "publish", "watch.publish")
    store = open_store(url)
    backend = getattr(store, "_backend", None) or getattr(store, "backend", None)
    if backend is not None and hasattr(type(backend), "commit_group"):
        wrap(type(backend), "commit_group", "store.commit_group", end=True)
        if hasattr(type(backend), "_last_rows"):  # PostgreSQL: the rendered last event, between its round trips
            wrap(type(backend), "_last_rows", "store.render", end=True)
    engine = Engine(store, REGISTRY, EngineConfig(max_active_runs=0, agent_slots=0)).start()
    engine.plan()
    import gc

    # The cyclic collector's passes, each with its generation: a full pass over a fresh process's
    # imports takes milliseconds, on whichever thread allocates.
    gc.callbacks.append(lambda phase, info: stamp(f"gc{info['generation']}" + ("" if phase == "start" else "/")))
    out = []
    for run_id in run_ids:
        STAMPS.clear()
        t0 = time.perf_counter()
        engine.approve(run_id, "gate", by="bench")
        stamp("approve/")
        state = engine.wait(run_id, timeout=60)
        stamp("wait/")
        assert state.status == "completed", state.status
        out.append([[name, round((at - t0) * 1000, 3)] for name, at in STAMPS])
    engine.stop()
    store.close()
    print(json.dumps(out), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warm", action="store_true", help="a second approval in the same child")
    parser.add_argument("--python", default=sys.executable, help="the child's interpreter")
    args = parser.parse_args()
    from contextlib import ExitStack

    from engine import BatonSide, pg_database

    with ExitStack() as stack:
        if args.backend == "postgresql":
            from engine import PG_ADMIN

            db = stack.enter_context(pg_database("trace"))
            url = f"postgresql+psycopg://{PG_ADMIN['user']}@/{db}?host={PG_ADMIN['host']}"
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="baton-trace-"))
            url = f"sqlite:///{tmp}/baton.db"
        side = BatonSide(url)
        per = 2 if args.warm else 1
        ids = side.pause_gated((args.rounds + 1) * per)
        side.close()
        rounds: list[list[list[Any]]] = []
        for i in range(args.rounds + 1):
            done = subprocess.run([args.python, __file__, "--child", url, *ids[i * per:(i + 1) * per]],
                                  capture_output=True, text=True, timeout=120)
            if done.returncode:
                raise SystemExit(done.stderr[-3000:])
            if i:
                rounds.append(json.loads(done.stdout.strip().splitlines()[-1]))
    for which in range(per):
        label = "cold" if which == 0 else "warm (second approval, same process)"
        print(f"== {label}")
        series: dict[str, list[float]] = {}
        for r in rounds:
            seen: dict[str, int] = {}
            parts = []
            for name, ms in r[which]:
                seen[name] = seen.get(name, 0) + 1
                key = f"{name}#{seen[name]}" if seen[name] > 1 else name
                series.setdefault(key, []).append(ms)
                parts.append(f"{key}={ms}")
            print("  " + " ".join(parts))
        print("  stamp: best / median (ms after approve); the segment before it: best / median")
        keys = list(series)
        for i, key in enumerate(keys):
            values = series[key]
            gaps = [b - a for a, b in zip(series[keys[i - 1]], values)] if i else values
            print(f"    {key:28s} {min(values):7.3f} {statistics.median(values):7.3f}   "
                  f"{min(gaps):7.3f} {statistics.median(gaps):7.3f}  (n={len(values)})")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
    else:
        main()
