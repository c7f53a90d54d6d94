"""map and subflow steps in the pure core: definition checks, what decide starts, how a map gathers."""

from __future__ import annotations

from typing import Any

import pytest

from flows import Flow, FlowDefinitionError, agent, code, map, subflow
from flows.decide import decide
from flows.events import (
    MapItemCompleted,
    MapItemFailed,
    RunLaunched,
    RunStarted,
    StepCompleted,
    StepFailed,
)
from flows.mapping import gather, item_ended, item_prompt, to_run
from flows.state import fold


def listed(ctx: Any) -> dict[str, Any]:
    return {"items": ["a", "b"]}


def _refused(*steps: Any) -> str:
    with pytest.raises(FlowDefinitionError) as caught:
        Flow("bad", list(steps))
    return caught.value.problem


def test_definitions_are_checked() -> None:
    inner = agent("x", persona="reviewer", prompt="Check $input.item")
    assert "over must be one $ref" in _refused(code("l", fn=listed), map("m", over="items", step=inner, deps=["l"]))
    assert "not an ancestor" in _refused(code("l", fn=listed), map("m", over="$l.output.items", step=inner, deps=[]))
    assert _refused(code("l", fn=listed), map("m", over="$l.output.items", step=inner, max_parallel=0)) == (
        "max_parallel must be a whole number, at least 1 (got 0)")
    assert _refused(code("l", fn=listed), map("m", over="$l.output.items", step=inner, max_parallel=2.5)) == (
        "max_parallel must be a whole number, at least 1 (got 2.5)")
    assert "unknown persona" in _refused(
        code("l", fn=listed), map("m", over="$l.output.items", step=agent("x", persona="nobody", prompt="p")))
    over = "$l.output.items"
    assert _refused(code("l", fn=listed), map("m", over=over, step=code("x", fn=listed, retries=1.5))) == (
        "its inner step's retries must be a whole number >= 0, got 1.5")
    assert _refused(code("l", fn=listed), map("m", over=over, step=code("x", fn=listed, retries=1,
                                                                         retry_delay_s=float("nan")))) == (
        "its inner step's retry_delay_s must be a finite number of seconds >= 0, got nan")
    assert _refused(code("l", fn=listed), map("m", over=over, step=agent("x", persona="reviewer", prompt="p",
                                                                         tools=True))) == (
        "its inner step 'x' has tools=True, but a map's agent items do not use the workspace tools")
    assert _refused(code("l", fn=listed), map("m", over=over, step=code("x", fn=listed, timeout_s=float("inf")))) == (
        "its inner step's timeout_s must be a finite number of seconds >= 0, got inf")
    assert _refused(subflow("s", flow="")) == "a subflow step needs the name of the flow it launches"
    assert "not an ancestor" in _refused(subflow("s", flow="f", inputs={"question": "$zz.output"}, deps=[]))
    deps = subflow("s", flow="f", inputs={"question": "$a.output and $input.question"}).deps
    assert deps == ("a",)  # deps default to what the inputs refer to


def _started(flow: Flow, items: Any) -> Any:
    """The run once step ``l`` recorded ``items``, and what decide does then."""
    state = fold([RunLaunched(run_id="r", flow=flow.name, snapshot=flow.snapshot(), input={"question": "q"}, at=1.0),
                  RunStarted(run_id="r", at=1.0)])
    state = fold(decide(state, 1.0).events, state)  # l starts
    state = fold([StepCompleted(step_id="l", attempt=1, output="", fields={"items": items}, at=2.0)], state)
    return state, decide(state, 2.0)


FLOW = Flow("mapped", [code("l", fn=listed),
                       map("m", over="$l.output.items", step=agent("x", persona="reviewer", prompt="Check $input.item"),
                           max_parallel=2)])


def test_a_map_starts_with_its_items_and_gathers_them_in_order() -> None:
    state, decision = _started(FLOW, ["a", "b", "c"])
    [begin] = decision.events
    assert begin.kind == "map" and begin.items == ["a", "b", "c"]
    state = fold([begin], state)
    assert to_run(state, "m") == [0, 1, 2] and item_prompt(state, "m", 1) == "Check b"
    for index in (2, 0, 1):  # they end in any order
        state = fold(item_ended(state, "m", 1, index, 3.0, output=f"r{index}"), state)
    assert gather(state, "m") == ('{"results": ["r0", "r1", "r2"]}', "")
    assert item_ended(state, "m", 1, 0, 3.0, output="again") == []  # one result per item
    assert item_ended(state, "m", 9, 1, 3.0, output="stale") == []  # not the current attempt


def test_a_failed_item_fails_the_map_and_a_retry_runs_only_what_has_no_result() -> None:
    state, decision = _started(FLOW, ["a", "b"])
    state = fold(decision.events, state)
    [ok] = item_ended(state, "m", 1, 0, 3.0, output="fine")
    [bad] = item_ended(state, "m", 1, 1, 3.0, error="boom", failed=True)
    assert isinstance(ok, MapItemCompleted) and isinstance(bad, MapItemFailed) and bad.item == "b"
    state = fold([ok, bad], state)
    assert gather(state, "m") == ("", "1 of 2 items failed (indexes [1]); item 1: boom")
    retried = fold([StepFailed(step_id="m", attempt=1, error="x", will_retry=True, retry_at=3.0, at=3.0)], state)
    again = decide(retried, 4.0).events
    assert again[0].attempt == 2 and to_run(fold(again, retried), "m") == [1]


