"""Reconciliation on real repositories: git tampered with the ways crashes and people do, then repaired.

The log's side comes from the lifecycle fold (events appended through the
guard), git's from ``repair.inventory()``. After ``carry_out`` a
second reconciliation finds nothing, ``git worktree list`` and ``git branch``
agree with the log, and no commit of a task is lost.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from actors.workspace.repair import carry_out, inventory
from actors.workspace.worktree_results import Merged
from actors.workspace.worktrees import RunWorktrees
from flows.events import Event
from flows.tasks.events import (
    IntegrationCreated,
    Phase,
    TaskAborted,
    TaskBlocked,
    TaskCleanedUp,
    TaskCommitted,
    TaskDone,
    TaskMerged,
    TaskPhaseChanged,
    TaskReviewed,
    TasksPlanned,
    TaskStarted,
    TaskWorktreeCreated,
)
from flows.tasks.files import TASK_KIND, TaskStepSpec
from flows.tasks.lifecycle import apply, start_state
from flows.tasks.reconcile import Repair, compensation_events, describe, logged_run, reconcile
from tests.integration.task_repo import TaskRepo, make_task_repo


@pytest.fixture
def repo(tmp_path: Path) -> TaskRepo:
    return make_task_repo(tmp_path)


class Run:
    """A run's machinery and its log, appended through the lifecycle guard."""

    def __init__(self, repo: TaskRepo, run_id: str, ids: tuple[str, ...]) -> None:
        self.repo = repo
        self.m: RunWorktrees = repo.machinery(run_id)
        self.state = start_state([TaskStepSpec(id=i, kind=TASK_KIND, retries=1) for i in ids])
        integ = self.m.create_integration("main")
        self.add(IntegrationCreated(branch=integ.branch, path=str(integ.path), base=integ.base),
                 TasksPlanned(step_ids=list(ids)))

    def add(self, *events: Event) -> None:
        for e in events:
            self.state = apply(self.state, e)

    def work(self, tid: str, name: str = "f.txt") -> str:
        """Start ``tid``, write a file, commit: the commit's sha."""
        made = self.m.add_task(tid)
        attempt = self.state.tasks[tid].attempt + 1
        self.add(TaskStarted(step_id=tid, attempt=attempt),
                 TaskWorktreeCreated(step_id=tid, attempt=attempt, path=str(made.path), branch=made.branch,
                                     base=made.base, reused=made.reused),
                 TaskPhaseChanged(step_id=tid, attempt=attempt, phase=Phase.CODER))
        (made.path / name).write_text(f"{tid}\n")
        sha = self.m.commit(tid, f"write {name}").sha
        self.add(TaskCommitted(step_id=tid, attempt=attempt, commit=sha))
        return sha

    def finish(self, tid: str) -> Merged:
        attempt = self.state.tasks[tid].attempt
        for phase in (Phase.CHECKS, Phase.REVIEW):
            self.add(TaskPhaseChanged(step_id=tid, attempt=attempt, phase=phase))
        self.add(TaskReviewed(step_id=tid, attempt=attempt, round=1, approved=True),
                 TaskPhaseChanged(step_id=tid, attempt=attempt, phase=Phase.MERGE))
        merged = self.m.merge(tid)
        assert isinstance(merged, Merged)
        self.add(TaskMerged(step_id=tid, attempt=attempt, task_head=merged.task_head,
                            merge_commit=merged.merge_commit),
                 TaskPhaseChanged(step_id=tid, attempt=attempt, phase=Phase.CLEANUP))
        return merged

    def reconcile(self, *, prune_kept: bool = False) -> list[str]:
        """Reconcile, carry out, append the compensating events, and check the fixpoint; the actions as lines."""
        log = logged_run(self.m.run_id, str(self.m.run_dir), self.state)
        actions = reconcile(log, inventory(self.m, log), prune_kept=prune_kept)
        self.applied = carry_out(self.m, actions)
        assert all(a.ok for a in self.applied), [(a.action.repair, a.detail) for a in self.applied if not a.ok]
        heads = {a.action.target: a.head for a in self.applied if a.action.repair is Repair.DELETE_BRANCH}
        self.add(*compensation_events(self.state, [a.action for a in self.applied], heads=heads))
        log = logged_run(self.m.run_id, str(self.m.run_dir), self.state)
        assert reconcile(log, inventory(self.m, log), prune_kept=prune_kept) == []
        return describe(actions)


