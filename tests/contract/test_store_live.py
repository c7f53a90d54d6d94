"""The event store contract, live: ordering under concurrency and subscriptions.

``TestLiveContract`` runs unchanged against SQLite and PostgreSQL. The
PostgreSQL-only tests at the end kill the LISTEN connection and show that
the held-transaction test fails without the order lock.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from eventstore import NewEvent, RecordedEvent, open_store

from eventstore_testkit import (  # noqa: F401 - store is a fixture
    Thread,
    insert_raw_row,
    pg_writers_waiting_for_lock,
    run_sql,
    store,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]


def held_transaction_scenario(url: str, **options) -> list[RecordedEvent]:
    """Writer A holds its append open while B commits; a tailing reader reads
    in between and after. Returns what the reader saw, in order."""
    hold, holding, b_waits = threading.Event(), threading.Event(), threading.Event()

    def hold_a(group):
        if any(p.stream_id == "held-a" for p in group):
            holding.set()
            hold.wait(20)

    a = open_store(url, _before_commit=hold_a, **options)
    b = open_store(url, _on_lock_wait=b_waits.set, **options)
    reader = open_store(url)
    seen: list[RecordedEvent] = []

    def tail() -> None:  # a reader following position > cursor
        cursor = seen[-1].position if seen else 0
        seen.extend(reader.read_all(after=cursor))

    try:
        ta = Thread(lambda: a.append("held-a", [NewEvent("A", {})]))
        ta.start()
        wait_for(holding.is_set, what="A to hold its transaction open")
        tb = Thread(lambda: b.append("held-b", [NewEvent("B", {})]))
        tb.start()
        # B either commits (nothing orders it behind A) or waits for A's lock.
        wait_for(
            lambda: tb.done.is_set() or b_waits.is_set()
            or (b.dialect == "postgresql" and pg_writers_waiting_for_lock(b) > 0),
            what="B to commit or to wait for A",
        )
        tail()
        hold.set()
        ta.value()
        tb.value()
        tail()
        return seen
    finally:
        hold.set()
        for store in (a, b, reader):
            store.close()


def assert_reader_saw_both_in_order(seen: list[RecordedEvent]) -> None:
    assert [e.type for e in seen] == ["A", "B"], f"the tailing reader saw {seen}"
    assert seen[0].position < seen[1].position


class TestLiveContract:
    """Ordering and subscriptions, the same on every backend."""

    def test_held_transaction_is_never_skipped_by_a_tailing_reader(self, store_url):
        assert_reader_saw_both_in_order(held_transaction_scenario(store_url))

    def test_writers_and_tailing_readers_see_everything_once_in_order(self, store_url):
        writers, per_writer, total = 8, 500, 8 * 500
        with open_store(store_url) as store, open_store(store_url) as other:
            got: dict[str, list[RecordedEvent]] = {"subscription": [], "read_all": []}

            def subscriber() -> None:
                with store.subscribe() as sub:
                    while len(got["subscription"]) < total:
                        event = sub.next_event(timeout=30)
                        assert event is not None, "subscription stalled"
                        got["subscription"].append(event)

            def poller() -> None:  # another instance, following read_all by cursor
                cursor, idle = 0, threading.Event()
                while len(got["read_all"]) < total:
                    page = list(other.read_all(after=cursor))
                    got["read_all"] += page
                    cursor = page[-1].position if page else cursor
                    if not page:
                        idle.wait(0.002)

            def writer(w: int) -> list[RecordedEvent]:
                out = []
                for i in range(per_writer):
                    out += store.append(f"run-{w}", [NewEvent("Tick", {"w": w, "i": i})], i)
                return out

            readers = [Thread(subscriber), Thread(poller)]
            for t in readers:
                t.start()
            writer_threads = [Thread(lambda w=w: writer(w)) for w in range(writers)]
            for t in writer_threads:
                t.start()
            committed = [e for t in writer_threads for e in t.value(120)]
            for t in readers:
                t.value(60)
        assert len(committed) == total
        for name, events in got.items():
            positions = [e.position for e in events]
            assert positions == sorted(set(positions)), f"{name}: not strictly increasing"
            assert sorted(events, key=lambda e: e.position) == sorted(
                committed, key=lambda e: e.position
            ), f"{name}: not exactly the committed events"

    def test_a_subscription_sees_its_own_and_another_stores_commits_interleaved_as_the_table_has_them(
        self, store_url, store
    ):
        # This store's own commits reach its subscriptions without a read; another store's
        # commits between them must still come, in position order, and equal to the table's rows.
        with store.subscribe() as every, store.subscribe(stream_id="run-own") as own, \
                open_store(store_url) as other:
            for i in range(30):
                (store if i % 3 else other).append("run-own" if i % 2 else "run-other",
                                                   [NewEvent("N", {"i": i}), NewEvent("M", {"i": i})])
            table = list(store.read_all())
            seen = [every.next_event(10) for _ in table]
            assert seen == table
            assert [own.next_event(10) for _ in range(30)] == [e for e in table if e.stream_id == "run-own"]
            assert every.next_event(timeout=0.05) is None and own.next_event(timeout=0.05) is None

    def test_subscription_catches_up_then_follows_live(self, store):
        old = store.append("run-a", [NewEvent("N", {"i": i}) for i in range(3)])
        with store.subscribe(after=old[0].position) as sub:
            assert [sub.next_event(5), sub.next_event(5)] == old[1:]
            assert sub.position == old[2].position
            assert sub.next_event(timeout=0.05) is None  # nothing new yet
            live = Thread(lambda: next(sub))
            live.start()
            new = store.append("run-b", [NewEvent("N", {"i": 9})])
            assert live.value(10) == new[0]

    def test_close_ends_a_blocked_iteration_from_another_thread(self, store):
        sub = store.subscribe()
        consumer = Thread(lambda: list(sub))
        consumer.start()
        wait_for(lambda: consumer.is_alive(), what="the consumer to block")
        sub.close()
        assert consumer.value(5) == []
        assert sub.closed and sub.next_event(0) is None

    def test_store_close_ends_its_subscriptions(self, store_url):
        store = open_store(store_url)
        sub = store.subscribe()
        consumer = Thread(lambda: list(sub))
        consumer.start()
        store.close()
        assert consumer.value(5) == []

    def test_many_subscribers_share_one_watcher(self, store):
        subs = [store.subscribe() for _ in range(50)]
        event = store.append("run-a", [NewEvent("N", {})])[0]
        assert all(sub.next_event(10) == event for sub in subs)
        assert store._watcher is not None  # one per store, not one per subscription
        for sub in subs:
            sub.close()

    def test_subscriber_wakes_on_an_append_by_another_store(self, store_url, store):
        with store.subscribe() as sub, open_store(store_url) as other:
            event = other.append("run-a", [NewEvent("N", {})])[0]
            assert sub.next_event(timeout=10) == event

    def test_subscriber_wakes_on_an_append_by_another_process(self, store_url, store):
        code = (
            "import sys; from eventstore import open_store, NewEvent\n"
            "with open_store(sys.argv[1]) as s:\n"
            "    s.append('proc', [NewEvent('FromProcess', {'pid': 1})])\n"
        )
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with store.subscribe() as sub:
            subprocess.run([sys.executable, "-c", code, store_url], check=True, timeout=60,
                           cwd=REPO, env=env)
            event = sub.next_event(timeout=10)
        assert event is not None and event.type == "FromProcess"

    def test_a_stream_subscription_sees_another_stores_commit_when_this_store_commits_elsewhere_next(
        self, store_url
    ):
        # This store's commits of other streams do not wake a stream's subscription; one that
        # follows another store's commit (a gap in the positions) must, long before the head poll.
        with open_store(store_url, poll_interval=60) as store, open_store(store_url) as other:
            store.append("run-else", [NewEvent("N", {})])
            with store.subscribe(after=store.head(), stream_id="run-mine") as sub:
                waiting = Thread(lambda: sub.next_event(timeout=30))  # it reads once more when time is up
                waiting.start()
                wait_for(lambda: "run-mine" in store._hub._streams, what="the subscription to wait")
                theirs = other.append("run-mine", [NewEvent("Theirs", {})])[0]
                started = time.monotonic()
                store.append("run-else", [NewEvent("N", {})])
                assert waiting.value(40) == theirs
                assert time.monotonic() - started < 10

    def test_subscriber_survives_a_lost_notification(self, store_url):
        # A row written behind the store's back sends no wake-up at all: the
        # periodic re-read must still deliver it.
        with open_store(store_url, poll_interval=0.1) as store, store.subscribe() as sub:
            position = insert_raw_row(store, "run-quiet", 1, '{"quiet":true}')
            event = sub.next_event(timeout=10)
        assert event is not None and event.position == position


@pytest.mark.postgres
def test_truncate_is_refused(pg_url):
    with open_store(pg_url) as store:
        store.append("run-a", [NewEvent("N", {})])
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            run_sql(store, "TRUNCATE events")
        assert store.head() == 1


@pytest.mark.postgres
def test_an_append_waits_for_a_held_order_lock_no_longer_than_lock_timeout(pg_url):
    import time

    import psycopg

    from eventstore import StoreUnavailableError

    with open_store(pg_url, lock_timeout_s=0.5) as store:
        store.append("run-a", [NewEvent("N", {})])
        conninfo = store.database.url.render_as_string(hide_password=False).replace("postgresql+psycopg", "postgresql")
        with psycopg.connect(conninfo) as holder:  # a session that takes the lock and sits on it
            holder.execute("LOCK TABLE events IN EXCLUSIVE MODE")
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError, match="order lock"):
                store.append("run-a", [NewEvent("N", {})])
            assert time.monotonic() - started < 10
        assert [e.version for e in store.append("run-a", [NewEvent("N", {})])] == [2]


@pytest.mark.postgres
def test_subscriber_survives_its_listen_connection_being_killed(pg_url):
    with open_store(pg_url, poll_interval=0.2) as store, open_store(pg_url) as other:
        sub = store.subscribe()
        first = other.append("run-a", [NewEvent("N", {"i": 1})])[0]
        assert sub.next_event(timeout=10) == first
        old_pid = wait_for(lambda: store._watcher.backend_pid, what="the LISTEN connection")
        run_sql(store, f"SELECT pg_terminate_backend({old_pid})")
        # appended by another instance, so only the listener can wake us
        during = other.append("run-a", [NewEvent("N", {"i": 2})])[0]
        assert sub.next_event(timeout=10) == during
        new_pid = wait_for(
            lambda: store._watcher.backend_pid != old_pid and store._watcher.backend_pid,
            what="a new LISTEN connection",
        )
        with store.database.connect() as conn:
            listening = conn.execute(sa.text(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'baton-listen'"
                " AND datname = current_database()")).scalars().all()
        assert listening == [new_pid]
        after = other.append("run-a", [NewEvent("N", {"i": 3})])[0]
        assert sub.next_event(timeout=10) == after
        sub.close()


@pytest.mark.postgres
def test_without_the_order_lock_the_held_transaction_is_skipped(pg_url):
    # The same scenario with the protection removed: B commits while A holds
    # an earlier position, the reader moves past it, and A is never seen.
    seen = held_transaction_scenario(pg_url, _unsafe_no_order_lock=True)
    assert [e.type for e in seen] == ["B"]
    with pytest.raises(AssertionError):
        assert_reader_saw_both_in_order(seen)


def _writer_session_inserted(store) -> bool:
    """Whether the store's writing session has inserted into the log (taken a position) since it connected."""
    import psycopg

    try:
        store._writer._conn.execute("SELECT currval('events_position_seq')").fetchone()
    except psycopg.errors.ObjectNotInPrerequisiteState:  # "currval ... is not yet defined in this session"
        return False
    return True


