"""code-review: review a change from several angles at once, then one merged verdict.

Reviewers check correctness and tests always; an architect checks the design
from medium; at large a security reviewer and a performance reviewer join.
The fold numbers their evidence and tallies their recommendations (any
reviewer asking for changes, or a high security finding, means changes are
requested); a synthesizer writes the merged review, blocking items first, and
from medium a validator attacks it. Before the merged review, each blocking
finding is verified on its own by a validator (a map step: seed 002's
per-finding pipeline), and the review drops what its check refuted.
"""

from __future__ import annotations

import re
from typing import Any

from flows.catalog import _fold, _spine
from flows.model import Flow, agent, code, map

MAX_VERIFIED = 8  # blocking findings verified one by one (the rest are listed as not verified)
_FINDING_SECTIONS = {"correctness": "Blocking", "tests": "Blocking", "performance": "Blocking",
                     "security": "Findings"}
_ITEM = re.compile(r"^\s*(?:[-*]|\d+[.)])\s+(?P<text>\S.*)$")

_VERIFY_PROMPT = (
    "Question: $input.question\n\n"
    "A reviewer reported this blocking finding about the change named in the question:\n\n$input.item\n\n"
    "Verify this one finding on its own. Read the code it points at and decide whether it holds as stated, "
    "does not hold, or cannot be checked from what you can read.\n\n"
    "Produce:\n1. `## Verdict`: upheld, refuted or unsure, and why in two sentences.\n"
    "2. `## Checked`: what you read to decide.\n\n"
    f"{_spine.EVIDENCE_RULES}\n\n"
    "Begin with a YAML frontmatter block (first line `---`) with exactly these fields: "
    "verdict (one of upheld, refuted, unsure) and summary (one line)."
)

ANGLES = ("correctness", "tests", "design", "security", "performance")
REVIEWERS = ("correctness", "tests", "performance")  # the angles that emit `recommendation`

_REVIEW_OUTPUT = (
    "1. `## Blocking`: defects that must be fixed, each with `file:line`, the quoted line, what goes "
    "wrong and when, a fix, and its evidence items.\n"
    "2. `## Suggestions`: improvements that can wait.\n"
    "3. `## Checked`: what you examined and found sound.\n"
    "Begin with a YAML frontmatter block (first line `---`) with exactly these fields: "
    "recommendation (one of approve, changes_requested) and summary (one line)."
)


def verdict(ctx: _fold.StepContext) -> dict[str, Any]:
    """The reviewers' combined recommendation, with a high security finding counting as a request."""
    tally = _fold.recommendation(ctx, REVIEWERS)
    severity = _fold.worst_severity(ctx, ["security"])
    if severity in ("high", "critical"):
        tally = {"recommendation": "changes_requested",
                 "changes_requested_by": [*tally["changes_requested_by"], "security"]}
    return {**tally, "security_severity": severity}


def section_items(text: str, heading: str) -> list[str]:
    """The list items under ``## heading`` of ``text`` (a continuation line joins its item)."""
    items: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("## "):
            inside = line[3:].strip().lower().startswith(heading.lower())
            continue
        if not inside or not line.strip():
            continue
        match = _ITEM.match(line)
        if match:
            items.append(match.group("text").strip())
        elif items and line.startswith((" ", "\t")):
            items[-1] += " " + line.strip()
    return items


def blocking_findings(ctx: _fold.StepContext) -> dict[str, Any]:
    """Every blocking finding of the angles, labelled with its angle: what the map verifies one by one."""
    found = [f"[{angle}] {item}" for angle, heading in _FINDING_SECTIONS.items()
             for item in section_items(ctx.outputs.get(angle, ""), heading)]
    return {"items": found[:MAX_VERIFIED], "total": len(found), "not_verified": found[MAX_VERIFIED:]}


def fold(ctx: _fold.StepContext) -> str:
    """Fold the review angles into one evidence ledger carrying the combined recommendation."""
    return _fold.fold_angles(ctx, ANGLES, title="Review evidence", extra=verdict(ctx))


