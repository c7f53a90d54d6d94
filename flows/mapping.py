"""Map steps: one inner agent or code step per item of a list known only at run time (pure).

A map step starts like any step (StepStarted, which records the list it goes
over in ``items``); each item's result is recorded as it arrives
(MapItemCompleted / MapItemFailed, with its index and the item); once every
item has ended, ``gather`` decides the map's own outcome: StepCompleted whose
output is the results in order (as JSON; ``$map.output.results`` is the
list), or StepFailed naming the items that failed. A retry, or a new attempt
after a restart, runs only the items without a result. To the graph the map
is one step: trigger rules see only its own status.
"""

from __future__ import annotations

import json
from typing import Any

from flows import template
from flows.events import (
    Event,
    MapItemCompleted,
    MapItemFailed,
    StepCompleted,
    StepFailed,
    StepStarted,
)
from flows.model import StepSpec
from flows.state import RunState
from flows.status import StepStatus

MAX_ITEMS = 1024
"""The longest list a map step goes over (Airflow's ``max_map_length``): a model that lists 100,000
"findings" fails the map, naming the count, rather than starting 100,000 model calls."""


def items_of(state: RunState, spec: StepSpec) -> tuple[list[Any] | None, str]:
    """The list ``spec.over`` names, or None and why it is not one."""
    [ref] = template.refs(spec.over)
    inputs = state.launched.input if state.launched else {}
    value, found = template.resolve(ref, inputs=inputs, outputs=state.outputs(), fields=state.fields())
    if not found:
        return None, f"over {spec.over}: nothing there (the step did not complete, or has no such field)"
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None, f"over {spec.over}: the text there is not a JSON list"
    if not isinstance(value, list):
        return None, f"over {spec.over}: a {type(value).__name__}, not a list"
    if len(value) > MAX_ITEMS:
        return None, f"over {spec.over}: {len(value):,} items, more than a map goes over ({MAX_ITEMS:,})"
    return value, ""


def started(state: RunState, spec: StepSpec, now: float) -> list[Event]:
    """A map step may run: StepStarted with its items; with no items it completes at once, and with
    no list at all it fails (its retries cannot change what an upstream step recorded)."""
    st = state.steps[spec.id]
    items, problem = items_of(state, spec)
    attempt = st.attempt + 1
    begin = StepStarted(step_id=spec.id, attempt=attempt, kind=spec.kind, persona=spec.persona, backend="map",
                        items=items or [], at=now)
    if items is None:
        return [begin, StepFailed(step_id=spec.id, attempt=attempt, error=problem, at=now)]
    if not items:
        return [begin, _gathered(spec.id, attempt, [], now)]
    return [begin]


def item_input(state: RunState, step_id: str, index: int) -> dict[str, Any]:
    """The input an item sees: the run's, with ``item`` and ``index`` (``$input.item``, ``ctx.input``)."""
    inputs = dict(state.launched.input) if state.launched else {}
    return {**inputs, "item": state.steps[step_id].items[index], "index": index}


def item_prompt(state: RunState, step_id: str, index: int) -> str:
    """The prompt sent for one item of an agent map (``$input.item`` resolved to that item)."""
    prompt, _ = template.render(state.spec(step_id).prompt, inputs=item_input(state, step_id, index),
                                outputs=state.outputs(), fields=state.fields())
    return prompt


def to_run(state: RunState, step_id: str) -> list[int]:
    """The items of a running map that have no result yet, in order."""
    st = state.steps[step_id]
    return [i for i in range(len(st.items)) if i not in st.item_outputs]


def item_ended(state: RunState, step_id: str, attempt: int, index: int, now: float, *, output: str = "",
               error: str = "", failed: bool = False, prompt: str = "", duration_s: float = 0.0) -> list[Event]:
    """MapItemCompleted or MapItemFailed for an item of the current attempt (nothing for a stale one)."""
    st = state.steps.get(step_id)
    if st is None or st.status != StepStatus.RUNNING or st.attempt != attempt or state.terminal:
        return []
    if index in st.item_outputs or not 0 <= index < len(st.items):
        return []
    item = st.items[index]
    if failed:
        return [MapItemFailed(step_id=step_id, attempt=attempt, index=index, item=item, error=error,
                              duration_s=duration_s, at=now)]
    return [MapItemCompleted(step_id=step_id, attempt=attempt, index=index, item=item, output=output,
                             prompt=prompt, duration_s=duration_s, at=now)]


def unfinished(state: RunState, step_id: str) -> list[int]:
    """The items of the current attempt that have neither a result nor a failure."""
    st = state.steps[step_id]
    return [i for i in range(len(st.items)) if i not in st.item_outputs and i not in st.item_errors]


def gather(state: RunState, step_id: str) -> tuple[str, str]:
    """Once every item has ended: (the results in order as JSON, "") or ("", why the map failed)."""
    st = state.steps[step_id]
    if st.item_errors:
        failed = sorted(st.item_errors)
        first = st.item_errors[failed[0]]
        return "", f"{len(failed)} of {len(st.items)} items failed (indexes {failed}); item {failed[0]}: {first}"
    results = [st.item_outputs[i] for i in range(len(st.items))]
    return _output(results), ""


def _output(results: list[str]) -> str:
    return json.dumps({"results": results}, ensure_ascii=False)


def _gathered(step_id: str, attempt: int, results: list[str], now: float) -> StepCompleted:
    return StepCompleted(step_id=step_id, attempt=attempt, output=_output(results), fields={"results": results},
                         at=now)
