"""Reconciliation as a pure function, over random log and git states.

A small model of git (``carry_out``) applies the actions the way
``actors.workspace.repair.carry_out`` does, and the log's side the way the
integration's compensating events will. For every random pair:

- nothing a live task uses is removed (its worktree, its branch, the
  integration branch and worktree of an active run), and every branch
  deletion carries the head it removed (so it can be restored);
- no task is merged twice: ``remerge`` only when the integration lacks the
  logged head, ``record-merged`` only when the log lacks the merge, never both;
- afterwards git holds nothing the log does not account for, no lock, no
  merge or rebase under way, no temp file, no stray or prunable worktree;
- a task still in progress afterwards has its worktree and branch (or was failed as lost);
- reconciling again changes nothing (a fixpoint) but repeat the ``lost``
  escalations, which only a person can settle;
- locks go first, aborts before merges, worktrees before their branches.
"""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.tasks.events import Phase, TaskStatus
from flows.tasks.reconcile import (
    Compensation,
    GitInventory,
    LoggedRun,
    LoggedTask,
    Repair,
    WorktreeInfo,
    describe,
    integration_branch,
    integration_path,
    reconcile,
    task_branch,
    task_path,
)

RUN, DIR = "R", "/w/R"
SHAS = [f"{n:040x}" for n in range(1, 17)]
BASES = SHAS[:4]  # integration commits a task may fork from: shared


def own(task_id: str) -> list[str]:
    """The commits only task ``task_id`` makes (``--no-ff`` merges and forks from merge commits
    mean no other task's branch ever points at one; a model that let them would see the remerge
    of one task "merge" another that shares its head)."""
    i = int(task_id[1:])
    return SHAS[4 + 2 * i:6 + 2 * i]


@st.composite
def states(draw: st.DrawFn) -> tuple[LoggedRun, GitInventory]:
    n = draw(st.integers(0, 4))
    tasks: list[LoggedTask] = []
    for i in range(n):
        status = draw(st.sampled_from(list(TaskStatus)))
        phase = draw(st.sampled_from(list(Phase))) if status is TaskStatus.INPROGRESS else None
        # As the lifecycle allows: merged once done, in cleanup, or aborted after its merge.
        can_merge = status is TaskStatus.ABORTED or phase is Phase.CLEANUP
        mine = own(f"t{i}")
        merged = draw(st.sampled_from(mine)) if status is TaskStatus.DONE or (can_merge and draw(st.booleans())) else ""
        base = draw(st.sampled_from(BASES))
        tasks.append(LoggedTask(
            task_id=f"t{i}", status=status, phase=phase,
            worktree_created=draw(st.booleans()), worktree_removed=draw(st.booleans()),
            branch_created=draw(st.booleans()), branch_deleted=draw(st.booleans()),
            branch_head=draw(st.sampled_from([base, *mine])), base=base, merged_head=merged))
    created = draw(st.booleans())
    log = LoggedRun(run_id=RUN, run_dir=DIR, active=draw(st.booleans()), integration_created=created,
                    integration_head=draw(st.sampled_from(["", *SHAS])) if created else "", tasks=tuple(tasks))
    ids = [f"t{i}" for i in range(n + 2)]  # two more than the log knows: orphans
    wt_paths = [integration_path(DIR), *(task_path(DIR, t) for t in ids)]
    worktrees = tuple(WorktreeInfo(path=p, head=draw(st.sampled_from(SHAS)), prunable=draw(st.integers(0, 5)) == 0)
                      for p in draw(st.lists(st.sampled_from(wt_paths), unique=True)))
    names = [integration_branch(RUN), *(task_branch(RUN, t) for t in ids)]
    # A task branch points at a base or at that task's own commits; the integration branch anywhere.
    branches = {b: draw(st.sampled_from(SHAS if b == integration_branch(RUN) else [*BASES, *own(b.rsplit("/", 1)[1])]))
                for b in draw(st.lists(st.sampled_from(names), unique=True))}
    existing = frozenset(draw(st.lists(st.sampled_from(SHAS), unique=True)))
    contained = frozenset(s for s in existing if draw(st.booleans()))
    merges = {s: "m" + s[1:] for s in contained if draw(st.booleans())}
    live_paths = [w.path for w in worktrees if not w.prunable]
    git = GitInventory(
        run_id=RUN, run_dir=DIR, worktrees=worktrees, branches=branches, merges=merges, contained=contained,
        existing=existing, merge_in_progress=draw(st.booleans()), integration_dirty=draw(st.booleans()),
        rebases=tuple(draw(st.lists(st.sampled_from(live_paths), unique=True))) if live_paths else (),
        stale_locks=tuple(draw(st.lists(st.sampled_from(["/g/index.lock", "/g/packed-refs.lock"]), unique=True))),
        temp_files=tuple(draw(st.lists(st.sampled_from(["/w/R/tasks/t0/.baton-write-1.tmp"]), unique=True))),
        stray_dirs=tuple(draw(st.lists(st.sampled_from([task_path(DIR, "zz"), task_path(DIR, "t1")]), unique=True))))
    return log, git


