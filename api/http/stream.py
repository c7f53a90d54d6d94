"""The frame stream of DESIGN §7: SSE at /api/stream and a WebSocket at /api/ws.

Both serve the frames of the app's ``FrameHub`` (``api.http.hub``). A consumer
resumes with the id of the last durable frame it saw: ``Last-Event-ID``
(header, or ``?last_event_id=`` / ``?after=``) for SSE, ``after`` in the
query or the first message for the WebSocket. It then gets every durable
frame after that id, in order and once, and the live frames after them.
Without a resume position it gets live frames only; ``0`` replays the log
from the start.

SSE format: durable frames are ``id: <position>\\nevent: <type>\\ndata:
<json>\\n\\n``; ephemeral ones (``step_delta``, ``plan_delta``, ``plan_updated``)
have no ``id:`` line, so they do not move the browser's Last-Event-ID. With
``plan=1`` (and no ``run_id`` filter) the stream begins with the whole plan,
one ``plan_updated`` frame; the ``plan_delta`` frames after it apply to it. A comment
line is sent every ``heartbeat_s`` so proxies keep the connection open.
Frames are written in batches: the frames of one event go out in one write,
so a consumer never holds half of an event's frames under a full id.

Plain StreamingResponse rather than sse-starlette: the format is four lines,
and owning the loop makes the hand-over from replay to live explicit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from api.http.hub import Frame, SharedFrame, Subscriber
from api.http.problems import BadParameter
from api.http.routes import MAX_INTEGER
from projections.frames import Encoded
from projections.kept_frames import KeptPage

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
FIRST_MESSAGE_S = 1.0  # how long a WebSocket without query parameters waits for its resume message


def sse_event(frame: Frame) -> bytes:
    """One frame as a text/event-stream event (no ``id:`` line for an ephemeral frame)."""
    fid = frame.get("id")
    if fid is not None:
        return b"id: %d\nevent: %b\ndata: %b\n\n" % (fid, frame["type"].encode(), _encode(frame))
    return b"event: %b\ndata: %b\n\n" % (frame["type"].encode(), _encode(frame))


def json_text(frame: Frame) -> bytes:
    """One frame as a WebSocket message's JSON."""
    return _encode(frame)


def _encoded(frame: Frame, name: str, encode: Any) -> bytes:
    return frame.encoded(name, encode) if isinstance(frame, SharedFrame) else encode(frame)


def sse_lines(frames: list[Frame] | Encoded | KeptPage) -> bytes:
    """Frames in text/event-stream form (one write): live ones, or a replay's already encoded (or kept)."""
    if isinstance(frames, KeptPage):
        return frames.sse
    if isinstance(frames, Encoded):
        # Each frame's JSON is copied once, by the join: its lines around it are made apart and the
        # two lists interleaved (the blank line that ends a frame begins the next one's lines).
        if not frames.json:
            return b""
        names = _NAMES
        parts: list[bytes] = [b""] * (2 * len(frames.json))
        parts[::2] = [b"\n\nid: %d\nevent: %b\ndata: " % (fid, names.get(kind) or kind.encode())
                      for fid, kind in zip(frames.ids, frames.types, strict=True)]
        parts[1::2] = frames.json
        parts[0] = parts[0][2:]
        parts.append(b"\n\n")
        return b"".join(parts)
    return b"".join(_encoded(frame, "sse", sse_event) for frame in frames)


def json_texts(frames: list[Frame] | Encoded | KeptPage) -> list[bytes]:
    """Frames as WebSocket messages' JSON."""
    if isinstance(frames, (Encoded, KeptPage)):
        return frames.json
    return [_encoded(frame, "json", json_text) for frame in frames]


_NAMES = {name: name.encode() for name in ("flow_run_step_updated", "flow_run_started", "approval_requested")}


def parse_position(name: str, raw: Any) -> int | None:
    """A resume position from a header, query parameter or message; BadParameter naming it."""
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise BadParameter(name, f"{name}={raw!r} is not a position (a non-negative integer)") from None
    if value < 0:
        raise BadParameter(name, f"{name} cannot be negative")
    if value > MAX_INTEGER:
        raise BadParameter(name, f"{name} must be at most {MAX_INTEGER}")
    return value


def _resume_of(request: Request) -> int | None:
    for name, raw in (("Last-Event-ID", request.headers.get("last-event-id")),
                      ("last_event_id", request.query_params.get("last_event_id")),
                      ("after", request.query_params.get("after"))):
        position = parse_position(name, raw)
        if position is not None:
            return position
    return None


def _wants_plan(raw: Any) -> bool:
    """``plan``: 1 / true to begin the stream with the whole plan; BadParameter naming it otherwise."""
    if raw is None or raw in ("", "0", "false", False):
        return False
    if raw in ("1", "true", True):
        return True
    raise BadParameter("plan", f"plan={raw!r} must be 1 or 0")


