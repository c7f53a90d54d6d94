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
from flows.report import body, has_evidence, render
from flows.review import after_action_review, provenance
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
    assert rows[:4] == ["## Provenance", "",
                        "| step | persona | backend | model | attempt | duration | tool calls "
                        "| tokens (prompt + completion) | events |",
                        "|---|---|---|---|---|---|---|---|---|"]
    assert "| angle1 | investigator | offline | qwen | 1 | 2.0 s | 0 | - | 3, 5 |" in rows
    assert "| angle1 | investigator | offline | qwen | 2 | 3.0 s | 0 | - | 7, 8 |" in rows
    assert "| check | validator | offline | qwen | 1 | 2.0 s | 0 | - | 13, 15 |" in rows  # the anomaly is not the end
    assert "| fold | - | code | - | 1 | 1.0 s | 0 | - | 9, 10 |" in rows
    assert "| gate | (person: ana) | approval | - | 1 | - | - | - | 17 |" in rows
    assert "| **total** | | | | | | 0 | 0 + 0 | |" in rows


def test_the_after_action_review() -> None:
    state, history = research_run()
    text = "\n".join(after_action_review(state, history, 41.0))
    assert "- 4 steps passed first time: angle2, fold, synth, check." in text
    assert "- Step angle1 attempt 1 failed (timeout); retried [event 5]." in text
    assert "- Anomaly on check: stall (low) - quiet 30 s; action notify [event 14]." in text
    assert "- Slowest step: angle2 (4.0 s)." in text
    assert "- Time steps waited for an agent slot: 1.0 s." in text  # angle1's retry was due at +3, began at +4
    # A step ran from +0 to +12; the person was awaited from +12 to +40 (and the run ended at +41).
    assert ("- Wall time 41.0 s: a step was running for 12.0 s; a person was awaited for 28.0 s; "
            "steps waited 1.0 s in all for an agent slot.") in text
    # every attempt's time (2 + 4 + 3 + 1 + 2 + 2 = 14 s, the failed one included) over the 12 s anything ran
    assert "- Parallelism 1.17: 14.0 s of step time in the 12.0 s when at least one step was running." in text


def test_parallelism_is_claimed_only_when_steps_overlapped_and_never_counts_a_wait_for_a_person() -> None:
    """Regression: "Parallelism achieved: 0.03" was listed under what went right while the run waited
    for a person: the wait was counted as wall time the steps could have filled."""
    waited = Flow("f", [code("a", fn=tally), approval("gate", prompt="ok?", deps=["a"]), code("b", fn=tally,
                                                                                            deps=["gate"])])
    state, history = replay(waited, [
        StepStarted(step_id="a", attempt=1, kind="code", at=T0),
        StepCompleted(step_id="a", attempt=1, output="ok", duration_s=2, at=T0 + 2),
        StepPaused(step_id="gate", at=T0 + 2),
        StepResumed(step_id="gate", decision="approved", by="bo", at=T0 + 3600),
        StepStarted(step_id="b", attempt=1, kind="code", at=T0 + 3600),
        StepCompleted(step_id="b", attempt=1, output="ok", duration_s=2, at=T0 + 3602),
    ])
    text = "\n".join(after_action_review(state, history, 3602.0))
    right = text[text.index("### What went right"):text.index("### What went wrong")]
    assert "arallel" not in right and "side by side" not in right
    assert "- Parallelism 1.00: 4.0 s of step time in the 4.0 s when at least one step was running." in text


def test_parallel_steps_show_parallelism_above_one() -> None:
    flow = Flow("f", [code("a", fn=tally), code("b", fn=tally)])
    state, history = replay(flow, [
        StepStarted(step_id="a", attempt=1, kind="code", at=T0),
        StepStarted(step_id="b", attempt=1, kind="code", at=T0),
        StepFailed(step_id="a", attempt=1, error="boom", duration_s=10, at=T0 + 10),
        StepCompleted(step_id="b", attempt=1, output="ok", duration_s=10, at=T0 + 10),
    ])
    text = "\n".join(after_action_review(state, history, 10.0))
    right = text[text.index("### What went right"):text.index("### What went wrong")]
    assert "- Steps ran side by side: 2.00 at a time on average while any step ran." in right
    assert "- Parallelism 2.00: 20.0 s of step time in the 10.0 s when at least one step was running." in text
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
    outcome = next(line for line in report.splitlines() if line.startswith("**Outcome:**"))
    assert outcome == "**Outcome:** rejected by bo at step 'gate': not now"
    assert "- **gate**: rejected by bo: not now" in report
    assert "- Step gate was rejected by bo: not now [event 4]." in report
    assert "- Wall time 5.0 s: a step was running for 0 ms; a person was awaited for 5.0 s." in report


def test_the_outcome_of_a_run_rejected_before_the_reason_stopped_naming_the_approver_names_them_once() -> None:
    flow = Flow("f", [approval("gate", prompt="ok?")])
    state, history = replay(flow, [
        StepPaused(step_id="gate", at=T0),
        StepResumed(step_id="gate", decision="rejected", by="bo", comment="", at=T0 + 5),
    ])
    text = render(state, history, "rejected", "step 'gate' was rejected by bo", T0 + 5)
    assert "**Outcome:** rejected by bo at step 'gate'\n" in text


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


def test_counts_are_singular_for_one_and_plural_otherwise() -> None:
    from flows.review import count

    assert [count(1, "run"), count(2, "run"), count(0, "step")] == ["1 run", "2 runs", "0 steps"]
    assert count(3, "evidence item") == "3 evidence items" and count(1, "child", "children") == "1 child"
    flow = Flow("f", [code("a", fn=tally)])
    state, history = replay(flow, [
        StepStarted(step_id="a", attempt=1, kind="code", at=T0),
        StepCompleted(step_id="a", attempt=1, output="ok", at=T0 + 1),
    ])
    assert "- 1 step passed first time: a." in render(state, history, "completed", "", T0 + 1)


def test_a_failing_code_step_shows_where_it_raised() -> None:
    flow = Flow("f", [code("a", fn=tally)])
    frames = ["myflows.py:40 in tally", "myflows/parse.py:12 in parse_row"]
    state, history = replay(flow, [
        StepStarted(step_id="a", attempt=1, kind="code", at=T0),
        StepFailed(step_id="a", attempt=1, error="KeyError: 'total'", frames=frames, duration_s=1, at=T0 + 1),
    ])
    report = finish(state, history, T0 + 2).report
    not_done = report[report.index("## Steps that did not complete"):report.index("## Provenance")]
    assert ("- **a**: failed: KeyError: 'total'\n  - at `myflows.py:40 in tally`\n"
            "  - at `myflows/parse.py:12 in parse_row`") in not_done
    assert "- Step a attempt 1 failed (KeyError: 'total') at `myflows/parse.py:12 in parse_row`; gave up [event 4]." \
        in report


def test_a_huge_output_is_embedded_cut_with_a_note_naming_the_event_that_keeps_it_whole() -> None:
    from flows.report import EMBED_LIMIT

    flow = Flow("f", [code("a", fn=tally)])
    huge = "\n".join(f"row {i}: " + "x" * 60 for i in range(80_000))  # about 5.5 MB
    state, history = replay(flow, [
        StepStarted(step_id="a", attempt=1, kind="code", at=T0),
        StepCompleted(step_id="a", attempt=1, output=huge, at=T0 + 1),
    ])
    report = finish(state, history, T0 + 2).report
    assert len(report) < EMBED_LIMIT + 4000
    assert "row 0: " in report and "row 79999" not in report
    assert "_(cut: the report shows 16 K of 5.5 M characters; the whole output is in event 4 " \
           "(StepCompleted of a))_" in report


def test_fast_mode_is_said_in_the_report() -> None:
    flow = Flow("f", [code("a", fn=tally)])
    log = [RunLaunched(run_id="r1", flow="f", snapshot=flow.snapshot("small"), band="small", fast=True,
                       input={"question": "q"}, at=T0), RunStarted(run_id="r1", at=T0)]
    state = RunState()
    for position, event in enumerate(log, start=1):
        state = evolve(state, event, position)
    text = render(state, list(enumerate(log, start=1)), "completed", "", T0)
    assert "| `r1` | f | small, fast |" in text
    assert "_Fast mode: every agent step was asked for a concise answer._" in text
