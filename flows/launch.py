"""Checking a launch request and turning it into RunLaunched (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flows.catalog import FlowRegistry
from flows.events import RunLaunched
from flows.errors import BatonError
from flows.model import BANDS
from flows.text import check_text, check_value

DEFAULT_BAND = "small"
"""The band of a launch that names none (DESIGN §7: band is optional; seed 002's default is small)."""


class LaunchError(BatonError, ValueError):
    """A launch request is not acceptable; ``field`` names what is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def prepare(
    registry: FlowRegistry,
    *,
    run_id: str,
    now: float,
    flow: str,
    question: str,
    band: str = DEFAULT_BAND,
    model: str = "",
    backend: str = "offline",
    project_id: str = "",
    inputs: Mapping[str, Any] | None = None,
    launched_by: str = "",
    idempotency_key: str = "",
    fast: bool = False,
) -> RunLaunched:
    """RunLaunched for a valid request; raises UnstorableText, UnknownFlow or LaunchError otherwise.

    Every text the request carries into the event is checked first
    (``flows.text``): one the read side cannot store is refused here, where
    the person who sent it hears of it, not by the projector later. ``fast``
    asks every agent step for a concise answer (flows.decide.FAST_NOTE).
    """
    for field, text in (("flow", flow), ("question", question), ("band", band), ("model", model),
                        ("project_id", project_id), ("launched_by", launched_by),
                        ("Idempotency-Key", idempotency_key)):
        if isinstance(text, str):
            check_text(field, text)
    check_value("inputs", dict(inputs or {}))
    definition = registry.get(flow)
    if not isinstance(question, str) or not question.strip():
        raise LaunchError("question", "a run needs a non-empty question")
    if band not in BANDS:
        raise LaunchError("band", f"unknown band {band!r}; bands are {', '.join(BANDS)}")
    if band not in definition.bands:
        raise LaunchError("band", f"flow {flow!r} has no steps in band {band!r}")
    extra = dict(inputs or {})
    if "question" in extra and extra["question"] != question:
        raise LaunchError("inputs.question", "give the question once, as `question`")
    extra["question"] = question
    return RunLaunched(
        run_id=run_id,
        flow=flow,
        snapshot=definition.snapshot(band),
        band=band,
        model=model,
        backend=backend,
        input=extra,
        project_id=project_id,
        launched_by=launched_by,
        idempotency_key=idempotency_key,
        fast=fast,
        at=now,
    )
