"""review-and-approve: review something, and let a person approve before the review is posted.

A reviewer reads the change or document the question names (+ a test review
at medium, + a security review at large); the fold tallies their
recommendations and a synthesizer writes one review. The ``approve`` gate
comes before the final step: only an approved review is written up for
posting, with the approver's comment (``$approve.output``) in it. A rejection
skips ``publish`` but still runs ``record`` (the gate's ``on_reject``), so the
decision is written down either way.
"""

from __future__ import annotations

from typing import Any

from flows.catalog import _fold, _spine
from flows.model import Flow, agent, approval, code

ANGLES = ("review", "tests", "security")


def fold(ctx: _fold.StepContext) -> str:
    """Fold the review angles into one ledger with the reviewers' combined recommendation."""
    tally: dict[str, Any] = _fold.recommendation(ctx, ("review", "tests"))
    severity = _fold.worst_severity(ctx, ["security"])
    if severity in ("high", "critical"):
        tally["recommendation"] = "changes_requested"
        tally["changes_requested_by"] = [*tally["changes_requested_by"], "security"]
    return _fold.fold_angles(ctx, ANGLES, title="Review evidence", extra=tally)


def record(ctx: _fold.StepContext) -> str:
    """The decision at the ``approve`` gate, written down whether it was approved or rejected."""
    return _fold.approval_record(ctx, "approve", what="the review")


review_and_approve = Flow(
    name="review-and-approve",
    category="Review",
    description=(
        "Review (+ tests at medium, + security at large), fold, one merged review, then an approval "
        "gate before the final write-up; a rejection is still recorded."
    ),
    steps=[
        _spine.angle(
            "review", persona="reviewer", label="Review",
            task=(
                "Review the change or document the question names, for correctness first, then "
                "clarity and maintainability. Quote each line you object to, say what goes wrong and "
                "when, and propose the fix."
            ),
            produce=(
                "1. `## Blocking`: defects that must be fixed, each with `file:line`, a fix and items.\n"
                "2. `## Suggestions`: improvements that can wait.\n"
                "Begin with a YAML frontmatter block (first line `---`) with exactly these fields: "
                "recommendation (one of approve, changes_requested) and summary (one line)."
            ),
        ),
        _spine.angle(
            "tests", persona="reviewer", label="Tests",
            bands=["medium", "large"],
            task=(
                "Review the tests for the change the question names: for each behaviour it adds or "
                "alters, the test that would fail if it broke; assertions that cannot fail; edge cases "
                "(empty, maximum, concurrent, error) with no test."
            ),
            produce=(
                "1. `## Missing tests`: each test to add, what it asserts, where it goes.\n"
                "2. `## Weak tests`: each existing test that would not catch a regression, and why.\n"
                "Begin with a YAML frontmatter block (first line `---`) with exactly these fields: "
                "recommendation (one of approve, changes_requested) and summary (one line)."
            ),
        ),
        _spine.angle(
            "security", persona="security-reviewer", label="Security",
            bands=["large"],
            task=(
                "Review the change the question names for security: untrusted input reaching queries, "
                "shells, paths or deserializers; missing authorization on new paths; secrets in code "
                "or logs; unsafe defaults."
            ),
            produce=(
                "1. `## Findings`: each issue with where, impact, fix and evidence items.\n"
                "2. `## Checked and clean`: what you examined and found no problem in.\n"
                "Begin with a YAML frontmatter block (first line `---`) with exactly these fields: "
                "severity (one of low, medium, high, critical) and summary (one line)."
            ),
        ),
        _spine.fold(fold, ANGLES),
        _spine.synthesis(
            step_id="summary", label="Write the review",
            task="Write one merged review, blocking items first, for a person to approve before it is posted.",
            sections=(
                "1. `## Answer`: the verdict in two sentences.\n"
                "2. `## Blocking`: each defect with `file:line`, the fix and its items.\n"
                "3. `## Suggestions`: what can wait.\n"
                "4. `## Recommendation`: what the author should do next."
            ),
            fields=(
                "recommendation (one of approve, changes_requested), confidence (one of low, medium, "
                "high) and summary (the verdict in one line)"
            ),
        ),
        approval(
            "approve", deps=["summary"], on_reject=["record"], label="Post this review?",
            prompt=(
                "Post this review of: $input.question\n\n"
                "Reviewers' combined recommendation: $fold.output.recommendation\n"
                "Summary: $summary.output.summary\n\n"
                "Approve to post it (your comment goes into it); reject to discard it."
            ),
        ),
        code("record", fn=record, deps=["approve"], label="Record the decision", timeout_s=_spine.FOLD_TIMEOUT_S),
        agent(
            "publish", persona="writer", label="Write the review to post", deps=["approve"],
            retries=1, retry_delay_s=5.0, timeout_s=_spine.SYNTHESIS_TIMEOUT_S,
            prompt=(
                "Write the review comment to post on the change named here: $input.question\n\n"
                "## The approved review\n\n$summary.output\n\n"
                "## The approver's note (may be empty)\n\n$approve.output\n\n"
                "Format it for the author of the change: one short paragraph with the verdict; the "
                "blocking items as a checklist, each with `file:line` and its evidence item; then the "
                "suggestions. If the approver's note is not empty, add it verbatim under "
                "`## Approver's note`. Change no finding and add none: this is a write-up, not a new "
                "review.\n\n" + _spine.EVIDENCE_RULES
            ),
        ),
    ],
)