def carry_out(log: LoggedRun, git: GitInventory, actions: list[Compensation]) -> tuple[LoggedRun, GitInventory]:
    """What the actions do, in the model: git's side as the machinery does it, the log's as the events will."""
    tasks = {t.task_id: t for t in log.tasks}
    worktrees = {w.path: w for w in git.worktrees}
    branches = dict(git.branches)
    contained, merges = set(git.contained), dict(git.merges)
    g: dict[str, object] = {}
    for a in actions:
        match a.repair:
            case Repair.REMOVE_STALE_LOCK:
                g["stale_locks"] = ()
            case Repair.ABORT_MERGE | Repair.RESET_INTEGRATION:
                g["merge_in_progress"] = g["integration_dirty"] = False
            case Repair.ABORT_REBASE:
                g["rebases"] = ()
            case Repair.SWEEP_TEMP:
                g["temp_files"] = ()
            case Repair.PRUNE_WORKTREES:
                worktrees = {p: w for p, w in worktrees.items() if not w.prunable}
            case Repair.REMOVE_STRAY_DIR:
                g["stray_dirs"] = ()
            case Repair.RESTORE_BRANCH:
                branches[a.target] = a.head
            case Repair.RECREATE_INTEGRATION:
                worktrees[a.target] = WorktreeInfo(path=a.target, branch=integration_branch(RUN))
            case Repair.RECORD_MERGED:
                tasks[a.step_id] = msgspec.structs.replace(tasks[a.step_id], merged_head=a.head)
            case Repair.REMERGE:
                contained.add(a.head)
                merges[a.head] = "n" + a.head[1:]
            case Repair.FAIL_LOST:
                tasks[a.step_id] = msgspec.structs.replace(tasks[a.step_id], status=TaskStatus.PLANNED_QUEUED,
                                                           phase=None)
            case Repair.REMOVE_WORKTREE:
                del worktrees[a.target]
            case Repair.DELETE_BRANCH:
                del branches[a.target]
            case Repair.LOST:
                pass  # a person's question; the model leaves it open
    after_git = msgspec.structs.replace(git, worktrees=tuple(worktrees.values()), branches=branches,
                                        contained=frozenset(contained), merges=merges, **g)
    return msgspec.structs.replace(log, tasks=tuple(tasks.values())), after_git


def live_task(log: LoggedRun, task_id: str) -> bool:
    """A task that may still use its worktree and branch: not ended, in a run that has not ended."""
    return log.active and any(t.task_id == task_id and not t.status.terminal for t in log.tasks)


