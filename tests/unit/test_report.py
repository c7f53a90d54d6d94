"""flows.report: the markdown report is a function of the pinned graph and the log.

The logs here are written out event by event, so every position and every
second the report quotes can be checked against the line that caused it.
"""

from __future__ import annotations

from typing import Any

from flows import Flow, agent, approval, code
from flows.decide import finish
from flows.events import (
    AnomalyDetected,
    Event,
    RunLaunched,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepPaused,
    StepResumed,
    StepSkipped,
    StepStarted,
)
from flows.report import after_action_review, body, has_evidence, provenance, render
from flows.state import RunState, evolve

T0 = 100.0


def tally(ctx: Any) -> str:
    """A code step's function."""
    return "..."


RESEARCH = Flow("research", [
    agent("angle1", persona="investigator", prompt="x", retries=1, retry_delay_s=1),
    agent("angle2", persona="researcher", prompt="y"),
    code("fold", fn=tally, deps=["angle1", "angle2"]),
    agent("synth", persona="synthesizer", prompt="z", deps=["fold"]),
    agent("check", persona="validator", prompt="v", deps=["synth"]),
    approval("gate", prompt="ok?", deps=["check"]),
])


def replay(flow: Flow, events: list[Event]) -> tuple[RunState, list[tuple[int, Event]]]:
    """The state and (position, event) history of a run whose log is RunLaunched, RunStarted, *events."""
    log: list[Event] = [
        RunLaunched(run_id="r1", flow=flow.name, snapshot=flow.snapshot(), model="qwen", backend="offline",
                    input={"question": "Is X safe?"}, at=T0),
        RunStarted(run_id="r1", at=T0),
        *events,
    ]
    state = RunState()
    history = []
    for position, event in enumerate(log, start=1):
        state = evolve(state, event, position)
        history.append((position, event))
    return state, history


def agent_start(step: str, attempt: int, at: float, persona: str) -> StepStarted:
    return StepStarted(step_id=step, attempt=attempt, persona=persona, backend="offline", model="qwen", at=at)


def research_run() -> tuple[RunState, list[tuple[int, Event]]]:
    return replay(RESEARCH, [
        agent_start("angle1", 1, T0, "investigator"),                                               # 3
        agent_start("angle2", 1, T0, "researcher"),                                                 # 4
        StepFailed(step_id="angle1", attempt=1, error="timeout", will_retry=True, retry_at=T0 + 3,
                   duration_s=2, at=T0 + 2),                                                        # 5
        StepCompleted(step_id="angle2", attempt=1, output="---\nk: v\n---\nClaims without sources.",
                      fields={"k": "v"}, duration_s=4, at=T0 + 4),                                  # 6
        agent_start("angle1", 2, T0 + 4, "investigator"),                                           # 7
        StepCompleted(step_id="angle1", attempt=2, output="Found E1: src/a.py:3", duration_s=3, at=T0 + 7),  # 8
        StepStarted(step_id="fold", attempt=1, kind="code", backend="code", at=T0 + 7),            # 9
        StepCompleted(step_id="fold", attempt=1, output="folded", duration_s=1, at=T0 + 8),         # 10
        agent_start("synth", 1, T0 + 8, "synthesizer"),                                             # 11
        StepCompleted(step_id="synth", attempt=1, output="Recommend X (E1).", duration_s=2, at=T0 + 10),  # 12
        agent_start("check", 1, T0 + 10, "validator"),                                              # 13
        AnomalyDetected(step_id="check", attempt=1, kind="stall", severity="low", detail="quiet 30 s",
                        at=T0 + 11),                                                                # 14
        StepCompleted(step_id="check", attempt=1, output="Tried to break X: no evidence found against it.",
                      duration_s=2, at=T0 + 12),                                                    # 15
        StepPaused(step_id="gate", prompt="ok?", at=T0 + 12),                                       # 16
        StepResumed(step_id="gate", decision="approved", by="ana", comment="go", at=T0 + 40),      # 17
    ])


def test_evidence_discipline_helpers() -> None:
    assert has_evidence("See E1 and E12.") and has_evidence("No evidence was found for this.")
    assert not has_evidence("It is probably fine.") and not has_evidence("E1x is a name, EE1 too")
    assert body("---\na: 1\n---\nText\n") == "Text"
    assert body("No frontmatter") == "No frontmatter"


def test_the_report_puts_validation_above_the_recommendation_and_defers_what_has_no_evidence() -> None:
    state, history = research_run()
    report = finish(state, history, T0 + 41).report
    assert report.startswith("# research: completed\n\n> Is X safe?\n")
    assert "| `r1` | research | medium | offline | qwen | 41.0 s |" in report
    heads = [line for line in report.splitlines() if line.startswith("## ")]
    assert heads == ["## Validation", "## Recommendation", "## Findings", "## Approvals",
                     "## Deferred (unverified)", "## Provenance", "## After-action review"]
    validation, recommendation = report.index("## Validation"), report.index("## Recommendation")
    assert validation < report.index("no evidence found against it") < recommendation
    assert recommendation < report.index("Recommend X (E1).") < report.index("## Findings")
    deferred = report[report.index("## Deferred (unverified)"):report.index("## Provenance")]
    assert "### angle2 (researcher)" in deferred and "Claims without sources." in deferred
    assert "k: v" not in report  # frontmatter is data, not prose
    findings = report[report.index("## Findings"):report.index("## Approvals")]
    assert "Found E1: src/a.py:3" in findings and "### fold" in findings  # code output is not a claim
    assert "- **gate**: approved by ana: go" in report


