"""parallel-research: three angles in parallel on one question, then one synthesis.

The smallest form of the spine, with no fold: a researcher argues the case
for, another the case against, a third explains how the thing actually works;
the synthesis reads all three at once and weighs them. From medium a validator
attacks the synthesis; at large the synthesis is revised to answer it.
"""

from __future__ import annotations

from flows.catalog import _spine
from flows.model import Flow, agent

ANGLES = ("case-for", "case-against", "mechanics")

_PRODUCE = (
    "1. `## Answer`: your position in a few sentences.\n"
    "2. `## Findings`: each point with its evidence items, strongest first.\n"
    "3. `## Weakest point`: the part of your own position the evidence supports least."
)

# The three answers as the synthesis and the validator both read them.
_ANGLE_OUTPUTS = (
    "### The case for\n\n$case-for.output\n\n"
    "### The case against\n\n$case-against.output\n\n"
    "### How it works\n\n$mechanics.output"
)

parallel_research = Flow(
    name="parallel-research",
    category="Discovery",
    description=(
        "Three researcher angles in parallel (the case for, the case against, how it works), one "
        "synthesis that weighs them; a validator from medium, a revision at large."
    ),
    steps=[
        _spine.angle(
            "case-for", persona="researcher", label="The case for",
            task=(
                "Make the strongest evidence-based case FOR the proposition, option or approach in the "
                "question: where it has worked, what it makes easier, which constraints it satisfies. "
                "Argue from sources, not enthusiasm; a point without evidence goes to the deferred section."
            ),
            produce=_PRODUCE,
        ),
        _spine.angle(
            "case-against", persona="researcher", label="The case against",
            task=(
                "Make the strongest evidence-based case AGAINST the proposition, option or approach in "
                "the question: where it failed, what it costs, which constraints it breaks, what it "
                "makes harder later. Argue from sources, not suspicion; a point without evidence goes "
                "to the deferred section."
            ),
            produce=_PRODUCE,
        ),
        _spine.angle(
            "mechanics", persona="researcher", label="How it works",
            task=(
                "Explain how the thing in the question actually works, neutrally: its mechanism, the "
                "assumptions it rests on, its limits, and the conditions under which its behaviour "
                "changes. Read the reference material and the implementation."
            ),
            produce=(
                "1. `## Mechanism`: how it works, step by step, with evidence items.\n"
                "2. `## Assumptions and limits`: each with its evidence items."
            ),
        ),
        agent(
            "synthesize", persona="synthesizer", label="Weigh the three angles",
            deps=list(ANGLES), retries=1, retry_delay_s=5.0, timeout_s=_spine.SYNTHESIS_TIMEOUT_S,
            prompt=(
                "Question: $input.question\n\n"
                "Three researchers answered in parallel. Each numbered its own evidence from E1; cite "
                "an item with its angle, e.g. \"for E2\", \"against E1\", \"mechanics E3\".\n\n"
                f"{_ANGLE_OUTPUTS}\n\n"
                "Weigh them and answer the question. Write, in this order:\n"
                "1. `## Answer`: the conclusion, and under which conditions it flips.\n"
                "2. `## Findings`: the points that survive from each side, with their items.\n"
                "3. `## Disagreements`: where the cases conflict and which the evidence favours; use "
                "the mechanics angle to settle what it can.\n"
                "4. `## Recommendation`: what to do, in order.\n\n"
                "Use only evidence the three answers give; do not add items of your own. Claims no item "
                "supports go under a final `## Deferred (unverified)` heading.\n\n"
                "Begin with a YAML frontmatter block (first line `---`) with exactly these fields: "
                "position (one of for, against, depends), confidence (one of low, medium, high) and "
                "summary (the answer in one line)."
            ),
        ),
        _spine.validation(
            bands=["medium", "large"], evidence_text=_ANGLE_OUTPUTS,
            focus="Did the synthesis give one side's evidence less weight than it deserves?",
        ),
        agent(
            "revise", persona="synthesizer", label="Answer the objections",
            deps=["validate"], bands=["large"], retries=1, retry_delay_s=5.0,
            timeout_s=_spine.SYNTHESIS_TIMEOUT_S,
            prompt=(
                "Question: $input.question\n\n"
                "## Your earlier answer\n\n$synthesize.output\n\n"
                "## A validator's objections (verdict: $validate.output.verdict)\n\n$validate.output\n\n"
                "Revise the answer. For each objection, either change the answer and say how, or say "
                "why the evidence already cited stands. Keep the same sections (`## Answer`, "
                "`## Findings`, `## Disagreements`, `## Recommendation`) and keep citing the angles' "
                "evidence items as before (e.g. \"for E2\"); a claim that no longer stands moves under a "
                "final `## Deferred (unverified)` heading. Add `## Objections addressed` listing each "
                "objection and what you did about it.\n\n"
                "Begin with a YAML frontmatter block (first line `---`) with exactly these fields: "
                "position (one of for, against, depends), confidence (one of low, medium, high) and "
                "summary (the answer in one line)."
            ),
        ),
    ],
)
