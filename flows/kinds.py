"""Step kinds as a table: what each kind of step is, in the pure core's terms.

Everything in flows/ that behaves differently per kind reads it here (what
validation asks of a step, what ``decide`` does with a step that may run,
what StepStarted records, where the report puts its output, whether its
output is held to the evidence discipline), so a new kind is one member of
``StepKind`` and one row of ``KINDS`` in this layer (its builder, like
``flows.agent``, goes in flows/model.py; its executor in
``actors.step.EXECUTORS``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from enum import StrEnum


class StepKind(StrEnum):
    """What executes a step. Compares and encodes as its value (``StepKind.AGENT == "agent"``)."""

    AGENT = "agent"
    CODE = "code"
    APPROVAL = "approval"
    TASK = "task"
    MAP = "map"
    SUBFLOW = "subflow"


@dataclasses.dataclass(frozen=True)
class KindRules:
    """The pure rules of one kind of step."""

    kind: StepKind
    noun: str
    """How a message names a step of this kind: "an agent step"."""
    missing_prompt: str = ""
    """Why a step of this kind without a prompt is refused; "" when it needs none."""
    needs_persona: bool = False
    """Its persona names the system prompt (an unknown persona is refused at definition time)."""
    runs_function: bool = False
    """It calls the flow's Python function (``fn``: a callable is required, and the process
    driving the run must be able to import it)."""
    sends_prompt: bool = False
    """Its prompt is rendered when an attempt starts and sent to a model (fast mode's note and an
    anomaly's guidance are appended to it); StepStarted records the run's backend and model."""
    needs_agent_slot: bool = False
    """An attempt waits for one of the scheduler's agent slots before it starts."""
    pauses_for_person: bool = False
    """When it may run, it waits for a person instead (StepPaused, with its prompt rendered);
    their decision ends it. Only such a step may name ``on_reject`` steps."""
    streams_output: bool = False
    """Its attempts stream signs of life, so a silence is a stall (the anomaly watch)."""
    held_to_evidence: bool = False
    """An output citing no evidence is deferred in the report, not a finding (DESIGN §3a)."""
    report_section: str = ""
    """The report section its output goes to; "" when its persona decides (flows.report)."""
    backend: str = ""
    """What StepStarted records as its backend when it sends no prompt (a model's otherwise)."""
    fans_out: bool = False
    """It runs its inner step once per item of a list an earlier step produced (``flows.mapping``)."""
    launches_run: bool = False
    """It launches a child run of another flow and ends with the child's outcome (``flows.subflow``)."""


KINDS: Mapping[str, KindRules] = {
    StepKind.AGENT: KindRules(
        StepKind.AGENT, "an agent step", missing_prompt="an agent step needs a prompt", needs_persona=True,
        sends_prompt=True, needs_agent_slot=True, streams_output=True, held_to_evidence=True,
    ),
    StepKind.CODE: KindRules(StepKind.CODE, "a code step", runs_function=True, backend="code"),
    StepKind.APPROVAL: KindRules(
        StepKind.APPROVAL, "an approval step",
        missing_prompt="an approval step needs a prompt (what is the person asked?)",
        pauses_for_person=True, report_section="approvals",
    ),
    # A task of a task graph (DESIGN §12): its attempt runs the phases worktree .. cleanup in a git
    # worktree; its events are the Task* events (flows.tasks.lifecycle), its scheduling decide_tasks.
    StepKind.TASK: KindRules(
        StepKind.TASK, "a task", missing_prompt="a task needs a body (what is to be done?)", needs_persona=True,
        needs_agent_slot=True, report_section="tasks", backend="tasks",
    ),
    StepKind.MAP: KindRules(StepKind.MAP, "a map step", fans_out=True, backend="map"),
    StepKind.SUBFLOW: KindRules(StepKind.SUBFLOW, "a subflow step", launches_run=True, backend="subflow"),
}
"""Every kind's rules; tests/unit/test_kinds.py checks that each kind has a row."""


def kind_rules(kind: str) -> KindRules:
    """The rules of ``kind`` (a StepKind, or its value: they hash alike); KeyError for no such kind."""
    return KINDS[kind]
