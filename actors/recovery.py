"""Which unfinished runs a process takes over, and in which phase (DESIGN §4): what the orchestrator's
recovery decides before it registers them.

A run the read tables show parked at an approval (``ReadModel.open_runs``: paused, nothing of its own
to do, no event after their checkpoint, no timer due yet) is found from them alone, as paused with its
timer: its stream is read only when something touches it (a command, its timer), as Temporal loads a
workflow waiting on a signal. Every other unfinished run is read, decoded and folded here, and left
out when another live node drives it.
"""

from __future__ import annotations

import logging
from collections.abc import Container
from dataclasses import dataclass

from actors.context import EngineContext
from actors.runlog import KnownRuns, ParkedRun, driven_elsewhere, load_many_with_owner, parked_runs, unended_runs
from actors.scheduler import Phase
from flows.decide import has_work
from flows.state import RunState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Found:
    """An unfinished run to take over: its phase, its state when it was read (``None``: parked from the
    read tables), and its approval timer when parked from them (``None``: none, or not known yet)."""

    run_id: str
    flow: str
    since: float  # launched at
    phase: Phase
    state: RunState | None
    timer_at: float | None


def phase_found(state: RunState, now: float) -> Phase:
    """The phase of a run found in the log unfinished (recovered, or driven again after a failure).

    A run waiting only for a person holds no thread and no room; one paused
    with other work (a retry due, a step to recover) is in progress.
    """
    if state.status == "queued":
        return Phase.QUEUED
    if state.status == "paused" and not has_work(state, now):
        return Phase.PAUSED
    return Phase.ACTIVE


def open_runs(ctx: EngineContext) -> KnownRuns | None:
    """``(position, {run: launch position}, {run: ParkedRun})``: the runs not ended as the read tables
    last knew, the position the log must be read after to know the rest, and the runs parked at an
    approval; None when they cannot say (the whole log is read)."""
    if ctx.open_runs is None:
        return None
    try:
        return ctx.open_runs()
    except Exception:  # tables missing or the query failed: the log alone answers
        log.warning("recovery reads the whole log: the read tables could not list open runs", exc_info=True)
        return None


def unfinished(ctx: EngineContext, live: set[str], now: float, known_here: Container[str]) -> list[Found]:
    """The runs not ended that no live process drives but this one (``live``: the live nodes), in launch
    order, leaving out ``known_here`` (runs this process drives already). Raises StoreError."""
    node = ctx.config.node
    known = open_runs(ctx)
    touched: set[str] = set()
    unended = [r for r in unended_runs(ctx.store, known, touched) if r not in known_here]
    parked = parked_runs(known)
    lazy: dict[str, ParkedRun] = {}
    for run_id in unended:
        item = parked.get(run_id)
        if item is not None and run_id not in touched and (item[2] is None or item[2] > now):
            lazy[run_id] = item
    loaded: dict[str, RunState] = {}
    for run_id, state, _history, last_node in load_many_with_owner(ctx, [r for r in unended if r not in lazy]):
        if state.terminal or state.launched is None:
            continue
        if driven_elsewhere(state, last_node, node, live):
            log.info("run %s is driven by %s; not recovering it", run_id, last_node)
            continue
        loaded[run_id] = state
    found: list[Found] = []
    for run_id in unended:
        if run_id in lazy:
            flow, launched_at, due = lazy[run_id]
            found.append(Found(run_id, flow, launched_at, Phase.PAUSED, None, due))
        elif (folded := loaded.get(run_id)) is not None:
            assert folded.launched is not None
            found.append(Found(run_id, folded.launched.flow, folded.launched_at, phase_found(folded, now), folded,
                               None))
    return found
