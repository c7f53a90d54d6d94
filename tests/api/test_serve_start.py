"""``baton serve`` that cannot start: one ``baton: error:`` line, the CLI's exit code, and nothing left running.

In-process: the start fails before any port is opened, so no server is needed.
"""

from __future__ import annotations

import threading
import time

import pytest

from actors.agents.base import BackendConfigError
from actors.engine import Engine
from api.http.app import serve
from api.runtime import Runtime, StartError
from api.settings import Settings
from eventstore import StoreClosedError

BAD_BACKEND = {"agent": "cli", "cli_command": "qwen -p {prompt}"}  # refused: no --approval-mode plan


def refuse_to_start(self: Engine) -> Engine:
    raise RuntimeError(f"another live process is already node {self.config.node!r}")


def threads_settle_to(before: set[threading.Thread], timeout: float = 10.0) -> set[threading.Thread]:
    """Threads started since ``before`` that are still alive after ``timeout`` (empty: none leaked)."""
    deadline = time.monotonic() + timeout
    while True:
        extra = {t for t in threading.enumerate() if t not in before and t.is_alive()}
        if not extra or time.monotonic() > deadline:
            return extra
        next(iter(extra)).join(0.1)


@pytest.mark.parametrize("case", ["backend", "engine"])
def test_a_failed_start_stops_what_started_and_closes_the_store(sqlite_url, monkeypatch, case):
    before = set(threading.enumerate())
    if case == "backend":
        settings, expected = Settings(db=sqlite_url, **BAD_BACKEND), BackendConfigError
    else:
        monkeypatch.setattr(Engine, "start", refuse_to_start)
        settings, expected = Settings(db=sqlite_url, node="api-1"), StartError
    rt = Runtime(settings)
    with pytest.raises(expected):
        rt.start()
    assert rt.engine is None and rt.projector is None  # the projector had started: it was stopped
    with pytest.raises(StoreClosedError):
        rt.store.subscribe()
    assert not threads_settle_to(before), "a failed start left threads running"


@pytest.mark.parametrize("case,code,text", [
    ("backend", 2, "--approval-mode plan"),  # the settings are wrong: fix them
    ("engine", 1, "the engine cannot start: another live process is already node 'api-1'"),  # at run time
    ("url", 2, "BATON_DB / --db: "),
])
def test_serve_says_why_in_one_line_and_exits_like_the_cli(sqlite_url, monkeypatch, capsys, case, code, text):
    before = set(threading.enumerate())
    settings = Settings(db=sqlite_url, node="api-1")
    if case == "backend":
        settings = settings.replace(**BAD_BACKEND)
    elif case == "engine":
        monkeypatch.setattr(Engine, "start", refuse_to_start)
    else:
        settings = settings.replace(db="mysql://baton:s3cret@db/baton")
    assert serve(settings) == code
    err = capsys.readouterr().err
    assert err.startswith("baton: error: ") and err.count("\n") == 1 and text in err, err
    assert "s3cret" not in err
    assert not threads_settle_to(before), "a failed start left threads running"


def test_a_port_in_use_is_one_error_line_before_any_banner(sqlite_url, capsys):
    """Before: the ready banner, then uvicorn's own error. Now the port is taken first, or refused."""
    import socket

    before = set(threading.enumerate())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert serve(Settings(db=sqlite_url, host="127.0.0.1", port=port)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"baton: error: cannot listen on 127.0.0.1:{port}: "), err
    assert "in use" in err and "serving" not in err
    assert not threads_settle_to(before), "a failed start left threads running"


def test_the_openai_backend_without_a_model_refuses_to_start(sqlite_url, capsys):
    assert serve(Settings(db=sqlite_url, agent="openai")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("baton: error: ") and "BATON_MODEL" in err, err


def test_the_banner_names_the_backend_and_its_model():
    from api.http.app import backend_line

    line = backend_line(Settings(agent="openai", model="qwen2.5-coder:7b", openai_base_url="http://gpu:8000/v1"))
    assert "openai" in line and "qwen2.5-coder:7b" in line and "http://gpu:8000/v1" in line
    assert "offline" in backend_line(Settings()) and "no model" in backend_line(Settings())


def test_a_token_file_that_cannot_be_written_stops_the_start_and_leaves_no_token_valid(tmp_path, capsys):
    """The admin token is recorded, then written; if the write fails it is revoked again, so the next start
    (with a path it can write) makes one instead of finding a valid token nobody holds."""
    from api.tokens import TokenBook

    (tmp_path / "a-file").write_text("not a folder")
    db = f"sqlite:///{tmp_path / 'b.db'}"
    before = set(threading.enumerate())
    from tests.api.server import free_port

    assert serve(Settings(db=db, port=free_port(), token_file=str(tmp_path / "a-file" / "admin-token"))) == 1
    err = capsys.readouterr().err
    assert err.startswith("baton: error: cannot write the admin token file: ") and err.count("\n") == 1, err
    assert not threads_settle_to(before), "a failed start left threads running"
    rt = Runtime(Settings(db=db))
    try:
        assert TokenBook(rt.store, time.time).tokens() == []
        assert [e.type for e in rt.store.read_stream("auth")] == ["TokenIssued", "TokenRevoked"]
    finally:
        rt.stop()
