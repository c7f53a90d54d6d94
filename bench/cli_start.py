"""How long ``baton`` takes to start: this tree against another's ``baton``, in alternating rounds.

    .venv/bin/python bench/cli_start.py --baseline /tmp/base/.venv/bin/baton [--rounds 10] [--only NAME,...]
    .venv/bin/python bench/cli_start.py --baseline ... --only verify --store sqlite:////tmp/1m.db --rounds 3

Prints one JSON line per command: the median wall time (process start to
exit) and the median CPU time (user + system of the process) of each side
over the rounds, and their ratios (docs/PERFORMANCE.md, "CLI start-up").

Besides ``--help`` and a usage error, the real commands: on a store holding
one finished run (``baton demo``), the reading ones (``runs``, ``show``,
``replay --verify``, ``flows``); and through a ``baton serve`` of this tree
(offline backend, no delay) on a store of its own, the client commands:
named with ``--server`` (``BATON_URL``), and found on the store by its lease.
Each round of ``launch``/``approve`` launches a run that pauses at its
approval and approves that run, on both sides. ``--only verify --store URL``
times ``baton replay --verify`` on a big store (e.g. a copy of one of
``bench/scale.py``'s), where the start-up is part of what a person waits:
events/s with the start-up included, on each side.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HELP = (["--help"], ["runs", "--help"], ["lanuch"])
READING = (["flows"], ["runs"], ["show", "RUN"], ["replay", "--verify"])
CLIENT = (["runs"], ["flows"], ["launch", "review-and-approve", "-q", "Bench the start"], ["approve", "PAUSED"])


def timed(baton: str, argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system) and stdout of one ``baton ARGV``; exits non-zero raise."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([baton, *argv], env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode not in (0, 2) or (done.returncode == 2 and argv[0] != "lanuch"):
        raise RuntimeError(f"baton {' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-400:]}")
    return wall, cpu, done.stdout


def compare(name: str, sides: dict[str, str], rounds: int, run: Callable[[str, str], tuple[float, float]]) -> None:
    """``run(side, baton)`` ``rounds`` times on each side, alternating (who goes first swaps each round)."""
    walls: dict[str, list[float]] = {side: [] for side in sides}
    cpus: dict[str, list[float]] = {side: [] for side in sides}
    order = list(sides.items())
    for n in range(rounds):
        for side, baton in order if n % 2 else order[::-1]:
            wall, cpu = run(side, baton)
            walls[side].append(wall)
            cpus[side].append(cpu)
    this_s, base_s = statistics.median(walls["this"]), statistics.median(walls["baseline"])
    this_cpu, base_cpu = statistics.median(cpus["this"]), statistics.median(cpus["baseline"])
    print(json.dumps({"command": name, "this_s": round(this_s, 3), "baseline_s": round(base_s, 3),
                      "ratio": round(this_s / base_s, 3), "this_cpu_s": round(this_cpu, 3),
                      "baseline_cpu_s": round(base_cpu, 3), "cpu_ratio": round(this_cpu / base_cpu, 3),
                      "rounds": rounds, "load": round(os.getloadavg()[0], 2)}), flush=True)


def env_of(db: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    return {**env, "BATON_DB": db, **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="the other tree's baton")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--only", default="help,reading,client", help="groups to run: help, reading, client, verify")
    parser.add_argument("--store", default="", help="the store of --only verify (it is only read)")
    args = parser.parse_args()
    groups = set(args.only.split(","))
    this = str(Path(sys.executable).parent / "baton")
    sides = {"this": this, "baseline": args.baseline}
    with tempfile.TemporaryDirectory() as tmp:
        if "help" in groups:
            env = env_of(f"sqlite:///{tmp}/empty.db")
            for argv in HELP:
                compare(" ".join(["baton", *argv]), sides, args.rounds,
                        lambda side, baton, argv=argv: timed(baton, argv, env)[:2])
        if "reading" in groups:
            env = env_of(f"sqlite:///{tmp}/read.db")
            subprocess.run([this, "demo"], env={**env, "BATON_OFFLINE_DELAY_S": "0.001"}, capture_output=True,
                           check=True)
            run_id = json.loads(timed(this, ["runs", "--json"], env)[2])[0]["run_id"]
            for argv in READING:
                argv = [run_id if a == "RUN" else a for a in argv]
                compare(" ".join(["baton", *argv]).replace(run_id, "RUN"), sides, args.rounds,
                        lambda side, baton, argv=argv: timed(baton, argv, env)[:2])
        if "client" in groups:
            client_commands(sides, args.rounds, f"sqlite:///{tmp}/served.db")
    if "verify" in groups:
        events: list[int] = []

        def verify(side: str, baton: str) -> tuple[float, float]:
            wall, cpu, out = timed(baton, ["replay", "--verify"], env_of(args.store))
            found = re.search(r"log verified: (\d+) event", out)
            assert found, out[-300:]
            events.append(int(found.group(1)))
            return wall, cpu

        compare("baton replay --verify (--store)", sides, args.rounds, verify)
        print(json.dumps({"events": events[0]}), flush=True)


def client_commands(sides: dict[str, str], rounds: int, db: str) -> None:
    """The client commands through a server of this tree, named (BATON_URL) and found on the store."""
    from tests.api.server import ApiServer

    with ApiServer(db, BATON_OFFLINE_DELAY_S="0") as server:
        for how, env in (("--server", env_of(db, BATON_URL=server.url)), ("found", env_of(db))):
            paused: dict[str, list[str]] = {side: [] for side in sides}

            def launch(side: str, baton: str, env: dict[str, str] = env) -> tuple[float, float]:
                wall, cpu, out = timed(baton, list(CLIENT[2]), env)
                found = re.search(r"launched run (\w+)", out)
                assert found, out
                paused[side].append(found.group(1))
                return wall, cpu

            def approve(side: str, baton: str, env: dict[str, str] = env) -> tuple[float, float]:
                return timed(baton, ["approve", paused[side].pop()], env)[:2]

            for argv in CLIENT[:2]:
                compare(f"baton {' '.join(argv)} ({how})", sides, rounds,
                        lambda side, baton, argv=argv, env=env: timed(baton, argv, env)[:2])
            compare(f"baton launch ({how}, returns at the approval)", sides, rounds, launch)
            compare(f"baton approve RUN ({how}, returns when the run ends)", sides, rounds, approve)


if __name__ == "__main__":
    main()
