"""Recorded ids met on the way in: retries and clashes of every size, alone and inside a group.

The SQLite writer looks an append's ids up only when its insert meets one of them (or its
expected version is not the stream's, or it is too large for one INSERT); PostgreSQL inserts
first too. Either way the outcome is the contract's: a retry returns the recorded events, a
clash refuses the whole append, and the other appends of the group commit.
"""

from __future__ import annotations

import threading

import pytest

from eventstore import ConcurrencyError, EventIdConflictError, NewEvent, open_store

from eventstore_testkit import Thread, store, wait_for  # noqa: F401 - store is a fixture


def notes(*values: int) -> list[NewEvent]:
    return [NewEvent("Note", {"n": v}) for v in values]


@pytest.mark.parametrize("size", [1, 2, 100, 101, 250])
def test_a_retry_of_any_size_returns_the_recorded_events(store, size):
    events = notes(*range(size))
    first = store.append("run-a", events, expected_version=0)
    head = store.head()
    assert store.append("run-a", events) == first  # no expected version: the insert meets the ids
    assert store.append("run-a", events, expected_version=0) == first  # a stale version: looked up first
    assert store.append("run-a", events, expected_version=size) == first  # the stream's version
    assert store.head() == head
    assert store.read_stream("run-a") == first
    assert store.verify() == []


@pytest.mark.parametrize("size", [2, 150])
def test_a_clash_of_any_size_appends_nothing(store, size):
    events = notes(*range(size))
    store.append("run-a", events, expected_version=0)
    head = store.head()
    fresh = notes(*range(size - 1))
    with pytest.raises(EventIdConflictError, match=f"1 of its {size} event id"):
        store.append("run-a", [*fresh, events[-1]], expected_version=size)  # the last id recorded
    with pytest.raises(EventIdConflictError, match="another stream"):
        store.append("run-b", events)
    with pytest.raises(EventIdConflictError, match="another stream"):
        store.append("run-b", events, expected_version=0)
    assert store.head() == head
    assert store.read_stream("run-b") == []
    store.append("run-a", fresh, expected_version=size)  # the refused ids were not taken
    assert store.verify() == []


def test_a_retry_and_a_clash_inside_a_group_leave_the_others_committed(store_url):
    # Hold the writer inside its first transaction so the next appends queue up and are
    # committed together: a retry and a clash between two new appends.
    armed, release, groups = threading.Event(), threading.Event(), []

    def before_commit(group):
        if armed.is_set():
            groups.append(len(group))
            if len(groups) == 1:
                release.wait(10)

    with open_store(store_url, _before_commit=before_commit) as store:
        recorded = notes(1, 2)
        first = store.append("run-r", recorded, expected_version=0)
        armed.set()
        holder = Thread(lambda: store.append("run-first", notes(0), 0))
        holder.start()
        wait_for(lambda: groups, what="the writer to hold its first group")
        appends = [
            Thread(lambda: store.append("run-x", notes(3, 4), 0)),
            Thread(lambda: store.append("run-r", recorded)),  # a retry
            Thread(lambda: store.append("run-c", [NewEvent("Note", {}), recorded[0]])),  # a clash
            Thread(lambda: store.append("run-y", notes(5), 0)),
        ]
        for thread in appends:
            thread.start()
            wait_for(lambda n=appends.index(thread) + 1: len(store._writer._queue) == n, what="queued in order")
        release.set()
        assert holder.value()[0].version == 1
        x, retry, _, y = appends
        assert [e.version for e in x.value()] == [1, 2]
        assert retry.value() == first
        with pytest.raises(EventIdConflictError):
            appends[2].value()
        assert [e.version for e in y.value()] == [1]
        assert store.read_stream("run-c") == []
        assert store.verify() == []
        if store.dialect == "sqlite":  # (PostgreSQL runs the group again without the two)
            assert groups[1] == 4  # committed as one group
            assert [e.position for e in y.value()] == [x.value()[-1].position + 1]  # no hole left behind


def test_two_writers_on_one_log_take_turns_on_a_stream(store_url):
    # Each writer keeps the heads it left (SQLite; PostgreSQL too): another's appends move them.
    with open_store(store_url) as a, open_store(store_url) as b:
        for version in range(6):
            (a, b)[version % 2].append("run-t", notes(version), expected_version=version)
        with pytest.raises(ConcurrencyError):
            a.append("run-t", notes(9), expected_version=5)
        b.append("run-t", notes(7))
        a.append("run-t", notes(8))
        assert [e.version for e in a.read_stream("run-t")] == list(range(1, 9))
        assert a.verify() == []


def test_a_commit_rolled_back_leaves_no_head_behind(store_url):
    armed = threading.Event()

    def before_commit(group):
        if armed.is_set():
            armed.clear()
            raise RuntimeError("the commit fails once")

    with open_store(store_url, _before_commit=before_commit) as store:
        store.append("run-a", notes(1), expected_version=0)
        armed.set()
        assert [e.version for e in store.append("run-a", notes(2), expected_version=1)] == [2]  # tried again
        assert [e.version for e in store.append("run-a", notes(3), expected_version=2)] == [3]
        assert [e.version for e in store.read_stream("run-a")] == [1, 2, 3]
        assert store.verify() == []
