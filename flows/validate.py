"""Definition-time checks of a flow: every message names flow, step and problem."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from flows import conditions, template
from flows.kinds import StepKind, kind_rules
from flows.model import (
    ANOMALY_POLICIES,
    BANDS,
    CATEGORIES,
    FlowDefinitionError,
    TriggerRule,
)

ON_TIMEOUT = ("reject", "approve")  # what an approval's timer decides

if TYPE_CHECKING:
    from flows.model import Flow, Step

STEP_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
RESERVED_IDS = frozenset({"input"})
RULES = frozenset(r.value for r in TriggerRule)

Fail = Callable[[str | None, str], None]
"""Raises FlowDefinitionError naming the flow, the step (None: the flow itself) and the problem."""


def check_flow(flow: Flow, personas: set[str]) -> None:
    """Raise FlowDefinitionError for the first problem found in ``flow``."""
    name = flow.name

    def fail(step: str | None, problem: str) -> None:
        raise FlowDefinitionError(name, step, problem)

    if not name or not STEP_ID.match(name):
        fail(None, "a flow needs a name of letters, digits, '-' or '_'")
    if flow.category not in CATEGORIES:
        fail(None, f"unknown category {flow.category!r}; categories are {', '.join(CATEGORIES)}")
    if flow.on_anomaly and flow.on_anomaly not in ANOMALY_POLICIES:
        fail(None, f"unknown anomaly policy {flow.on_anomaly!r}; policies are {', '.join(ANOMALY_POLICIES)}")
    if not flow.steps:
        fail(None, "a flow needs at least one step")

    by_id: dict[str, Step] = {}
    for step in flow.steps:
        if not STEP_ID.match(step.id or ""):
            fail(step.id or None, "a step id is letters, digits, '-' or '_', starting with a letter")
        if step.id in RESERVED_IDS:
            fail(step.id, f"{step.id!r} is reserved ($input refers to the run's input)")
        if step.id in by_id:
            fail(step.id, "duplicate step id")
        by_id[step.id] = step

    for step in flow.steps:
        _check_step(step, by_id, personas, fail)

    order = _topological(flow.steps, fail)
    ancestors = _ancestors(order, by_id)
    for step in flow.steps:
        _check_refs(step, ancestors[step.id], fail)
        for target in step.on_reject:
            if step.id not in ancestors.get(target, set()):
                fail(step.id, f"on_reject names {target!r}, which does not depend on this approval")


def _whole(value: object) -> bool:
    """A whole number >= 0 (not a bool, not 1.5)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _seconds(value: object) -> bool:
    """A finite number of seconds >= 0 (not a bool, not inf or NaN)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _check_step(step: Step, by_id: dict[str, Step], personas: set[str], fail: Fail) -> None:
    if step.trigger_rule not in RULES:
        fail(step.id, f"unknown trigger rule {step.trigger_rule!r}; rules are {', '.join(sorted(RULES))}")
    for dep in step.deps:
        if dep == step.id:
            fail(step.id, "a step cannot depend on itself")
        if dep not in by_id:
            fail(step.id, f"unknown dep {dep!r}")
    if len(set(step.deps)) != len(step.deps):
        fail(step.id, "a dep is listed twice")
    if not step.bands or not set(step.bands) <= set(BANDS):
        fail(step.id, f"bands must be a non-empty subset of {', '.join(BANDS)} (got {list(step.bands)})")
    # What the snapshot records must read back as it was: 1.5 retries, or an infinite or NaN number of
    # seconds (JSON null), made a RunLaunched its own run could no longer decode.
    if not _whole(step.retries):
        fail(step.id, f"retries must be a whole number >= 0, got {step.retries!r}")
    for name in ("retry_delay_s", "timeout_s"):
        if not _seconds(getattr(step, name)):
            fail(step.id, f"{name} must be a finite number of seconds >= 0, got {getattr(step, name)!r}")
    if step.on_anomaly and step.on_anomaly not in ANOMALY_POLICIES:
        fail(step.id, f"unknown anomaly policy {step.on_anomaly!r}; policies are {', '.join(ANOMALY_POLICIES)}")
    for name in ("max_turns", "max_tool_calls"):
        value = getattr(step, name)
        if not _whole(value):
            fail(step.id, f"{name} must be a whole number >= 0 (0: the default), got {value!r}")
    temperature = step.temperature
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
                                    or not 0 <= temperature <= 2):
        fail(step.id, f"temperature must be a number from 0 to 2, got {temperature!r}")
    kind = kind_rules(step.kind)
    if step.on_reject and not kind.pauses_for_person:
        fail(step.id, "only an approval step can have on_reject")
    if kind.fans_out:
        _check_map(step, personas, fail)
    if kind.launches_run and not step.flow:
        fail(step.id, "a subflow step needs the name of the flow it launches")
    if step.inputs and not kind.launches_run:
        fail(step.id, "only a subflow step has inputs")
    if step.on_timeout and step.on_timeout not in ON_TIMEOUT:
        fail(step.id, f"on_timeout must be {' or '.join(repr(o) for o in ON_TIMEOUT)}, not {step.on_timeout!r}")
    if kind.needs_persona:
        if not step.persona:
            fail(step.id, f"{kind.noun} needs a persona")
        if step.persona not in personas:
            fail(step.id, f"unknown persona {step.persona!r}; personas are {', '.join(sorted(personas))}")
    if kind.missing_prompt and not step.prompt.strip():
        fail(step.id, kind.missing_prompt)
    if kind.runs_function and not callable(step.fn):
        fail(step.id, f"{kind.noun} needs a callable fn")
    if kind.runs_function:
        _check_named(step, fail)
    if step.when:
        try:
            conditions.parse(step.when)
        except conditions.ConditionError as exc:
            fail(step.id, f"bad when: {exc}")


def _check_map(step: Step, personas: set[str], fail: Fail) -> None:
    """A map step: a list to go over, an inner agent or code step that is itself well defined."""
    over = template.refs(step.over)
    if len(over) != 1 or over[0].text != step.over.strip():
        fail(step.id, f"over must be one $ref to a list (e.g. $findings.output.items), not {step.over!r}")
    if not _whole(step.max_parallel) or step.max_parallel < 1:
        fail(step.id, f"max_parallel must be a whole number, at least 1 (got {step.max_parallel!r})")
    if step.item_kind not in (StepKind.AGENT.value, StepKind.CODE.value):
        fail(step.id, f"a map step runs an agent or a code step per item, not {step.item_kind or 'nothing'}")
    inner = kind_rules(step.item_kind)
    if inner.needs_persona and step.persona not in personas:
        fail(step.id, f"unknown persona {step.persona!r}; personas are {', '.join(sorted(personas))}")
    if inner.missing_prompt and not step.prompt.strip():
        fail(step.id, inner.missing_prompt)
    if inner.runs_function and not callable(step.fn):
        fail(step.id, f"{inner.noun} needs a callable fn")
    if inner.runs_function:
        _check_named(step, fail)
    if not _seconds(step.item_timeout_s):
        fail(step.id, f"its inner step's timeout_s must be a finite number of seconds >= 0, got {step.item_timeout_s!r}")
    if not _whole(step.item_retries):
        fail(step.id, f"its inner step's retries must be a whole number >= 0, got {step.item_retries!r}")
    if not _seconds(step.item_retry_delay_s):
        fail(step.id, f"its inner step's retry_delay_s must be a finite number of seconds >= 0, "
                      f"got {step.item_retry_delay_s!r}")
    written = step.inner
    if written is not None and written.tools:
        fail(step.id, f"its inner step {written.id!r} has tools=True, but a map's agent items do not use the "
                      "workspace tools")


def _check_named(step: Step, fail: Fail) -> None:
    """A code step's fn has a name baton finds again after a restart: the snapshot pins it as
    ``module:qualname`` and a later process looks that up among the registered flows' steps. A
    ``functools.partial`` or a callable object has no qualname: its pin would be its repr, memory address
    and all, found by no later process, so every run of it stopped at that step after a restart."""
    if getattr(step.fn, "__qualname__", None) is None or getattr(step.fn, "__module__", None) is None:
        fail(step.id, f"fn {step.fn!r} has no module and qualified name baton can find again after a restart "
                      "(a functools.partial or a callable object): give a function (def or lambda) that calls it")


def _topological(steps: Iterable[Step], fail: Fail) -> list[str]:
    """Order ids so each comes after its deps; a cycle is reported with its path."""
    steps = list(steps)
    by_id = {s.id: s for s in steps}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    order: list[str] = []

    def visit(sid: str, path: list[str]) -> None:
        mark = state.get(sid)
        if mark == 2:
            return
        if mark == 1:
            cycle = path[path.index(sid):] + [sid]
            fail(sid, "cycle: " + " -> ".join(cycle))
        state[sid] = 1
        path.append(sid)
        for dep in by_id[sid].deps:
            visit(dep, path)
        path.pop()
        state[sid] = 2
        order.append(sid)

    for s in steps:
        visit(s.id, [])
    return order


def _ancestors(order: list[str], by_id: dict[str, Step]) -> dict[str, set[str]]:
    result: dict[str, set[str]] = {}
    for sid in order:  # deps first, so their sets are ready
        acc: set[str] = set()
        for dep in by_id[sid].deps:
            acc.add(dep)
            acc |= result[dep]
        result[sid] = acc
    return result


def _check_refs(step: Step, ancestors: set[str], fail: Fail) -> None:
    found = [("prompt", ref) for ref in template.refs(step.prompt)]
    found += [("over", ref) for ref in template.refs(step.over)]
    found += [(f"inputs.{name}", ref) for name, text in step.inputs.items() for ref in template.refs(text)]
    if step.when:
        # The parser's refs, not a scan of the text: "$x.output" inside a quoted
        # string is a literal, and _check_step has already parsed the condition.
        found += [("when", ref) for ref in conditions.parse(step.when).refs]
    for where, ref in found:
        if not ref.is_input and ref.step not in ancestors:
            fail(step.id, f"{where} refers to {ref.text}, but {ref.step!r} is not an ancestor of this step")
