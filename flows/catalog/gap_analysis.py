"""gap-analysis: compare what a system does with what it is expected to do.

Analyst angles check the stated expectation (a requirement, spec, issue or
goal) against the implementation and against what verifies it; from medium
they add operations (failure handling, observability, rollout), at large the
interfaces (APIs, formats, compatibility). The fold gives one evidence ledger
and the synthesis ranks the gaps to close.
"""

from __future__ import annotations

from flows.catalog import _fold, _spine
from flows.model import Flow

ANGLES = ("requirements", "verification", "operations", "interfaces")

_PRODUCE = (
    "1. `## Gaps`: each gap as expectation / observed / impact, with its evidence items.\n"
    "2. `## Met`: each expectation you checked and found satisfied, with its evidence items.\n"
    "3. `## Priorities`: the gaps in the order to close them, and why."
)


def fold(ctx: _fold.StepContext) -> str:
    """Fold the gap-analysis angles into one renumbered evidence ledger."""
    return _fold.fold_angles(ctx, ANGLES, title="Gap-analysis evidence")


gap_analysis = Flow(
    name="gap-analysis",
    category="Analysis",
    description=(
        "Compare a system with a stated expectation: requirements and verification angles "
        "(+ operations at medium, + interfaces at large), folded into ranked gaps, then validated."
    ),
    steps=[
        _spine.angle(
            "requirements", persona="analyst", label="Requirements against the code",
            task=(
                "Break the expectation stated in the question (a requirement, specification, issue or "
                "goal) into numbered, checkable statements. For each statement, find whether the "
                "system meets it: the code that implements it, the configuration that enables it, or "
                "its absence. Quantify where you can (counts, sizes, timings) and say how you measured."
            ),
            produce=(
                "1. `## Expectations`: the numbered checkable statements.\n"
                "2. `## Gaps`: each gap as statement number / observed / impact, with its evidence items.\n"
                "3. `## Met`: each statement you found satisfied, with its evidence items.\n"
                "4. `## Priorities`: the gaps in the order to close them, and why."
            ),
        ),
        _spine.angle(
            "verification", persona="analyst", label="What proves it",
            task=(
                "Check what proves the expectation in the question holds today: unit, integration and "
                "end-to-end tests that exercise each part of it, the CI jobs that run them, assertions "
                "in the code, and monitoring or alerts. Behaviour with code but no test is a "
                "verification gap: name the test that is missing and what it would assert."
            ),
            produce=_PRODUCE,
        ),
        _spine.angle(
            "operations", persona="analyst", label="Operations",
            bands=["medium", "large"],
            task=(
                "Check the expectation in the question under real operating conditions: failure "
                "handling (timeouts, retries, partial failure, restarts), observability (the logs, "
                "metrics or traces that would show it breaking), configuration and rollout (defaults, "
                "migrations, rollback), and limits (sizes, rates, concurrency)."
            ),
            produce=_PRODUCE,
        ),
        _spine.angle(
            "interfaces", persona="analyst", label="Interfaces and compatibility",
            bands=["large"],
            task=(
                "Check the boundaries the expectation in the question touches: public APIs, command "
                "lines, file formats and schemas. Compare what is promised (reference pages, type "
                "hints, schemas, changelog) with what is implemented; look for undocumented behaviour, "
                "breaking changes and inconsistencies between interfaces."
            ),
            produce=_PRODUCE,
        ),
        _spine.fold(fold, ANGLES),
        _spine.synthesis(
            task="List the gaps between the system and the expectation, and the order to close them in.",
            sections=(
                "1. `## Answer`: how far the system is from the expectation, in a few sentences.\n"
                "2. `## Gaps`: merged gaps as expectation / observed / impact, each citing its items.\n"
                "3. `## Met`: expectations shown to be satisfied, each citing its items.\n"
                "4. `## Recommendation`: the gaps in the order to close them, with the effort each takes."
            ),
        ),
        _spine.validation(focus="Is any gap counted twice, or any 'met' expectation only assumed?"),
    ],
)
