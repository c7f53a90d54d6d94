"""The three places a status is kept, side by side, for tests that check they agree.

``views(records)`` folds one run's recorded events three ways and gives, after
every event, ``{"fold": ..., "rows": ..., "frames": ...}``, each a pair
``(run status, {step_id: step status})``:

- ``fold``: ``flows.state.evolve`` (what the engine decides on);
- ``rows``: ``projections.apply`` on an in-memory workset (the projector's
  row code, without the database);
- ``frames``: :class:`FrameFold` over ``projections.frames`` (what a stream
  consumer such as the web console shows).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from eventstore import RecordedEvent
from flows.events import Event
from flows.state import RunState, evolve
from flows.status import RunStatus, StepStatus, run_status, takes_run_event
from projections import Framer
from projections.apply import Workset, apply

View = tuple[str, dict[str, str]]


class FrameFold:
    """What a stream consumer knows of one run from its frames, folded with the rules of ``flows.status``.

    Step frames carry no run status (it depends on the other steps), so the run's
    running-or-paused is worked out with ``run_status``, as runmodel.js does.
    """

    def __init__(self) -> None:
        self.status = ""
        self.steps: dict[str, str] = {}
        self.retrying: dict[str, bool] = {}

    def take(self, frame: dict[str, Any]) -> None:
        """Fold one frame in."""
        if frame["type"] == "flow_run_started":
            if self.status:
                return  # a run is launched once
            self.status = RunStatus.QUEUED
            self.steps = {s["step_id"]: StepStatus.PENDING for s in frame["steps"]}
            self.retrying = dict.fromkeys(self.steps, False)
        elif frame["type"] == "flow_run_step_updated" and frame["step_id"] is None:
            if takes_run_event(self.status):
                self.status = frame["run_status"]
        elif frame["type"] == "flow_run_step_updated":
            step_id = frame["step_id"]
            self.steps[step_id] = frame["status"]
            self.retrying[step_id] = bool(frame.get("will_retry"))
            self.status = run_status(self.status, ((s, self.retrying[k]) for k, s in self.steps.items()))

    @property
    def view(self) -> View:
        return self.status, dict(self.steps)


def views(records: Sequence[RecordedEvent], decode: Callable[[RecordedEvent], Event]) -> list[dict[str, View]]:
    """For each prefix of one run's log: its statuses as the fold, the rows and the frames have them."""
    run_id = records[0].stream_id.removeprefix("run-")
    state = RunState(run_id=run_id)
    work = Workset()
    framer = Framer()
    frames = FrameFold()
    out = []
    for rec in records:
        event = decode(rec)
        state = evolve(state, event, rec.position)
        apply(work, [(run_id, event, rec.position, rec.version)])
        for frame in framer.frames(rec):
            frames.take(frame)
        rows = work.runs[run_id]
        out.append({
            "fold": (state.status, {sid: st.status for sid, st in state.steps.items()}),
            "rows": (rows.run["status"], {sid: row["status"] for sid, row in rows.steps.items()}),
            "frames": frames.view,
        })
    return out
