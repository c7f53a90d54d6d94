"""A real HTTP server that streams chat completions the way Ollama and vLLM do.

It runs a raw ASGI app under uvicorn on 127.0.0.1 (an ephemeral port) in a
background thread. The requested model picks the scenario, so one server
serves a whole test module:

- ``qwen-test``: role-only first chunk, empty deltas (``""``, missing
  content, ``choices: []``), content deltas, a usage chunk, ``[DONE]``;
- ``plain-json``: ignores ``stream`` and answers one JSON completion;
- ``boom``: HTTP 500 with a body;
- ``garbage``: a malformed chunk after a good one;
- ``stream-error``: an ``error`` object mid-stream;
- ``hang``: a role chunk and one content delta, then silence until the client
  leaves;
- ``echo-auth``: HTTP 401 whose message quotes the credentials it was sent
  (decoded, as some servers and proxies do);
- anything else: 404 "model not found", as Ollama answers.

Every request body is recorded, and ``disconnected`` is set when a client
closes its connection while the server is still streaming.
"""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import anyio

from tests.integration.asgi_server import LocalASGIServer, read_body

CONTENT = ["Hello", ", ", "wor", "ld", "!"]
USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}


def _chunk(model: str, delta: dict[str, Any] | None, **extra: Any) -> bytes:
    doc: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk",
                           "created": 1, "model": model}
    doc["choices"] = [] if delta is None else [
        {"index": 0, "delta": delta, "finish_reason": extra.pop("finish_reason", None)}
    ]
    doc.update(extra)
    return f"data: {json.dumps(doc)}\n\n".encode()


class FakeLLMServer(LocalASGIServer):
    """Start with :meth:`start`, stop with :meth:`stop`; ``base_url`` ends in /v1."""

    def __init__(self) -> None:
        """Bind an ephemeral port now, so clients may connect before uvicorn accepts."""
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.disconnected = threading.Event()
        self.first_chunk_sent = threading.Event()
        super().__init__()

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The ASGI app: one POST /v1/chat/completions endpoint."""
        assert scope["type"] == "http"
        raw = await read_body(receive)
        if scope["path"] != "/v1/chat/completions":
            await self._send(send, 404, b"404 page not found", "text/plain")
            return
        body = json.loads(raw)
        self.requests.append(body)
        self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        model = body.get("model", "")
        if model == "boom":
            await self._send(send, 500, b'{"error":"CUDA out of memory while loading"}')
        elif model == "echo-auth":
            scheme, _, given = self.headers[-1].get("authorization", "").partition(" ")
            if scheme.lower() == "basic":
                given = base64.b64decode(given).decode()
            error = {"error": {"message": f"Incorrect credentials provided: {given}", "type": "auth"}}
            await self._send(send, 401, json.dumps(error).encode())
        elif model == "plain-json":
            doc = {"id": "c", "object": "chat.completion", "model": model,
                   "choices": [{"index": 0, "message": {"role": "assistant",
                                "content": "whole answer"}, "finish_reason": "stop"}],
                   "usage": USAGE}
            await self._send(send, 200, json.dumps(doc).encode())
        elif model in ("qwen-test", "garbage", "stream-error", "hang"):
            await self._stream(model, receive, send)
        else:
            error = {"error": {"message": f'model "{model}" not found, try pulling it first',
                               "type": "api_error"}}
            await self._send(send, 404, json.dumps(error).encode())

    async def _stream(self, model: str, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        async with anyio.create_task_group() as tg:

            async def watch_disconnect() -> None:
                # After the body, uvicorn's receive() returns only when the
                # client goes away (or the response is complete).
                message = await receive()
                if message["type"] == "http.disconnect" and not done:
                    self.disconnected.set()
                tg.cancel_scope.cancel()

            done = False
            tg.start_soon(watch_disconnect)
            for piece in self._script(model):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                self.first_chunk_sent.set()
                if model == "hang":
                    await anyio.sleep(60)  # ends when the client leaves
            done = True
            await send({"type": "http.response.body", "body": b""})
            tg.cancel_scope.cancel()

    def _script(self, model: str) -> list[bytes]:
        role = _chunk(model, {"role": "assistant", "content": ""})
        if model == "hang":
            return [role + _chunk(model, {"content": "thinking"})]
        if model == "garbage":
            return [role, _chunk(model, {"content": "ok"}), b"data: {not json\n\n"]
        if model == "stream-error":
            return [role, b'data: {"error": {"message": "context length exceeded"}}\n\n']
        pieces = [role, b": keep-alive comment\n\n", _chunk(model, {})]
        for i, text in enumerate(CONTENT):
            pieces.append(_chunk(model, {"content": text}))
            if i == 1:
                pieces.append(_chunk(model, {"content": ""}))
        pieces.append(_chunk(model, {}, finish_reason="stop"))
        pieces.append(_chunk(model, None, usage=USAGE))
        pieces.append(b"data: [DONE]\n\n")
        return pieces
