"""DBOS as a second peer of ``bench/engine.py`` (optional ``bench-dbos`` extra): W1 only.

    python bench/engine_dbos.py sqlite|postgresql URL sequential|concurrent RUNS

DBOS keeps one instance per process (``DBOS(config=...)``, ``DBOS.launch()``),
so each round runs in a process of its own: ``bench/engine.py`` starts one
per round, alternating with baton's round and LangGraph's. The process
launches DBOS on the bench's database (a SQLite file, or a PostgreSQL
database of its own), runs one untimed warm-up run, then the timed ones,
and prints ``{"wall": s, "cpu": s}``.

W1 as a DBOS workflow: 20 ``@DBOS.step()`` calls in a row, each returning the
same output as baton's steps (200 characters in the sequential shape, none in
the concurrent one); each step's output is checkpointed by DBOS before the
next begins, as baton records each step's result. Sequential: one
workflow after another (``DBOS.start_workflow`` then ``get_result``);
concurrent: RUNS workflows started at once, then every result awaited.

W2 (a fan-out of 50 parallel steps) would need 50 child workflows on a
queue per run in DBOS, and W4 ``DBOS.recv`` with a notification poll on
SQLite: neither is measured here.
"""

from __future__ import annotations

import json
import sys
import time

OUTPUT = ("baton " * 40)[:200]
STEPS = 20


def available() -> tuple[bool, str]:
    """(True, version) when dbos imports, else (False, why)."""
    try:
        import importlib.metadata as md

        import dbos  # noqa: F401

        return True, md.version("dbos")
    except ImportError as exc:
        return False, f"{exc} (install the optional extra: pip install -e '.[bench-dbos]')"


def main() -> None:
    backend, url, shape, runs_text = sys.argv[1:]
    runs = int(runs_text)
    from dbos import DBOS, DBOSConfig

    config: DBOSConfig = {"name": "baton-bench", "system_database_url": url, "log_level": "WARNING"}
    DBOS(config=config)
    out = OUTPUT if shape == "sequential" else ""

    @DBOS.step()
    def step(i: int) -> str:
        return out

    @DBOS.workflow()
    def chain() -> int:
        done = 0
        for i in range(STEPS):
            step(i)
            done += 1
        return done

    DBOS.launch()
    try:
        def run(count: int) -> None:
            if shape == "sequential":
                results = [DBOS.start_workflow(chain).get_result() for _ in range(count)]
            else:
                handles = [DBOS.start_workflow(chain) for _ in range(count)]
                results = [h.get_result() for h in handles]
            if any(r != STEPS for r in results):
                raise SystemExit(f"a DBOS workflow ran {results} steps, not {STEPS}")

        run(1)  # warm-up
        c0, t0 = time.process_time(), time.perf_counter()
        run(runs)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        DBOS.destroy()
    print(json.dumps({"wall": wall, "cpu": cpu}), flush=True)


if __name__ == "__main__":
    main()
