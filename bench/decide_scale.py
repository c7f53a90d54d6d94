"""A decision's cost against the size of the flow: chains of 20, 200 and 1,000 code steps, pure core only.

    .venv/bin/python bench/decide_scale.py [--tree DIR] [--sizes 20,200,1000] [--rounds 5]

Drives ``flows.decide`` and the fold as the RunActor does for each step of a
chain (decide, which starts the next step; then the step's completion folded),
with no store, thread or actor: what ``flows/`` itself costs per step. A
decision looks only at the run's frontier (``flows.state.frontier``), so the
cost per step should not grow with the number of steps; before it, every
decision passed over every step (quadratic per run). Prints one JSON line per
size: the least microseconds per step over the rounds, and its ratio to the
smallest size's, measured in the same run. ``--tree`` measures another
checkout's ``flows`` (e.g. the tree before a change).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def per_step_us(size: int, rounds: int) -> float:
    from flows import Flow, code
    from flows import decide as d
    from flows.events import RunLaunched, RunStarted
    from flows.state import RunState, evolve

    steps = [code(f"s{i}", fn=lambda ctx: "x", deps=[f"s{i - 1}"] if i else []) for i in range(size)]
    snapshot = Flow(f"chain-{size}", category="Analysis", steps=steps).snapshot()
    best = float("inf")
    for _ in range(rounds):
        state = evolve(RunState(), RunLaunched(run_id="r", flow=snapshot.name, snapshot=snapshot, at=1.0))
        state = evolve(state, RunStarted(run_id="r", at=1.0))
        began = time.perf_counter()
        for i in range(size):
            decision = d.decide(state, 2.0)
            state = decision.state or state
            step_id = f"s{i}"
            for event in d.complete(state, step_id, state.steps[step_id].attempt, "out", 2.0):
                state = evolve(state, event)
        if not d.decide(state, 2.0).finished:
            raise RuntimeError(f"the {size}-step chain did not finish")
        best = min(best, (time.perf_counter() - began) / size * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default=str(Path(__file__).resolve().parent.parent))
    parser.add_argument("--sizes", default="20,200,1000")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, args.tree)
    sizes = [int(s) for s in args.sizes.split(",")]
    base = None
    for size in sizes:
        us = per_step_us(size, args.rounds)
        base = base or us
        print(json.dumps({"bench": "decide_scale", "tree": args.tree, "steps": size, "us_per_step": round(us, 1),
                          "ratio_to_smallest": round(us / base, 2)}), flush=True)


if __name__ == "__main__":
    main()
