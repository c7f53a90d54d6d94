"""Reconciliation: git state against the log, both ways, as a list of compensating actions (pure).

The log is the authority on **intent** (which tasks exist, which were merged,
which ended); git is the authority on **effects** (which worktrees, branches,
merges and locks exist). After a crash the two can disagree in a small,
known number of ways, because every git effect is bracketed by an intent
event before and a fact event after (``flows/tasks/events.py``). Each way
has one compensation here, so the repair is a table, not judgement:

=====================================================  =========================================
git says                                               compensation
=====================================================  =========================================
a lock file no process holds (``index.lock``, …)        ``remove-stale-lock`` (first: git needs it)
``MERGE_HEAD`` in the integration worktree             ``abort-merge`` (a merge never half-lands)
integration worktree dirty, no merge under way         ``reset-integration`` (it holds no work)
a rebase under way in a task worktree                  ``abort-rebase`` (the branch returns to its head)
an atomic write's temp file left behind                ``sweep-temp``
a registered worktree whose directory is gone          ``prune-worktrees``
a directory where a worktree should be, unregistered   ``remove-stray-dir`` (a worktree add cut short)
the merge of a task the log has not recorded           ``record-merged`` (a fact, never a 2nd merge)
integration lacks a task the log says merged           ``remerge`` the recorded head (or
                                                       ``lost`` when git no longer has it)
a running task's worktree or branch is gone            ``fail-lost`` (the task is retried)
a task branch gone that held commits the log knows     ``restore-branch`` at the recorded head (``lost``
                                                       when git no longer has that commit)
the integration branch / worktree gone, run active     ``restore-branch`` / ``recreate-integration``
a worktree or branch the log does not account for      ``remove-worktree`` / ``delete-branch``
=====================================================  =========================================

"Accounted for" means a task that may still use it: a worktree at a task's
path (or the integration worktree) while the task (or run) has not ended;
a branch of a task that has not ended, or of a task that ended without
being merged (kept on purpose: its work can be looked at) unless
``prune_kept``. In a run that has ended no task goes on, whatever its log
says (a run cancelled before its cancel aborted its tasks): its tasks'
worktrees are not accounted for, their branches are kept as an ended
task's are, and none is restored or failed as lost (nothing would use it). Every ``delete-branch`` carries the sha the branch pointed
at, recorded in ``GitCompensated``, so nothing is lost that ``git branch
NAME SHA`` cannot bring back.

The I/O half (``actors/workspace/repair.py``) builds the
:class:`GitInventory` and carries out the actions; both this function and
that one are idempotent, so running reconciliation twice changes nothing the
second time (a property test checks the fixpoint).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from enum import Enum

import msgspec

from flows.events import Event
from flows.tasks.events import (
    GitCompensated,
    Phase,
    TaskBlocked,
    TaskFailed,
    TaskMerged,
    TaskStatus,
)
from flows.tasks.lifecycle import TaskRunState

INTEGRATE = "integrate"


# -- the layout (one home for names and paths) ---------------------------------


def branch_prefix(run_id: str) -> str:
    """``baton/<run>/``: every branch of a run starts with it."""
    return f"baton/{run_id}/"


def integration_branch(run_id: str) -> str:
    """``baton/<run>/integrate``."""
    return branch_prefix(run_id) + INTEGRATE


def task_branch(run_id: str, task_id: str) -> str:
    """``baton/<run>/<task>``."""
    return branch_prefix(run_id) + task_id


def integration_path(run_dir: str) -> str:
    """Where the integration worktree lives, under the run's directory."""
    return f"{run_dir.rstrip('/')}/{INTEGRATE}"


def task_path(run_dir: str, task_id: str) -> str:
    """Where a task's worktree lives, under the run's directory."""
    return f"{run_dir.rstrip('/')}/tasks/{task_id}"


# -- what git says ------------------------------------------------------------------


class WorktreeInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One worktree as ``git worktree list --porcelain`` shows it."""

    path: str
    branch: str = ""
    """Short branch name; ``""`` when detached."""
    head: str = ""
    prunable: bool = False
    """Registered, but its directory is gone."""


class GitInventory(msgspec.Struct, frozen=True, kw_only=True):
    """What git says about one run: only what lies under its branch prefix or its directory."""

    run_id: str
    run_dir: str
    worktrees: tuple[WorktreeInfo, ...] = ()
    branches: dict[str, str] = {}
    """Branch name -> head sha, for the run's branches."""
    merges: dict[str, str] = {}
    """Task head sha -> the integration's merge commit that brought it in (first-parent merges)."""
    contained: frozenset[str] = frozenset()
    """Of the shas asked about (task heads, logged merged heads), those reachable from the integration head."""
    existing: frozenset[str] = frozenset()
    """Of the shas asked about, those git still has as commits (a deleted branch's head, until gc)."""
    merge_in_progress: bool = False
    integration_dirty: bool = False
    rebases: tuple[str, ...] = ()
    """Task worktree paths with a rebase under way."""
    stale_locks: tuple[str, ...] = ()
    """Lock files no live process holds."""
    temp_files: tuple[str, ...] = ()
    """Leftover temp files of atomic writes (killed mid-write)."""
    stray_dirs: tuple[str, ...] = ()
    """Directories at a worktree's place (the integration's or a task's) that git has not registered."""


# -- what the log says ------------------------------------------------------------------


class LoggedTask(msgspec.Struct, frozen=True, kw_only=True):
    """One task's git facts as the log has them."""

    task_id: str
    status: TaskStatus
    phase: Phase | None = None
    review_capped: bool = False
    worktree_created: bool = False
    worktree_removed: bool = False
    branch_created: bool = False
    branch_deleted: bool = False
    branch_head: str = ""
    base: str = ""
    merged_head: str = ""
    merge_commit: str = ""

    @property
    def ended(self) -> bool:
        """Whether the task will never use its worktree again."""
        return self.status.terminal


class LoggedRun(msgspec.Struct, frozen=True, kw_only=True):
    """A run's git facts as the log has them."""

    run_id: str
    run_dir: str
    active: bool = True
    """False once the run ended: its integration worktree is no longer needed."""
    integration_created: bool = False
    integration_head: str = ""
    """The last integration head the log knows (the last merge commit, or the base)."""
    tasks: tuple[LoggedTask, ...] = ()


def logged_run(run_id: str, run_dir: str, state: TaskRunState, *, active: bool = True) -> LoggedRun:
    """The log's side, from a task run's folded state."""
    tasks = tuple(LoggedTask(
        task_id=tid, status=t.status, phase=t.phase, review_capped=t.review_capped,
        worktree_created=bool(t.worktree), worktree_removed=t.worktree_removed,
        branch_created=bool(t.branch), branch_deleted=t.branch_deleted, branch_head=t.branch_head,
        base=t.base, merged_head=t.merged_head, merge_commit=t.merge_commit) for tid, t in state.tasks.items())
    return LoggedRun(run_id=run_id, run_dir=run_dir, active=active, integration_created=state.integration_created,
                     integration_head=state.integration_head, tasks=tasks)


def shas_to_ask(log: LoggedRun, branches: dict[str, str]) -> set[str]:
    """The shas the inventory must test (reachable from integration? still a commit?)."""
    out = {sha for sha in branches.values() if sha}
    for t in log.tasks:
        out.update(s for s in (t.branch_head, t.merged_head, t.merge_commit) if s)
    if log.integration_head:
        out.add(log.integration_head)
    return out


# -- the decision --------------------------------------------------------------------------


class Repair(str, Enum):
    """The compensating actions, in the order they are carried out."""

    REMOVE_STALE_LOCK = "remove-stale-lock"
    ABORT_MERGE = "abort-merge"
    RESET_INTEGRATION = "reset-integration"
    ABORT_REBASE = "abort-rebase"
    SWEEP_TEMP = "sweep-temp"
    PRUNE_WORKTREES = "prune-worktrees"
    REMOVE_STRAY_DIR = "remove-stray-dir"
    RESTORE_BRANCH = "restore-branch"
    RECREATE_INTEGRATION = "recreate-integration"
    RECORD_MERGED = "record-merged"
    REMERGE = "remerge"
    LOST = "lost"
    FAIL_LOST = "fail-lost"
    REMOVE_WORKTREE = "remove-worktree"
    DELETE_BRANCH = "delete-branch"


_ORDER = {r: n for n, r in enumerate(Repair)}


class Compensation(msgspec.Struct, frozen=True, kw_only=True):
    """One action; it becomes one ``GitCompensated`` event (and, for tasks, the task's own event)."""

    repair: Repair
    target: str
    reason: str
    step_id: str = ""
    head: str = ""
    merge_commit: str = ""
    """For ``record-merged``: the merge commit git made."""


