"""Definition-time validation: every refusal names the flow, the step and the problem.

A flow is checked when it is built, so a mistake surfaces when the module
defining it is imported (``baton serve --flows pkg.mod``), not halfway through
someone's run.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from flows import Flow, FlowDefinitionError, FlowSnapshot, agent, approval, code


def tally(ctx: Any) -> str:
    """A code step's function."""
    return "..."


def triage(**changes: Any) -> Flow:
    """The DESIGN §9 example, verbatim."""
    return Flow(
        name="triage", category="Analysis", description="...",
        steps=[
            agent("investigate", persona="investigator", prompt="Investigate: $input.question"),
            agent("classify", persona="triager", deps=["investigate"],
                  prompt="Classify: $investigate.output (frontmatter: severity)"),
            agent("security", persona="security-reviewer", deps=["classify"],
                  when="$classify.output.severity in ['high', 'critical']",
                  prompt="Review: $investigate.output", bands=["medium", "large"]),
            approval("sign-off", deps=["security"], trigger_rule="all_done",
                     prompt="Publish this triage?"),
            code("summary", fn=tally, deps=["sign-off"], retries=2, timeout_s=30),
        ],
        **changes,
    )


def refused(steps: list, *, name: str = "f", **kw: Any) -> FlowDefinitionError:
    with pytest.raises(FlowDefinitionError) as info:
        Flow(name, steps, **kw)
    return info.value


def assert_names(err: FlowDefinitionError, step: str | None, *problem: str) -> None:
    """The message names the flow, the step (when there is one) and the problem."""
    text = str(err)
    assert text.startswith(f"flow {err.flow!r}")
    assert err.step == step
    if step is not None:
        assert f"step {step!r}" in text
    for part in problem:
        assert part in text, f"{part!r} not in {text!r}"


def test_the_design_example_is_accepted() -> None:
    flow = triage()
    assert [s.id for s in flow.steps] == ["investigate", "classify", "security", "sign-off", "summary"]
    assert flow.bands == ("small", "medium", "large")
    assert flow.function("summary") is tally


# --- graph shape ----------------------------------------------------------------

def test_a_cycle_is_refused_with_its_path() -> None:
    err = refused([
        code("a", fn=tally, deps=["c"]),
        code("b", fn=tally, deps=["a"]),
        code("c", fn=tally, deps=["b"]),
    ])
    assert_names(err, "a", "cycle: a -> c -> b -> a")


def test_a_two_step_cycle_below_a_good_start_is_found() -> None:
    err = refused([code("root", fn=tally), code("x", fn=tally, deps=["root", "y"]), code("y", fn=tally, deps=["x"])])
    assert_names(err, "x", "cycle: x -> y -> x")


def test_a_self_dep_is_refused() -> None:
    assert_names(refused([code("a", fn=tally, deps=["a"])]), "a", "cannot depend on itself")


def test_an_unknown_dep_is_refused() -> None:
    assert_names(refused([code("a", fn=tally), code("b", fn=tally, deps=["a", "ghost"])]), "b", "unknown dep 'ghost'")


def test_a_duplicate_step_id_is_refused() -> None:
    assert_names(refused([code("a", fn=tally), code("a", fn=tally)]), "a", "duplicate step id")


def test_a_dep_listed_twice_is_refused() -> None:
    assert_names(refused([code("a", fn=tally), code("b", fn=tally, deps=["a", "a"])]), "b", "listed twice")


def test_the_reserved_id_input_is_refused() -> None:
    err = refused([code("input", fn=tally)])
    assert_names(err, "input", "'input' is reserved", "$input")


@pytest.mark.parametrize("bad", ["", "1st", "has space", "dot.ted", "$x"])
def test_a_step_id_that_refs_could_not_name_is_refused(bad: str) -> None:
    err = refused([code(bad, fn=tally)])
    assert "letters, digits" in str(err)


# --- references ---------------------------------------------------------------------

def test_a_prompt_referring_to_a_non_ancestor_is_refused() -> None:
    err = refused([
        agent("a", persona="investigator", prompt="x"),
        agent("b", persona="investigator", prompt="x"),
        agent("c", persona="reviewer", prompt="Review $b.output", deps=["a"]),
    ])
    assert_names(err, "c", "prompt refers to $b.output", "'b' is not an ancestor")


