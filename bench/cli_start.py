"""How long ``baton`` takes to start: this tree against another's ``baton``, in alternating rounds.

    .venv/bin/python bench/cli_start.py --baseline /work/main/.venv/bin/baton [--rounds 10]

Prints one JSON line per command: the median wall time of each side over
the rounds, and their ratio (docs/PERFORMANCE.md, "CLI start-up").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = (["--help"], ["runs", "--help"], ["flows"], ["lanuch"])


def wall(baton: str, argv: list[str], env: dict[str, str]) -> float:
    """Seconds from start to exit of one ``baton ARGV``."""
    started = time.perf_counter()
    subprocess.run([baton, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="the other tree's baton")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    this = str(Path(sys.executable).parent / "baton")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "BATON_DB": f"sqlite:///{tmp}/bench.db"}
        for argv in COMMANDS:
            times: dict[str, list[float]] = {"this": [], "baseline": []}
            for n in range(args.rounds):  # alternate, and swap who goes first, so drift in load hits both
                order = [("this", this), ("baseline", args.baseline)]
                for side, baton in order if n % 2 else order[::-1]:
                    times[side].append(wall(baton, argv, env))
            this_s, base_s = statistics.median(times["this"]), statistics.median(times["baseline"])
            print(json.dumps({"command": " ".join(["baton", *argv]), "this_s": round(this_s, 3),
                              "baseline_s": round(base_s, 3), "ratio": round(this_s / base_s, 3),
                              "rounds": args.rounds, "load": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
