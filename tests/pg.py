"""PostgreSQL for the tests: is there a server, and a database of a test's own.

Tests that need PostgreSQL create (and drop) a database of their own on the
local server. They are skipped, loudly, only where no PostgreSQL server exists
at all; ``BATON_TEST_PG`` points them at another server.
"""

from __future__ import annotations

import os
import uuid
import warnings

PG_ADMIN = os.environ.get(
    "BATON_TEST_PG", "postgresql+psycopg://root@/postgres?host=/var/run/postgresql"
)


def _pg_admin_conninfo() -> str:
    from sqlalchemy.engine import make_url

    url = make_url(PG_ADMIN)
    parts = [f"dbname={url.database or 'postgres'}"]
    if url.username:
        parts.append(f"user={url.username}")
    host = url.host or url.query.get("host")
    if host:
        parts.append(f"host={host}")
    if url.port:
        parts.append(f"port={url.port}")
    if url.password:
        parts.append(f"password={url.password}")
    return " ".join(parts)


_pg_reason: str | None = None


def _pg_available() -> bool:
    global _pg_reason
    try:
        import psycopg

        with psycopg.connect(_pg_admin_conninfo(), connect_timeout=3):
            return True
    except Exception as exc:  # the reason is reported with every skip
        _pg_reason = f"no PostgreSQL server reachable at {PG_ADMIN}: {exc}"
        warnings.warn(_pg_reason)
        return False


_PG_OK: bool | None = None


def pg_ok() -> bool:
    global _PG_OK
    if _PG_OK is None:
        _PG_OK = _pg_available()
    return _PG_OK


def create_pg_database() -> tuple[str, str]:
    """Create a fresh database; return (sqlalchemy url, its name)."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"baton_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_pg_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(PG_ADMIN).set(database=name)
    return url.render_as_string(hide_password=False), name


def drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(_pg_admin_conninfo(), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def skip_reason() -> str:
    """Why PostgreSQL tests are skipped (empty when a server answers)."""
    return _pg_reason or ""
