"""How many connections the server holds, and for how long a client may take to send its request.

A client that opens a connection and sends half a request costs the server
a file handle for as long as it likes: uvicorn's protocols have no timeout
for a request head or body of its own. 1,100 such clients exhausted a
1,024-file limit, after which the listening socket could not accept health
checks and the engine's own opens (database files, sockets, pipes of CLI
agents) failed with "Too many open files", failing every run in flight.

``guarded_protocol(guard)`` is a protocol class for uvicorn (``Config(http=...)``),
over its httptools protocol when httptools is installed, else its h11 one, that:

- closes a connection whose request head has not fully arrived within
  ``header_timeout_s`` (from the connection, or from the end of its last
  response), or whose body has not within ``body_timeout_s`` of its head;
- holds at most ``cap`` connections: a new one past the cap takes the place
  of the connection stalled longest (a half-sent request or an idle
  keep-alive), so a flood of stalled clients cannot lock real ones out; when
  none is stalled (every connection is being served) it is answered 503 and
  closed at once.

``connection_cap(setting, reserve)`` sizes the cap under the process's
open-files limit, keeping ``reserve`` handles for the engine itself.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.h11_impl import H11Protocol

if TYPE_CHECKING:  # what the guard's methods extend: uvicorn's h11 protocol to the type checker (httptools'
    _Protocol = H11Protocol  # has the methods and attributes the guard uses), nothing of its own at run time
else:
    _Protocol = object

log = logging.getLogger("baton.api")

# Handles kept for the engine whatever the clients do: the store's pool (10 + 20 overflow), the
# writer's and LISTEN connections, model calls, CLI agents' pipes, log files, the listening socket,
# and a burst of connections accepted before they can be counted (the listen backlog, ACCEPT_BURST),
# plus the connections the guard closed whose sockets are not gone yet (up to a burst each: a burst of
# new ones evicts as many stalled ones, closed on the loop's next turn). Under 1,100 half-sent clients
# (tests/api/test_api_connections.py) a server at 1,024 files reached 957 with 320 kept, and 930 with
# 400: held connections + 2 bursts (256) + the engine's ~100 must stay 100 under the limit.
FD_RESERVE = 480
ACCEPT_BURST = 128  # the listen backlog: asyncio accepts at most this many connections per loop turn

_REFUSAL = (b'{"type":"https://baton.dev/problems/too-many-connections","title":"Too many connections",'
            b'"status":503,"detail":"the server holds as many connections as it may; try again shortly"}')
_REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n"
            b"retry-after: 1\r\nconnection: close\r\ncontent-length: %d\r\n\r\n" % len(_REFUSAL)) + _REFUSAL


def raise_open_files_limit() -> int:
    """Raise this process's soft open-files limit to its hard limit; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
    return soft


def connection_cap(setting: int, open_files: int, reserve: int = FD_RESERVE) -> int:
    """The connections the server may hold: the setting, lowered to leave ``reserve`` files for the engine."""
    room = max(16, open_files - reserve)
    if setting > room:
        log.warning("BATON_MAX_CONNECTIONS %d lowered to %d: the open-files limit is %d and %d are kept for "
                    "the engine", setting, room, open_files, reserve)
    return min(setting, room)


class ConnectionGuard:
    """The connections of one server: how many, and which are stalled (oldest first)."""

    def __init__(self, cap: int, header_timeout_s: float, body_timeout_s: float) -> None:
        self.cap = cap
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self.stalled: OrderedDict[_Guarded, None] = OrderedDict()
        self.closing: set[_Guarded] = set()  # closed by the guard, not yet gone
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0

    def make_room(self, newcomer: _Guarded, held: int) -> bool:
        """Whether ``newcomer`` may stay, closing the longest-stalled connection if that is needed."""
        if held - len(self.closing) <= self.cap:
            return True
        for victim in self.stalled:
            if victim is not newcomer:
                self.evicted += 1
                victim.drop()
                return True
        self.refused += 1
        return False


class _Guarded(_Protocol):
    """The guard's cap and timeouts (see the module docstring), over uvicorn's h11 or httptools protocol."""

    guard: ConnectionGuard  # set on the subclass ``guarded_protocol`` makes

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: tuple[str, Any] = ("", None)
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.guard.make_room(self, len(self.connections)):
            transport.write(_REFUSED)
            self.drop()
            return
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._unwatch()
        self.guard.closing.discard(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def handle_websocket_upgrade(self, *event: Any) -> None:  # (h11's takes the request event, httptools' none)
        self._unwatch()  # a WebSocket is served from here on: no request timeouts apply
        super().handle_websocket_upgrade(*event)

    def drop(self) -> None:
        """Close the connection now (the guard made room, or a timeout passed)."""
        self._unwatch()
        self.guard.closing.add(self)
        self.transport.close()

    def _unwatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.guard.stalled.pop(self, None)
        self._phase = ("", None)

    def _watch(self) -> None:
        """Note which part of a request the connection waits for, and arm that part's timeout."""
        if self.transport.is_closing():
            self._unwatch()
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            phase: tuple[str, Any] = ("head", cycle)
        elif cycle.more_body and not cycle.disconnected:
            phase = ("body", cycle)
        else:
            phase = ("served", cycle)
        if phase[0] == self._phase[0] and phase[1] is self._phase[1]:
            return  # still waiting for the same part: its deadline stands
        self._unwatch()
        self._phase = phase
        if phase[0] == "served":
            return
        self.guard.stalled[self] = None
        timeout = self.guard.header_timeout_s if phase[0] == "head" else self.guard.body_timeout_s
        self._timer = self.loop.call_later(timeout, self._timed_out, phase)

    def _timed_out(self, phase: tuple[str, Any]) -> None:
        self._timer = None
        if phase[0] == self._phase[0] and phase[1] is self._phase[1] and not self.transport.is_closing():
            self.guard.timed_out += 1
            self.drop()


class GuardedH11Protocol(_Guarded, H11Protocol):
    """uvicorn's h11 protocol (pure Python) with the guard."""


def guarded_protocol(guard: ConnectionGuard) -> type[_Guarded]:
    """A protocol class bound to ``guard``, for ``uvicorn.Config(http=...)``: over httptools when it is
    installed (its parser is C: ~80 us less CPU per request than h11, docs/PERFORMANCE.md), else h11."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        base: type[Any] = GuardedH11Protocol
    else:
        base = type("GuardedHttpToolsProtocol", (_Guarded, HttpToolsProtocol), {})
    return type("BatonProtocol", (base,), {"guard": guard})
