"""Task machinery benchmark (first cut): the git overhead of one task, alone and 8 at once.

    .venv/bin/python bench/tasks.py [--files N] [--tasks N] [--parallel N] [--quick] [--repo DIR]

``BATON_BENCH_SRC=DIR`` imports baton from another checkout (a snapshot of
an older commit: the baseline, run alternately with this one on the same
``--repo``, a repository built once with ``make_repo``).

On a generated repository of ``--files`` files (default 10,000, committed),
one task's machinery with a no-op agent is: ``add_task`` (branch + ``git
worktree add``, a full checkout), a trivial change and ``commit`` (``add
-A`` + commit, the task id in the message), ``merge`` (``--no-ff`` in the
integration worktree, after its clean-up check), and ``remove_task``
(worktree remove + branch delete by compare-and-swap). Events are **not**
in it yet: the task events are proposed (``flows/tasks/events.py``), not
appended by an engine; the tool loop's append costs are in
``bench/agents.py`` (``append_pair_*``), and a task run adds about ten
appends per task.

Figures (one JSON line each):

- ``per_task_s``: median over ``--tasks`` sequential tasks, with each
  phase's median; target < 1.5 s. Baseline, same run, alternating with
  baton's: the same git commands typed as plain ``git`` calls
  (``raw_git_per_task_s``): what git itself costs, so the difference is
  baton's own (its checks, its safety options, its inventory of worktrees).
- ``parallel_8_s``: ``--parallel`` tasks started together on threads (each
  adds, commits, merges — merges queue on the run's integration lock —
  and cleans up), wall time; target < 3x one task's median. Baseline, same
  run: the plain git commands 8 at once (``raw_git_wall``, ``raw_git_ratio``).
- ``cpu_s``: CPU seconds per sequential task (this process and its git
  children): what the wall time would be on a free core, whatever the
  neighbours' load.
- ``--compare``: ``before_*`` figures of the machinery as it was before
  "one checkout per task" (a full integration checkout, one checkout
  writer, ``git commit``), alternating with today's in the same process.
- ``fs_floor_create_files_s``: creating ``--files`` small files with
  Python, in the same scratch directory: what any checkout costs at least
  on this disk (``TMPDIR=/dev/shm`` moves the whole benchmark to memory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
SRC = os.environ.get("BATON_BENCH_SRC") or str(_HERE.parent)
sys.path[:0] = [SRC]

from actors.workspace import git as git_module
from actors.workspace import worktrees as worktrees_module
from actors.workspace.worktree_results import Merged
from actors.workspace.worktrees import RunWorktrees

TARGET_PER_TASK_S = 1.5
TARGET_PARALLEL_RATIO = 3.0
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com"}
PHASES = ("add", "commit", "merge", "remove")


def make_repo(root: Path, files: int) -> None:
    """``files`` small source files in 100-file directories, committed on ``main``."""
    for i in range(files):
        d = root / f"pkg{i // 1000:03d}" / f"mod{(i // 100) % 10}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.py").write_text(f"VALUE_{i} = {i}\n\ndef f{i}(x):\n    return x + {i}\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "bench")


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", "-c", "gc.auto=0", "-c", "maintenance.auto=false", *args], cwd=cwd, env=GIT_ENV,
                         capture_output=True, text=True, check=True)
    return out.stdout


_AFTER = {"checkout": getattr(worktrees_module, "CHECKOUT_OPTIONS", ()),
          "plain_parent": getattr(git_module.Git, "_plain_parent", None)}


def before(on: bool) -> None:
    """``--compare``: switch this process to the machinery as it was before "one checkout per task" (or back).

    Before: the integration worktree checked out in full (a RunWorktrees
    made with ``sparse_integration=False``), one process writing a task's
    checkout, and ``git commit`` for every commit.
    """
    if _AFTER["plain_parent"] is None:
        raise SystemExit("--compare needs the code of this branch (BATON_BENCH_SRC names an older one)")
    worktrees_module.CHECKOUT_OPTIONS = () if on else _AFTER["checkout"]  # type: ignore[attr-defined]
    git_module.Git._plain_parent = (lambda self: None) if on else _AFTER["plain_parent"]  # type: ignore[method-assign]
    defaults = RunWorktrees.__init__.__kwdefaults__
    assert defaults is not None
    defaults["sparse_integration"] = not on


def cpu_s() -> float:
    """CPU seconds of this process and of the children it waited for (git): what a task costs whatever the load."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(phases: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    t = time.perf_counter()
    result = fn()
    phases[name] = time.perf_counter() - t
    return result


