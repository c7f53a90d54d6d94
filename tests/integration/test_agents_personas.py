"""The persona files, the PERSONAS list and persona_text agree."""

from __future__ import annotations

from importlib import resources

import pytest

from actors.agents import UnknownPersona, persona_names, persona_text
from flows.personas import PERSONAS


def test_the_markdown_files_and_personas_match_exactly():
    files = {entry.name for entry in resources.files("flows.personas").iterdir()
             if entry.name.endswith(".md")}
    assert files == {f"{name}.md" for name in PERSONAS}
    assert persona_names() == PERSONAS


@pytest.mark.parametrize("name", sorted(PERSONAS))
def test_each_persona_is_focused_and_asks_for_evidence(name):
    text = persona_text(name)
    assert 15 <= len(text.splitlines()) <= 40
    assert "E1" in text
    assert "No evidence found." in text
    assert "## Deferred (unverified)" in text
    assert "trust class" in text


def test_the_triager_and_validator_emit_the_fields_flows_test():
    assert "severity: high" in persona_text("triager")
    assert "low, medium, high, critical" in persona_text("triager")
    assert "verdict: upheld" in persona_text("validator")


@pytest.mark.parametrize("name", ["nobody", "../__init__", "triager.md", ""])
def test_an_unknown_persona_is_a_clear_key_error(name):
    with pytest.raises(KeyError) as err:
        persona_text(name)
    assert isinstance(err.value, UnknownPersona)
    assert "unknown persona" in str(err.value) and "triager" in str(err.value)
