"""The sealer ``baton serve`` runs: on its timer when the log grew, once more at stop, never fatal."""

from __future__ import annotations

import threading

from api.sealer import Sealer
from eventstore import NewEvent, Seal, open_store


def test_it_seals_when_the_log_grew_and_once_more_at_stop(sqlite_url):
    made: list[Seal] = []
    sealed = threading.Event()

    def on_seal(seal: Seal) -> None:
        made.append(seal)
        sealed.set()

    with open_store(sqlite_url) as store:
        sealer = Sealer(store, 0.05, on_seal)
        assert sealer.seal_now() is None  # an empty log: nothing to seal
        store.append("acct", [NewEvent("Note", {"n": 1})])
        sealer.start()
        assert sealed.wait(10)
        assert sealer.seal_now() is None  # nothing new since: an idle server does not grow its log
        store.append("acct", [NewEvent("Note", {"n": 2})])
        last = sealer.stop()
        assert last is not None and last == made[-1] and last.head == store.head() - 1
        assert all(store.verify(seal=seal) == [] for seal in made)


def test_a_seal_that_cannot_be_made_is_logged_not_raised(sqlite_url, caplog):
    store = open_store(sqlite_url)
    store.append("acct", [NewEvent("Note", {"n": 1})])
    sealer = Sealer(store, 0, lambda seal: None)
    store.close()
    assert sealer.stop() is None
    assert "the log could not be sealed at shutdown" in caplog.text
