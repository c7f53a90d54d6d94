"""``baton db init``: run as the database's administrator, then baton runs as the app role it made."""

from __future__ import annotations

import uuid

import psycopg
import pytest
import sqlalchemy as sa
from baton_cli import FIXTURE_FLOWS, Baton

from tests.pg import _pg_admin_conninfo

pytestmark = pytest.mark.slow  # each `baton` command is a process start (~1-2 s)


def test_db_init_then_baton_runs_as_the_app_role(pg_url, tmp_path):
    suffix = uuid.uuid4().hex[:8]
    owner, app = f"baton_owner_{suffix}", f"baton_app_{suffix}"
    admin = Baton(pg_url, tmp_path)
    try:
        done = admin.ok("db", "init", "--owner-role", owner, "--app-role", app).out
        assert f"owned by {owner}; {app} may SELECT and INSERT only" in done
        assert f"now run baton as {app}: BATON_DB=postgresql+psycopg://{app}@" in done
        as_app = Baton(sa.engine.make_url(pg_url).set(username=app).render_as_string(hide_password=False),
                       tmp_path)
        run_id = as_app.ok("--flows", FIXTURE_FLOWS, "launch", "e2e-quick", "-q", "As the app?").run_id
        assert as_app.ok("show", run_id).code == 0
        seal = as_app.ok("seal").out.strip()
        assert "the seal holds" in as_app.ok("replay", "--verify", "--seal", seal).out
    finally:
        with psycopg.connect(pg_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
            for role in (owner, app):
                if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                    conn.execute(f'DROP OWNED BY "{role}" CASCADE')
        with psycopg.connect(_pg_admin_conninfo(), autocommit=True) as conn:
            for role in (owner, app):
                conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_db_init_on_sqlite_says_what_protects_it(baton):
    result = baton("db", "init")
    assert result.code == 2 and "protected by its file's permissions" in result.err
