"""tests/pg.py: PostgreSQL tests skip only where no server exists at all; a server that refuses them fails them.

(It lives with the API tests for want of a better home: it tests the test support itself.)
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from types import ModuleType

import pytest

PG_PY = Path(__file__).resolve().parents[1] / "pg.py"


def fresh_pg(monkeypatch, url: str) -> ModuleType:
    """A private copy of tests/pg.py reading BATON_TEST_PG=url (the shared one keeps its cached answer)."""
    monkeypatch.setenv("BATON_TEST_PG", url)
    spec = importlib.util.spec_from_file_location("pg_under_test", PG_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("url,why", [
    ("postgresql+psycopg://root:pw-123@127.0.0.1:1/postgres", "nothing listens at 127.0.0.1:1"),
    ("postgresql+psycopg://root@/postgres?host=/nonexistent-dir", "no server socket at /nonexistent-dir/.s.PGSQL.5432"),
])
def test_no_server_at_all_is_a_loud_skip(monkeypatch, url, why):
    pg = fresh_pg(monkeypatch, url)
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        assert pg.pg_ok() is False
    assert why in pg.skip_reason() and "pw-123" not in pg.skip_reason()
    assert [str(w.message) for w in warned] == [pg.skip_reason()]


def test_a_server_that_refuses_the_tests_fails_them(monkeypatch):
    probe = fresh_pg(monkeypatch, "postgresql+psycopg://root@/postgres?host=/var/run/postgresql")
    if probe._listening() is not None:
        pytest.skip(f"POSTGRESQL TESTS SKIPPED: no local server to be refused by ({probe._listening()})")
    pg = fresh_pg(monkeypatch, "postgresql+psycopg://no_such_role_here:pw-123@/postgres?host=/var/run/postgresql")
    for _ in range(2):  # every PostgreSQL test fails, not only the first
        with pytest.raises(pg.PostgresRefused) as refused:
            pg.pg_ok()
        assert "no_such_role_here" in str(refused.value) and "pw-123" not in str(refused.value)
