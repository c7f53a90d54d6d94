"""Applying pages of the log to the read tables, exactly once each, and fast.

``Applier.apply`` does one page synchronously (the live projector's
batches). ``Applier.catch_up`` replays a long stretch (a rebuild, a start far
behind) as a pipeline of three stages on pages of ``chunk`` events: the next
page is read while this one is applied in memory, while the previous one is
written and committed. On PostgreSQL, reading and writing spend much of their
time in the server, so the stages overlap. On SQLite they run in turn in the
calling thread: the sqlite3 driver holds the GIL for all but each row's step,
so three threads only took turns, and the switches cost a fifth more CPU
than the work itself. Each page still commits in its own transaction with
its own checkpoint, in order.

One event must not stop the read side. When a page fails for a reason that
is not the database's (``batch.is_transient``), it is applied again in
halves, down to the events that fail alone; each is skipped, and a
``projection_errors`` row saying why is written in the transaction that
moves the checkpoint past it. A failure of the database itself is raised,
and retried from the checkpoint by the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa

from flows.events import RunLaunched
from projections import batch as db
from projections.apply import Row, Workset, apply
from projections.batch import Checkpoint, CheckpointMoved, Writes, is_transient
from projections.kept_frames import kept_rows
from projections.source import Item, LogReader, Page, problem

log = logging.getLogger(__name__)

# Rows of ended runs are dropped from memory once written; the rest are kept
# for the next page, up to this many runs (beyond it: start afresh).
_CACHE_RUNS = 5000


class Applier:
    """The read tables of projection ``name`` at ``version``, and where they stand."""

    def __init__(self, database: sa.Engine, name: str, version: int,
                 before_commit: Callable[[sa.Connection], None] | None = None) -> None:
        self.database = database
        self.name = name
        self.version = version
        self.checkpoint = Checkpoint(0, version, 0)
        self.work = Workset()
        self._before_commit = before_commit

    def prepare(self) -> bool:
        """Load the checkpoint, resetting the tables first if they are stale; True if reset."""
        def check() -> bool:
            with self.database.connect() as conn:
                stale = db.needs_reset(conn, self.name, self.version)
                conn.commit()
            return stale

        stale = db.patiently(check)
        if stale:
            self.reset()
        else:
            self.reload()
        return stale

    def reset(self) -> None:
        """Empty read tables of this version, checkpoint 0."""
        self.work = Workset()
        self.checkpoint = db.patiently(lambda: db.reset(self.database, self.name, self.version))

    def reload(self) -> None:
        """Take the stored checkpoint (another projector may have moved it); forget cached rows."""
        self.work = Workset()
        with self.database.connect() as conn:
            stored = db.read_checkpoint(conn, self.name)
        if stored is None:
            self.reset()
        elif stored.version != self.version:
            raise RuntimeError(
                f"projection {self.name!r} is at version {stored.version}, this code writes "
                f"version {self.version}: another process rebuilt it; restart this one"
            )
        else:
            self.checkpoint = stored

    # -- one page ---------------------------------------------------------------------------

    def apply(self, page: Page) -> Checkpoint:
        """Apply a page and commit it with the checkpoint (moved to ``page.last``).

        Events at or below the checkpoint are ignored. Raises CheckpointMoved
        (nothing written) when another projector committed first.
        """
        if page.last <= self.checkpoint.position:
            return self.checkpoint
        try:
            writes = self._compute(page, self.checkpoint.position)
            self.checkpoint = self._commit(writes, self.checkpoint, page.last)
        except BaseException as exc:
            self.work = Workset()  # the cached rows may hold a page that was rolled back
            if is_transient(exc):
                raise
            self.isolate(page, exc)
        self._evict()
        return self.checkpoint

    def isolate(self, page: Page, cause: BaseException | None = None) -> Checkpoint:
        """Apply a page that failed (with ``cause``) in halves, down to the events that fail alone,
        which are skipped and recorded. Raises what is transient (see ``batch.is_transient``).

        Bisection: one bad event in a page of n costs about 2 log2(n)
        attempts. A rebuild of 2,450 events in one page with one bad event
        took 0.10 s on SQLite and 0.28 s on PostgreSQL (0.06 s and 0.09 s
        without it; event by event it took 0.8 s and 2.6 s). It only ever
        runs on a page that already failed.
        """
        log.warning("projection %r: a page up to position %d failed (%s: %s); looking for the event at "
                    "fault", self.name, page.last, type(cause).__name__, cause)
        after = self.checkpoint.position
        items = [item for item in page.items if item[2] > after]
        problems = [p for p in page.problems if p["position"] > after]
        if not items:  # only events that did not decode (or none of a run): nothing can fail but the write
            self._commit_problems(problems, page.last)
        else:
            self._halves(items, page.last, problems)
        self._evict()
        return self.checkpoint

    def _halves(self, items: list[Item], last: int, problems: list[Row]) -> None:
        """Apply ``items`` (and write ``problems``) up to ``last``; on a failure, each half in turn."""
        try:
            writes = self._compute(Page(items, last, len(items), problems), self.checkpoint.position)
            self.checkpoint = self._commit(writes, self.checkpoint, last)
            return
        except BaseException as exc:
            self.work = Workset()  # the cached rows may hold what was rolled back
            if is_transient(exc):
                raise
            if len(items) == 1:
                run_id, event, position, _ = items[0]
                log.error("projection %r skips event %d (%s of run %s), which it cannot apply: %s: %s",
                          self.name, position, type(event).__name__, run_id, type(exc).__name__, exc)
                # Its frames are kept still: a stream shows it as a replay of the log does.
                self._commit_problems([*problems, problem(position, run_id, type(event).__name__, exc)], last,
                                      kept_rows(items, self._loaded_project_of))
                return
        middle = len(items) // 2
        split = items[middle - 1][2]
        self._halves(items[:middle], split, [p for p in problems if p["position"] <= split])
        self._halves(items[middle:], last, [p for p in problems if p["position"] > split])

    def _commit_problems(self, problems: list[Row], last: int,
                         frames: list[tuple[int, str, str, bytes]] | None = None) -> None:
        """Move the checkpoint to ``last``, writing only these ``projection_errors`` rows (and these
        ``stream_frames`` rows)."""
        work = Workset()
        work.problems.extend(problems)
        work.frames.extend(frames or ())
        self.checkpoint = self._commit(db.snapshot(work), self.checkpoint, last)

    def _compute(self, page: Page, after: int, before_load: Callable[[], None] = lambda: None) -> Writes:
        """Apply a page to the cached rows (loading the runs it needs) and freeze the result."""
        work = self.work
        items = page.items if not page.items or page.items[0][2] > after else [
            item for item in page.items if item[2] > after
        ]
        runs = work.runs
        seen: set[str] = set()
        needed: set[str] = set()  # runs this page continues (rather than launches)
        for run_id, event, _, _ in items:
            if run_id not in seen:
                seen.add(run_id)
                if not isinstance(event, RunLaunched):
                    needed.add(run_id)
        if not needed.issubset(runs):
            before_load()  # may evict rows: what is missing is counted after it
            # Read outside the write transaction, to hold SQLite's write lock
            # briefly; the conditional checkpoint update proves that no other
            # projector wrote in between.
            with self.database.connect() as conn:
                runs.update(db.load_runs(conn, needed.difference(runs)))
        apply(work, items)
        work.frames.extend(kept_rows(items, self._project_of))
        if page.problems:
            work.problems.extend(p for p in page.problems if p["position"] > after)
        return db.snapshot(work)

    def _commit(self, writes: Writes, seen: Checkpoint, last: int, writer: sa.Connection | None = None) -> Checkpoint:
        """Write a page and move the checkpoint, in one transaction (retried while SQLite is locked).

        On ``writer`` (a ``db.writing`` connection held by a catch-up), or on one of its own.
        """

        def attempt(conn: sa.Connection) -> Checkpoint:
            with db.transaction(conn):
                checkpoint = db.advance(conn, self.name, seen, last)
                db.write(conn, writes)
                if self._before_commit is not None:
                    self._before_commit(conn)
            return checkpoint

        if writer is not None:
            return db.patiently(lambda: attempt(writer))

        def alone() -> Checkpoint:
            with db.writing(self.database) as conn:
                return attempt(conn)

        return db.patiently(alone)

    def _project_of(self, run_id: str) -> str | None:
        """The project the rows in memory hold for a run (None: not launched), for its kept frames."""
        rows = self.work.runs.get(run_id)
        return None if rows is None else rows.run["project_id"]

    def _loaded_project_of(self, run_id: str) -> str | None:
        """The project the read tables hold for a run (None: not launched): read, the rows in memory
        being unsure after a failed page."""
        with self.database.connect() as conn:
            rows = db.load_runs(conn, [run_id]).get(run_id)
        return None if rows is None else rows.run["project_id"]

    def _evict(self) -> None:
        # Only when every row in memory is written: an evicted run is read back if needed.
        runs = self.work.runs
        for run_id in [r for r, rows in runs.items() if rows.terminal]:
            del runs[run_id]
        if len(runs) > _CACHE_RUNS:
            self.work = Workset()

    # -- a long stretch ---------------------------------------------------------------------

    def catch_up(self, store: Any, chunk: int, stopping: Callable[[], bool] = lambda: False, *,
                 reset: bool = False) -> int:
        """Apply everything after the checkpoint, pipelined in pages of ``chunk``; returns events read.

        ``reset`` (a rebuild): empty the tables first (see ``reset``). On
        PostgreSQL the first page is read and applied in memory meanwhile:
        dropping and creating the tables is a wait on the server, and the
        first page depends on nothing they hold.
        """
        read = [0]  # events applied (or skipped) and committed, counted by the pipeline as it goes
        pool: Executor = (_InTurn() if self.database.dialect.name == "sqlite"
                          else ThreadPoolExecutor(2, thread_name_prefix=f"baton-projection-{self.name}"))
        with pool:
            while True:
                try:
                    try:
                        self._pipeline(pool, store, chunk, stopping, reset, read)
                        return read[0]
                    except CheckpointMoved:
                        raise
                    except BaseException as exc:
                        self.work = Workset()
                        if is_transient(exc):
                            raise
                        reset = False
                        if self._isolate_next(store, chunk, exc, read):
                            return read[0]
                except CheckpointMoved:
                    reset = False
                    self.reload()  # another projector is ahead: go on from where it is

    def _isolate_next(self, store: Any, chunk: int, cause: BaseException, read: list[int]) -> bool:
        """After a pipeline failed on ``cause``: isolate what fails in the page after the checkpoint;
        True when it was the last page.

        The pages before the failing one are committed (``reload`` says how
        far), so the page after the checkpoint is the one that failed; the
        pipeline goes on after it.
        """
        self.reload()
        with LogReader(store) as reader:
            page = reader.page(reader.fetch(self.checkpoint.position, chunk))
        if page.count:
            self.isolate(page, cause)
        read[0] += page.count
        return page.count < chunk

    def _pipeline(self, pool: Executor, store: Any, chunk: int,
                  stopping: Callable[[], bool], reset: bool, read: list[int]) -> None:
        with LogReader(store) as reader, db.writing(self.database, bulk=True) as writer:
            self._stages(pool, reader, writer, chunk, stopping, reset, read)

    def _stages(self, pool: Executor, reader: LogReader, writer: sa.Connection, chunk: int,
                stopping: Callable[[], bool], reset: bool, read: list[int]) -> None:
        writing: Future[Checkpoint] | None = None
        if reset:
            self.work = Workset()
            writing = pool.submit(db.patiently, lambda: db.reset(self.database, self.name, self.version))
        reading: Future[Any] = pool.submit(reader.fetch, 0 if reset else self.checkpoint.position, chunk)
        # The checkpoint the next commit moves from: a reset's is known once it is done.
        seen: Checkpoint | None = None if reset else self.checkpoint

        pending = 0  # the events of the page being written: counted once it is committed

        def written() -> None:
            nonlocal writing, pending
            if writing is not None:
                self.checkpoint = writing.result()
                writing = None
                read[0] += pending
                pending = 0
                self._evict()

        try:
            while True:
                page = reader.page(reading.result())
                more = page.count >= chunk and not stopping()
                if more:
                    reading = pool.submit(reader.fetch, page.last, chunk)
                if page.count:
                    # Evicted runs may still be in the write under way (and tables in a reset):
                    # let it finish before reading rows back.
                    writes = self._compute(page, 0 if seen is None else seen.position, before_load=written)
                    written()
                    if seen is None:
                        seen = self.checkpoint
                    writing = pool.submit(self._commit, writes, seen, page.last, writer)
                    pending = page.count
                    seen = Checkpoint(page.last, seen.version, seen.epoch)
                if not more:
                    written()
                    db.checkpoint_wal(self.database)
                    return
        except BaseException:
            # The reader's and the writer's connections go back to the pool
            # next: let the stages under way finish with them first.
            if not reading.cancel():
                try:
                    reader.discard(reading.result())
                except BaseException:
                    pass
            if writing is not None:
                try:
                    writing.result()
                except BaseException:
                    pass  # the first failure is the one raised
            raise


class _InTurn(Executor):
    """Runs each task at once, in the calling thread: the pipeline's stages one after the other."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # raised where the pipeline asks for the result, as from a thread
            future.set_exception(exc)
        return future
