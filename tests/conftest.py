"""Shared fixtures: a store URL per backend, each test on a database of its own.

PostgreSQL tests create (and drop) a database of their own on the local
server. They are skipped, loudly, only where no PostgreSQL server exists at
all; a server that refuses them (authentication, permissions) makes them
fail (``tests.pg``). ``BATON_TEST_PG`` points them at another server.
"""

from __future__ import annotations

import pytest

from tests.pg import database_of_its_own


@pytest.fixture
def pg_url(tmp_path):
    """A PostgreSQL database of this test's own (dropped afterwards)."""
    with database_of_its_own("postgresql", tmp_path) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path):
    """A SQLite database file of this test's own."""
    return f"sqlite:///{tmp_path / 'baton.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """Each backend in turn: the same test runs unchanged against both."""
    with database_of_its_own(request.param, tmp_path) as url:
        yield url
