"""Where a step's CPU time goes: the sequential W1 of bench/engine.py under py-spy, stacks sorted into parts.

    .venv/bin/python bench/profile_steps.py [--backend sqlite|postgresql] [--runs 60] [--rate 400]
                                            [--out DIR] [--gil]

Runs ``bench/engine.py``'s sequential W1 (20-step chains of code steps that
return 200 characters, one run after another) for ``--runs`` runs in a child
process, recorded by ``py-spy record --pid`` once the child is warm
(imports and three runs done): raw collapsed stacks, every thread, idle
samples dropped; ``--gil`` keeps only the thread holding the GIL, i.e. the
Python CPU, without threads py-spy takes for running while they wait for
a lock on a loaded machine.
Then it sorts every sample into one part, by the innermost frame it
recognises (the table below, first match from the leaf up), and prints one
JSON line per part: its share of the samples and its CPU microseconds per
step (the share times the child's measured CPU per step), then the 25
hottest functions by own time and by inclusive time. The raw stacks stay
in ``--out``/profile.txt (any collapsed-stack flame graph tool reads them).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE.parent), str(_HERE)]

# (part, a substring of "file:function" in a frame); the first match from the leaf up wins.
PARTS: list[tuple[str, str]] = [
    ("hash (sha256 of the chain)", "chain.py:event_hash"),
    ("msgspec encode (events to JSON)", "codec.py:encode"),
    ("msgspec decode (rows / JSON to events)", "codec.py:decode"),
    ("msgspec decode (rows / JSON to events)", "runlog.py:decode"),
    ("msgspec decode (rows / JSON to events)", "sql.py:_recorded"),
    ("fold (flows.state.evolve)", "flows/state.py"),
    ("decide (flows.decide)", "flows/decide.py"),
    ("report (flows.report)", "flows/report.py"),
    ("report (flows.report)", "flows/review.py"),
    ("rules, conditions, templates", "flows/rules.py"),
    ("rules, conditions, templates", "flows/conditions.py"),
    ("rules, conditions, templates", "flows/template.py"),
    ("anomaly checks", "flows/anomaly.py"),
    ("redaction", "flows/redact.py"),
    ("frames and the bus", "actors/bus.py"),
    ("frames and the bus", "projections/frames.py"),
    ("SQL append: SQLite driver", "sqlite.py:"),
    ("SQL append: PostgreSQL driver", "postgres.py:"),
    ("SQL append: PostgreSQL driver", "psycopg/"),
    ("SQL: SQLAlchemy (pool, connections)", "sqlalchemy/"),
    ("group-commit writer (queue, hand-off)", "writer.py:"),
    ("store reads / subscription (Engine.wait)", "subscription.py:"),
    ("store reads / subscription (Engine.wait)", "listen.py:"),
    ("store: append / read_stream", "eventstore/sql.py:"),
    ("step: running the code step (StepActor)", "actors/step.py:"),
    ("RunActor (its own code)", "actors/run.py:"),
    ("orchestrator", "actors/orchestrator.py:"),
    ("engine facade (launch, wait)", "actors/engine.py:"),
    ("clock / timers", "actors/clock.py:"),
    ("pykka messaging (inbox, envelopes, futures)", "pykka/"),
    ("thread hand-offs (locks, conditions, queues, pool)", "threading.py:"),
    ("thread hand-offs (locks, conditions, queues, pool)", "queue.py:"),
    ("thread hand-offs (locks, conditions, queues, pool)", "concurrent/futures/"),
    ("ids (ULID, uuid)", "ulid/"),
    ("ids (ULID, uuid)", "uuid.py:"),
    ("ids (ULID, uuid)", "store.py:new_event_id"),
    ("bench driver", "engine.py:run_sequential"),
]


# Inclusive shares worth reading on their own: who spends (the threads' roles), and the costs
# that cut across parts (a function's share counts every sample with it on the stack).
INCLUSIVE: list[tuple[str, str]] = [
    ("thread: RunActor (pykka actor loop, one per run)", "actors/run.py:RunActor.on_receive"),
    ("thread: the caller's Engine.wait (follows the store)", "actors/engine.py:Engine.wait"),
    ("thread: the caller's Engine.launch", "actors/engine.py:Engine.launch"),
    ("thread: group-commit writer", "eventstore/writer.py:GroupCommitWriter._run"),
    ("thread: step pool (StepActor.run)", "actors/step.py:StepActor.run"),
    ("thread: orchestrator", "actors/orchestrator.py:Orchestrator.on_receive"),
    ("thread: clock", "actors/clock.py:RealClock._loop"),
    ("RunActor._commit (append and wait for it)", "actors/run.py:RunActor._commit"),
    ("RunActor._start_attempt (hand the step to the pool)", "actors/run.py:RunActor._start_attempt"),
    ("RunActor load (read + fold the stream)", "actors/runlog.py:load"),
    ("SqlEventStore.append (caller side: encode, submit, wait, build records)",
     "eventstore/sql.py:SqlEventStore.append"),
    ("GroupCommitWriter.submit (hand-off to the writer, wait)", "eventstore/writer.py:GroupCommitWriter.submit"),
    ("writer: commit_group (SQLite)", "eventstore/sqlite.py:SqliteBackend.commit_group"),
    ("writer: commit_group (PostgreSQL)", "eventstore/postgres.py:PostgresBackend.commit_group"),
    ("Subscription.next_event (re-reads rows after each wake-up)",
     "eventstore/subscription.py:Subscription.next_event"),
    ("store reads: SqlEventStore._read_rows", "eventstore/sql.py:SqlEventStore._read_rows"),
    ("store reads: SqlEventStore.read_stream", "eventstore/sql.py:SqlEventStore.read_stream"),
    ("SQLAlchemy pool checkout / return (per read)", "sqlalchemy/pool/base.py:Pool.connect"),
    ("SQLAlchemy pool return", "sqlalchemy/pool/base.py:_ConnectionFairy._checkin"),
    ("flows.decide.decide", "flows/decide.py:decide"),
    ("flows.state.evolve", "flows/state.py:evolve"),
    ("codec: decode (JSON -> events)", "eventstore/codec.py:decode"),
    ("codec: encode (events -> JSON)", "eventstore/codec.py:encode"),
    ("chain: event_hash (sha256)", "eventstore/chain.py:event_hash"),
    ("ThreadPoolExecutor.submit", "concurrent/futures/thread.py:ThreadPoolExecutor.submit"),
    ("pykka ActorRef.tell", "pykka/_ref.py:ActorRef.tell"),
    ("pykka actor start (a RunActor per run)", "pykka/_actor.py:Actor.start"),
    ("FrameBus.publish", "actors/bus.py:FrameBus.publish"),
    ("new_event_id", "eventstore/store.py:new_event_id"),
]


# Samples outside the timed runs: the store's and the scratch database's clean-up.
OUTSIDE = ("BatonSide.close", "pg_database", "TemporaryDirectory", "Engine.stop")


def record(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """py-spy record the child once it is warm (imports and three runs done); its stats line."""
    stats = out / "stats.json"
    child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", "--backend", args.backend,
                              "--runs", str(args.runs), "--stats", str(stats)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    if child.stdout.readline().strip() != "ready":
        raise RuntimeError("the profiled child did not start")
    spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-r", str(args.rate), "-f", "raw",
                            "-o", str(out / "profile.txt"), "--threads", *(["--gil"] if args.gil else []),
                            "--pid", str(child.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # py-spy attaches
    child.stdin.write("go\n")
    child.stdin.flush()
    if child.wait() != 0:
        raise RuntimeError("the profiled child failed")
    spy.wait(60)
    return json.loads(stats.read_text())


def child(args: argparse.Namespace) -> None:
    """Sequential W1 on a scratch store (what py-spy watches)."""
    import engine as bench

    def go(url: str) -> None:
        side = bench.BatonSide(url)
        try:
            side.run_sequential(bench.CHAIN_OUT, 3, 20)  # warm-up
            print("ready", flush=True)
            sys.stdin.readline()  # py-spy is attached
            c0, t0 = time.process_time(), time.perf_counter()
            side.run_sequential(bench.CHAIN_OUT, args.runs, 20)
            cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        finally:
            side.close()
        steps = args.runs * 20
        Path(args.stats).write_text(json.dumps({"cpu_us_per_step": cpu / steps * 1e6, "steps_per_s": steps / wall,
                                                "steps": steps}))

    if args.backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="baton-profile-") as tmp:
            go(f"sqlite:///{tmp}/baton.db")
    else:
        with bench.pg_database("profile") as name:
            go(f"postgresql+psycopg://root@/{name}?host=/var/run/postgresql")


def frame_key(frame: str) -> str:
    """``function (path/file.py:line)`` -> ``path/file.py:function``."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "python3.11/", "p1-bench/", "/work/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{path}:{name}"


