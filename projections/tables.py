"""The read tables: disposable projections of the event log (DESIGN §6).

Nothing here is ever migrated. Changing a table, a column or what the
projector writes into one means bumping ``PROJECTION_VERSION``: the next
start drops the read tables and rebuilds them by replaying the log.

Every value is a function of the log alone (timestamps are the events' own
``at``, never the clock at projection time), so a rebuild from position 0
writes byte for byte the rows the live projector wrote. JSON columns are
text encoded with sorted keys, for the same reason.

What an event holds and a row would only copy is not copied: the long texts
(a step's output and prompt, a run's report) and the graph a run was
launched with (a step's kind, label, deps, trigger rule and condition). A
row holds the global position of the event that carries them
(``flow_runs.launched_position``, ``flow_steps.output_position``, ...), and
a query of one run reads those few events back
(``projections.source.read_events``). The texts are most of the log's bytes,
and the graph a fifth of a step row: copying them made a rebuild write
nearly as much as it read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.schema import CreateTable

# Bump on any change to these tables or to what projections/apply.py writes, and on any change to
# a durable frame (projections/frames.py and frame_structs.py: its fields, its builders) or to how an event decodes
# (an upcaster added or changed in flows.codec): ``stream_frames`` keeps each event's frames as
# they were built when it was projected, and a resume sends those bytes as they are.
# tests/unit/test_frames.py::test_the_kept_frames_fingerprint_names_the_projection_version fails
# when the frames' shape changes and this stays.
PROJECTION_VERSION = 10

metadata = sa.MetaData()

_Position = sa.BigInteger
_Float = sa.Double

projection_checkpoints = sa.Table(
    "projection_checkpoints",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    # The last global position whose effect is in the read tables.
    sa.Column("position", _Position, nullable=False),
    # PROJECTION_VERSION of the code that built the tables.
    sa.Column("version", sa.Integer, nullable=False),
    # Bumped by every reset, so a projector that read the checkpoint before a
    # rebuild cannot commit on top of it (its conditional update misses).
    sa.Column("epoch", sa.Integer, nullable=False),
)

flow_runs = sa.Table(
    "flow_runs",
    metadata,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("flow", sa.Text, nullable=False),
    sa.Column("category", sa.Text, nullable=False),
    sa.Column("band", sa.Text, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("backend", sa.Text, nullable=False),
    sa.Column("project_id", sa.Text, nullable=False),
    sa.Column("question", sa.Text, nullable=False),
    sa.Column("inputs", sa.Text, nullable=False),  # JSON object
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("queue_reason", sa.Text, nullable=False),
    sa.Column("plan_position", sa.Integer, nullable=False),
    sa.Column("launched_by", sa.Text, nullable=False),
    sa.Column("idempotency_key", sa.Text, nullable=False),
    sa.Column("launched_position", _Position, nullable=False),
    sa.Column("launched_at", _Float, nullable=False),
    sa.Column("started_at", _Float),
    sa.Column("ended_at", _Float),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("ended_by", sa.Text, nullable=False),
    sa.Column("steps_total", sa.Integer, nullable=False),
    sa.Column("steps_done", sa.Integer, nullable=False),
    sa.Column("recoveries", sa.Integer, nullable=False),
    sa.Column("anomalies", sa.Integer, nullable=False),
    sa.Column("stream_version", sa.Integer, nullable=False),
    sa.Column("last_position", _Position, nullable=False),
    # A run started from another (DESIGN §15): its parent, how ("fork", "retry"), and from which step.
    sa.Column("parent_run_id", sa.Text, nullable=False),
    sa.Column("parent_link", sa.Text, nullable=False),
    sa.Column("forked_from", sa.Text, nullable=False),
    # What a start needs to park a run waiting for a person without reading its stream (DESIGN §4,
    # ``ReadModel.open_runs``). ``waits``: JSON {step: its deps} of the steps that surely wait while
    # none of their deps has ended (deps, and a trigger rule other than ``always``), as the launch
    # pinned them; "" for a task run (its scheduling is the coordinator's: never parked from the rows).
    sa.Column("waits", sa.Text, nullable=False),
    # Set while the run only waits for a person: paused, no step running or retrying, every pending
    # step one of ``waits`` with none of its deps ended. The earliest approval timer then (0: none);
    # NULL for any other run.
    sa.Column("parked_until", _Float),
    # The list query: newest first (run ids are ULIDs), optionally filtered.
    sa.Index("flow_runs_status_idx", "status", "run_id"),
    sa.Index("flow_runs_project_idx", "project_id", "run_id"),
    sa.Index("flow_runs_flow_idx", "flow", "run_id"),
    sa.Index("flow_runs_parent_idx", "parent_run_id", "run_id"),
)

STEP_FIELDS: tuple[str, ...] = (
    "step_id",
    "ordinal",  # position in the pinned graph
    "persona",  # the spec's, or what the last attempt ran as
    "status",
    "attempt",
    "failures",
    "retry_at",  # a failed attempt's retry falls due then (null: none pending)
    "started_at",  # null until started
    "ended_at",
    "duration_s",
    "error",
    "skip_reason",
    "detail",
    "output_position",  # the event holding the output (StepCompleted, or StepResumed: its comment); 0: none
    "fields",  # JSON object
    "fields_error",
    "usage",  # JSON object
    "prompt_position",  # the event holding the last attempt's prompt (StepStarted or StepPaused); 0: none
    "unresolved",  # JSON list
    "backend",
    "model",
    "decided_by",
    "comment",
    "anomalies",
    "last_position",
    "due_at",  # a paused approval's timer falls due then (0: none); not shown by the API
    "kept_from",  # a fork's step whose recorded outcome was copied from this parent run, not run again ("")
)
"""What a step row holds, in the order of the arrays in ``flow_steps.steps``."""

# A run's steps in one row, as one JSON text: writing a row of a few values
# costs about what writing each of the 5-15 step rows it replaces did (on
# SQLite every value is bound on its own, on PostgreSQL every row is a heap
# tuple and an index entry), and step rows were most of what a replay wrote.
# Nothing reads a single step: get_run reads a run's steps together, and so
# does the projector when a batch continues a run.
flow_steps = sa.Table(
    "flow_steps",
    metadata,
    sa.Column("run_id", sa.Text, primary_key=True),
    # JSON: the run's steps in graph order, each an array of STEP_FIELDS.
    sa.Column("steps", sa.Text, nullable=False),
)

# Dict keys sorted (a step's fields and usage): equal steps are equal text.
_steps_encoder = msgspec.json.Encoder(order="deterministic")
_steps_decoder = msgspec.json.Decoder(list[list[Any]])


def encode_steps(steps: Sequence[Sequence[Any]]) -> str:
    """``flow_steps.steps``: a run's steps in graph order, each the values of STEP_FIELDS in order."""
    return _steps_encoder.encode(steps).decode()


