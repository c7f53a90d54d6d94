"""Nothing outside the workspace root ever reaches a tool result.

A secret file is planted beside the repository; every tool is called with
every way out we know of (``..``, absolute paths, symlinked files and
directories, ``.git``, globs, git revisions and pathspecs). The secret's
content must appear in no result, whatever the outcome.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actors.workspace.results import Outcome
from actors.workspace.tools import Toolbox
from tests.integration.workspace_repo import SECRET, DemoRepo, make_repo


def escapes(repo: DemoRepo) -> list[tuple[str, dict[str, object]]]:
    """Every escape attempt, as (tool, arguments)."""
    secret = str(repo.outside / "secret.txt")
    outside = str(repo.outside)
    paths = ["../outside/secret.txt", secret, outside, "escape/secret.txt", "escape", "secret_link.txt",
             "src/../../outside/secret.txt", "docs/../../outside/secret.txt", "docs/../escape/secret.txt",
             "./escape/../secret_link.txt", "escape/", "escape/.", "..", "/", "~/../../" + secret,
             "src/../escape/secret.txt", ".git/../escape/secret.txt", "..\\outside\\secret.txt"]
    calls: list[tuple[str, dict[str, object]]] = []
    for p in paths:
        calls += [("read_file", {"path": p}), ("list_files", {"path": p}),
                  ("search", {"pattern": "SECRET", "path": p}), ("search", {"pattern": ".", "path": p}),
                  ("git_diff", {"path": p}), ("git_log", {"path": p})]
    calls += [
        ("list_files", {"glob": "../outside/*"}), ("list_files", {"glob": "**"}),
        ("list_files", {"path": "escape", "glob": "**"}),
        ("search", {"pattern": "SECRET"}), ("search", {"pattern": "SECRET", "glob": "**/*"}),
        ("search", {"pattern": "SECRET", "glob": "../outside/*"}),
        ("git_diff", {"base": "--no-index", "head": secret}),
        ("git_diff", {"base": "HEAD:../outside/secret.txt"}),
        ("git_diff", {"base": "HEAD", "head": "HEAD", "path": secret}),
        ("git_diff", {"base": "--output=" + str(repo.root / "leak.txt")}),
        ("git_log", {"path": ":(top)../outside"}),
    ]
    return calls


@pytest.fixture
def repo(tmp_path: Path) -> DemoRepo:
    return make_repo(tmp_path)


def test_no_tool_result_ever_holds_what_lies_outside_the_root(repo):
    tools = Toolbox(repo.root)
    attempts = escapes(repo)
    outcomes = set()
    for name, arguments in attempts:
        result = tools.call(name, json.dumps(arguments))
        assert SECRET not in result.text, (name, arguments, result.text)
        outcomes.add(result.outcome)
        if name == "read_file":
            # No read of a path leading out may succeed, whatever it looks like.
            assert result.outcome is Outcome.ERROR, (arguments, result.text)
    assert not (repo.root / "leak.txt").exists()
    assert len(attempts) > 100


def test_the_secret_is_really_there_to_be_found(repo):
    """The control: the same search from a root that contains the secret does find it."""
    assert SECRET in (repo.outside / "secret.txt").read_text()
    (repo.root / "inside.txt").write_text(SECRET + "\n")
    assert SECRET in Toolbox(repo.root).call("search", '{"pattern": "SECRET"}').text
