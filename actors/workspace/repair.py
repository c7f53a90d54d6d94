"""A task run's git after a crash (§12): what a kill -9 half-way leaves, and how it is found and repaired.

The I/O half of reconciliation, over one run's
:class:`~actors.workspace.worktrees.RunWorktrees`: :func:`inventory` reads
what git says about the run; ``flows.tasks.reconcile`` (pure) compares it
with the run's log and answers actions; :func:`carry_out` repairs them, each
idempotent, so a crash between the repair and its events is repaired again
by the next reconciliation, which then finds nothing left to do.

What each operation of :class:`~actors.workspace.worktrees.RunWorktrees`
leaves when killed half-way, and its repair:

- ``create_integration`` / ``add_task``: the branch without its worktree,
  or a worktree git left locked "initializing" with a partial checkout. Run
  again: the branch is reused (it was created by compare-and-swap), a
  half-made worktree is removed and added again; a worktree an agent used
  is never re-made (only one still "initializing").
- a write (the tools): a ``.baton-write-*.tmp`` beside the untouched file;
  ``sweep-temp``, and a commit never stages one.
- ``commit``: ``index.lock`` (killed inside ``git add`` or ``git commit``);
  the changes are still in the worktree. ``remove-stale-lock`` when no
  process holds it; the next commit includes them. A commit that landed
  but was not recorded is on the branch (git is the truth of its content).
- ``merge``: ``index.lock`` with HEAD unmoved (killed inside git),
  ``MERGE_HEAD`` with conflict markers (killed after git stopped), or the
  merge commit made but not recorded. ``remove-stale-lock`` /
  ``abort-merge`` / ``reset-integration``: that worktree holds no work of
  its own. A merge that landed is found by its second parent and recorded
  (``record-merged``), never redone.
- ``update_task``: a rebase under way (``abort-rebase``: the branch returns
  to its head); the hand-back merge's markers are the implementor's work.
- ``remove_task``: the worktree registered with its directory gone, or a
  directory git forgot (``prune-worktrees``, ``remove-stray-dir``); the
  branch is deleted only by compare-and-swap.
- ``land``: nothing half: one compare-and-swap ``update-ref``.

Locks: a ``*.lock`` git left is removed only when no live process holds it
(:mod:`actors.workspace.locks`); a live one is waited for by the caller.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from actors.workspace import locks
from actors.workspace.errors import LockBusy, WorkspaceError
from actors.workspace.worktree_results import Conflict, Merged
from actors.workspace.worktrees import HALF_MADE, TRASH, RunWorktrees, is_inside
from actors.workspace.writes import is_temp_name
from flows.tasks.reconcile import (
    Compensation,
    GitInventory,
    LoggedRun,
    Repair,
    WorktreeInfo,
    branch_prefix,
    shas_to_ask,
)


@dataclass(frozen=True)
class Applied:
    """One compensation carried out (or not, with why)."""

    action: Compensation
    ok: bool
    detail: str = ""
    head: str = ""
    """For a deleted branch: the head it really had (a salvage commit may have moved it since the inventory)."""


def inventory(trees: RunWorktrees, log: LoggedRun | None = None) -> GitInventory:
    """What git says about this run (the I/O half of reconciliation)."""
    run_dir = str(trees.run_dir)
    entries = [e for e in trees.registered_worktrees() if is_inside(e.path, run_dir)]
    branches = trees.git.branch_heads(branch_prefix(trees.run_id))
    integ_head = branches.get(trees.integration_branch)
    ask = shas_to_ask(log, branches) if log is not None else set(branches.values())
    existing = frozenset(s for s in ask if trees.git.has_commit(s))
    contained = frozenset(s for s in existing if integ_head and trees.git.is_ancestor(s, integ_head))
    merges = trees.git.merges_by_parent(integ_head) if integ_head else {}
    live = [e for e in entries if not e.prunable and Path(e.path).exists()]
    merge_in_progress = dirty = False
    rebases: list[str] = []
    git_dirs: list[Path] = []
    for e in live:
        if e.locked in HALF_MADE:
            continue
        git = trees.at(Path(e.path))
        git_dirs.append(git.git_dir())
        if os.path.realpath(e.path) == str(trees.integration_path):
            merge_in_progress = git.merge_in_progress()
            dirty = not merge_in_progress and bool(git.changed_paths())
        elif git.rebase_in_progress():
            rebases.append(e.path)
    common = trees.git.common_dir()
    lock_paths = locks.lock_files(git_dirs, common / "refs" / "heads" / "baton" / trees.run_id)
    if (common / "packed-refs.lock").exists():
        lock_paths.append(common / "packed-refs.lock")
    tree_dirs = [Path(e.path) for e in live] + [trees.git.cwd]
    stale = tuple(str(p) for p in lock_paths if not locks.holders(p, tree_dirs))
    temps = tuple(t for e in live for t in _temp_files(Path(e.path)))
    registered = {os.path.realpath(e.path) for e in entries}
    strays = tuple(str(p) for p in _places(trees) if str(p) not in registered)
    return GitInventory(
        run_id=trees.run_id, run_dir=run_dir,
        worktrees=tuple(WorktreeInfo(path=e.path, branch=e.branch, head=e.head,
                                     prunable=e.prunable or not Path(e.path).exists()) for e in entries),
        branches=branches, merges=merges, contained=contained, existing=existing,
        merge_in_progress=merge_in_progress, integration_dirty=dirty, rebases=tuple(rebases),
        stale_locks=stale, temp_files=temps, stray_dirs=strays)


def _places(trees: RunWorktrees) -> list[Path]:
    """Directories where a worktree of this run would be (the integration's and each task's)."""
    out = [trees.integration_path] if trees.integration_path.is_dir() else []
    for parent in (trees.run_dir / "tasks", trees.run_dir / TRASH):
        if parent.is_dir():
            out += sorted(p for p in parent.iterdir() if p.is_dir() and not p.is_symlink())
    return [Path(os.path.realpath(p)) for p in out]


def carry_out(trees: RunWorktrees, actions: list[Compensation]) -> list[Applied]:
    """Carry out reconciliation's actions in order; one failing does not stop the others."""
    done: list[Applied] = []
    moved: dict[str, str] = {}  # branch -> head after a salvage commit made here
    for action in actions:
        try:
            detail, head = _carry_out(trees, action, moved)
            done.append(Applied(action, True, detail, head))
        except (WorkspaceError, OSError) as exc:
            done.append(Applied(action, False, str(exc)))
    return done


