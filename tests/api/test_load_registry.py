"""Flows of user modules (--flows / BATON_FLOWS): added to the catalogue, never silently replacing a flow."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from api.runtime import FlowsImportError, load_registry
from flows.catalog import builtin

FLOW = '''
from flows import Flow, code

def done(ctx):
    return "done"

{var} = Flow({name!r}, category="Analysis", description="a test flow", steps=[code("only", fn=done)])
'''


@pytest.fixture
def write_module(tmp_path, monkeypatch):
    """``write_module(source)``: a module of that source, importable under a fresh name; returns the name."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(source: str) -> str:
        name = f"user_flows_{uuid.uuid4().hex[:8]}"
        Path(tmp_path, f"{name}.py").write_text(source)
        return name
    return write


def test_a_user_flow_named_like_a_built_in_one_is_refused_naming_both_modules(write_module):
    mine = write_module(FLOW.format(var="research", name="research"))
    with pytest.raises(FlowsImportError) as refused:
        load_registry([mine])
    message = str(refused.value)
    assert repr(mine) in message and "'flows.catalog.research'" in message and "'research'" in message


def test_two_user_modules_with_a_flow_of_the_same_name_are_refused(write_module):
    first = write_module(FLOW.format(var="triage", name="my-triage"))
    second = write_module(FLOW.format(var="other", name="my-triage"))
    with pytest.raises(FlowsImportError) as refused:
        load_registry([first, second])
    assert repr(first) in str(refused.value) and repr(second) in str(refused.value)


def test_the_same_flow_object_found_twice_is_not_a_clash(write_module):
    first = write_module(FLOW.format(var="triage", name="my-triage"))
    again = write_module(f"from {first} import triage\nfrom flows.catalog.research import research\n")
    registry = load_registry([first, again, first])
    assert "my-triage" in registry and len(registry) == len(builtin()) + 1
    assert registry.get("research") is builtin().get("research")