@settings(max_examples=400, deadline=None)
@given(pair=states(), prune_kept=st.booleans())
def test_reconciliation_is_safe_complete_and_a_fixpoint(pair, prune_kept):
    log, git = pair
    actions = reconcile(log, git, prune_kept=prune_kept)
    assert actions == reconcile(log, git, prune_kept=prune_kept)  # deterministic
    assert len(describe(actions)) == len(actions)
    kinds = [a.repair for a in actions]

    # Nothing a live task or an active run uses is removed; every deletion can be undone.
    for a in actions:
        if a.repair is Repair.DELETE_BRANCH:
            assert a.head == git.branches[a.target]
            assert not live_task(log, a.step_id)
            assert not (log.integration_created and a.target == integration_branch(RUN))
        if a.repair is Repair.REMOVE_WORKTREE:
            assert not live_task(log, a.step_id)
            assert not (log.integration_created and log.active and a.target == integration_path(DIR))

    # Never merged twice.
    for a in actions:
        if a.repair is Repair.REMERGE:
            assert a.head not in git.contained
        if a.repair is Repair.RECORD_MERGED:
            assert not next(t for t in log.tasks if t.task_id == a.step_id).merged_head
    per_task = [(a.step_id, a.repair) for a in actions if a.repair in (Repair.REMERGE, Repair.RECORD_MERGED)]
    assert len({sid for sid, _ in per_task}) == len(per_task)

    # The order: locks first, the integration made clean before anything merges into it.
    assert kinds == sorted(kinds, key=list(Repair).index)

    after_log, after_git = carry_out(log, git, actions)
    accounted_paths = {integration_path(DIR)} if log.integration_created and log.active else set()
    accounted_paths |= {task_path(DIR, t.task_id) for t in after_log.tasks if live_task(after_log, t.task_id)}
    for w in after_git.worktrees:
        assert not w.prunable and w.path in accounted_paths, w
    for name in after_git.branches:
        task_id = name.removeprefix(f"baton/{RUN}/")
        kept = any(t.task_id == task_id and not (prune_kept or t.status is TaskStatus.DONE or t.branch_deleted)
                   and not live_task(after_log, task_id) for t in after_log.tasks)
        assert (name == integration_branch(RUN) and log.integration_created) or live_task(after_log, task_id) \
            or kept, name
    # A task still in progress after the repair has its worktree and branch (else it was failed as lost);
    # in a run that has ended, none is failed as lost (nothing would retry it).
    lost = {a.step_id for a in actions if a.repair is Repair.LOST}
    live_paths = {w.path for w in after_git.worktrees}
    assert log.active or Repair.FAIL_LOST not in kinds
    for t in after_log.tasks:
        if (log.active and t.status is TaskStatus.INPROGRESS and t.worktree_created and not t.worktree_removed
                and not t.merged_head and t.task_id not in lost):  # merged: its cleanup just finishes
            assert task_path(DIR, t.task_id) in live_paths and task_branch(RUN, t.task_id) in after_git.branches, t
    assert not (after_git.merge_in_progress or after_git.integration_dirty or after_git.rebases
                or after_git.stale_locks or after_git.temp_files or after_git.stray_dirs)

    again = reconcile(after_log, after_git, prune_kept=prune_kept)
    assert all(a.repair is Repair.LOST for a in again), describe(again)
    assert sorted(a.target for a in again) == sorted(a.target for a in actions if a.repair is Repair.LOST)


