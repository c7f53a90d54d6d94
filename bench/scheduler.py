"""Scheduler benchmark: slot utilisation and fairness under a queue of fan-outs.

200 runs of a 10-step fan-out (agent steps on the offline backend, 20 ms
each) against ``agent_slots=4``, all launched at once. Prints one JSON line per
figure:

- slot utilisation = sum of step times / (slots x wall time from the first
  step's start to the last step's end); target >= 90%;
- the longest time any run waited for its first step, against the fair share:
  with N runs all asking at once and S slots handed out fairly, every run's
  first step should start within ceil(N / S) step turns.

Usage: python bench/scheduler.py [--runs 200] [--steps 10] [--slots 4] [--step-ms 20] [--db URL]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from actors.agents import OfflineBackend  # noqa: E402
from actors.config import EngineConfig  # noqa: E402
from actors.engine import Engine  # noqa: E402
from eventstore import open_store  # noqa: E402
from flows import Flow, agent  # noqa: E402
from flows.catalog import FlowRegistry  # noqa: E402
from flows.events import stream_of  # noqa: E402


def fan_out(steps: int) -> Flow:
    return Flow("fan-out", steps=[agent(f"s{i}", persona="analyst", prompt=f"part {i}: $input.question")
                                  for i in range(steps)])


def measure(url: str, runs: int, steps: int, slots: int, step_s: float) -> list[dict]:
    store = open_store(url)
    registry = FlowRegistry([fan_out(steps)])
    config = EngineConfig(agent_slots=slots, max_active_runs=0)
    engine = Engine(store, registry, config, backend=OfflineBackend(delay_s=step_s)).start()
    try:
        launched_at: dict[str, float] = {}
        for i in range(runs):
            run_id = engine.launch("fan-out", f"question {i}").run_id
            launched_at[run_id] = time.time()
        for run_id in launched_at:
            engine.wait(run_id, timeout=600)
    finally:
        engine.stop()
    starts, ends, busy, first_wait = [], [], 0.0, []
    for run_id, t_launch in launched_at.items():
        events = store.read_stream(stream_of(run_id))
        launch_at = events[0].data["at"]
        run_starts = [e.data["at"] for e in events if e.type == "StepStarted"]
        for e in events:
            if e.type == "StepCompleted":
                ends.append(e.data["at"])
                busy += e.data["duration_s"]
        starts += run_starts
        first_wait.append(min(run_starts) - launch_at)
    store.close()
    wall = max(ends) - min(starts)
    utilisation = busy / (slots * wall)
    fair_s = math.ceil(runs / slots) * step_s
    worst = max(first_wait)
    common = {"bench": "scheduler", "runs": runs, "steps_per_run": steps, "agent_slots": slots,
              "step_ms": step_s * 1000}
    return [
        {**common, "figure": "slot_utilisation", "value": round(utilisation, 4), "target": 0.9,
         "ok": utilisation >= 0.9, "busy_s": round(busy, 3), "wall_s": round(wall, 3)},
        {**common, "figure": "first_step_wait", "worst_s": round(worst, 3),
         "median_s": round(statistics.median(first_wait), 3), "fair_share_s": round(fair_s, 3),
         "ratio_to_fair_share": round(worst / fair_s, 3), "ok": worst <= fair_s * 1.5},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--step-ms", type=float, default=20.0)
    parser.add_argument("--db", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{tmp}/scheduler.db"
        for line in measure(url, args.runs, args.steps, args.slots, args.step_ms / 1000):
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
