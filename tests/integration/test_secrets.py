"""No secret reaches the log: credentials in BATON_OPENAI_BASE_URL, the API key, tokens in an error.

A real process (the Runtime a `baton serve` builds from its settings) talks to
the fake OpenAI server through a URL with credentials in it; the server
answers errors that quote them, and a code step raises with a token in a URL.
Then every event of the store, every durable frame, every report and every
log line is searched for the secrets.
"""

from __future__ import annotations

import logging

import msgspec
import pytest

from api.runtime import Runtime
from api.settings import Settings
from flows import Flow, agent, code
from projections.frames import Framer

PASSWORD = "s3cr3t-pw"
API_KEY = "sk-live-key-9876"
HOOK_TOKEN = "t0k3n-4242"


def upload(ctx: object) -> str:
    """A code step whose failure message carries a token and a password in URLs."""
    raise RuntimeError(f"POST https://hook.example/notify?token={HOOK_TOKEN} failed; "
                       f"retry via https://bot:{PASSWORD}@hook.example/notify")


LEAKY = Flow("leaky", category="Analysis", steps=[
    agent("ask", persona="investigator", prompt="Look at $input.question"),
    code("upload", fn=upload),
])


def secrets_seen(text: str) -> list[str]:
    return [s for s in (PASSWORD, API_KEY, HOOK_TOKEN) if s in text]


@pytest.mark.parametrize("credentials", ["in the URL", "as the API key"])
@pytest.mark.parametrize("model", ["echo-auth", "boom", "missing-model"])
def test_no_secret_reaches_an_event_a_frame_a_report_or_a_log_line(sqlite_url, server, caplog, credentials, model):
    base_url = server.base_url
    if credentials == "in the URL":
        base_url = base_url.replace("http://", f"http://user:{PASSWORD}@")
    settings = Settings(db=sqlite_url, agent="openai", openai_base_url=base_url, openai_api_key=API_KEY,
                        model=model, openai_read_timeout_s=10)
    caplog.set_level(logging.DEBUG)
    with Runtime(settings) as rt:
        rt.registry.register(LEAKY)
        rt.start()
        assert rt.engine is not None and rt.read_model is not None
        run_id = rt.engine.launch("leaky", "is it safe?").run_id
        state = rt.engine.wait(run_id)
        assert state.status == "failed"
        records = rt.store.read_all(after=0)
        failures = [r.data for r in records if r.type == "StepFailed"]
        assert {f["step_id"] for f in failures} == {"ask", "upload"}  # both failed, with errors recorded
        assert all(f["error"] for f in failures)
        assert rt.read_model.wait_for(rt.store.head(), 10)
        report = rt.read_model.report(run_id) or ""
        framer = Framer()
        frames = [frame for r in records for frame in framer.frames(r)]

    assert report and "## Steps that did not complete" in report
    for r in records:
        assert secrets_seen(msgspec.json.encode(r.data).decode()) == [], (r.type, r.data)
    for frame in frames:
        assert secrets_seen(msgspec.json.encode(frame).decode()) == [], frame
    assert secrets_seen(report) == [], report
    for line in caplog.records:
        assert secrets_seen(line.getMessage()) == [], line.getMessage()
    # What was masked is still said: the server, and what went wrong.
    upload_error = next(f["error"] for f in failures if f["step_id"] == "upload")
    assert "https://hook.example/notify?token=***" in upload_error and "https://bot:***@hook.example" in upload_error
    ask_error = next(f["error"] for f in failures if f["step_id"] == "ask")
    assert f"127.0.0.1:{server.port}/v1" in ask_error
