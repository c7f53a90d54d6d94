"""architectural-analysis: assess how a system is built and what is fragile in it.

The angles grow with the band: structural (components and dependencies) always,
behavioral (runtime paths, state, errors) from medium, concurrency (shared
state, ordering, races) at large. Their evidence is folded, synthesized into an
assessment with ranked recommendations, and attacked by a validator.
"""

from __future__ import annotations

from flows.catalog import _fold, _spine
from flows.model import Flow

ANGLES = ("structural", "behavioral", "concurrency")

_PRODUCE = (
    "1. `## {what}`: {shape}\n"
    "2. `## Findings`: each problem with where it shows (`file:line`) and its evidence items.\n"
    "3. `## Recommendations`: changes ordered by value for effort, each with the trade-off it makes."
)


def fold(ctx: _fold.StepContext) -> str:
    """Fold the architecture angles into one renumbered evidence ledger."""
    return _fold.fold_angles(ctx, ANGLES, title="Architecture evidence")


architectural_analysis = Flow(
    name="architectural-analysis",
    category="Analysis",
    description=(
        "Assess a system's architecture: structural (+ behavioral at medium, + concurrency at large) "
        "angles in parallel, folded, synthesized into ranked recommendations, then validated."
    ),
    steps=[
        _spine.code_angle(
            "structural", persona="architect", label="Structure",
            task=(
                "Map the structure of the system or component named in the question: its modules and "
                "packages, what each is responsible for, and the import and call dependencies between "
                "them. Use import statements and build configuration as primary sources. Look for "
                "dependency cycles, lower layers importing higher ones, modules with many reasons to "
                "change, and responsibilities duplicated across modules."
            ),
            produce=_PRODUCE.format(
                what="Structure", shape="each component, its responsibility, and what it depends on."
            ),
        ),
        _spine.code_angle(
            "behavioral", persona="architect", label="Behaviour",
            bands=["medium", "large"],
            task=(
                "Follow the main runtime paths: how a request, command or job moves through the "
                "components; where state lives and who changes it; how errors travel (raised, wrapped, "
                "swallowed, retried); what is synchronous and what is not; where time and I/O go. "
                "Contrast what the structure suggests with what actually happens when it runs."
            ),
            produce=_PRODUCE.format(
                what="Runtime paths", shape="each main path as a sequence of `file:line` hops, and where state lives."
            ),
        ),
        _spine.code_angle(
            "concurrency", persona="architect", label="Concurrency",
            bands=["large"],
            task=(
                "Look for concurrency and consistency hazards: shared mutable state and what guards it, "
                "locks and the order they are taken in, threads, tasks or processes and how they hand "
                "work over, check-then-act sequences, retries that are not idempotent, transactions and "
                "their isolation level, caches that can go stale, and ordering assumptions between "
                "messages or events. For each hazard, give the interleaving that breaks it."
            ),
            produce=_PRODUCE.format(
                what="Shared state", shape="each piece of shared state, who touches it and what guards it."
            ),
        ),
        _spine.fold(fold, ANGLES),
        _spine.synthesis(
            task=(
                "Give an architectural assessment of what the question names: what holds, what is "
                "fragile, and which changes are worth making."
            ),
            sections=(
                "1. `## Answer`: the assessment in a few sentences.\n"
                "2. `## Findings`: merged findings, each citing its items and naming its angle.\n"
                "3. `## Disagreements`: where angles conflict and which side the evidence favours.\n"
                "4. `## Recommendation`: changes ordered by value for effort, each with its trade-off."
            ),
        ),
        _spine.validation(
            focus="Is any recommended change riskier than the problem it fixes? Say which and why."
        ),
    ],
)
