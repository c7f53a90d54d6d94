"""Evidence checked against the pinned commit of a real repository: one test per verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.workspace.evidence import EvidenceChecker
from actors.workspace.projects import pin
from flows.evidence import Verdict
from flows.projects import Project
from tests.integration.workspace_repo import SECRET, DemoRepo, git, make_repo


@pytest.fixture
def repo(tmp_path: Path) -> DemoRepo:
    return make_repo(tmp_path)


@pytest.fixture
def checker(repo: DemoRepo) -> EvidenceChecker:
    return EvidenceChecker(pin(Project(project_id="demo", root=str(repo.root))))


def verdicts(checker: EvidenceChecker, output: str) -> list[tuple[Verdict, str]]:
    return [(c.verdict, c.detail) for c in checker.check_output(output)]


def test_an_exact_quote_in_the_cited_lines_is_verified(checker):
    [(verdict, detail)] = verdicts(checker, 'E1: "retries = 3" (source: src/app.py:10-12)')
    assert verdict is Verdict.VERIFIED
    assert detail.startswith("src/app.py:10-12 at commit ")


def test_whitespace_and_multi_line_quotes_are_normalised(checker):
    output = ('E1: "def handle_request(req):   retries = 3" (source: src/app.py:10-11)\n'
              "E2: src/app.py:10-11\n> def handle_request(req):\n>     retries = 3\n")
    assert [v for v, _ in verdicts(checker, output)] == [Verdict.VERIFIED, Verdict.VERIFIED]


def test_a_quote_in_the_file_but_not_in_the_cited_lines_is_not_found(checker):
    [(verdict, detail)] = verdicts(checker, 'E1: "retries = 3" (source: src/app.py:1-5)')
    assert verdict is Verdict.NOT_FOUND
    assert detail == "the quote is at line 11 of src/app.py, not in lines 1-5"


def test_a_quote_nowhere_in_the_file_is_not_found(checker):
    [(verdict, detail)] = verdicts(checker, 'E1: "retries = 7" (source: src/app.py:11)')
    assert verdict is Verdict.NOT_FOUND and "the quote is not in src/app.py at commit" in detail


def test_lines_past_the_end_and_missing_files_are_not_found(checker):
    out = verdicts(checker, 'E1: "x" (source: src/util.py:99)\nE2: "x" (source: src/nope.py:1)')
    assert out[0] == (Verdict.NOT_FOUND, out[0][1]) and "has 6 lines" in out[0][1]
    assert out[1][0] is Verdict.NOT_FOUND and out[1][1].startswith("no file src/nope.py in commit")


def test_a_path_that_escapes_the_root_is_never_read(checker, repo):
    """The secret file holds the quote: reading it would verify the item."""
    output = (f'E1: "{SECRET}" (source: ../outside/secret.txt:1)\n'
              f'E2: "{SECRET}" (source: {repo.outside}/secret.txt:1)\n'
              f'E3: "{SECRET}" (source: secret_link.txt:1)\n'
              f'E4: "{SECRET}" (source: escape/secret.txt:1)\n'
              'E5: "bare = true" (source: .git/config:1-9)\n')
    results = verdicts(checker, output)
    assert [v for v, _ in results] == [Verdict.NOT_FOUND] * 5
    assert "refused (outside-root); nothing was read" in results[0][1]
    assert "refused (absolute-path)" in results[1][1]
    assert "refused (git-dir)" in results[4][1]
    assert all(SECRET not in detail for _, detail in results)


def test_the_check_reads_the_pinned_commit_not_the_work_tree(repo):
    workspace = pin(Project(project_id="demo", root=str(repo.root)))
    (repo.root / "src" / "app.py").write_text("rewritten\n")
    git(repo.root, "commit", "-q", "-am", "later")
    checker = EvidenceChecker(workspace)
    assert verdicts(checker, 'E1: "retries = 3" (source: src/app.py:11)')[0][0] is Verdict.VERIFIED
    assert verdicts(checker, 'E1: "rewritten" (source: src/app.py:1)')[0][0] is Verdict.NOT_FOUND


def test_a_file_only_in_the_dirty_work_tree_says_so(checker):
    [(verdict, detail)] = verdicts(checker, 'E1: "untracked notes" (source: notes.txt:1)')
    assert verdict is Verdict.NOT_FOUND and "uncommitted changes" in detail


def test_unchecked_without_quote_source_or_workspace(checker):
    output = "E1: src/app.py:11 shows the retry count\nE2: \"retries = 3\" with no source\n" \
             "E3 (prompt:1, reported): \"the user said so\"\nE4: \"x\" (source: image.png:1)\n"
    assert [(v, d) for v, d in verdicts(checker, output)] == [
        (Verdict.UNCHECKED, "no quoted snippet"), (Verdict.UNCHECKED, "no file:line source"),
        (Verdict.UNCHECKED, "no file:line source"), (Verdict.UNCHECKED, "binary file")]
    no_workspace = EvidenceChecker(None).check_output('E1: "retries = 3" (source: src/app.py:11)')
    assert [(c.verdict, c.detail) for c in no_workspace] == [(Verdict.UNCHECKED, "the run has no workspace")]
