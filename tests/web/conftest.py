"""Fixtures of the web console tests: a real server and a real headless Chromium per module.

The browser is Debian's ``chromium`` (``make browser`` installs it), driven by
Playwright through ``executable_path``: Playwright never downloads a browser
here. Screenshots go to ``build/screenshots/`` (or ``$BATON_SCREENSHOTS``),
``<page>-desktop.png`` and ``<page>-mobile.png``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from api.http.sessions import SESSION_COOKIE
from tests.projects import register
from tests.api.server import ApiServer
from tests.web.support import DESKTOP

CHROMIUM = os.environ.get("BATON_CHROMIUM", "/usr/bin/chromium")
# What works in a container as root, with no network beyond loopback.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
TIMEOUT_MS = 20_000


def chromium_path() -> str:
    """The Chromium binary, or a failure saying how to install it (never a silent skip)."""
    found = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if not found:
        pytest.fail("Chromium is not installed: run `make browser` (apt-get install chromium chromium-driver)",
                    pytrace=False)
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """``python -m api.http.app`` on a SQLite file of this module's own; agents paced to stream."""
    db = tmp_path_factory.mktemp("web") / "baton.db"
    with ApiServer(f"sqlite:///{db}", BATON_OFFLINE_DELAY_S="0.4") as running:
        register(running.db_url, db.parent, "paging")  # launches name registered projects (§11)
        yield running


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """As ``server``, with agents that take a minute a step: a run stays running until a test ends it
    (a cancel clicked after the page loaded must not race the run's own end on a loaded machine)."""
    db = tmp_path_factory.mktemp("web-slow") / "baton.db"
    with ApiServer(f"sqlite:///{db}", BATON_OFFLINE_DELAY_S="60") as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module, with a fresh profile."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    profile = tempfile.mkdtemp(prefix="baton-chromium-")
    with sync_playwright() as p:
        # A persistent-context-free launch: Playwright passes its own fresh --user-data-dir per context.
        instance = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS,
                                     env={**os.environ, "HOME": profile})
        try:
            yield instance
        finally:
            instance.close()
            shutil.rmtree(profile, ignore_errors=True)


CONSOLE_ROLE = "approver"  # what the console's person does: launch, approve, reject, cancel


def session_cookie(server: ApiServer, role: str = CONSOLE_ROLE) -> dict[str, Any]:
    """The console's session cookie for a token of ``role``, from a real ``POST /api/login``."""
    r = httpx.post(server.url + "/api/login", json={"token": server.tokens[role]}, timeout=10)
    assert r.status_code == 204, r.text
    return {"name": SESSION_COOKIE, "value": r.cookies[SESSION_COOKIE], "url": server.url, "httpOnly": True,
            "sameSite": "Strict"}


@pytest.fixture
def page(browser: Any, server: ApiServer) -> Iterator[Any]:
    """A fresh context and page, logged in (the session cookie of an approver's token, seeded)."""
    yield from _page(browser, server, logged_in=True)


@pytest.fixture
def slow_page(browser: Any, slow_server: ApiServer) -> Iterator[Any]:
    """As ``page``, logged in to ``slow_server``."""
    yield from _page(browser, slow_server, logged_in=True)


@pytest.fixture
def anonymous_page(browser: Any, server: ApiServer) -> Iterator[Any]:
    """A fresh context and page with no session: the console asks for a token."""
    yield from _page(browser, server, logged_in=False)


def _page(browser: Any, server: ApiServer, *, logged_in: bool) -> Iterator[Any]:
    """A fresh context (cookies, storage) and page at desktop size; clipboard allowed; downloads kept.

    Every request the page makes is recorded in ``page.requests`` (the console must
    never reach past its own origin); script errors fail the test.
    """
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True,
                                  permissions=["clipboard-read", "clipboard-write"])
    context.set_default_timeout(TIMEOUT_MS)
    if logged_in:
        context.add_cookies([session_cookie(server)])
    pg = context.new_page()
    pg.requests = []
    pg.errors = []
    pg.on("request", lambda r: pg.requests.append(r.url))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    try:
        yield pg
        assert not pg.errors, f"script errors in the page: {pg.errors}"
        foreign = [u for u in pg.requests if not u.startswith(server.url) and not u.startswith(("blob:", "data:"))]
        assert not foreign, f"the console reached past its origin: {foreign}"
    finally:
        context.close()