def _carry_out(trees: RunWorktrees, a: Compensation, moved: dict[str, str]) -> tuple[str, str]:
    path = Path(a.target)
    match a.repair:
        case Repair.REMOVE_STALE_LOCK:
            holders = locks.holders(path, [trees.git.cwd, trees.run_dir])
            if holders:
                raise LockBusy(a.target, holders)
            path.unlink(missing_ok=True)
        case Repair.ABORT_MERGE | Repair.RESET_INTEGRATION:
            return ", ".join(trees.ready_integration(check_files=True)) or "already clean", ""
        case Repair.ABORT_REBASE:
            git = trees.at(path)
            if git.rebase_in_progress():
                git.write("rebase", "--abort")
        case Repair.SWEEP_TEMP:
            path.unlink(missing_ok=True)
        case Repair.PRUNE_WORKTREES:
            trees.registry_call(trees.git.worktree_prune)
        case Repair.REMOVE_STRAY_DIR:
            if path.exists() and trees.registered(path) is None:
                trees.remove_stray_dir(path)
        case Repair.RESTORE_BRANCH:
            trees.ensure_branch(a.target, a.head)
        case Repair.RECREATE_INTEGRATION:
            trees.ensure_worktree(trees.integration_path, trees.integration_branch, work_inside=False,
                                   sparse=trees.sparse_integration)
        case Repair.REMERGE:
            outcome = trees.merge_commit(a.step_id, a.head)
            if isinstance(outcome, Conflict):
                raise WorkspaceError(f"re-merging {a.head[:12]} conflicts in {', '.join(outcome.files)}")
            merged = outcome.merge_commit if isinstance(outcome, Merged) else ""
            return (f"merged at {merged[:12]}" if merged else "nothing to merge"), merged
        case Repair.REMOVE_WORKTREE:
            entry = trees.registered(path)
            salvaged = trees.remove_worktree(path, a.step_id or "salvage")
            if salvaged and entry is not None and entry.branch:
                moved[entry.branch] = salvaged
            return (f"salvaged uncommitted work as {salvaged[:12]}" if salvaged else ""), salvaged
        case Repair.DELETE_BRANCH:
            head = moved.get(a.target, a.head)
            if trees.git.branch_head(a.target) is not None:
                trees.registry_call(lambda: trees.git.delete_branch(a.target, head))
            if head != a.head:
                return (f"deleted at the salvage commit {head[:12]} (not merged): restore with "
                        f"`git branch {a.target} {head}`"), head
            return "", head
        case Repair.RECORD_MERGED | Repair.FAIL_LOST | Repair.LOST:
            return "recorded in the log (no git action)", ""
    return "", ""


def _temp_files(root: Path) -> list[str]:
    """Temp files of writes cut short under ``root`` (``.git`` and symlinked directories are not entered)."""
    found: list[str] = []
    for here, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d.casefold() != ".git" and not os.path.islink(os.path.join(here, d))]
        found += [os.path.join(here, f) for f in files if is_temp_name(f)]
    return sorted(found)
