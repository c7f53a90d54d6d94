"""Assembling a model turn from OpenAI chat-completion stream chunks (pure: no I/O).

Servers stream tool calls in different shapes, and all of them must give the
same calls:

- vLLM (and OpenAI): the first piece of a call has ``index``, ``id``,
  ``type`` and ``function.name`` with empty ``arguments``; the arguments
  then arrive in many pieces, each ``{"index": i, "function": {"arguments":
  "<piece>"}}``; several calls of one turn may interleave by index;
- Ollama: each call whole in one chunk, often all calls of the turn in one
  chunk; older versions give every call ``index: 0`` (told apart by ``id``)
  or no index at all, and may end with ``finish_reason: "stop"``;
- llama.cpp and others: like vLLM, sometimes without ids.

So a call is keyed by ``index`` when there is one; a new ``id`` at a used
index starts a new call; a piece without index or id continues the last
call. Missing ids are made up (``<prefix>-<n>``) because every call must be
answered by id. The turn is a tool turn when it has calls, whatever
``finish_reason`` says.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ToolCall:
    """One complete call: the id to answer, the tool's name, the raw arguments text."""

    id: str
    name: str
    arguments: str
    """Exactly the text the model produced (validated later, by the tool layer)."""


@dataclass(frozen=True)
class ModelTurn:
    """One model answer: its text, its tool calls and what the server said about it."""

    text: str = ""
    calls: tuple[ToolCall, ...] = ()
    finish_reason: str = ""
    usage: dict[str, Any] = field(default_factory=dict)
    model: str = ""


@dataclass
class _Slot:
    key: int | None
    id: str
    name: str = ""
    pieces: list[str] = field(default_factory=list)


class ToolCallAccumulator:
    """Feed it chunks in order; :meth:`turn` gives the assembled :class:`ModelTurn`."""

    def __init__(self, id_prefix: str = "call") -> None:
        """``id_prefix`` names calls the server sent without an id (unique per step when the caller varies it)."""
        self._prefix = id_prefix
        self._slots: list[_Slot] = []
        self._by_index: dict[int, _Slot] = {}
        self._text: list[str] = []
        self._finish = ""
        self._usage: dict[str, Any] = {}
        self._model = ""

    def feed(self, chunk: Mapping[str, Any]) -> str:
        """Take one decoded ``chat.completion.chunk``; return its text delta (``""`` if none)."""
        if chunk.get("model"):
            self._model = str(chunk["model"])
        if chunk.get("usage"):
            self._usage = dict(chunk["usage"])
        text = ""
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # baton asks for one choice; others would be another answer
            if choice.get("finish_reason"):
                self._finish = str(choice["finish_reason"])
            delta = choice.get("delta") or {}
            piece = delta.get("content")
            if isinstance(piece, str) and piece:
                self._text.append(piece)
                text += piece
            for entry in delta.get("tool_calls") or []:
                self._take(entry)
        return text

    def feed_message(self, doc: Mapping[str, Any]) -> str:
        """Take a whole (non-streamed) ``chat.completion``; return its text."""
        if doc.get("model"):
            self._model = str(doc["model"])
        if doc.get("usage"):
            self._usage = dict(doc["usage"])
        choices = doc.get("choices") or []
        if not choices:
            return ""
        choice = choices[0]
        self._finish = str(choice.get("finish_reason") or "")
        message = choice.get("message") or {}
        text = message.get("content") or ""
        if isinstance(text, str) and text:
            self._text.append(text)
        for i, entry in enumerate(message.get("tool_calls") or []):
            self._take({"index": i, **entry})
        return text if isinstance(text, str) else ""

    def _take(self, entry: Mapping[str, Any]) -> None:
        index = entry.get("index")
        key = index if isinstance(index, int) else None
        call_id = str(entry.get("id") or "")
        function = entry.get("function") or {}
        name = function.get("name") or ""
        slot = self._slot_for(key, call_id, bool(name))
        if call_id and not slot.id:
            slot.id = call_id
        if name and name != slot.name:
            # Servers send the name once; a few repeat it in every piece (the
            # test above), and a rare one streams it in pieces before the
            # arguments. A different name once arguments flow is ignored.
            if not slot.name:
                slot.name = name
            elif not any(slot.pieces):
                slot.name += name
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            slot.pieces.append(arguments)
        elif isinstance(arguments, Mapping):
            slot.pieces.append(json.dumps(arguments, ensure_ascii=False))

    def _slot_for(self, key: int | None, call_id: str, has_name: bool) -> _Slot:
        if key is not None:
            slot = self._by_index.get(key)
            if slot is not None and not (call_id and slot.id and call_id != slot.id):
                return slot
            return self._new_slot(key, call_id)
        last = self._slots[-1] if self._slots else None
        starts_new = (last is None or (call_id and call_id != last.id)
                      or (not call_id and has_name and bool(last.name) and bool(last.pieces)))
        return self._new_slot(None, call_id) if starts_new else last  # type: ignore[return-value]

    def _new_slot(self, key: int | None, call_id: str) -> _Slot:
        slot = _Slot(key=key, id=call_id)
        self._slots.append(slot)
        if key is not None:
            self._by_index[key] = slot
        return slot

    def turn(self) -> ModelTurn:
        """The turn so far: text, complete calls (ids filled in), finish reason, usage, model."""
        calls = tuple(
            ToolCall(id=slot.id or f"{self._prefix}-{n}", name=slot.name, arguments="".join(slot.pieces))
            for n, slot in enumerate(self._slots, start=1)
        )
        return ModelTurn(text="".join(self._text), calls=calls, finish_reason=self._finish,
                         usage=dict(self._usage), model=self._model)
