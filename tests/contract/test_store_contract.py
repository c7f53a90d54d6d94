"""The event store contract: appends, reads, concurrency, idempotency, integrity.

Every test of ``TestEventStoreContract`` runs unchanged against SQLite and
PostgreSQL (the ``store_url`` fixture); only raw-SQL helpers know the backend.
"""

from __future__ import annotations

import threading

import msgspec
import pytest
import sqlalchemy as sa

from eventstore import (
    ConcurrencyError,
    CorruptEventError,
    EventIdConflictError,
    NewEvent,
    RecordedEvent,
    SqlStore,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
    open_store,
)
from eventstore.chain import Chain
from eventstore.leases import Leases

from eventstore_testkit import (  # noqa: F401 - store is a fixture
    Thread,
    insert_raw_row,
    run_sql,
    store,
    tamper,
    wait_for,
)


def notes(*values: int) -> list[NewEvent]:
    return [NewEvent("Note", {"n": v}) for v in values]


class Payment(msgspec.Struct, frozen=True):
    amount: int
    currency: str = "EUR"


class TestEventStoreContract:
    """What every backend must do, checked the same way on each."""

    def test_empty_store(self, store):
        assert store.head() == 0
        assert list(store.read_all()) == []
        assert store.read_stream("nothing-here") == []
        assert store.verify() == []
        assert store.dialect in ("sqlite", "postgresql")

    def test_it_shares_its_database_through_the_sql_store_seam(self, store):
        """Leases and the read side reach the store's database as ``SqlStore.database``, beside the log."""
        assert isinstance(store, SqlStore)
        store.append("run-a", notes(1, 2), expected_version=0)
        assert Leases(store.database).acquire("seam", "me") is None
        with store.database.connect() as conn:  # the log and the leases: one database's tables
            row = conn.execute(sa.text(
                "SELECT (SELECT count(*) FROM events), (SELECT owner FROM leases WHERE name = 'seam')")).one()
        assert tuple(row) == (2, "me")
        assert not isinstance(object(), SqlStore)
        # read through the store's own connections (the engine's way), the leases say the same
        quick = Leases(store.database, read=store.read_sql)
        assert quick.held() == Leases(store.database).held() == {"seam": "me"}
        assert quick.owner_of("seam") == "me" and quick.owner_of("nobody") == ""
        quick.release("seam", "me")
        assert quick.held() == {} and quick.owner_of("seam") == ""

    def test_append_returns_recorded_events(self, store):
        recorded = store.append("run-a", [NewEvent("Note", {"k": 1}, {"actor": "me"}),
                                          NewEvent("Paid", Payment(5))], expected_version=0)
        first, second = recorded
        assert isinstance(first, RecordedEvent)
        assert (first.stream_id, first.version, first.type) == ("run-a", 1, "Note")
        assert first.data == {"k": 1} and first.metadata == {"actor": "me"}
        assert second.data == {"amount": 5, "currency": "EUR"}  # a Struct is stored as JSON
        assert second.version == 2 and second.position > first.position
        assert isinstance(first.recorded_at, float) and first.recorded_at > 1e9
        chain = Chain()
        assert first.hash == chain.hash("", first.id, "run-a", 1, "Note", '{"k":1}', '{"actor":"me"}',
                                        first.recorded_at)
        assert second.hash == chain.hash(first.hash, second.id, "run-a", 2, "Paid",
                                         '{"amount":5,"currency":"EUR"}', "{}", second.recorded_at)
        assert store.head() == second.position

    def test_new_event_ids_are_uuids_that_begin_with_the_time_they_were_made(self, store):
        """Version 7 (the milliseconds first): a commit's ids go to the end of the event-id index, not anywhere."""
        import time
        import uuid

        from eventstore.store import new_event_id

        before = time.time_ns() // 1_000_000
        made = [uuid.UUID(new_event_id()) for _ in range(100)]
        after = time.time_ns() // 1_000_000
        assert {u.version for u in made} == {7} and len(set(made)) == 100
        stamps = [u.int >> 80 for u in made]
        assert before <= stamps[0] and stamps == sorted(stamps) and stamps[-1] <= after
        recorded = store.append("run-ids", [NewEvent("Note", {"n": n}) for n in range(3)], expected_version=0)
        assert {uuid.UUID(r.id).version for r in recorded} == {7}

    def test_reads_match_what_append_returned(self, store):
        a = store.append("run-a", notes(1, 2), expected_version=0)
        b = store.append("run-b", notes(3), expected_version=0)
        c = store.append("run-a", notes(4), expected_version=2)
        assert store.read_stream("run-a") == a + c
        assert store.read_stream("run-a", after_version=1) == a[1:] + c
        assert list(store.read_all()) == a + b + c
        assert list(store.read_all(after=a[1].position)) == b + c
        assert list(store.read_all(after=0, limit=2)) == a
        assert list(store.read_all(after=c[0].position)) == []

    def test_several_streams_read_at_once_are_each_read_alone(self, store, monkeypatch):
        """``read_streams`` (a recovery's read of every unfinished run) gives each stream as
        ``read_stream`` does, leaves out streams with no event, and reads in chunks of ``_IN_CHUNK``."""
        from eventstore import sql

        a = store.append("run-a", notes(1, 2), expected_version=0)
        b = store.append("run-b", notes(3), expected_version=0)
        a += store.append("run-a", notes(4), expected_version=2)
        monkeypatch.setattr(sql, "_IN_CHUNK", 2)
        found = store.read_streams(["run-b", "nothing", "run-a", "run-b"])
        assert found == {"run-a": a, "run-b": b}
        assert found["run-a"] == store.read_stream("run-a")
        assert store.read_streams([]) == {}
        store.append("run-a", notes(5), expected_version=3)  # the head it saw lets the writer append on

    def test_read_all_pages_through_many_events(self, store_url):
        with open_store(store_url, page_size=7) as store:
            recorded = store.append("run-big", notes(*range(30)), expected_version=0)
            assert list(store.read_all()) == recorded
            assert list(store.read_all(after=recorded[9].position, limit=11)) == recorded[10:21]

    def test_read_all_can_keep_only_some_types(self, store_url):
        with open_store(store_url, page_size=3) as store:
            mixed = [NewEvent("Note" if i % 3 else "Mark", {"i": i}) for i in range(20)]
            recorded = store.append("run-mixed", mixed, expected_version=0)
            marks = [r for r in recorded if r.type == "Mark"]
            assert list(store.read_all(types=["Mark"])) == marks
            assert list(store.read_all(after=marks[2].position, limit=2, types=("Mark",))) == marks[3:5]
            assert list(store.read_all(types=["Mark", "Note"])) == recorded
            assert list(store.read_all(types=[])) == []

    def test_expected_version_none_skips_the_check(self, store):
        store.append("run-a", notes(1))
        assert store.append("run-a", notes(2))[0].version == 2

    def test_concurrency_error_appends_nothing(self, store):
        store.append("run-a", notes(1, 2), expected_version=0)
        head = store.head()
        with pytest.raises(ConcurrencyError) as caught:
            store.append("run-a", notes(3, 4), expected_version=1)
        assert (caught.value.stream_id, caught.value.expected, caught.value.actual) == ("run-a", 1, 2)
        with pytest.raises(ConcurrencyError):
            store.append("run-new", notes(5), expected_version=3)
        assert [e.version for e in store.read_stream("run-a")] == [1, 2]
        assert store.read_stream("run-new") == []
        assert store.head() == head

    def test_idempotent_retry_appends_nothing_new(self, store_url, store):
        events = notes(1, 2)
        first = store.append("run-a", events, expected_version=0)
        head = store.head()
        # The same events again, even with the now stale expected version, from
        # this store and from another instance (another process would do this).
        assert store.append("run-a", events, expected_version=0) == first
        with open_store(store_url) as other:
            assert other.append("run-a", events, expected_version=0) == first
            assert other.append("run-a", events) == first
        assert store.head() == head
        assert store.read_stream("run-a") == first

    def test_partial_id_overlap_is_refused(self, store):
        events = notes(1, 2)
        store.append("run-a", events, expected_version=0)
        head = store.head()
        with pytest.raises(EventIdConflictError, match="1 of its 2 event id"):
            store.append("run-a", [events[0], NewEvent("Note", {"n": 9})], expected_version=2)
        with pytest.raises(EventIdConflictError, match="another stream"):
            store.append("run-b", events, expected_version=0)
        assert store.head() == head

    def test_bad_input_is_refused_before_the_database(self, store):
        assert store.append("run-a", []) == []
        event = NewEvent("Note", {})
        with pytest.raises(ValueError, match="twice"):
            store.append("run-a", [event, event])
        with pytest.raises(TypeError, match="JSON"):
            store.append("run-a", [NewEvent("Note", {"x": object()})])
        with pytest.raises(ValueError):
            store.append("", notes(1))
        assert store.head() == 0

    def test_expected_version_race_has_one_winner_per_version(self, store_url, store):
        # 8 threads on two store instances (two writers, as two processes
        # would have) race for each version of one stream.
        with open_store(store_url) as other:
            stores = [store, other] * 4
            rounds = 15
            winners = []
            barrier = threading.Barrier(len(stores))

            def racer(i: int) -> list[int]:
                won = []
                for version in range(rounds):
                    barrier.wait(10)
                    try:
                        stores[i].append("race", [NewEvent("Won", {"by": i})], version)
                        won.append(version)
                    except ConcurrencyError as exc:
                        assert exc.expected == version
                    barrier.wait(10)
                return won

            threads = [Thread(lambda i=i: racer(i)) for i in range(len(stores))]
            for t in threads:
                t.start()
            for t in threads:
                winners += t.value(60)
        assert sorted(winners) == list(range(rounds))  # exactly one winner per version
        assert [e.version for e in store.read_stream("race")] == list(range(1, rounds + 1))
        assert store.verify() == []

    def test_a_conflict_fails_only_its_own_append_in_a_group(self, store_url):
        # Hold the writer inside its first transaction so the next appends queue
        # up and are committed together, one of them with a wrong version.
        armed, release, groups = threading.Event(), threading.Event(), []

        def before_commit(group):
            if armed.is_set():
                groups.append([p.stream_id for p in group if p.error is None])
                if len(groups) == 1:
                    release.wait(10)

        with open_store(store_url, _before_commit=before_commit) as store:
            store.append("run-c", notes(0), expected_version=0)
            armed.set()
            first = Thread(lambda: store.append("run-first", notes(1), 0))
            first.start()
            wait_for(lambda: groups, what="the writer to hold its first group")
            good = [Thread(lambda s=s: store.append(s, notes(2), 0)) for s in ("run-x", "run-y")]
            bad = Thread(lambda: store.append("run-c", notes(3), expected_version=5))
            for t in [*good, bad]:
                t.start()
            wait_for(lambda: len(store._writer._queue) == 3, what="three queued appends")
            release.set()
            assert first.value()[0].version == 1
            assert [t.value()[0].stream_id for t in good] == ["run-x", "run-y"]
            with pytest.raises(ConcurrencyError):
                bad.value()
            assert sorted(groups[1]) == ["run-x", "run-y"]  # committed as one group
            assert [e.version for e in store.read_stream("run-c")] == [1]

    def test_a_last_event_rendered_from_the_positions_of_the_ones_before_it_commits_with_them(self, store_url):
        # Hold the writer in a commit so that the next appends queue and are committed as a group:
        # the positions an append's last event cites are the ones its other events really got.
        armed, release, groups = threading.Event(), threading.Event(), []

        def before_commit(group):
            if armed.is_set():
                groups.append([p.stream_id for p in group])
                if len(groups) == 1:
                    release.wait(10)

        def citing(stand_in: NewEvent):
            seen: list[list[int]] = []

            def last(positions: list[int]) -> NewEvent:
                seen.append(positions)
                return NewEvent("Summary", {"cites": positions}, {"by": "test"}, id=stand_in.id)

            return last, seen

        with open_store(store_url, _before_commit=before_commit) as store:
            store.append("run-0", notes(0))
            armed.set()
            first = Thread(lambda: store.append("run-first", notes(1), 0))
            first.start()
            wait_for(lambda: groups, what="the writer to hold its first group")
            stand_in = NewEvent("Summary", {})
            batch = [*notes(3, 4), stand_in]
            last, seen = citing(stand_in)
            before = Thread(lambda: store.append("run-b", notes(2), 0))
            summed = Thread(lambda: store.append("run-s", batch, 0, last=last))
            after = Thread(lambda: store.append("run-a", notes(5), 0))
            same = Thread(lambda: store.append("run-s", notes(6), 3))
            stand_in_t = NewEvent("Summary", {})
            last_t, _ = citing(stand_in_t)
            other = Thread(lambda: store.append("run-t", [*notes(9), stand_in_t], 0, last=last_t))
            for n, thread in enumerate([before, summed, after, other, same], 1):
                thread.start()
                wait_for(lambda n=n: len(store._writer._queue) == n, what=f"{n} queued appends")
            release.set()
            first.value(), before.value(), after.value()
            recorded, next_one, t = summed.value(), same.value(), other.value()
            # committed together, but for the stream's next append: its positions follow its versions
            assert groups[1:] == [["run-b", "run-s", "run-a", "run-t"], ["run-s"]]
            assert t[1].data == {"cites": [t[0].position]} and t[1].recorded_at == recorded[0].recorded_at
            assert next_one[0].position > recorded[-1].position
            assert [e.type for e in recorded] == ["Note", "Note", "Summary"]
            assert recorded[2].id == stand_in.id and recorded[2].metadata == {"by": "test"}
            assert recorded[2].data == {"cites": [recorded[0].position, recorded[1].position]} == {"cites": seen[-1]}
            assert recorded[2].recorded_at == recorded[0].recorded_at  # one commit
            assert store.read_stream("run-s")[:3] == recorded
            assert store.verify() == []
            head = store.head()
        with open_store(store_url) as again:  # a retry (another process's) is recognised by its ids
            retried, renders = citing(stand_in)
            assert again.append("run-s", batch, 0, last=retried) == recorded and renders == []
            assert again.head() == head
            with pytest.raises(ValueError, match="at least two"):
                again.append("run-v", [stand_in], last=last)
            # its stand-in's id recorded elsewhere: refused whole, the rows before it too
            taken = NewEvent("Summary", {}, id=recorded[0].id)
            with pytest.raises(EventIdConflictError):
                again.append("run-u", [*notes(7), taken], 0,
                             last=lambda positions: NewEvent("Summary", {"cites": positions}, id=taken.id))
            assert again.read_stream("run-u") == [] and again.head() == head
            plain = again.append("run-u", [*notes(8), stand_in2 := NewEvent("Summary", {})], 0,
                                 last=lambda positions: NewEvent("Summary", {"cites": positions}, id=stand_in2.id))
            assert plain[1].data == {"cites": [plain[0].position]} and again.verify() == []
            wrong = NewEvent("Summary", {})
            with pytest.raises(StoreError, match="rendered an event with id"):
                again.append("run-v", [*notes(6), wrong], 0, last=lambda positions: NewEvent("Summary", {}))
            assert again.read_stream("run-v") == []

    def test_events_table_refuses_update_and_delete(self, store):
        store.append("run-a", notes(1, 2))
        for statement in ("UPDATE events SET data = '{}'", "DELETE FROM events",
                          "UPDATE events SET type = 'X' WHERE version = 2"):
            with pytest.raises(sa.exc.DBAPIError, match="append-only"):
                run_sql(store, statement)
        assert [e.data for e in store.read_stream("run-a")] == [{"n": 1}, {"n": 2}]

    def test_schema_set_up_twice_is_clean(self, store_url, store):
        recorded = store.append("run-a", notes(1))
        opened = [Thread(lambda: open_store(store_url)) for _ in range(3)]  # at once
        for t in opened:
            t.start()
        for t in opened:
            t.value().close()
        with open_store(store_url) as again:
            assert again.read_stream("run-a") == recorded
            with pytest.raises(sa.exc.DBAPIError, match="append-only"):
                run_sql(again, "DELETE FROM events")
            assert again.append("run-a", notes(2), expected_version=1)[0].version == 2

    def test_verify_names_edited_removed_and_reordered_events(self, store):
        for stream in ("acct-1", "acct-2", "acct-3", "acct-4"):
            store.append(stream, notes(1, 2, 3, 4), expected_version=0)
        assert store.verify() == []
        pos = {(e.stream_id, e.version): e.position for e in store.read_all()}
        tamper(
            store,
            "UPDATE events SET data = '{\"n\":1000}' WHERE stream_id = 'acct-1' AND version = 2",
            "UPDATE events SET type = 'Refund' WHERE stream_id = 'acct-4' AND version = 4",
            "DELETE FROM events WHERE stream_id = 'acct-2' AND version = 3",
            # swap the positions of acct-3's versions 1 and 2
            f"UPDATE events SET position = -1 WHERE position = {pos['acct-3', 1]}",
            f"UPDATE events SET position = {pos['acct-3', 1]} WHERE position = {pos['acct-3', 2]}",
            f"UPDATE events SET position = {pos['acct-3', 2]} WHERE position = -1",
        )
        problems = store.verify()
        text = "\n".join(problems)
        hole = [p for p in problems if "are missing" in p]
        assert len(hole) == (1 if store.dialect == "sqlite" else 0), text  # SQLite positions have no holes
        assert len(problems) == 4 + len(hole), text
        assert f"edited: stream 'acct-1' version 2 (position {pos['acct-1', 2]})" in text
        assert f"edited: stream 'acct-4' version 4 (position {pos['acct-4', 4]})" in text
        assert "removed: version 3 of stream 'acct-2'" in text
        assert f"version 4 (position {pos['acct-2', 4]})" in text
        assert (f"reordered: stream 'acct-3' version 2 (position {pos['acct-3', 1]}) was "
                f"recorded before version 1 (position {pos['acct-3', 2]})") in text
        assert store.verify("acct-2") == [p for p in problems if "'acct-2'" in p]
        assert store.verify("acct-5") == []

    def test_an_edited_hash_breaks_the_chain_after_it(self, store):
        recorded = store.append("acct", notes(1, 2, 3), expected_version=0)
        edited = recorded[1]
        forged = Chain().hash(recorded[0].hash, edited.id, "acct", 2, "Note", '{"n":99}', "{}", edited.recorded_at)
        tamper(store, f"UPDATE events SET data = '{{\"n\":99}}', hash = '{forged}'"
                      f" WHERE position = {recorded[1].position}")
        assert store.verify() == [
            f"edited: stream 'acct' version 3 (position {recorded[2].position}) does not "
            "match its hash; its type, data, metadata, recorded_at, event id, stream or "
            "version was changed after it was recorded (or the previous event's hash was)"
        ]

    def test_corrupt_row_raises_naming_its_position(self, store):
        good = store.append("run-a", notes(1))
        bad = insert_raw_row(store, "run-bad", 1, "{not json")
        read = []
        with pytest.raises(CorruptEventError) as caught:
            read.extend(store.read_all())
        assert read == good  # what comes before the bad row is handed out first
        assert caught.value.position == bad
        assert f"position {bad}" in str(caught.value)
        with pytest.raises(CorruptEventError):
            store.read_stream("run-bad")
        with store.subscribe() as sub:
            assert sub.next_event(5) == good[0]
            with pytest.raises(CorruptEventError, match=f"position {bad}"):
                sub.next_event(5)
        not_an_object = insert_raw_row(store, "run-bad-meta", 1, "{}", metadata="[1]")
        with pytest.raises(CorruptEventError) as caught:
            list(store.read_all(after=bad))
        assert caught.value.position == not_an_object

    def test_closed_store_refuses_work(self, store_url):
        store = open_store(store_url)
        store.close()
        store.close()  # twice is fine
        with pytest.raises(StoreClosedError):
            store.append("run-a", notes(1))
        with pytest.raises(StoreClosedError):
            store.subscribe()


