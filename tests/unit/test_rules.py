"""Trigger rules, row by row from the truth table in docs/TRIGGER_RULES.md.

The table is parsed from the markdown itself, so the page a user reads and
the behaviour tested cannot drift apart: change a cell and this file checks
the new cell. Every cell is checked twice: against ``rules.evaluate`` on the
tally, and through ``decide``, where the verdict becomes an event.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flows import rules
from flows.decide import decide
from flows.events import RunLaunched, RunStarted, StepSkipped, StepStarted
from flows.model import FlowSnapshot, StepSpec, TriggerRule
from flows.state import StepState, fold
from tests.unit.rule_oracle import by_the_prose

DOC = Path(__file__).resolve().parents[2] / "docs" / "TRIGGER_RULES.md"
RULES = [r.value for r in TriggerRule]
TARGET = "t"


def _truth_table() -> list[dict[str, str]]:
    """The rows under '## Truth table', as {column header: cell}."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Truth table", 1)[1].split("\n## ", 1)[0]
    lines = [ln.strip() for ln in section.splitlines() if ln.strip().startswith("|")]
    header = [c.strip().strip("`") for c in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:  # past the header and the |---| line
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == len(header), f"ragged row in {DOC.name}: {line}"
        rows.append(dict(zip(header, cells)))
    return rows


TABLE = _truth_table()


def test_the_table_has_a_column_per_rule_and_covers_the_situations_the_issue_names() -> None:
    assert [k for k in TABLE[0] if k not in ("situation", "deps")] == RULES
    situations = {row["situation"] for row in TABLE}
    for wanted in (
        "no deps",
        "all succeeded",
        "some succeeded, rest running",
        "one failed, rest succeeded",
        "one skipped (condition), rest succeeded",
        "one skipped (upstream_failed), rest succeeded",
        "all skipped",
        "all failed",
        "a rejected approval, rest succeeded",
        "a rejected approval, step in its on_reject",
    ):
        assert wanted in situations


# --- building the deps a row describes ---------------------------------------

def _dep_state(code: str) -> tuple[StepState, str, str]:
    """(state of the dep, its kind, its marker: "", "*" or "?")."""
    marker = code[-1] if code[-1] in "*?" else ""
    code = code.rstrip("*?")
    if code.startswith("skip:"):
        return StepState(status="skipped", skip_reason=code[5:]), "code", marker
    status = {"completed": "completed", "running": "running", "pending": "pending", "failed": "failed",
              "cancelled": "cancelled", "rejected": "rejected", "paused": "paused"}[code]
    if code == "running":
        return StepState(status=status, attempt=1), "code", marker
    if code == "pending":  # waiting for its retry
        return StepState(status=status, attempt=1, failures=1, not_before=10_000.0), "code", marker
    kind = "approval" if code in ("rejected", "paused") else "code"
    return StepState(status=status, attempt=1), kind, marker


def _scene(rule: str, deps_cell: str) -> tuple[FlowSnapshot, dict[str, StepState]]:
    """A graph and step states: deps d0, d1, ... as the row says, then the target.

    ``rejected*`` is a rejected approval naming the target in its on_reject; any
    other ``*`` puts a rejected approval naming the target above the dep, and
    ``?`` an approval naming it that is still waiting for a person.
    """
    codes = [] if deps_cell == "none" else [c.strip() for c in deps_cell.split(",")]
    specs: list[StepSpec] = []
    steps: dict[str, StepState] = {}
    gates: dict[str, str] = {}  # the extra approval above a dep -> its status
    dep_ids = []
    for i, code in enumerate(codes):
        state, kind, marker = _dep_state(code)
        dep_id = f"d{i}"
        dep_ids.append(dep_id)
        on_reject: tuple[str, ...] = ()
        above: tuple[str, ...] = ()
        if marker == "*" and state.status == "rejected":
            on_reject = (TARGET,)  # this approval names the target
        elif marker:
            gate = "gate" if marker == "*" else "waiting_gate"
            gates[gate] = "rejected" if marker == "*" else "paused"
            above = (gate,)
        prompt = "ok?" if kind == "approval" else ""
        specs.append(StepSpec(id=dep_id, kind=kind, prompt=prompt, on_reject=on_reject, deps=above))
        steps[dep_id] = state
    for gate, status in gates.items():
        specs.insert(0, StepSpec(id=gate, kind="approval", prompt="ok?", on_reject=(TARGET,)))
        steps[gate] = StepState(status=status)
    specs.append(StepSpec(id=TARGET, kind="code", fn="tests:fn", deps=tuple(dep_ids), trigger_rule=rule))
    steps[TARGET] = StepState()
    return FlowSnapshot(name="table", steps=tuple(specs)), steps


def _expected(cell: str) -> rules.RuleOutcome:
    m = re.fullmatch(r"(wait|run)|skip \((\w+)\)", cell)
    assert m, f"cell {cell!r} is not wait, run or skip (reason)"
    return rules.RuleOutcome(m.group(1) or "skip", m.group(2) or "")


CELLS = [
    pytest.param(row["deps"], rule, row[rule], id=f"{row['situation']} / {rule}")
    for row in TABLE
    for rule in RULES
]


@pytest.mark.parametrize(("deps", "rule", "cell"), CELLS)
def test_rules_evaluate_gives_the_table_cell(deps: str, rule: str, cell: str) -> None:
    snapshot, steps = _scene(rule, deps)
    on_reject_of = {s.id: frozenset(s.on_reject) for s in snapshot.steps if s.on_reject}
    got = rules.evaluate(rule, rules.tally(snapshot.step(TARGET), steps, on_reject_of))
    want = _expected(cell)
    assert (got.verdict, got.reason) == (want.verdict, want.reason)
    if got.verdict == "skip":
        assert got.detail  # a skip always says why, for the report and the stream


@pytest.mark.parametrize(("deps", "rule", "cell"), CELLS)
def test_decide_turns_the_table_cell_into_an_event(deps: str, rule: str, cell: str) -> None:
    """The same cell through ``decide``: run -> StepStarted, skip -> StepSkipped, wait -> nothing."""
    snapshot, steps = _scene(rule, deps)
    state = fold([RunLaunched(run_id="r", flow="table", snapshot=snapshot, at=1.0), RunStarted(run_id="r", at=1.0)])
    state = msgspec.structs.replace(state, steps=steps)
    decision = decide(state, 5.0)
    mine = [e for e in decision.events if getattr(e, "step_id", None) == TARGET]
    want = _expected(cell)
    if want.verdict == "wait":
        assert mine == []
    elif want.verdict == "run":
        assert len(mine) == 1 and isinstance(mine[0], StepStarted)
    else:
        assert len(mine) == 1 and isinstance(mine[0], StepSkipped)
        assert mine[0].reason == want.reason
    # decide never touches the deps the row fixed: only the target may move
    assert {getattr(e, "step_id", None) for e in decision.events} <= {TARGET}


def test_an_unknown_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown trigger rule 'sometimes'"):
        rules.evaluate("sometimes", rules.DepTally(1, 1, 0, 0, 0))


# --- the rules against an independent reading of the doc's prose -------------

OUTCOMES = ["success", "failed", "rejected", "skipped", "not_done"]


_STATE_OF = {
    "success": StepState(status="completed"),
    "failed": StepState(status="failed"),
    "rejected": StepState(status="rejected"),
    "skipped": StepState(status="skipped", skip_reason="condition"),
    "not_done": StepState(status="running"),
}


@given(rule=st.sampled_from(RULES), deps=st.lists(st.sampled_from(OUTCOMES), max_size=6))
def test_every_rule_matches_its_description_for_any_mix_of_deps(rule: str, deps: list[str]) -> None:
    spec = StepSpec(id=TARGET, kind="code", deps=tuple(f"d{i}" for i in range(len(deps))), trigger_rule=rule)
    steps = {f"d{i}": _STATE_OF[d] for i, d in enumerate(deps)}
    got = rules.evaluate(rule, rules.tally(spec, steps, {}))
    assert (got.verdict, got.reason) == by_the_prose(rule, deps)


@given(
    rule=st.sampled_from(RULES),
    deps=st.lists(st.sampled_from(OUTCOMES), min_size=1, max_size=6),
    ends=st.lists(st.sampled_from(OUTCOMES[:-1]), min_size=6, max_size=6),
)
def test_a_verdict_once_given_never_changes_as_more_deps_end(rule: str, deps: list[str], ends: list[str]) -> None:
    """Decisions are final (they are events), so a run or skip must stay right as deps end.

    The skip *reason* is part of the decision too: it decides the run's outcome
    when the step is a leaf (DESIGN §3), so it must not depend on which dep
    happened to end first.
    """
    spec = StepSpec(id=TARGET, kind="code", deps=tuple(f"d{i}" for i in range(len(deps))), trigger_rule=rule)
    before = {f"d{i}": _STATE_OF[d] for i, d in enumerate(deps)}
    after = {k: (_STATE_OF[ends[i]] if v.status == "running" else v) for i, (k, v) in enumerate(before.items())}
    first = rules.evaluate(rule, rules.tally(spec, before, {}))
    last = rules.evaluate(rule, rules.tally(spec, after, {}))
    if first.verdict != "wait":
        assert (last.verdict, last.reason) == (first.verdict, first.reason)
