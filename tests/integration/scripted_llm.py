"""A real OpenAI-compatible HTTP server whose answers follow a script per model.

A test registers a script for a model name: a list of turns, each either a
:class:`ToolTurn` (tool calls, streamed the way vLLM streams them, in many
argument pieces, optionally interleaved; or the way Ollama sends them, whole
in one chunk), a :class:`TextTurn` (a text answer in deltas) or a
:class:`StallTurn` (a word, then silence until the client leaves). Which turn
answers a request is the number of assistant messages already in the
request's conversation, so the server holds no per-conversation state and a
client's retry gets the same answer.

Every request body is recorded (``requests``), with the time it arrived, so
tests can assert what was sent back to the model (tool results, the closing
message, ``tool_choice``). It runs a raw ASGI app under uvicorn on
127.0.0.1 (an ephemeral port) in a background thread.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from tests.integration.asgi_server import LocalASGIServer, read_body


@dataclass(frozen=True)
class Call:
    """One tool call of a scripted turn; ``arguments`` as a dict, or raw text (maybe not JSON)."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    def raw(self) -> str:
        """The arguments as the model would produce them."""
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass(frozen=True)
class ToolTurn:
    """A turn that answers with tool calls."""

    calls: list[Call]
    style: Literal["vllm", "ollama"] = "vllm"
    pieces: int = 5
    """vLLM style: how many pieces each call's arguments are cut into."""
    interleave: bool = False
    """vLLM style: the pieces of the calls alternate (index 0, 1, 0, 1 ...)."""
    finish_reason: str = "tool_calls"
    text: str = ""
    """Text the model says besides its calls."""
    ids: bool = True
    """False: calls come without ids (llama.cpp does this)."""
    same_index: bool = False
    """Ollama style: every call carries index 0 (older Ollama)."""


@dataclass(frozen=True)
class TextTurn:
    """A turn that answers in text."""

    text: str
    pieces: int = 3


@dataclass(frozen=True)
class StallTurn:
    """A turn that says ``text`` and then goes silent until the client leaves (or 60 s)."""

    text: str = "thinking"


Turn = ToolTurn | TextTurn | StallTurn


def _chunk(model: str, delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
    doc: dict[str, Any] = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 1,
                           "model": model}
    doc["choices"] = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    doc.update(extra)
    return f"data: {json.dumps(doc)}\n\n".encode()