code_review = Flow(
    name="code-review",
    category="Review",
    description=(
        "Review a change: correctness and tests (+ design at medium, + security and performance at "
        "large) in parallel, folded with a combined recommendation, merged into one review, validated."
    ),
    steps=[
        _spine.code_angle(
            "correctness", persona="reviewer", label="Correctness",
            task=(
                "Review the change named in the question for correctness. Read the diff and the code "
                "around it. Look for wrong conditions and off-by-one errors, unhandled None or empty "
                "inputs, error paths that lose or swallow errors, resources not released, changed "
                "behaviour for existing callers, and mismatches between the change and its description."
            ),
            produce=_REVIEW_OUTPUT,
        ),
        _spine.code_angle(
            "tests", persona="reviewer", label="Tests",
            task=(
                "Review the tests of the change named in the question. For each behaviour the change "
                "adds or alters, find the test that would fail if it broke. Look for assertions that "
                "cannot fail, tests that depend on timing or order, mocks that hide the behaviour "
                "under test, and edge cases (empty, maximum, concurrent, error) with no test."
            ),
            produce=_REVIEW_OUTPUT.replace(
                "3. `## Checked`", "3. `## Missing tests`: each test to add and what it asserts.\n4. `## Checked`"
            ),
        ),
        _spine.code_angle(
            "design", persona="architect", label="Design",
            bands=["medium", "large"],
            task=(
                "Review the design of the change named in the question: does it put each "
                "responsibility in the module that owns it, respect the existing layering and "
                "interfaces, and keep the public surface small? Would a simpler shape do the same? "
                "Judge against the codebase's own patterns (cite them), not taste."
            ),
            produce=(
                "1. `## Findings`: each design concern with where it shows and its evidence items.\n"
                "2. `## Recommendations`: changes ordered by value for effort, each with its trade-off."
            ),
        ),
        _spine.code_angle(
            "security", persona="security-reviewer", label="Security",
            bands=["large"],
            task=(
                "Review the change named in the question for security: untrusted input reaching "
                "queries, shells, file paths, templates or deserializers; missing authorization "
                "checks on new paths; secrets in code, logs or errors; unsafe defaults; new "
                "dependencies and their maintenance state."
            ),
            produce=(
                "1. `## Findings`: each issue with where, how it is abused, impact, fix, evidence items.\n"
                "2. `## Checked and clean`: what you examined and found no problem in.\n"
                "Begin with a YAML frontmatter block (first line `---`) with exactly these fields: "
                "severity (one of low, medium, high, critical: the worst issue) and summary (one line)."
            ),
        ),
        _spine.code_angle(
            "performance", persona="reviewer", label="Performance",
            bands=["large"],
            task=(
                "Review the change named in the question for performance: work inside loops that "
                "could be hoisted, queries per item (N+1), unbounded reads into memory, missing "
                "indexes for new queries, blocking calls on hot or asynchronous paths, and caches "
                "without bounds. Estimate the cost at realistic sizes and say how you estimated."
            ),
            produce=_REVIEW_OUTPUT,
        ),
        _spine.fold(fold, ANGLES),
        code("findings", fn=blocking_findings, deps=list(ANGLES), label="List the blocking findings"),
        map("verify", over="$findings.output.items", max_parallel=4, label="Verify each finding",
            step=agent("check", persona="validator", prompt=_VERIFY_PROMPT)),
        _spine.synthesis(
            step_id="summary", label="Write the review",
            task=(
                "Write one merged code review of the change. Blocking items first; drop duplicates "
                "found by several angles but keep all their evidence items. The reviewers' combined "
                "recommendation is in the fold's frontmatter; keep it unless the evidence says otherwise, "
                "and then say why. Each blocking finding was then checked on its own by a validator "
                "(the findings in `$findings.output`, their checks' verdicts in order in "
                "`$verify.output`): drop a finding its check refuted, and mark one it left unsure."
            ),
            deps=["fold", "verify"],
            sections=(
                "1. `## Answer`: the verdict in two sentences.\n"
                "2. `## Blocking`: each defect with `file:line`, the fix and its items.\n"
                "3. `## Suggestions`: what can wait.\n"
                "4. `## Recommendation`: what the author should do next, in order."
            ),
            fields=(
                "recommendation (one of approve, changes_requested), confidence (one of low, medium, "
                "high) and summary (the verdict in one line)"
            ),
        ),
        _spine.validation(
            target="summary", bands=["medium", "large"],
            focus="Is any blocking item not actually a defect, or any real defect left as a suggestion?",
        ),
    ],
)