def baton_task(m: RunWorktrees, task_id: str) -> dict[str, float]:
    """One task through the machinery with a no-op agent (it writes one file)."""
    phases: dict[str, float] = {}
    cpu0 = cpu_s()
    made = timed(phases, "add", lambda: m.add_task(task_id))
    (made.path / f"{task_id}.txt").write_text(f"{task_id}\n")
    timed(phases, "commit", lambda: m.commit(task_id, "no-op agent's change"))
    merged = timed(phases, "merge", lambda: m.merge(task_id))
    assert isinstance(merged, Merged), merged
    cleaned = timed(phases, "remove", lambda: m.remove_task(task_id, salvage=False))  # as after a merge
    assert cleaned.branch_deleted
    phases["total"] = sum(phases[p] for p in PHASES)
    phases["cpu"] = cpu_s() - cpu0  # meaningful only when tasks run one at a time
    return phases


def in_parallel(n: int, task: Callable[[int], Any]) -> tuple[float, float]:
    """Start ``n`` tasks together on threads: (wall time, slowest task). A failure fails the figure."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)
    each: list[float] = []

    def one(i: int) -> None:
        try:
            barrier.wait()
            t = time.perf_counter()
            task(i)
            each.append(time.perf_counter() - t)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    if errors:
        raise errors[0]
    return wall, max(each)


def fs_floor(root: Path, files: int) -> float:
    """Seconds to create ``files`` small files in 100-file directories (what a checkout must at least do)."""
    t = time.perf_counter()
    for i in range(files):
        d = root / f"d{i // 100}"
        if i % 100 == 0:
            d.mkdir(parents=True)
        (d / f"f{i}.py").write_text("x = 1\n")
    return time.perf_counter() - t


def raw_task(repo: Path, integ: Path, work: Path, task_id: str, *, merge_lock: threading.Lock | None = None,
             phases: dict[str, float] | None = None, tag: str = "") -> dict[str, float]:
    """The same git commands as plain calls: the baseline git itself sets."""
    phases = {} if phases is None else phases
    branch = f"raw{tag}/{task_id}"
    path = work / "raw" / task_id

    def add() -> None:
        git(repo, "branch", branch, f"raw{tag}/integrate")
        git(repo, "worktree", "add", "-q", str(path), branch)

    def commit() -> None:
        (path / f"{task_id}.txt").write_text(f"{task_id}\n")
        git(path, "add", "-A")
        git(path, "commit", "-qm", f"{task_id}: change")

    def remove() -> None:
        git(repo, "worktree", "remove", "--force", str(path))
        git(repo, "branch", "-D", branch)

    timed(phases, "add", add)
    timed(phases, "commit", commit)
    if merge_lock is None:
        timed(phases, "merge", lambda: git(integ, "merge", "--no-ff", "--no-edit", "-q", branch))
    else:
        with merge_lock:
            timed(phases, "merge", lambda: git(integ, "merge", "--no-ff", "--no-edit", "-q", branch))
    timed(phases, "remove", remove)
    phases["total"] = sum(phases[p] for p in PHASES)
    return phases


def bench(args: argparse.Namespace, work: Path) -> Iterator[dict[str, Any]]:
    tag = secrets.token_hex(3)  # a repository given with --repo is shared by several invocations
    repo = Path(args.repo) if args.repo else work / "repo"
    t0 = time.perf_counter()
    if not args.repo:
        make_repo(repo, args.files)
    built_s = time.perf_counter() - t0
    run_id = f"BENCH{tag}"
    m = RunWorktrees(repo, run_id, work / "worktrees" / run_id)
    m.create_integration("main")
    git(repo, "branch", f"raw{tag}/integrate", "main")
    raw_integ = work / "raw" / "integrate"
    git(repo, "worktree", "add", "-q", str(raw_integ), f"raw{tag}/integrate")
    baton_task(m, "warmup")
    raw_task(repo, raw_integ, work, "warmup", tag=tag)
    old: RunWorktrees | None = None
    if args.compare:
        before(True)
        old = RunWorktrees(repo, f"{run_id}old", work / "worktrees" / f"{run_id}old")
        old.create_integration("main")
        baton_task(old, "warmup")
        before(False)
    ours: list[dict[str, float]] = []
    raw: list[dict[str, float]] = []
    olds: list[dict[str, float]] = []
    for n in range(args.tasks):  # alternating, so drift hits both sides alike
        ours.append(baton_task(m, f"t{n}"))
        raw.append(raw_task(repo, raw_integ, work, f"t{n}", tag=tag))
        if old is not None:
            before(True)
            olds.append(baton_task(old, f"t{n}"))
            before(False)
    per_task = statistics.median(p["total"] for p in ours)
    compared: dict[str, Any] = {}
    if olds:
        compared = {"before_per_task_s": round(statistics.median(p["total"] for p in olds), 3),
                    "before_cpu_s": round(statistics.median(p["cpu"] for p in olds), 3),
                    **{f"before_{ph}_s": round(statistics.median(p[ph] for p in olds), 3) for ph in PHASES}}
    yield {"bench": "tasks", "figure": "per_task_s", "files": args.files, "tasks": args.tasks,
           "median": round(per_task, 3), "max": round(max(p["total"] for p in ours), 3),
           "cpu_s": round(statistics.median(p["cpu"] for p in ours), 3),
           **{f"{ph}_s": round(statistics.median(p[ph] for p in ours), 3) for ph in PHASES},
           "raw_git_per_task_s": round(statistics.median(p["total"] for p in raw), 3),
           **{f"raw_{ph}_s": round(statistics.median(p[ph] for p in raw), 3) for ph in PHASES},
           "target": TARGET_PER_TASK_S, "ok": per_task < TARGET_PER_TASK_S, "repo_build_s": round(built_s, 1),
           "events": "not included (not appended yet)", "load": os.getloadavg()[0], **compared}

    merge_lock = threading.Lock()  # the raw side queues its merges too, as baton's integration lock does
    walls: list[float] = []
    raw_walls: list[float] = []
    old_walls: list[float] = []
    for r in range(args.rounds):  # alternating rounds: the machine's load drifts
        def baton_one(n: int, r: int = r) -> None:
            baton_task(m, f"p{r}-{n}")

        def plain_one(n: int, r: int = r) -> None:
            raw_task(repo, raw_integ, work, f"p{r}-{n}", merge_lock=merge_lock, tag=tag)

        def old_one(n: int, r: int = r) -> None:
            assert old is not None
            baton_task(old, f"p{r}-{n}")

        walls.append(in_parallel(args.parallel, baton_one)[0])
        raw_walls.append(in_parallel(args.parallel, plain_one)[0])
        if old is not None:
            before(True)
            old_walls.append(in_parallel(args.parallel, old_one)[0])
            before(False)
    if old_walls:
        old_wall = statistics.median(old_walls)
        compared = {"before_wall": round(old_wall, 3), "before_walls": [round(w, 2) for w in old_walls],
                    "before_ratio": round(old_wall / statistics.median(p["total"] for p in olds), 2)}
    wall, raw_wall = statistics.median(walls), statistics.median(raw_walls)
    raw_one = statistics.median(p["total"] for p in raw)
    ratio = wall / per_task
    yield {"bench": "tasks", "figure": f"parallel_{args.parallel}_s", "wall": round(wall, 3),
           "walls": [round(w, 2) for w in walls], "one_task_median": round(per_task, 3), "ratio": round(ratio, 2),
           "raw_git_wall": round(raw_wall, 3), "raw_git_walls": [round(w, 2) for w in raw_walls],
           "raw_git_ratio": round(raw_wall / raw_one, 2), "target_ratio": TARGET_PARALLEL_RATIO,
           "ok": ratio < TARGET_PARALLEL_RATIO, "load": os.getloadavg()[0], **compared}
    floor = fs_floor(work / "floor", args.files)
    yield {"bench": "tasks", "figure": "fs_floor_create_files_s", "files": args.files, "value": round(floor, 3),
           "note": "creating the files' worth of small files with Python: the floor of any checkout here"}
    leftovers = [b for b in git(repo, "branch", "--format=%(refname:short)").split()
                 if b.startswith(f"baton/{run_id}")]
    assert leftovers == [f"baton/{run_id}/integrate"] + ([f"baton/{run_id}old/integrate"] if old else []), leftovers


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="baton-bench-tasks-", ignore_cleanup_errors=True) as d:
        yield Path(d)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000, help="files in the repository")
    parser.add_argument("--tasks", type=int, default=7, help="sequential tasks per side")
    parser.add_argument("--parallel", type=int, default=8, help="tasks started together")
    parser.add_argument("--rounds", type=int, default=3, help="alternating parallel rounds per side")
    parser.add_argument("--quick", action="store_true", help="1,000 files, 3 tasks, 4 in parallel")
    parser.add_argument("--repo", help="an existing repository made by make_repo (shared by alternating runs)")
    parser.add_argument("--compare", action="store_true",
                        help="also the machinery as before one checkout per task, alternating in this process")
    parser.add_argument("--build-repo", help="only make the repository (of --files files) at this path")
    args = parser.parse_args()
    if args.quick:
        args.files, args.tasks, args.parallel, args.rounds = 1_000, 3, 4, 1
    if args.build_repo:
        Path(args.build_repo).mkdir(parents=True)
        make_repo(Path(args.build_repo), args.files)
        return
    print(json.dumps({"bench": "tasks", "python": platform.python_version(), "cpus": os.cpu_count(),
                      "git": subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip(),
                      "load": os.getloadavg()[0], "src": SRC, "tmp": tempfile.gettempdir()}), flush=True)
    with scratch() as work:
        for line in bench(args, work):
            print(json.dumps(line), flush=True)
    if args.repo:  # this run's worktrees went with its scratch directory
        git(Path(args.repo), "worktree", "prune")


if __name__ == "__main__":
    main()
