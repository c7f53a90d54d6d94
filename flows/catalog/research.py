"""research: answer a technical question from sources, keeping fact apart from claim.

Researcher angles each take one kind of source: primary references and the
implementation always; field experience (issues, changelogs, write-ups) from
medium; alternatives at large. The fold numbers their evidence into one
ledger, a synthesizer answers, and a validator attacks the answer.
"""

from __future__ import annotations

from flows.catalog import _fold, _spine
from flows.model import Flow

ANGLES = ("references", "implementation", "experience", "alternatives")

_PRODUCE = (
    "1. `## Answer`: a direct answer from this kind of source alone, with how confident you are.\n"
    "2. `## Findings`: each finding with its evidence items; date anything that may have changed.\n"
    "3. `## Not covered`: what these sources do not settle."
)


def fold(ctx: _fold.StepContext) -> str:
    """Fold the research angles into one renumbered evidence ledger."""
    return _fold.fold_angles(ctx, ANGLES, title="Research evidence")


research = Flow(
    name="research",
    category="Discovery",
    description=(
        "Answer a technical question from sources: references and implementation (+ field experience "
        "at medium, + alternatives at large) in parallel, folded, synthesized, then validated."
    ),
    steps=[
        _spine.angle(
            "references", persona="researcher", label="Primary references",
            task=(
                "Answer from primary references: the official reference pages, specification, standard "
                "or the project's own guides, at the version the question concerns (say which version "
                "you read). Quote the passages that settle the question, with their URL or path."
            ),
            produce=_PRODUCE,
        ),
        _spine.angle(
            "implementation", persona="researcher", label="The implementation",
            task=(
                "Answer from the implementation: read the source code of the library, tool or system "
                "the question is about and find where the behaviour is decided. Prefer the code over "
                "any description of it, and note every place where the two disagree."
            ),
            produce=_PRODUCE,
        ),
        _spine.angle(
            "experience", persona="researcher", label="Field experience",
            bands=["medium", "large"],
            task=(
                "Answer from field experience: issue trackers, changelogs and release notes, mailing "
                "lists, and well-regarded write-ups by people who ran it in production. Look for known "
                "bugs, limitations, workarounds and behaviour changes between versions; date every item."
            ),
            produce=_PRODUCE,
        ),
        _spine.angle(
            "alternatives", persona="researcher", label="Alternatives",
            bands=["large"],
            task=(
                "Look at the alternatives: other approaches, libraries or designs that address the "
                "same need as the question. For each, say what it does better or worse for this case, "
                "with evidence, and when you would choose it instead."
            ),
            produce=(
                "1. `## Alternatives`: one entry each: what it is, better at, worse at, evidence items.\n"
                "2. `## When to choose which`: a short decision rule."
            ),
        ),
        _spine.fold(fold, ANGLES),
        _spine.synthesis(
            task="Answer the question, keeping what is established apart from what is merely claimed.",
            sections=(
                "1. `## Answer`: a direct answer in a few sentences, with how confident you are.\n"
                "2. `## Findings`: merged findings, each citing its items.\n"
                "3. `## Disagreements`: where sources conflict, and which the evidence favours.\n"
                "4. `## Recommendation`: what to do with this answer, in order."
            ),
        ),
        _spine.validation(focus="Is any item stale (an old version, a superseded reference) yet relied on?"),
    ],
)