def reconcile(log: LoggedRun, git: GitInventory, *, prune_kept: bool = False) -> list[Compensation]:
    """The actions that make git agree with the log (and the log record what git already did).

    ``prune_kept`` also deletes the kept branches of tasks that ended
    without merging (``baton tasks cleanup`` after the run ended).
    """
    out: list[Compensation] = []
    add = out.append
    for lock in sorted(git.stale_locks):
        add(Compensation(repair=Repair.REMOVE_STALE_LOCK, target=lock, reason="no process holds it"))
    integ_path = integration_path(log.run_dir)
    integ_branch = integration_branch(log.run_id)
    paths = {w.path: w for w in git.worktrees}
    if git.merge_in_progress:
        add(Compensation(repair=Repair.ABORT_MERGE, target=integ_path,
                         reason="a merge was under way when the process stopped"))
    elif git.integration_dirty:
        add(Compensation(repair=Repair.RESET_INTEGRATION, target=integ_path,
                         reason="changes in the integration worktree that no commit holds (a merge cut short)"))
    for path in sorted(git.rebases):
        add(Compensation(repair=Repair.ABORT_REBASE, target=path, reason="a rebase was under way"))
    for temp in sorted(git.temp_files):
        add(Compensation(repair=Repair.SWEEP_TEMP, target=temp, reason="a write was cut short"))
    if any(w.prunable for w in git.worktrees):
        gone = ", ".join(sorted(w.path for w in git.worktrees if w.prunable))
        add(Compensation(repair=Repair.PRUNE_WORKTREES, target=log.run_dir, reason=f"directories gone: {gone}"))
    for stray in sorted(git.stray_dirs):
        add(Compensation(repair=Repair.REMOVE_STRAY_DIR, target=stray, step_id=_task_of(log, stray),
                         reason="a directory git does not know as a worktree (a worktree add or remove cut short)"))
    live = {p: w for p, w in paths.items() if not w.prunable}

    if log.integration_created and log.active:
        branch_there = integ_branch in git.branches
        if not branch_there and log.integration_head:
            _restore(add, integ_branch, log.integration_head, git, "the integration branch is gone")
            branch_there = log.integration_head in git.existing
        if integ_path not in live and branch_there:
            add(Compensation(repair=Repair.RECREATE_INTEGRATION, target=integ_path,
                             reason="the integration worktree is gone"))

    for t in log.tasks:
        _task(add, log, git, t, live)

    accounted_paths = {integ_path} if log.integration_created and log.active else set()
    accounted_branches = {integ_branch} if log.integration_created else set()
    for t in log.tasks:
        if not t.ended and log.active:
            accounted_paths.add(task_path(log.run_dir, t.task_id))
            accounted_branches.add(task_branch(log.run_id, t.task_id))
        elif not prune_kept and t.status is not TaskStatus.DONE and not t.branch_deleted:
            accounted_branches.add(task_branch(log.run_id, t.task_id))  # kept on purpose
    for path in sorted(set(live) - accounted_paths):
        add(Compensation(repair=Repair.REMOVE_WORKTREE, target=path, step_id=_task_of(log, path),
                         head=live[path].head, reason=_why_unaccounted(log, path)))
    restored = {c.target for c in out if c.repair is Repair.RESTORE_BRANCH}
    for branch in sorted(set(git.branches) - accounted_branches - restored):
        head = git.branches[branch]
        merged = "merged" if head in git.contained else "NOT merged: restore with `git branch NAME HEAD`"
        add(Compensation(repair=Repair.DELETE_BRANCH, target=branch, head=head,
                         step_id=branch.removeprefix(branch_prefix(log.run_id)),
                         reason=f"no task of the log uses it ({merged})"))
    return sorted(out, key=lambda c: (_ORDER[c.repair], c.target))


