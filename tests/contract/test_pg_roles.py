"""``baton db init`` on a real PostgreSQL: the app role appends and reads, and cannot rewrite the log."""

from __future__ import annotations

import uuid

import psycopg
import pytest
import sqlalchemy as sa

from eventstore import NewEvent, open_store
from eventstore.leases import Leases
from eventstore.roles import RoleError, init_roles
from tests.pg import _pg_admin_conninfo


@pytest.fixture
def roles(pg_url):
    """(admin url, app url, owner, app): roles of this test's own, dropped afterwards (roles are cluster-wide)."""
    suffix = uuid.uuid4().hex[:8]
    owner, app = f"baton_owner_{suffix}", f"baton_app_{suffix}"
    app_url = sa.engine.make_url(pg_url).set(username=app).render_as_string(hide_password=False)
    try:
        yield pg_url, app_url, owner, app
    finally:
        with psycopg.connect(pg_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY(%s)",
                         ([owner, app],))
            for role in (owner, app):
                if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                    conn.execute(f'DROP OWNED BY "{role}" CASCADE')
        with psycopg.connect(_pg_admin_conninfo(), autocommit=True) as conn:
            for role in (owner, app):
                conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def refused(url: str, statement: str) -> str:
    with (psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn,
          pytest.raises(psycopg.errors.InsufficientPrivilege) as caught):
        conn.execute(statement)
    return str(caught.value)


def test_the_app_role_appends_and_reads_but_cannot_change_the_log(roles):
    admin_url, app_url, owner, app = roles
    with open_store(admin_url) as store:  # a store that ran before the roles existed
        store.append("acct-1", [NewEvent("Note", {"n": 1})], expected_version=0)
        Leases(store.database).acquire("before", "admin")  # a read-side table made by the admin
        done = init_roles(store.database, owner, app)
        assert any("SELECT and INSERT only" in line for line in done), done
        assert init_roles(store.database, owner, app)  # again: idempotent (an upgrade re-runs it)
    with open_store(app_url) as store:
        with store.database.connect() as conn:
            assert conn.execute(sa.text("SELECT current_user")).scalar() == app
        store.append("acct-1", [NewEvent("Note", {"n": 2})], expected_version=1)
        assert [e.data["n"] for e in store.read_stream("acct-1")] == [1, 2]
        assert Leases(store.database).acquire("after", "app") is None  # the read side is the app's own
        seal = store.seal()
        assert store.verify(seal=seal) == []
    for statement in ("ALTER TABLE events DISABLE TRIGGER USER", "ALTER TABLE events DISABLE TRIGGER ALL",
                      "UPDATE events SET data = '{}'", "DELETE FROM events", "TRUNCATE events",
                      "DROP TABLE events", "DROP TRIGGER events_refuse_update_delete ON events",
                      ("CREATE OR REPLACE FUNCTION baton_refuse_change() RETURNS trigger LANGUAGE plpgsql AS "
                       "$$ BEGIN RETURN NEW; END $$")):
        message = refused(app_url, statement)
        assert "permission denied" in message or "must be owner" in message, (statement, message)
    with open_store(app_url) as store:
        assert [e.data["n"] for e in store.read_stream("acct-1")] == [1, 2]


def test_an_app_role_that_could_act_as_the_owner_is_refused(roles):
    admin_url, _, owner, app = roles
    with open_store(admin_url) as store:
        init_roles(store.database, owner, app)
        with store.database.begin() as conn:
            conn.exec_driver_sql(f'GRANT "{owner}" TO "{app}"')
        with pytest.raises(RoleError, match="could rewrite the log"):
            init_roles(store.database, owner, app)
        with pytest.raises(RoleError, match="must differ"):
            init_roles(store.database, owner, owner)
        with pytest.raises(RoleError, match="role name"):
            init_roles(store.database, "Robert'); DROP", app)
