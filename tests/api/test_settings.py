"""Settings: the environment, then the flags of ``baton serve``; and the store URL as safe to print."""

from __future__ import annotations

import os

from api.settings import Settings, from_env, safe_url, scrub


def test_safe_url_hides_the_password_and_scrub_removes_it_from_messages():
    url = "postgresql+psycopg://baton:s3cret@db:5432/baton"
    assert safe_url(url) == "postgresql+psycopg://baton:***@db:5432/baton"
    assert safe_url("sqlite:///baton.db") == "sqlite:///baton.db"
    assert safe_url("not a url") == "<unparsable database URL>"
    message = "connection to db failed:\n  password s3cret was refused"
    assert scrub(message, url) == "connection to db failed: password *** was refused"
    assert scrub("no URL here", "not a url") == "no URL here"


def test_node_comes_from_baton_node_and_reaches_the_engine_only_when_set():
    assert from_env({"BATON_NODE": "api-1"}).node == "api-1"
    assert Settings(node="api-1").engine_config().node == "api-1"
    default = Settings().engine_config().node  # EngineConfig's own: host:pid
    assert default and default.endswith(f":{os.getpid()}")
