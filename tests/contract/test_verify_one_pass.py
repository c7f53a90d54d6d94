"""``baton replay --verify`` checks the log in the same read as its fold (``eventstore.logcheck``): it must
find exactly what ``verify()`` finds, same words, same order. Every tamper test of the store's contract
runs again here, each ``verify()`` of the whole log compared with the one-pass check on the same log."""

from __future__ import annotations

from typing import Any

import pytest
from eventstore_testkit import store  # noqa: F401 - a fixture
import test_store_contract as contract
from test_store_contract import test_sqlite_verify_sees_a_removed_stream_that_no_chain_can
from test_store_integrity import (
    TestEveryColumnIsChained,
    TestIncrementalSeal,
    TestKeyedChain,
    TestSeal,
)

from eventstore import Seal, SqlEventStore
from eventstore.logcheck import LogCheck, log_pages, stream_pages

__all__ = [
    "TestEveryColumnIsChained", "TestIncrementalSeal", "TestKeyedChain", "TestSeal",
    "test_sqlite_verify_sees_a_removed_stream_that_no_chain_can",
]


class TestContractVerify:
    """The verify tests of the store's contract (the others read no chain)."""

    test_verify_names_edited_removed_and_reordered_events = (
        contract.TestEventStoreContract.test_verify_names_edited_removed_and_reordered_events)
    test_an_edited_hash_breaks_the_chain_after_it = (
        contract.TestEventStoreContract.test_an_edited_hash_breaks_the_chain_after_it)


def one_pass(store: SqlEventStore, seal: Seal | None = None, page: int = 2) -> list[str]:
    """The one-pass check of the whole log (pages of 2 rows: a page boundary inside every stream)."""
    check = LogCheck.for_store(store, seal)
    for rows in log_pages(store, page):
        check.feed(rows)
    return check.finish(lambda stream_id: stream_pages(store, stream_id))


@pytest.fixture(autouse=True)
def compared(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Every verify() of the whole log in these tests also runs the one pass, which must agree."""
    original = SqlEventStore.verify
    compared: list[list[str]] = []

    def verify(self: SqlEventStore, stream_id: str | None = None, *, seal: Seal | None = None) -> list[str]:
        found = original(self, stream_id, seal=seal)
        if stream_id is None:
            assert one_pass(self, seal) == found
            compared.append(found)
        return found

    monkeypatch.setattr(SqlEventStore, "verify", verify)
    yield compared


def test_the_comparison_runs_and_sees_problems(store: SqlEventStore, compared: list[list[str]]) -> None:
    """The fixture is not idle: a tampered log goes through it, problems and all."""
    from eventstore_testkit import tamper
    from test_store_integrity import notes

    recorded = store.append("acct-1", notes(1, 2, 3), expected_version=0)
    tamper(store, f"UPDATE events SET data = '{{\"n\":7}}' WHERE position = {recorded[1].position}")
    assert store.verify() and compared and compared[-1]


def test_a_read_stopped_early_leaves_no_reader_and_no_connection_behind(store: SqlEventStore) -> None:
    """The log read a page ahead (PostgreSQL) or as it goes (SQLite): a caller that stops after one
    page (an error in the fold, Ctrl-C) gets the thread ended and the connection back in the pool."""
    import threading

    from test_store_integrity import notes

    for n in range(5):
        store.append(f"acct-{n}", notes(1, 2, 3), expected_version=0)
    checked_out = store.database.pool.checkedout()  # type: ignore[attr-defined]
    pages = log_pages(store, 2)
    assert [row[0] for row in next(pages)] == [1, 2]
    pages.close()
    assert not any(t.name == "baton-log-read-ahead" for t in threading.enumerate())
    assert store.database.pool.checkedout() == checked_out  # type: ignore[attr-defined]
    assert sum(len(rows) for rows in log_pages(store, 2)) == 15  # and a new read reads it all
