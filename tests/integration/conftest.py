"""Fixtures the integration tests share; a module's own fixture of the same name wins over these.

``store`` is the event store at ``store_url`` (each backend in turn), and
``server`` a :class:`FakeLLMServer` (an OpenAI-compatible server on an
ephemeral port); both are closed after the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from eventstore import SqlStore, open_store
from tests.integration.fake_llm_server import FakeLLMServer


@pytest.fixture
def store(store_url: str) -> Iterator[SqlStore]:
    """Subscriptions re-check the head every 50 ms (the default is 0.5 s) where no wake-up reaches them."""
    s = open_store(store_url, poll_interval=0.05)
    yield s
    s.close()


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv

