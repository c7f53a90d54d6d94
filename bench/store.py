"""Event store benchmark: the store against the raw driver, same run, same table.

    .venv/bin/python bench/store.py [--backend sqlite|postgresql|both] [--quick]

For each backend it creates a scratch database (a temporary SQLite file; a
PostgreSQL database of its own, dropped at the end), then measures, in
alternating rounds so drift hits both sides alike:

- ``append_single``: raw single-row INSERT+COMMIT (autocommit, the driver's
  fastest single commit) on a table identical to ``events`` vs
  ``store.append`` of 1 event per call (with expected_version);
- ``append_batch``: raw ``executemany`` of 100 rows in one transaction vs
  ``store.append`` of 100 events per call;
- ``read_all``: a raw ``SELECT ... ORDER BY position`` iterating tuples vs
  iterating ``store.read_all()``, which decodes RecordedEvents page by page
  (both consume each row and drop it, like a projector or a stream);
- ``append_concurrent`` (informational): 8 threads appending 1 event per
  call through the group-commit writer vs the raw single-commit rate.

SQLite runs with the store's pragmas on both sides (WAL, synchronous=FULL).
Inputs (rows, NewEvents with their ids) are built before the clock starts.
Prints one JSON line per figure: the median rate of each side, the median
of the per-round ratios, and its target.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa  # noqa: E402

from eventstore import NewEvent, open_store  # noqa: E402
from eventstore.chain import event_hash  # noqa: E402
from eventstore.codec import encode_json  # noqa: E402
from eventstore.schema import build_events_table, create_table_ddl  # noqa: E402

PG_ADMIN = os.environ.get(
    "BATON_BENCH_PG", "postgresql+psycopg://root@/postgres?host=/var/run/postgresql"
)
TARGETS = {"append_single": 0.5, "append_batch": 0.5, "read_all": 0.4}
BATCH = 100
_COLUMNS = "position, stream_id, version, type, data, metadata, recorded_at, hash, event_id"
_RAW_COLUMNS = "event_id, stream_id, version, type, data, metadata, recorded_at, hash"


def payload(i: int) -> dict:
    """A representative event body (~250 bytes of JSON), like a StepCompleted."""
    return {
        "step_id": f"step-{i % 7}",
        "attempt": 1,
        "output": "The investigation found three candidate causes. " * 3,
        "fields": {"severity": "high", "confidence": 0.8, "refs": ["E1", "E2"]},
    }


METADATA = {"actor": "bench", "node": "bench-1", "schema_version": 1}


def raw_rows(n: int, tag: str) -> list[tuple]:
    """Rows shaped exactly like the store's, for the raw side."""
    rows, previous = [], ""
    for i in range(n):
        data = encode_json(payload(i))
        previous = event_hash(previous, "StepCompleted", data)
        rows.append((str(uuid.uuid4()), f"raw-{tag}-{i // BATCH}", i % BATCH + 1,
                     "StepCompleted", data, encode_json(METADATA), time.time(), previous))
    return rows


def new_events(n: int) -> list[NewEvent]:
    return [NewEvent("StepCompleted", payload(i), METADATA) for i in range(n)]


