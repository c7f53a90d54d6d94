"""The git side of a task run (§12): integration branch, task worktrees, commits, merges, cleanup, landing.

One :class:`RunWorktrees` per run. Every operation is argv lists through
:class:`~actors.workspace.git.Git` (no shell, a timeout on every call, typed
errors), never touches the person's own checkout (the integration branch
lives in a worktree of its own under ``run_dir``), and is **idempotent**:
run again after a crash, it finds what the first run did and finishes or
reports it, so it never loses work and never merges twice.

The integration worktree is a sparse checkout (top-level files only, set
per git call: :data:`SPARSE_OPTIONS`): a merge there is a real ``git
merge`` with the same aborts, locks and crash states as in a full one, but
it writes the index and only the files it must (a conflict's), so a run
pays one full checkout per task, not one more for the integration.

What a kill -9 half-way leaves, and how it is found and repaired: :mod:`actors.workspace.repair`.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from actors.workspace import locks
from actors.workspace.errors import CommitRefused, GitError, LockBusy, RefMoved, WorkspaceError
from actors.workspace.git import DEFAULT_TIMEOUT_S, Git, WorktreeEntry
from actors.workspace.worktree_results import (
    Cleanup,
    Commit,
    Conflict,
    Handback,
    Integration,
    Landing,
    Merged,
    MergeOutcome,
    NothingToMerge,
    TaskWorktree,
)
from flows.tasks.reconcile import (
    Repair,
    branch_prefix,
    integration_branch,
    integration_path,
    task_branch,
    task_path,
)

DEFAULT_CHECKOUT_TIMEOUT_S = 600.0
"""For git calls that write the whole tree: 8 checkouts of 10,000 files at once took over 30 s on a busy disk."""
INITIALIZING = "initializing"
"""The lock reason ``git worktree add`` leaves on a worktree until its checkout is complete."""
SPARSE_OPTIONS = ("-c", "core.sparseCheckout=true", "-c", "core.sparseCheckoutCone=true", "-c", "index.sparse=false")
"""On every git call in the integration worktree: its sparse checkout, set per call, never in the repository's config.

``git sparse-checkout set`` would turn on ``extensions.worktreeConfig`` in
the person's ``.git/config`` (older tools refuse a repository with an
extension they do not know); options on the command line change nothing
there. The patterns are the worktree's own file (``info/sparse-checkout``
in its git directory); where it is missing (a worktree made in full), git
ignores the options.
"""
CHECKOUT_OPTIONS = ("-c", "checkout.workers=4", "-c", "checkout.thresholdForParallelism=1000")
"""On a task worktree's checkout on disk: four processes write the files. On this VM's ext4 disk one
writer of 10,000 files waited ~11 s (median) on the journal, four ~1.4 s. In memory (tmpfs) they only
add CPU (~0.16 s -> ~0.24 s), so there one process does it (:func:`in_memory`)."""
MEMORY_FILE_SYSTEMS = frozenset({"tmpfs", "ramfs"})
ROOT_FILES_ONLY = "/*\n!/*/\n"
"""Cone-mode patterns with no directory: only the files at the top level are checked out."""
BATON_INITIALIZING = "baton: initializing"
"""Baton's own lock reason on a worktree registered but not yet checked out (:meth:`RunWorktrees._add_worktree`)."""
HALF_MADE = frozenset({INITIALIZING, BATON_INITIALIZING})
TRASH = "trash"
"""Under the run's directory: worktrees moved aside before their files are deleted."""
T = TypeVar("T")
_REGISTRY_LOCKS: dict[str, threading.Lock] = {}
_REGISTRY_GUARD = threading.Lock()


def _registry_lock(common_dir: Path) -> threading.Lock:
    """The process's lock on one repository's worktree registry (shared by every run on that repository)."""
    key = os.path.realpath(common_dir)
    with _REGISTRY_GUARD:
        return _REGISTRY_LOCKS.setdefault(key, threading.Lock())


