"""Deterministic counts of a sequential W1 step on SQLite: instructions (callgrind) or Python opcodes.

    .venv/bin/python bench/step_counts.py [--tree DIR] [--instructions] [--opcodes] [--top 30]

CPU seconds on a shared machine move by a third between identical rounds;
these counts do not. Both run ``bench/engine.py``'s sequential W1 (20-step
chains of code steps returning 200 characters, one run after another) on a
scratch SQLite store, after three warm-up runs, with the tree's own modules
first on ``sys.path`` (default: this one), so two trees are compared by
running it once per tree.

- ``--instructions``: the child under ``valgrind --tool=callgrind`` twice,
  with 5 and with 30 timed runs; the difference over the 500 steps between
  them is the user-space instructions of a step (every thread: valgrind runs
  one at a time; the kernel's work, e.g. the commit's fsync, is not in it).
  Each child takes about a minute.
- ``--opcodes``: Python opcodes executed per step by function, every thread
  (``sys.settrace`` with ``f_trace_opcodes``), the ``--top`` of them printed.

Prints one JSON line per figure.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent


def child(tree: Path, runs: int, opcodes: int) -> None:
    """The workload, in this process: 3 warm-up runs, then ``runs`` timed ones (traced with ``opcodes``)."""
    sys.path[:0] = [str(tree), str(tree / "bench")]
    import engine as bench
    from engine_flows import CHAIN_OUT

    counts: collections.Counter[tuple[str, int, str]] = collections.Counter()
    tracing = [False]

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if tracing[0]:
            frame.f_trace_opcodes = True
            if event == "opcode":
                code = frame.f_code
                counts[(code.co_filename, code.co_firstlineno, code.co_name)] += 1
        return tracer

    if opcodes:
        sys.settrace(tracer)
        threading.settrace(tracer)
    with tempfile.TemporaryDirectory(prefix="baton-step-counts-") as tmp:
        side = bench.BatonSide(f"sqlite:///{tmp}/baton.db")
        try:
            side.run_sequential(CHAIN_OUT, 3, 20)
            tracing[0] = True
            if runs:
                side.run_sequential(CHAIN_OUT, runs, 20)
            tracing[0] = False
        finally:
            side.close()
    if opcodes:
        steps = runs * 20
        top = [{"function": f"{os.path.relpath(f, tree) if f.startswith(str(tree)) else f}:{line}:{name}",
                "opcodes_per_step": round(n / steps, 1)} for (f, line, name), n in counts.most_common(opcodes)]
        print(json.dumps({"opcodes_per_step": round(sum(counts.values()) / steps), "top": top}))


def instructions(tree: Path) -> int:
    """Instructions of ``child(tree, runs)`` under callgrind."""
    def run(runs: int) -> int:
        with tempfile.TemporaryDirectory(prefix="baton-callgrind-") as tmp:
            out = Path(tmp) / "callgrind.out"
            subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                            str(Path(__file__).resolve()), "--child", "--tree", str(tree), "--runs", str(runs)],
                           check=True, capture_output=True)
            for line in out.read_text().splitlines():
                if line.startswith("summary:"):
                    return int(line.split()[1])
        raise RuntimeError("callgrind wrote no summary")

    return run(30) - run(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default=str(_HERE.parent), help="the source tree to count (default: this one)")
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--opcodes", action="store_true")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=20, help=argparse.SUPPRESS)
    args = parser.parse_args()
    tree = Path(args.tree).resolve()
    if args.child:
        child(tree, args.runs, args.top if args.opcodes else 0)
        return
    if args.instructions:
        if shutil.which("valgrind") is None:
            raise SystemExit("valgrind is not installed")
        print(json.dumps({"bench": "step_counts", "tree": str(tree), "instructions_per_step": instructions(tree) // 500}),
              flush=True)
    if args.opcodes:
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", "--tree", str(tree),
                               "--runs", "20", "--opcodes", "--top", str(args.top)],
                              check=True, capture_output=True, text=True)
        print(json.dumps({"bench": "step_counts", "tree": str(tree), **json.loads(done.stdout.splitlines()[-1])}))


if __name__ == "__main__":
    main()
