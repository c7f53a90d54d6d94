"""Trigger rules: may a step run, given how its deps ended?

Airflow's names and meaning (docs/TRIGGER_RULES.md has the truth table, and
tests/unit/test_rules.py checks it row by row). A dep that failed, was
cancelled, was rejected or was skipped *because something upstream failed or
was rejected* counts as failed, as Airflow counts ``upstream_failed``; a dep
skipped by its condition, by an upstream skip or by its own trigger rule
counts as skipped. For a step named in the ``on_reject`` of a rejected
approval, a rejection upstream (a rejected approval dep, or a dep skipped as
rejected) counts as success: those steps still run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, NamedTuple

from flows.model import StepSpec
from flows.state import StepState
from flows.status import StepStatus, failed_upstream, rejected_upstream, rejects_run, succeeded

Verdict = Literal["wait", "run", "skip"]


class RuleOutcome(NamedTuple):
    """What a trigger rule says now; ``reason`` and ``detail`` explain a skip."""

    verdict: Verdict
    reason: str = ""
    detail: str = ""


class DepTally(NamedTuple):
    """How a step's deps ended so far."""

    total: int
    success: int
    failed: int
    skipped: int
    rejected: int  # the subset of ``failed`` that is a rejection on the way

    @property
    def done(self) -> int:
        return self.success + self.failed + self.skipped


def tally(spec: StepSpec, steps: Mapping[str, StepState], on_reject_of: Mapping[str, frozenset[str]]) -> DepTally:
    """Count the deps of ``spec`` by outcome class."""
    success = failed = skipped = rejected = 0
    # A step named in the on_reject of an approval that was rejected is that
    # rejection's fallback: a rejection upstream (an approval dep, or a dep
    # skipped as 'rejected') counts as success for it, or an on_reject step that
    # also waits on another child of the approval (or sits further down) could
    # never run. While such an approval is undecided, those deps are not done yet
    # for this step: how they count depends on that decision, and a decision is
    # final, so it must not depend on which approval a person answered first.
    named = [gate for gate, names in on_reject_of.items() if spec.id in names]
    rescued = any(rejects_run(steps[gate].status) for gate in named)
    undecided = any(not steps[gate].terminal for gate in named)
    for dep in spec.deps:
        s = steps[dep]
        if succeeded(s.status):
            success += 1
        elif rejected_upstream(s.status, s.skip_reason):
            if rescued:
                success += 1
            elif not undecided:
                failed += 1
                rejected += 1
            # else: counted nowhere, so done < total and the rules wait
        elif failed_upstream(s.status, s.skip_reason):
            failed += 1
        elif s.status == StepStatus.SKIPPED:  # for a reason that is not a failure upstream
            skipped += 1
    return DepTally(len(spec.deps), success, failed, skipped, rejected)


def _failed_skip(t: DepTally) -> RuleOutcome:
    if t.rejected and t.rejected == t.failed:
        # Only rejections so far. A dep still running may yet fail, which makes
        # the reason upstream_failed (the run fails rather than being rejected,
        # DESIGN §3); a skip is final, so wait until the reason is certain.
        if t.done < t.total:
            return RuleOutcome("wait")
        return RuleOutcome("skip", "rejected", "an approval upstream was rejected")
    return RuleOutcome("skip", "upstream_failed", f"{t.failed} of {t.total} deps failed")


def evaluate(rule: str, t: DepTally) -> RuleOutcome:
    """The verdict of ``rule`` for deps tallied as ``t``."""
    if t.total == 0 or rule == "always":
        return RuleOutcome("run")
    all_done = t.done == t.total
    if rule == "all_success":
        if t.failed:
            return _failed_skip(t)
        if t.skipped and all_done:
            return RuleOutcome("skip", "upstream_skipped", f"{t.skipped} of {t.total} deps were skipped")
        # A skipped dep dooms the step, but a dep still running may yet fail:
        # skipping now as upstream_skipped would hide that failure from the run's
        # outcome (a leaf skipped as upstream_failed fails the run), so the
        # outcome would depend on which parallel step happened to end first.
        return RuleOutcome("run") if t.success == t.total else RuleOutcome("wait")
    if rule == "one_success":
        if t.success:
            return RuleOutcome("run")
        if all_done:
            return _failed_skip(t) if t.failed else RuleOutcome(
                "skip", "upstream_skipped", "every dep ended without success"
            )
        return RuleOutcome("wait")
    if rule == "all_done":
        return RuleOutcome("run") if all_done else RuleOutcome("wait")
    if rule == "none_failed":
        if t.failed:
            return _failed_skip(t)
        return RuleOutcome("run") if all_done else RuleOutcome("wait")
    if rule == "none_failed_min_one_success":
        if t.failed:
            return _failed_skip(t)
        if not all_done:
            return RuleOutcome("wait")
        if t.success:
            return RuleOutcome("run")
        return RuleOutcome("skip", "upstream_skipped", "every dep was skipped")
    if rule == "all_failed":
        if t.success or t.skipped:
            return RuleOutcome("skip", "trigger_rule", "all_failed: a dep did not fail")
        return RuleOutcome("run") if t.failed == t.total else RuleOutcome("wait")
    if rule == "one_failed":
        if t.failed:
            return RuleOutcome("run")
        if all_done:
            return RuleOutcome("skip", "trigger_rule", "one_failed: no dep failed")
        return RuleOutcome("wait")
    raise ValueError(f"unknown trigger rule {rule!r}")
