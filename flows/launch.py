"""Checking a launch request and turning it into RunLaunched (pure).

A launch request is one frozen value, ``LaunchParams``, from where it is
made (the HTTP route, the CLI, a Python caller of ``Engine.launch``) to
``prepare``, which checks it and builds the event. A new launch parameter
is a field here and a line in ``prepare``; the layers between pass the
value on without naming its fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from types import MappingProxyType
from typing import Any

from flows.catalog import FlowRegistry
from flows.errors import BatonError
from flows.events import RunLaunched
from flows.model import BANDS
from flows.text import check_text, check_value
from flows.workspace import Workspace

DEFAULT_BAND = "small"
"""The band of a launch that names none (DESIGN §7: band is optional; seed 002's default is small)."""


class LaunchError(BatonError, ValueError):
    """A launch request is not acceptable; ``field`` names what is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True)
class LaunchParams:
    """What a launch asks for, as one value: unchecked until ``prepare``.

    ``flow`` and ``question`` are required; ``band`` defaults to small;
    ``model`` "" means the engine's default model; ``inputs`` are the run's
    other inputs (read-only here: the value cannot change on its way);
    ``fast`` asks every agent step for a concise answer; ``launched_by`` is
    who asks; ``idempotency_key`` makes a repeated request answer the same run.
    """

    flow: str
    question: str
    _: KW_ONLY
    band: str = DEFAULT_BAND
    model: str = ""
    project_id: str = ""
    inputs: Mapping[str, Any] = field(default_factory=dict)
    fast: bool = False
    launched_by: str = ""
    idempotency_key: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", MappingProxyType(dict(self.inputs or {})))


def prepare(registry: FlowRegistry, params: LaunchParams, *, run_id: str, now: float,
            backend: str = "offline", workspace: Workspace | None = None,
            pin: Callable[[str], Workspace] | None = None) -> RunLaunched:
    """RunLaunched for a valid request; raises UnstorableText, UnknownFlow or LaunchError otherwise.

    Every text the request carries into the event is checked first
    (``flows.text``): one the read side cannot store is refused here, where
    the person who sent it hears of it, not by the projector later. ``fast``
    asks every agent step for a concise answer (flows.decide.FAST_NOTE).
    ``run_id``, ``now`` and ``backend`` are the engine's, not the request's;
    so is ``workspace``: the pin of ``params.project_id``, required exactly
    when a project is named. The shell reads git for it, and passes either
    the pin or ``pin(project_id)``, called once every other check passed (so
    a request wrong in several ways is refused for the same field either
    way; an unknown project raises ``flows.projects.UnknownProject``).
    """
    flow, question, band, inputs = params.flow, params.question, params.band, params.inputs
    for name, text in (("flow", flow), ("question", question), ("band", band), ("model", params.model),
                       ("project_id", params.project_id), ("launched_by", params.launched_by),
                       ("Idempotency-Key", params.idempotency_key)):
        if isinstance(text, str):
            check_text(name, text)
    check_value("inputs", dict(inputs))
    definition = registry.get(flow)
    if not isinstance(question, str) or not question.strip():
        raise LaunchError("question", "a run needs a non-empty question")
    if band not in BANDS:
        raise LaunchError("band", f"unknown band {band!r}; bands are {', '.join(BANDS)}")
    if band not in definition.bands:
        raise LaunchError("band", f"flow {flow!r} has no steps in band {band!r}")
    extra = dict(inputs)
    if "question" in extra and extra["question"] != question:
        raise LaunchError("inputs.question", "give the question once, as `question`")
    extra["question"] = question
    if params.project_id and workspace is None and pin is not None:
        workspace = pin(params.project_id)
    if bool(params.project_id) != (workspace is not None) or (
            workspace is not None and workspace.project_id != params.project_id):
        raise LaunchError("project_id", f"project {params.project_id!r} was not pinned to a workspace "
                                        "(a launch with a project needs its pin)")
    return RunLaunched(
        run_id=run_id,
        flow=flow,
        snapshot=definition.snapshot(band),
        band=band,
        model=params.model,
        backend=backend,
        input=extra,
        project_id=params.project_id,
        launched_by=params.launched_by,
        idempotency_key=params.idempotency_key,
        fast=params.fast,
        workspace=workspace,
        at=now,
    )
