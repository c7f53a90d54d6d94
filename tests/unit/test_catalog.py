"""flows.catalog: the built-in flows, their shapes, the fold helpers, and dry runs.

The dry runs drive each flow through the real pure core (launch, decide,
evolve, report) with the offline backend's deterministic answers standing in
for a model: they prove every band of every flow runs to its end, that no
prompt refers to something that is never there, and that the routing the
flows promise (escalate only on high severity, publish only when approved,
report even after a failure) actually happens.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.agents import offline
from flows import StepContext, conditions, decide, template
from flows.catalog import BUILTIN_MODULES, FlowRegistry, _fold, builtin
from flows.events import Event, RunStarted, StepStarted
from flows.launch import LaunchParams, prepare
from flows.model import BANDS, CATEGORIES, Flow, StepKind, TriggerRule
from flows.state import RunState, evolve

CATALOG = builtin()
FLOWS = list(CATALOG)
NAMED = ("code-review", "investigate", "parallel-research", "security-escalation", "review-and-approve",
         "incident-review")
BENIGN = "The nightly export job got slow on large tables after the last release."
ALARMING = "Anyone can log in as another user: the session check accepts an auth token with no signature."


def by_name(name: str) -> Flow:
    return CATALOG.get(name)


# --- the catalogue as a whole -------------------------------------------------------------------


def test_the_catalogue_has_the_named_flows_in_every_category():
    assert len(CATALOG) >= 8
    assert {f.category for f in FLOWS} == set(CATEGORIES)
    for name in NAMED:
        assert name in CATALOG, name


def test_every_builtin_module_defines_one_flow_with_a_module_docstring():
    for name in BUILTIN_MODULES:
        module = importlib.import_module(f"flows.catalog.{name}")
        flows = [v for v in vars(module).values() if isinstance(v, Flow)]
        assert len(flows) == 1, name
        assert module.__doc__ and flows[0].name in module.__doc__, name
        assert flows[0].description, name


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.name)
def test_every_flow_snapshots_in_every_band_and_grows_with_it(flow: Flow):
    assert flow.bands == BANDS
    counts = [len(flow.snapshot(band).steps) for band in BANDS]
    assert counts[0] <= counts[1] <= counts[2], counts
    for band in BANDS:
        snap = flow.snapshot(band)
        assert snap.band == band
        assert msgspec.json.decode(msgspec.json.encode(snap), type=type(snap)) == snap


def test_some_flow_strictly_grows_from_small_to_large():
    growing = [f.name for f in FLOWS if len({len(f.snapshot(b).steps) for b in BANDS}) == 3]
    assert "code-review" in growing
    assert "architectural-analysis" in growing


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.name)
def test_describe_is_json(flow: Flow):
    described = json.loads(json.dumps(flow.describe()))
    assert described["name"] == flow.name
    assert described["category"] in CATEGORIES
    assert {s["step_id"] for s in described["steps"]} == {s.id for s in flow.steps}


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.name)
def test_code_steps_are_pinned_by_a_reference_that_resolves_back(flow: Flow):
    for step in flow.steps:
        if step.kind is not StepKind.CODE:
            continue
        ref = step.spec().fn
        module, _, qualname = ref.partition(":")
        assert "." not in qualname and "<" not in qualname, f"{flow.name}.{step.id}: {ref} is not module-level"
        assert getattr(importlib.import_module(module), qualname) is step.fn


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.name)
def test_prompts_start_from_the_question_and_name_the_fields_read_later(flow: Flow):
    for step in flow.steps:
        if step.kind is StepKind.AGENT and not step.deps:
            assert "$input.question" in step.prompt, step.id
        texts = [step.prompt] + ([step.when] if step.when else [])
        for ref in (r for text in texts for r in template.refs(text)):
            if ref.is_input or ref.field is None:
                continue
            source = flow.step(ref.step)
            # An agent is only asked for a field it is told to emit; the folds
            # emit theirs in code (checked by the dry runs below).
            if source.kind is StepKind.AGENT:
                assert ref.path[0] in source.prompt, f"{flow.name}.{step.id} reads {ref.text}, never asked for"


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.name)
def test_agent_steps_ask_for_numbered_evidence(flow: Flow):
    for step in flow.steps:
        if step.kind is StepKind.AGENT:
            assert re.search(r"\bE\d\b", step.prompt), f"{flow.name}.{step.id} does not ask for numbered evidence"


def test_the_flows_page_lists_the_catalogue_as_it_is():
    page = (Path(__file__).resolve().parents[2] / "docs" / "FLOWS.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| ([a-z-]+) \| (\w+) \| .+ \| (\d+) / (\d+) / (\d+) \|$", page, re.MULTILINE)
    documented = {name: (category, [int(n) for n in counts]) for name, category, *counts in rows}
    actual = {f.name: (f.category, [len(f.snapshot(b).steps) for b in BANDS]) for f in FLOWS}
    assert documented == actual


# --- the named shapes -------------------------------------------------------------------------------


def test_parallel_research_runs_three_angles_then_a_synthesis_of_all_three():
    snap = by_name("parallel-research").snapshot("small")
    roots = [s for s in snap.steps if not s.deps]
    assert len(roots) == 3 and {s.kind for s in roots} == {"agent"}
    synthesis = snap.step("synthesize")
    assert synthesis.persona == "synthesizer"
    assert set(synthesis.deps) == {s.id for s in roots}


def test_security_escalation_reviews_security_only_on_high_severity():
    flow = by_name("security-escalation")
    security = flow.step("security")
    assert security.persona == "security-reviewer"
    assert security.when == "$classify.output.severity in ['high', 'critical']"
    conditions.parse(security.when)
    assert flow.step("classify").persona == "triager"
    assert flow.step("respond").trigger_rule == TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS.value
    for band in BANDS:
        assert "security" in flow.snapshot(band).step("respond").deps


def test_review_and_approve_has_an_approval_before_the_final_step():
    flow = by_name("review-and-approve")
    for band in BANDS:
        snap = flow.snapshot(band)
        final = snap.steps[-1]
        assert final.kind == "agent"
        gates = [snap.step(d) for d in final.deps]
        assert [g.kind for g in gates] == ["approval"]
        assert gates[0].on_reject == ("record",)


def test_incident_review_has_an_all_done_report_step():
    flow = by_name("incident-review")
    assert flow.step("report").trigger_rule == TriggerRule.ALL_DONE.value
    assert flow.step("report").kind is StepKind.CODE
    assert flow.step("fold").trigger_rule == TriggerRule.ALL_DONE.value
    # The work stays a leaf, so a failed postmortem still fails the run.
    for band in BANDS:
        assert set(decide.leaves(flow.snapshot(band))) == {"validate", "report"}


def test_architectural_analysis_adds_behavioral_then_concurrency():
    flow = by_name("architectural-analysis")
    roots = {band: [s.id for s in flow.snapshot(band).steps if not s.deps] for band in BANDS}
    assert roots == {"small": ["structural"], "medium": ["structural", "behavioral"],
                     "large": ["structural", "behavioral", "concurrency"]}


# --- the fold helpers, on fake contexts -----------------------------------------------------------------


@dataclasses.dataclass
class Ctx:
    """What a code step receives, reduced to what the folds read."""

    outputs: dict[str, str]
    fields: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    input: dict[str, Any] = dataclasses.field(default_factory=lambda: {"question": "why?"})
    run_id: str = "run-1"
    step_id: str = "fold"


STRUCTURAL = """---
recommendation: approve
---
## Findings
E2 shows the cycle is real (E1).
- **E1** (`pkg/a.py:12`, direct): a imports b
- E2: b imports a (source: pkg/b.py:3; trust: direct)
"""
BEHAVIORAL = "## Findings\nNothing stands out.\n\nNo evidence found. I looked in pkg/ and the tests."
SILENT = "It is probably fine."


def frontmatter(text: str) -> dict[str, Any]:
    fields, error = template.parse_frontmatter(text)
    assert not error
    return fields


def test_evidence_items_are_read_in_label_order_with_source_and_trust():
    items = _fold.evidence_items(STRUCTURAL)
    assert items == [
        ("E1", "(`pkg/a.py:12`, direct): a imports b", "pkg/a.py:12", "direct"),
        ("E2", "b imports a (source: pkg/b.py:3; trust: direct)", "pkg/b.py:3", "direct"),
    ]


def test_evidence_items_read_tables_and_ignore_look_alikes():
    text = "| E1 | db.py:7 | inferred | pool of one |\nE2E tests pass\nSee (E1).\n1. E3 - nothing else"
    assert _fold.evidence_items(text) == [
        ("E1", "db.py:7 | inferred | pool of one", "db.py:7", "inferred"),
        ("E3", "nothing else", "", ""),
    ]


def test_the_fold_renumbers_across_angles_and_lists_who_found_nothing():
    ctx = Ctx(outputs={"structural": STRUCTURAL, "behavioral": BEHAVIORAL, "concurrency": offline.render(
        "architect", "Question: why is a slow?\nsecond line")})
    text = _fold.fold_angles(ctx, ["structural", "behavioral", "concurrency", "history"])
    fields = frontmatter(text)
    assert fields["evidence_count"] == 4
    assert fields["unsourced_count"] == 0
    assert fields["angles"] == ["structural", "behavioral", "concurrency"]
    assert fields["angles_without_evidence"] == ["behavioral"]
    assert fields["angles_missing"] == ["history"]
    assert "- E3 [concurrency E1]" in text and "- E4 [concurrency E2]" in text
    assert 'behavioral: looked and stated "No evidence found."' in text
    assert "history: no output" in text
    # The angle's own references follow the new numbers, and its headings sit below the fold's.
    assert "E2 shows the cycle is real (E1)." in text
    assert "###### Deferred (unverified)" in text and "\n## Deferred" not in text


def test_the_fold_renumbers_in_one_pass():
    second = "E1: x (source: a.py:1; trust: direct)\nE2: y (source: a.py:2; trust: direct)\nBoth: (E1, E2, E9)."
    text = _fold.fold_angles(Ctx(outputs={"a": STRUCTURAL, "b": second}), ["a", "b"])
    assert "Both: (E3, E4, b:E9 (not listed))." in text


def test_the_fold_of_empty_and_silent_angles_has_no_evidence():
    ctx = Ctx(outputs={"a": "", "b": "---\nsummary: x\n---\n", "c": SILENT})
    text = _fold.fold_angles(ctx, ["a", "b", "c"])
    fields = frontmatter(text)
    assert fields["evidence_count"] == 0
    assert fields["angles"] == ["c"]
    assert fields["angles_missing"] == ["a", "b"]
    assert fields["angles_without_evidence"] == ["c"]
    assert "No evidence found by any angle." in text
    assert "a: gave an empty answer" in text
    assert "c: cited no evidence and did not say it found none" in text


def test_the_fold_defaults_to_every_output_and_marks_missing_source_and_trust():
    text = _fold.fold_angles(Ctx(outputs={"only": "- E1 the cache is cold"}), extra={"k": 1})
    fields = frontmatter(text)
    assert fields["evidence_count"] == fields["unsourced_count"] == 1
    assert fields["k"] == 1
    assert "- E1 [only E1] the cache is cold (source: unstated; trust: unstated)" in text


def test_the_fold_is_a_pure_function_of_ctx():
    ctx = Ctx(outputs={"structural": STRUCTURAL, "behavioral": BEHAVIORAL})
    before = dataclasses.replace(ctx, outputs=dict(ctx.outputs))
    assert _fold.fold_angles(ctx, ["structural", "behavioral"]) == _fold.fold_angles(
        ctx, ["structural", "behavioral"])
    assert ctx == before


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["a", "b", "c"]),
                       st.lists(st.one_of(st.sampled_from(["E1: x (source: f.py:1)", "- **E2** y", "E2 again",
                                                          "no evidence found", "---", "## h", "(E1)", ""]),
                                          st.text(max_size=30)), max_size=6).map("\n".join)))
def test_the_fold_never_raises_and_numbers_items_contiguously(outputs: dict[str, str]):
    text = _fold.fold_angles(Ctx(outputs=outputs), ["a", "b", "c"])
    fields = frontmatter(text)
    listed = re.findall(r"^- E(\d+) \[", text.split("#### Angle")[0], re.MULTILINE)
    assert [int(n) for n in listed] == list(range(1, fields["evidence_count"] + 1))
    assert sorted(fields["angles"] + fields["angles_missing"]) == ["a", "b", "c"]


def test_worst_severity_and_recommendation_tallies():
    ctx = Ctx(
        outputs={"a": "", "b": "", "c": "", "gone": ""},
        fields={"a": {"severity": "Medium", "recommendation": "approve"},
                "b": {"severity": "high", "recommendation": "changes_requested"},
                "c": {"severity": "whatever"}, "gone": {}},
    )
    assert _fold.worst_severity(ctx, ["a", "b", "c"]) == "high"
    assert _fold.worst_severity(ctx, ["c", "missing"]) == "unknown"
    assert _fold.recommendation(ctx, ["a", "b"]) == {"recommendation": "changes_requested",
                                                      "changes_requested_by": ["b"]}
    assert _fold.recommendation(ctx, ["a", "missing"])["recommendation"] == "approve"
    assert _fold.recommendation(ctx, ["c"])["recommendation"] == "unknown"


def test_run_summary_reports_what_did_not_complete():
    ctx = Ctx(outputs={"a": "x", "postmortem": "y"},
              fields={"a": {"evidence_count": 3}, "postmortem": {"confidence": "high", "summary": "a|b"}})
    text = _fold.run_summary(ctx, ["a", "b", "postmortem"], required=["postmortem"])
    assert frontmatter(text) == {"completed": ["a", "postmortem"], "not_completed": ["b"], "complete": True}
    assert "| b | no output | - |" in text
    assert "| postmortem | completed | confidence: high; summary: a\\|b |" in text
    partial = _fold.run_summary(Ctx(outputs={}), ["postmortem"], required=["postmortem"])
    assert frontmatter(partial)["complete"] is False
    assert "main result is missing (postmortem)" in partial


def test_approval_record_tells_approved_from_rejected():
    approved = _fold.approval_record(Ctx(outputs={"gate": " ship it "}), "gate", what="the notes")
    assert frontmatter(approved) == {"decision": "approved", "comment": "ship it"}
    assert "Approver's note: ship it" in approved
    silent = _fold.approval_record(Ctx(outputs={"gate": ""}), "gate")
    assert "no note" in silent
    rejected = _fold.approval_record(Ctx(outputs={}), "gate")
    assert frontmatter(rejected)["decision"] == "rejected"


def test_code_review_verdict_counts_a_high_security_finding_as_a_request():
    from flows.catalog import code_review

    ctx = Ctx(outputs={"correctness": "", "security": ""},
              fields={"correctness": {"recommendation": "approve"}, "security": {"severity": "critical"}})
    assert code_review.verdict(ctx) == {"recommendation": "changes_requested",
                                        "changes_requested_by": ["security"], "security_severity": "critical"}


# --- dry runs through the pure core, with the offline backend's answers -------------------------------


@dataclasses.dataclass
class DryRun:
    state: RunState
    history: list[tuple[int, Event]]

    def status(self, step_id: str) -> str:
        return self.state.steps[step_id].status

    def started(self) -> list[StepStarted]:
        return [e for _, e in self.history if isinstance(e, StepStarted)]


def dry_run(flow: Flow, band: str, question: str, *, reject: Iterable[str] = (),
            fail: Iterable[str] = ()) -> DryRun:
    """Run ``flow`` to its end on the pure core, agents answering as the offline backend does.

    Approvals are approved unless named in ``reject``; steps in ``fail`` fail every attempt.
    """
    reject, fail = set(reject), set(fail)
    launched = prepare(FlowRegistry([flow]), LaunchParams(flow.name, question, band=band), run_id="run-1", now=1.0)
    history: list[tuple[int, Event]] = []
    state = RunState()

    def apply(events: Iterable[Event]) -> None:
        nonlocal state
        for event in events:
            history.append((len(history) + 1, event))
            state = evolve(state, event, len(history))

    apply([launched, RunStarted(run_id="run-1", at=1.0)])
    now = 2.0
    for _ in range(500):
        decision = decide.decide(state, now)
        apply(decision.events)
        if decision.finished:
            apply([decide.finish(state, history, now)])
            return DryRun(state, history)
        apply(decide.start(state, decision.ready, now))
        for sid, step in list(state.steps.items()):
            spec = state.spec(sid)
            if step.status == "paused":
                verdict = "rejected" if sid in reject else "approved"
                apply(decide.resume(state, sid, verdict, now, by="tester", comment=f"{verdict} in a test"))
            elif step.status == "running" and sid in fail:
                apply(decide.fail(state, sid, step.attempt, "boom", now))
            elif step.status == "running" and spec.kind == "code":
                fn = flow.function(sid)
                assert fn is not None
                value = fn(StepContext.of(state, sid, step.attempt))  # what the engine hands a code step
                fields = msgspec.to_builtins(value) if isinstance(value, dict) else None
                output = json.dumps(fields) if fields is not None else str(value)
                apply(decide.complete(state, sid, step.attempt, output, now, fields=fields))
            elif step.status == "running":
                apply(decide.complete(state, sid, step.attempt, offline.render(spec.persona, step.prompt), now))
        now += 60.0  # past any retry's backoff
    raise AssertionError(f"{flow.name} ({band}) did not finish: {state.status}")


# References that may honestly be empty: a step skipped by its condition, or
# one not in this band. Everything else must resolve on a successful run.
MAY_BE_EMPTY = {
    ("security-escalation", "respond"): {"$security.output", "$exposure.output"},
    ("security-escalation", "validate"): {"$security.output"},
}


@pytest.mark.parametrize("band", BANDS)
@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.name)
def test_every_flow_runs_to_completion_offline(flow: Flow, band: str):
    run = dry_run(flow, band, BENIGN)
    assert run.state.status == "completed", run.state.reason
    for started in run.started():
        allowed = MAY_BE_EMPTY.get((flow.name, started.step_id), set())
        assert set(started.unresolved) <= allowed, (started.step_id, started.unresolved)
    report = run.state.report
    # The validation is rendered above the recommendation, and the fold lands among the findings.
    if "## Validation" in report:
        assert "## Recommendation" in report
        assert report.index("## Validation") < report.index("## Recommendation")
    assert "## Provenance" in report
    for sid, step in run.state.steps.items():
        if sid.startswith("fold"):
            assert step.fields["evidence_count"] > 0, sid


def test_security_escalation_skips_security_on_a_benign_report():
    run = dry_run(by_name("security-escalation"), "large", BENIGN)
    assert run.state.steps["classify"].fields["severity"] in ("low", "medium")
    assert run.status("security") == run.status("exposure") == "skipped"
    assert run.state.steps["security"].skip_reason == "condition"
    assert run.status("respond") == "completed"
    assert run.state.status == "completed"


def test_security_escalation_reviews_an_alarming_report():
    run = dry_run(by_name("security-escalation"), "large", ALARMING)
    assert run.state.steps["classify"].fields["severity"] in ("high", "critical")
    assert run.status("security") == run.status("exposure") == run.status("respond") == "completed"
    assert not any(s.unresolved for s in run.started())


def test_review_and_approve_rejected_records_the_decision_and_does_not_publish():
    run = dry_run(by_name("review-and-approve"), "medium", BENIGN, reject={"approve"})
    assert run.status("approve") == "rejected"
    assert run.status("record") == "completed"
    assert run.state.steps["record"].fields["decision"] == "rejected"
    assert run.status("publish") == "skipped"
    assert run.state.status == "rejected"


def test_review_and_approve_approved_publishes_with_the_comment():
    run = dry_run(by_name("review-and-approve"), "small", BENIGN)
    assert run.state.steps["record"].fields == {"decision": "approved", "comment": "approved in a test"}
    publish = next(e for e in run.started() if e.step_id == "publish")
    assert "approved in a test" in publish.prompt


def test_incident_review_folds_without_a_failed_angle_and_still_reports():
    run = dry_run(by_name("incident-review"), "medium", BENIGN, fail={"cause"})
    assert run.status("cause") == "failed"
    assert run.state.steps["fold"].fields["angles_missing"] == ["cause", "response"]  # response: large only
    assert run.status("report") == "completed"
    assert run.state.status == "completed"


def test_incident_review_reports_a_failed_postmortem_and_the_run_fails():
    run = dry_run(by_name("incident-review"), "small", BENIGN, fail={"postmortem"})
    assert run.status("report") == "completed"
    assert run.state.steps["report"].fields["complete"] is False
    assert run.state.steps["report"].fields["not_completed"] == ["impact", "response", "postmortem"]
    assert run.state.status == "failed"


def test_implementation_plan_waits_for_sign_off_and_keeps_the_comment():
    run = dry_run(by_name("implementation-plan"), "medium", BENIGN)
    assert run.status("sign-off") == "completed"
    assert run.state.steps["sign-off"].output == "approved in a test"
    assert "approved in a test" in run.state.report


def test_the_fold_keeps_fenced_headings_and_lint_codes_as_written():
    text = ("E1: the loop never ends (source: a.py:3; trust: direct)\n"
            "Fixes E501 too.\n```sh\n# install deps\n```\n## Deferred (unverified)\n- maybe")
    folded = _fold.fold_angles(Ctx(outputs={"a": text}), ["a"])
    assert "Fixes E501 too." in folded and "\n# install deps\n" in folded
    assert "###### Deferred (unverified)" in folded


CODE_FLOWS = ("code-review", "investigate", "security-review", "architectural-analysis", "project-discovery")


@pytest.mark.parametrize("name", CODE_FLOWS)
def test_the_code_flows_angles_read_the_project_with_the_tools(name):
    snap = builtin().get(name).snapshot("large")
    angles = [s for s in snap.steps if s.tools]
    assert angles and all(s.kind == "agent" for s in angles)
    assert all("If you have no tools, the run has no project" in s.prompt for s in angles)
    assert not any(s.tools for s in snap.steps if s.persona in ("synthesizer", "validator"))


def test_flows_about_other_things_than_code_offer_no_tools():
    assert not any(s.tools for s in builtin().get("research").snapshot("large").steps)
    explorers = [s.id for n in ("investigate", "project-discovery") for s in builtin().get(n).snapshot("large").steps
                 if s.persona == "codebase-explorer"]
    assert explorers == ["code-path", "layout"]
