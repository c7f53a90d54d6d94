"""A launch request is one frozen value from where it is made to ``prepare``."""

from __future__ import annotations

import dataclasses

import pytest

from flows import Flow, agent
from flows.catalog import FlowRegistry
from flows.launch import LaunchError, LaunchParams, prepare
from flows.workspace import Workspace

REGISTRY = FlowRegistry([Flow("ask", [agent("a", persona="investigator", prompt="Look: $input.question")])])


def test_the_value_cannot_change_on_its_way() -> None:
    given = {"repo": "x"}
    params = LaunchParams("ask", "Is it safe?", inputs=given)
    given["repo"] = "changed by the caller afterwards"
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.flow = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        params.inputs["repo"] = "y"  # type: ignore[index]
    assert dict(params.inputs) == {"repo": "x"}


def test_prepare_records_every_field_of_the_value() -> None:
    params = LaunchParams("ask", "Is it safe?", band="small", model="qwen", project_id="p1", inputs={"repo": "x"},
                          fast=True, launched_by="ana", idempotency_key="k1")
    pinned = Workspace(project_id="p1", root="/srv/p1", commit="a" * 40, branch="main")
    event = prepare(REGISTRY, params, run_id="r1", now=5.0, backend="openai", workspace=pinned)
    assert event.workspace == pinned
    assert (event.run_id, event.flow, event.band, event.model, event.backend, event.project_id, event.launched_by,
            event.idempotency_key, event.fast, event.at) == (
        "r1", "ask", "small", "qwen", "openai", "p1", "ana", "k1", True, 5.0)
    assert event.input == {"repo": "x", "question": "Is it safe?"}


def test_a_project_needs_its_pin_and_a_pin_needs_its_project() -> None:
    pinned = Workspace(project_id="p1", root="/srv/p1", commit="a" * 40)
    with pytest.raises(LaunchError, match="project_id"):
        prepare(REGISTRY, LaunchParams("ask", "q?", project_id="p1"), run_id="r1", now=0.0)
    with pytest.raises(LaunchError, match="project_id"):
        prepare(REGISTRY, LaunchParams("ask", "q?"), run_id="r1", now=0.0, workspace=pinned)
    with pytest.raises(LaunchError, match="project_id"):
        prepare(REGISTRY, LaunchParams("ask", "q?", project_id="p2"), run_id="r1", now=0.0, workspace=pinned)
