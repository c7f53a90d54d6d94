"""An SSE client resuming from position 0 through a real server: this tree against another, alternating.

    .venv/bin/python bench/resume_server.py [--backend sqlite|postgresql|both] [--size 1M] [--rounds 3]
                                            [--old /work/main]

Each round starts ``bench/scale_server.py`` (what ``baton serve`` does) from
each tree, with that tree's own interpreter (``TREE/.venv/bin/python``), on a
fresh copy of the cached ``bench/scale.py`` store (``mix`` of ``--size``
events; made by ``bench/scale.py`` if missing: run that first), and reads
``/api/stream?after=0`` until the head's id arrives (``scale.resume_from_zero``).
The trees go first in turn. Per run: frames/s of wall time, and the server's
CPU over the resume (user and system, from ``/proc``) as frames per
CPU-second: the figure other processes on the machine move least. One JSON
line per run, then per tree the median and best of each, and the ratio of
this tree's medians to the other's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE.parent), str(_HERE)]

from scale import Stores, emit, parse_size, record_templates, resume_from_zero  # noqa: E402


def _cpu(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def serve(tree: Path, url: str) -> tuple[subprocess.Popen[str], str]:
    """``bench/scale_server.py`` of ``tree`` on ``url``, listening; (process, base URL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    env.update(BATON_DB=url, BATON_AGENT="offline", BATON_PORT=str(port), BATON_MAX_ACTIVE_RUNS="0",
               BATON_AGENT_SLOTS="0", BATON_FLOWS="scale_flows", BATON_INSECURE_NO_AUTH="1",
               PYTHONPATH=os.pathsep.join([str(tree), str(tree / "bench")]), BENCH_SPAWN=repr(time.time()))
    process = subprocess.Popen([str(tree / ".venv/bin/python"), str(tree / "bench/scale_server.py")], cwd=tree,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if not (process.stdout and process.stdout.readline()):
        process.kill()
        raise RuntimeError(f"the server of {tree} did not start")
    return process, f"http://127.0.0.1:{port}"


def one(tree: Path, stores: Stores, n: int) -> dict[str, Any]:
    with stores.copy("mix", n) as url:
        process, base = serve(tree, url)
        try:
            head = int(httpx.get(f"{base}/api/health", timeout=60).json()["head"])
            user0, sys0 = _cpu(process.pid)
            client0 = time.process_time()
            result = resume_from_zero(base, head)
            user1, sys1 = _cpu(process.pid)
            client = time.process_time() - client0
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    cpu = (user1 - user0) + (sys1 - sys0)
    return {"frames": result["frames"], "mb": round(result["bytes"] / 1e6, 1), "wall_s": round(result["wall_s"], 2),
            "frames_per_s": round(result["frames_per_s"]), "server_cpu_s": round(cpu, 2),
            "server_sys_s": round(sys1 - sys0, 2), "server_cpu_frames_per_s": round(result["frames"] / cpu),
            "client_cpu_s": round(client, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--size", default="1M")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--old", default="/work/main", help="the other tree (with its own .venv)")
    parser.add_argument("--cache", default="/tmp/baton-bench-scale")
    parser.add_argument("--new-cache", default=None,
                        help="this tree's own cached stores (e.g. rebuilt by its projector: a new projection "
                             "version would otherwise rebuild at the server's start); default --cache")
    parser.add_argument("--new-prefix", default="baton_scale",
                        help="the name prefix of this tree's cached stores (files and PostgreSQL databases)")
    args = parser.parse_args()
    n = parse_size(args.size)
    trees = {"new": _HERE.parent, "old": Path(args.old).resolve()}
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        stores = {"old": Stores(backend, Path(args.cache), record_templates),
                  "new": Stores(backend, Path(args.new_cache or args.cache), record_templates, args.new_prefix)}
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        for i in range(args.rounds):
            for name in (list(trees) if i % 2 == 0 else list(trees)[::-1]):
                line = {"backend": backend, "tree": name, "round": i, **one(trees[name], stores[name], n),
                        "loadavg_1m": round(os.getloadavg()[0], 2)}
                runs[name].append(line)
                emit({"figure": "sse_resume_server", **line})
        summary: dict[str, Any] = {"backend": backend, "figure": "sse_resume_server_summary", "events": n}
        for name, lines in runs.items():
            for key in ("frames_per_s", "server_cpu_frames_per_s"):
                values = [line[key] for line in lines]
                summary[f"{name}_{key}"] = {"median": round(statistics.median(values)),
                                            "best": max(values)}
        for key in ("frames_per_s", "server_cpu_frames_per_s"):
            summary[f"ratio_{key}"] = round(summary[f"new_{key}"]["median"] / summary[f"old_{key}"]["median"], 3)
        print(json.dumps({"bench": "resume_server", **summary}), flush=True)


if __name__ == "__main__":
    main()
