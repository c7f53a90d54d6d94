"""What a stream resuming from position 0 costs, in one process: the read, decode, framing and SSE
encoding of every frame, old way and new way, in alternating rounds, beside the driver's raw scan.

    .venv/bin/python bench/resume_path.py URL [--rounds 5] [--ways old,decoded,new]

``old``: ``projections.source.read_framed`` (only the run events of framed types, each page decoded
into events) through ``Framer.event_frames`` (a dict per frame) and ``api.http.stream.sse_lines``
per page: the replay before ``Framer.encode_rows``. ``new``: ``FrameHub.read_frames`` itself, on an
event loop (``read_framed_rows`` and ``Framer.encode_rows`` in worker threads: no frame dicts),
then ``sse_lines`` per page: what the server does for ``/api/stream?after=0`` but the socket.
``decoded``: ``new`` with each run's report decoded and encoded again instead of passed through as its
stored JSON text, and each launch's snapshot decoded instead of its plan reused (``_REPORT_TEXT`` emptied
and ``_LAUNCHED`` renamed in ``projections.frames`` for the round): ``new`` before those two changes.
``store``: ``store.read_all`` (every event, decoded into ``RecordedEvent``s) through
``Framer.frames`` (the path before ``read_framed``). ``raw``: the driver's own scan of the same
rows (position, stream_id, type, data), rows/s, every round. Each figure is frames/s of wall time;
``*_cpu_frames_per_s`` divides by the process's CPU time instead (worker threads included), the
cost on a machine that others share. No HTTP: the server adds its socket writes on top
(``bench/scale.py --parts resume``). Prints one JSON line per round (with the load average) and
one with the medians and the best (ratios: of the per-round ratios).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.http.hub import FrameHub
from api.http.stream import sse_lines
from eventstore import open_store
from projections import frames
from projections.frames import FRAMED_TYPES, Framer
from projections.source import read_framed

PAGE = 2000


def raw(url: str) -> float:
    sql = "SELECT position, stream_id, type, data FROM events ORDER BY position"
    t0 = time.perf_counter()
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        rows = sum(1 for _ in conn.execute(sql))
        conn.close()
    else:
        import psycopg
        from sqlalchemy.engine import make_url

        u = make_url(url)
        with psycopg.connect(dbname=u.database, user=u.username, host=u.query.get("host")) as conn, \
                conn.cursor(name="scan") as cur:
            cur.itersize = 5000
            cur.execute(sql)
            rows = sum(1 for _ in cur)
    return rows / (time.perf_counter() - t0)


def store_way(store) -> tuple[int, int]:
    framer = Framer()
    frames = size = 0
    page = []
    for rec in store.read_all(after=0):
        page.extend(framer.frames(rec))
        if len(page) >= PAGE:
            frames, size, page = frames + len(page), size + len(sse_lines(page)), []
    return frames + len(page), size + len(sse_lines(page))


def old_way(store) -> tuple[int, int]:
    framer = Framer()
    frames = size = 0
    for page in read_framed(store, 0, store.head(), FRAMED_TYPES, PAGE):
        out = [f for run, event, position, _ in page.items for f in framer.event_frames(run, event, position)]
        frames, size = frames + len(out), size + len(sse_lines(out))
    return frames, size


def new_way(store) -> tuple[int, int]:
    async def replay() -> tuple[int, int]:
        hub = FrameHub(store)  # not started: read_frames reads the store on its own
        frames = size = 0
        async for page in hub.read_frames(0, store.head(), None):
            frames, size = frames + len(page), size + len(sse_lines(page))
        return frames, size

    return asyncio.run(replay())


def decoded_way(store) -> tuple[int, int]:
    saved, launched = dict(frames.REPORT_TEXT), frames.LAUNCHED
    frames.REPORT_TEXT.clear()
    frames.LAUNCHED = "-"  # no type: every launch decoded whole
    try:
        return new_way(store)
    finally:
        frames.REPORT_TEXT.update(saved)
        frames.LAUNCHED = launched


WAYS = {"store": store_way, "old": old_way, "new": new_way, "decoded": decoded_way}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ways", default="old,decoded,new", help=f"of {','.join(WAYS)}, alternated round by round")
    args = parser.parse_args()
    names = [w.strip() for w in args.ways.split(",") if w.strip()]
    store = open_store(args.url)
    rows: list[dict[str, float]] = []
    try:
        for i in range(args.rounds):
            order = names[::-1] if i % 2 else names
            line: dict[str, float] = {"load_1m": os.getloadavg()[0], "raw_rows_per_s": raw(args.url)}
            for name in order:
                t0, c0 = time.perf_counter(), time.process_time()
                frames, size = WAYS[name](store)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                line[f"{name}_frames_per_s"] = frames / wall
                line[f"{name}_cpu_frames_per_s"] = frames / cpu
                line[f"{name}_frames"] = frames
                line[f"{name}_mb"] = size / 1e6
            for other in ("old", "decoded"):
                if other in names and "new" in names:
                    line[f"new_over_{other}"] = line["new_frames_per_s"] / line[f"{other}_frames_per_s"]
                    line[f"new_over_{other}_cpu"] = line["new_cpu_frames_per_s"] / line[f"{other}_cpu_frames_per_s"]
            if "new" in names:
                line["new_over_raw"] = line["new_frames_per_s"] / line["raw_rows_per_s"]
            rows.append(line)
            print(json.dumps({"round": i, **{k: round(v, 3) for k, v in line.items()}}), flush=True)
    finally:
        store.close()
    print(json.dumps({"median": {k: round(statistics.median(r[k] for r in rows), 3) for k in rows[0]},
                      "best": {k: round(max(r[k] for r in rows), 3) for k in rows[0]}}))


if __name__ == "__main__":
    main()
