"""The project book on a real store and real repositories: register, refuse, pin."""

from __future__ import annotations

import os

import pytest

from actors.workspace.errors import NoCommit, NotARepository
from actors.workspace.projects import ProjectBook, pin
from eventstore import open_store
from flows.projects import PROJECTS_STREAM, ProjectExists, UnknownProject
from tests.integration.workspace_repo import git, make_repo


@pytest.fixture
def store(sqlite_url):
    s = open_store(sqlite_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def book(store) -> ProjectBook:
    return ProjectBook(store, now=lambda: 1_700_000_000.0)


def test_add_list_and_pin(book, store, tmp_path):
    repo = make_repo(tmp_path)
    project = book.add("demo", repo.root, allow=[["pytest", "-q"]], by="admin")
    assert project.root == os.path.realpath(repo.root)
    assert [p.project_id for p in book.projects()] == ["demo"]
    recorded = store.read_stream(PROJECTS_STREAM)
    assert [r.type for r in recorded] == ["ProjectRegistered"]
    assert recorded[0].data["root"] == project.root and recorded[0].data["by"] == "admin"
    workspace = book.pin("demo")
    assert (workspace.project_id, workspace.commit, workspace.branch, workspace.dirty) == (
        "demo", repo.head, "main", True)


def test_a_path_that_is_no_repository_is_refused_and_nothing_is_appended(book, store, tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(NotARepository) as err:
        book.add("plain", tmp_path / "plain")
    assert f"{tmp_path / 'plain'} is not a git repository" in str(err.value)
    with pytest.raises(NotARepository, match="no such directory"):
        book.add("missing", tmp_path / "missing")
    assert store.read_stream(PROJECTS_STREAM) == []


def test_a_subdirectory_of_a_repository_is_refused_naming_the_top(book, tmp_path):
    repo = make_repo(tmp_path)
    with pytest.raises(NotARepository, match="inside the repository at .*give the repository's top level"):
        book.add("src", repo.root / "src")


def test_adding_twice_is_idempotent_and_a_clash_is_refused(book, store, tmp_path):
    repo = make_repo(tmp_path)
    book.add("demo", repo.root)
    book.add("demo", repo.root)
    assert len(store.read_stream(PROJECTS_STREAM)) == 1
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    with pytest.raises(ProjectExists):
        book.add("demo", other)


def test_unknown_project(book):
    with pytest.raises(UnknownProject, match="unknown project 'nope'"):
        book.pin("nope")


def test_an_add_that_loses_the_version_race_decides_again(store, tmp_path):
    """Another admin appends between this book's read and its append: both projects land."""
    roots = {}
    for name in ("a", "b"):
        roots[name] = tmp_path / name
        roots[name].mkdir()
        git(roots[name], "init", "-q")
    other = ProjectBook(store, now=lambda: 0.0)

    class RacingStore:
        """The real store, except that the first read lets the other admin append right after it."""

        def __init__(self) -> None:
            self.reads = 0

        def read_stream(self, stream_id: str):
            records = store.read_stream(stream_id)
            self.reads += 1
            if self.reads == 1:
                other.add("b", roots["b"])
            return records

        def append(self, *args, **kwargs):
            return store.append(*args, **kwargs)

    racing = RacingStore()
    ProjectBook(racing, now=lambda: 0.0).add("a", roots["a"])  # type: ignore[arg-type]
    assert racing.reads >= 2  # it read again after the conflict
    assert sorted(p.project_id for p in other.projects()) == ["a", "b"]
    assert [r.version for r in store.read_stream(PROJECTS_STREAM)] == [1, 2]


def test_pin_of_a_repository_without_commits_fails_clearly(book, tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    git(root, "init", "-q")
    book.add("empty", root)
    with pytest.raises(NoCommit, match="no commit yet"):
        book.pin("empty")


def test_pin_of_a_removed_checkout_says_it_is_gone(book, tmp_path):
    repo = make_repo(tmp_path)
    project = book.add("demo", repo.root)
    import shutil

    shutil.rmtree(repo.root)
    with pytest.raises(NotARepository):
        pin(project)
