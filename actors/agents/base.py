"""The contract every agent backend honours: request, result, errors, cancellation.

A StepActor builds an :class:`AgentRequest`, hands it to a :class:`Backend`
together with a delta callback and a :class:`CancelToken`, and gets an
:class:`AgentResult` back or an :class:`AgentError` whose message tells a
person what to fix. Backends never fall back to one another: a backend that
cannot do the job fails the step.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from actors.errors import ActorsError

log = logging.getLogger(__name__)

DeltaCallback = Callable[[str], None]
"""Receives each non-empty piece of text as the backend produces it."""


@dataclass(frozen=True)
class AgentRequest:
    """One call of one step attempt: exactly what is sent, and to whom."""

    run_id: str
    step_id: str
    attempt: int
    persona: str
    """The persona's name, e.g. ``"triager"``."""
    system: str
    """The persona's system prompt text."""
    prompt: str
    """The resolved prompt, exactly what is sent."""
    model: str
    """The model to use; ``""`` means the backend's default."""
    workdir: str = ""
    """The run's workspace root (DESIGN §11): the ``cli`` backend runs there; ``""``: no workspace."""
    sampling: Mapping[str, Any] = field(default_factory=dict)
    """Sampling settings sent with the request (temperature, max_tokens, seed), as recorded in StepStarted."""


@dataclass(frozen=True)
class AgentResult:
    """What a backend answered: the full text, token usage and the model used."""

    output: str
    usage: dict[str, Any] = field(default_factory=dict)
    """Token counts as the server reported them (``{}`` when unknown)."""
    model: str = ""
    """The model that actually answered, as far as the backend can tell."""


class AgentError(ActorsError):
    """A backend could not produce an answer; the message says what to fix.

    ``usage`` is what the call cost before it failed, when the backend knows
    (a tool loop's turns up to its limit); ``{}`` otherwise.
    """

    usage: Mapping[str, Any] = MappingProxyType({})


class Cancelled(AgentError):
    """Raised by ``Backend.run`` when its cancel token was cancelled."""


class BackendConfigError(AgentError, ValueError):
    """A backend refused its configuration at construction (fail closed)."""


class CancelToken:
    """A thread-safe, one-shot cancellation signal.

    ``cancel()`` may be called from any thread, any number of times; the
    registered callbacks (close the HTTP stream, kill the process group) run
    exactly once, in the thread that cancelled first.
    """

    def __init__(self) -> None:
        """Create a token that is not cancelled."""
        self._lock = threading.Lock()
        self._cancelled = False
        # Made by the first ``wait``: one token per attempt, and most attempts are never waited on
        # (an Event is a Condition and two locks more per step).
        self._event: threading.Event | None = None
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._next_id = 0

    def cancel(self) -> None:
        """Cancel; run every registered callback once (later calls do nothing)."""
        with self._lock:
            if self._cancelled:
                return
            # The flag is set before any callback runs, so code that registers
            # a resource after checking `cancelled` can never miss the cancel.
            self._cancelled = True
            if self._event is not None:
                self._event.set()
            callbacks = list(self._callbacks.values())
            self._callbacks.clear()
        for fn in callbacks:
            _run_callback(fn)

    @property
    def cancelled(self) -> bool:
        """True once ``cancel()`` was called."""
        return self._cancelled

    def on_cancel(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Register ``fn`` to run on cancel; return a function that unregisters it.

        If the token is already cancelled, ``fn`` runs at once (in this thread).
        """
        with self._lock:
            if not self._cancelled:
                key = self._next_id
                self._next_id += 1
                self._callbacks[key] = fn

                def unregister() -> None:
                    with self._lock:
                        self._callbacks.pop(key, None)

                return unregister
        _run_callback(fn)
        return lambda: None

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True if cancelled within it."""
        with self._lock:
            if self._event is None:
                self._event = threading.Event()
                if self._cancelled:
                    self._event.set()
            event = self._event
        return event.wait(timeout)


def _run_callback(fn: Callable[[], None]) -> None:
    # One failing cleanup must not stop the others (the process must still be
    # killed if closing a socket raised); the failure is logged, not hidden.
    try:
        fn()
    except Exception:
        log.exception("a cancel callback failed")


@runtime_checkable
class Backend(Protocol):
    """An agent backend: turns an :class:`AgentRequest` into text."""

    name: str
    """``"openai"``, ``"cli"`` or ``"offline"``."""
    default_model: str
    """The model used when a request's model is ``""``."""

    def run(
        self, request: AgentRequest, on_delta: DeltaCallback, cancel: CancelToken
    ) -> AgentResult:
        """Call the model; stream text pieces to ``on_delta``; return the full answer.

        Blocks the calling thread. Raises :class:`Cancelled` when ``cancel``
        fires and :class:`AgentError` for every other failure.
        """
        ...

    def close(self) -> None:
        """Release what the backend holds (HTTP connections); idempotent."""
        ...
