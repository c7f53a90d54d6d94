"""A real git repository for the task machinery's tests, with no git identity configured anywhere.

``make_task_repo(tmp_path)`` builds ``tmp_path/repo`` (branch ``main``, one
commit) and returns a :class:`TaskRepo` whose ``env`` isolates git from the
machine's configuration: no global or system config, ``HOME`` in the
temporary directory, and ``user.useConfigOnly=true`` in the repository so
git cannot guess an identity from the host name. A commit baton makes there
works only because baton sets author and committer itself.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from actors.workspace.worktrees import RunWorktrees

SETUP_ID = ["-c", "user.name=Setup Person", "-c", "user.email=setup@example.com", "-c", "commit.gpgsign=false"]


@dataclass(frozen=True)
class TaskRepo:
    """The repository, baton's worktree directory for a run, and git's isolated environment."""

    root: Path
    worktrees: Path
    env: dict[str, str]
    base: str

    def git(self, *args: str, cwd: Path | None = None, check: bool = True) -> str:
        """Run git as a person would (test setup and assertions only)."""
        out = subprocess.run(["git", *SETUP_ID, *args], cwd=cwd or self.root, env=self.full_env(),
                             capture_output=True, text=True, check=False)
        if check and out.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed: {out.stderr}")
        return out.stdout

    def full_env(self) -> dict[str, str]:
        """The isolated environment, without identity variables the machine may set."""
        drop = {"GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"}
        return {k: v for k, v in {**os.environ, **self.env}.items() if k not in drop}

    def machinery(self, run_id: str = "R1", timeout_s: float = 30.0) -> RunWorktrees:
        """The run's :class:`RunWorktrees` over this repository."""
        return RunWorktrees(self.root, run_id, self.worktrees / run_id, timeout_s=timeout_s, env=self.env)

    def branches(self) -> list[str]:
        return sorted(self.git("branch", "--format=%(refname:short)").split())

    def worktree_paths(self) -> list[str]:
        return [line.split(" ", 1)[1] for line in self.git("worktree", "list", "--porcelain").splitlines()
                if line.startswith("worktree ")]


def make_task_repo(tmp_path: Path, files: dict[str, str] | None = None) -> TaskRepo:
    """A repository with ``files`` (default: a small app) committed on ``main``."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "empty-gitconfig").write_text("")
    env = {"HOME": str(home), "GIT_CONFIG_GLOBAL": str(home / "empty-gitconfig"), "GIT_CONFIG_NOSYSTEM": "1"}
    root = tmp_path / "repo"
    root.mkdir()
    repo = TaskRepo(root=root, worktrees=tmp_path / "baton-worktrees", env=env, base="")
    repo.git("init", "-q", "-b", "main")
    for name, text in (files or {"app.py": "def greet():\n    return 'hello'\n",
                                 "README.md": "# demo\n"}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "initial")
    repo.git("config", "user.useConfigOnly", "true")
    base = repo.git("rev-parse", "HEAD").strip()
    return TaskRepo(root=root, worktrees=repo.worktrees, env=env, base=base)
