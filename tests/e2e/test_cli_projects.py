"""``baton projects``: register a git repository, refuse what is none, list them; launch against one."""

from __future__ import annotations

import pytest

from tests.integration.workspace_repo import make_repo


@pytest.mark.slow  # four `baton` processes: ~6 s on a loaded 2-CPU machine
def test_projects_add_list_and_refuse_a_directory_that_is_no_repository(baton, tmp_path):
    repo = make_repo(tmp_path)
    added = baton("projects", "add", "demo", str(repo.root))
    assert added.code == 0, added.err
    assert f"project 'demo' registered at {repo.root.resolve()}" in added.out
    plain = tmp_path / "plain"
    plain.mkdir()
    refused = baton("projects", "add", "plain", str(plain))
    assert refused.code == 2
    assert refused.err.startswith(f"baton: error: {plain} is not a git repository"), refused.err
    assert "give the path of a git work tree" in refused.err and len(refused.err.strip().splitlines()) == 1
    listed = baton("projects")
    assert "demo" in listed.out and str(repo.root.resolve()) in listed.out and "plain" not in listed.out


def test_a_launch_naming_an_unknown_project_is_refused_naming_it(baton, tmp_path):
    repo = make_repo(tmp_path)
    baton("projects", "add", "demo", str(repo.root))
    refused = baton("launch", "review-and-approve", "-q", "Review it", "--project", "nosuch")
    assert refused.code == 2 and "unknown project 'nosuch' (registered projects: demo)" in refused.err


@pytest.mark.slow  # five `baton` processes
def test_projects_remove_unregisters_it_and_a_launch_naming_it_is_refused_after(baton, tmp_path):
    repo = make_repo(tmp_path)
    baton("projects", "add", "demo", str(repo.root))
    removed = baton("projects", "remove", "demo", "--reason", "moved to another host")
    assert removed.code == 0, removed.err
    assert "project 'demo' removed (position " in removed.out
    assert "no projects" in baton("projects").out
    refused = baton("launch", "review-and-approve", "-q", "Review it", "--project", "demo")
    assert refused.code == 2 and "unknown project 'demo' (registered projects: none)" in refused.err
    again = baton("projects", "remove", "demo")
    assert again.code == 2 and "unknown project 'demo'" in again.err
