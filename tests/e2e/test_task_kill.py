"""kill -9 mid write, mid commit, mid merge: reconciliation repairs git, nothing is lost, nothing merged twice.

Each test runs one step of the machinery in a real subprocess
(``tests/e2e/task_crash_worker.py``), waits until it reaches the chosen
point (the worker, or the git filter or merge driver it runs, writes a line
to a FIFO), and kills the whole process group with SIGKILL, git included.
Then, as a restarted baton would: the log's side comes from the lifecycle
fold, git's side from ``inventory()``, the actions from ``reconcile()``, and
``carry_out()`` repairs. A second reconciliation must find nothing to do,
and the step, run again, must finish exactly once.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actors.workspace.repair import carry_out, inventory
from actors.workspace.worktree_results import Conflict, Merged
from actors.workspace.worktrees import RunWorktrees
from flows.events import Event
from flows.tasks.events import (
    IntegrationCreated,
    Phase,
    TaskCommitted,
    TaskMerged,
    TaskPhaseChanged,
    TaskReviewed,
    TasksPlanned,
    TaskStarted,
    TaskWorktreeCreated,
)
from flows.tasks.files import TASK_KIND, TaskStepSpec
from flows.tasks.lifecycle import TaskRunState, apply, start_state
from flows.tasks.reconcile import Repair, compensation_events, logged_run, reconcile
from tests.integration.task_repo import TaskRepo, make_task_repo

ROOT = Path(__file__).resolve().parents[2]
SHARED = "".join(f"line {n}\n" for n in range(1, 11))


@pytest.fixture
def repo(tmp_path: Path) -> TaskRepo:
    return make_task_repo(tmp_path, {"app.py": "A = 1\n", "shared.txt": SHARED, "notes.txt": "OLD notes\n",
                                     "zz/last.dat": "checked out last\n",
                                     ".gitattributes": "*.dat filter=blocker\nshared.txt merge=blocker\n"})


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "ready.fifo"
    os.mkfifo(path)
    return path


@pytest.fixture
def armed(tmp_path: Path, repo: TaskRepo, fifo: Path) -> Path:
    """Clean and smudge filters and a merge driver that block (after a line to the FIFO) while ``armed`` exists."""
    flag = tmp_path / "armed"
    clean = tmp_path / "clean_filter.py"
    clean.write_text(
        "import os, sys, threading\n"
        "data = sys.stdin.buffer.read()\n"
        f"if os.path.exists({str(flag)!r}):\n"
        f"    open({str(fifo)!r}, 'w').write('ready\\n')\n"
        "    threading.Event().wait()\n"
        "sys.stdout.buffer.write(data)\n")
    # The merge driver has a flag of its own: with the filters' flag, a racily clean file (changed in
    # the second the index was written) made git run the clean filter first, and the kill landed there.
    driver = tmp_path / "merge_driver.py"
    driver.write_text(
        "import os, subprocess, sys, threading\n"
        "base, ours, theirs = sys.argv[1:4]\n"
        f"if os.path.exists({str(flag.with_name('armed-merge'))!r}):\n"
        f"    open({str(fifo)!r}, 'w').write('ready\\n')\n"
        "    threading.Event().wait()\n"
        "sys.exit(subprocess.call(['git', 'merge-file', ours, base, theirs]))\n")
    repo.git("config", "filter.blocker.clean", f"{sys.executable} {clean}")
    repo.git("config", "filter.blocker.smudge", f"{sys.executable} {clean}")
    repo.git("config", "merge.blocker.driver", f"{sys.executable} {driver} %O %A %B")
    return flag


class Worker:
    """The subprocess, in a process group of its own (so git and its filters die with it)."""

    def __init__(self, mode: str, repo: TaskRepo, m: RunWorktrees, fifo: Path, task: str) -> None:
        self.fifo = fifo
        env = {**repo.full_env(), "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.task_crash_worker", mode, str(repo.root), m.run_id, str(m.run_dir),
             json.dumps(repo.env), str(fifo), task],
            cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Block until a line arrives on the FIFO (or fail if the worker died first)."""
        rfd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
        keep = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)  # a writer of ours: no EOF before theirs
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                readable, _, _ = select.select([rfd], [], [], 0.2)
                if readable and os.read(rfd, 100):
                    return
                if self.proc.poll() is not None:
                    _, err = self.proc.communicate()
                    pytest.fail(f"the worker ended before the point: {self.proc.returncode}\n{err.decode()}")
            pytest.fail("the worker did not reach the point in time")
        finally:
            os.close(rfd)
            os.close(keep)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc.communicate()
        # Every process of the group is gone (git, its filter, its merge driver).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)
        pytest.fail("processes of the killed group survive")


def spec(*ids: str) -> list[TaskStepSpec]:
    return [TaskStepSpec(id=i, kind=TASK_KIND, retries=1) for i in ids]


