"""Task runs through the engine: the whole machinery per task (events, guard, RunActor, git), no model.

    .venv/bin/python bench/task_runs.py [--files N] [--tasks N] [--quick] [--repo DIR]

``BATON_BENCH_SRC=DIR`` imports baton from another checkout (the baseline,
run alternately with this one on the same ``--repo``, made by
``bench/tasks.py --build-repo DIR``).

A run of ``--tasks`` independent tasks on a generated, committed repository
of ``--files`` files (default 10,000). Each task's implementor is an
in-process turn (no HTTP, no model: a no-op agent that writes one file and
commits), its review an in-process "approve"; so what is timed is baton's:
the worktree, the tool calls, the closing commit check, the diff, the
merge, the cleanup, and the ~14 events a task appends through its
RunActor (each durable before git acts, on SQLite).

Figures (one JSON line each):

- ``one_task_run_s``: a run of one task, launch to RunCompleted (median of
  ``--repeat``); target < 1.5 s per task. Baseline, same run: the same
  git work through ``RunWorktrees`` alone, no engine and no events
  (``machinery_only_s``), so the difference is the engine's share.
- ``parallel_run_s``: a run of ``--tasks`` independent tasks (slots =
  tasks), wall time; ``ratio`` to the one-task run; target < 3.
- ``cpu_s`` on both: CPU seconds of this process and its git children
  (the engine's threads included), a figure the neighbours' load barely
  moves; ``cpu_bound_wall_s`` is the parallel run's CPU over the cores.
- ``--compare``: ``before_*`` figures of the machinery as it was before
  "one checkout per task" (``bench/tasks.py``'s ``before()``), run by run
  alternating with today's; ``fs_floor_create_files_s``: 10,000 small
  files written by Python in the same directory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
SRC = os.environ.get("BATON_BENCH_SRC") or str(_HERE.parent)
sys.path[:0] = [SRC, str(_HERE)]

from tasks import before, cpu_s, fs_floor, make_repo  # bench/tasks.py: the same repository, floor and --compare

from actors.agents.toolcalls import ModelTurn, ToolCall
from actors.config import EngineConfig
from actors.engine import Engine
from actors.task_attempt import TaskEnv
from actors.workspace.worktrees import RunWorktrees
from eventstore import open_store
from flows.catalog import FlowRegistry
from flows.tasks import load_task_graph
from flows.tasks.launch import task_run_launched

TARGET_PER_TASK_S = 1.5
TARGET_PARALLEL_RATIO = 3.0


def turn(request: Any, on_delta: Any, cancel: Any) -> ModelTurn:
    """The no-op agent: an implementor writes its task's file and commits; a reviewer approves."""
    first = next(m["content"] for m in request.messages if m["role"] == "user")
    if first.startswith("Review task"):
        return ModelTurn(text="---\nrecommendation: approve\n---\nok")
    if request.turn > 1:
        return ModelTurn(text="done")
    tid = first.split("`")[1]
    return ModelTurn(calls=(
        ToolCall("c1", "write_file", json.dumps({"path": f"out/{tid}.txt", "content": tid})),
        ToolCall("c2", "commit", json.dumps({"message": f"add {tid}"}))))


def task_file(tid: str) -> str:
    return f"---\nid: {tid}\ntitle: {tid}\nagent: implementation-specialist\n---\nWrite out/{tid}.txt.\n"


