"""flows.text: text the read side cannot store is refused at the door, naming the field; text a
log already holds is shown with U+FFFD in place of what cannot be stored.

The door is the pure core's: launch (``flows.launch.prepare``) and the decisions
(``flows.decide.resume`` / ``cancel``), so the HTTP API and the CLI refuse alike.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flows import Flow, agent, approval
from flows.catalog import FlowRegistry
from flows.decide import cancel, resume
from flows.events import RunLaunched, RunStarted, StepPaused
from flows.launch import LaunchParams, prepare
from flows.state import RunState, evolve
from flows.text import (
    REPLACEMENT,
    UnstorableText,
    check_value,
    encodable,
    encodable_fields,
    encodable_value,
    find_unstorable,
    storable,
    storable_value,
)

FLOW = Flow("door", [agent("a", persona="investigator", prompt="Look: $input.question"),
                     approval("gate", deps=["a"], prompt="Ship?")])
REGISTRY = FlowRegistry([FLOW])
SURROGATE = "\udcff"  # what a command-line argument that is not UTF-8 decodes to (surrogateescape)


def launch(**kw: Any) -> RunLaunched:
    args: dict[str, Any] = {"flow": "door", "question": "Is it safe?", **kw}
    return prepare(REGISTRY, LaunchParams(**args), run_id="r1", now=1.0)


@pytest.mark.parametrize("field,kw", [
    ("flow", {"flow": "door\x00"}),
    ("question", {"question": "a\x00b"}),
    ("question", {"question": "a" + SURROGATE}),
    ("band", {"band": "small\x00"}),
    ("model", {"model": "qwen\ud800"}),
    ("project_id", {"project_id": "p\x00"}),
    ("launched_by", {"launched_by": "ana\x00"}),
    ("Idempotency-Key", {"idempotency_key": "k\x00"}),
    ("inputs.notes", {"inputs": {"notes": "x\x00"}}),
    ("inputs.deep.list[1]", {"inputs": {"deep": {"list": ["fine", "bad\udfff"]}}}),
    ("inputs", {"inputs": {"key\x00": "value"}}),
])
def test_launch_refuses_text_the_read_side_cannot_store_naming_the_field(field: str, kw: dict[str, Any]) -> None:
    with pytest.raises(UnstorableText) as caught:
        launch(**kw)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert ("NUL" in str(caught.value)) != ("surrogate" in str(caught.value))


def test_launch_takes_any_other_text() -> None:
    odd = "tab\t newline\n bell\x07 DEL\x7f emoji \U0001F600 plane 16 \U0010FFFD BOM \ufeff fffd \ufffd"
    event = launch(question=odd, inputs={"notes": odd, "n": 3, "odd\x01key": [odd]})
    assert event.input == {"question": odd, "notes": odd, "n": 3, "odd\x01key": [odd]}


def paused() -> RunState:
    state = RunState()
    for position, event in enumerate([
        launch(), RunStarted(run_id="r1", at=2.0), StepPaused(step_id="gate", prompt="Ship?", at=3.0),
    ], start=1):
        state = evolve(state, event, position)
    return state


@pytest.mark.parametrize("field,kw", [("comment", {"comment": "ok\x00"}), ("by", {"by": "bo" + SURROGATE})])
def test_a_decision_refuses_a_comment_or_name_it_cannot_store(field: str, kw: dict[str, Any]) -> None:
    for decision in ("approved", "rejected"):
        with pytest.raises(UnstorableText) as caught:
            resume(paused(), "gate", decision, 4.0, **kw)
        assert caught.value.field == field
    assert resume(paused(), "gate", "approved", 4.0, comment="fine \U0001F600")[0].comment == "fine \U0001F600"


@pytest.mark.parametrize("field,kw", [("reason", {"reason": "stop\x00"}), ("by", {"by": "\ud800"})])
def test_cancel_refuses_a_reason_or_name_it_cannot_store(field: str, kw: dict[str, Any]) -> None:
    with pytest.raises(UnstorableText) as caught:
        cancel(paused(), [], 4.0, **kw)
    assert caught.value.field == field


def test_the_escape_rule() -> None:
    """Each NUL and each lone surrogate becomes one U+FFFD; nothing else changes."""
    assert storable("a\x00b\ud800c\udfffd") == f"a{REPLACEMENT}b{REPLACEMENT}c{REPLACEMENT}d"
    assert storable_value({"k\x00": ["\x00", 1, None, {"x": "\udc80"}]}) == {
        f"k{REPLACEMENT}": [REPLACEMENT, 1, None, {"x": REPLACEMENT}]}
    text = "\x01\x1f\x7f \u2028 \ufffe \U0001F600"
    assert storable(text) is text


def test_check_value_walks_keys_values_and_lists() -> None:
    check_value("inputs", {"a": [1, 2.5, True, None, {"b": "fine"}]})
    with pytest.raises(UnstorableText) as caught:
        check_value("inputs", {"a": [{"b": "x\x00"}]})
    assert caught.value.field == "inputs.a[0].b"


@given(st.text(alphabet=st.characters(codec=None, categories=None)))
def test_storable_text_is_always_utf8_without_nul_and_unchanged_when_it_could_be_stored(text: str) -> None:
    out = storable(text)
    assert "\x00" not in out
    out.encode("utf-8")  # would raise on a surrogate
    assert len(out) == len(text)
    assert (out == text) == (find_unstorable(text) is None)


def test_what_a_step_produced_is_made_encodable_pairs_joined_lone_surrogates_replaced_nul_kept() -> None:
    """A model's surrogate pair split across two chunks is its character again; a byte that was not UTF-8
    (a lone surrogate, as surrogateescape keeps it) is one U+FFFD; NUL stays (the log holds it)."""
    assert encodable("Done \ud83d\ude00 here") == "Done \U0001F600 here"
    assert encodable("caf\udce9.txt") == f"caf{REPLACEMENT}.txt"
    assert encodable("\ude00\ud83d") == REPLACEMENT * 2  # (a pair in the wrong order is two lone ones)
    text = "a\x00b \U0001F600"
    assert encodable(text) is text
    assert encodable_value({"k\udc80": ("\ud83d\ude00", 1, None), "n": [{"x": "\udc80"}]}) == {
        f"k{REPLACEMENT}": ("\U0001F600", 1, None), "n": [{"x": REPLACEMENT}]}
    event = RunStarted(run_id="r1", reason="ok \udc80", at=1.0)
    assert encodable_fields(event).reason == f"ok {REPLACEMENT}" and encodable_fields(event).at == 1.0
    clean = RunStarted(run_id="r1", reason="ok", at=1.0)
    assert encodable_fields(clean) is clean


@given(st.text(alphabet=st.characters(codec=None, categories=None)))
def test_encodable_text_always_encodes_and_is_unchanged_when_it_did(text: str) -> None:
    out = encodable(text)
    out.encode("utf-8")  # would raise on a surrogate
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        assert out != text
    else:
        assert out is text
