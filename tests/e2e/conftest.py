"""Fixtures of the end-to-end tests: a ``baton`` runner on a database of the test's (or module's) own."""

from __future__ import annotations

import pytest

from baton_cli import FIXTURE_FLOWS, Baton


@pytest.fixture
def baton(sqlite_url, tmp_path) -> Baton:
    """``baton`` on a SQLite database of this test's own."""
    return Baton(sqlite_url, tmp_path)


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Baton:
    """One database for a module's read-mostly tests, with a paused and a completed run.

    ``shared.paused`` is a review-and-approve run waiting at ``approve``;
    ``shared.completed`` an e2e-quick run that ended.
    """
    path = tmp_path_factory.mktemp("shared")
    b = Baton(f"sqlite:///{path / 'baton.db'}", path)
    b.paused = b.ok("launch", "review-and-approve", "-q", "Review PR 7").run_id
    b.completed = b.ok("--flows", FIXTURE_FLOWS, "launch", "e2e-quick", "-q", "What is quick?").run_id
    return b
