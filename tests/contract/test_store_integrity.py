"""Tamper evidence beyond the payload: every column in the chain, the keyed chain, and the seal.

Each test runs against SQLite and PostgreSQL. The tampering is what someone
with write access to the database would do: triggers out of the way, rows
edited, removed or renumbered, hashes recomputed with the public scheme.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from eventstore_testkit import run_sql, store, tamper  # noqa: F401 - store is a fixture

from eventstore import NewEvent, Seal, open_store
from eventstore.chain import Chain, event_hash

KEY = b"k" * 32


def notes(*values: int, actor: str = "alice") -> list[NewEvent]:
    return [NewEvent("Note", {"n": v}, {"actor": actor, "node": "n1"}) for v in values]


def rows_of(store: Any, stream: str) -> list[Any]:
    with store.database.connect() as conn:
        return list(conn.execute(sa.text(
            "SELECT position, event_id, stream_id, version, type, data, metadata, recorded_at, hash"
            " FROM events WHERE stream_id = :s ORDER BY version"), {"s": stream}))


def rechain(store: Any, stream: str, chain: Chain | None = None) -> list[str]:
    """UPDATE statements that give a stream's rows freshly computed hashes (what a forger does)."""
    chain = chain or Chain()
    previous, out = "", []
    for _, event_id, stream_id, version, type_, data, metadata, recorded_at, _ in rows_of(store, stream):
        previous = chain.hash(previous, event_id, stream_id, version, type_, data, metadata, recorded_at)
        out.append(f"UPDATE events SET hash = '{previous}' WHERE stream_id = '{stream}' AND version = {version}")
    return out


class TestEveryColumnIsChained:
    @pytest.mark.parametrize("column, value", [
        ("metadata", "'{\"actor\":\"mallory\",\"node\":\"n1\"}'"),
        ("recorded_at", "recorded_at - 86400"),
        ("event_id", "'00000000-0000-4000-8000-000000000000'"),
        ("stream_id", "'acct-9', version = 1"),  # moved to a stream of its own
    ])
    def test_an_edit_of_any_column_is_caught(self, store, column, value):
        recorded = store.append("acct-1", notes(1, 2, 3), expected_version=0)
        assert store.verify() == []
        target = recorded[1]
        tamper(store, f"UPDATE events SET {column} = {value} WHERE position = {target.position}")
        problems = "\n".join(store.verify())
        assert f"(position {target.position}) does not match its hash" in problems, problems

    def test_events_of_the_first_scheme_still_verify_and_new_ones_follow_on(self, store_url):
        with open_store(store_url) as store:
            old = store.append("acct-1", notes(1, 2), expected_version=0)
            previous, legacy = "", []
            for rec in old:  # as the first scheme wrote them: type and data only
                previous = event_hash(previous, rec.type, f'{{"n":{rec.data["n"]}}}')
                legacy.append(f"UPDATE events SET hash = '{previous}' WHERE position = {rec.position}")
            tamper(store, *legacy)
        with open_store(store_url) as store:
            assert store.verify() == []
            new = store.append("acct-1", notes(3), expected_version=2)[0]
            assert new.hash.startswith("2:")
            assert store.verify() == []
            tamper(store, f"UPDATE events SET data = '{{\"n\":7}}' WHERE position = {old[0].position}")
            assert len(store.verify()) == 1  # an old event's payload is still covered

    def test_a_stream_rewritten_with_recomputed_hashes_passes_the_chain_alone(self, store):
        """Why the seal and the keyed chain exist: the public scheme can be recomputed."""
        recorded = store.append("acct-1", notes(1, 2, 3), expected_version=0)
        tamper(store, f"UPDATE events SET data = '{{\"n\":1000}}' WHERE position = {recorded[1].position}")
        tamper(store, *rechain(store, "acct-1"))
        assert store.verify() == []