class Log:
    """The run's log as the coordinator would have appended it (through the lifecycle guard)."""

    def __init__(self, m: RunWorktrees, ids: tuple[str, ...]) -> None:
        self.m = m
        self.state: TaskRunState = start_state(spec(*ids))
        integ = m.create_integration("main")
        self.add(IntegrationCreated(branch=integ.branch, path=str(integ.path), base=integ.base),
                 TasksPlanned(step_ids=list(ids)))

    def add(self, *events: Event) -> None:
        for e in events:
            self.state = apply(self.state, e)

    def start(self, tid: str) -> None:
        made = self.m.add_task(tid)
        self.add(TaskStarted(step_id=tid, attempt=1),
                 TaskWorktreeCreated(step_id=tid, attempt=1, path=str(made.path), branch=made.branch, base=made.base),
                 TaskPhaseChanged(step_id=tid, attempt=1, phase=Phase.CODER))

    def committed(self, tid: str, sha: str) -> None:
        self.add(TaskCommitted(step_id=tid, attempt=1, commit=sha))

    def to_merge(self, tid: str) -> None:
        for phase in (Phase.CHECKS, Phase.REVIEW):
            self.add(TaskPhaseChanged(step_id=tid, attempt=1, phase=phase))
        self.add(TaskReviewed(step_id=tid, attempt=1, round=1, approved=True),
                 TaskPhaseChanged(step_id=tid, attempt=1, phase=Phase.MERGE))

    def merged(self, tid: str, outcome: object) -> None:
        assert isinstance(outcome, Merged)
        self.add(TaskMerged(step_id=tid, attempt=1, task_head=outcome.task_head, merge_commit=outcome.merge_commit))

    def repair(self) -> list[Repair]:
        """Reconcile and carry out; then a second pass must find nothing."""
        log = logged_run(self.m.run_id, str(self.m.run_dir), self.state)
        actions = reconcile(log, inventory(self.m, log))
        done = carry_out(self.m, actions)
        assert all(a.ok for a in done), done
        self.add(*compensation_events(self.state, actions))
        log = logged_run(self.m.run_id, str(self.m.run_dir), self.state)
        again = reconcile(log, inventory(self.m, log))
        assert again == [], again
        return [a.repair for a in actions]


def test_kill_mid_write_leaves_the_old_file_whole_and_a_temp_that_is_swept(repo, fifo):
    m = repo.machinery("K1")
    log = Log(m, ("t",))
    log.start("t")
    worker = Worker("write", repo, m, fifo, "t")
    worker.wait_ready()
    worker.kill()
    root = m.task_path("t")
    assert (root / "notes.txt").read_text() == "OLD notes\n"  # never half a file
    temps = [p.name for p in root.iterdir() if p.name.startswith(".baton-write-")]
    assert len(temps) == 1 and (root / temps[0]).stat().st_size > 0  # the half-written temp, beside it
    assert log.repair() == [Repair.SWEEP_TEMP]
    assert not [p for p in root.iterdir() if p.name.startswith(".baton-write-")]
    (root / "notes.txt").write_text("NEW notes\n")
    commit = m.commit("t", "notes")
    assert commit.files == ["notes.txt"]  # no temp file ever committed


def test_kill_mid_commit_leaves_a_lock_that_is_removed_and_the_work_is_committed_once(repo, fifo, armed):
    m = repo.machinery("K2")
    log = Log(m, ("t",))
    log.start("t")
    root = m.task_path("t")
    (root / "data.dat").write_text("precious work\n")
    armed.write_text("")
    worker = Worker("commit", repo, m, fifo, "t")
    worker.wait_ready()
    worker.kill()
    admin = Path(repo.git("rev-parse", "--absolute-git-dir", cwd=root).strip())
    assert (admin / "index.lock").exists()  # what a killed git leaves
    assert repo.git("rev-parse", "baton/K2/t").strip() == repo.base  # nothing committed
    armed.unlink()  # the filter did its part; from here git may run it again
    assert log.repair() == [Repair.REMOVE_STALE_LOCK]
    assert not (admin / "index.lock").exists()
    commit = m.commit("t", "add the data file")
    assert commit.files == ["data.dat"]
    assert repo.git("show", "baton/K2/t:data.dat") == "precious work\n"
    assert repo.git("rev-list", "--count", f"{repo.base}..baton/K2/t").strip() == "1"


def _two_tasks_on_shared(repo: TaskRepo, m: RunWorktrees, log: Log) -> str:
    """p edits line 2 and is merged; q edits line 9 (a clean three-way merge of shared.txt). q's head."""
    for tid, n in (("p", 2), ("q", 9)):
        log.start(tid)
        path = m.task_path(tid) / "shared.txt"
        path.write_text(path.read_text().replace(f"line {n}\n", f"line {n} by {tid}\n"))
        log.committed(tid, m.commit(tid, f"edit line {n}").sha)
        log.to_merge(tid)
    log.merged("p", m.merge("p"))
    return repo.git("rev-parse", f"baton/{m.run_id}/q").strip()