def analyse(profile: Path, stats: dict[str, Any], top: int = 25) -> list[dict[str, Any]]:
    parts: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = outside = 0
    for line in profile.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [frame_key(f) for f in stack.split(";") if " (" in f and not f.startswith(("thread (", "process "))]
        if not frames or any(mark in k for k in frames for mark in OUTSIDE):
            outside += count  # a thread with no Python frame (the interpreter's exit), or the clean-up
            continue
        total += count
        own[frames[-1]] += count
        for key in set(frames):
            inclusive[key] += count
        part = "other"
        for key in reversed(frames):
            hit = next((p for p, pattern in PARTS if pattern in key), None)
            if hit is not None:
                part = hit
                break
        parts[part] += count
    per_step = stats["cpu_us_per_step"]
    lines: list[dict[str, Any]] = [{"samples": total, "left_out": outside}]
    lines += [{"part": p, "share": round(c / total, 3), "cpu_us_per_step": round(c / total * per_step, 1)}
             for p, c in parts.most_common()]
    for what, key in INCLUSIVE:
        hits = sum(c for k, c in inclusive.items() if k.startswith(key))
        if hits:
            lines.append({"inclusive": what, "function": key, "share": round(hits / total, 3),
                          "cpu_us_per_step": round(hits / total * per_step, 1)})
    lines.append({"hotspots_own": [(k, round(c / total, 3)) for k, c in own.most_common(top)]})
    lines.append({"hotspots_inclusive": [(k, round(c / total, 3)) for k, c in inclusive.most_common(top + 15)]})
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--rate", type=int, default=400, help="py-spy samples per second")
    parser.add_argument("--gil", action="store_true", help="only the thread holding the GIL")
    parser.add_argument("--out", default="", help="folder for profile.txt / profile.svg (default: a temp one)")
    parser.add_argument("--analyse", default="", metavar="FILE",
                        help="only sort an existing raw py-spy file (e.g. bench/scale.py --spy) into parts")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stats", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.analyse:
        for line in analyse(Path(args.analyse), {"cpu_us_per_step": 0.0}, top=30):
            print(json.dumps({"bench": "profile_steps", "file": args.analyse, **line}), flush=True)
        return
    out = Path(args.out or tempfile.mkdtemp(prefix="baton-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    stats = record(args, out)
    print(json.dumps({"bench": "profile_steps", "backend": args.backend, "gil_only": args.gil, **stats,
                      "samples_file": str(out / "profile.txt"),
                      "loadavg_1m": round(os.getloadavg()[0], 2)}), flush=True)
    for line in analyse(out / "profile.txt", stats):
        print(json.dumps({"bench": "profile_steps", "backend": args.backend, **line}), flush=True)


if __name__ == "__main__":
    main()
