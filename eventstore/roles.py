"""PostgreSQL roles: an owner of the log and an app role that can only add to it (``baton db init``).

The append-only triggers stop a careless UPDATE, but not the table's owner:
an owner can ``ALTER TABLE events DISABLE TRIGGER``, rewrite rows and put the
trigger back. So the log gets an owner of its own, a role nobody logs in as
(NOLOGIN): it owns the events table, its sequence, the triggers' function and
the append function. baton logs in as the app role, which may SELECT and
INSERT on the events table and nothing more: no UPDATE, DELETE, TRUNCATE,
ALTER or DROP, so no way to disable a trigger. The append function runs with
its owner's rights (SECURITY DEFINER) because its order lock (``LOCK TABLE
... IN EXCLUSIVE MODE``) needs more than INSERT; it only inserts the rows it
is given. The read side (projection tables, leases, inbox) is the app's own:
it rebuilds those tables when their version changes.

``init_roles`` is idempotent: run it again after an upgrade of baton (it
re-creates the functions as the owner). It needs a connection allowed to
create roles and to change the tables' owners (a superuser, or the
database's owner with CREATEROLE).
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from eventstore import schema
from eventstore.postgres import APPEND_FUNCTION

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_APPEND_SIGNATURE = "baton_append(json, double precision, boolean)"
_REFUSE_SIGNATURE = "baton_refuse_change()"
_LOG_TABLES = {schema.EVENTS}


class RoleError(ValueError):
    """The roles cannot be set up as asked; the message says why and what to do."""


def _role_exists(conn: sa.Connection, name: str) -> bool:
    return bool(conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": name}).first())


def init_roles(database: sa.Engine, owner: str, app: str) -> list[str]:
    """Create (or update) the owner and app roles of a PostgreSQL store; what was done, in words.

    Raises RoleError for a bad role name, the same name twice, an app role
    that is a superuser or a member of the owner (it could do all the owner
    can), or a database that is not PostgreSQL.
    """
    if database.dialect.name != "postgresql":
        raise RoleError("roles are a PostgreSQL matter: a SQLite store is protected by its file's permissions")
    for name in (owner, app):
        if not _NAME.match(name):
            raise RoleError(f"role name {name!r}: use lower-case letters, digits and _ (at most 63)")
    if owner == app:
        raise RoleError("the owner role and the app role must differ: the point is that the app is not the owner")
    done: list[str] = []
    # As the admin, so every object exists (and is this baton's version) before it is handed over.
    schema.set_up(database, [APPEND_FUNCTION], force=True)
    with database.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": schema.SETUP_LOCK_KEY})
        if not _role_exists(conn, owner):
            conn.exec_driver_sql(f'CREATE ROLE "{owner}" NOLOGIN')
            done.append(f"created role {owner} (NOLOGIN): it owns the log")
        if not _role_exists(conn, app):
            conn.exec_driver_sql(f'CREATE ROLE "{app}" LOGIN')
            done.append(f"created role {app} (LOGIN, no password yet): baton logs in as it; "
                        f"set one with ALTER ROLE {app} PASSWORD '...' unless your pg_hba.conf needs none")
        unsafe = conn.execute(sa.text(
            "SELECT r.rolsuper OR r.rolbypassrls OR pg_has_role(r.oid, o.oid, 'MEMBER')"
            " FROM pg_roles r, pg_roles o WHERE r.rolname = :app AND o.rolname = :owner"),
            {"app": app, "owner": owner}).scalar_one()
        if unsafe:
            raise RoleError(f"role {app} is a superuser, bypasses row security or is a member of {owner}: "
                            f"it could rewrite the log; use a plain role")
        schema_name = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
        conn.exec_driver_sql(f'GRANT USAGE, CREATE ON SCHEMA "{schema_name}" TO "{app}"')
        conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA "{schema_name}" TO "{owner}"')
        conn.exec_driver_sql(f'ALTER TABLE {schema.EVENTS} OWNER TO "{owner}"')  # its sequence follows
        for function in (_APPEND_SIGNATURE, _REFUSE_SIGNATURE):
            conn.exec_driver_sql(f'ALTER FUNCTION {function} OWNER TO "{owner}"')
        conn.exec_driver_sql(f"ALTER FUNCTION {_APPEND_SIGNATURE} SECURITY DEFINER "
                             f'SET search_path = "{schema_name}", pg_temp')
        conn.exec_driver_sql(f"REVOKE ALL ON {schema.EVENTS} FROM PUBLIC")
        conn.exec_driver_sql(f'REVOKE ALL ON {schema.EVENTS} FROM "{app}"')
        conn.exec_driver_sql(f'GRANT SELECT, INSERT ON {schema.EVENTS} TO "{app}"')
        conn.exec_driver_sql(f'GRANT USAGE, SELECT ON SEQUENCE {schema.EVENTS}_position_seq TO "{app}"')
        conn.exec_driver_sql(f"REVOKE ALL ON FUNCTION {_APPEND_SIGNATURE} FROM PUBLIC")
        conn.exec_driver_sql(f'GRANT EXECUTE ON FUNCTION {_APPEND_SIGNATURE} TO "{app}"')
        done.append(f"{schema.EVENTS}: owned by {owner}; {app} may SELECT and INSERT only (no UPDATE, DELETE, "
                    f"TRUNCATE, ALTER: no trigger can be disabled by it)")
        read_side = [row[0] for row in conn.execute(sa.text(
            "SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": schema_name})
            if row[0] not in _LOG_TABLES]
        for table in read_side:  # the app rebuilds these: they are its own
            conn.exec_driver_sql(f'ALTER TABLE "{table}" OWNER TO "{app}"')
        if read_side:
            done.append(f"read tables handed to {app}: {', '.join(sorted(read_side))}")
    return done