@pytest.mark.postgres
def test_a_store_opens_with_its_append_path_run_once_and_leaves_no_trace(pg_url):
    # A fresh process's first append found the server cold (its first insert into the log, the sequence,
    # the NOTIFY, the pipelined append of a rendered last event): the open now runs that path once, rolled
    # back. Nothing of it shows: no event, no hole in the positions, nothing for a subscriber.
    with open_store(pg_url) as first:
        first.append("run-a", [NewEvent("N", {"i": 1}), NewEvent("N", {"i": 2})])
        sub = first.subscribe()
        with open_store(pg_url) as fresh:
            assert _writer_session_inserted(fresh)
            # and a commit's statements are prepared, on the server: a plain one and a run's finishing one
            # (run through libpq, under names of their own), and the pipelined one (psycopg's)
            prepared = {name for (name,) in fresh._writer._conn.execute(
                "SELECT name FROM pg_prepared_statements WHERE statement LIKE '%baton_append(%'")}
            assert len(prepared) == 3 and {"baton_append_direct", "baton_append_foreseen_direct"} <= prepared
            assert fresh.head() == 2
            assert [e.position for e in fresh.append("run-b", [NewEvent("N", {}), NewEvent("N", {})])] == [3, 4]
            assert [e.position for e in first.append("run-a", [NewEvent("N", {"i": 3})])] == [5]
        assert [e.position for e in (sub.next_event(timeout=10) for _ in range(5))] == [1, 2, 3, 4, 5]
        assert sub.next_event(timeout=0.2) is None
        sub.close()
        assert first.verify() == []
        assert [e.type for e in first.read_all()] == ["N"] * 5