def _task(add: Callable[[Compensation], None], log: LoggedRun, git: GitInventory, t: LoggedTask,
          live: dict[str, WorktreeInfo]) -> None:
    branch = task_branch(log.run_id, t.task_id)
    path = task_path(log.run_dir, t.task_id)
    head = git.branches.get(branch, "")
    if t.merged_head:
        if t.merged_head not in git.contained:
            if t.merged_head in git.existing:
                add(Compensation(repair=Repair.REMERGE, target=branch, step_id=t.task_id, head=t.merged_head,
                                 reason="the log has it merged; the integration branch does not contain it"))
            else:
                add(Compensation(repair=Repair.LOST, target=branch, step_id=t.task_id, head=t.merged_head,
                                 reason="merged per the log, missing from the integration branch, and the "
                                        "commit is gone from the repository: a person must redo it"))
        return
    if t.status is TaskStatus.INPROGRESS and t.phase is Phase.MERGE and head and head in git.merges:
        add(Compensation(repair=Repair.RECORD_MERGED, target=branch, step_id=t.task_id, head=head,
                         merge_commit=git.merges[head],
                         reason=f"git merged it ({git.merges[head][:12]}) before the process stopped"))
        return
    if t.ended or not log.active:  # in an ended run no task goes on: treated as the ended ones are
        return
    own_work = bool(t.branch_head) and t.branch_head != t.base and t.branch_head not in git.contained
    if t.branch_created and not t.branch_deleted and not head and own_work:
        _restore(add, branch, t.branch_head, git, "the task branch is gone; its commits are known to the log",
                 step_id=t.task_id)
    if t.status is TaskStatus.INPROGRESS and t.worktree_created and not t.worktree_removed:
        gone = "worktree" if path not in live else ("branch" if not head else "")
        if gone:
            add(Compensation(repair=Repair.FAIL_LOST, target=path, step_id=t.task_id,
                             reason=f"the task's {gone} is gone: the attempt is lost and retried"))


def _restore(add: Callable[[Compensation], None], branch: str, sha: str, git: GitInventory, why: str,
             step_id: str = "") -> None:
    if sha in git.existing:
        add(Compensation(repair=Repair.RESTORE_BRANCH, target=branch, head=sha, step_id=step_id, reason=why))
    else:
        add(Compensation(repair=Repair.LOST, target=branch, head=sha, step_id=step_id,
                         reason=f"{why}, and git no longer has {sha[:12]}: a person must look"))


def _task_of(log: LoggedRun, path: str) -> str:
    prefix = log.run_dir.rstrip("/") + "/tasks/"
    return path[len(prefix):] if path.startswith(prefix) else ""


def _why_unaccounted(log: LoggedRun, path: str) -> str:
    task_id = _task_of(log, path)
    known = {t.task_id: t for t in log.tasks}
    if path == integration_path(log.run_dir):
        return "the run has ended; its integration worktree is no longer needed"
    if task_id in known and not known[task_id].ended:
        return f"the run has ended; task {task_id!r} ({known[task_id].status.value} in the log) goes no further"
    if task_id in known:
        return f"task {task_id!r} has ended ({known[task_id].status.value}); its worktree was not removed"
    return "no task of the log has this worktree"


def compensation_events(state: TaskRunState, done: Iterable[Compensation], *, heads: Mapping[str, str] | None = None,
                        now: float = 0.0) -> list[Event]:
    """The events that record what reconciliation did (``done``: the actions carried out without error).

    One ``GitCompensated`` per action, and for the actions that change what
    the log knows about a task, the task's own event (each passes the
    lifecycle guard): ``record-merged`` -> ``TaskMerged(already=True)``;
    ``fail-lost`` -> ``TaskFailed(lost=True, will_retry=True)`` (a lost
    attempt does not use up a retry); ``lost`` on a task in progress ->
    ``TaskBlocked`` (a person must look). ``heads`` overrides the head a
    deleted branch is recorded at (when a salvage commit moved it first).
    """
    events: list[Event] = []
    for a in done:
        head = (heads or {}).get(a.target, a.head)
        events.append(GitCompensated(action=a.repair.value, target=a.target, reason=a.reason, step_id=a.step_id,
                                     head=head, at=now))
        task = state.tasks.get(a.step_id)
        if task is None:
            continue
        if a.repair is Repair.RECORD_MERGED:
            events.append(TaskMerged(step_id=a.step_id, attempt=task.attempt, task_head=a.head,
                                     merge_commit=a.merge_commit, already=True, at=now))
        elif a.repair is Repair.FAIL_LOST and task.status is TaskStatus.INPROGRESS:
            events.append(TaskFailed(step_id=a.step_id, attempt=task.attempt, error=a.reason, will_retry=True,
                                     lost=True, at=now))
        elif a.repair is Repair.LOST and task.status is TaskStatus.INPROGRESS:
            events.append(TaskBlocked(step_id=a.step_id, attempt=task.attempt, reason=a.reason, source="reconcile",
                                      at=now))
    return events


def describe(actions: Iterable[Compensation]) -> list[str]:
    """One line per action (``baton tasks cleanup --dry-run``)."""
    return [f"{a.repair.value} {a.target}" + (f" @{a.head[:12]}" if a.head else "") + f": {a.reason}"
            for a in actions]
