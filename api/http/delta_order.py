"""Token deltas kept behind the frame that says their step is running (used by ``api.http.hub``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from flows.status import RUN_TERMINAL, StepStatus

Frame = dict[str, Any]


class DeltaOrder:
    """Keeps a step's ``step_delta`` frames behind the frame that says the step is running.

    Deltas come straight from the step's thread while the durable frames
    take the way through the store, so the first tokens can overtake the
    StepStarted that announces them. A delta of an attempt whose running
    frame has not gone out yet is held until it does (or, if it never
    comes, e.g. a step started before the hub, for ``HOLD_S``). Runs on the
    loop thread only.
    """

    HOLD_S = 0.5

    def __init__(self, loop: asyncio.AbstractEventLoop, release: Callable[[list[Frame]], None]) -> None:
        self._loop = loop
        self._release = release
        self.running: set[tuple[Any, Any, Any]] = set()
        self.held: dict[tuple[Any, Any, Any], list[Frame]] = {}

    def durable(self, frames: list[Frame]) -> list[Frame]:
        """Note which attempts run; return ``frames`` with held deltas put in their place."""
        out: list[Frame] = []
        for frame in frames:
            if frame.get("type") != "flow_run_step_updated":
                out.append(frame)
                continue
            run_id, step_id = frame.get("run_id"), frame.get("step_id")
            if step_id is None:
                out.append(frame)
                if frame.get("run_status") in RUN_TERMINAL:
                    self.running = {k for k in self.running if k[0] != run_id}
                    for key in [k for k in self.held if k[0] == run_id]:
                        out[-1:-1] = self.held.pop(key)
                continue
            key = (run_id, step_id, frame.get("attempt"))
            if frame.get("status") == StepStatus.RUNNING:
                out.append(frame)
                self.running.add(key)
                out.extend(self.held.pop(key, ()))
            else:
                self.running.discard(key)
                out.extend(self.held.pop(key, ()))  # the attempt ended before its start went out
                out.append(frame)
        return out

    def ephemeral(self, frame: Frame) -> bool:
        """Whether ``frame`` may go out now (False: it is held, and released later)."""
        if frame.get("type") != "step_delta":
            return True
        key = (frame.get("run_id"), frame.get("step_id"), frame.get("attempt"))
        if key in self.running:
            return True
        if key not in self.held:
            self.held[key] = []
            self._loop.call_later(self.HOLD_S, self._expire, key)
        self.held[key].append(frame)
        return False

    def _expire(self, key: tuple[Any, Any, Any]) -> None:
        frames = self.held.pop(key, None)
        if frames:
            self.running.add(key)  # its running frame is not coming: let the rest through
            self._release(frames)

