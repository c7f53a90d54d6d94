"""The run report's rendering alone (``flows.report.render``), for chains of code steps, two trees in turns.

    .venv/bin/python bench/report_render.py [--old DIR] [--steps 20,200,1000] [--rounds 5]

The report is rendered once per run, at its end, inside the transaction that
records RunCompleted; its cost grows with the run's history. A run here is
``bench/engine.py``'s W1 chain (code steps returning 200 characters) of the
given length, driven to its end on the pure core (no store, no actors), so
the history is the one the engine would record. Each tree runs in a fresh
child process (its own modules first on ``sys.path``), in alternating
rounds: per length, the median microseconds of a render, and the Python
opcodes of one render per step of the run (``sys.settrace``, deterministic).
Prints one JSON line per tree and length, then one per length with the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent


def chain_run(length: int) -> tuple[Any, list[tuple[int, Any]], float]:
    """(state, history, now) of a finished ``length``-step chain: one step a second, as the engine records it."""
    from engine_flows import chain, output

    from flows import decide
    from flows.catalog import FlowRegistry
    from flows.events import RunStarted
    from flows.launch import LaunchParams, prepare
    from flows.state import RunState, evolve

    flow = chain(f"chain-{length}", output, length)
    history: list[tuple[int, Any]] = []
    state = RunState()

    def apply(events: Any) -> None:
        nonlocal state
        for event in events:
            history.append((len(history) + 1, event))
            state = evolve(state, event, len(history))

    apply([prepare(FlowRegistry([flow]), LaunchParams(flow.name, "q"), run_id="run-1", now=1.0),
           RunStarted(run_id="run-1", at=1.0)])
    now = 2.0
    while True:
        decision = decide.decide(state, now)
        apply(decision.events)
        if decision.finished:
            return state, history, now
        apply(decide.start(state, decision.ready, now))
        for sid in state.running():
            apply(decide.complete(state, sid, state.steps[sid].attempt, output(None), now + 0.5))
        now += 1.0


def child(tree: Path, lengths: list[int]) -> None:
    """Per length: ``{"steps", "us", "opcodes_per_step"}`` for this tree's render, one JSON line each."""
    sys.path[:0] = [str(tree), str(tree / "bench")]
    from flows.report import render

    for length in lengths:
        state, history, now = chain_run(length)
        text = render(state, history, "completed", "", now)
        repeat = max(3, 2000 // length)
        best = []
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(repeat):
                render(state, history, "completed", "", now)
            best.append((time.perf_counter() - t) / repeat)
        opcodes = [0]

        def tracer(frame: Any, event: str, arg: Any) -> Any:
            frame.f_trace_opcodes = True
            if event == "opcode":
                opcodes[0] += 1
            return tracer

        sys.settrace(tracer)
        render(state, history, "completed", "", now)
        sys.settrace(None)
        print(json.dumps({"steps": length, "us": round(min(best) * 1e6, 1), "opcodes_per_step":
                          round(opcodes[0] / length, 1), "report_chars": len(text)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", help="the tree before the change (default: measure this tree alone)")
    parser.add_argument("--new", default=str(_HERE.parent))
    parser.add_argument("--steps", default="20,200,1000", help="chain lengths, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    lengths = [int(n) for n in args.steps.split(",")]
    if args.child:
        child(Path(args.child).resolve(), lengths)
        return
    sides = {"old": args.old, "new": args.new} if args.old else {"new": args.new}
    seen: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for _ in range(args.rounds):
        for side, tree in sides.items():
            done = subprocess.run([sys.executable, __file__, "--child", tree, "--steps", args.steps],
                                  check=True, capture_output=True, text=True)
            for line in done.stdout.splitlines():
                row = json.loads(line)
                seen.setdefault((side, row["steps"]), []).append(row)
    for length in lengths:
        medians = {}
        for side in sides:
            rows = seen[(side, length)]
            medians[side] = statistics.median(r["us"] for r in rows)
            print(json.dumps({"bench": "report_render", "side": side, "steps": length, "us_median": medians[side],
                              "us_rounds": [r["us"] for r in rows], "opcodes_per_step": rows[0]["opcodes_per_step"],
                              "report_chars": rows[0]["report_chars"]}))
        if args.old:
            print(json.dumps({"bench": "report_render", "steps": length,
                              "new_over_old": round(medians["new"] / medians["old"], 3)}))


if __name__ == "__main__":
    main()