def test_kill_mid_merge_leaves_the_integration_unchanged_and_merges_once_after_repair(repo, fifo, armed):
    m = repo.machinery("K3")
    log = Log(m, ("p", "q"))
    q_head = _two_tasks_on_shared(repo, m, log)
    before = repo.git("rev-parse", "baton/K3/integrate").strip()
    armed_merge = armed.with_name("armed-merge")
    armed_merge.write_text("")
    worker = Worker("merge", repo, m, fifo, "q")
    worker.wait_ready()
    worker.kill()
    assert repo.git("rev-parse", "baton/K3/integrate").strip() == before  # nothing half landed
    armed_merge.unlink()
    repairs = log.repair()
    assert Repair.REMOVE_STALE_LOCK in repairs
    merged = m.merge("q", reviewed=q_head)
    assert isinstance(merged, Merged) and not merged.already
    text = repo.git("show", "baton/K3/integrate:shared.txt")
    assert "line 2 by p" in text and "line 9 by q" in text
    parents = repo.git("log", "--first-parent", "--merges", "--format=%P", "baton/K3/integrate").split("\n")
    assert sum(q_head in line for line in parents) == 1  # merged exactly once


def test_kill_after_git_stopped_on_a_conflict_aborts_the_half_merge(repo, fifo):
    m = repo.machinery("K4")
    log = Log(m, ("x", "y"))
    for tid in ("x", "y"):
        log.start(tid)
        (m.task_path(tid) / "app.py").write_text(f"A = '{tid}'\n")
        log.committed(tid, m.commit(tid, f"A from {tid}").sha)
        log.to_merge(tid)
    log.merged("x", m.merge("x"))
    before = repo.git("rev-parse", "baton/K4/integrate").strip()
    worker = Worker("merge-stopped", repo, m, fifo, "y")
    worker.wait_ready()
    worker.kill()
    admin = Path(repo.git("rev-parse", "--absolute-git-dir", cwd=m.integration_path).strip())
    assert (admin / "MERGE_HEAD").exists()  # git's half: conflict markers in the integration worktree
    assert "<<<<<<<" in (m.integration_path / "app.py").read_text()
    assert log.repair() == [Repair.ABORT_MERGE]
    assert not (admin / "MERGE_HEAD").exists()
    assert repo.git("status", "--porcelain", cwd=m.integration_path) == ""
    assert repo.git("rev-parse", "baton/K4/integrate").strip() == before
    again = m.merge("y")
    assert isinstance(again, Conflict) and again.files == ["app.py"]  # the same answer as before the crash


def test_kill_after_the_merge_commit_records_it_and_never_merges_again(repo, fifo):
    m = repo.machinery("K5")
    log = Log(m, ("t",))
    log.start("t")
    (m.task_path("t") / "t.txt").write_text("t\n")
    head = m.commit("t", "t").sha
    log.committed("t", head)
    log.to_merge("t")
    worker = Worker("merged", repo, m, fifo, "t")
    worker.wait_ready()
    worker.kill()
    merge = repo.git("rev-parse", "baton/K5/integrate").strip()
    assert repo.git("rev-parse", f"{merge}^2").strip() == head  # git merged; the log does not know
    assert log.repair() == [Repair.RECORD_MERGED]
    assert log.state.tasks["t"].merge_commit == merge and log.state.tasks["t"].merges == 1
    outcome = m.merge("t", reviewed=head)  # a coordinator that asks anyway: found, not redone
    assert isinstance(outcome, Merged) and outcome.already and outcome.merge_commit == merge
    assert repo.git("rev-list", "--merges", "--count", "baton/K5/integrate").strip() == "1"


def test_kill_mid_checkout_of_a_task_worktree_is_recognised_as_half_made_and_made_again(repo, fifo, armed):
    m = repo.machinery("K6")
    log = Log(m, ("t",))
    log.add(TaskStarted(step_id="t", attempt=1))  # the intent: phase worktree, no fact yet
    armed.write_text("")
    worker = Worker("add", repo, m, fifo, "t")
    worker.wait_ready()
    worker.kill()
    path = m.task_path("t")
    listed = repo.git("worktree", "list", "--porcelain")
    assert f"worktree {path}" in listed and "locked baton: initializing" in listed  # half made, and says so
    assert not (path / "zz" / "last.dat").exists()
    armed.unlink()
    assert log.repair() == []  # a task in progress owns its place: nothing to remove
    made = m.add_task("t")  # the retry
    assert made.reused  # the branch the first attempt made
    assert (path / "zz" / "last.dat").read_text() == "checked out last\n" and (path / "app.py").exists()
    assert repo.git("status", "--porcelain", cwd=path) == ""
    assert "locked" not in repo.git("worktree", "list", "--porcelain")
