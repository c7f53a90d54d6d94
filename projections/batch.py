"""The projector's database side: load rows, write rows, move the checkpoint.

A batch's rows and its checkpoint are written in ONE transaction, and the
checkpoint moves only from the position the batch was computed on
(``UPDATE ... WHERE position = :seen AND epoch = :epoch``). So a batch is
applied exactly once even when two projectors (two processes on one
PostgreSQL, or a live projector and ``baton projections rebuild``) follow the
same store: the second one's update matches no row, it rolls back, and
resumes from the checkpoint the first one committed.
"""

from __future__ import annotations

import logging
import operator
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple, TypeVar

import sqlalchemy as sa

from eventstore import StoreError
from projections.apply import Row, RunRows, Workset, finish_rows
from projections.tables import (
    PRIMARY_KEYS,
    READ_TABLES,
    STEP_FIELDS,
    anomalies,
    create_checkpoints,
    decode_steps,
    encode_steps,
    flow_runs,
    flow_steps,
    projection_checkpoints,
    projection_errors,
    read_tables_exist,
    recreate_read_tables,
    reports,
    stream_frames,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
# How long a projection transaction keeps trying for SQLite's write lock.
LOCK_PATIENCE_S = 120.0
# Bound parameters per IN (...) list: under SQLite's oldest limit of 999.
_IN_CHUNK = 900


class Checkpoint(NamedTuple):
    """Where a projection stands: the last applied position, its code version, its epoch."""

    position: int
    version: int
    epoch: int


class CheckpointMoved(Exception):
    """Another projector moved the checkpoint first; this batch was not applied."""


# PEP 249 names the errors a database raises because of the values it was given, the same
# in every driver (sqlite3, psycopg; SQLAlchemy wraps them under the same names).
_VALUE_ERRORS = ("DataError", "IntegrityError")


def is_transient(exc: BaseException) -> bool:
    """Whether a failure to apply a page is the database's, not one event's.

    Transient (retried from the checkpoint, never skipped): the database
    away, locked, out of space, refusing a statement for reasons of its own
    (anything from SQLAlchemy, a driver or the OS, and CheckpointMoved).
    Not transient: a driver's DataError or IntegrityError (a value it cannot
    store) and any other exception (the code applying an event failed on it);
    the projector isolates the event at fault and skips it. Not an Exception
    at all (KeyboardInterrupt, MemoryError's kin): neither, it is raised.
    """
    if not isinstance(exc, Exception):
        return True
    cause = getattr(exc, "orig", None) if isinstance(exc, sa.exc.DBAPIError) else exc
    if any(kind.__name__ in _VALUE_ERRORS for kind in type(cause or exc).__mro__):
        return False
    return isinstance(exc, (CheckpointMoved, sa.exc.SQLAlchemyError, sqlite3.Error, OSError, StoreError)) or (
        _is_driver_error(exc))


def _is_driver_error(exc: BaseException) -> bool:
    """A DBAPI driver's own exception (psycopg's, raised on the raw cursor ``write`` uses)."""
    return any(kind.__name__ == "Error" and kind.__module__.split(".")[0] in ("psycopg", "sqlite3")
               for kind in type(exc).__mro__)


def is_lock_wait(exc: BaseException) -> bool:
    """Whether an error is SQLite's write lock being held elsewhere (worth retrying)."""
    text = str(getattr(exc, "orig", exc)).lower()
    return "database is locked" in text or "database table is locked" in text or "busy" in text


def patiently(action: Callable[[], T], patience_s: float = LOCK_PATIENCE_S) -> T:
    """Run a transaction, again while SQLite says its write lock is held elsewhere.

    The lock is shared with the event writer and other processes; a
    transaction that did not get it within the busy timeout rolled back
    whole, so trying it again is safe. Other errors are raised at once. The
    error comes from SQLAlchemy or, for the statements run on the DBAPI
    cursor (``advance``, ``write``), from sqlite3 itself.
    """
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return action()
        except (sa.exc.OperationalError, sqlite3.OperationalError) as exc:
            if not is_lock_wait(exc) or time.monotonic() > deadline:
                raise
            log.info("projection: the database is locked; trying again")
            time.sleep(0.05)


def driver_of(conn: sa.Connection) -> Any:
    """The DBAPI connection (sqlite3 or psycopg) under an open SQLAlchemy connection."""
    driver = conn.connection.driver_connection
    assert driver is not None  # open: checked out of the pool
    return driver


def read_checkpoint(conn: sa.Connection, name: str) -> Checkpoint | None:
    """The stored checkpoint of projection ``name`` (None if it never ran)."""
    row = conn.execute(
        sa.select(
            projection_checkpoints.c.position,
            projection_checkpoints.c.version,
            projection_checkpoints.c.epoch,
        ).where(projection_checkpoints.c.name == name)
    ).first()
    return Checkpoint(*row) if row else None


def needs_reset(conn: sa.Connection, name: str, version: int) -> bool:
    """Whether the read tables must be rebuilt: never built, another version, or a table missing."""
    create_checkpoints(conn, name)
    checkpoint = read_checkpoint(conn, name)
    return checkpoint is None or checkpoint.version != version or not read_tables_exist(conn)


def reset(database: sa.Engine, name: str, version: int) -> Checkpoint:
    """Drop and recreate the read tables and set the checkpoint to 0, in one transaction.

    Bumping the epoch first takes the checkpoint row's lock (the write lock
    on SQLite), which serialises resets, and fences off any projector that
    read the old checkpoint.
    """
    with database.connect() as conn:
        create_checkpoints(conn, name)
        conn.commit()
    with writing(database) as conn, transaction(conn):
        # DML first: on SQLite that opens the transaction the DDL then joins.
        epoch = conn.execute(
            sa.update(projection_checkpoints)
            .where(projection_checkpoints.c.name == name)
            .values(epoch=projection_checkpoints.c.epoch + 1, position=0, version=version)
            .returning(projection_checkpoints.c.epoch)
        ).scalar_one()
        recreate_read_tables(conn)
    return Checkpoint(0, version, epoch)


def advance(conn: sa.Connection, name: str, seen: Checkpoint, position: int) -> Checkpoint:
    """Move the checkpoint from ``seen`` to ``position`` inside the caller's transaction.

    Raises CheckpointMoved when the stored checkpoint is no longer ``seen``.
    Called first in the batch's transaction, so it also takes the lock that
    serialises projectors.
    """
    # Through the DBAPI cursor, like the rows (see ``write``): once per page, SQLAlchemy's
    # statement handling cost as much as the update itself.
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    cursor = driver_of(conn).cursor()
    try:
        cursor.execute(
            f"UPDATE projection_checkpoints SET position = {mark} "
            f"WHERE name = {mark} AND position = {mark} AND epoch = {mark} AND version = {mark}",
            (position, name, seen.position, seen.epoch, seen.version),
        )
        moved = cursor.rowcount != 1
    finally:
        cursor.close()
    if moved:
        raise CheckpointMoved(name)
    return Checkpoint(position, seen.version, seen.epoch)


@contextmanager
def writing(database: sa.Engine, *, bulk: bool = False) -> Iterator[sa.Connection]:
    """A connection for batch transactions (see ``transaction``), set up once for all of them.

    A projection is disposable: a power cut may lose its last batches, rows
    and checkpoint together (each commit stays atomic), and they are simply
    applied again. So on SQLite (whose store connections run
    ``synchronous=FULL``) this pooled connection runs ``NORMAL`` meanwhile.
    ``bulk`` (a replay) also stops SQLite from checkpointing the WAL after
    every commit; ``checkpoint_wal`` does it once at the end. A catch-up
    holds one for its length: on PostgreSQL that spares every page a pool
    check-out and its ping.
    """
    with database.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        dbapi = driver_of(conn)
        if sqlite:  # on the DBAPI connection: outside SQLAlchemy's transaction
            dbapi.execute("PRAGMA synchronous = NORMAL")
            # Builds with SQLITE_SECURE_DELETE zero every freed page, doubling
            # what a rebuild writes; these rows are copies of the event log.
            secure = dbapi.execute("PRAGMA secure_delete").fetchone()[0]
            dbapi.execute("PRAGMA secure_delete = OFF")
            if bulk:
                dbapi.execute("PRAGMA wal_autocheckpoint = 0")
        try:
            yield conn
        finally:
            if sqlite:
                dbapi.execute("PRAGMA synchronous = FULL")
                dbapi.execute(f"PRAGMA secure_delete = {int(secure)}")
                if bulk:
                    dbapi.execute("PRAGMA wal_autocheckpoint = 1000")


@contextmanager
def transaction(conn: sa.Connection) -> Iterator[sa.Connection]:
    """A write transaction for a batch on a ``writing`` connection, committed without waiting for the disk.

    On PostgreSQL ``synchronous_commit`` is off for it (SET LOCAL: the
    pooled connection keeps its own setting); see ``writing`` for SQLite.
    """
    with conn.begin():
        if conn.dialect.name != "sqlite":
            conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
        yield conn


def checkpoint_wal(database: sa.Engine) -> None:
    """After a bulk replay on SQLite: copy the WAL into the database file once."""
    if database.dialect.name == "sqlite":
        with database.connect() as conn:
            driver_of(conn).execute("PRAGMA wal_checkpoint(PASSIVE)")


# A run's row with its steps' text, in one round trip (the projector loads every
# run a batch touches; two queries a chunk were a tenth of the approvals drain).
_RUN_ROWS = sa.select(flow_runs, flow_steps.c.steps.label("_steps")).select_from(
    flow_runs.outerjoin(flow_steps, flow_steps.c.run_id == flow_runs.c.run_id)
)


def load_runs(conn: sa.Connection, run_ids: Iterable[str]) -> dict[str, RunRows]:
    """The stored rows of these runs (runs not in the tables are left out)."""
    wanted = list(run_ids)
    out: dict[str, RunRows] = {}
    for start in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[start : start + _IN_CHUNK]
        for row in conn.execute(_RUN_ROWS.where(flow_runs.c.run_id.in_(chunk))).mappings():
            run = dict(row)
            text = run.pop("_steps")
            steps = {values[0]: dict(zip(STEP_FIELDS, values)) for values in decode_steps(text)} if text else {}
            out[run["run_id"]] = RunRows(run, steps, new=False)
    return out


_step_values = operator.itemgetter(*STEP_FIELDS)


def steps_json(rows: RunRows) -> str:
    """The ``flow_steps.steps`` text of a run (see ``projections.tables.encode_steps``)."""
    return encode_steps(list(map(_step_values, rows.steps.values())))


class Writes(NamedTuple):
    """A batch's rows frozen as tuples: (table, rows to insert, rows to upsert) per table."""

    tables: list[tuple[sa.Table, list[tuple[Any, ...]], list[tuple[Any, ...]]]]
    count: int  # type: ignore[assignment]  # a field named as tuple.count, which it hides


def snapshot(work: Workset) -> Writes:
    """Freeze every changed row of the workset, and mark the workset clean.

    Rows never stored become inserts (COPY on PostgreSQL), stored ones
    upserts. Freezing lets the workset move on to the next batch while this
    one is written (see ``projections.applier``).
    """
    new_runs: list[Row] = []
    new_steps: list[tuple[str, str]] = []
    old_runs: list[Row] = []
    old_steps: list[tuple[str, str]] = []
    for run_id, rows in work.runs.items():
        if not rows.stored:
            finish_rows(rows)
            new_runs.append(rows.run)
            new_steps.append((run_id, steps_json(rows)))
            continue
        if rows.dirty_run:
            finish_rows(rows)
            old_runs.append(rows.run)
        if rows.dirty_steps:
            old_steps.append((run_id, steps_json(rows)))
    run_values, report_values, anomaly_values = _VALUES["flow_runs"], _VALUES["reports"], _VALUES["anomalies"]
    problem_values = _VALUES["projection_errors"]
    tables = []
    count = 0
    for table, inserts, upserts in (
        (flow_runs, list(map(run_values, new_runs)), list(map(run_values, old_runs))),
        (flow_steps, new_steps, old_steps),
        (reports, list(map(report_values, work.reports.values())), []),  # a run ends once: always new
        (anomalies, list(map(anomaly_values, work.anomalies)), []),
        (projection_errors, list(map(problem_values, work.problems)), []),
        (stream_frames, work.frames[:], []),  # one row per framed event, written once
    ):
        if inserts or upserts:
            tables.append((table, inserts, upserts))
            count += len(inserts) + len(upserts)
    work.clean()
    return Writes(tables, count)


def write(conn: sa.Connection, writes: Writes) -> None:
    """Write frozen rows inside ``conn``'s transaction.

    Through the DBAPI cursor of the same connection: SQLAlchemy's per-row
    parameter handling cost more than the rest of a rebuild together. New
    rows go to PostgreSQL by binary COPY (no escaping of the long texts).
    """
    postgres = conn.dialect.name == "postgresql"
    cursor = driver_of(conn).cursor()
    try:
        for table, inserts, upserts in writes.tables:
            shape = _shape(table, postgres)
            if inserts:
                if postgres and table is stream_frames and len(inserts) < _COPY_FROM:
                    cursor.execute(shape.pg_insert, _columns(inserts, shape.pg_types))
                elif postgres:
                    with cursor.copy(shape.copy) as copy:
                        copy.set_types(shape.pg_types)
                        for row in inserts:
                            copy.write_row(row)
                else:
                    cursor.executemany(shape.insert, inserts)
            if upserts:
                if postgres:
                    cursor.execute(shape.pg_upsert, _columns(upserts, shape.pg_types))
                else:
                    cursor.executemany(shape.upsert, upserts)
    finally:
        cursor.close()


# A live batch's few frame rows go to PostgreSQL as an INSERT: a COPY's set-up cost our process
# more than the rows (a live projector's batches of three events: +68k instructions an event with a
# COPY each, +48k with the INSERT); a replay's pages still go by COPY.
_COPY_FROM = 64


def _columns(rows: list[tuple[Any, ...]], pg_types: list[str]) -> list[list[Any]]:
    """``rows`` as one list per column: the parameters of a ``_Shape``'s ``unnest`` statements."""
    columns = [list(column) for column in zip(*rows, strict=True)]
    for i, pg_type in enumerate(pg_types):
        if pg_type == "float8":  # psycopg dumps no list of ints and floats mixed (a time given as an int)
            columns[i] = [None if v is None else float(v) for v in columns[i]]
    return columns

# A row dict as a tuple in column order.
_VALUES: dict[str, Callable[[Row], tuple[Any, ...]]] = {
    table.name: operator.itemgetter(*(c.name for c in table.columns)) for table in READ_TABLES
}


class _Shape(NamedTuple):
    insert: str
    upsert: str
    copy: str
    pg_types: list[str]
    # PostgreSQL: a batch's rows in one statement, one array a column (``unnest``), rather than a
    # statement a row (``executemany``) or a VALUES list a batch: the same text whatever the rows,
    # so psycopg converts it once and the server parses and plans one statement a batch, not one a row.
    pg_insert: str
    pg_upsert: str


_SHAPES: dict[tuple[str, bool], _Shape] = {}
_PG_TYPES = {sa.Text: "text", sa.Integer: "int4", sa.BigInteger: "int8", sa.Double: "float8",
             sa.LargeBinary: "bytea"}


def _shape(table: sa.Table, postgres: bool) -> _Shape:
    """The statements that write ``table`` on a dialect, built once."""
    key = (table.name, postgres)
    shape = _SHAPES.get(key)
    if shape is None:
        names = [c.name for c in table.columns]
        primary = PRIMARY_KEYS[table.name]
        mark = "%s" if postgres else "?"
        columns = ", ".join(names)
        insert = f"INSERT INTO {table.name} ({columns}) VALUES ({', '.join([mark] * len(names))})"
        updates = ", ".join(f"{n} = excluded.{n}" for n in names if n not in primary)
        upsert = f"{insert} ON CONFLICT ({', '.join(primary)}) DO UPDATE SET {updates}"
        copy = f"COPY {table.name} ({columns}) FROM STDIN (FORMAT BINARY)"
        pg_types = [_PG_TYPES[type(c.type)] for c in table.columns]
        # (binary parameters: no escaping of the long texts, as by COPY)
        pg_insert = (f"INSERT INTO {table.name} ({columns}) SELECT * FROM unnest("
                     f"{', '.join(f'%b::{t}[]' for t in pg_types)})")
        pg_upsert = f"{pg_insert} ON CONFLICT ({', '.join(primary)}) DO UPDATE SET {updates}"
        shape = _SHAPES[key] = _Shape(insert, upsert, copy, pg_types, pg_insert, pg_upsert)
    return shape
