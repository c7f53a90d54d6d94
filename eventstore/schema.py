"""The events table and the database-side rules that keep it append-only.

Set-up is idempotent and safe to run from several processes at once: every
statement is ``IF NOT EXISTS`` / ``CREATE OR REPLACE``, and on PostgreSQL the
whole set-up runs under a transaction-scoped advisory lock so that two
processes opening the same database do not race on the catalog.

Immutability lives in the database, not in the store's good manners:
BEFORE UPDATE / DELETE triggers (and BEFORE TRUNCATE on PostgreSQL) raise,
so raw SQL from any client is refused too.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable

from eventstore.store import StoreError

EVENTS = "events"

# An arbitrary constant: the advisory lock key of the store's schema set-up.
SETUP_LOCK_KEY = 0x6261746F6E  # "baton"


def build_events_table(metadata: sa.MetaData, name: str = EVENTS) -> sa.Table:
    """The events table (also used by the benchmark to build an identical raw table).

    ``position`` is an INTEGER PRIMARY KEY (the rowid) on SQLite and a
    BIGSERIAL on PostgreSQL; ``data`` and ``metadata`` are JSON *text*, kept
    byte for byte as hashed.
    """
    return sa.Table(
        name,
        metadata,
        sa.Column(
            "position",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("stream_id", sa.Text, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("metadata", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.Double, nullable=False),
        sa.Column("hash", sa.Text, nullable=False),
        sa.UniqueConstraint("event_id", name=f"{name}_event_id_key"),
        sa.UniqueConstraint("stream_id", "version", name=f"{name}_stream_version_key"),
    )


metadata = sa.MetaData()
events = build_events_table(metadata)


_SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER IF NOT EXISTS {EVENTS}_refuse_update BEFORE UPDATE ON {EVENTS}
    BEGIN SELECT RAISE(ABORT, '{EVENTS} is append-only: UPDATE refused'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS {EVENTS}_refuse_delete BEFORE DELETE ON {EVENTS}
    BEGIN SELECT RAISE(ABORT, '{EVENTS} is append-only: DELETE refused'); END""",
]

_POSTGRES_TRIGGERS = [
    """CREATE OR REPLACE FUNCTION baton_refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS $fn$
    BEGIN
        RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
    END
    $fn$""",
    # CREATE OR REPLACE TRIGGER needs PostgreSQL 14; this works on older ones too.
    f"""DO $do$
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_trigger
                       WHERE tgname = '{EVENTS}_refuse_update_delete'
                         AND tgrelid = '{EVENTS}'::regclass) THEN
            CREATE TRIGGER {EVENTS}_refuse_update_delete
                BEFORE UPDATE OR DELETE ON {EVENTS}
                FOR EACH ROW EXECUTE FUNCTION baton_refuse_change();
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_trigger
                       WHERE tgname = '{EVENTS}_refuse_truncate'
                         AND tgrelid = '{EVENTS}'::regclass) THEN
            CREATE TRIGGER {EVENTS}_refuse_truncate
                BEFORE TRUNCATE ON {EVENTS}
                FOR EACH STATEMENT EXECUTE FUNCTION baton_refuse_change();
        END IF;
    END
    $do$""",
]


def create_table_ddl(table: sa.Table) -> list[sa.schema.ExecutableDDLElement]:
    """Idempotent DDL for a table built by ``build_events_table`` and its indexes."""
    ddl: list[sa.schema.ExecutableDDLElement] = [CreateTable(table, if_not_exists=True)]
    ddl += [CreateIndex(index, if_not_exists=True) for index in table.indexes]
    return ddl


def set_up(database: sa.Engine, extra_ddl: Sequence[str] = (), *, force: bool = False) -> None:
    """Create the events table, its append-only triggers and ``extra_ddl``.

    Running it again (from this or another process) changes nothing. On
    PostgreSQL, a role that does not own an existing events table (the app
    role of ``baton db init``, or a superuser) leaves it and its functions as
    they are (``force`` re-creates them anyway: ``eventstore.roles``), but the
    append function must exist.
    """
    dialect = database.dialect.name
    if not force and _in_place(database, extra_ddl):
        return
    with database.begin() as conn:
        if dialect == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SETUP_LOCK_KEY})
            if not force and not _owns_log(conn):
                _require_append_function(conn)
                return
        for statement in create_table_ddl(events):
            conn.execute(statement)
        triggers = _POSTGRES_TRIGGERS if dialect == "postgresql" else _SQLITE_TRIGGERS
        for ddl in [*triggers, *extra_ddl]:
            # exec_driver_sql: the bodies hold '%' and ':' that must reach the
            # database untouched by SQLAlchemy's parameter parsing.
            conn.exec_driver_sql(ddl.replace("%", "%%") if dialect == "postgresql" else ddl)


def _in_place(database: sa.Engine, extra_ddl: Sequence[str]) -> bool:
    """Whether the set-up has nothing to do: the table, its triggers and functions (as this code has them)
    are there; checked in ONE query (a statement per object was a round trip each, at every open).

    On PostgreSQL, a log another role owns only needs the append function (as ``set_up`` says); an
    error the full set-up would raise is left to it.
    """
    with database.connect() as conn:
        if database.dialect.name == "sqlite":
            if extra_ddl:
                return False
            found = conn.exec_driver_sql(
                "SELECT count(*) FROM sqlite_master WHERE (type = 'table' AND name = ?) OR "
                "(type = 'trigger' AND name IN (?, ?))",
                (EVENTS, f"{EVENTS}_refuse_update", f"{EVENTS}_refuse_delete")).scalar()
            return found == 3
        row = conn.execute(sa.text(_PG_IN_PLACE), {"t": EVENTS}).one()
    owner, user, triggers, functions = row
    functions = functions or {}
    if owner is not None and owner != user:
        return "baton_append" in functions
    wanted = {_function_name(ddl): _function_body(ddl) for ddl in [_POSTGRES_TRIGGERS[0], *extra_ddl]}
    return owner == user and triggers == 2 and all(functions.get(name) == body for name, body in wanted.items())


_PG_IN_PLACE = f"""
SELECT (SELECT tableowner FROM pg_tables WHERE schemaname = current_schema() AND tablename = :t),
       current_user,
       (SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass(:t)
           AND tgname IN ('{EVENTS}_refuse_update_delete', '{EVENTS}_refuse_truncate')),
       (SELECT json_object_agg(proname, prosrc) FROM pg_proc
           WHERE proname IN ('baton_append', 'baton_refuse_change')
             AND pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema()))
"""


def _function_name(ddl: str) -> str:
    return ddl.split("FUNCTION", 1)[1].split("(", 1)[0].strip()


def _function_body(ddl: str) -> str:
    return ddl.split("$fn$")[1]


def _owns_log(conn: sa.Connection) -> bool:
    """Whether this session's role owns the events table (or it does not exist yet)."""
    owner = conn.execute(sa.text(
        "SELECT tableowner FROM pg_tables WHERE schemaname = current_schema() AND tablename = :t"),
        {"t": EVENTS}).scalar()
    return owner is None or owner == conn.execute(sa.text("SELECT current_user")).scalar()


def _require_append_function(conn: sa.Connection) -> None:
    found = conn.execute(sa.text("SELECT 1 FROM pg_proc WHERE proname = 'baton_append'")).first()
    if found is None:
        raise StoreError(f"the {EVENTS} table belongs to another role and baton_append is missing: run "
                           f"`baton db init` as an administrator of the database")