@pytest.mark.postgres
def test_a_commits_statements_are_prepared_again_when_the_session_lost_them(pg_url):
    # A step's commit and a run's finishing one run through libpq under names of their own; psycopg does
    # not know them, and deallocates every statement of the session after a ROLLBACK. An append then
    # prepares its statement again and is recorded once.
    with open_store(pg_url) as store:
        store.append("run-a", [NewEvent("N", {"i": 1})])
        store._writer._conn.execute("DEALLOCATE ALL")
        assert [e.version for e in store.append("run-a", [NewEvent("N", {"i": 2}), NewEvent("N", {"i": 3})])] == [2, 3]
        store._writer._conn.execute("DEALLOCATE ALL")
        stand_in = NewEvent("Done", {})
        done = store.append("run-a", [NewEvent("N", {"i": 4}), stand_in],
                            last=lambda positions: NewEvent("Done", {"after": positions}, id=stand_in.id))
        assert [e.type for e in done] == ["N", "Done"] and done[1].data == {"after": [done[0].position]}
        assert [e.data.get("i") for e in store.read_stream("run-a")] == [1, 2, 3, 4, None]
        assert store.verify() == []


@pytest.mark.postgres
def test_a_store_opens_without_waiting_long_for_an_order_lock_another_session_holds(pg_url):
    import psycopg

    with open_store(pg_url) as first:
        first.append("run-a", [NewEvent("N", {})])
        conninfo = first.database.url.render_as_string(hide_password=False).replace("postgresql+psycopg", "postgresql")
        with psycopg.connect(conninfo) as holder:  # a session that takes the lock and sits on it
            holder.execute("LOCK TABLE events IN EXCLUSIVE MODE")
            started = time.monotonic()
            with open_store(pg_url, lock_timeout_s=30) as fresh:
                assert time.monotonic() - started < 10  # the warm-up gave up on the lock; the open goes on
                assert not _writer_session_inserted(fresh)
                holder.rollback()
                assert [e.position for e in fresh.append("run-b", [NewEvent("N", {})])] == [2]


