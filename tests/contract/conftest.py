"""Fixtures of the event-store contract tests (the URLs come from tests/conftest.py)."""

from __future__ import annotations

import pytest

from eventstore import open_store


@pytest.fixture
def store(store_url):
    """An open store on this test's own database, closed afterwards."""
    with open_store(store_url) as s:
        yield s
