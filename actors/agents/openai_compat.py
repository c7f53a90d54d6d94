"""The ``openai`` backend: any OpenAI-compatible chat-completions server.

Ollama (``http://localhost:11434/v1``), vLLM and llama.cpp's server all speak
``POST {base_url}/chat/completions`` with ``stream: true`` and answer with
server-sent events. This module reads that stream, tolerates the quirks real
servers have (a role-only first chunk, empty deltas, ``choices: []`` usage
chunks, or no streaming at all) and turns every failure into an
:class:`AgentError` that says what to fix.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from typing import TYPE_CHECKING, Any

import httpx

from actors.agents.base import (
    AgentError,
    AgentRequest,
    AgentResult,
    BackendConfigError,
    Cancelled,
    CancelToken,
    DeltaCallback,
)
from flows.redact import without_userinfo

if TYPE_CHECKING:  # imported when first used: the tool loop's modules import the workspace layer,
    # which reads the store (actors.runlog), which imports this package: a cycle at import time.
    from actors.agents.chat_turn import ChatTurns
    from actors.agents.toolloop import LoopLimits, LoopObserver, ToolRunner

_BODY_PREVIEW = 300


class OpenAIBackend:
    """Streams chat completions from an OpenAI-compatible server.

    One instance is shared by every step: its ``httpx.Client`` is thread-safe.
    Keep-alive is off on purpose: each call gets its own connection, whose
    socket is captured so a cancel can shut it down and wake the blocked read
    at once (closing an httpx stream from another thread does not).
    """

    name = "openai"

    def __init__(
        self,
        base_url: str = "http://localhost:11434/v1",
        api_key: str = "",
        model: str = "",
        *,
        read_timeout_s: float = 120.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        """Configure the server address, key, default model and idle timeout.

        ``read_timeout_s`` bounds the silence between two pieces of the answer
        (and before the first), not the whole answer.
        """
        if not base_url.startswith(("http://", "https://")):
            raise BackendConfigError(
                f"the openai backend needs an http(s) base URL, got {without_userinfo(base_url)!r} "
                "(set BATON_OPENAI_BASE_URL, e.g. http://localhost:11434/v1)"
            )
        url = httpx.URL(base_url)
        # Credentials in the URL are sent as Basic auth (as httpx would), but the URL the
        # client requests and logs, and every message names, carries none.
        auth = httpx.BasicAuth(url.username, url.password) if url.userinfo else None
        self.base_url = str(url.copy_with(userinfo=b"")).rstrip("/") if url.userinfo else base_url.rstrip("/")
        self.where = without_userinfo(self.base_url)
        self.default_model = model
        self.read_timeout_s = read_timeout_s
        self._api_key = api_key
        self._auth = auth
        self._connect_timeout_s = connect_timeout_s
        self._turns: ChatTurns | None = None
        self._turns_lock = threading.Lock()
        self.api_key = api_key  # task runs' tool loops reach the same server (actors.task_attempt.task_env)
        headers = {"Accept": "text/event-stream, application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(
            auth=auth,
            headers=headers,
            timeout=httpx.Timeout(
                connect=connect_timeout_s, read=read_timeout_s, write=30.0, pool=30.0
            ),
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def run(
        self, request: AgentRequest, on_delta: DeltaCallback, cancel: CancelToken
    ) -> AgentResult:
        """Send the persona and prompt; stream the answer's text to ``on_delta``.

        Raises :class:`Cancelled` if ``cancel`` fires, :class:`AgentError` if
        the server is unreachable, answers an error, goes silent for
        ``read_timeout_s`` or sends something that is not a chat completion.
        """
        model = request.model or self.default_model
        if not model:
            raise AgentError(
                f"no model for the openai backend at {self.where}: set BATON_MODEL "
                "(e.g. qwen2.5-coder:7b) or give the run a model"
            )
        if cancel.cancelled:
            raise Cancelled(f"step {request.step_id} was cancelled before the call")
        body = {
            "model": model,
            "messages": [
                {"role": "system", "content": request.system},
                {"role": "user", "content": request.prompt},
            ],
            "stream": True,
            "stream_options": {"include_usage": True},
            **{k: v for k, v in request.sampling.items() if k in ("temperature", "max_tokens", "seed")},
        }
        sockets = _SocketHolder(cancel)
        unregister = cancel.on_cancel(sockets.shutdown)
        try:
            with self._client.stream(
                "POST",
                f"{self.base_url}/chat/completions",
                json=body,
                extensions={"trace": sockets.trace},
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._http_error(response, model)
                if "json" in response.headers.get("content-type", ""):
                    # Some servers ignore `stream` and answer one JSON document.
                    response.read()
                    result = self._plain_answer(response.text, model, on_delta)
                else:
                    result = self._streamed_answer(response, model, on_delta)
        except Exception as exc:
            # Once cancelled, whatever the shut-down socket surfaced as (a
            # protocol error, a cut-off chunk) is the cancel, not a failure.
            if cancel.cancelled:
                raise Cancelled(f"step {request.step_id} was cancelled") from exc
            error = self._as_agent_error(exc, model)
            if error is None or error is exc:
                raise  # already actionable, or not an I/O failure (a bug)
            raise error from exc
        finally:
            unregister()
        if cancel.cancelled:
            # A shut-down socket can look like a clean end of a body without
            # chunked framing: never pass a cut-off answer off as complete.
            raise Cancelled(f"step {request.step_id} was cancelled")
        return result

    def close(self) -> None:
        """Close the HTTP clients; idempotent."""
        self._client.close()
        with self._turns_lock:
            if self._turns is not None:
                self._turns.close()

    def run_tools(self, request: AgentRequest, tools: ToolRunner, on_delta: DeltaCallback, cancel: CancelToken, *,
                  limits: LoopLimits, observer: LoopObserver) -> AgentResult:
        """Run the tool loop (DESIGN §11) for ``request``: turns until the model answers in text.

        The turns keep their connection alive (a loop makes up to
        ``max_turns + 1`` requests in a row); usage is recorded per turn and
        summed. Raises like :meth:`run`, and
        :class:`~actors.agents.toolloop.ToolLimitExceeded` when the model
        keeps calling tools after it was told to answer.
        """
        from actors.agents.toolloop import LoopResult, Sampling, TurnTally, loop_usage, run_tool_loop

        model = request.model or self.default_model
        if not model:
            raise AgentError(
                f"no model for the openai backend at {self.where}: set BATON_MODEL "
                "(e.g. qwen2.5-coder:7b) or give the run a model"
            )
        sampling = Sampling(**{k: v for k, v in request.sampling.items()
                               if k in ("temperature", "max_tokens", "seed")})
        turns = TurnTally(observer)
        try:
            result = run_tool_loop(system=request.system, prompt=request.prompt, model=model, tools=tools,
                                   turn=self._chat_turns(), on_delta=on_delta, cancel=cancel, limits=limits,
                                   sampling=sampling, observer=turns,
                                   call_id_prefix=f"{request.step_id}-a{request.attempt}")
        except AgentError as exc:
            exc.usage = loop_usage(LoopResult(output="", turns=turns.turns))  # what the turns so far cost
            raise
        return AgentResult(output=result.output, usage=loop_usage(result), model=result.model or model)

    def _chat_turns(self) -> ChatTurns:
        from actors.agents.chat_turn import ChatTurns

        with self._turns_lock:
            if self._turns is None:
                self._turns = ChatTurns(self.base_url, self._api_key, read_timeout_s=self.read_timeout_s,
                                        connect_timeout_s=self._connect_timeout_s, auth=self._auth)
            return self._turns

    def _streamed_answer(
        self, response: httpx.Response, model: str, on_delta: DeltaCallback
    ) -> AgentResult:
        pieces: list[str] = []
        usage: dict[str, Any] = {}
        used_model = model
        for line in response.iter_lines():
            # OpenAI-style servers put one JSON object on each `data:` line;
            # comments (`:`), `event:`/`id:` lines and blank separators carry
            # nothing we need.
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            if not data:
                continue
            chunk = self._decode(data)
            if chunk.get("error"):
                raise AgentError(
                    f"the openai backend at {self.where} reported an error mid-answer "
                    f"(model {model!r}): {_error_text(chunk['error'])}"
                )
            used_model = chunk.get("model") or used_model
            if chunk.get("usage"):
                usage = dict(chunk["usage"])
            for choice in chunk.get("choices") or []:
                if choice.get("index", 0) != 0:
                    continue
                text = (choice.get("delta") or {}).get("content")
                if text:
                    pieces.append(text)
                    on_delta(text)
        return AgentResult(output="".join(pieces), usage=usage, model=used_model)

    def _plain_answer(self, text: str, model: str, on_delta: DeltaCallback) -> AgentResult:
        doc = self._decode(text)
        if doc.get("error"):
            raise AgentError(
                f"the openai backend at {self.where} answered an error "
                f"(model {model!r}): {_error_text(doc['error'])}"
            )
        try:
            content = doc["choices"][0]["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise AgentError(
                f"the openai backend at {self.where} answered JSON that is not a chat "
                f"completion: {text[:_BODY_PREVIEW]!r}"
            ) from exc
        if content:
            on_delta(content)
        return AgentResult(
            output=content, usage=dict(doc.get("usage") or {}), model=doc.get("model") or model
        )

    def _decode(self, data: str) -> dict[str, Any]:
        try:
            doc = json.loads(data)
        except json.JSONDecodeError as exc:
            raise AgentError(
                f"malformed chunk from the openai backend at {self.where} "
                f"({exc.msg}): {data[:_BODY_PREVIEW]!r}"
            ) from exc
        if not isinstance(doc, dict):
            raise AgentError(
                f"malformed chunk from the openai backend at {self.where} "
                f"(not a JSON object): {data[:_BODY_PREVIEW]!r}"
            )
        return doc

    def _as_agent_error(self, exc: Exception, model: str) -> AgentError | None:
        """The actionable error for a failed call, or None for a non-I/O exception."""
        if isinstance(exc, AgentError):
            return exc
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            return self._unreachable(exc)
        if isinstance(exc, httpx.ReadTimeout):
            return AgentError(
                f"no data from the openai backend at {self.where} for "
                f"{self.read_timeout_s:g} s (model {model!r}); is the server overloaded "
                "or stuck loading the model?"
            )
        if isinstance(exc, httpx.HTTPError):
            return AgentError(
                f"the openai backend at {self.where} broke off the call "
                f"(model {model!r}): {type(exc).__name__}: {exc}"
            )
        return None

    def _unreachable(self, exc: Exception) -> AgentError:
        return AgentError(
            f"cannot reach the openai backend at {self.where}: {exc} "
            "(is the server running? set BATON_OPENAI_BASE_URL)"
        )

    def _http_error(self, response: httpx.Response, model: str) -> AgentError:
        status = response.status_code
        preview = response.text[:_BODY_PREVIEW].strip()
        where = f"the openai backend at {self.where}"
        if status == 404:
            return AgentError(
                f"model {model!r} not found: {where} answered 404: {preview!r}. Pull or "
                f"serve it (e.g. `ollama pull {model}`) or set BATON_MODEL; if the answer "
                "does not mention the model, check that BATON_OPENAI_BASE_URL ends in /v1"
            )
        if status in (401, 403):
            return AgentError(
                f"{where} refused the request ({status}): {preview!r}; "
                "check BATON_OPENAI_API_KEY"
            )
        return AgentError(f"{where} answered HTTP {status} (model {model!r}): {preview!r}")


class _SocketHolder:
    """Remembers the socket of one call so a cancel can shut it down.

    httpcore reports each new connection through the request's ``trace``
    extension; ``shutdown`` (unlike ``close``) wakes a thread blocked reading.
    """

    def __init__(self, cancel: CancelToken) -> None:
        self._cancel = cancel
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None

    def trace(self, event: str, info: dict[str, Any]) -> None:
        # start_tls replaces the plain socket, so the latest one is kept.
        if event not in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is None:
            return
        with self._lock:
            self._sock = sock
        # A cancel that came while connecting found no socket to shut down.
        if self._cancel.cancelled:
            self.shutdown()

    def shutdown(self) -> None:
        with self._lock:
            sock = self._sock
        if sock is None:
            return
        # OSError: already closed by the normal end of the call, nothing to wake.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)
