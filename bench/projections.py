"""Projection rebuild rate against the raw scan rate of the same events table.

    python bench/projections.py [--events 20000] [URL ...]

Fills a fresh store with realistic run logs (driven through the pure core:
``flows.decide`` and ``flows.state.evolve``, the way the RunActor drives
it), then measures, in the same run:

- the baseline: ``SELECT`` of every column of the events table through the raw
  driver (sqlite3 / psycopg), rows per second;
- ``projections.rebuild``: drop, recreate and replay from 0, events per second;

and prints one JSON line per backend with both and their ratio (target >= 0.25).
Without URLs it runs on a temporary SQLite file and on a temporary database
of the local PostgreSQL server (when one is reachable).

``simulate`` and ``fill`` are also used by tests/integration/test_projections.py.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# Run as a script, this file's directory comes first on sys.path and this
# module's name would shadow the projections package it measures.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

from eventstore import NewEvent, open_store  # noqa: E402
from flows import Flow, agent, approval, code  # noqa: E402
from flows import decide as d  # noqa: E402
from flows.events import AnomalyDetected, Event, RunLaunched, RunQueued, RunStarted, event_data  # noqa: E402
from flows.state import RunState, evolve  # noqa: E402

# -- catalogue-like flows (the spine of DESIGN §3a, and a triage with a condition) ---------


def fold_angles(ctx: Any) -> str:
    """Code step: fold the angles' outputs into one text."""
    return "\n\n".join(f"## {k}\n{v}" for k, v in sorted(ctx.outputs.items()))


def render_summary(ctx: Any) -> dict[str, Any]:
    """Code step: a summary as fields."""
    return {"steps": len(ctx.outputs)}


SPINE = Flow(
    "bench-architecture",
    category="Analysis",
    description="Angles in parallel, a fold, a synthesis, an adversarial validation and a sign-off.",
    steps=[
        agent("structural", persona="architect", prompt="Structure of: $input.question"),
        agent("behavioral", persona="analyst", prompt="Behaviour of: $input.question",
              bands=["medium", "large"]),
        agent("concurrency", persona="reviewer", prompt="Concurrency in: $input.question",
              bands=["large"], retries=1, retry_delay_s=2.0),
        code("fold", fn=fold_angles, deps=["structural", "behavioral", "concurrency"]),
        agent("synthesize", persona="synthesizer", deps=["fold"], prompt="Synthesise:\n$fold.output"),
        agent("validate", persona="validator", deps=["synthesize"], retries=2,
              prompt="Attack this answer:\n$synthesize.output"),
        approval("sign-off", deps=["validate"], prompt="Publish the answer to $input.question?"),
        code("render", fn=render_summary, deps=["sign-off"]),
    ],
)

TRIAGE = Flow(
    "bench-triage",
    category="Review",
    description="Investigate, classify, review when severe, sign off with a fallback.",
    steps=[
        agent("investigate", persona="investigator", prompt="Investigate: $input.question"),
        agent("classify", persona="triager", deps=["investigate"],
              prompt="Classify: $investigate.output (frontmatter: severity)"),
        agent("security", persona="security-reviewer", deps=["classify"],
              when="$classify.output.severity in ['high', 'critical']", prompt="Review: $investigate.output"),
        approval("gate", deps=["security"], trigger_rule="all_done", prompt="Publish this triage?",
                 on_reject=["fallback"]),
        agent("fallback", persona="writer", deps=["gate"], prompt="Write a note: $gate.output"),
    ],
)

FLOWS = (SPINE, TRIAGE)
_SEVERITIES = ("low", "medium", "high", "critical")


def _output(rng: random.Random, step_id: str, question: str) -> str:
    severity = rng.choice(_SEVERITIES)
    lines = [f"---\nseverity: {severity}\nconfidence: {rng.randint(40, 95) / 100}\n---",
             f"## {step_id}: findings on {question}"]
    for i in range(1, rng.randint(2, 6)):
        lines.append(f"- E{i}: `src/module_{rng.randint(1, 40)}.py:{rng.randint(1, 900)}` "
                     f"(trust: {rng.choice(['direct', 'inferred'])}) " + "observed behaviour " * rng.randint(3, 12))
    return "\n".join(lines) + "\n"


