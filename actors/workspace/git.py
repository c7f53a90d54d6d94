"""git through ``subprocess.run([...])``: argv lists, a timeout, never a shell.

One :class:`Git` value per repository directory. Read operations serve the
read-only tools (§11) and pinning; the write operations of §12 (worktree
add/remove, branch, commit, merge) will be methods of the same class, built on
:meth:`Git.run`, so every git call baton makes goes through one place that
sets the same safety options.

Why the options on every call:

- ``GIT_OPTIONAL_LOCKS=0``: ``git status`` would otherwise refresh and write
  the index of a repository baton only reads;
- ``core.fsmonitor=false``: a repository's config could name a program to run
  as its file-system monitor; reading must never execute repository config;
- ``--no-ext-diff --no-textconv`` on diffs: same reason (diff drivers are
  commands);
- ``core.quotepath=off`` and ``-z``: paths come back as they are, not
  C-quoted;
- ``GIT_LITERAL_PATHSPECS=1``: a path is a path; ``*.py`` or ``:(top)`` in a
  tool's path argument is not git pathspec magic;
- ``GIT_TERMINAL_PROMPT=0``, stdin closed: git never waits for a person.

And on every command that writes (:meth:`Git.write`, §12):

- ``core.hooksPath=/dev/null`` (and ``--no-verify``): a repository's hooks
  are programs; only commands on the project's allow-list run on an agent's
  work, and a pre-commit hook is not one of them;
- ``commit.gpgsign=false``: signing needs an agent with a person's key;
- ``rerere.enabled=false``: a recorded resolution would resolve a conflict
  by itself; §12 says a conflict goes back to the implementor, always;
- ``gc.auto=0``, ``maintenance.auto=false``: no background gc left running
  (and holding locks) after baton's command returned;
- ``core.editor=:``, ``GIT_MERGE_AUTOEDIT=no``: never an editor;
- author and committer set in the environment (:data:`IDENTITY`), so a
  commit works where no ``user.name`` is configured, and baton's commits
  are recognisable.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from actors import cpus
from actors.workspace.errors import (
    BadRevision,
    BranchInUse,
    CommitRefused,
    GitError,
    GitTimeout,
    GitUnavailable,
    NoCommit,
    NotARepository,
    RefMoved,
)

DEFAULT_TIMEOUT_S = 30.0
_OPTIONS = ("-c", "core.quotepath=off", "-c", "core.fsmonitor=false", "-c", "color.ui=false")
_ENV = {"GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat",
        "PAGER": "cat", "LC_ALL": "C", "GIT_LITERAL_PATHSPECS": "1"}
_WRITE_OPTIONS = ("-c", "core.hooksPath=/dev/null", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false",
                  "-c", "rerere.enabled=false", "-c", "gc.auto=0", "-c", "maintenance.auto=false",
                  "-c", "core.editor=:", "-c", "sequence.editor=:", "-c", "merge.autoStash=false",
                  "-c", "rebase.autoStash=false", "-c", "rebase.updateRefs=false", "-c", "submodule.recurse=false",
                  "-c", "advice.detachedHead=false")
TEMP_GLOB = ".baton-write-*.tmp"
"""The names of the atomic writes' temp files (``actors.workspace.writes``): never staged."""
IDENTITY = ("baton", "baton@localhost")
"""Author and committer of every commit baton makes (the task id is in the message)."""
_SHA = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class GitOutput:
    """What one git command printed and how it ended."""

    stdout: bytes
    stderr: str
    returncode: int

    @property
    def text(self) -> str:
        """stdout as text; undecodable bytes become U+FFFD instead of failing."""
        return self.stdout.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Git:
    """git in one directory (a work tree or a worktree of it)."""

    cwd: Path
    timeout_s: float = DEFAULT_TIMEOUT_S
    executable: str = "git"
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment (tests set ``GIT_CONFIG_GLOBAL``); added to baton's own."""
    options: tuple[str, ...] = ()
    """Extra ``-c name=value`` options on every call here (the integration worktree's sparse checkout)."""

    def run(self, *args: str, check: bool = True, timeout_s: float | None = None,
            ok_codes: Sequence[int] = (0,), env: Mapping[str, str] | None = None) -> GitOutput:
        """Run ``git <args>`` in :attr:`cwd` and return what it printed.

        Raises :class:`GitTimeout` after ``timeout_s`` (the process is killed),
        :class:`GitUnavailable` when git cannot be started, and, with
        ``check``, :class:`GitError` when the exit code is not in ``ok_codes``.
        """
        argv = [self.executable, *_OPTIONS, *self.options, *args]
        full_env = {**os.environ, **_ENV, **self.env, **(env or {})}
        limit = self.timeout_s if timeout_s is None else timeout_s
        try:
            with cpus.unpinned():  # not on a server's one CPU (actors.cpus)
                proc = subprocess.run(argv, cwd=self.cwd, env=full_env, stdin=subprocess.DEVNULL,
                                      capture_output=True, timeout=limit, check=False)
        except subprocess.TimeoutExpired as exc:
            stderr = (exc.stderr or b"").decode("utf-8", errors="replace")
            raise GitTimeout(argv, str(self.cwd), None, stderr,
                             hint=f"no answer within {limit:g} s") from exc
        except FileNotFoundError as exc:
            if not Path(self.cwd).is_dir():
                raise NotARepository(str(self.cwd), "no such directory") from exc
            raise GitUnavailable(argv, str(self.cwd), None, str(exc),
                                 hint="is git installed and on PATH?") from exc
        except NotADirectoryError as exc:
            raise NotARepository(str(self.cwd), "not a directory") from exc
        out = GitOutput(proc.stdout, proc.stderr.decode("utf-8", errors="replace"), proc.returncode)
        if check and proc.returncode not in ok_codes:
            raise GitError(argv, str(self.cwd), proc.returncode, out.stderr)
        return out

    # -- the repository ---------------------------------------------------

    def toplevel(self) -> Path:
        """The root of the work tree containing :attr:`cwd`, symlinks resolved.

        Raises :class:`NotARepository` when :attr:`cwd` is not inside a work
        tree (including a bare repository or the inside of a ``.git`` dir).
        """
        out = self.run("rev-parse", "--is-inside-work-tree", "--show-toplevel", check=False)
        lines = out.text.splitlines()
        if out.returncode != 0 or not lines or lines[0] != "true" or len(lines) < 2:
            said = out.stderr.strip().splitlines()
            raise NotARepository(str(self.cwd), said[-1] if said else "not inside a work tree")
        return Path(os.path.realpath(lines[1]))

    def is_work_tree(self) -> bool:
        """Whether :attr:`cwd` is inside a git work tree."""
        try:
            self.toplevel()
        except NotARepository:
            return False
        return True

    def head(self) -> str:
        """The full sha of the commit HEAD points at.

        Raises :class:`NoCommit` for a repository without a commit.
        """
        out = self.run("rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
        if out.returncode != 0:
            raise NoCommit(["git", "rev-parse", "HEAD"], str(self.cwd), out.returncode,
                           out.stderr, hint="the repository has no commit yet; commit something first")
        return out.text.strip()

    def branch(self) -> str:
        """The checked-out branch's short name; ``""`` when HEAD is detached."""
        out = self.run("symbolic-ref", "--quiet", "--short", "HEAD", ok_codes=(0, 1))
        return out.text.strip() if out.returncode == 0 else ""

    def is_dirty(self) -> bool:
        """Whether the work tree differs from HEAD: changes, staged or not, or untracked files.

        Untracked (not ignored) files count: the tools can read them, so what
        an agent saw is not all in the pinned commit.
        """
        out = self.run("status", "--porcelain=v1", "-z", "--untracked-files=normal")
        return bool(out.stdout)

    def resolve_commit(self, rev: str) -> str:
        """The full sha of the commit ``rev`` names.

        A revision starting with ``-`` would be read as an option, so it is
        refused before git sees it. Raises :class:`BadRevision`.
        """
        if not rev or rev.startswith("-") or "\0" in rev or any(c.isspace() for c in rev):
            raise BadRevision(["git", "rev-parse", rev], str(self.cwd), 128, "",
                              hint=f"{rev!r} is not a revision name")
        out = self.run("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
        if out.returncode != 0:
            raise BadRevision(["git", "rev-parse", rev], str(self.cwd), out.returncode, out.stderr,
                              hint=f"{rev!r} names no commit of this repository")
        return out.text.strip()

    # -- reading ----------------------------------------------------------

    def diff(self, base: str | None = None, head: str | None = None, path: str | None = None) -> str:
        """A unified diff: ``base`` (default HEAD) against ``head`` (default the work tree).

        With neither, this is the work tree (staged and unstaged) against
        HEAD. Untracked files are not in it, as in ``git diff``. ``path`` must
        already be confined (:func:`actors.workspace.confine.check_relative`).
        """
        args = ["diff", "--no-ext-diff", "--no-textconv", "--no-color", "--no-renames"]
        args.append(self.resolve_commit(base or "HEAD"))
        if head:
            args.append(self.resolve_commit(head))
        args.append("--")
        if path:
            args.append(path)
        return self.run(*args).text

    def log(self, path: str | None = None, max_count: int = 20) -> list[str]:
        """The newest ``max_count`` commits touching ``path``: ``sha date author: subject``."""
        args = ["log", "--no-decorate", "--no-color", f"--max-count={max(1, max_count)}",
                "--date=short", "--format=%h %ad %an: %s", "--"]
        if path:
            args.append(path)
        out = self.run(*args, check=False)
        if out.returncode != 0:
            if "does not have any commits" in out.stderr:
                return []
            raise GitError(["git", *args], str(self.cwd), out.returncode, out.stderr)
        return out.text.splitlines()

    def blob_size(self, commit: str, path: str) -> int | None:
        """The size of the regular file ``path`` at ``commit``; None when it is not one there.

        A symlink's blob is its target's name, not a file's text, so it
        counts as no file: evidence cannot be checked against it.
        """
        out = self.run("ls-tree", "-l", "-z", "--full-tree", commit, "--", path, check=False)
        entry = out.stdout.split(b"\0", 1)[0].decode("utf-8", errors="replace")
        meta, _, name = entry.partition("\t")
        parts = meta.split()
        if out.returncode != 0 or name != path or len(parts) != 4:
            return None
        mode, kind, _sha, size = parts
        if kind != "blob" or mode == "120000" or not size.isdigit():
            return None
        return int(size)

    def blob(self, commit: str, path: str) -> bytes:
        """The bytes of ``path`` as committed in ``commit`` (``git cat-file blob``).

        The plumbing twin of ``git show COMMIT:path``: it never applies a
        textconv filter and refuses anything that is not a file. ``path`` must
        already be confined.
        """
        return self.run("cat-file", "blob", f"{commit}:{path}").stdout

    def files(self, under: str | None = None) -> list[str]:
        """Files git would show: tracked ones plus untracked ones not ignored.

        This is how listing and search respect ``.gitignore`` (and
        ``.git/info/exclude``, and the user's excludes) without reimplementing
        it. Paths are relative to the top level, ``/``-separated, sorted.
        Tracked files deleted from the work tree are still listed (they are in
        the index); callers that open files find them missing.
        """
        pending = self.start_untracked_files(under)
        tracked = self.tracked_files(under)
        return sorted(set(tracked).union(pending.result()))

    def tracked_files(self, under: str | None = None) -> list[str]:
        """Paths in the index under ``under`` (read from the index: no walk of the tree)."""
        return _names(self.run(*_ls_files_args(("--cached",), under)).stdout)

    def start_untracked_files(self, under: str | None = None) -> PendingFiles:
        """Start listing untracked, not ignored files; the answer comes from ``result()``.

        Finding them walks the whole tree, the slowest part of a listing
        (~0.1 s for 50,000 files): started first, it runs on another core
        while the caller works through the tracked files.
        """
        args = _ls_files_args(("--others", "--exclude-standard"), under)
        return PendingFiles(self, [self.executable, *_OPTIONS, *args])

    # -- writing (§12): worktrees, branches, commits, merges ----------------

    def write(self, *args: str, check: bool = True, timeout_s: float | None = None,
              ok_codes: Sequence[int] = (0,), env: Mapping[str, str] | None = None) -> GitOutput:
        """Run a git command that changes the repository: the write options and baton's identity added."""
        name, email = IDENTITY
        ident = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name,
                 "GIT_COMMITTER_EMAIL": email, "GIT_EDITOR": ":", "GIT_MERGE_AUTOEDIT": "no"}
        return self.run(*_WRITE_OPTIONS, *args, check=check, timeout_s=timeout_s, ok_codes=ok_codes,
                        env={**ident, **(env or {})})

    def git_dir(self) -> Path:
        """This work tree's own git directory (``.git/worktrees/<name>`` for a linked worktree).

        Asked once per value: where a work tree keeps its git directory does
        not change, and a merge asks it several times.
        """
        known = self.__dict__.get("_git_dir")
        if known is None:
            known = Path(self.run("rev-parse", "--absolute-git-dir").text.strip())
            self.__dict__["_git_dir"] = known  # frozen dataclass: a cache, not a field
        return known

    def common_dir(self) -> Path:
        """The repository's shared git directory (refs, objects, the worktree registry)."""
        out = self.run("rev-parse", "--git-common-dir").text.strip()
        return Path(os.path.realpath(os.path.join(self.cwd, out)))

    def worktrees(self) -> list[WorktreeEntry]:
        """Every worktree git has registered, the main one first (``worktree list --porcelain``)."""
        return _parse_worktrees(self.run("worktree", "list", "--porcelain", "-z").stdout)

    def branch_heads(self, prefix: str) -> dict[str, str]:
        """Branch name -> sha of every local branch under ``prefix`` (``baton/<run>/``)."""
        out = self.run("for-each-ref", "--format=%(refname)%00%(objectname)", f"refs/heads/{prefix}")
        heads: dict[str, str] = {}
        for line in out.text.splitlines():
            ref, _, sha = line.partition("\0")
            heads[ref.removeprefix("refs/heads/")] = sha
        return heads

    def branch_head(self, branch: str) -> str | None:
        """The sha ``branch`` points at; None when there is no such branch."""
        out = self.run("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}", check=False)
        return out.text.strip() if out.returncode == 0 else None

    def create_branch(self, branch: str, start: str) -> None:
        """Create ``branch`` at ``start`` only if it does not exist (atomic; :class:`RefMoved` when it does)."""
        self._update_ref(f"refs/heads/{branch}", start, "")

    def move_branch(self, branch: str, new: str, old: str) -> None:
        """Point ``branch`` at ``new`` only if it still points at ``old`` (compare and swap)."""
        self._update_ref(f"refs/heads/{branch}", new, old)

    def delete_branch(self, branch: str, expected: str) -> None:
        """Delete ``branch`` only if it still points at ``expected`` and no worktree has it checked out.

        ``update-ref -d`` would also delete a checked-out branch (leaving that
        worktree on a branch that does not exist), so the worktrees are
        looked at first: :class:`BranchInUse` names the one that has it.
        """
        for wt in self.worktrees():
            if wt.branch == branch:
                raise BranchInUse(["git", "branch", "-D", branch], str(self.cwd), None, "",
                                  hint=f"it is checked out in {wt.path}")
        self._update_ref(f"refs/heads/{branch}", "", expected, delete=True)

    def _update_ref(self, ref: str, new: str, old: str, *, delete: bool = False) -> None:
        args = ["update-ref", "-m", "baton", *(("-d", ref, old) if delete else (ref, new, old))]
        out = self.write(*args, check=False)
        if out.returncode != 0:
            cls = RefMoved if ("but expected" in out.stderr or "already exists" in out.stderr
                               or "unable to resolve reference" in out.stderr) else GitError
            raise cls(["git", *args], str(self.cwd), out.returncode, out.stderr)

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Whether ``ancestor`` is reachable from ``descendant`` (a commit is its own ancestor)."""
        out = self.run("merge-base", "--is-ancestor", ancestor, descendant, check=False)
        if out.returncode not in (0, 1):
            raise GitError(["git", "merge-base", "--is-ancestor", ancestor, descendant], str(self.cwd),
                           out.returncode, out.stderr)
        return out.returncode == 0

    def has_commit(self, sha: str) -> bool:
        """Whether the repository still has the commit ``sha`` (a deleted branch's head lives until gc)."""
        if not sha or not set(sha) <= _SHA:
            return False
        return self.run("cat-file", "-e", f"{sha}^{{commit}}", check=False).returncode == 0

    def worktree_add(self, path: Path, branch: str, *, timeout_s: float | None = None) -> None:
        """Check out the existing ``branch`` in a new worktree at ``path`` (a full checkout: give it time)."""
        self.write("worktree", "add", "--quiet", str(path), branch, timeout_s=timeout_s)

    def worktree_remove(self, path: Path, *, timeout_s: float | None = None) -> None:
        """Remove the worktree at ``path`` even when dirty or locked (callers salvage work first)."""
        self.write("worktree", "remove", "--force", "--force", str(path), timeout_s=timeout_s)

    def worktree_prune(self) -> None:
        """Forget registered worktrees whose directory is gone."""
        self.write("worktree", "prune")

    def changed_paths(self) -> list[str]:
        """Paths with changes, staged or not, untracked ones included (``status --porcelain -z``)."""
        out = self.run("status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames")
        return [entry[3:] for entry in _names(out.stdout) if len(entry) > 3]

    def commit_all(self, message: str) -> CommitStat:
        """Stage every change (``add -A``) and commit it: the new commit and what it changed.

        Raises :class:`CommitRefused` when nothing changed, when a merge
        still has unresolved paths, or when a staged file still holds a
        conflict marker (``diff --cached --check``): a half-resolved conflict
        is never committed as if it were code.
        """
        # Checked before `add`: staging a file marks its conflict resolved, markers and all.
        unresolved = [p for p in self.unmerged_paths() if _has_markers(self.cwd / p)]
        if unresolved:
            raise CommitRefused("unresolved-conflicts", "these files still hold conflict markers (<<<<<<< ... "
                                ">>>>>>>): resolve them first: " + ", ".join(unresolved))
        self.add_all()
        files, added, removed = _numstat(self.run("diff", "--cached", "--no-ext-diff", "--no-textconv",
                                                  "--no-renames", "--numstat", "-z").stdout)
        if not files and not self.merge_in_progress():
            raise CommitRefused("nothing-to-commit", "no file differs from the last commit")
        checked = self.run("diff", "--cached", "--check", "--no-color", ok_codes=(0, 1, 2))
        markers = [line for line in checked.text.splitlines() if "leftover conflict marker" in line]
        if markers:
            raise CommitRefused("conflict-markers", "; ".join(markers[:10]))
        parent = self._plain_parent()
        if parent is None:  # a merge (or a CLI agent's cherry-pick) to conclude: git commit knows how
            self.write("commit", "--quiet", "--no-verify", "--no-edit", "-m", message)
            return CommitStat(sha=self.head(), files=files, insertions=added, deletions=removed)
        return CommitStat(sha=self.commit_index(message, parent), files=files, insertions=added, deletions=removed)

    def commit_index(self, message: str, parent: str) -> str:
        """Commit the index on ``parent`` (HEAD): ``write-tree``, ``commit-tree``, compare-and-swap ``update-ref``.

        What ``git commit`` does for a plain commit, without its refresh of
        the index: that re-reads every file whose timestamp is as new as the
        index ("racily clean"), which right after a checkout of 10,000 files
        is every file, and ``add -A`` has just done it. HEAD moves only if it
        is still the commit the new one was made on (:class:`RefMoved`).
        """
        tree = self.write("write-tree").text.strip()
        text = clean_message(message)
        sha = self.write("commit-tree", tree, "-p", parent, "-m", text).text.strip()
        subject = text.partition("\n")[0]
        out = self.write("update-ref", "-m", f"commit: {subject}", "HEAD", sha, parent, check=False)
        if out.returncode != 0:
            cls = RefMoved if "but expected" in out.stderr else GitError
            raise cls(["git", "update-ref", "HEAD", sha, parent], str(self.cwd), out.returncode, out.stderr)
        return sha

    def _plain_parent(self) -> str | None:
        """HEAD, when the next commit is a plain one on it; None when it is git's to make.

        That is: a merge, cherry-pick, revert or rebase under way here, or
        no commit yet.
        """
        gd = self.git_dir()
        if any((gd / name).exists() for name in ("MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD", "rebase-merge",
                                                  "rebase-apply")):
            return None
        try:
            return self.head()
        except NoCommit:
            return None

    def commit_stat(self, sha: str) -> tuple[str, CommitStat]:
        """An existing commit's message and what it changed against its first parent."""
        message = self.run("log", "-1", "--format=%B", sha).text.strip()
        files, added, removed = _numstat(self.run("diff", "--no-ext-diff", "--no-textconv", "--no-renames",
                                                  "--numstat", "-z", f"{sha}^1", sha).stdout)
        return message, CommitStat(sha=sha, files=files, insertions=added, deletions=removed)

    def commits_between(self, old: str, new: str) -> list[str]:
        """The commits reachable from ``new`` and not from ``old``, oldest first (``rev-list --reverse``)."""
        return self.run("rev-list", "--reverse", "--no-merges", f"{old}..{new}").text.split()

    def add_all(self) -> None:
        """Stage every change, except the temp files of writes cut short (``.baton-write-*.tmp``).

        The exclusion is a pathspec of baton's own, so pathspec magic is
        switched on for this one call; every path a tool gives stays literal.
        """
        self.write("add", "-A", "--", ".", f":(exclude,glob)**/{TEMP_GLOB}", env={"GIT_LITERAL_PATHSPECS": "0"})

    def unmerged_paths(self) -> list[str]:
        """Paths a merge left unresolved (read from the index alone: no tree is compared)."""
        out = self.run("ls-files", "--unmerged", "-z")
        return sorted({entry.split("\t", 1)[1] for entry in _names(out.stdout) if "\t" in entry})

    def merge_in_progress(self) -> bool:
        """Whether a merge stopped here (``MERGE_HEAD`` exists)."""
        return (self.git_dir() / "MERGE_HEAD").exists()

    def rebase_in_progress(self) -> bool:
        """Whether a rebase stopped here."""
        gd = self.git_dir()
        return (gd / "rebase-merge").exists() or (gd / "rebase-apply").exists()

    def merges_by_parent(self, ref: str, limit: int = 10_000) -> dict[str, str]:
        """Second parent -> merge commit, for the merges on ``ref``'s first-parent line.

        How a task's merge is found again after a crash: the task head is
        the merge's second parent.
        """
        out = self.run("log", "--first-parent", "--merges", f"--max-count={limit}", "--format=%H %P", ref,
                       "--")
        found: dict[str, str] = {}
        for line in out.text.splitlines():
            parts = line.split()
            for parent in parts[2:]:
                found.setdefault(parent, parts[0])
        return found

    def diff_since_fork(self, base: str, head: str) -> str:
        """``git diff base...head``: what ``head`` changed since it forked from ``base`` (the reviewer's view)."""
        b, h = self.resolve_commit(base), self.resolve_commit(head)
        return self.run("diff", "--no-ext-diff", "--no-textconv", "--no-color", "--no-renames", f"{b}...{h}",
                        "--").text

    def numstat(self, base: str, head: str) -> tuple[list[str], int, int]:
        """(files, lines added, lines removed) from ``base`` to ``head`` (binary files count no lines)."""
        return _numstat(self.run("diff", "--no-ext-diff", "--no-textconv", "--no-renames", "--numstat", "-z", base,
                                 head, "--").stdout)


def clean_message(message: str) -> str:
    """A commit message as ``git commit -m`` leaves it (``--cleanup=whitespace``).

    Trailing spaces cut, runs of blank lines made one, blank lines at the
    start and end dropped, one final newline.
    """
    out: list[str] = []
    for line in message.split("\n"):
        line = line.rstrip(" \t\r\v\f")
        if line or (out and out[-1]):
            out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n" if out else ""


@dataclass(frozen=True)
class CommitStat:
    """A commit :meth:`Git.commit_all` made and what it changed."""

    sha: str
    files: list[str]
    insertions: int
    deletions: int


def _numstat(stdout: bytes) -> tuple[list[str], int, int]:
    files: list[str] = []
    added = removed = 0
    for entry in _names(stdout):
        parts = entry.split("\t", 2)
        if len(parts) != 3:
            continue
        a, r, name = parts
        files.append(name)
        added += int(a) if a.isdigit() else 0
        removed += int(r) if r.isdigit() else 0
    return files, added, removed


@dataclass(frozen=True)
class WorktreeEntry:
    """One registered worktree."""

    path: str
    head: str = ""
    branch: str = ""
    """Short name; ``""`` when detached or bare."""
    bare: bool = False
    locked: str | None = None
    """The lock reason (``""`` when locked without one); None when not locked."""
    prunable: bool = False


_MARKER = re.compile(rb"^(<{7}|>{7})( |$)", re.MULTILINE)


def _has_markers(path: Path) -> bool:
    """Whether a file still holds a conflict marker line (a missing file holds none: deleted is a resolution)."""
    try:  # never follow a symlink, never block on a FIFO: this is the agent's tree
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        with os.fdopen(fd, "rb", closefd=False) as f:
            return bool(_MARKER.search(f.read()))
    finally:
        os.close(fd)


def _parse_worktrees(stdout: bytes) -> list[WorktreeEntry]:
    entries: list[WorktreeEntry] = []
    fields: dict[str, str] = {}
    for line in [*stdout.decode("utf-8", errors="surrogateescape").split("\0"), ""]:
        if line:
            key, _, value = line.partition(" ")
            fields[key] = value
            continue
        if "worktree" in fields:
            entries.append(WorktreeEntry(
                path=fields["worktree"], head=fields.get("HEAD", ""),
                branch=fields.get("branch", "").removeprefix("refs/heads/"), bare="bare" in fields,
                locked=fields.get("locked"), prunable="prunable" in fields))
        fields = {}
    return entries


class PendingFiles:
    """A ``git ls-files`` running in the background."""

    def __init__(self, git: Git, argv: list[str]) -> None:
        """Start ``argv`` in ``git.cwd``."""
        self._git = git
        self._argv = argv
        self._deadline = time.monotonic() + git.timeout_s
        try:
            with cpus.unpinned():  # not on a server's one CPU (actors.cpus)
                self._proc = subprocess.Popen(argv, cwd=git.cwd, env={**os.environ, **_ENV, **git.env},
                                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE)
        except FileNotFoundError as exc:
            raise GitUnavailable(argv, str(git.cwd), None, str(exc), hint="is git installed and on PATH?") from exc

    def result(self) -> list[str]:
        """The file paths (nested repositories and other directories left out)."""
        try:
            out, err = self._proc.communicate(timeout=max(0.0, self._deadline - time.monotonic()))
        except subprocess.TimeoutExpired as exc:
            self._proc.kill()
            self._proc.communicate()
            raise GitTimeout(self._argv, str(self._git.cwd), None, "",
                             hint=f"no answer within {self._git.timeout_s:g} s") from exc
        if self._proc.returncode != 0:
            raise GitError(self._argv, str(self._git.cwd), self._proc.returncode,
                           err.decode("utf-8", errors="replace"))
        # A nested repository shows as `sub/` (git does not walk into it); a
        # path ending in `/` is a directory, never a file to read.
        return [name for name in _names(out) if not name.endswith("/")]


def _ls_files_args(which: tuple[str, ...], under: str | None) -> list[str]:
    args = ["ls-files", "-z", *which, "--full-name", "--"]
    if under and under != ".":
        args.append(under)
    return args


def _names(stdout: bytes) -> list[str]:
    # surrogateescape: a file name that is not UTF-8 survives the round trip to open().
    return [name for name in stdout.decode("utf-8", errors="surrogateescape").split("\0") if name]
