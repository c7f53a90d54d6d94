"""git through argv lists on a real repository: pinning facts, diff, log, blobs, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.workspace.errors import (
    BadRevision,
    GitError,
    GitTimeout,
    GitUnavailable,
    NoCommit,
    NotARepository,
)
from actors.workspace.git import Git
from tests.integration.workspace_repo import DemoRepo, git, make_repo


@pytest.fixture
def repo(tmp_path: Path) -> DemoRepo:
    return make_repo(tmp_path)


def test_repository_facts(repo):
    g = Git(repo.root)
    assert g.toplevel() == repo.root.resolve()
    assert Git(repo.root / "src").toplevel() == repo.root.resolve()
    assert g.head() == repo.head and len(repo.head) == 40
    assert g.branch() == "main"
    assert g.is_dirty()  # notes.txt is untracked


def test_clean_and_detached(repo):
    g = Git(repo.root)
    (repo.root / "notes.txt").unlink()
    assert not g.is_dirty()
    (repo.root / "README.md").write_text("changed\n")
    assert g.is_dirty()
    git(repo.root, "checkout", "-q", "README.md")
    git(repo.root, "checkout", "-q", "--detach", "HEAD~1")
    assert g.branch() == ""
    assert g.head() == repo.first_commit


def test_status_does_not_write_the_index(repo):
    index = repo.root / ".git" / "index"
    before = index.stat().st_mtime_ns
    (repo.root / "README.md").touch()  # a stat change git would like to refresh
    Git(repo.root).is_dirty()
    assert index.stat().st_mtime_ns == before


def test_not_a_repository_says_so(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(NotARepository, match="is not a git repository"):
        Git(tmp_path / "plain").toplevel()
    assert not Git(tmp_path / "plain").is_work_tree()
    with pytest.raises(NotARepository, match="no such directory"):
        Git(tmp_path / "missing").toplevel()


def test_a_repository_without_commits_cannot_be_pinned(tmp_path):
    git(tmp_path, "init", "-q")
    with pytest.raises(NoCommit, match="no commit yet"):
        Git(tmp_path).head()


def test_diff_work_tree_against_head_and_between_commits(repo):
    g = Git(repo.root)
    assert g.diff() == ""
    (repo.root / "README.md").write_text("# Demo\n\nChanged.\n")
    work = g.diff()
    assert "-A demo repository." in work and "+Changed." in work
    assert g.diff(path="src") == ""
    between = g.diff(repo.first_commit, repo.head, "src/util.py")
    assert "+def other():" in between and "README" not in between
    assert "+def other():" in g.diff(base=repo.first_commit, path="src/util.py")


def test_a_revision_that_looks_like_an_option_never_reaches_git(repo):
    g = Git(repo.root)
    for rev in ("--output=/tmp/pwned", "-p", "HEAD --", "a\0b"):
        with pytest.raises(BadRevision):
            g.diff(base=rev)
    with pytest.raises(BadRevision, match="names no commit"):
        g.diff(base="no-such-branch")
    assert not Path("/tmp/pwned").exists()


def test_log_one_commit_a_line(repo):
    lines = Git(repo.root).log()
    assert len(lines) == 2
    assert lines[0].endswith("Test Person: second commit: traps")
    assert Git(repo.root).log("src/app.py") == lines[1:]
    assert len(Git(repo.root).log(max_count=1)) == 1


def test_blobs_at_a_commit(repo):
    g = Git(repo.root)
    assert g.blob(repo.first_commit, "src/util.py") == b"def helper():\n    return 'help'\n"
    assert g.blob_size(repo.first_commit, "src/util.py") == len(b"def helper():\n    return 'help'\n")
    assert g.blob_size(repo.first_commit, "image.png") is None  # added later
    assert g.blob_size(repo.head, "src") is None  # a tree
    assert g.blob_size(repo.head, "secret_link.txt") is None  # a symlink's blob is no file


def test_files_respect_gitignore_and_include_untracked(repo):
    files = Git(repo.root).files()
    assert "notes.txt" in files and "src/app.py" in files
    assert "build/out.txt" not in files
    assert not any(f.startswith(".git/") for f in files)
    assert Git(repo.root).files("src") == ["src/app.py", "src/util.py"]


def test_pathspec_magic_is_taken_literally(repo):
    assert Git(repo.root).files("*.py") == []
    assert Git(repo.root).files(":(top)") == []


def test_errors_name_the_command_and_what_git_said(repo):
    with pytest.raises(GitError) as err:
        Git(repo.root).run("cat-file", "blob", "HEAD:nope")
    message = str(err.value)
    assert "`git cat-file blob HEAD:nope` failed" in message and "exit 128" in message
    assert "-c core" not in message


def test_timeout_and_missing_git(repo, tmp_path):
    stuck = tmp_path / "stuck-git"
    stuck.write_text("#!/bin/sh\nexec sleep 30\n")
    stuck.chmod(0o755)
    with pytest.raises(GitTimeout, match=r"timed out.*no answer within 0.2 s"):
        Git(repo.root, timeout_s=0.2, executable=str(stuck)).run("log")
    with pytest.raises(GitUnavailable, match="is git installed"):
        Git(repo.root, executable="/nonexistent/git").run("status")