@pytest.mark.postgres
def test_a_last_event_is_rendered_without_holding_other_processes_appends(pg_url):
    # A run's report (its terminal event) is rendered from the positions its last step's events get. It
    # used to be rendered between the commit's two round trips, with the order lock held: every other
    # process's append waited for the render. Now it is rendered from the positions foreseen, before the
    # one round trip; when another process took them meanwhile, it is rendered again from the real ones.
    with open_store(pg_url) as store, open_store(pg_url) as other:
        store.append("run-s", [NewEvent("N", {})], 0)  # its writer knows the stream and the next position
        rendering, release, renders = threading.Event(), threading.Event(), []
        stand_in = NewEvent("Summary", {})

        def last(positions: list[int]) -> NewEvent:
            renders.append(positions)
            if len(renders) == 1:
                rendering.set()
                release.wait(10)
            return NewEvent("Summary", {"cites": positions}, id=stand_in.id)

        summed = Thread(lambda: store.append("run-s", [NewEvent("N", {}), stand_in], 1, last=last))
        summed.start()
        try:
            assert rendering.wait(10)
            theirs = other.append("run-o", [NewEvent("N", {})], timeout=3)  # not held by the render
        finally:
            release.set()
        recorded = summed.value()
        assert recorded[1].data == {"cites": [recorded[0].position]} == {"cites": renders[-1]}
        assert theirs[0].position < recorded[0].position < recorded[1].position
        assert len(renders) == 2  # foreseen, then from the real positions
        following = NewEvent("Summary", {})  # foreseen again, and right: rendered once
        again = store.append("run-s", [NewEvent("N", {}), following], 3, last=lambda positions: NewEvent(
            "Summary", {"cites": positions}, id=following.id))
        assert again[1].data == {"cites": [again[0].position]}
        assert [e.version for e in store.read_stream("run-s")] == [1, 2, 3, 4, 5]
        assert store.verify() == []


@pytest.mark.postgres
def test_a_commands_read_is_prepared_on_its_reading_connection_and_reads_what_was_committed(pg_url):
    # A command's read (the run's stream, then one more SELECT, pipelined) runs at every command: its two
    # statements are prepared on the reading connection, and a read after a commit still sees it.
    with open_store(pg_url) as store:
        store.append("run-a", [NewEvent("N", {"i": 1})])
        count = "SELECT count(*) FROM events WHERE position > ?"
        events, more = store.read_stream_and("run-a", count, (0,))
        assert [e.data for e in events] == [{"i": 1}] and more == [(1,)]
        store.append("run-a", [NewEvent("N", {"i": 2})])
        events, more = store.read_stream_and("run-a", count, (0,))
        assert [e.data for e in events] == [{"i": 1}, {"i": 2}] and more == [(2,)]
        reader = store._backend._readers[-1]
        assert reader.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 2
