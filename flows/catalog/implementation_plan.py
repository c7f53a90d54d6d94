"""implementation-plan: turn a goal into a short, reviewed plan that a person signs off.

An investigator reads the code as it is while planners draft the approach
(+ the risks and rollback at medium, + the verification strategy at large).
The fold numbers their evidence, a synthesizer merges them into one plan, a
validator attacks it from medium, and an approval gate asks a person to adopt
it: the approver's comment is the gate's output, kept in the report.
"""

from __future__ import annotations

from flows.catalog import _fold, _spine
from flows.model import Flow, approval

ANGLES = ("context", "approach", "risks", "verification")


def fold(ctx: _fold.StepContext) -> str:
    """Fold the planning angles into one renumbered evidence ledger."""
    return _fold.fold_angles(ctx, ANGLES, title="Planning evidence")


implementation_plan = Flow(
    name="implementation-plan",
    category="Planning",
    description=(
        "Plan a change: current-code context and an approach (+ risks at medium, + verification at "
        "large) in parallel, folded into one plan, validated from medium, then signed off by a person."
    ),
    steps=[
        _spine.angle(
            "context", persona="investigator", label="The code as it is",
            task=(
                "Describe the code the goal in the question will touch, as it is today: the modules, "
                "functions and data structures involved, their callers, the tests that cover them, "
                "and any constraint the change must respect (public interfaces, stored data formats, "
                "performance budgets). Do not propose changes."
            ),
            produce=(
                "1. `## Touch points`: each place the change will touch, as `file:line` with its role.\n"
                "2. `## Constraints`: each constraint with where it comes from.\n"
                "3. `## Findings`: short sentences, each citing its evidence items."
            ),
        ),
        _spine.angle(
            "approach", persona="planner", label="The approach",
            task=(
                "Propose the simplest approach that reaches the goal in the question, as small "
                "reversible steps. Ground each step in the code as it is (cite files). Name one "
                "credible alternative approach and why you did not choose it."
            ),
            produce=(
                "1. `## Goal`: the goal in one sentence, and what done means.\n"
                "2. `## Plan`: numbered steps, each with what to change, where, and how to verify it.\n"
                "3. `## Alternative`: the approach you rejected, and why."
            ),
        ),
        _spine.angle(
            "risks", persona="planner", label="Risks and rollback",
            bands=["medium", "large"],
            task=(
                "List what could go wrong on the way to the goal in the question: data or format "
                "migrations, compatibility with existing callers and stored data, deployment order, "
                "performance, and partial completion. For each risk, say how it would be detected "
                "early and how the change is rolled back."
            ),
            produce=(
                "1. `## Risks`: each risk, its likelihood and impact, how it is detected, how it is undone.\n"
                "2. `## Findings`: short sentences, each citing its evidence items."
            ),
        ),
        _spine.angle(
            "verification", persona="planner", label="Verification strategy",
            bands=["large"],
            task=(
                "Plan how to prove the change in the question works and keeps working: which existing "
                "tests must still pass, which new tests to write (name what each asserts), what to "
                "measure before and after, and what to watch after release."
            ),
            produce=(
                "1. `## Tests`: each test to add or keep, what it asserts, where it lives.\n"
                "2. `## Measurements`: each figure to take before and after, and how."
            ),
        ),
        _spine.fold(fold, ANGLES),
        _spine.synthesis(
            # The synthesizer persona: it merges the angles (the planners did the
            # planning), and the report renders it as the recommendation.
            step_id="plan", label="Write the plan",
            task=(
                "Write the implementation plan for the goal in the question: small reversible steps, "
                "in order, each grounded in the evidence."
            ),
            sections=(
                "1. `## Goal`: the goal in one sentence, and what done means.\n"
                "2. `## Plan`: numbered steps, each with what to change, where, how to verify it, "
                "what it depends on, and the evidence items behind it.\n"
                "3. `## Risks`: each risk with how it is detected early and rolled back.\n"
                "4. `## Recommendation`: the first step to take, and what to decide before starting."
            ),
            fields=(
                "steps (the number of plan steps), confidence (one of low, medium, high) and "
                "summary (the plan in one line)"
            ),
        ),
        _spine.validation(
            target="plan", bands=["medium", "large"],
            focus="Is there a step that cannot be verified or rolled back as written?",
        ),
        approval(
            "sign-off", deps=["plan", "validate"], label="Adopt the plan?",
            prompt=(
                "Adopt this plan for: $input.question\n\n"
                "Plan: $plan.output.summary (planner's confidence: $plan.output.confidence)\n\n"
                "Approve to adopt it; your comment is kept as the sign-off note. Reject to send it back."
            ),
        ),
    ],
)
