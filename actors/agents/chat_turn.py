"""One streamed chat-completions turn with tools: the reference :data:`TurnFn`.

This is the seam between the tool loop (:mod:`actors.agents.toolloop`) and an
OpenAI-compatible server: POST ``{base_url}/chat/completions`` with
``messages``, ``tools``, ``tool_choice`` and ``stream: true``, read the
server-sent events, feed each chunk to a
:class:`~actors.agents.toolcalls.ToolCallAccumulator`, and return the
:class:`~actors.agents.toolcalls.ModelTurn`.

The ``openai`` backend (``actors/agents/openai_compat.py``) makes its tool
loop's turns with this class (``OpenAIBackend.run_tools``); a step without
tools still goes through the backend's own single-answer stream.

Why connections are kept alive: a tool loop makes up to ``max_turns + 1``
requests in a row, and a new loopback connection per turn cost ~1 ms of the
loop's overhead (measured, bench/agents.py). The body is read to its end
after ``[DONE]`` so the connection goes back to the pool. A cancel shuts
down the socket of the response in flight (found through httpcore's
``network_stream``, which a reused connection has too), which wakes a read
blocked on a silent server at once.
"""

from __future__ import annotations

import contextlib
import json
import socket
from typing import Any

import httpx

from actors.agents.base import AgentError, Cancelled, CancelToken, DeltaCallback
from actors.agents.toolcalls import ModelTurn, ToolCallAccumulator
from actors.agents.toolloop import TurnRequest

_PREVIEW = 300
Trace = Any
"""httpx's ``trace`` extension callback: ``(event_name, info) -> None``."""


class ChatTurns:
    """Makes turns against one server; thread-safe (one ``httpx.Client``)."""

    def __init__(self, base_url: str, api_key: str = "", *, read_timeout_s: float = 120.0,
                 connect_timeout_s: float = 10.0, trace: Trace | None = None,
                 auth: httpx.Auth | None = None) -> None:
        """Address the server; ``trace`` (optional) sees httpx's connection events (benchmarks time with it)."""
        self.base_url = base_url.rstrip("/")
        headers = {"Accept": "text/event-stream, application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._trace = trace
        self._client = httpx.Client(auth=auth, headers=headers, timeout=httpx.Timeout(
            connect=connect_timeout_s, read=read_timeout_s, write=30.0, pool=30.0))

    def close(self) -> None:
        """Close the connection pool; idempotent."""
        self._client.close()

    def __call__(self, request: TurnRequest, on_delta: DeltaCallback, cancel: CancelToken) -> ModelTurn:
        """Send one turn and stream its answer; see :data:`~actors.agents.toolloop.TurnFn`."""
        if cancel.cancelled:
            raise Cancelled(f"cancelled before model turn {request.turn}")
        body: dict[str, Any] = {"model": request.model, "messages": request.messages, "stream": True,
                                "stream_options": {"include_usage": True}, **request.sampling.body()}
        if request.tools:
            body["tools"] = request.tools
            body["tool_choice"] = request.tool_choice
        acc = ToolCallAccumulator(request.call_id_prefix)
        extensions = {"trace": self._trace} if self._trace else {}
        try:
            with self._client.stream("POST", f"{self.base_url}/chat/completions", json=body,
                                     extensions=extensions) as response:
                unregister = cancel.on_cancel(lambda: _shutdown(response))
                try:
                    self._read(response, acc, on_delta, cancel, request)
                finally:
                    unregister()
        except (Cancelled, AgentError):
            raise
        except httpx.HTTPError as exc:
            if cancel.cancelled:
                raise Cancelled(f"cancelled during model turn {request.turn}") from exc
            raise AgentError(f"the model server at {self.base_url} failed during turn {request.turn} "
                             f"(model {request.model!r}): {type(exc).__name__}: {exc}") from exc
        if cancel.cancelled:
            raise Cancelled(f"cancelled during model turn {request.turn}")
        return acc.turn()

    def _read(self, response: httpx.Response, acc: ToolCallAccumulator, on_delta: DeltaCallback,
              cancel: CancelToken, request: TurnRequest) -> None:
        if response.status_code >= 400:
            response.read()
            raise AgentError(f"the model server at {self.base_url} answered HTTP {response.status_code} "
                             f"(model {request.model!r}): {response.text[:_PREVIEW]!r}")
        if "json" in response.headers.get("content-type", ""):
            response.read()
            text = acc.feed_message(self._decode(response.text))
            if text:
                on_delta(text)
            return
        done = False
        for line in response.iter_lines():
            if cancel.cancelled:
                raise Cancelled(f"cancelled during model turn {request.turn}")
            if done or not line.startswith("data:"):
                continue  # after [DONE]: servers end the body here; reading to its end frees the connection
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                continue
            if not data:
                continue
            chunk = self._decode(data)
            if chunk.get("error"):
                raise AgentError(f"the model server at {self.base_url} reported an error mid-answer "
                                 f"(model {request.model!r}): {chunk['error']}")
            text = acc.feed(chunk)
            if text:
                on_delta(text)

    def _decode(self, data: str) -> dict[str, Any]:
        try:
            doc = json.loads(data)
        except json.JSONDecodeError as exc:
            raise AgentError(f"malformed chunk from the model server at {self.base_url} ({exc.msg}): "
                             f"{data[:_PREVIEW]!r}") from exc
        if not isinstance(doc, dict):
            raise AgentError(f"malformed chunk from the model server at {self.base_url}: {data[:_PREVIEW]!r}")
        return doc


def _shutdown(response: httpx.Response) -> None:
    """Wake a thread blocked reading ``response``: shut its socket down (close alone does not)."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed by the normal end of the turn
            sock.shutdown(socket.SHUT_RDWR)