class _Run:
    """One run driven through the pure core; ``next_append`` gives its next batch of events."""

    def __init__(self, rng: random.Random, flow: Flow, run_id: str, now: float, project_id: str) -> None:
        self.rng, self.flow, self.run_id, self.now = rng, flow, run_id, now
        self.project_id = project_id
        self.state = RunState()
        self.history: list[tuple[int, Event]] = []
        self.done = False

    def record(self, events: list[Event], first_position: int) -> None:
        for offset, event in enumerate(events):
            self.state = evolve(self.state, event, first_position + offset)
            self.history.append((first_position + offset, event))
        self.done = self.state.terminal

    def next_append(self) -> list[Event]:
        rng, state = self.rng, self.state
        self.now += rng.uniform(0.05, 2.0)
        now = self.now
        if state.launched is None:
            band = rng.choice(self.flow.bands)
            question = f"question {self.run_id[-6:]} about subsystem {rng.randint(1, 30)}"
            launched = RunLaunched(run_id=self.run_id, flow=self.flow.name, snapshot=self.flow.snapshot(band),
                                   band=band, model="qwen3:8b", backend="offline",
                                   input={"question": question}, project_id=self.project_id,
                                   launched_by="bench", at=now)
            if rng.random() < 0.3:
                return [launched, RunQueued(run_id=self.run_id, reason="capacity",
                                            plan_position=rng.randint(1, 5), at=now)]
            return [launched]
        if state.status == "queued":
            return [RunStarted(run_id=self.run_id, reason="capacity freed", at=now)]
        if rng.random() < 0.01:
            return d.cancel(state, self.history, now, reason="changed my mind", by="bench")
        decision = d.decide(state, now)
        if decision.events:
            return decision.events
        if decision.finished:
            return [d.finish(state, self.history, now)]
        started = d.start(state, decision.ready, now)
        if started:
            return started
        running = state.running()
        if running:
            step_id = rng.choice(running)
            st, spec = state.steps[step_id], state.spec(step_id)
            question = str(state.launched.input.get("question", ""))
            if spec.kind == "code":
                return d.complete(state, step_id, st.attempt, f"folded {len(state.outputs())} outputs", now,
                                  duration_s=0.01, fields={"n": len(state.outputs())})
            roll = rng.random()
            if roll < 0.03:
                return [AnomalyDetected(step_id=step_id, attempt=st.attempt, kind="stall", severity="medium",
                                        detail="no token for 60 s", action="notify", at=now)]
            if roll < 0.12:
                return d.fail(state, step_id, st.attempt, "backend error: HTTP 500", now, duration_s=1.5)
            return d.complete(state, step_id, st.attempt, _output(rng, step_id, question), now,
                              duration_s=rng.uniform(2, 40), usage={"tokens": rng.randint(200, 4000)})
        paused = [sid for sid, s in state.steps.items() if s.status == "paused"]
        if paused:
            decision_ = "rejected" if rng.random() < 0.15 else "approved"
            return d.resume(state, paused[0], decision_, now, by="reviewer@example.com",
                            comment=f"{decision_}: looks {'wrong' if decision_ == 'rejected' else 'right'}")
        if decision.wake_at is not None:  # only retries pending: let their time come
            self.now = max(self.now, decision.wake_at)
            return self.next_append()
        raise RuntimeError(f"run {self.run_id} is stuck: {state.status}")


def simulate(events: int, *, seed: int = 7, concurrency: int = 8,
             flows: tuple[Flow, ...] = FLOWS) -> Iterator[tuple[str, list[Event]]]:
    """Appends ``(run_id, events)`` of interleaved runs, until about ``events`` events.

    Positions are counted as if appended in this order to an empty store (the
    reports' provenance tables cite them); every run started is run to its end.
    """
    rng = random.Random(seed)
    active: list[_Run] = []
    produced, position, serial = 0, 0, 0
    while produced < events or active:
        while produced < events and len(active) < concurrency:
            serial += 1
            # Sortable like a ULID and deterministic for a seed.
            run_id = f"01BENCH{seed:04d}{serial:08d}"
            project = f"project-{rng.randint(1, 4)}"
            active.append(_Run(rng, rng.choice(flows), run_id, 1.7e9 + serial * 10.0, project))
        run = rng.choice(active)
        batch = run.next_append()
        run.record(batch, position + 1)
        position += len(batch)
        produced += len(batch)
        yield run.run_id, batch
        if run.done:
            active.remove(run)


