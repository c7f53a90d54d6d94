"""Fixtures of the API tests: a real server process per module, on SQLite."""

from __future__ import annotations

import pytest

from tests.api.server import ApiServer
from tests.projects import register


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``python -m api.http.app`` on a SQLite file of this module's own."""
    db = tmp_path_factory.mktemp("api") / "baton.db"
    with ApiServer(f"sqlite:///{db}") as running:
        register(running.db_url, db.parent, "p-mine", "p-other")  # launches name registered projects (§11)
        yield running