def decode_steps(text: str) -> list[list[Any]]:
    """The steps ``encode_steps`` wrote, each a list of the values of STEP_FIELDS."""
    return _steps_decoder.decode(text)


reports = sa.Table(
    "reports",
    metadata,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    # The run's terminal event, which holds the report markdown.
    sa.Column("position", _Position, nullable=False),
    sa.Column("at", _Float, nullable=False),
)

anomalies = sa.Table(
    "anomalies",
    metadata,
    sa.Column("position", _Position, primary_key=True, autoincrement=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("step_id", sa.Text, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("severity", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("guidance", sa.Text, nullable=False),
    sa.Column("at", _Float, nullable=False),
    sa.Index("anomalies_run_idx", "run_id", "position"),
)

# Events the projector could not apply, and why: it skips them and goes on (one event must
# not stop the read side), and says so here, in the transaction that moves the checkpoint
# past them. A replay meets the same events and writes the same rows.
projection_errors = sa.Table(
    "projection_errors",
    metadata,
    sa.Column("position", _Position, primary_key=True, autoincrement=False),
    sa.Column("run_id", sa.Text, nullable=False),  # "" for an event of no run's stream
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Index("projection_errors_run_idx", "run_id", "position"),
)

# The durable frames of the stream (DESIGN §7), kept as a resume sends them: for each event that gives
# frames, their text/event-stream bytes (``id: <position>\nevent: <type>\ndata: <json>\n\n``, two of
# them for a StepPaused), built by ``projections.kept_frames.kept_sse`` from the event as the projector
# decoded it. A stream resuming from a position reads these up to the checkpoint (one query a page,
# only its consumer's rows: by run or by project) instead of decoding and framing every event again
# (``api.http.hub.FrameHub.read_frames``). The position is SQLite's rowid (INTEGER PRIMARY KEY).
# No other index: each is paid on every step (a live projector's batch of three events on SQLite:
# +49k instructions an event with indexes on (run_id, position) and (project_id, position), +30k
# without). A project's resume reads the table in position order and leaves the other projects'
# rows in the database (the log's replay read every framed event too); a run's resume reads that
# run's events from the log (its stream's index), a few dozen rows.
stream_frames = sa.Table(
    "stream_frames",
    metadata,
    sa.Column("position", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("project_id", sa.Text, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
)

READ_TABLES: tuple[sa.Table, ...] = (flow_runs, flow_steps, reports, anomalies, projection_errors, stream_frames)
"""The tables a rebuild drops and recreates (the checkpoints table stays)."""

PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    table.name: tuple(c.name for c in table.primary_key.columns) for table in READ_TABLES
}


# The advisory lock key that serialises creating the checkpoints table on
# PostgreSQL, where two CREATE TABLE IF NOT EXISTS can still collide.
_SETUP_LOCK_KEY = 0x626174707231  # "batpr1"


def create_checkpoints(conn: sa.Connection, name: str) -> None:
    """Create the checkpoints table and the row of projection ``name`` if missing (idempotent).

    A new row says version -1: tables never built, so the first start resets them.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SETUP_LOCK_KEY})
    conn.execute(CreateTable(projection_checkpoints, if_not_exists=True))
    known = sa.select(projection_checkpoints.c.name).where(projection_checkpoints.c.name == name)
    if conn.execute(known).first() is not None:
        return  # no write at all: a start must not queue for SQLite's write lock
    conn.execute(sa.text(
        "INSERT INTO projection_checkpoints (name, position, version, epoch) "
        "VALUES (:name, 0, -1, 0) ON CONFLICT (name) DO NOTHING"
    ), {"name": name})


def recreate_read_tables(conn: sa.Connection) -> None:
    """Drop the read tables (whatever shape an older version gave them) and create them."""
    for table in reversed(READ_TABLES):
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {table.name}"))
    for table in READ_TABLES:
        table.create(conn)


def read_tables_exist(conn: sa.Connection) -> bool:
    """Whether every read table is there (a crash mid-reset may have dropped some)."""
    names = set(sa.inspect(conn).get_table_names())
    return all(table.name in names for table in READ_TABLES)
