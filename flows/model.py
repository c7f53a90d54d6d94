"""Flows and steps as a user writes them, and the snapshot a run pins.

A ``Flow`` is checked when it is defined: a mistake (a cycle, an unknown dep, a
reference to a step that is not an ancestor, a bad ``when``, ...) raises
FlowDefinitionError naming the flow, the step and the problem. ``Flow.snapshot``
resolves a band into the serialisable graph that RunLaunched pins.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import Enum
from typing import Any

import msgspec

from flows.errors import BatonError
from flows.kinds import StepKind

BANDS: tuple[str, ...] = ("small", "medium", "large")
CATEGORIES: tuple[str, ...] = ("Analysis", "Discovery", "Planning", "Authoring", "Review")
ANOMALY_POLICIES: tuple[str, ...] = ("notify", "nudge", "abort")


class TriggerRule(str, Enum):
    """When a step may run, given how its deps ended (Airflow's names and meaning)."""

    ALL_SUCCESS = "all_success"
    ONE_SUCCESS = "one_success"
    ALL_DONE = "all_done"
    NONE_FAILED = "none_failed"
    NONE_FAILED_MIN_ONE_SUCCESS = "none_failed_min_one_success"
    ALL_FAILED = "all_failed"
    ONE_FAILED = "one_failed"
    ALWAYS = "always"


class FlowDefinitionError(BatonError, ValueError):
    """A flow is not well defined; the message names the flow, step and problem."""

    def __init__(self, flow: str, step: str | None, problem: str) -> None:
        where = f"flow {flow!r}" + (f", step {step!r}" if step else "")
        super().__init__(f"{where}: {problem}")
        self.flow = flow
        self.step = step
        self.problem = problem


class StepSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One step of a pinned graph: everything needed to run, replay and render it."""

    id: str
    kind: StepKind
    label: str = ""
    persona: str = ""
    prompt: str = ""
    deps: tuple[str, ...] = ()
    trigger_rule: str = TriggerRule.ALL_SUCCESS.value
    when: str = ""
    retries: int = 0
    retry_delay_s: float = 1.0
    timeout_s: float = 0.0
    on_reject: tuple[str, ...] = ()
    on_anomaly: str = ""
    fn: str = ""
    four_eyes: bool = False  # an approval the run's launcher may not decide (flows.auth.check_four_eyes)
    on_timeout: str = ""  # an approval with timeout_s: "reject" or "approve" once it is due
    over: str = ""  # a map step: the $ref of the list it runs its inner step over
    item_kind: str = ""  # a map step: the kind of its inner step (agent or code), whose persona/prompt/fn it holds
    max_parallel: int = 0  # a map step: items at most under way at once
    item_timeout_s: float = 0.0  # a map step: each item's time limit (its inner step's timeout_s; 0 = none)
    item_retries: int = 0  # a map step: tries of a failed item after its first (its inner step's retries)
    item_retry_delay_s: float = 1.0  # a map step: the pause before an item is tried again
    flow: str = ""  # a subflow step: the flow of the child run it launches
    inputs: dict[str, str] = {}  # a subflow step: the child's inputs, each a template ($refs resolved)
    # An agent step that reads the run's workspace with the read-only tools when it has one (DESIGN §11);
    # 0 = the tool loop's default limit; None = the persona's (or the server's) temperature.
    tools: bool = False
    max_turns: int = 0
    max_tool_calls: int = 0
    temperature: float | None = None
    checks: tuple[tuple[str, ...], ...] = ()  # a task's checks, each an argv (DESIGN §12)
    source: str = ""  # a task's file, for messages that name it


class FlowSnapshot(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, dict=True):
    """The graph a run was launched with, band already applied.

    Its steps by id are kept in the instance's ``__dict__`` once first asked
    for (``step``: several times per step of a run); msgspec neither encodes,
    compares nor copies that dict.
    """

    name: str
    category: str = ""
    description: str = ""
    band: str = "medium"
    steps: tuple[StepSpec, ...] = ()
    on_anomaly: str = ""  # "" = not set: each kind of anomaly has its default (flows.anomaly)

    def step(self, step_id: str) -> StepSpec:
        """The step named ``step_id``; KeyError if the graph has none."""
        by_id: dict[str, StepSpec] | None = self.__dict__.get("_by_id")
        if by_id is None:  # the first of a repeated id wins, as a pass in order would find it
            by_id = self.__dict__["_by_id"] = {spec.id: spec for spec in reversed(self.steps)}
        try:
            return by_id[step_id]
        except KeyError:
            raise KeyError(step_id) from None


@dataclasses.dataclass(frozen=True)
class Step:
    """A step as written in a flow; build it with ``agent``, ``code`` or ``approval``."""

    id: str
    kind: StepKind
    persona: str = ""
    prompt: str = ""
    deps: tuple[str, ...] = ()
    trigger_rule: str = TriggerRule.ALL_SUCCESS.value
    when: str = ""
    retries: int = 0
    retry_delay_s: float = 1.0
    timeout_s: float = 0.0
    bands: tuple[str, ...] = BANDS
    on_reject: tuple[str, ...] = ()
    on_anomaly: str = ""
    label: str = ""
    fn: Callable[..., Any] | None = None
    four_eyes: bool = False
    on_timeout: str = ""
    over: str = ""
    item_kind: str = ""
    max_parallel: int = 0
    item_timeout_s: float = 0.0
    item_retries: int = 0
    item_retry_delay_s: float = 1.0
    flow: str = ""
    inputs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tools: bool = False
    max_turns: int = 0
    max_tool_calls: int = 0
    temperature: float | None = None
    inner: Step | None = dataclasses.field(default=None, repr=False, compare=False)  # a map's, to check it

    def spec(self) -> StepSpec:
        """The serialisable form of this step (the function by reference)."""
        return StepSpec(
            id=self.id,
            kind=self.kind,
            label=self.label or self.id,
            persona=self.persona,
            prompt=self.prompt,
            deps=self.deps,
            trigger_rule=self.trigger_rule,
            when=self.when,
            retries=self.retries,
            retry_delay_s=self.retry_delay_s,
            timeout_s=self.timeout_s,
            on_reject=self.on_reject,
            on_anomaly=self.on_anomaly,
            fn=function_ref(self.fn) if self.fn else "",
            four_eyes=self.four_eyes,
            on_timeout=self.on_timeout,
            over=self.over,
            item_kind=self.item_kind,
            max_parallel=self.max_parallel,
            item_timeout_s=self.item_timeout_s,
            item_retries=self.item_retries,
            item_retry_delay_s=self.item_retry_delay_s,
            flow=self.flow,
            inputs=dict(self.inputs),
            tools=self.tools,
            max_turns=self.max_turns,
            max_tool_calls=self.max_tool_calls,
            temperature=self.temperature,
        )


def function_ref(fn: Callable[..., Any]) -> str:
    """``module:qualname`` of a function, how a pinned code step names it."""
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


def _common(
    step_id: str,
    deps: Iterable[str] | None,
    trigger_rule: str | TriggerRule,
    when: str | None,
    retries: int,
    retry_delay_s: float,
    timeout_s: float | None,
    bands: Iterable[str] | None,
    label: str | None,
    on_anomaly: str | None,
) -> dict[str, Any]:
    return dict(
        id=step_id,
        deps=tuple(deps or ()),
        trigger_rule=trigger_rule.value if isinstance(trigger_rule, TriggerRule) else str(trigger_rule),
        when=when or "",
        retries=retries,
        retry_delay_s=retry_delay_s,
        timeout_s=float(timeout_s or 0.0),
        bands=tuple(bands) if bands is not None else BANDS,
        label=label or "",
        on_anomaly=on_anomaly or "",
    )


def agent(
    step_id: str,
    *,
    persona: str,
    prompt: str,
    deps: Iterable[str] | None = None,
    when: str | None = None,
    trigger_rule: str | TriggerRule = TriggerRule.ALL_SUCCESS,
    retries: int = 0,
    retry_delay_s: float = 1.0,
    timeout_s: float | None = None,
    bands: Iterable[str] | None = None,
    label: str | None = None,
    on_anomaly: str | None = None,
    tools: bool = False,
    max_turns: int = 0,
    max_tool_calls: int = 0,
    temperature: float | None = None,
) -> Step:
    """A step that sends ``prompt`` (with ``$refs`` resolved) to an agent backend.

    ``tools``: when the run has a workspace (a project), the step may read it
    with the read-only tools of DESIGN §11, up to ``max_turns`` model turns
    and ``max_tool_calls`` calls (0: the defaults, 20 and 50). Without a
    project the step runs on its prompt alone. ``temperature`` overrides the
    persona's.
    """
    return Step(
        kind=StepKind.AGENT,
        persona=persona,
        prompt=prompt,
        tools=tools,
        max_turns=max_turns,
        max_tool_calls=max_tool_calls,
        temperature=temperature,
        **_common(step_id, deps, trigger_rule, when, retries, retry_delay_s, timeout_s, bands, label, on_anomaly),
    )


def code(
    step_id: str,
    *,
    fn: Callable[..., Any],
    deps: Iterable[str] | None = None,
    when: str | None = None,
    trigger_rule: str | TriggerRule = TriggerRule.ALL_SUCCESS,
    retries: int = 0,
    retry_delay_s: float = 1.0,
    timeout_s: float | None = None,
    bands: Iterable[str] | None = None,
    label: str | None = None,
) -> Step:
    """A step that calls ``fn(ctx)``; it returns text or a dict, and raising fails it."""
    return Step(
        kind=StepKind.CODE,
        fn=fn,
        **_common(step_id, deps, trigger_rule, when, retries, retry_delay_s, timeout_s, bands, label, None),
    )


def approval(
    step_id: str,
    *,
    prompt: str,
    deps: Iterable[str] | None = None,
    when: str | None = None,
    trigger_rule: str | TriggerRule = TriggerRule.ALL_SUCCESS,
    on_reject: Iterable[str] | None = None,
    bands: Iterable[str] | None = None,
    label: str | None = None,
    four_eyes: bool = False,
    timeout_s: float | None = None,
    on_timeout: str = "reject",
) -> Step:
    """A gate that pauses the run until a person approves or rejects.

    Its output is the approver's comment (``$gate.output``). When rejected, the
    steps named in ``on_reject`` still run; every other dependent is skipped.
    ``four_eyes``: the person who launched the run may not decide it (403).
    ``timeout_s``: with no decision that long after it paused, a durable timer
    decides ``on_timeout`` ("reject" or "approve"); the decision names the timer.
    """
    step = Step(
        kind=StepKind.APPROVAL,
        prompt=prompt,
        on_reject=tuple(on_reject or ()),
        four_eyes=four_eyes,
        on_timeout=on_timeout if timeout_s else "",
        **_common(step_id, deps, trigger_rule, when, 0, 1.0, timeout_s, bands, label, None),
    )
    return step


def map(
    step_id: str,
    *,
    over: str,
    step: Step,
    max_parallel: int = 4,
    deps: Iterable[str] | None = None,
    when: str | None = None,
    trigger_rule: str | TriggerRule = TriggerRule.ALL_SUCCESS,
    retries: int = 0,
    retry_delay_s: float = 1.0,
    bands: Iterable[str] | None = None,
    label: str | None = None,
) -> Step:
    """A step that runs ``step`` (an agent or code step) once per item of the list ``over`` names
    (``$findings.output.items``), at most ``max_parallel`` at once; its output is the results in order.

    Each item's prompt (or code ``ctx.input``) sees ``$input.item`` and ``$input.index``. An empty
    list completes at once; an item that fails fails the map, and a retry runs only the items
    without a result. The map is one step to the graph: trigger rules see it whole.

    The inner step's ``timeout_s`` is each item's time limit: an item past it fails with
    "timeout after N s" and the others go on. Its ``retries`` are each item's: a failed item is tried
    again after ``retry_delay_s``, every try recorded, as a mapped task instance is retried in Airflow.
    The map's own ``retries`` run again, in a new attempt, the items left without a result. An inner
    agent with ``tools`` is refused (a map's agent items make one model call each).
    """
    if deps is None:
        deps = sorted({r.step for r in _refs(over) if not r.is_input})
    return Step(
        kind=StepKind.MAP,
        persona=step.persona,
        prompt=step.prompt,
        fn=step.fn,
        over=over,
        item_kind=step.kind.value,
        max_parallel=max_parallel,
        item_timeout_s=step.timeout_s,
        item_retries=step.retries,
        item_retry_delay_s=step.retry_delay_s,
        inner=step,
        **_common(step_id, deps, trigger_rule, when, retries, retry_delay_s, None, bands, label, None),
    )


def subflow(
    step_id: str,
    *,
    flow: str,
    inputs: Mapping[str, str] | None = None,
    deps: Iterable[str] | None = None,
    when: str | None = None,
    trigger_rule: str | TriggerRule = TriggerRule.ALL_SUCCESS,
    retries: int = 0,
    retry_delay_s: float = 1.0,
    timeout_s: float | None = None,
    bands: Iterable[str] | None = None,
    label: str | None = None,
) -> Step:
    """A step that launches a child run of ``flow`` and completes with its outcome (its report as output).

    ``inputs`` are the child's inputs, each a template (``{"question": "Dig into $triage.output"}``);
    without a question the child gets the run's. The child has its own stream, names its parent, and
    counts toward capacity; cancelling the parent cancels it. Deps default to the steps ``inputs`` refer to.
    """
    inputs = dict(inputs or {})
    if deps is None:
        deps = sorted({r.step for text in inputs.values() for r in _refs(text) if not r.is_input})
    return Step(
        kind=StepKind.SUBFLOW,
        flow=flow,
        inputs=inputs,
        **_common(step_id, deps, trigger_rule, when, retries, retry_delay_s, timeout_s, bands, label, None),
    )


def _refs(text: str) -> list[Any]:
    from flows import (
        template,  # late: template is light, but model stays importable first
    )

    return template.refs(text)


class Flow:
    """A named DAG of steps, validated when it is created.

    ``on_anomaly`` (notify, nudge or abort) applies to every step that sets
    none; left empty, each kind of anomaly has its default (flows.anomaly).
    ``personas`` is the set of persona names that exist; when given, a step
    naming another persona is refused. The catalogue passes the shipped set.
    """

    def __init__(
        self,
        name: str,
        steps: Sequence[Step],
        *,
        category: str = "Analysis",
        description: str = "",
        on_anomaly: str = "",
        personas: Iterable[str] | None = None,
    ) -> None:
        self.name = name
        self.category = category
        self.description = description
        self.on_anomaly = on_anomaly
        self.steps: tuple[Step, ...] = tuple(steps)
        self._by_id: dict[str, Step] = {}
        self._snapshots: dict[str, FlowSnapshot] = {}
        from flows import validate  # late: validate uses template/conditions

        validate.check_flow(self, set(personas) if personas is not None else _known_personas())
        self._by_id = {s.id: s for s in self.steps}

    def __repr__(self) -> str:
        return f"Flow({self.name!r}, {len(self.steps)} steps)"

    def step(self, step_id: str) -> Step:
        """The step named ``step_id``; KeyError if the flow has none."""
        return self._by_id[step_id]

    def function(self, step_id: str) -> Callable[..., Any] | None:
        """The function behind a code step, if this flow still has that step."""
        step = self._by_id.get(step_id)
        return step.fn if step else None

    @functools.cached_property
    def bands(self) -> tuple[str, ...]:
        """The bands at least one step runs in (asked at every launch: found once, the steps are a tuple)."""
        return tuple(b for b in BANDS if any(b in s.bands for s in self.steps))

    def snapshot(self, band: str = "medium") -> FlowSnapshot:
        """The graph a run in ``band`` pins.

        Steps not in the band are dropped; a step that depended on a dropped
        step depends on that step's deps instead (transitively), so the order
        the author wrote still holds. References to a dropped step resolve to
        empty text and show up as unresolved when the step starts.
        """
        if band not in BANDS:
            raise ValueError(f"unknown band {band!r}; bands are {', '.join(BANDS)}")
        if band in self._snapshots:
            return self._snapshots[band]
        kept = {s.id for s in self.steps if band in s.bands}
        specs = []
        for s in self.steps:
            if s.id not in kept:
                continue
            spec = s.spec()
            deps = _rewire(s.deps, kept, self._by_id)
            on_reject = tuple(d for d in s.on_reject if d in kept)
            specs.append(msgspec.structs.replace(spec, deps=deps, on_reject=on_reject))
        snapshot = FlowSnapshot(
            name=self.name,
            category=self.category,
            description=self.description,
            band=band,
            steps=tuple(specs),
            on_anomaly=self.on_anomaly,
        )
        self._snapshots[band] = snapshot  # a Flow does not change once defined
        return snapshot

    def describe(self) -> dict[str, Any]:
        """The catalogue entry: name, category, description, graph and bands."""
        return {
            "name": self.name,
            "category": self.category,
            "description": self.description,
            "bands": list(self.bands),
            "steps": [
                {
                    "step_id": s.id,
                    "kind": s.kind.value,
                    "agent": s.persona,
                    "label": s.label or s.id,
                    "deps": list(s.deps),
                    "trigger_rule": s.trigger_rule,
                    "when": s.when,
                    "bands": list(s.bands),
                }
                for s in self.steps
            ],
        }


def _rewire(deps: Sequence[str], kept: set[str], by_id: Mapping[str, Step]) -> tuple[str, ...]:
    out: list[str] = []
    stack = list(reversed(deps))
    seen: set[str] = set()
    while stack:
        dep = stack.pop()
        if dep in seen:
            continue
        seen.add(dep)
        if dep in kept:
            out.append(dep)
        else:
            stack.extend(reversed(by_id[dep].deps))
    return tuple(out)


def _known_personas() -> set[str]:
    from flows.personas import known

    return set(known())