class TestKeyedChain:
    def test_keyed_hashes_verify_only_with_the_key(self, store_url):
        with open_store(store_url, chain_key=KEY) as store:
            recorded = store.append("acct-1", notes(1, 2), expected_version=0)
            assert all(rec.hash.startswith("3:") for rec in recorded)
            assert store.verify() == []
        with open_store(store_url) as store:
            assert store.verify() == [("unverified: 2 event(s) carry a keyed hash (version 3); checking them "
                                       "needs the chain key (BATON_CHAIN_KEY_FILE)")]
        with open_store(store_url, chain_key=b"another key") as store:
            assert len(store.verify()) == 2

    def test_a_forger_without_the_key_is_caught(self, store_url):
        with open_store(store_url, chain_key=KEY) as store:
            store.append("acct-0", notes(1), expected_version=0)
            recorded = store.append("acct-1", notes(1, 2, 3), expected_version=0)
            tamper(store, f"UPDATE events SET data = '{{\"n\":1000}}' WHERE position = {recorded[1].position}")
            tamper(store, *rechain(store, "acct-1"))  # the public scheme: all a forger can compute
            problems = "\n".join(store.verify())
            assert problems.count("downgraded: stream 'acct-1'") == 3, problems
            tamper(store, *rechain(store, "acct-1", Chain(b"a guess")))
            problems = "\n".join(store.verify())
            assert problems.count("does not match its hash") == 3, problems

    def test_an_empty_key_is_refused(self, sqlite_url):
        with pytest.raises(ValueError, match="empty"):
            open_store(sqlite_url, chain_key=b"")