def test_worktrees_and_branches_the_log_does_not_account_for_are_listed_and_removed(repo):
    run = Run(repo, "Q1", ("done", "blocked"))
    run.work("done")
    run.finish("done")
    # The cleanup was cut short: the task is done in the log, its worktree and branch still exist.
    run.add(TaskDone(step_id="done", attempt=1))
    run.work("blocked")
    run.add(TaskBlocked(step_id="blocked", attempt=1, reason="needs a decision"))
    ghost = run.m.add_task("ghost")  # made by a run that crashed before its event was appended
    (ghost.path / "g.txt").write_text("uncommitted ghost work\n")
    lines = run.reconcile()
    assert any(line.startswith(f"remove-worktree {run.m.task_path('done')}") for line in lines)
    assert any(line.startswith(f"remove-worktree {ghost.path} @") and line.endswith("no task of the log has "
                                                                                   "this worktree") for line in lines)
    assert any(line.startswith("delete-branch baton/Q1/done") and "(merged)" in line for line in lines)
    assert any(line.startswith("delete-branch baton/Q1/ghost") for line in lines)
    # git and the log agree: only the blocked task (waiting for a person) and the integration remain.
    assert repo.branches() == ["baton/Q1/blocked", "baton/Q1/integrate", "main"]
    assert repo.worktree_paths() == [str(repo.root), str(run.m.integration_path), str(run.m.task_path("blocked"))]
    # The ghost's uncommitted work was salvaged into a commit before its branch went, and the event
    # records that commit: `git branch NAME SHA` brings the work back.
    deleted = next(a for a in run.applied if a.action.target == "baton/Q1/ghost")
    salvage = next(a for a in run.applied if a.action.target == str(ghost.path))
    assert deleted.head == salvage.head != deleted.action.head
    assert "not merged" in deleted.detail and f"git branch baton/Q1/ghost {deleted.head}" in deleted.detail
    assert repo.git("show", f"{deleted.head}:g.txt") == "uncommitted ghost work\n"


def test_a_running_task_whose_worktree_is_gone_is_failed_as_lost_and_its_commits_are_kept(repo):
    run = Run(repo, "Q2", ("t",))
    sha = run.work("t")
    shutil.rmtree(run.m.task_path("t"))  # someone deleted it; git still has it registered
    lines = run.reconcile()
    assert lines[0].startswith("prune-worktrees")
    assert any(line.startswith(f"fail-lost {run.m.task_path('t')}: the task's worktree is gone") for line in lines)
    assert "baton/Q2/t" in repo.branches()
    # The failure was appended (lost: the retry budget is kept); the retry continues the branch and its commit.
    assert run.state.tasks["t"].status.value == "planned_queued" and run.state.tasks["t"].retries_left == 1
    again = run.m.add_task("t")
    assert again.reused and again.base == sha and (again.path / "f.txt").read_text() == "t\n"


def test_a_task_branch_deleted_behind_batons_back_is_restored_from_the_log(repo):
    run = Run(repo, "Q3", ("t",))
    sha = run.work("t")
    run.m.remove_task("t", delete_branch=True)  # a person's `git worktree remove` + `git branch -D`
    lines = run.reconcile()
    assert any(line.startswith(f"restore-branch baton/Q3/t @{sha[:12]}") for line in lines)
    assert repo.git("rev-parse", "baton/Q3/t").strip() == sha


