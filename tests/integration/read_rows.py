"""The read tables as plain rows, to compare one projection of the log with another."""

from __future__ import annotations

import sqlalchemy as sa

from projections.tables import PRIMARY_KEYS, READ_TABLES


def dump(database: sa.Engine) -> dict[str, list[tuple[object, ...]]]:
    """Every read table, every column, ordered by key."""
    out = {}
    with database.connect() as conn:
        for table in READ_TABLES:
            keys = [table.c[k] for k in PRIMARY_KEYS[table.name]]
            out[table.name] = [tuple(r) for r in conn.execute(sa.select(table).order_by(*keys))]
    return out
