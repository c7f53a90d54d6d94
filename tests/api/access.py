"""Tokens of each role for tests that build the app in-process (Starlette's TestClient).

    tokens = issue_tokens(runtime.store)                 # role -> token, made in the store
    with authed_client(create_app(runtime), tokens["operator"]) as client:
        client.post("/api/runs", json=...)

Access stays on, as in production; each test acts with the role it needs.
The clients talk to ``http://localhost`` (a Host the server answers to).
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from starlette.testclient import TestClient

from api.tokens import TokenBook
from eventstore import EventStore

ROLES = ("viewer", "operator", "approver", "admin")
BASE_URL = "http://localhost"
_names = itertools.count(1)


def issue_tokens(store: EventStore, prefix: str = "") -> dict[str, str]:
    """One new token per role (named ``<prefix><role>``, or with a counter when no prefix), made in ``store``."""
    book = TokenBook(store, time.time)
    tag = prefix or f"t{next(_names)}-"
    return {role: book.create(f"{tag}{role}", role, by="tests").token for role in ROLES}


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of ``token``."""
    return {"Authorization": f"Bearer {token}"}


def authed_client(app: Any, token: str | None, **kwargs: Any) -> TestClient:
    """A TestClient of ``app`` sending ``token`` on every request (None: no credential)."""
    headers = {**(bearer(token) if token else {}), **kwargs.pop("headers", {})}
    return TestClient(app, base_url=BASE_URL, headers=headers, **kwargs)