@pytest.mark.parametrize(("items", "outcome"), [([], StepCompleted), ("not json", StepFailed), (7, StepFailed)])
def test_an_empty_list_completes_at_once_and_no_list_fails(items: Any, outcome: type) -> None:
    _, decision = _started(FLOW, items)
    assert [type(e) for e in decision.events][1:] == [outcome]
    if outcome is StepFailed:
        assert "over $l.output.items" in decision.events[1].error


def test_a_subflow_names_its_child_by_its_real_failures() -> None:
    flow = Flow("parent", [subflow("s", flow="child")])
    launched = RunLaunched(run_id="r", flow="parent", snapshot=flow.snapshot(), input={"question": "q"}, at=1.0)
    state = fold([launched, RunStarted(run_id="r", at=1.0)])
    [begin] = decide(state, 1.0).events
    assert begin.child_run_id == "r-s-1"
    lost = fold([begin, StepFailed(step_id="s", attempt=1, error="lost", will_retry=True, lost=True, at=2.0)], state)
    assert decide(lost, 2.0).events[0].child_run_id == "r-s-1"  # the same child, followed again
    failed = fold([begin, StepFailed(step_id="s", attempt=1, error="no", will_retry=True, at=2.0)], state)
    assert decide(failed, 2.0).events[0].child_run_id == "r-s-2"  # a retry launches a new one


def test_code_review_verifies_each_blocking_finding_with_a_map() -> None:
    from flows.catalog import builtin
    from flows.catalog.code_review import blocking_findings, section_items

    review = "## Blocking\n- `db.py:40` SQL built from input\n  (E1)\n2. token logged (E2)\n## Suggestions\n- rename x\n"
    assert section_items(review, "Blocking") == ["`db.py:40` SQL built from input (E1)", "token logged (E2)"]
    ctx = type("Ctx", (), {"outputs": {"correctness": review, "security": "## Findings\n- open redirect (E3)"}})()
    found = blocking_findings(ctx)  # type: ignore[arg-type]
    assert found["items"] == ["[correctness] `db.py:40` SQL built from input (E1)", "[correctness] token logged (E2)",
                              "[security] open redirect (E3)"]
    flow = builtin().get("code-review")
    verify = flow.snapshot("small").step("verify")
    assert (verify.kind, verify.over, verify.persona) == ("map", "$findings.output.items", "validator")
    assert "verify" in flow.snapshot("small").step("summary").deps


def test_a_child_run_reads_the_commit_its_parent_pinned() -> None:
    from flows.catalog import FlowRegistry
    from flows.children import child_launch
    from flows.workspace import Workspace

    child_flow = Flow("child", [code("c", fn=listed)])
    parent_flow = Flow("parent", [subflow("s", flow="child", inputs={"question": "Dig: $input.question"})])
    pin = Workspace(project_id="p1", root="/srv/p1", commit="a" * 40, branch="main")
    launched = RunLaunched(run_id="r", flow="parent", snapshot=parent_flow.snapshot(), band="large", project_id="p1",
                           workspace=pin, input={"question": "q"}, at=1.0)
    event = child_launch(fold([launched]), "s", "r-s-1", FlowRegistry([child_flow, parent_flow]), 2.0)
    assert (event.run_id, event.parent_run_id, event.parent_step) == ("r-s-1", "r", "s")
    assert event.workspace == pin and event.project_id == "p1" and event.band == "large"
    assert event.input == {"question": "Dig: q"} and event.launched_by == "run r"


def test_the_new_events_frames_are_replayed_on_a_resume() -> None:
    """A resuming stream reads only FRAMED_TYPES from the database: every event that gives a frame is there."""
    from flows.events import RunForked
    from projections.frames import FRAMED_TYPES, frames_of

    base = {"id": 1, "run_id": "r", "project_id": ""}
    for event in (RunForked(parent_run_id="p", from_step="s"), MapItemCompleted(step_id="m", attempt=1, index=0),
                  MapItemFailed(step_id="m", attempt=1, index=0, error="x")):
        assert frames_of(base, event) and type(event).__name__ in FRAMED_TYPES


def test_the_inner_steps_timeout_and_retries_are_pinned_as_each_items_and_leave_other_snapshots_as_they_were():
    import msgspec

    timed = Flow("timed", [code("l", fn=listed), map("m", over="$l.output.items", retries=1, step=code(
        "x", fn=listed, timeout_s=30, retries=2, retry_delay_s=0.5))])
    spec = timed.snapshot().step("m")
    assert (spec.item_timeout_s, spec.item_retries, spec.item_retry_delay_s) == (30.0, 2, 0.5)
    assert (spec.timeout_s, spec.retries) == (0.0, 1)  # the map's own
    assert b'"item_timeout_s":30.0' in msgspec.json.encode(timed.snapshot())  # the key as it is encoded when set
    encoded = msgspec.json.encode(FLOW.snapshot())
    assert not any(key in encoded for key in (b'"item_timeout_s"', b'"item_retries"', b'"item_retry_delay_s"'))


def test_an_items_later_try_that_completes_takes_it_out_of_the_failures() -> None:
    state, decision = _started(FLOW, ["a", "b"])
    state = fold(decision.events, state)
    for events in (item_ended(state, "m", 1, 0, 3.0, error="boom (try 1 of 2; tried again in 0 s)", failed=True),
                   item_ended(state, "m", 1, 1, 3.0, output="rb")):
        state = fold(events, state)
    assert state.steps["m"].item_errors == {0: "boom (try 1 of 2; tried again in 0 s)"}
    state = fold(item_ended(state, "m", 1, 0, 4.0, output="ra"), state)
    assert state.steps["m"].item_errors == {} and gather(state, "m") == ('{"results": ["ra", "rb"]}', "")
