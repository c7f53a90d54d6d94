"""The anomaly watch over tool results (DESIGN §11), as pure decisions over the state."""

from __future__ import annotations

import pytest

from flows import Flow, agent
from flows.anomaly import TOOL_ERRORS_LIMIT, ToolTally, after_tool_results, tally_tools
from flows.events import (
    AnomalyDetected,
    RunLaunched,
    RunStarted,
    StepCancelled,
    StepFailed,
    StepStarted,
    ToolResult,
)
from flows.state import RunState, fold


def running(policy: str = "") -> RunState:
    flow = Flow("tools", on_anomaly=policy, steps=[agent("explore", persona="codebase-explorer", prompt="q",
                                                         tools=True)])
    return fold([RunLaunched(run_id="r", flow="tools", snapshot=flow.snapshot("small")), RunStarted(run_id="r"),
                 StepStarted(step_id="explore", attempt=1)], RunState())


def result(outcome: str, error: str = "", tool: str = "read_file") -> ToolResult:
    return ToolResult(step_id="explore", attempt=1, call_id="c", tool=tool, ok=outcome == "ok", outcome=outcome,
                      error=error, result=f"error: {error}: ..." if error else "text")


def decide(state: RunState, before: ToolTally, batch: list[ToolResult]) -> tuple[ToolTally, list]:
    after = tally_tools(before, 1, batch)
    return after, after_tool_results(state, "explore", 1, before, after, batch, now=5.0)


def test_the_first_malformed_call_is_a_high_degradation_and_the_second_is_not():
    state = running()
    tally, events = decide(state, ToolTally(), [result("ok"), result("malformed", "unknown-tool", "open")])
    assert [(e.kind, e.severity, e.action) for e in events] == [("degradation", "high", "notify")]
    assert "open: unknown-tool" in events[0].detail
    _, again = decide(state, tally, [result("malformed", "not-json")])
    assert again == []


def test_more_than_five_tool_errors_is_a_medium_errors_anomaly_once():
    state = running()
    tally = ToolTally()
    seen: list = []
    for _ in range(TOOL_ERRORS_LIMIT + 3):
        tally, events = decide(state, tally, [result("error", "outside-root")])
        seen += events
    assert [(e.kind, e.severity) for e in seen] == [("errors", "medium")]
    assert seen[0].detail.startswith(f"{TOOL_ERRORS_LIMIT + 1} tool errors in this attempt")
    assert tally == ToolTally(attempt=1, errors=TOOL_ERRORS_LIMIT + 3, malformed=0)


def test_a_new_attempt_counts_from_zero():
    assert tally_tools(ToolTally(attempt=1, errors=4, malformed=1), 2, [result("error", "binary")]) == ToolTally(
        attempt=2, errors=1, malformed=0)


@pytest.mark.parametrize("policy,ending", [("nudge", StepFailed), ("abort", StepCancelled)])
def test_the_policy_decides_what_follows(policy, ending):
    _, events = decide(running(policy), ToolTally(), [result("malformed", "bad-arguments")])
    assert isinstance(events[0], AnomalyDetected) and events[0].action == policy
    assert isinstance(events[-1], ending)
    if policy == "nudge":
        assert events[-1].will_retry and "Call only the tools offered" in events[0].guidance


def test_an_attempt_that_is_not_running_raises_nothing():
    state = fold([StepFailed(step_id="explore", attempt=1, error="x")], running())
    assert decide(state, ToolTally(), [result("malformed", "unknown-tool")])[1] == []