def test_a_prompt_referring_to_a_descendant_or_itself_is_refused() -> None:
    err = refused([agent("a", persona="investigator", prompt="Use $b.output.x"),
                   agent("b", persona="investigator", prompt="x", deps=["a"])])
    assert_names(err, "a", "$b.output.x", "not an ancestor")
    assert_names(refused([agent("a", persona="investigator", prompt="Me: $a.output")]), "a", "not an ancestor")


def test_an_approval_prompt_is_checked_too() -> None:
    err = refused([code("a", fn=tally), approval("gate", prompt="Ship $a.output?")])
    assert_names(err, "gate", "prompt refers to $a.output")


def test_a_when_referring_to_a_non_ancestor_is_refused() -> None:
    err = refused([code("a", fn=tally), code("b", fn=tally),
                   code("c", fn=tally, deps=["a"], when="$b.output.ok == true")])
    assert_names(err, "c", "when refers to $b.output.ok", "'b' is not an ancestor")


def test_refs_to_ancestors_further_up_and_to_input_are_fine() -> None:
    Flow("f", [
        code("a", fn=tally),
        code("b", fn=tally, deps=["a"]),
        agent("c", persona="reviewer", deps=["b"], when="$a.output.n > 1 and $input.mode == 'x'",
              prompt="$a.output $b.output $input.anything $$literal"),
    ])


def test_a_ref_inside_a_quoted_string_in_when_is_text() -> None:
    """Regression: the when text was scanned for refs, so a literal '$z.output' was refused."""
    Flow("f", [code("a", fn=tally), code("b", fn=tally, deps=["a"], when="$a.output.x == 'cost $z.output'")])


@pytest.mark.parametrize(
    ("when", "problem"),
    [
        ("$a.output.n +", "arithmetic is not allowed"),
        ("__import__('os')", "unknown name '__import__'"),
        ("$a.output.__class__ == 1", "names starting with '__'"),
        ("$a.output.n ==", "expected a value"),
        ("", None),  # empty means no condition at all
    ],
)
def test_a_bad_when_is_refused_with_the_parse_error(when: str, problem: str | None) -> None:
    steps = [code("a", fn=tally), code("b", fn=tally, deps=["a"], when=when)]
    if problem is None:
        Flow("f", steps)
        return
    assert_names(refused(steps), "b", "bad when", problem)


# --- step kinds ---------------------------------------------------------------------

def test_an_approval_without_a_prompt_is_refused() -> None:
    assert_names(refused([approval("gate", prompt="  ")]), "gate", "an approval step needs a prompt")


def test_an_agent_without_a_prompt_or_persona_is_refused() -> None:
    assert_names(refused([agent("a", persona="investigator", prompt="")]), "a", "needs a prompt")
    assert_names(refused([agent("a", persona="", prompt="x")]), "a", "needs a persona")


def test_an_unknown_persona_is_refused_with_the_known_ones() -> None:
    err = refused([agent("a", persona="oracle", prompt="x")])
    assert_names(err, "a", "unknown persona 'oracle'", "investigator")
    assert_names(refused([agent("a", persona="investigator", prompt="x")], personas={"mine"}), "a",
                 "unknown persona 'investigator'; personas are mine")


def test_an_unknown_trigger_rule_is_refused_with_the_known_ones() -> None:
    err = refused([code("a", fn=tally), code("b", fn=tally, deps=["a"], trigger_rule="any_success")])
    assert_names(err, "b", "unknown trigger rule 'any_success'", "none_failed_min_one_success")


def test_a_code_step_needs_a_function() -> None:
    assert_names(refused([code("a", fn="not callable")]), "a", "callable fn")  # type: ignore[arg-type]


@pytest.mark.parametrize("bands", [["huge"], [], ["small", "xl"]])
def test_a_bad_band_is_refused(bands: list[str]) -> None:
    assert_names(refused([code("a", fn=tally, bands=bands)]), "a", "bands must be a non-empty subset")


def test_negative_retries_are_refused() -> None:
    assert_names(refused([code("a", fn=tally, retries=-1)]), "a", "retries must be a whole number >= 0, got -1")