def test_the_table_of_the_module_docstring_case_by_case():
    merged_head, kept_head, stray_head = SHAS[0], SHAS[1], SHAS[2]
    log = LoggedRun(run_id=RUN, run_dir=DIR, integration_created=True, integration_head=SHAS[5], tasks=(
        LoggedTask(task_id="done", status=TaskStatus.DONE, worktree_created=True, branch_created=True,
                   merged_head=merged_head),
        LoggedTask(task_id="running", status=TaskStatus.INPROGRESS, phase=Phase.CODER, worktree_created=True,
                   branch_created=True, branch_head=kept_head, base=SHAS[5]),
        LoggedTask(task_id="merging", status=TaskStatus.INPROGRESS, phase=Phase.MERGE, worktree_created=True,
                   branch_created=True, branch_head=SHAS[3], base=SHAS[5]),
    ))
    git = GitInventory(
        run_id=RUN, run_dir=DIR, merge_in_progress=True, stale_locks=("/g/worktrees/integrate/index.lock",),
        worktrees=(WorktreeInfo(path=integration_path(DIR)), WorktreeInfo(path=task_path(DIR, "done")),
                   WorktreeInfo(path=task_path(DIR, "merging")), WorktreeInfo(path=task_path(DIR, "ghost"))),
        branches={integration_branch(RUN): SHAS[5], task_branch(RUN, "done"): merged_head,
                  task_branch(RUN, "merging"): SHAS[3], task_branch(RUN, "ghost"): stray_head},
        merges={SHAS[3]: "m3"}, contained=frozenset({SHAS[3], SHAS[5]}), existing=frozenset(SHAS))
    lines = describe(reconcile(log, git))
    assert lines[0].startswith("remove-stale-lock /g/worktrees/integrate/index.lock")
    assert lines[1].startswith("abort-merge /w/R/integrate")
    assert any(line.startswith(f"restore-branch baton/R/running @{kept_head[:12]}") for line in lines)
    assert any(line.startswith(f"remerge baton/R/done @{merged_head[:12]}") for line in lines)
    assert any(line.startswith("record-merged baton/R/merging") for line in lines)
    assert any(line.startswith("fail-lost /w/R/tasks/running: the task's worktree is gone") for line in lines)
    assert any(line.startswith("remove-worktree /w/R/tasks/done: task 'done' has ended") for line in lines)
    assert any(line.startswith("remove-worktree /w/R/tasks/ghost: no task of the log") for line in lines)
    assert any(line.startswith(f"delete-branch baton/R/ghost @{stray_head[:12]}") and "NOT merged" in line
               for line in lines)
    assert any(line.startswith("delete-branch baton/R/done") for line in lines)
    assert not any("integrate" in line and line.startswith(("delete-branch", "remove-worktree")) for line in lines)


def test_an_ended_run_whose_log_still_has_tasks_under_way_gets_their_worktrees_removed_and_branches_kept():
    # A run cancelled before a cancel aborted its tasks: its log still has one running, one blocked.
    log = LoggedRun(run_id=RUN, run_dir=DIR, active=False, integration_created=True, integration_head=SHAS[5], tasks=(
        LoggedTask(task_id="running", status=TaskStatus.INPROGRESS, phase=Phase.CODER, worktree_created=True,
                   branch_created=True, branch_head=SHAS[1], base=SHAS[5]),
        LoggedTask(task_id="gone", status=TaskStatus.INPROGRESS, phase=Phase.CODER, worktree_created=True,
                   branch_created=True, branch_head=SHAS[2], base=SHAS[5]),
        LoggedTask(task_id="blocked", status=TaskStatus.BLOCKED, worktree_created=True, branch_created=True,
                   branch_head=SHAS[3], base=SHAS[5]),
    ))
    git = GitInventory(
        run_id=RUN, run_dir=DIR,
        worktrees=(WorktreeInfo(path=task_path(DIR, "running")), WorktreeInfo(path=task_path(DIR, "blocked"))),
        branches={integration_branch(RUN): SHAS[5], task_branch(RUN, "running"): SHAS[1],
                  task_branch(RUN, "gone"): SHAS[2], task_branch(RUN, "blocked"): SHAS[3]},
        contained=frozenset({SHAS[5]}), existing=frozenset(SHAS))
    lines = describe(reconcile(log, git))
    assert lines == [
        "remove-worktree /w/R/tasks/blocked: the run has ended; task 'blocked' (blocked in the log) goes no further",
        "remove-worktree /w/R/tasks/running: the run has ended; task 'running' (inprogress in the log) goes no "
        "further"]  # no fail-lost for the one whose worktree is gone; every branch kept (unmerged work)
    pruned = describe(reconcile(log, git, prune_kept=True))
    assert sum(line.startswith("delete-branch") and "NOT merged" in line for line in pruned) == 3