class Raw:
    """The raw driver on its own connection, against ``raw_events``."""

    def __init__(self, store) -> None:
        self.dialect = store.dialect
        table = build_events_table(sa.MetaData(), "raw_events")
        with store.database.begin() as conn:
            for ddl in create_table_ddl(table):
                conn.execute(ddl)
        if self.dialect == "sqlite":
            self.conn = sqlite3.connect(store.database.url.database, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = FULL")
            marks = ",".join("?" * 8)
        else:
            import psycopg

            url = store.database.url
            self.conn = psycopg.connect(
                dbname=url.database, user=url.username, host=url.query.get("host", url.host),
                autocommit=True,
            )
            marks = ",".join(["%s"] * 8)
        self.insert = f"INSERT INTO raw_events ({_RAW_COLUMNS}) VALUES ({marks})"

    def single(self, rows: list[tuple]) -> None:
        # autocommit: each INSERT is its own transaction, the fastest single commit
        for row in rows:
            self.conn.execute(self.insert, row)

    def batches(self, rows: list[tuple]) -> None:
        for start in range(0, len(rows), BATCH):
            chunk = rows[start : start + BATCH]
            if self.dialect == "sqlite":
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.executemany(self.insert, chunk)
                self.conn.execute("COMMIT")
            else:
                with self.conn.transaction(), self.conn.cursor() as cur:
                    cur.executemany(self.insert, chunk)

    def scan(self) -> int:
        # Rows are consumed one by one and dropped, as read_all's are below.
        count = 0
        for _row in self.conn.execute(f"SELECT {_COLUMNS} FROM events ORDER BY position"):
            count += 1
        return count


def consume(events) -> int:
    count = 0
    for _event in events:
        count += 1
    return count


def rate(n: int, fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def bench_backend(url: str, backend: str, quick: bool, rounds: int) -> list[dict]:
    n_single = 300 if quick else 1500
    n_batch = 2000 if quick else 10000
    figures: dict[str, tuple[list[float], list[float]]] = {
        name: ([], []) for name in ("append_single", "append_batch", "read_all", "append_concurrent")
    }

    def pair(name: str, n: int, raw_fn: Callable[[], object], store_fn: Callable[[], object],
             r: int) -> None:
        # Whichever side runs second inherits the first one's WAL flushes and
        # dirty pages: alternate the order from round to round.
        if r % 2 == 0:
            figures[name][0].append(rate(n, raw_fn))
            figures[name][1].append(rate(n, store_fn))
        else:
            figures[name][1].append(rate(n, store_fn))
            figures[name][0].append(rate(n, raw_fn))

    with open_store(url) as store:
        raw = Raw(store)
        streams = iter(range(1, 10**9))
        for r in range(rounds):
            # single appends: streams of 50 events, each append checking its version
            single_rows = raw_rows(n_single, f"s{r}")
            single_events = new_events(n_single)

            def store_single() -> None:
                for i, event in enumerate(single_events):
                    if i % 50 == 0:
                        stream = f"run-{next(streams)}"
                    store.append(stream, [event], expected_version=i % 50)

            pair("append_single", n_single, lambda: raw.single(single_rows), store_single, r)

            batch_rows = raw_rows(n_batch, f"b{r}")
            batch_events = new_events(n_batch)

            def store_batches() -> None:
                for start in range(0, n_batch, BATCH):
                    store.append(f"run-{next(streams)}", batch_events[start : start + BATCH], 0)

            pair("append_batch", n_batch, lambda: raw.batches(batch_rows), store_batches, r)

            # informational: 8 threads, 1 event per call, vs the raw single commit
            concurrent_events = new_events(n_single)
            concurrent_streams = [f"run-{next(streams)}" for _ in range(8)]

            def store_concurrent() -> None:
                def worker(w: int) -> None:
                    for i, event in enumerate(concurrent_events[w::8]):
                        store.append(concurrent_streams[w], [event], expected_version=i)

                threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()

            figures["append_concurrent"][0].append(figures["append_single"][0][-1])
            figures["append_concurrent"][1].append(rate(n_single, store_concurrent))

        total = store.head()
        for r in range(rounds):
            pair("read_all", total, raw.scan, lambda: consume(store.read_all()), r)
        raw.conn.close()

    out = []
    for name, (raw_rates, store_rates) in figures.items():
        raw_rate, store_rate = statistics.median(raw_rates), statistics.median(store_rates)
        # Each round measures both sides back to back: the median of the
        # per-round ratios cancels the drift of a shared machine best.
        ratio = statistics.median(s / r for s, r in zip(store_rates, raw_rates))
        target = TARGETS.get(name)
        unit = "rows/s" if name == "read_all" else "events/s"
        out.append({
            "backend": backend, "figure": name, "unit": unit,
            "raw": round(raw_rate), "store": round(store_rate), "ratio": round(ratio, 3),
            "target": target, "ok": None if target is None else ratio >= target,
            "rounds": len(raw_rates), "rows": total if name == "read_all" else None,
        })
    return out


def with_pg_database(fn: Callable[[str], list[dict]]) -> list[dict]:
    import psycopg

    admin = sa.engine.make_url(PG_ADMIN)
    name = f"baton_bench_{uuid.uuid4().hex[:10]}"
    conninfo = dict(dbname=admin.database or "postgres", user=admin.username,
                    host=admin.query.get("host", admin.host), password=admin.password,
                    port=admin.port)
    conninfo = {k: v for k, v in conninfo.items() if v}
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        return fn(admin.set(database=name).render_as_string(hide_password=False))
    finally:
        with psycopg.connect(**conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="fewer events (a smoke run)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (median)")
    args = parser.parse_args()
    print(json.dumps({"machine": platform.machine(), "cpus": os.cpu_count(),
                      "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
                      "load_average": os.getloadavg()}))
    results = []
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory(prefix="baton-bench-") as tmp:
            results += bench_backend(f"sqlite:///{tmp}/bench.db", "sqlite", args.quick,
                                     args.rounds)
    if args.backend in ("postgresql", "both"):
        results += with_pg_database(
            lambda url: bench_backend(url, "postgresql", args.quick, args.rounds)
        )
    for line in results:
        print(json.dumps(line))


if __name__ == "__main__":
    main()
