"""Folding parallel angles into one evidence ledger: pure functions of a code step's ctx.

Most built-in flows run several angles in parallel, then a code step folds
their outputs before a synthesizer writes the answer (DESIGN §3a). The fold:

- collects every numbered evidence item (``E1``, ``E2``, ...) from each angle,
  with its source and trust class when the angle gave them;
- renumbers them into one sequence across angles, and rewrites each angle's
  own references to match, so the synthesizer and validator can cite
  ``E7`` without saying whose ``E2`` it was;
- counts them, and says which angles found nothing (stated or silent), which
  gave an empty answer and which produced no output at all.

It returns markdown with a YAML frontmatter block, so the report shows it as
prose while ``$fold.output.evidence_count`` (and friends) stay usable in a
later prompt or ``when``. Nothing here does I/O: each function reads only the
``ctx`` it is given (``ctx.input``, ``ctx.outputs``, ``ctx.fields``).

Flow modules wrap these in module-level functions (a code step is pinned by
``module:qualname``, so a lambda or a partial would not survive a restart).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from flows import report, review
from flows.context import StepContext
from flows.status import StepStatus, succeeded

__all__ = [
    "EvidenceItem",
    "approval_record",
    "StepContext",
    "body",
    "evidence_items",
    "fold_angles",
    "recommendation",
    "run_summary",
    "states_no_evidence",
    "worst_severity",
]


@dataclass(frozen=True)
class EvidenceItem:
    """One evidence item as an angle listed it, and the number the fold gave it."""

    angle: str
    label: str  # as the angle wrote it, e.g. "E2"
    number: int  # across all angles, from 1
    text: str
    source: str  # "" when the angle gave none
    trust: str  # direct / reported / inferred, or "" when unstated

    @property
    def ref(self) -> str:
        """The folded label, e.g. ``E7``."""
        return f"E{self.number}"


# An evidence item starts its line: "E1: ...", "- **E1** (a.py:3) ...",
# "1. E1 - ...", "### E1", "[E1] ...". A finding that merely cites "(E1, E2)"
# does not start with the label, so it is not mistaken for an item.
_ITEM = re.compile(
    r"^\s*(?:#{1,6}\s+|[-*+]\s+|\d+[.)]\s+)?(?:\*\*|__)?\[?(E\d+)(?![\w])\]?(?:\*\*|__)?"
    r"[\s:.)\]*\-\u2013\u2014]*(.*)$"
)
_TABLE_ITEM = re.compile(r"^\s*\|\s*(?:\*\*)?(E\d+)(?:\*\*)?\s*\|(.*)$")
_REF = re.compile(r"\bE(\d+)\b")
_NO_EVIDENCE = re.compile(r"no evidence (?:was )?found", re.IGNORECASE)
_SOURCE = re.compile(r"\bsource\s*[:=]\s*([^;\n)]+)", re.IGNORECASE)
_LOCATOR = re.compile(r"(https?://[^\s)>\]]+|`[^`\n]+`|[\w./-]+\.[A-Za-z0-9]+:\d+(?:-\d+)?)")
_TRUST = re.compile(r"\btrust(?:\s+class)?\s*[:=]?\s*\**\s*(direct|reported|inferred)\b", re.IGNORECASE)
_TRUST_WORD = re.compile(r"\b(direct|reported|inferred)\b", re.IGNORECASE)
_MAX_ITEM_CHARS = 400  # an item is a pointer to evidence, not the evidence itself
_SEVERITIES = ("low", "medium", "high", "critical")


def body(output: str) -> str:
    """``output`` without its leading YAML frontmatter block, stripped."""
    return report.body(output or "")


def states_no_evidence(text: str) -> bool:
    """Whether ``text`` says, in so many words, that no evidence was found."""
    return bool(_NO_EVIDENCE.search(text or ""))


def evidence_items(text: str) -> list[tuple[str, str, str, str]]:
    """The evidence items of one output: ``(label, text, source, trust)`` in order.

    A label is taken once; when it starts several lines (an item and later a
    finding that begins with it), the line that names a source or a trust
    class wins, else the first. Source and trust are "" when not given.
    """
    candidates: dict[str, list[str]] = {}
    for line in body(text).split("\n"):
        match = _TABLE_ITEM.match(line) or _ITEM.match(line)
        if not match:
            continue
        label, rest = match.group(1), match.group(2)
        if match.re is _TABLE_ITEM:
            rest = " | ".join(cell.strip() for cell in rest.strip().strip("|").split("|") if cell.strip())
        candidates.setdefault(label, []).append(rest.strip().strip("*").strip())
    items = []
    # In label order, so an angle's E1 stays ahead of its E2 wherever they appear.
    for label, texts in sorted(candidates.items(), key=lambda kv: int(kv[0][1:])):
        chosen = next((t for t in texts if _source(t) or _trust(t)), texts[0])
        items.append((label, _clip(chosen), _source(chosen), _trust(chosen)))
    return items


def _source(text: str) -> str:
    if m := _SOURCE.search(text):
        return m.group(1).strip().strip("`").strip()
    if m := _LOCATOR.search(text):
        return m.group(1).strip("`")
    return ""


def _trust(text: str) -> str:
    m = _TRUST.search(text) or _TRUST_WORD.search(text)
    return m.group(1).lower() if m else ""


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ITEM_CHARS else text[: _MAX_ITEM_CHARS - 3] + "..."


@dataclass(frozen=True)
class _Angle:
    step: str
    state: str  # "evidence", "none-stated", "silent", "empty", "missing"
    items: tuple[EvidenceItem, ...] = ()
    text: str = ""


def _read_angles(outputs: Mapping[str, str], angles: Sequence[str]) -> list[_Angle]:
    read: list[_Angle] = []
    number = 0
    for step in angles:
        if step not in outputs:
            read.append(_Angle(step, "missing"))
            continue
        text = body(outputs[step])
        if not text:
            read.append(_Angle(step, "empty"))
            continue
        items = []
        for label, item_text, source, trust in evidence_items(text):
            number += 1
            items.append(EvidenceItem(step, label, number, item_text, source, trust))
        if items:
            state = "evidence"
        else:
            state = "none-stated" if states_no_evidence(text) else "silent"
        read.append(_Angle(step, state, tuple(items), _demote(_renumber(text, step, items))))
    return read


def _demote(text: str) -> str:
    # An angle's "## Deferred (unverified)" must stay inside its "##### angle"
    # section of the fold, not become a section of the run's report.
    return report.nest(text, under=4)


def _renumber(text: str, angle: str, items: Sequence[EvidenceItem]) -> str:
    mapping = {item.label: item.ref for item in items}

    def swap(m: re.Match[str]) -> str:
        # One pass, so E1 -> E3 and E3 -> E5 cannot chain into E1 -> E5. A citation of a
        # label the angle never listed is marked; E100 and up is left as written: a lint
        # code such as E501, not evidence.
        label = m.group(0)
        if label in mapping:
            return mapping[label]
        return f"{angle}:{label} (not listed)" if len(label) <= 3 else label

    return _REF.sub(swap, text)


_MISSING_WHY = {
    "none-stated": 'looked and stated "No evidence found."',
    "silent": "cited no evidence and did not say it found none: treat its claims as unverified",
    "empty": "gave an empty answer",
    "missing": "no output (not in this band, skipped, or failed)",
}


def fold_angles(
    ctx: StepContext,
    angles: Sequence[str] | None = None,
    *,
    title: str = "Evidence folded from the angles",
    extra: Mapping[str, Any] | None = None,
) -> str:
    """The evidence ledger of ``angles`` (default: every completed step), as markdown.

    The frontmatter carries ``evidence_count``, ``unsourced_count``,
    ``angles`` (those that answered), ``angles_without_evidence`` (answered
    but listed no item) and ``angles_missing`` (no output or an empty one),
    then whatever ``extra`` holds. The body lists the renumbered items, the
    angles that found nothing and why, and each angle's answer with its
    references rewritten to the new numbers.
    """
    outputs = ctx.outputs
    names = list(angles) if angles is not None else list(outputs)
    read = _read_angles(outputs, names)
    items = [item for angle in read for item in angle.items]
    answered = [a.step for a in read if a.state not in ("empty", "missing")]
    fields: dict[str, Any] = {
        "evidence_count": len(items),
        "unsourced_count": sum(1 for item in items if not item.source),
        "angles": answered,
        "angles_without_evidence": [a.step for a in read if a.state in ("none-stated", "silent")],
        "angles_missing": [a.step for a in read if a.state in ("empty", "missing")],
    }
    fields.update(extra or {})

    # Headings start at level 4: the fold is embedded in the run's report
    # (under its step's heading) and in later prompts, never shown alone.
    lines = [
        f"**{title}**: {review.count(len(items), 'evidence item')} from {len(answered)} of "
        f"{review.count(len(read), 'angle')}, renumbered E1..E{len(items)} across angles." if items
        else f"**{title}**: no evidence items from "
        + ("the one angle." if len(read) == 1 else f"any of the {len(read)} angles."),
        "", "#### Evidence", "",
    ]
    if items:
        for item in items:
            # The item's own text already names its source and trust when it
            # gave them; only the gaps are spelled out, for the validator.
            gaps = [f"{what}: unstated" for what, got in (("source", item.source), ("trust", item.trust))
                    if not got]
            lines.append(f"- {item.ref} [{item.angle} {item.label}] {item.text}"
                         + (f" ({'; '.join(gaps)})" if gaps else ""))
    else:
        lines.append("No evidence found by any angle.")
    nothing = [a for a in read if a.state != "evidence"]
    if nothing:
        lines += ["", "#### Angles that found nothing", ""]
        lines += [f"- {a.step}: {_MISSING_WHY[a.state]}" for a in nothing]
    reports = [a for a in read if a.text]
    if reports:
        lines += ["", "#### Angle reports (evidence renumbered to match the list above)"]
        for a in reports:
            lines += ["", f"##### {a.step}", "", a.text]
    return _with_frontmatter(fields, lines)


def _with_frontmatter(fields: Mapping[str, Any], lines: Iterable[str]) -> str:
    head = yaml.safe_dump(dict(fields), sort_keys=False, allow_unicode=True, width=1000).rstrip()
    return "\n".join(["---", head, "---", *lines]).rstrip() + "\n"


def worst_severity(ctx: StepContext, steps: Iterable[str]) -> str:
    """The highest ``severity`` field among ``steps`` (low < medium < high < critical).

    "unknown" when none of them completed with a recognised severity, so a
    ``when`` comparing against high or critical stays false rather than
    failing on a missing field.
    """
    found = [
        str(ctx.fields.get(step, {}).get("severity", "")).strip().lower()
        for step in steps
        if step in ctx.outputs
    ]
    ranked = [s for s in found if s in _SEVERITIES]
    return max(ranked, key=_SEVERITIES.index) if ranked else "unknown"


def recommendation(ctx: StepContext, steps: Iterable[str]) -> dict[str, Any]:
    """Reviewers' ``recommendation`` fields, tallied.

    ``recommendation`` is ``changes_requested`` if any completed reviewer asked
    for changes (one blocking defect is enough), ``approve`` if at least one
    approved and none objected, else ``unknown``. ``changes_requested_by``
    names who asked.
    """
    asked, approved = [], []
    for step in steps:
        if step not in ctx.outputs:
            continue
        value = str(ctx.fields.get(step, {}).get("recommendation", "")).strip().lower()
        if value in ("changes_requested", "request_changes", "changes-requested", "reject"):
            asked.append(step)
        elif value in ("approve", "approved", "lgtm"):
            approved.append(step)
    verdict = "changes_requested" if asked else "approve" if approved else "unknown"
    return {"recommendation": verdict, "changes_requested_by": asked}


def run_summary(
    ctx: StepContext,
    steps: Sequence[str],
    *,
    required: Sequence[str] = (),
    title: str = "Run summary",
    keys: Sequence[str] = ("severity", "verdict", "recommendation", "confidence", "evidence_count", "summary"),
) -> str:
    """What an ``all_done`` report step says: which steps completed and what they concluded.

    A code step only sees completed outputs, so every other step is reported
    as giving no output: it was not in the run's band, or was skipped, failed
    or rejected (the run's report and events say which). The frontmatter has
    ``completed``, ``not_completed`` and ``complete`` (every ``required`` step
    completed).
    """
    done = [s for s in steps if s in ctx.outputs]
    missing = [s for s in steps if s not in ctx.outputs]
    complete = all(s in ctx.outputs for s in required)
    lines = [f"**{title}**", ""]
    lines.append(
        "Every step this report waits for completed." if not missing
        else f"{len(missing)} of {review.count(len(steps), 'step')} gave no output (not in this band, skipped, "
        f"failed or rejected): {', '.join(missing)}."
    )
    if not complete:
        absent = [s for s in required if s not in ctx.outputs]
        lines.append(f"The run's main result is missing ({', '.join(absent)}): read the findings as partial.")
    lines += ["", "| step | status | key fields |", "|---|---|---|"]
    for step in steps:
        if step in ctx.outputs:
            got = ctx.fields.get(step, {})
            shown = "; ".join(f"{k}: {_cell(got[k])}" for k in keys if k in got) or "-"
            lines.append(f"| {step} | completed | {shown} |")
        else:
            lines.append(f"| {step} | no output | - |")
    fields = {"completed": done, "not_completed": missing, "complete": complete}
    return _with_frontmatter(fields, lines)


def _cell(value: Any) -> str:
    text = " ".join(str(value).split()).replace("|", "\\|")
    return text if len(text) <= 120 else text[:117] + "..."


def approval_record(ctx: StepContext, gate: str, *, what: str = "the result") -> str:
    """The decision taken at approval step ``gate``, for a step in its ``on_reject``.

    Such a step runs whether the gate was approved or rejected; either way the
    approver's comment is the gate's output. ``ctx.statuses`` says which it
    was (a context without statuses: an approved gate is one with an output).
    """
    comment = (ctx.outputs.get(gate) or "").strip()
    status = getattr(ctx, "statuses", {}).get(gate) or (
        StepStatus.COMPLETED if gate in ctx.outputs else StepStatus.REJECTED)
    if succeeded(status):
        fields = {"decision": "approved", "comment": comment}
        lines = ["**Decision**", "", f"Approved at `{gate}`: {what} goes ahead."]
    else:
        fields = {"decision": "rejected", "comment": comment}
        lines = ["**Decision**", "", f"Rejected at `{gate}`: {what} does not go ahead."]
    lines.append(f"Approver's note: {comment}" if comment else "The approver left no note.")
    return _with_frontmatter(fields, lines)