@pytest.mark.parametrize("options,says", [
    ({"retries": 1.5}, "retries must be a whole number >= 0, got 1.5"),
    ({"retries": True}, "retries must be a whole number >= 0, got True"),
    ({"retries": "2"}, "retries must be a whole number >= 0, got '2'"),
    ({"timeout_s": float("inf")}, "timeout_s must be a finite number of seconds >= 0, got inf"),
    ({"retry_delay_s": float("nan")}, "retry_delay_s must be a finite number of seconds >= 0, got nan"),
    ({"retry_delay_s": None}, "retry_delay_s must be a finite number of seconds >= 0, got None"),
])
def test_numbers_the_log_could_not_read_back_are_refused_by_name(options: dict[str, object], says: str) -> None:
    """The snapshot records them as JSON: 1.5 retries, or inf / NaN seconds (JSON null), made a RunLaunched
    its own run could no longer decode after the process that launched it was gone."""
    assert_names(refused([code("a", fn=tally, **options)]), "a", says)


def test_an_infinite_approval_deadline_is_refused() -> None:
    err = refused([approval("gate", prompt="ok?", timeout_s=float("inf"), on_timeout="reject")])
    assert_names(err, "gate", "timeout_s must be a finite number of seconds >= 0, got inf")


def test_on_reject_naming_a_non_descendant_is_refused() -> None:
    err = refused([code("a", fn=tally), approval("gate", prompt="ok?", on_reject=["a"])])
    assert_names(err, "gate", "on_reject names 'a'", "does not depend on this approval")
    err = refused([approval("gate", prompt="ok?", on_reject=["ghost"])])
    assert_names(err, "gate", "on_reject names 'ghost'")


def test_on_reject_may_name_any_descendant() -> None:
    Flow("f", [approval("gate", prompt="ok?", on_reject=["far"]),
               code("near", fn=tally, deps=["gate"]), code("far", fn=tally, deps=["near"])])


def test_on_reject_belongs_to_approvals_only() -> None:
    from flows.model import Step, StepKind

    bad = Step(id="b", kind=StepKind.CODE, fn=tally, deps=("a",), on_reject=("c",))
    err = refused([code("a", fn=tally), bad, code("c", fn=tally, deps=["b"])])
    assert_names(err, "b", "only an approval step can have on_reject")


# --- the flow itself ----------------------------------------------------------------

def test_flow_level_problems_name_the_flow_without_a_step() -> None:
    assert_names(refused([]), None, "at least one step")
    assert_names(refused([code("a", fn=tally)], category="Misc"), None, "unknown category 'Misc'")
    assert_names(refused([code("a", fn=tally)], on_anomaly="panic"), None, "unknown anomaly policy 'panic'")
    err = refused([code("a", fn=tally)], name="bad name")
    assert err.step is None and "needs a name" in str(err)


# --- band snapshots ---------------------------------------------------------------

def test_a_band_snapshot_rewires_deps_past_dropped_steps() -> None:
    small = triage().snapshot("small")
    assert [s.id for s in small.steps] == ["investigate", "classify", "sign-off", "summary"]
    assert small.step("sign-off").deps == ("classify",)  # security is not in small
    medium = triage().snapshot("medium")
    assert medium.step("sign-off").deps == ("security",)
    assert medium.band == "medium" and small.band == "small"


def test_rewiring_goes_through_chains_of_dropped_steps_without_duplicates() -> None:
    flow = Flow("f", [
        code("a", fn=tally),
        code("b", fn=tally),
        code("x", fn=tally, deps=["a", "b"], bands=["large"]),
        code("y", fn=tally, deps=["x", "a"], bands=["large"]),
        approval("gate", prompt="ok?", deps=["y"], on_reject=["z", "w"]),
        code("z", fn=tally, deps=["gate"], bands=["large"]),
        code("w", fn=tally, deps=["gate", "b"]),
    ])
    snap = flow.snapshot("small")
    assert snap.step("gate").deps == ("a", "b")
    assert snap.step("gate").on_reject == ("w",)  # a dropped step cannot be rescued
    assert snap.step("w").deps == ("gate", "b")


def test_an_unknown_band_is_refused_when_snapshotting() -> None:
    with pytest.raises(ValueError, match="unknown band 'huge'"):
        triage().snapshot("huge")


def test_a_snapshot_is_plain_data_that_round_trips() -> None:
    snap = triage().snapshot("large")
    again = msgspec.json.decode(msgspec.json.encode(snap), type=FlowSnapshot)
    assert again == snap
    summary = snap.step("summary")
    assert summary.fn.endswith(":tally") and summary.retries == 2 and summary.timeout_s == 30.0
    assert snap.step("security").when == "$classify.output.severity in ['high', 'critical']"
    with pytest.raises(KeyError):
        snap.step("ghost")