def test_unreachable_postgresql_names_the_url_without_its_password():
    url = "postgresql+psycopg://baton:s3cret@127.0.0.1:1/baton"
    with pytest.raises(StoreUnavailableError) as caught:
        open_store(url, connect_timeout=2)
    assert "127.0.0.1:1/baton" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_unreachable_sqlite_file_names_the_url(tmp_path):
    url = f"sqlite:///{tmp_path}/no/such/dir/baton.db"
    with pytest.raises(StoreUnavailableError, match="no/such/dir"):
        open_store(url)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "mysql://x@y/z", "nonsense"])
def test_unsupported_urls_are_refused(url):
    with pytest.raises(ValueError):
        open_store(url)


def test_unknown_options_are_refused(sqlite_url):
    with pytest.raises(TypeError, match="pool_sise"):
        open_store(sqlite_url, pool_sise=3)


def test_sqlite_verify_sees_a_removed_stream_that_no_chain_can(sqlite_url):
    """SQLite positions have no holes, so a hole is a removed event; PostgreSQL's
    sequence leaves holes for refused appends, so this check is SQLite's alone."""
    with open_store(sqlite_url) as store:
        store.append("acct-1", notes(1, 2), expected_version=0)
        gone = store.append("acct-2", notes(3, 4), expected_version=0)
        store.append("acct-3", notes(5), expected_version=0)
        tamper(store, "DELETE FROM events WHERE stream_id = 'acct-2'")
        assert store.verify() == [
            f"positions {gone[0].position}..{gone[1].position} are missing: events were removed from the log"]
