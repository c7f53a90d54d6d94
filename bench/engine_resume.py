"""W4 in a fresh process: resume a paused run, as a person's approval would after a restart.

    python bench/engine_resume.py baton URL RUN_ID
    python bench/engine_resume.py langgraph sqlite|postgresql CONN THREAD_ID

Started by ``bench/engine.py`` (which paused the run first, in its own
process) with ``BENCH_SPAWN`` = its ``time.time()`` just before the spawn.
Prints one JSON line of phases, each in seconds:

- ``startup``: spawn to this module's first line (the interpreter);
- ``imports``: importing the engine / LangGraph and the bench's flows;
- ``open``: opening the store / the checkpointer (connections, set-up);
- ``recovery`` (baton): ``Engine.start()`` until the orchestrator answers
  (its recovery of unfinished runs is done); ``compile`` (LangGraph): the graph;
- ``resume``: ``approve()`` / ``invoke(Command(resume=...))`` to the run completed;
- ``timeline_ms`` (baton): each commit of the resume (its events, and its
  ``recorded_at`` in ms after the approval), then when ``wait`` returned.

Only what each side needs is imported, so ``imports`` is each side's own.
"""

from __future__ import annotations

import time

T_MAIN = time.time()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]


def baton(url: str, run_id: str) -> dict[str, float]:
    t0 = time.perf_counter()
    from actors.config import EngineConfig
    from actors.engine import Engine
    from eventstore import open_store

    from engine_flows import GATED, REGISTRY

    t1 = time.perf_counter()
    store = open_store(url)
    t2 = time.perf_counter()
    engine = Engine(store, REGISTRY, EngineConfig(max_active_runs=0, agent_slots=0)).start()
    engine.plan()  # answered once the orchestrator's recovery is done
    t3 = time.perf_counter()
    approved_at = time.time()
    engine.approve(run_id, "gate", by="bench")
    state = engine.wait(run_id, timeout=60)
    t4 = time.perf_counter()
    waited_at = time.time()
    done = sum(1 for s in state.steps.values() if s.status == "completed")
    # Where the resume's time went: each commit's recorded_at (taken as its group commit begins), from the approval.
    commits: dict[float, list[str]] = {}
    for rec in store.read_stream(f"run-{run_id}"):
        if rec.recorded_at >= approved_at:
            commits.setdefault(rec.recorded_at, []).append(rec.type)
    engine.stop()
    store.close()
    if state.status != "completed" or done != len(GATED.steps):
        raise SystemExit(f"baton run ended {state.status} with {done} steps completed")
    timeline = [["+".join(types), round((at - approved_at) * 1000, 2)] for at, types in sorted(commits.items())]
    timeline.append(["wait returned", round((waited_at - approved_at) * 1000, 2)])
    return {"imports": t1 - t0, "open": t2 - t1, "recovery": t3 - t2, "resume": t4 - t3,
            "timeline_ms": timeline}  # type: ignore[dict-item]


def langgraph(backend: str, conn: str, thread_id: str) -> dict[str, float]:
    t0 = time.perf_counter()
    from langgraph.types import Command

    import engine_langgraph as lg

    if backend == "sqlite":
        import sqlite3

        from langgraph.checkpoint.sqlite import SqliteSaver
    else:
        import psycopg
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import dict_row
    t1 = time.perf_counter()
    if backend == "sqlite":
        connection = sqlite3.connect(conn, check_same_thread=False)
        saver = SqliteSaver(connection)
    else:
        connection = psycopg.connect(conn, autocommit=True, prepare_threshold=0, row_factory=dict_row)
        saver = PostgresSaver(connection)
    saver.setup()
    t2 = time.perf_counter()
    graph = lg.gated_graph().compile(checkpointer=saver)
    t3 = time.perf_counter()
    final = graph.invoke(Command(resume="approved"), {"configurable": {"thread_id": thread_id}})
    t4 = time.perf_counter()
    connection.close()
    if final.get("steps") != 3:
        raise SystemExit(f"LangGraph resumed to {final!r}, not 3 steps")
    return {"imports": t1 - t0, "open": t2 - t1, "compile": t3 - t2, "resume": t4 - t3}


def main() -> None:
    side, *args = sys.argv[1:]
    phases = baton(*args) if side == "baton" else langgraph(*args)
    spawn = float(os.environ.get("BENCH_SPAWN", T_MAIN))
    print(json.dumps({"side": side, "startup": T_MAIN - spawn, **phases}), flush=True)


if __name__ == "__main__":
    main()