def one_run(work: Path, repo: Path, n: int, tag: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and its git children) from launch to RunCompleted."""
    store = open_store(f"sqlite:///{work / f'{tag}.db'}")
    env = TaskEnv(worktrees_dir=work / "wt", turn=turn)
    engine = Engine(store, FlowRegistry([]), EngineConfig(agent_slots=n, backend="openai", model="noop",
                                                          node=tag), tasks=env).start()
    try:
        graph = load_task_graph([(f"tasks/t{i}.md", task_file(f"{tag}-{i}")) for i in range(n)])
        event = task_run_launched(graph, run_id=tag, now=time.time(), project_id="bench", repo=str(repo),
                                  allow=[], base="main", target="", max_rounds=3, model="noop", backend="openai")
        t0, cpu0 = time.perf_counter(), cpu_s()
        engine.launch_tasks(event)
        state = engine.wait(tag, timeout=600)
        took, cpu = time.perf_counter() - t0, cpu_s() - cpu0
        assert state.status == "completed", state.reason
        return took, cpu
    finally:
        engine.stop()
        store.close()


def machinery_only(work: Path, repo: Path, tag: str) -> float:
    m = RunWorktrees(repo, tag, work / "wt" / tag)
    t0 = time.perf_counter()
    m.create_integration("main")
    m.add_task("t")
    out = m.task_path("t") / "out"
    out.mkdir()
    (out / "t.txt").write_text("t")
    head = m.commit("t", "add t").sha
    m.diff("t")
    m.merge("t", reviewed=head)
    m.remove_task("t", salvage=False)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1,000 files, 4 tasks, 3 repeats")
    parser.add_argument("--repo", help="an existing repository made by make_repo (shared by alternating runs)")
    parser.add_argument("--parallel-repeat", type=int, default=1, help="runs of --tasks tasks (median)")
    parser.add_argument("--compare", action="store_true",
                        help="also the machinery as before one checkout per task, alternating in this process")
    args = parser.parse_args()
    if args.quick:
        args.files, args.tasks, args.repeat = 1_000, 4, 3
    print(json.dumps({"bench": "task_runs", "python": platform.python_version(), "cpus": os.cpu_count(),
                      "files": args.files, "load": os.getloadavg()[0], "src": SRC, "tmp": tempfile.gettempdir()}),
          flush=True)
    tag = secrets.token_hex(3)  # a repository given with --repo is shared by several invocations
    with tempfile.TemporaryDirectory(prefix="baton-bench-task-runs-", ignore_cleanup_errors=True) as d:
        work = Path(d)
        repo = Path(args.repo) if args.repo else work / "repo"
        if not args.repo:
            repo.mkdir()
            make_repo(repo, args.files)
        ones, plain, old_ones, old_plain, cpus, old_cpus = [], [], [], [], [], []
        for r in range(args.repeat):  # alternating: the engine's run, then the machinery alone
            took, cpu = one_run(work, repo, 1, f"one{tag}{r}")
            ones.append(took)
            cpus.append(cpu)
            plain.append(machinery_only(work, repo, f"plain{tag}{r}"))
            if args.compare:  # the same, as before one checkout per task
                before(True)
                took, cpu = one_run(work, repo, 1, f"oldone{tag}{r}")
                old_ones.append(took)
                old_cpus.append(cpu)
                old_plain.append(machinery_only(work, repo, f"oldplain{tag}{r}"))
                before(False)
        one, base = statistics.median(ones), statistics.median(plain)
        compared: dict[str, Any] = {}
        if old_ones:
            compared = {"before_median": round(statistics.median(old_ones), 3),
                        "before_cpu_s": round(statistics.median(old_cpus), 3),
                        "before_machinery_only_s": round(statistics.median(old_plain), 3),
                        "before_runs": [round(x, 3) for x in old_ones]}
        print(json.dumps({"figure": "one_task_run_s", "median": round(one, 3), "cpu_s": round(statistics.median(cpus), 3),
                          "target": TARGET_PER_TASK_S,
                          "met": one < TARGET_PER_TASK_S, "machinery_only_s": round(base, 3),
                          "engine_share_s": round(one - base, 3), "runs": [round(x, 3) for x in ones],
                          "machinery_runs": [round(x, 3) for x in plain], "load": os.getloadavg()[0], **compared}),
              flush=True)
        walls, old_walls, par_cpus, old_par_cpus = [], [], [], []
        for r in range(args.parallel_repeat):
            took, cpu = one_run(work, repo, args.tasks, f"par{tag}{r}")
            walls.append(took)
            par_cpus.append(cpu)
            if args.compare:
                before(True)
                took, cpu = one_run(work, repo, args.tasks, f"oldpar{tag}{r}")
                old_walls.append(took)
                old_par_cpus.append(cpu)
                before(False)
        wall = statistics.median(walls)
        ratio = wall / one
        if old_walls:
            compared = {"before_wall": round(statistics.median(old_walls), 3),
                        "before_walls": [round(x, 3) for x in old_walls],
                        "before_cpu_s": round(statistics.median(old_par_cpus), 3),
                        "before_ratio": round(statistics.median(old_walls) / statistics.median(old_ones), 2)}
        print(json.dumps({"figure": "parallel_run_s", "tasks": args.tasks, "wall": round(wall, 3),
                          "walls": [round(x, 3) for x in walls], "ratio": round(ratio, 2),
                          "cpu_s": round(statistics.median(par_cpus), 3),
                          "cpu_bound_wall_s": round(statistics.median(par_cpus) / (os.cpu_count() or 1), 3),
                          "target_ratio": TARGET_PARALLEL_RATIO, "met": ratio < TARGET_PARALLEL_RATIO,
                          "load": os.getloadavg()[0], **compared}), flush=True)
        floor = fs_floor(work / "floor", args.files)
        print(json.dumps({"figure": "fs_floor_create_files_s", "files": args.files, "value": round(floor, 3),
                          "load": os.getloadavg()[0]}), flush=True)
    if args.repo:  # this run's worktrees went with its scratch directory
        subprocess.run(["git", "worktree", "prune"], cwd=args.repo, check=True)


if __name__ == "__main__":
    main()