def test_the_provenance_table_names_each_attempt_and_its_event_positions() -> None:
    state, history = research_run()
    rows = provenance(state, history)
    assert rows[:4] == ["## Provenance", "", "| step | persona | backend | model | attempt | duration | events |",
                        "|---|---|---|---|---|---|---|"]
    assert "| angle1 | investigator | offline | qwen | 1 | 2.0 s | 3, 5 |" in rows
    assert "| angle1 | investigator | offline | qwen | 2 | 3.0 s | 7, 8 |" in rows
    assert "| check | validator | offline | qwen | 1 | 2.0 s | 13, 15 |" in rows  # the anomaly is not the end
    assert "| fold | - | code | - | 1 | 1.0 s | 9, 10 |" in rows
    assert "| gate | (person: ana) | approval | - | 1 | - | 17 |" in rows


def test_the_after_action_review() -> None:
    state, history = research_run()
    text = "\n".join(after_action_review(state, history, 41.0))
    assert "- 4 step(s) passed first time: angle2, fold, synth, check." in text
    # sum of every attempt's time (2 + 4 + 3 + 1 + 2 + 2 = 14 s, the failed one included) / wall time
    assert "- Parallelism achieved: 0.34 (sum of step times 14.0 s / wall time 41.0 s)." in text
    assert "- Step angle1 attempt 1 failed (timeout); retried [event 5]." in text
    assert "- Anomaly on check: stall (low) - quiet 30 s; action notify [event 14]." in text
    assert "- Slowest step: angle2 (4.0 s)." in text
    assert "- Time steps waited for an agent slot: 1.0 s." in text  # angle1's retry was due at +3, began at +4
    assert "- Time spent waiting for a person: 28.0 s." in text


def test_parallel_steps_show_parallelism_above_one() -> None:
    flow = Flow("f", [code("a", fn=tally), code("b", fn=tally)])
    state, history = replay(flow, [
        StepStarted(step_id="a", attempt=1, kind="code", at=T0),
        StepStarted(step_id="b", attempt=1, kind="code", at=T0),
        StepFailed(step_id="a", attempt=1, error="boom", duration_s=10, at=T0 + 10),
        StepCompleted(step_id="b", attempt=1, output="ok", duration_s=10, at=T0 + 10),
    ])
    text = "\n".join(after_action_review(state, history, 10.0))
    assert "Parallelism achieved: 2.00" in text
    assert "- Step a attempt 1 failed (boom); gave up [event 5]." in text


def test_a_failed_run_says_why_and_lists_what_did_not_complete() -> None:
    flow = Flow("f", [code("a", fn=tally), code("b", fn=tally, deps=["a"])])
    state, history = replay(flow, [
        StepStarted(step_id="a", attempt=1, kind="code", at=T0),
        StepFailed(step_id="a", attempt=1, error="disk full", duration_s=1, at=T0 + 1),
        StepSkipped(step_id="b", reason="upstream_failed", detail="1 of 1 deps failed", at=T0 + 1),
    ])
    report = finish(state, history, T0 + 2).report
    assert report.startswith("# f: failed")
    assert "**Outcome:** failed: step 'a' failed: disk full" in report
    not_done = report[report.index("## Steps that did not complete"):report.index("## Provenance")]
    assert "- **a**: failed: disk full" in not_done
    assert "- **b**: skipped (upstream_failed): 1 of 1 deps failed" in not_done


def test_a_rejected_run_reports_who_rejected() -> None:
    flow = Flow("f", [approval("gate", prompt="ok?")])
    state, history = replay(flow, [
        StepPaused(step_id="gate", at=T0),
        StepResumed(step_id="gate", decision="rejected", by="bo", comment="not now", at=T0 + 5),
    ])
    report = finish(state, history, T0 + 5).report
    assert "**Outcome:** rejected: step 'gate' was rejected by bo: not now" in report
    assert "- **gate**: rejected by bo: not now" in report
    assert "- Step gate was rejected by bo: not now [event 4]." in report
    assert "- Time spent waiting for a person: 5.0 s." in report


def test_a_quiet_run_says_so() -> None:
    flow = Flow("f", [code("a", fn=tally)])
    state, history = replay(flow, [
        StepStarted(step_id="a", attempt=1, kind="code", at=T0),
        StepCompleted(step_id="a", attempt=1, output="ok", at=T0),
    ])
    text = render(state, history, "completed", "", T0)
    assert "- Nothing: no failures, retries, stalls or rejections." in text
    assert "- Nothing measurable." in text
    assert "**Outcome:**" not in text


def test_the_report_is_a_function_of_the_log() -> None:
    state, history = research_run()
    assert render(state, history, "completed", "", T0 + 41) == render(state, list(history), "completed", "", T0 + 41)


def test_headings_of_a_step_output_nest_under_the_step() -> None:
    """A model's '## Findings' must not become a section of the report beside Validation."""
    from flows.report import nest

    text = "## Findings\nE1 ok\n```\n# a shell comment\n```\n###### six stays six"
    assert nest(text).split("\n") == ["##### Findings", "E1 ok", "```", "# a shell comment", "```",
                                      "###### six stays six"]


def test_a_lint_code_is_not_evidence() -> None:
    from flows.report import has_evidence

    assert not has_evidence("Fixes flake8 E501 in three files.")
    assert has_evidence("As E7 shows, the retry loop never ends.")
