"""The event store's writer rides out a database outage: appends wait, then commit, once.

Real outages, no mock: the test's own PostgreSQL database refuses
connections (``ALLOW_CONNECTIONS false`` and its sessions ended), or the
SQLite file and its WAL are made immutable (``chattr +i``: root ignores
permission bits, not the immutable flag), so every write fails for real
while reads still work.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from eventstore import NewEvent, StoreClosedError, StoreUnavailableError, open_store
from tests.pg import allow_connections, refuse_connections


def _chattr(flag: str, *paths: Path) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)


def immutable_supported(directory: Path) -> str | None:
    """None when ``chattr +i`` works in ``directory``; else why not."""
    if shutil.which("chattr") is None:
        return "no chattr on this machine"
    probe = directory / "chattr-probe"
    probe.write_text("x")
    try:
        _chattr("+i", probe)
        _chattr("-i", probe)
        return None
    except subprocess.CalledProcessError as exc:
        return f"chattr +i is refused here: {exc.stderr.decode(errors='replace').strip()}"
    finally:
        probe.unlink(missing_ok=True)


@contextlib.contextmanager
def sqlite_read_only(url: str) -> Iterator[Callable[[], None]]:
    """Make the SQLite file and its WAL immutable; yields a function that ends it early (else at exit).

    The shared-memory file stays writable: SQLite maps it, and a write to an
    immutable mapping kills the process (SIGBUS), which is not the fault under test.
    """
    path = Path(make_url(url).database or "")
    files = [path, path.with_name(path.name + "-wal")]
    why = immutable_supported(path.parent)
    if why is not None:
        pytest.skip(f"SQLITE READ-ONLY TESTS SKIPPED: {why}")
    _chattr("+i", *files)
    ended = False

    def end() -> None:
        nonlocal ended
        if not ended:
            ended = True
            _chattr("-i", *files)

    try:
        yield end
    finally:
        end()


@contextlib.contextmanager
def pg_refusing(url: str) -> Iterator[Callable[[], None]]:
    """The test's own PostgreSQL database refuses connections; yields a function that ends it early."""
    name = make_url(url).database or ""
    refuse_connections(name)
    ended = False

    def end() -> None:
        nonlocal ended
        if not ended:
            ended = True
            allow_connections(name)

    try:
        yield end
    finally:
        end()


OUTAGES = {"postgresql": pg_refusing, "sqlite": sqlite_read_only}


def outage_of(store_url: str):
    return OUTAGES["sqlite" if store_url.startswith("sqlite") else "postgresql"](store_url)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


def test_an_append_waits_out_an_outage_then_commits_once(store_url):
    with open_store(store_url, max_backoff_s=0.5) as store:
        store.append("s-1", [NewEvent("Before", {})], 0)
        outcome: dict[str, object] = {}
        with outage_of(store_url) as end:
            appender = threading.Thread(target=lambda: outcome.update(
                recorded=store.append("s-1", [NewEvent("During", {"n": 1})], 1)))
            appender.start()
            wait_until(lambda: store.outage() is not None, 10, "the store reports the outage")
            time.sleep(1.0)  # an outage of a few tries: the append is still waiting, not failed
            assert appender.is_alive() and "recorded" not in outcome
            end()
            appender.join(15)
        assert not appender.is_alive() and "recorded" in outcome
        assert [r.type for r in store.read_stream("s-1")] == ["Before", "During"]
        wait_until(lambda: store.outage() is None, 5, "the outage is over once an append commits")
        assert store.verify() == []


def test_an_append_with_a_timeout_gives_up_during_an_outage_and_is_not_recorded(store_url):
    with open_store(store_url, max_backoff_s=0.5) as store:
        store.append("s-2", [NewEvent("Before", {})], 0)
        with outage_of(store_url):
            began = time.monotonic()
            with pytest.raises(StoreUnavailableError, match="not committed within 1 s"):
                store.append("s-2", [NewEvent("During", {})], 1, timeout=1.0)
            assert time.monotonic() - began < 3
        store.append("s-2", [NewEvent("After", {})], 1)  # expected version 1: "During" never landed
        assert [r.type for r in store.read_stream("s-2")] == ["Before", "After"]


def test_closing_the_store_during_an_outage_returns_at_once(store_url):
    store = open_store(store_url, max_backoff_s=0.5)
    store.append("s-3", [NewEvent("Before", {})], 0)
    errors: list[BaseException] = []

    def append() -> None:
        try:
            store.append("s-3", [NewEvent("During", {})], 1)
        except BaseException as exc:
            errors.append(exc)

    with outage_of(store_url):
        appender = threading.Thread(target=append)
        appender.start()
        wait_until(lambda: store.outage() is not None, 10, "the store reports the outage")
        began = time.monotonic()
        store.close()
        took = time.monotonic() - began
        appender.join(5)
    assert took < 3, f"close took {took:.1f} s"
    assert len(errors) == 1 and isinstance(errors[0], StoreClosedError)
