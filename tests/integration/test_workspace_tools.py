"""The five read-only tools on a real repository: answers, caps, errors, malformed calls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actors.workspace.results import Outcome
from actors.workspace.tools import (
    TOOL_SCHEMA_HASH,
    TOOL_SCHEMAS,
    Caps,
    Toolbox,
    schema_hash,
)
from tests.integration.workspace_repo import DemoRepo, make_repo


@pytest.fixture
def repo(tmp_path: Path) -> DemoRepo:
    return make_repo(tmp_path)


@pytest.fixture
def tools(repo: DemoRepo) -> Toolbox:
    return Toolbox(repo.root, Caps(max_file_bytes=64 * 1024))


def call(tools: Toolbox, name: str, **arguments: object):
    return tools.call(name, json.dumps(arguments))


# -- schemas -----------------------------------------------------------------


def test_the_five_tools_by_their_exact_names_and_arguments():
    shapes = {t["function"]["name"]: (sorted(t["function"]["parameters"]["properties"]),
                                      t["function"]["parameters"]["required"]) for t in TOOL_SCHEMAS}
    assert shapes == {
        "list_files": (["glob", "path"], []),
        "read_file": (["end_line", "path", "start_line"], ["path"]),
        "search": (["glob", "path", "pattern"], ["pattern"]),
        "git_diff": (["base", "head", "path"], []),
        "git_log": (["max_count", "path"], []),
    }
    for tool in TOOL_SCHEMAS:
        assert tool["type"] == "function"
        assert tool["function"]["description"]
        assert tool["function"]["parameters"]["additionalProperties"] is False
        assert "$ref" not in json.dumps(tool)


def test_the_schema_hash_is_stable_and_sensitive():
    assert TOOL_SCHEMA_HASH == schema_hash(json.loads(json.dumps(TOOL_SCHEMAS)))
    changed = json.loads(json.dumps(TOOL_SCHEMAS))
    changed[0]["function"]["description"] += "!"
    assert schema_hash(changed) != TOOL_SCHEMA_HASH
    assert len(TOOL_SCHEMA_HASH) == 64


# -- list_files ----------------------------------------------------------------


def test_list_files_respects_gitignore_and_never_shows_dot_git(tools):
    result = call(tools, "list_files")
    paths = result.text.split("\n")
    assert result.ok
    assert {"README.md", "src/app.py", "notes.txt", ".gitignore"} <= set(paths)
    assert "build/out.txt" not in paths
    assert not any(p.startswith(".git/") for p in paths)


def test_list_files_under_a_path_and_with_globs(tools):
    assert call(tools, "list_files", path="src").text == "src/app.py\nsrc/util.py"
    assert call(tools, "list_files", glob="*.py").text == "src/app.py\nsrc/util.py"
    assert call(tools, "list_files", path="src", glob="util.*").text == "src/util.py"
    assert call(tools, "list_files", glob="src/**/*.py").text == "src/app.py\nsrc/util.py"
    assert call(tools, "list_files", glob="*.{md,txt}").text.split("\n") == [
        "README.md", "big.txt", "latin1.txt", "notes.txt", "secret_link.txt"]
    assert call(tools, "list_files", glob="*.rs").text == "no files under '.' matching '*.rs'"


def test_list_files_cap_says_how_many(repo):
    result = Toolbox(repo.root, Caps(max_files=3)).call("list_files", "{}")
    lines = result.text.split("\n")
    assert len(lines) == 4 and result.truncated
    assert lines[-1].startswith("[cut: 3 of ") and lines[-1].endswith(" paths shown]")


# -- read_file -----------------------------------------------------------------


def test_read_file_numbered_lines_and_ranges(tools):
    whole = call(tools, "read_file", path="src/util.py")
    assert whole.text.split("\n")[:2] == ["1\tdef helper():", "2\t    return 'help'"]
    part = call(tools, "read_file", path="src/app.py", start_line=10, end_line=11)
    assert part.text == "10\tdef handle_request(req):\n11\t    retries = 3"
    assert not part.truncated


def test_read_file_cut_says_where_to_read_on(repo):
    result = Toolbox(repo.root, Caps(max_lines=5)).call("read_file", '{"path": "src/app.py"}')
    assert result.truncated
    assert result.text.split("\n")[-1] == "[cut: lines 1-5 of 30 shown; read on with start_line=6]"


def test_read_file_byte_cap_says_so(repo):
    result = Toolbox(repo.root, Caps(max_bytes=100)).call("read_file", '{"path": "src/app.py"}')
    assert result.truncated
    assert result.text.endswith("bytes shown]")
    assert "[cut: " in result.text
    assert result.bytes < 200


def test_read_file_ranges_out_of_the_file_are_tool_errors(tools):
    past = call(tools, "read_file", path="src/util.py", start_line=99)
    assert past.outcome is Outcome.ERROR and past.error == "bad-range"
    assert "has 6 lines" in past.text
    backwards = call(tools, "read_file", path="src/util.py", start_line=3, end_line=2)
    assert backwards.error == "bad-range"


@pytest.mark.parametrize(("path", "rule"), [
    ("../outside/secret.txt", "outside-root"), ("/etc/passwd", "absolute-path"),
    ("secret_link.txt", "symlink-out"), ("escape/secret.txt", "symlink-out"),
    (".git/config", "git-dir"), ("image.png", "binary"), ("big.txt", "too-large"),
    ("nope.py", "not-found"),
])
def test_read_file_refusals_are_tool_errors_naming_the_rule(tools, path, rule):
    result = call(tools, "read_file", path=path)
    assert result.outcome is Outcome.ERROR
    assert result.error == rule
    assert result.text.startswith(f"error: {rule}: {path!r} refused")


# -- search --------------------------------------------------------------------


def test_search_finds_lines_in_tracked_and_untracked_files_not_ignored_ones(tools):
    result = call(tools, "search", pattern=r"handle_\w+")
    assert result.text.split("\n") == [
        "notes.txt:1: untracked notes mention handle_request",
        "src/app.py:10: def handle_request(req):",
        # big.txt (over the cap), and the symlinks docs, escape, secret_link.txt
        "(4 files not searched: binary, over 65,536 bytes, symlinks or unreadable)",
    ]


def test_search_with_path_glob_and_a_single_file(tools):
    assert call(tools, "search", pattern="return", path="src", glob="util.py").text.split("\n") == [
        "src/util.py:2:     return 'help'", "src/util.py:6:     return 2"]
    assert call(tools, "search", pattern="retries", path="src/app.py").text == "src/app.py:11:     retries = 3"


def test_search_skips_binary_large_and_symlinked_files_and_says_so(tools):
    result = call(tools, "search", pattern="SECRET|PNG|yyyy|caf")
    assert result.text.startswith("no matches for")
    assert "files not searched" in result.text


def test_search_cap_counts_every_match(repo):
    result = Toolbox(repo.root, Caps(max_matches=3)).call("search", '{"pattern": "VALUE_"}')
    lines = result.text.split("\n")
    assert lines[:3] == ["src/app.py:14: VALUE_14 = 14", "src/app.py:15: VALUE_15 = 15",
                         "src/app.py:16: VALUE_16 = 16"]
    assert lines[3] == "[cut: 3 of 17 matches shown]"
    assert result.truncated


def test_an_invalid_regex_is_a_tool_error_naming_it(tools):
    result = call(tools, "search", pattern="handle_(")
    assert result.outcome is Outcome.ERROR and result.error == "bad-pattern"
    assert "'handle_('" in result.text and "missing )" in result.text


def test_search_anchors_work_per_line(tools):
    assert call(tools, "search", pattern=r"^\s+retries", path="src").text == "src/app.py:11:     retries = 3"
    assert call(tools, "search", pattern=r"= 3$", path="src").text == "src/app.py:11:     retries = 3"


# -- git tools -----------------------------------------------------------------


def test_git_diff_and_log(repo, tools):
    assert call(tools, "git_diff").text == "no differences"
    (repo.root / "src" / "util.py").write_text("changed\n")
    diff = call(tools, "git_diff", path="src")
    assert "+changed" in diff.text and diff.ok
    between = call(tools, "git_diff", base=repo.first_commit, head="HEAD", path="src/util.py")
    assert "+def other():" in between.text
    log = call(tools, "git_log", max_count=1)
    assert log.text.endswith("Test Person: second commit: traps") and "\n" not in log.text
    assert call(tools, "git_log", path="README.md").text.endswith("first commit")


def test_git_tool_errors(tools):
    bad = call(tools, "git_diff", base="--output=x")
    assert bad.outcome is Outcome.ERROR and bad.error == "bad-revision"
    assert call(tools, "git_diff", base="nope").error == "bad-revision"
    assert call(tools, "git_log", path="../outside").error == "outside-root"
    assert call(tools, "git_diff", path=".git/config").error == "git-dir"


def test_git_log_max_count_is_capped_with_a_note(repo):
    result = Toolbox(repo.root, Caps(max_log=1)).call("git_log", '{"max_count": 50}')
    assert result.text.split("\n")[-1] == "[cut: max_count 50 lowered to 1]"


# -- malformed calls -------------------------------------------------------------


@pytest.mark.parametrize(("name", "arguments", "error", "says"), [
    ("read_files", '{"path": "a"}', "unknown-tool", "unknown tool 'read_files'; the tools are list_files"),
    ("read_file", '{"path": "a"', "not-json", "not valid JSON"),
    ("read_file", '["a"]', "bad-arguments", "Expected `object`"),
    ("read_file", "{}", "bad-arguments", "missing required field `path`"),
    ("read_file", '{"path": 3}', "bad-arguments", "Expected `str`, got `int`"),
    ("read_file", '{"path": "a", "start_line": 0}', "bad-arguments", ">= 1"),
    ("search", '{"pattern": "x", "regex": true}', "bad-arguments", "unknown field `regex`"),
])
def test_malformed_calls_are_answered_not_raised(tools, name, arguments, error, says):
    result = tools.call(name, arguments)
    assert result.outcome is Outcome.MALFORMED
    assert result.error == error
    assert says in result.text


def test_empty_arguments_and_nulls_mean_not_given(tools):
    assert tools.call("list_files", "").ok
    assert tools.call("list_files", None).ok
    assert tools.call("read_file", '{"path": "README.md", "start_line": null}').ok
    assert tools.call("read_file", {"path": "README.md"}).ok  # a server that sends objects


def test_results_carry_size_and_digest(tools):
    import hashlib

    result = call(tools, "read_file", path="README.md")
    assert result.bytes == len(result.text.encode())
    assert result.sha256 == hashlib.sha256(result.text.encode()).hexdigest()
