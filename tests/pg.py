"""PostgreSQL for the tests: is there a server, and a database of a test's own.

Tests that need PostgreSQL create (and drop) a database of their own on the
local server; ``BATON_TEST_PG`` points them at another server. They are
skipped, loudly, only where no PostgreSQL server exists at all: nothing
listens at its address (connection refused, no socket file, a timeout). A
server that is there but refuses the tests (a bad password, a missing role
or database, no right to create databases) fails them instead, so that a
misconfigured CI cannot pass by skipping every PostgreSQL test.
"""

from __future__ import annotations

import os
import socket
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

PG_ADMIN = os.environ.get(
    "BATON_TEST_PG", "postgresql+psycopg://root@/postgres?host=/var/run/postgresql"
)
DEFAULT_SOCKET_DIRS = ("/var/run/postgresql", "/tmp")  # where libpq looks when no host is given
CONNECT_TIMEOUT_S = 3


class PostgresRefused(RuntimeError):
    """A PostgreSQL server answers at BATON_TEST_PG but refuses the tests: fix the setting or the server."""


def _safe_admin_url() -> str:
    return make_url(PG_ADMIN).render_as_string(hide_password=True)


def _pg_admin_conninfo() -> str:
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


def _listening() -> str | None:
    """None when something listens at the server's address; else why nothing can be reached there."""
    url = make_url(PG_ADMIN)
    host = url.host or url.query.get("host") or ""
    port = url.port or 5432
    if isinstance(host, tuple):  # ?host=a&host=b: libpq tries each; so do we, the first is enough
        host = host[0]
    sockets = [host] if host.startswith("/") else [] if host else list(DEFAULT_SOCKET_DIRS)
    if sockets:
        for directory in sockets:
            path = os.path.join(directory, f".s.PGSQL.{port}")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(CONNECT_TIMEOUT_S)
                    s.connect(path)
                return None
            except (FileNotFoundError, ConnectionRefusedError, TimeoutError):
                continue
        return f"no server socket at {' or '.join(os.path.join(d, f'.s.PGSQL.{port}') for d in sockets)}"
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except (ConnectionRefusedError, TimeoutError) as exc:
        return f"nothing listens at {host}:{port} ({type(exc).__name__})"
    return None  # a host name that does not resolve raises here: that is a wrong setting, not "no server"


def _pg_available() -> tuple[bool, str]:
    """(True, "") when the tests can use the server; (False, why) when there is none at all.

    Raises PostgresRefused when a server answers but the test connection fails.
    """
    import psycopg

    try:
        with psycopg.connect(_pg_admin_conninfo(), connect_timeout=CONNECT_TIMEOUT_S):
            return True, ""
    except psycopg.OperationalError as exc:
        missing = _listening()
        if missing is not None:
            return False, f"no PostgreSQL server reachable at {_safe_admin_url()}: {missing}"
        raise PostgresRefused(
            f"a PostgreSQL server answers at {_safe_admin_url()} (BATON_TEST_PG) but refuses the tests: "
            f"{' '.join(str(exc).split())}"
        ) from exc


_PG: tuple[bool, str] | None = None
_PG_ERROR: PostgresRefused | None = None


def pg_ok() -> bool:
    """Whether PostgreSQL tests can run; False (warned once) only when no server exists at all.

    Raises PostgresRefused, every time it is asked, when a server exists but refuses the tests.
    """
    global _PG, _PG_ERROR
    if _PG_ERROR is not None:
        raise _PG_ERROR
    if _PG is None:
        try:
            _PG = _pg_available()
        except PostgresRefused as exc:
            _PG_ERROR = exc
            raise
        if not _PG[0]:
            warnings.warn(_PG[1], stacklevel=2)
    return _PG[0]


def create_pg_database() -> tuple[str, str]:
    """Create a fresh database; return (sqlalchemy url, its name)."""
    import psycopg

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


@contextmanager
def database_of_its_own(backend: str, folder: Path) -> Iterator[str]:
    """The URL of a new database: ``sqlite``, a file in ``folder``; ``postgresql``, a database created
    now and dropped after (the test skipped, loudly, where no PostgreSQL server exists)."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'baton.db'}"
        return
    if not pg_ok():
        pytest.skip(f"POSTGRESQL TESTS SKIPPED: {skip_reason()}")
    url, name = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(name)


def skip_reason() -> str:
    """Why PostgreSQL tests are skipped (empty when a server answers)."""
    return _PG[1] if _PG is not None else ""


def refuse_connections(name: str) -> None:
    """Make database ``name`` refuse every connection and end the ones it has (an outage of it alone)."""
    import psycopg

    with psycopg.connect(_pg_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))


def allow_connections(name: str) -> None:
    """End an outage made by ``refuse_connections``."""
    import psycopg

    with psycopg.connect(_pg_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