class TestSeal:
    def log_with_a_seal(self, store: Any) -> tuple[Seal, dict[str, list[Any]]]:
        streams = {s: store.append(s, notes(1, 2, 3), expected_version=0) for s in ("acct-1", "acct-2", "acct-3")}
        seal = store.seal()
        assert seal.head == streams["acct-3"][-1].position and seal.events == 9
        assert Seal.parse(str(seal)) == seal
        assert store.verify(seal=seal) == []
        return seal, streams

    def test_a_log_grown_after_its_seal_still_verifies(self, store):
        seal, _ = self.log_with_a_seal(store)
        store.append("acct-4", notes(1))
        second = store.seal()
        assert second.events == 11  # the first seal's event is sealed too
        assert store.verify(seal=seal) == [] and store.verify(seal=second) == []

    def test_the_seal_event_removed_is_caught(self, store):
        seal, _ = self.log_with_a_seal(store)
        tamper(store, "DELETE FROM events WHERE stream_id = 'seal'")
        assert store.verify() == []  # nothing inside the database shows it...
        problems = "\n".join(store.verify(seal=seal))  # ...the seal kept outside does
        assert "the seal event of the seal given" in problems, problems

    def test_the_last_event_before_the_seal_removed_is_caught(self, store):
        seal, streams = self.log_with_a_seal(store)
        tamper(store, f"DELETE FROM events WHERE position = {streams['acct-3'][-1].position}")
        problems = "\n".join(store.verify(seal=seal))
        assert "cut: the seal given covers the log up to position" in problems, problems
        assert "cut: the seal recorded at position" in problems, problems

    def test_a_whole_stream_removed_is_caught(self, store):
        seal, _ = self.log_with_a_seal(store)
        tamper(store, "DELETE FROM events WHERE stream_id = 'acct-2'")
        assert "does not match the seal given (9 events then, 6 now)" in "\n".join(store.verify(seal=seal))

    def test_every_event_removed_is_caught(self, store):
        seal, _ = self.log_with_a_seal(store)
        if store.dialect == "postgresql":  # as the table's owner would: the TRUNCATE trigger out of the way
            run_sql(store, "ALTER TABLE events DISABLE TRIGGER USER", "TRUNCATE events",
                    "ALTER TABLE events ENABLE TRIGGER USER")
        else:
            tamper(store, "DELETE FROM events")
        assert store.head() == 0
        problems = store.verify(seal=seal)
        assert problems == [
            (f"cut: the seal given covers the log up to position {seal.head} (9 events then, 0 now), but the last "
             f"event up to there is at position 0: events were removed from the end of what it covers"),
            (f"cut: the seal event of the seal given (position {seal.head}, 9 events) is not in the log: it, and "
             f"maybe events after it, were removed")]

    def test_a_middle_event_removed_and_the_rest_renumbered_is_caught(self, store):
        seal, streams = self.log_with_a_seal(store)
        gone = streams["acct-2"][1]
        with store.database.connect() as conn:
            after = list(conn.execute(sa.text(
                f"SELECT position, stream_id, version FROM events WHERE position > {gone.position} ORDER BY position")))
        renumber = [f"DELETE FROM events WHERE position = {gone.position}"]
        for position, stream_id, version in after:  # close the hole: positions, and versions in acct-2
            version = version - 1 if stream_id == "acct-2" else version
            renumber.append(f"UPDATE events SET position = {position - 1}, version = {version}"
                            f" WHERE position = {position}")
        tamper(store, *renumber)
        tamper(store, *rechain(store, "acct-2"))
        chain_only = [p for p in store.verify() if not p.startswith(("sealed", "cut"))]
        assert chain_only == []  # the chains and positions alone look intact
        problems = "\n".join(store.verify(seal=seal))
        assert "does not match the seal given" in problems, problems  # the seal event moved under its head

    def test_one_event_rewritten_with_recomputed_hashes_is_caught(self, store):
        seal, streams = self.log_with_a_seal(store)
        tamper(store, f"UPDATE events SET data = '{{\"n\":1000}}' WHERE position = {streams['acct-1'][0].position}")
        tamper(store, *rechain(store, "acct-1"))
        problems = store.verify(seal=seal)
        assert [p for p in problems if "does not match its hash" in p] == []
        assert "does not match the seal given (9 events then, 9 now)" in "\n".join(problems)

    def test_a_keyed_log_rewritten_whole_without_the_key_is_caught_by_its_seal(self, store_url):
        with open_store(store_url, chain_key=KEY) as store:
            recorded = store.append("acct-1", notes(1, 2, 3), expected_version=0)
            seal = store.seal()
            tamper(store, f"UPDATE events SET data = '{{\"n\":1000}}' WHERE position = {recorded[1].position}")
            tamper(store, *rechain(store, "acct-1"))
            assert "does not match the seal recorded" in "\n".join(store.verify())  # a keyed seal: unforgeable
            tamper(store, "DELETE FROM events WHERE stream_id = 'seal'")
            assert store.verify() == []  # every keyed hash is gone: nothing in the database says it was keyed
            assert "does not match the seal given" in "\n".join(store.verify(seal=seal))

    def test_keyed_seals_need_the_key(self, store_url):
        with open_store(store_url, chain_key=KEY) as store:
            store.append("acct-1", notes(1))
            seal = store.seal()
            assert seal.keyed and store.verify(seal=seal) == []
        with open_store(store_url) as store:
            problems = store.verify(seal=seal)
            assert "unverified: 2 keyed seal(s) need the chain key (BATON_CHAIN_KEY_FILE) to be checked" in problems

    def test_a_malformed_seal_is_refused_saying_what_one_looks_like(self):
        with pytest.raises(ValueError, match="baton-seal:HEAD:EVENTS"):
            Seal.parse("baton-seal:12:zz")


class TestIncrementalSeal:
    def test_a_seal_that_goes_on_from_a_digest_equals_one_made_from_scratch(self, store):
        store.append("acct-1", notes(1, 2))
        digest = store.digest_log()
        store.append("acct-2", notes(3))
        first = store.seal(digest)  # reads only acct-2's event
        store.append("acct-3", notes(4))
        second = store.seal(digest)  # and now only the first seal's event and acct-3's
        assert store.verify(seal=first) == [] and store.verify(seal=second) == []
        assert (second.head, second.events) == (store.head() - 1, 5)

    def test_a_row_changed_behind_a_digest_fails_the_next_seal_instead_of_being_laundered(self, store):
        recorded = store.append("acct-1", notes(1, 2))
        digest = store.digest_log()
        tamper(store, f"UPDATE events SET data = '{{\"n\":1000}}' WHERE position = {recorded[0].position}")
        tamper(store, *rechain(store, "acct-1"))
        seal = store.seal(digest)
        assert "does not match the seal given" in "\n".join(store.verify(seal=seal))
