"""The openai backend against a real streaming HTTP server (no network mocks)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from actors.agents import AgentError, AgentRequest, Cancelled, CancelToken, OpenAIBackend
from tests.integration.fake_llm_server import CONTENT, USAGE, FakeLLMServer


@pytest.fixture
def backend(server: FakeLLMServer) -> Iterator[OpenAIBackend]:
    b = OpenAIBackend(server.base_url, api_key="sk-test", model="qwen-test",
                      read_timeout_s=5.0)
    try:
        yield b
    finally:
        b.close()


def request(model: str = "", prompt: str = "Why is the sky blue?") -> AgentRequest:
    return AgentRequest(run_id="r1", step_id="s1", attempt=1, persona="investigator",
                        system="You are an investigator.", prompt=prompt, model=model)


def test_streams_deltas_in_order_and_returns_text_and_usage(server, backend):
    deltas: list[str] = []
    result = backend.run(request(), deltas.append, CancelToken())

    assert deltas == CONTENT  # role-only, empty and usage chunks give no delta
    assert result.output == "Hello, world!"
    assert result.usage == USAGE
    assert result.model == "qwen-test"
    body = server.requests[-1]
    assert body["model"] == "qwen-test"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [
        {"role": "system", "content": "You are an investigator."},
        {"role": "user", "content": "Why is the sky blue?"},
    ]
    assert server.headers[-1]["authorization"] == "Bearer sk-test"


def test_request_model_overrides_the_default(server, backend):
    result = backend.run(request(model="plain-json"), lambda _: None, CancelToken())
    assert server.requests[-1]["model"] == "plain-json"
    assert result.model == "plain-json"


def test_a_server_that_ignores_stream_answers_in_one_piece(backend):
    deltas: list[str] = []
    result = backend.run(request(model="plain-json"), deltas.append, CancelToken())
    assert deltas == ["whole answer"]
    assert result.output == "whole answer"
    assert result.usage == USAGE


def test_http_500_carries_status_and_body(backend):
    with pytest.raises(AgentError) as err:
        backend.run(request(model="boom"), lambda _: None, CancelToken())
    assert "500" in str(err.value)
    assert "CUDA out of memory" in str(err.value)


def test_unknown_model_404_names_the_model(backend):
    with pytest.raises(AgentError) as err:
        backend.run(request(model="llama-nope"), lambda _: None, CancelToken())
    message = str(err.value)
    assert "'llama-nope'" in message and "404" in message and "BATON_MODEL" in message


def test_malformed_chunk_is_an_error(backend):
    with pytest.raises(AgentError, match="malformed chunk"):
        backend.run(request(model="garbage"), lambda _: None, CancelToken())


def test_error_object_mid_stream_is_an_error(backend):
    with pytest.raises(AgentError, match="context length exceeded"):
        backend.run(request(model="stream-error"), lambda _: None, CancelToken())


def test_a_silent_server_hits_the_idle_timeout(server):
    b = OpenAIBackend(server.base_url, model="hang", read_timeout_s=0.5)
    deltas: list[str] = []
    started = time.monotonic()
    try:
        with pytest.raises(AgentError, match=r"no data from .* for 0.5 s"):
            b.run(request(), deltas.append, CancelToken())
    finally:
        b.close()
    assert deltas == ["thinking"]
    assert time.monotonic() - started < 4


def test_cancel_mid_stream_ends_run_at_once_and_closes_the_connection(server):
    b = OpenAIBackend(server.base_url, model="hang", read_timeout_s=30)
    token = CancelToken()
    first_delta = threading.Event()

    def cancel_after_first_delta() -> None:
        if first_delta.wait(5):
            token.cancel()

    canceller = threading.Thread(target=cancel_after_first_delta)
    canceller.start()
    started = time.monotonic()
    try:
        with pytest.raises(Cancelled):
            b.run(request(), lambda _: first_delta.set(), token)
    finally:
        b.close()
        canceller.join(5)
    assert time.monotonic() - started < 3  # not the 30 s read timeout
    assert server.disconnected.wait(5), "the server never saw the client leave"


def test_cancel_before_the_call_sends_nothing(server, backend):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        backend.run(request(), lambda _: None, token)
    assert server.requests == []


def test_connection_refused_says_how_to_fix_it():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b = OpenAIBackend(f"http://127.0.0.1:{port}/v1", model="m")
    try:
        with pytest.raises(AgentError) as err:
            b.run(request(), lambda _: None, CancelToken())
    finally:
        b.close()
    message = str(err.value)
    assert f"cannot reach the openai backend at http://127.0.0.1:{port}/v1" in message
    assert "BATON_OPENAI_BASE_URL" in message


def test_no_model_anywhere_is_refused_before_calling(server):
    b = OpenAIBackend(server.base_url)
    try:
        with pytest.raises(AgentError, match="BATON_MODEL"):
            b.run(request(), lambda _: None, CancelToken())
    finally:
        b.close()
    assert server.requests == []


def test_one_instance_serves_concurrent_steps(server, backend):
    results: list[str] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.append(backend.run(request(), lambda _: None, CancelToken()).output)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []
    assert results == ["Hello, world!"] * 4
