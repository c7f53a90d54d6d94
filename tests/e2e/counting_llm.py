"""An OpenAI-compatible model server that counts the requests it serves at once (the cluster tests').

Every answer takes ``delay_s``; ``most`` is the largest number of requests in
flight at any moment. A request stops counting just before its last byte is
sent (the client cannot start another on that slot before it has it), or as
soon as its client goes away (a node killed mid-call).

A node gives a slot up only after shutting its request's socket down (its
cancel does it in the cancelling thread), so that close reaches this host's
kernel before the request the slot goes to next. The event loop may still
read the new request first, in the same round: a request lets the loop run
a few rounds before it counts, so a close already here is counted out first
(the loop takes three rounds from reading an end of stream to the old
request's ``finally``).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import anyio

from tests.integration.asgi_server import LocalASGIServer, read_body
from tests.integration.scripted_llm import TextTurn, stream_chunks

_ROUNDS = 8  # event-loop rounds a request waits before it counts: a close takes three to be counted out


class CountingLLM(LocalASGIServer):
    """``base_url`` ends in /v1; any model name is answered."""

    def __init__(self, delay_s: float = 0.3) -> None:
        self.delay_s = delay_s
        self.now = 0
        self.most = 0
        self.served = 0
        self._lock = threading.Lock()
        super().__init__()

    def _enter(self) -> None:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def _leave(self) -> None:
        with self._lock:
            self.now -= 1
            self.served += 1

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = json.loads(await read_body(receive) or b"{}")
        if scope["path"] != "/v1/chat/completions":
            await self._send(send, 404, b"404 page not found", "text/plain")
            return
        for _ in range(_ROUNDS):  # closes already here are counted out first (see the module's text)
            await anyio.sleep(0)
        self._enter()
        counted = True
        try:
            gone = False
            with anyio.move_on_after(self.delay_s):  # the answer's time; a client leaving ends it at once
                while (await receive())["type"] != "http.disconnect":
                    pass
                gone = True
            if gone:
                return
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            chunks = stream_chunks(body.get("model", "m"), TextTurn("E1 (prompt:1, direct): counted."), 1)
            for piece in chunks[:-1]:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            self._leave()
            counted = False
            await send({"type": "http.response.body", "body": chunks[-1], "more_body": False})
        finally:
            if counted:
                self._leave()
