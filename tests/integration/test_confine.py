"""Confinement on a real tree: every rule refused by name, nothing outside read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actors.workspace.confine import Confinement, check_relative, is_text
from actors.workspace.errors import PathRefused, Rule
from tests.integration.workspace_repo import SECRET, DemoRepo, make_repo

CAP = 64 * 1024


@pytest.fixture
def repo(tmp_path: Path) -> DemoRepo:
    return make_repo(tmp_path)


@pytest.fixture
def confinement(repo: DemoRepo) -> Confinement:
    return Confinement(repo.root, max_file_bytes=CAP)


def refused(confinement: Confinement, path: str) -> PathRefused:
    with pytest.raises(PathRefused) as err:
        confinement.read_text(path)
    return err.value


@pytest.mark.parametrize(("path", "rule"), [
    ("/etc/passwd", Rule.ABSOLUTE_PATH),
    ("../outside/secret.txt", Rule.OUTSIDE_ROOT),
    ("src/../../outside/secret.txt", Rule.OUTSIDE_ROOT),
    ("..", Rule.OUTSIDE_ROOT),
    ("escape/secret.txt", Rule.SYMLINK_OUT),
    ("secret_link.txt", Rule.SYMLINK_OUT),
    ("escape", Rule.SYMLINK_OUT),
    (".git/config", Rule.GIT_DIR),
    ("src/../.git/HEAD", Rule.GIT_DIR),
    (".GIT/config", Rule.GIT_DIR),
    ("image.png", Rule.BINARY),
    ("latin1.txt", Rule.BINARY),
    ("big.txt", Rule.TOO_LARGE),
    ("src/missing.py", Rule.NOT_FOUND),
    ("src", Rule.NOT_A_FILE),
    ("", Rule.INVALID_PATH),
    ("src/app.py\0.txt", Rule.INVALID_PATH),
])
def test_each_rule_refuses_by_its_name_and_keeps_the_path_as_given(confinement, path, rule):
    err = refused(confinement, path)
    assert err.rule is rule
    assert err.path == path
    assert rule.value in str(err)
    assert SECRET not in str(err)


def test_a_symlink_that_stays_inside_is_followed(confinement):
    assert "def handle_request" in confinement.read_text("docs/app.py")
    assert confinement.resolve("docs/app.py").rel == "src/app.py"


def test_a_dotdot_that_stays_inside_is_allowed(confinement):
    assert confinement.read_text("src/../README.md").startswith("# Demo")


def test_a_symlink_into_dot_git_is_refused(repo, confinement):
    os.symlink(".git/config", repo.root / "cfg")
    assert refused(confinement, "cfg").rule is Rule.GIT_DIR


def test_the_git_file_of_a_worktree_is_refused(tmp_path):
    root = tmp_path / "wt"
    root.mkdir()
    (root / ".git").write_text("gitdir: /somewhere/else/.git/worktrees/wt\n")
    with pytest.raises(PathRefused) as err:
        Confinement(root).read_text(".git")
    assert err.value.rule is Rule.GIT_DIR


def test_a_directory_swapped_for_a_symlink_after_the_check_is_not_followed(repo, confinement, monkeypatch):
    """TOCTOU: resolve sees a real directory; by the open it is a symlink leading out."""
    (repo.root / "swap").mkdir()
    (repo.root / "swap" / "secret.txt").write_text("harmless\n")
    real_resolve = Confinement.resolve

    def resolve_then_swap(self: Confinement, path: str):
        resolved = real_resolve(self, path)
        (repo.root / "swap" / "secret.txt").unlink()
        (repo.root / "swap").rmdir()
        os.symlink(str(repo.outside), repo.root / "swap")
        return resolved

    monkeypatch.setattr(Confinement, "resolve", resolve_then_swap)
    err = refused(confinement, "swap/secret.txt")
    assert err.rule is Rule.SYMLINK_OUT
    assert SECRET not in str(err)


def test_a_file_swapped_for_a_symlink_after_the_check_is_not_followed(repo, confinement, monkeypatch):
    (repo.root / "victim.txt").write_text("harmless\n")
    real_resolve = Confinement.resolve

    def resolve_then_swap(self: Confinement, path: str):
        resolved = real_resolve(self, path)
        (repo.root / "victim.txt").unlink()
        os.symlink(str(repo.outside / "secret.txt"), repo.root / "victim.txt")
        return resolved

    monkeypatch.setattr(Confinement, "resolve", resolve_then_swap)
    assert refused(confinement, "victim.txt").rule is Rule.SYMLINK_OUT


def test_a_fifo_is_refused_without_blocking(repo, confinement):
    os.mkfifo(repo.root / "pipe")
    assert refused(confinement, "pipe").rule is Rule.NOT_A_FILE


def test_a_file_used_as_a_directory_is_a_miss_not_an_escape(confinement):
    assert refused(confinement, "README.md/x").rule is Rule.NOT_FOUND


def test_directory_rules(confinement):
    assert confinement.directory(".").rel == "."
    assert confinement.directory("docs").rel == "src"
    with pytest.raises(PathRefused) as err:
        confinement.directory("README.md")
    assert err.value.rule is Rule.NOT_A_DIRECTORY
    with pytest.raises(PathRefused) as err:
        confinement.directory("escape")
    assert err.value.rule is Rule.SYMLINK_OUT


def test_check_relative_needs_no_disk():
    assert check_relative("src/./a/../b.py") == "src/b.py"
    assert check_relative(".") == "."
    for path, rule in (("/x", Rule.ABSOLUTE_PATH), ("a/../../x", Rule.OUTSIDE_ROOT), ("a/.git/x", Rule.GIT_DIR)):
        with pytest.raises(PathRefused) as err:
            check_relative(path)
        assert err.value.rule is rule


def test_text_sniffing_forgives_a_character_cut_by_the_window():
    text = ("é" * 600).encode()  # 1200 bytes: the 1024-byte window cuts a character
    assert is_text(text[:1023]) and is_text(text[:1024])
    assert not is_text(b"abc\0def")
    assert not is_text(b"caf\xe9 au lait")


# -- writes (§12) ----------------------------------------------------------


def test_writes_land_inside_and_never_through_a_symlink(repo, confinement):
    fd = confinement.open_for_write("src/new.py")
    os.write(fd, b"x = 1\n")
    os.close(fd)
    assert (repo.root / "src" / "new.py").read_text() == "x = 1\n"
    for path, rule in (("secret_link.txt", Rule.SYMLINK_WRITE), ("escape/x.txt", Rule.SYMLINK_WRITE),
                       ("docs/x.py", Rule.SYMLINK_WRITE), (".git/config", Rule.GIT_DIR),
                       ("../x", Rule.OUTSIDE_ROOT), ("/tmp/x", Rule.ABSOLUTE_PATH),
                       ("new/dir/x.txt", Rule.NOT_FOUND)):
        with pytest.raises(PathRefused) as err:
            confinement.open_for_write(path)
        assert err.value.rule is rule, path
    assert (repo.outside / "secret.txt").read_text() == SECRET + "\n"
    assert sorted(p.name for p in repo.outside.iterdir()) == ["secret.txt"]


def test_write_creates_missing_directories_only_when_asked(repo, confinement):
    fd = confinement.open_for_write("new/dir/x.txt", make_dirs=True)
    os.close(fd)
    assert (repo.root / "new" / "dir" / "x.txt").exists()