def test_a_merge_the_integration_branch_lost_is_redone_once(repo):
    run = Run(repo, "Q4", ("a", "b"))
    run.work("a", "a.txt")
    first = run.finish("a")
    run.add(TaskCleanedUp(step_id="a"), TaskDone(step_id="a", attempt=1))
    run.m.remove_task("a")
    # Someone reset the integration branch to the base: the log says a is merged, git lost it.
    integ = Path(run.m.integration_path)
    repo.git("reset", "-q", "--hard", repo.base, cwd=integ)
    lines = run.reconcile()
    assert any(line.startswith(f"remerge baton/Q4/a @{first.task_head[:12]}") for line in lines)
    assert repo.git("show", "baton/Q4/integrate:a.txt") == "a\n"
    assert run.reconcile() == []  # and never again


def test_a_merge_git_made_but_the_log_missed_is_recorded_not_redone(repo):
    run = Run(repo, "Q5", ("t",))
    head = run.work("t")
    attempt = run.state.tasks["t"].attempt
    for phase in (Phase.CHECKS, Phase.REVIEW):
        run.add(TaskPhaseChanged(step_id="t", attempt=attempt, phase=phase))
    run.add(TaskReviewed(step_id="t", attempt=attempt, round=1, approved=True),
            TaskPhaseChanged(step_id="t", attempt=attempt, phase=Phase.MERGE))
    run.m.merge("t")  # the process died before TaskMerged was appended
    lines = run.reconcile()
    assert lines == [f"record-merged baton/Q5/t @{head[:12]}: git merged it "
                     f"({repo.git('rev-parse', 'baton/Q5/integrate').strip()[:12]}) before the process stopped"]
    assert repo.git("rev-list", "--merges", "--count", "baton/Q5/integrate").strip() == "1"


def test_a_stale_lock_is_removed_but_a_live_one_is_left_alone(repo, tmp_path):
    run = Run(repo, "Q6", ("t",))
    run.work("t")
    admin = Path(repo.git("rev-parse", "--absolute-git-dir", cwd=run.m.task_path("t")).strip())
    (admin / "index.lock").write_text("")
    held = admin / "HEAD.lock"
    held.write_text("")
    holder = subprocess.Popen([sys.executable, "-c", f"import time; f = open({str(held)!r}); print('open', "
                                                     "flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"open"
        log = logged_run("Q6", str(run.m.run_dir), run.state)
        found = inventory(run.m, log)
        assert found.stale_locks == (str(admin / "index.lock"),)
        actions = reconcile(log, found)
        assert [a.repair for a in actions] == [Repair.REMOVE_STALE_LOCK]
        carry_out(run.m, actions)
        assert not (admin / "index.lock").exists() and held.exists()
    finally:
        holder.kill()
        holder.wait()
    os.unlink(held)


def test_an_aborted_task_keeps_its_branch_until_cleanup_prunes_it(repo):
    run = Run(repo, "Q7", ("t",))
    sha = run.work("t")
    run.add(TaskAborted(step_id="t", reason="a person aborted it"))
    lines = run.reconcile()
    assert lines == [f"remove-worktree {run.m.task_path('t')} @{sha[:12]}: task 't' has ended (aborted); "
                     "its worktree was not removed"]
    assert "baton/Q7/t" in repo.branches()  # kept: its work can be looked at
    pruned = run.reconcile(prune_kept=True)
    assert pruned == [f"delete-branch baton/Q7/t @{sha[:12]}: no task of the log uses it (NOT merged: restore "
                      "with `git branch NAME HEAD`)"]
    assert repo.branches() == ["baton/Q7/integrate", "main"]


def test_a_half_made_worktree_and_a_stray_directory_are_repaired(repo):
    run = Run(repo, "Q8", ("t",))
    run.work("t")
    shutil.rmtree(run.m.integration_path)  # integration worktree gone while the run is active
    stray = run.m.task_path("zz")
    stray.mkdir(parents=True)
    (stray / "junk").write_text("x")
    lines = run.reconcile()
    kinds = [line.split(" ", 1)[0] for line in lines]
    assert kinds == ["prune-worktrees", "remove-stray-dir", "recreate-integration"]
    assert not stray.exists() and (run.m.integration_path / "README.md").exists()
