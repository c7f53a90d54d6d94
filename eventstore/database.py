"""From a store URL to a configured SQLAlchemy Engine.

The URL is the only thing that picks the backend. SQLite must be a file
(an in-memory database is private to one connection, and the store uses
several); PostgreSQL goes through psycopg 3 whatever driver the URL names.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa


def database_for_url(url: str, options: dict[str, Any]) -> tuple[sa.Engine, str]:
    """The database for a store URL (a SQLAlchemy Engine, not yet connected) and the URL as safe to print.

    Raises ValueError for a malformed or unsupported URL.
    """
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ValueError(f"not a database URL: {url!r} ({exc})") from None
    backend = parsed.get_backend_name()
    safe = parsed.render_as_string(hide_password=True)
    pool_size = int(options.get("pool_size", 10))
    if backend == "sqlite":
        if parsed.get_driver_name() not in ("pysqlite", ""):
            raise ValueError(f"{safe}: the SQLite store runs on the standard sqlite3 driver")
        path = parsed.database or ""
        if path in ("", ":memory:") or path.startswith("file::memory:"):
            raise ValueError(
                f"{safe}: an in-memory SQLite database is private to one connection; "
                "give the store a file, e.g. sqlite:///baton.db"
            )
        database = sa.create_engine(parsed, pool_size=pool_size, max_overflow=2 * pool_size)
        from eventstore.sqlite import configure_database

        configure_database(database, int(options.get("busy_timeout_ms", 5000)))
        return database, safe
    if backend in ("postgresql", "postgres"):
        if parsed.get_driver_name() not in ("psycopg", "psycopg2", ""):
            raise ValueError(f"{safe}: the PostgreSQL store runs on psycopg 3")
        parsed = parsed.set(drivername="postgresql+psycopg")
        # No server-side prepared statements: psycopg's prepare manager (its cache
        # bookkeeping on every execute) cost ~6% of a step's CPU, for short statements.
        connect_args: dict[str, Any] = {"prepare_threshold": None}
        if "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = int(options.get("connect_timeout", 10))
        database = sa.create_engine(
            parsed,
            pool_size=pool_size,
            max_overflow=2 * pool_size,
            # A dead pooled connection (server restart) is replaced, not handed out.
            pool_pre_ping=True,
            connect_args=connect_args,
        )
        return database, parsed.render_as_string(hide_password=True)
    raise ValueError(f"{safe}: unsupported store URL; use sqlite:///... or postgresql+psycopg://...")