def fill(store: Any, events: int, *, seed: int = 7, concurrency: int = 8, writers: int = 1) -> int:
    """Append a simulated log of about ``events`` events to an empty store; returns the head.

    With ``writers`` > 1, runs are shared out among that many threads (each
    run's appends stay in order), so the store commits them in groups.
    """
    appends = list(simulate(events, seed=seed, concurrency=concurrency))
    lanes: list[list[tuple[str, list[Event]]]] = [[] for _ in range(max(1, writers))]
    for run_id, batch in appends:
        lanes[int(run_id[-8:]) % len(lanes)].append((run_id, batch))

    def write(lane: list[tuple[str, list[Event]]]) -> None:
        versions: dict[str, int] = {}
        for run_id, batch in lane:
            stream = f"run-{run_id}"
            expected = versions.get(stream, 0)
            store.append(stream, [NewEvent(type(e).__name__, event_data(e)) for e in batch],
                         expected_version=expected)
            versions[stream] = expected + len(batch)

    with ThreadPoolExecutor(len(lanes)) as pool:
        for done in [pool.submit(write, lane) for lane in lanes]:
            done.result()  # an append that failed fails the fill
    return store.head()


# -- measuring -------------------------------------------------------------------------------


def raw_scan(store: Any) -> tuple[int, float]:
    """Rows and seconds of one full SELECT of the events table through the raw driver."""
    sql = ("SELECT position, stream_id, version, type, data, metadata, recorded_at, hash, event_id "
           "FROM events ORDER BY position")
    raw = store.database.raw_connection()
    try:
        cur = raw.driver_connection.cursor()
        began = time.perf_counter()
        cur.execute(sql)
        count = 0
        while rows := cur.fetchmany(5000):
            count += len(rows)
        seconds = time.perf_counter() - began
        cur.close()
    finally:
        raw.close()
    return count, seconds


def measure_rebuild(url: str, events: int = 20000, rounds: int = 11) -> dict[str, Any]:
    """Fill the store at ``url`` (if empty), then time the raw scan and ``rebuild``.

    Each round times one scan and one rebuild, back to back, so a busy
    machine slows both alike; ``ratio`` is the median of the rounds'
    ratios (``ratio_range`` the lowest and highest), the rates are the best
    of all rounds and their medians.
    """
    from projections import rebuild

    store = open_store(url)
    try:
        began = time.perf_counter()
        if store.head() == 0:
            fill(store, events, writers=8)
        fill_s = time.perf_counter() - began
        rebuild(store)  # warm up: the first drop of the tables costs more than the rest
        scans, rebuilds, ratios = [], [], []
        rows = 0
        for _ in range(rounds):
            rows, scan_s = raw_scan(store)
            stats = rebuild(store)
            scans.append(scan_s)
            rebuilds.append(stats.seconds)
            ratios.append(scan_s / stats.seconds)
        ratios.sort()
        return {
            "bench": "projections.rebuild",
            "backend": store.dialect,
            "events": rows,
            "fill_s": round(fill_s, 2),
            "raw_scan_rows_per_s": round(rows / min(scans)),
            "rebuild_events_per_s": round(rows / min(rebuilds)),
            "raw_scan_rows_per_s_median": round(rows / statistics.median(scans)),
            "rebuild_events_per_s_median": round(rows / statistics.median(rebuilds)),
            "rebuild_s": round(min(rebuilds), 3),
            "ratio": round(ratios[len(ratios) // 2], 3),
            "ratio_range": [round(ratios[0], 3), round(ratios[-1], 3)],
            "target_ratio": 0.25,
        }
    finally:
        store.close()


def _temporary_pg() -> tuple[str, Any] | None:
    try:
        import psycopg
    except ImportError:
        return None
    admin = os.environ.get("BATON_BENCH_PG", "host=/var/run/postgresql dbname=postgres user=root")
    name = f"baton_bench_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        print(json.dumps({"bench": "projections.rebuild", "backend": "postgresql", "skipped": str(exc)}))
        return None

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"postgresql+psycopg://root@/{name}?host=/var/run/postgresql", drop


def main(argv: list[str]) -> None:
    events = 20000
    if argv[:1] == ["--events"]:
        events, argv = int(argv[1]), argv[2:]
    if argv:
        for url in argv:
            print(json.dumps(measure_rebuild(url, events)), flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(measure_rebuild(f"sqlite:///{tmp}/bench.db", events)), flush=True)
    pg = _temporary_pg()
    if pg is not None:
        url, drop = pg
        try:
            print(json.dumps(measure_rebuild(url, events)), flush=True)
        finally:
            drop()


if __name__ == "__main__":
    main(sys.argv[1:])