async def _plan_frame(app: Any, subscriber: Subscriber) -> list[Frame]:
    """The whole plan as one ``plan_updated`` frame, for a stream that asked for it (none without the engine).

    Taken after the subscriber joined the hub: every ``plan_delta`` it gets
    afterwards either follows this plan's ``seq`` or is older (and skipped).
    """
    engine = getattr(getattr(app.state, "runtime", None), "engine", None)
    if engine is None or subscriber.run_id is not None:
        return []
    try:
        plan = await asyncio.to_thread(engine.plan)
    except Exception:  # the engine is restarting: the deltas' epoch will tell the consumer to ask again
        log.warning("could not read the plan for a stream", exc_info=True)
        return []
    return [{"type": "plan_updated", "plan": plan}]


async def _frames_of(subscriber: Subscriber, after: int | None, heartbeat_s: float,
                     first: list[Frame] | None = None) -> Any:
    """Replay (when resuming), then live frames; [] means "time for a heartbeat"."""
    if first:
        yield first
    if after is not None:
        async for replayed in subscriber.replay(after):
            yield replayed
    while True:
        live = await subscriber.next_frames(heartbeat_s)
        if live is None:  # fell too far behind (it resumes by id) or the server is stopping
            return
        yield live


async def sse(request: Request) -> StreamingResponse:
    """GET /api/stream: SSE frames; filters ``run_id``, ``project_id``; resumes after Last-Event-ID;
    ``plan=1`` begins with the whole plan."""
    after = _resume_of(request)
    with_plan = _wants_plan(request.query_params.get("plan"))
    hub = request.app.state.hub
    heartbeat_s = request.app.state.heartbeat_s
    # Subscribe now, before the first byte: live frames from here on are kept for the hand-over.
    subscriber = hub.subscribe(run_id=request.query_params.get("run_id"),
                               project_id=request.query_params.get("project_id"))

    async def body() -> Any:
        try:
            yield b"retry: 1000\n: connected\n\n"
            first = await _plan_frame(request.app, subscriber) if with_plan else None
            async for frames in _frames_of(subscriber, after, heartbeat_s, first):
                yield sse_lines(frames) if frames else b": heartbeat\n\n"
        finally:
            subscriber.close()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


async def _first_message(websocket: WebSocket) -> dict[str, Any]:
    try:
        received = await asyncio.wait_for(websocket.receive(), FIRST_MESSAGE_S)
    except TimeoutError:
        return {}
    if received["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(received.get("code", 1000))
    try:
        message = msgspec.json.decode(received.get("text") or received.get("bytes") or b"")
    except msgspec.DecodeError:
        raise BadParameter("message", "the first message must be a JSON object") from None
    if not isinstance(message, dict):
        raise BadParameter("message", "the first message must be a JSON object")
    return message


async def ws(websocket: WebSocket) -> None:
    """WS /api/ws: the same frames as JSON text messages.

    Resume position and filters come from the query (``after``,
    ``run_id``, ``project_id``) or, when the query has none, from a first
    message ``{"after": N, "run_id": ..., "project_id": ...}`` sent within
    a second of connecting. A bad one closes the socket with code 1008 and
    the reason.
    """
    await websocket.accept()
    hub = websocket.app.state.hub
    q = websocket.query_params
    subscriber = hub.subscribe(run_id=q.get("run_id"), project_id=q.get("project_id"))
    receiver: asyncio.Task[None] | None = None
    try:
        try:
            after = parse_position("after", q.get("after") or q.get("last_event_id"))
            with_plan = _wants_plan(q.get("plan"))
            if not any(k in q for k in ("after", "last_event_id", "run_id", "project_id", "plan")):
                message = await _first_message(websocket)
                after = parse_position("after", message.get("after"))
                with_plan = _wants_plan(message.get("plan"))
                # Set before the replay: buffered live frames are filtered again when drained.
                subscriber.run_id = message.get("run_id") or None
                subscriber.project_id = message.get("project_id") or None
        except BadParameter as exc:
            await websocket.close(code=1008, reason=str(exc)[:120])
            return
        receiver = asyncio.create_task(_until_disconnect(websocket, subscriber))
        first = await _plan_frame(websocket.app, subscriber) if with_plan else None
        async for frames in _frames_of(subscriber, after, 30.0, first):
            for text in json_texts(frames):
                await websocket.send_text(text.decode())
        if subscriber.overflowed:
            await websocket.close(code=1013, reason="fell behind; reconnect with your last id")
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the client went away
    finally:
        subscriber.close()
        if receiver is not None:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await receiver


async def _until_disconnect(websocket: WebSocket, subscriber: Subscriber) -> None:
    """Read (and ignore) client messages until it disconnects, then end its stream."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
    finally:
        subscriber.close()


ROUTES = [
    Route("/api/stream", sse, methods=["GET"], name="stream"),
    WebSocketRoute("/api/ws", ws, name="ws"),
]
