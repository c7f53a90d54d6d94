"""Inbox benchmark: what following the store for commands costs an engine, and what a hand-over takes.

    .venv/bin/python bench/inbox.py [--backend sqlite|postgresql|both] [--rounds N]

Every engine follows its inbox (``actors/inbox.py``) through a store
subscription that reads every event appended, so it costs the engine
something while it drives its own runs. Figures, each with its baseline
measured in the same run (rounds alternate, best of ``--rounds``):

- ``engine_steps_per_s``: 50 runs of a 20-step chain of no-op code steps,
  launched at once and waited for (bench/engine.py's W1), with the inbox
  followed, and ``baseline`` without it (its follower not started);
- ``command_ms``: cancelling a run driven by another engine on the same
  store (handed to that engine's inbox and answered), and ``baseline``
  cancelling a run this engine drives itself. Median of 20 cancels.

Prints one JSON line per figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE.parent), str(_HERE)]

from actors.config import EngineConfig  # noqa: E402
from actors.engine import Engine  # noqa: E402
from actors.inbox import Inbox  # noqa: E402
from eventstore import open_store  # noqa: E402
from flows import Flow, approval, code  # noqa: E402
from flows.catalog import FlowRegistry  # noqa: E402

PG_ADMIN = {"host": "/var/run/postgresql", "user": "root", "dbname": "postgres"}


def nothing(ctx: Any) -> str:
    """A code step that does no work."""
    return ""


def hold(ctx: Any) -> str:
    """A code step that runs long enough to be cancelled while it runs."""
    time.sleep(2.0)
    return ""


CHAIN = Flow("bench-chain", [code(f"s{i}", fn=nothing, deps=[f"s{i - 1}"] if i else []) for i in range(20)])
HELD = Flow("bench-held", [code("hold", fn=hold), approval("gate", deps=["hold"], prompt="go?")])
REGISTRY = FlowRegistry([CHAIN, HELD])
CONFIG = EngineConfig(max_active_runs=0, agent_slots=0)


@contextmanager
def inbox_followed(on: bool) -> Iterator[None]:
    """Engines started inside follow their inbox (the product) or not (the baseline)."""
    start = Inbox.start
    if not on:
        Inbox.start = lambda self: self  # type: ignore[method-assign]
    try:
        yield
    finally:
        Inbox.start = start  # type: ignore[method-assign]


def steps_per_s(url: str, follow: bool) -> float:
    with inbox_followed(follow):
        store = open_store(url)
        engine = Engine(store, REGISTRY, CONFIG).start()
    try:
        t0 = time.perf_counter()
        run_ids = [engine.launch("bench-chain", "bench").run_id for _ in range(50)]
        for run_id in run_ids:
            assert engine.wait(run_id, timeout=600).status == "completed"
        return 1000 / (time.perf_counter() - t0)
    finally:
        engine.stop()
        store.close()


def command_ms(url: str, elsewhere: bool) -> float:
    store = open_store(url)
    driver = Engine(store, REGISTRY, EngineConfig(node=f"driver-{uuid.uuid4().hex[:6]}", max_active_runs=0,
                                                  agent_slots=0)).start()
    asker = Engine(store, REGISTRY, EngineConfig(node=f"asker-{uuid.uuid4().hex[:6]}")).start() if elsewhere \
        else driver
    try:
        took = []
        for _ in range(20):
            run_id = driver.launch("bench-held", "bench").run_id
            driver.wait(run_id, lambda s: s.steps["hold"].status == "running", timeout=30)
            t0 = time.perf_counter()
            asker.cancel(run_id)
            took.append((time.perf_counter() - t0) * 1000)
        return statistics.median(took)
    finally:
        if asker is not driver:
            asker.stop()
        driver.stop()
        store.close()


def figures(backend: str, url_of: Any, rounds: int) -> Iterator[dict[str, Any]]:
    best = {"followed": 0.0, "baseline": 0.0}
    for _ in range(rounds):
        best["followed"] = max(best["followed"], steps_per_s(url_of(), True))
        best["baseline"] = max(best["baseline"], steps_per_s(url_of(), False))
    yield {"figure": "engine_steps_per_s", "backend": backend, "value": round(best["followed"]),
           "baseline": round(best["baseline"]), "ratio": round(best["followed"] / best["baseline"], 3)}
    handed, local = command_ms(url_of(), True), command_ms(url_of(), False)
    yield {"figure": "command_ms", "backend": backend, "value": round(handed, 1), "baseline": round(local, 1),
           "what": "cancel handed to another engine's inbox vs carried out by the engine driving the run"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            for figure in figures("sqlite", lambda: f"sqlite:///{tmp}/{uuid.uuid4().hex}.db", args.rounds):
                print(json.dumps(figure), flush=True)
    if args.backend in ("postgresql", "both"):
        import psycopg

        names: list[str] = []

        def pg_url() -> str:
            name = f"baton_bench_inbox_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(**PG_ADMIN, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}")
            names.append(name)
            return f"postgresql+psycopg://root@/{name}?host=/var/run/postgresql"

        try:
            for figure in figures("postgresql", pg_url, args.rounds):
                print(json.dumps(figure), flush=True)
        finally:
            with psycopg.connect(**PG_ADMIN, autocommit=True) as conn:
                for name in names:
                    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
