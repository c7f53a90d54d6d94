"""Shared fixtures: a store URL per backend, each test on a database of its own.

PostgreSQL tests create (and drop) a database of their own on the local
server. They are skipped, loudly, only where no PostgreSQL server exists at
all; a server that refuses them (authentication, permissions) makes them
fail (``tests.pg``). ``BATON_TEST_PG`` points them at another server.
"""

from __future__ import annotations

import pytest

from tests.pg import create_pg_database, drop_pg_database, pg_ok, skip_reason


@pytest.fixture
def pg_url():
    """A PostgreSQL database of this test's own (dropped afterwards)."""
    if not pg_ok():
        pytest.skip(f"POSTGRESQL TESTS SKIPPED: {skip_reason()}")
    url, name = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(name)


@pytest.fixture
def sqlite_url(tmp_path):
    """A SQLite database file of this test's own."""
    return f"sqlite:///{tmp_path / 'baton.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """Each backend in turn: the same test runs unchanged against both."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'baton.db'}"
    else:
        yield request.getfixturevalue("pg_url")
