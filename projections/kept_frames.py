"""The frames the projector keeps (``projections.tables.stream_frames``), and a page of them read back.

For every run event it applies, the projector keeps that event's frames as the bytes an SSE stream
sends (``kept_sse``, ``kept_rows``); a stream resuming from a position sends a page of them as they
are (``KeptPage``), with no event decoded. They are the event's frames as ``projections.frames``
and ``projections.frame_structs`` build them at the time: a change to a frame's shape, or to an
upcaster, bumps ``projections.tables.PROJECTION_VERSION`` so the next start keeps them again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from flows.events import Event, RunForked, RunLaunched, TaskEvent
from projections.frame_structs import STRUCTS
from projections.frames import Encoded, Frame, frames_of

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode


class KeptPage:
    """Durable frames as the projector kept them (``stream_frames``): ``sse``, their text/event-stream
    bytes in order, as one value; ``last``, the position a resume goes on from after them.

    An SSE stream sends ``sse`` as it is. ``ids``, ``types`` and ``json`` (``Encoded``'s, for a
    WebSocket and for tests) are read out of it when asked for: a frame's JSON never holds a line
    break, so each frame is the text up to its blank line.
    """

    __slots__ = ("sse", "last", "_split")

    def __init__(self, sse: bytes, last: int) -> None:
        self.sse = sse
        self.last = last
        self._split: Encoded | None = None

    def __len__(self) -> int:
        return self.sse.count(b"\n\n")

    def _encoded(self) -> Encoded:
        if self._split is None:
            out = self._split = Encoded()
            for lines in self.sse.split(b"\n\n")[:-1]:
                fid, kind, data = lines.split(b"\n", 2)
                out.ids.append(int(fid[4:]))
                out.types.append(kind[7:].decode())
                out.json.append(data[6:])
        return self._split

    @property
    def ids(self) -> list[int]:
        return self._encoded().ids

    @property
    def types(self) -> list[str]:
        return self._encoded().types

    @property
    def json(self) -> list[bytes]:
        return self._encoded().json

    def frames(self) -> list[Frame]:
        """The frames as dicts again (decoded from their JSON)."""
        return self._encoded().frames()


def kept_sse(position: int, run_id: str, project_id: str, event: Event) -> bytes:
    """The frames of one decoded event as a stream sends them (text/event-stream: ``id:``, ``event:`` and
    ``data:`` lines, a blank line after each), b"" for an event that gives none: a ``stream_frames`` row's
    body (``projections.tables``). The same bytes as ``event_frames`` encoded by ``sse_lines``.

    The projector keeps these for every event it applies; a resume sends them as they are. So they are
    the event as decoded then: a change to a frame's shape here or to an upcaster must bump
    ``projections.tables.PROJECTION_VERSION`` (the next start rebuilds them).
    """
    build = STRUCTS.get(event.__class__)
    if build is not None:
        built: Any = build(position, run_id, project_id, event)
        if type(built) is not tuple:
            return b"id: %d\nevent: %b\ndata: %b\n\n" % (position, built.type.encode(), _encode(built))
        frames: Iterable[Any] = built
    else:
        frames = frames_of({"id": position, "run_id": run_id, "project_id": project_id}, event)
    return b"".join(b"id: %d\nevent: %b\ndata: %b\n\n" % (
        position, (frame["type"] if type(frame) is dict else frame.type).encode(), _encode(frame))
        for frame in frames)


def kept_rows(items: Iterable[tuple[str, Event, int, int]], project_of: Callable[[str], str | None]
              ) -> list[tuple[int, str, str, bytes]]:
    """The ``stream_frames`` rows (position, run_id, project_id, body) of these decoded run events
    (``projections.source.Item``s, in order): one for each event that gives frames.

    ``project_of(run_id)`` is the project the read tables hold for a run (None: not launched); a
    launch in ``items`` names its own, as the stream's ``Framer`` learns it. An event whose frames
    cannot be built is logged and keeps none (a replay of it would fail the same way).
    """
    out: list[tuple[int, str, str, bytes]] = []
    add = out.append
    projects: dict[str, str] = {}
    structs = STRUCTS
    for run_id, event, position, _ in items:
        cls = event.__class__
        if cls not in structs and not isinstance(event, (TaskEvent, RunForked)):
            continue  # gives no frame (RunRecovered, the other task events' phases are checked by frames_of)
        if cls is RunLaunched:
            project = projects[run_id] = event.project_id  # type: ignore[attr-defined]
        else:
            known = projects.get(run_id)
            if known is not None:
                project = known
            else:
                project = projects[run_id] = project_of(run_id) or ""
        try:
            body = kept_sse(position, run_id, project, event)
        except Exception:
            log.exception("cannot build the frames of event %d (%s of run %s)", position, cls.__name__, run_id)
            continue
        if body:
            add((position, run_id, project, body))
    return out