def _split(text: str, pieces: int) -> list[str]:
    if pieces <= 1 or len(text) <= 1:
        return [text]
    size = max(1, -(-len(text) // pieces))
    return [text[i : i + size] for i in range(0, len(text), size)]


def usage_of(turn_number: int) -> dict[str, int]:
    """The usage the server reports for turn ``turn_number`` (1-based): distinct per turn."""
    prompt, completion = 100 * turn_number, 10 + turn_number
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def stream_chunks(model: str, turn: Turn, turn_number: int) -> list[bytes]:
    """The SSE body pieces of one scripted turn (each element is sent as one write)."""
    out = [_chunk(model, {"role": "assistant", "content": ""})]
    if isinstance(turn, StallTurn):
        return [out[0] + _chunk(model, {"content": turn.text})]
    if isinstance(turn, TextTurn):
        out += [_chunk(model, {"content": p}) for p in _split(turn.text, turn.pieces)]
        out.append(_chunk(model, {}, "stop"))
    else:
        if turn.text:
            out.append(_chunk(model, {"content": turn.text}))
        ids = [c.id or f"call_{turn_number}_{i}" for i, c in enumerate(turn.calls)]
        if turn.style == "ollama":
            entries = []
            for i, (c, cid) in enumerate(zip(turn.calls, ids, strict=True)):
                entry: dict[str, Any] = {"index": 0 if turn.same_index else i, "type": "function",
                                         "function": {"name": c.name, "arguments": c.raw()}}
                if turn.ids:
                    entry["id"] = cid
                entries.append(entry)
            out.append(_chunk(model, {"tool_calls": entries}))
        else:
            streams: list[list[bytes]] = []
            for i, (c, cid) in enumerate(zip(turn.calls, ids, strict=True)):
                head: dict[str, Any] = {"index": i, "type": "function",
                                        "function": {"name": c.name, "arguments": ""}}
                if turn.ids:
                    head["id"] = cid
                parts = [_chunk(model, {"tool_calls": [head]})]
                parts += [_chunk(model, {"tool_calls": [{"index": i, "function": {"arguments": p}}]})
                          for p in _split(c.raw(), turn.pieces)]
                streams.append(parts)
            if turn.interleave:
                longest = max(len(s) for s in streams)
                out += [s[k] for k in range(longest) for s in streams if k < len(s)]
            else:
                out += [p for s in streams for p in s]
        out.append(_chunk(model, {}, turn.finish_reason))
    out.append(_chunk(model, None, usage=usage_of(turn_number)))
    out.append(b"data: [DONE]\n\n")
    return out


class ScriptedLLM(LocalASGIServer):
    """Start with :meth:`start`, stop with :meth:`stop`; ``base_url`` ends in /v1."""

    def __init__(self) -> None:
        """Bind an ephemeral port now, so clients may connect before uvicorn accepts."""
        self.requests: list[dict[str, Any]] = []
        self.arrived: list[float] = []
        """``time.perf_counter()`` when each request's body was complete."""
        self._scripts: dict[str, list[Turn]] = {}
        self._routes: dict[str, list[tuple[str | tuple[str, ...], list[Turn]]]] = {}
        self.disconnected = threading.Event()
        """Set when a client left in the middle of a :class:`StallTurn`."""
        self._lock = threading.Lock()
        super().__init__()

    def script(self, model: str, turns: list[Turn]) -> None:
        """Answer requests for ``model`` with ``turns``, by the conversation's turn number."""
        with self._lock:
            self._scripts[model] = list(turns)

    def route(self, model: str, marker: str | tuple[str, ...], turns: list[Turn]) -> None:
        """Answer conversations of ``model`` whose first user message contains ``marker`` (each of them,
        for a tuple) with ``turns``
        (several agents on one model: each task's implementor and reviewer); routes are tried in the order
        they were added, before the model's plain script."""
        with self._lock:
            self._routes.setdefault(model, []).append((marker, list(turns)))

    def requests_for(self, model: str) -> list[dict[str, Any]]:
        """Recorded bodies of the requests for ``model``, in arrival order."""
        with self._lock:
            return [r for r in self.requests if r.get("model") == model]

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The ASGI app: POST /v1/chat/completions only."""
        assert scope["type"] == "http"
        raw = await read_body(receive)
        arrived = time.perf_counter()
        if scope["path"] != "/v1/chat/completions":
            await self._send(send, 404, b"404 page not found", "text/plain")
            return
        body = json.loads(raw)
        model = body.get("model", "")
        with self._lock:
            self.requests.append(body)
            self.arrived.append(arrived)
            script = self._scripts.get(model)
            first = next((m.get("content") or "" for m in body.get("messages", []) if m.get("role") == "user"), "")
            for marker, turns in self._routes.get(model, []):
                if all(m in first for m in ((marker,) if isinstance(marker, str) else marker)):
                    script = turns
                    break
        if script is None:
            error = {"error": {"message": f'model "{model}" not found', "type": "api_error"}}
            await self._send(send, 404, json.dumps(error).encode())
            return
        number = 1 + sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")
        if number > len(script):
            error = {"error": {"message": f"script of {model!r} has {len(script)} turns; asked for turn {number}"}}
            await self._send(send, 500, json.dumps(error).encode())
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        turn = script[number - 1]
        for piece in stream_chunks(model, turn, number):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        if isinstance(turn, StallTurn):
            with anyio.move_on_after(60):
                while (await receive())["type"] != "http.disconnect":
                    pass
            self.disconnected.set()
            return
        await send({"type": "http.response.body", "body": b""})