class RunWorktrees:
    """Worktrees and branches of one task run, in the repository at ``repo``.

    Its crash repair (:mod:`actors.workspace.repair`) is built of the idempotent steps public here:
    ``ensure_branch``, ``ensure_worktree``, ``remove_worktree``, ``remove_stray_dir``,
    ``ready_integration``, and the registry reads under ``registry_call``.
    """

    def __init__(self, repo: Path | str, run_id: str, run_dir: Path | str, *,
                 timeout_s: float = DEFAULT_TIMEOUT_S, checkout_timeout_s: float = DEFAULT_CHECKOUT_TIMEOUT_S,
                 env: dict[str, str] | None = None, sparse_integration: bool = True) -> None:
        """``run_dir`` is baton's directory for this run's worktrees (outside the person's checkout).

        ``timeout_s`` bounds each git call; ``checkout_timeout_s`` those that
        write the whole tree (worktree add and remove, merge, rebase, reset),
        which take seconds per 10,000 files on a busy disk.
        ``sparse_integration=False`` checks the integration worktree out in
        full, as before sparse checkouts (the benchmarks' baseline).
        """
        self.git = Git(Path(os.path.realpath(repo)), timeout_s=timeout_s, env=dict(env or {}))
        self.run_id = run_id
        self.run_dir = Path(os.path.realpath(run_dir))
        self.timeout_s = timeout_s
        self.checkout_timeout_s = checkout_timeout_s
        self._integration_lock = threading.Lock()  # one merge, rebase-onto or landing at a time
        self.sparse_integration = sparse_integration
        self._checkout_options = () if in_memory(self.run_dir) else CHECKOUT_OPTIONS
        # One value (its git dir is asked once), with the sparse checkout's options on every call.
        self._integration_git = replace(self.at(self.integration_path), options=SPARSE_OPTIONS)
        self._registry = _registry_lock(self.git.common_dir())

    # -- names ---------------------------------------------------------------

    @property
    def integration_branch(self) -> str:
        """``baton/<run>/integrate``."""
        return integration_branch(self.run_id)

    @property
    def integration_path(self) -> Path:
        """The integration worktree's directory."""
        return Path(integration_path(str(self.run_dir)))

    def task_path(self, task_id: str) -> Path:
        """The task's worktree directory."""
        return Path(task_path(str(self.run_dir), task_id))

    def task_branch(self, task_id: str) -> str:
        """``baton/<run>/<task>``."""
        return task_branch(self.run_id, task_id)

    def at(self, path: Path) -> Git:
        """git in one of the run's worktrees, with the same timeout and environment (heavy calls pass their own)."""
        return Git(path, timeout_s=self.timeout_s, env=self.git.env)

    # -- creating ------------------------------------------------------------

    def create_integration(self, base: str) -> Integration:
        """The integration branch at ``base`` and its worktree; reuses what an earlier call made."""
        sha = self.git.resolve_commit(base)
        branch = self.integration_branch
        created = self.ensure_branch(branch, sha)
        self.ensure_worktree(self.integration_path, branch, work_inside=False, sparse=self.sparse_integration)
        return Integration(branch=branch, path=self.integration_path, base=sha, created=created)

    def add_task(self, task_id: str) -> TaskWorktree:
        """The task's branch (from the integration head) and worktree; a kept branch is continued.

        A worktree already at the task's place on its branch is reused as
        it is (its uncommitted work included); one left "initializing" by a
        killed ``worktree add`` never held work and is made again.
        """
        branch = self.task_branch(task_id)
        heads = self.git.branch_heads(branch_prefix(self.run_id))  # both heads in one git call
        existing = heads.get(branch)
        base = existing or heads.get(self.integration_branch) or self._integration_head()
        if existing is None:
            try:
                self.git.create_branch(branch, base)
            except RefMoved:  # made meanwhile (a concurrent retry): continue it
                base = self.git.branch_head(branch) or base
                existing = base
        self.ensure_worktree(self.task_path(task_id), branch, work_inside=True)
        return TaskWorktree(task_id=task_id, branch=branch, path=self.task_path(task_id), base=base,
                            reused=existing is not None)

    def ensure_branch(self, branch: str, sha: str) -> bool:
        """Create ``branch`` at ``sha`` unless it exists (compare-and-swap); whether this call made it."""
        if self.git.branch_head(branch) is not None:
            return False
        try:
            self.git.create_branch(branch, sha)
        except RefMoved:
            return False
        return True

    def ensure_worktree(self, path: Path, branch: str, *, work_inside: bool, sparse: bool = False) -> None:
        """A worktree of ``branch`` at ``path``: added, or found, or (half made by a crash) made again;
        one an agent worked in (``work_inside``) is kept as it is."""
        if not path.exists():
            # The common case: nothing there yet. A registration left by a crash
            # (directory gone) makes git refuse; prune and go on below.
            try:
                self._add_worktree(path, branch, sparse=sparse)
                return
            except GitError as exc:
                if "already registered" not in exc.stderr and "missing but" not in exc.stderr:
                    raise
        entry = self.registered(path)
        if entry is not None and not entry.prunable:
            if entry.locked in HALF_MADE or (not work_inside and entry.branch != branch):
                self._drop_worktree(path, entry)  # a half-made checkout holds no work
            elif entry.branch != branch:
                raise WorkspaceError(f"{path} is a worktree of {entry.branch or 'a detached HEAD'}, "
                                     f"not {branch}; run `baton tasks cleanup`")
            else:
                return
        elif entry is not None:
            self.registry_call(self.git.worktree_prune)
        if path.exists():
            self.remove_stray_dir(path)
        self._add_worktree(path, branch, sparse=sparse)

    def _add_worktree(self, path: Path, branch: str, *, sparse: bool = False) -> None:
        """Register the worktree (under the registry lock, fast), then check it out (outside it, slow).

        git's own ``worktree add`` is not safe against another one running in
        the same repository (it reads every registered worktree while another
        is half-written: "failed to read .git/worktrees/x/commondir"), so only
        the registration is serialised; the checkout, the slow part, runs in
        parallel. The worktree stays locked as ``baton: initializing`` until
        its checkout is complete, so a crash in between is recognised as
        half-made (never as a worktree whose files an agent deleted).

        ``sparse`` (the integration worktree): only the top-level files are
        checked out; a merge there writes the index, and on disk only the
        files it must (a conflict's), so a run does not pay a second full
        checkout for a worktree nobody works in.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        self.registry_call(lambda: self.git.write("worktree", "add", "--quiet", "--no-checkout", "--lock",
                                                   "--reason", BATON_INITIALIZING, str(path), branch))
        git = replace(self.at(path), options=SPARSE_OPTIONS if sparse else self._checkout_options)
        if sparse:
            info = git.git_dir() / "info"
            info.mkdir(exist_ok=True)
            (info / "sparse-checkout").write_text(ROOT_FILES_ONLY)
        git.write("reset", "--hard", "--quiet", "HEAD", timeout_s=self.checkout_timeout_s)
        self.registry_call(lambda: self.git.write("worktree", "unlock", str(path)))

    def _drop_worktree(self, path: Path, entry: WorktreeEntry | None) -> None:
        """Unregister and delete a worktree: moved aside, pruned (fast, serialised), then deleted (in parallel)."""
        if entry is not None and entry.locked is not None and path.exists():
            self.registry_call(lambda: self.git.write("worktree", "unlock", str(path)))
        if path.exists():
            trash = self.run_dir / TRASH / f"{path.name}-{secrets.token_hex(4)}"
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.rename(path, trash)  # atomic: from here git sees the worktree as gone
        else:
            trash = None
        if entry is not None:
            self.registry_call(self.git.worktree_prune)
        if trash is not None:
            shutil.rmtree(trash)

    def registry_call(self, call: Callable[[], T]) -> T:
        """Run a git call that reads or changes the worktree registry, one at a time per repository.

        Another process (a second baton, a person's git) is not covered by
        the lock: the race's "failed to read .git/worktrees/…" is retried.
        """
        for delay in (0.05, 0.2, 0.5, None):
            try:
                with self._registry:
                    return call()
            except GitError as exc:
                if delay is None or "failed to read" not in exc.stderr or "worktrees/" not in exc.stderr:
                    raise
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def registered_worktrees(self) -> list[WorktreeEntry]:
        """Every worktree the repository's registry lists (``git worktree list``)."""
        return self.registry_call(self.git.worktrees)

    def registered(self, path: Path) -> WorktreeEntry | None:
        """The registry's entry for the worktree at ``path``, or None."""
        real = os.path.realpath(path)
        for entry in self.registered_worktrees():
            if os.path.realpath(entry.path) == real:
                return entry
        return None

    def remove_stray_dir(self, path: Path) -> None:
        """Delete a directory git does not know, refusing anything outside the run's directory."""
        real = os.path.realpath(path)
        if os.path.commonpath([real, str(self.run_dir)]) != str(self.run_dir) or real == str(self.run_dir):
            raise WorkspaceError(f"refusing to remove {path}: it is not inside the run's directory {self.run_dir}")
        shutil.rmtree(real)

    def _integration_head(self) -> str:
        head = self.git.branch_head(self.integration_branch)
        if head is None:
            raise WorkspaceError(f"the integration branch {self.integration_branch} does not exist; "
                                 "create it first (or run `baton tasks cleanup` to restore it)")
        return head

    # -- working in a task ----------------------------------------------------------------

    def commit(self, task_id: str, message: str) -> Commit:
        """Commit every change in the task's worktree, the task id in the message.

        The subject is ``<task>: <message>`` and the trailers ``Baton-Task``
        and ``Baton-Run`` name the task and run. Temp files of a write cut
        short are never staged (reconciliation sweeps them). Raises
        :class:`CommitRefused` (nothing to commit, unresolved conflicts,
        conflict markers left).
        """
        path = self.task_path(task_id)
        text = commit_message(task_id, self.run_id, message)
        made = self.at(path).commit_all(text)
        return Commit(sha=made.sha, message=text, files=made.files, insertions=made.insertions,
                      deletions=made.deletions)

    def commits_since(self, task_id: str, since: str) -> list[Commit]:
        """The commits on the task's branch after ``since`` (made by a command-line agent), oldest first."""
        git = self.at(self.task_path(task_id))
        head = git.branch_head(self.task_branch(task_id))
        if not head or head == since:
            return []
        found = []
        for sha in git.commits_between(since, head):
            message, stat = git.commit_stat(sha)
            found.append(Commit(sha=sha, message=message or "(no message)", files=stat.files,
                                insertions=stat.insertions, deletions=stat.deletions))
        return found

    def diff(self, task_id: str) -> str:
        """``git diff integrate...task``: what the task changed since it forked (what the reviewer reads)."""
        return self.git.diff_since_fork(self.integration_branch, self.task_branch(task_id))

    # -- merging --------------------------------------------------------------------------------

    def merge(self, task_id: str, *, reviewed: str | None = None) -> MergeOutcome:
        """Merge the task branch into the integration branch (``--no-ff``), in the integration worktree.

        ``reviewed`` is the task head the reviewer approved: if the branch
        moved since, nothing is merged (:class:`RefMoved`). Already merged
        (a retry after a crash) is detected by ancestry and answered
        :class:`Merged` with ``already``; a conflict aborts the merge, lists
        the files and keeps the branch (:class:`Conflict`).
        """
        head = self.git.branch_head(self.task_branch(task_id))
        if head is None:
            raise WorkspaceError(f"task branch {self.task_branch(task_id)} does not exist")
        if reviewed is not None and head != reviewed:
            raise RefMoved(["git", "merge", head], str(self.integration_path), None, "",
                           hint=f"the branch moved from the reviewed {reviewed[:12]} to {head[:12]}; review again")
        return self.merge_commit(task_id, head)

    def merge_commit(self, task_id: str, sha: str) -> MergeOutcome:
        """Merge the commit ``sha`` of task ``task_id`` (also how a lost merge is redone from the log's sha)."""
        with self._integration_lock:
            repaired = self.ready_integration()
            integ = self._integration_git
            current = integ.head()
            if integ.is_ancestor(sha, current):
                merge = integ.merges_by_parent(current).get(sha)
                if merge is None:
                    return NothingToMerge(task_head=sha)
                return Merged(task_head=sha, merge_commit=merge, already=True, repaired=repaired)
            out = integ.write("merge", "--no-ff", "--no-edit", "-m", merge_message(task_id, self.run_id), sha,
                              check=False, timeout_s=self.checkout_timeout_s)
            if out.returncode == 0:
                return Merged(task_head=sha, merge_commit=integ.head(), repaired=repaired)
            files = integ.unmerged_paths()
            if integ.merge_in_progress():
                integ.write("merge", "--abort")
            if integ.changed_paths():
                integ.write("reset", "--hard", "--quiet", current)
            if not files:
                raise GitError(["git", "merge", "--no-ff", sha], str(self.integration_path), out.returncode,
                               out.stderr, hint="the merge failed without a conflict")
            return Conflict(files=files, integration_head=current, repaired=repaired)

    def ready_integration(self, *, check_files: bool = False) -> list[str]:
        """Make the integration worktree clean at its HEAD; what had to be repaired (for the log).

        Safe because that worktree never holds work of its own: everything
        in it comes from commits, so a half merge is undone, never finished.
        """
        path = self.integration_path
        if not (path / ".git").is_file() or self.registered(path) is None:
            self.ensure_worktree(path, self.integration_branch, work_inside=False, sparse=self.sparse_integration)
        integ = self._integration_git
        repaired = self._clear_stale_locks([integ.git_dir()], trees=[path])
        if integ.merge_in_progress():
            integ.write("merge", "--abort")
            repaired.append(Repair.ABORT_MERGE.value)
        # git changes this worktree's files only while it holds index.lock, so without
        # a lock left behind (or a merge stopped) it is clean by construction: the
        # status walk of every file is paid only after a crash (~0.1 s at 10,000 files).
        if (repaired or check_files) and integ.changed_paths():
            integ.write("reset", "--hard", "--quiet", "HEAD", timeout_s=self.checkout_timeout_s)
            integ.write("clean", "-ffd", "--quiet")
            repaired.append(Repair.RESET_INTEGRATION.value)
        return repaired

    def _clear_stale_locks(self, git_dirs: list[Path], trees: list[Path]) -> list[str]:
        cleared: list[str] = []
        for lock in locks.lock_files(git_dirs):
            holders = locks.holders(lock, trees)
            if holders:
                raise LockBusy(str(lock), holders)
            lock.unlink(missing_ok=True)
            cleared.append(f"{Repair.REMOVE_STALE_LOCK.value} {lock}")
        return cleared

    def update_task(self, task_id: str) -> Handback:
        """Bring the task branch onto the integration head for its implementor (after a conflict).

        A clean rebase is tried first (the implementor then sees a linear
        branch); if it conflicts it is aborted and the integration head is
        merged into the task worktree **without committing**: the conflict
        markers are left for the implementor, whose ``commit`` concludes the
        merge. A conflict is never resolved by taking one side. Uncommitted
        changes are committed first (``salvage``), so nothing is lost.
        """
        git = self.at(self.task_path(task_id))
        if git.rebase_in_progress():
            git.write("rebase", "--abort")
        with self._integration_lock:
            onto = self._integration_head()
        if git.merge_in_progress():  # handed back already (a retry): same answer
            return Handback(onto=onto, head=git.head(), conflicts=git.unmerged_paths())
        if git.changed_paths():
            self.commit(task_id, "save work in progress before the update")
        old = git.head()
        if git.is_ancestor(onto, old):
            return Handback(onto=onto, head=old, conflicts=[])
        if git.write("rebase", "--quiet", onto, check=False, timeout_s=self.checkout_timeout_s).returncode == 0:
            return Handback(onto=onto, head=git.head(), conflicts=[])
        git.write("rebase", "--abort")
        out = git.write("merge", "--no-ff", "--no-commit", onto, check=False, timeout_s=self.checkout_timeout_s)
        conflicts = git.unmerged_paths()
        if out.returncode == 0 or not conflicts:  # the merge alone went through: finish it
            git.write("commit", "--quiet", "--no-verify", "-m",
                      commit_message(task_id, self.run_id, f"merge the integration head {onto[:12]}"))
            return Handback(onto=onto, head=git.head(), conflicts=[])
        return Handback(onto=onto, head=old, conflicts=conflicts)

    # -- cleaning up -------------------------------------------------------------------------------

    def remove_task(self, task_id: str, *, delete_branch: bool | None = None, salvage: bool = True) -> Cleanup:
        """Remove the task's worktree and (when merged, or when asked) its branch; safe to repeat.

        Uncommitted changes are committed to the branch first (``salvaged``)
        so that removing a worktree never loses work. The branch is deleted
        by compare-and-swap at the head seen here. ``delete_branch=None``
        deletes it only when the integration branch contains it.

        ``salvage=False`` is for the cleanup after a merge: the worktree then
        holds nothing uncommitted by construction (baton's closing commit came
        after the checks, and only the read-only reviewer ran since), so the
        status walk of every file is skipped (~0.1 s CPU at 10,000 files).
        """
        salvaged = self.remove_worktree(self.task_path(task_id), task_id if salvage else "")
        branch = self.task_branch(task_id)
        head = self.git.branch_head(branch)
        deleted = False
        if head is not None:
            integ = self.git.branch_head(self.integration_branch)
            merged = integ is not None and self.git.is_ancestor(head, integ)
            if delete_branch or (delete_branch is None and merged):
                self.registry_call(lambda: self.git.delete_branch(branch, head))
                deleted = True
        return Cleanup(worktree_removed=True, branch_deleted=deleted or head is None, branch_head=head or "",
                       salvaged=salvaged)

    def remove_integration(self) -> None:
        """Remove the integration worktree (the branch stays until landed or cleaned up)."""
        self.remove_worktree(self.integration_path, "")

    def remove_worktree(self, path: Path, task_id: str) -> str:
        """Remove a worktree, first committing what is uncommitted to its branch when ``task_id`` is given."""
        entry = self.registered(path)
        salvaged = ""
        if task_id and entry is not None and not entry.prunable and path.exists() and entry.locked not in HALF_MADE:
            git = self.at(path)
            if git.rebase_in_progress():
                git.write("rebase", "--abort")
            if git.merge_in_progress():
                git.write("merge", "--abort")  # a half-resolved hand-back: the committed work stays
            if entry.branch and git.changed_paths():
                try:
                    salvaged = git.commit_all(commit_message(task_id, self.run_id, "salvage uncommitted work")).sha
                except CommitRefused:
                    salvaged = ""
        if entry is not None:
            self._drop_worktree(path, entry)
        if path.exists():
            self.remove_stray_dir(path)
        return salvaged

    # -- landing -------------------------------------------------------------------------------------

    def land(self, target: str) -> Landing:
        """Fast-forward ``target`` to the integration head; otherwise refuse and say why.

        Never in a checkout: if a worktree (the person's own included) has
        ``target`` checked out, landing is refused with the one command that
        does it there, because moving a checked-out branch under a work tree
        makes its files disagree with its HEAD.
        """
        with self._integration_lock:
            new = self._integration_head()
            old = self.git.branch_head(target)
            if old is None:
                return Landing(False, target, reason=f"there is no branch {target!r}")
            if old == new:
                return Landing(True, target, commit=new, reason="already there")
            if not self.git.is_ancestor(old, new):
                return Landing(False, target, reason=f"not a fast-forward: {target} has commits the integration "
                                                     f"branch lacks; {self.integration_branch} is kept at "
                                                     f"{new[:12]}")
            for wt in self.registered_worktrees():
                if wt.branch == target:
                    return Landing(False, target, reason=(
                        f"{target} is checked out in {wt.path}; baton does not change a checkout. Land it there "
                        f"with: git -C {wt.path} merge --ff-only {self.integration_branch}"))
            try:
                self.git.move_branch(target, new, old)
            except RefMoved:
                return Landing(False, target, reason=f"{target} moved while landing; try again")
            return Landing(True, target, commit=new)

    # -- the run's end ---------------------------------------------------------------------------------

    def close_integration(self) -> str:
        """Remove the integration worktree at the run's end; the branch stays (it is the run's result).

        Under the integration lock, so a merge a cancelled attempt still has under way finishes (or
        fails) first. Safe to repeat. Returns the integration branch's head (``""`` when it has none).
        """
        with self._integration_lock:
            self.remove_worktree(self.integration_path, "")
        return self.git.branch_head(self.integration_branch) or ""


def commit_message(task_id: str, run_id: str, message: str) -> str:
    """``<task>: <first line>`` + the rest + ``Baton-Task`` / ``Baton-Run`` trailers."""
    text = message.strip() or "work in progress"
    subject, _, rest = text.partition("\n")
    subject = subject.strip()
    if not subject.startswith(f"{task_id}:"):
        subject = f"{task_id}: {subject}"
    body = rest.strip()
    return f"{subject}\n\n" + (f"{body}\n\n" if body else "") + f"Baton-Task: {task_id}\nBaton-Run: {run_id}\n"


def merge_message(task_id: str, run_id: str) -> str:
    """The integration's merge commit message for a task."""
    return f"baton: merge task {task_id}\n\nBaton-Task: {task_id}\nBaton-Run: {run_id}\n"


def in_memory(path: Path, mounts: str | None = None) -> bool:
    """Whether ``path`` is on a file system in memory (the longest mount point of ``/proc/self/mounts`` over it).

    False where that cannot be told (no ``/proc``): parallel checkout then.
    """
    if mounts is None:
        try:
            mounts = Path("/proc/self/mounts").read_text()
        except OSError:
            return False
    real, best, kind = os.path.realpath(path), "", ""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])  # \040 is a space
        if is_inside(real, point) and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind in MEMORY_FILE_SYSTEMS


def is_inside(path: str, root: str) -> bool:
    """Whether ``path`` (resolved) is ``root`` or under it (``root`` is already resolved)."""
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip("/") + "/")
