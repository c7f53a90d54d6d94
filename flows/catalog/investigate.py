"""investigate: find out what is actually true about a question on a system.

Rival angles look at the question in parallel (the code path and its recent
history; how to reproduce it from medium; the runtime environment at large), a
fold numbers their evidence into one ledger, a synthesizer answers and an
adversarial validator attacks the answer before anyone acts on it.
"""

from __future__ import annotations

from flows.catalog import _fold, _spine
from flows.model import Flow

ANGLES = ("code-path", "history", "reproduce", "environment")


def fold(ctx: _fold.StepContext) -> str:
    """Fold the investigation angles into one renumbered evidence ledger."""
    return _fold.fold_angles(ctx, ANGLES, title="Investigation evidence")


investigate = Flow(
    name="investigate",
    category="Analysis",
    description=(
        "Answer a question about a system from evidence: the code path and its history "
        "(+ reproduction at medium, + environment at large) in parallel, folded, "
        "synthesized, then attacked by a validator."
    ),
    steps=[
        _spine.code_angle(
            "code-path", persona="codebase-explorer", label="Trace the code path",
            task=(
                "Trace the code path behind this question. Find the entry point (route, command, job "
                "or function) where the behaviour starts and follow it through every module it calls. "
                "Read the code rather than guessing from names, and note each branch, configuration "
                "value or default that decides the outcome."
            ),
            produce=(
                "1. A one-paragraph answer from the code alone, saying how sure you are.\n"
                "2. `## Path`: the call chain as `file:line` hops, one per line.\n"
                "3. `## Findings`: short sentences, each citing its evidence items.\n"
                "4. `## Open questions`: what the code alone cannot settle, and how to settle it."
            ),
        ),
        _spine.code_angle(
            "history", persona="investigator", label="Read the history",
            task=(
                "Find what changed around the behaviour in question: recent commits to the files "
                "involved (`git log -p`, `git blame` on the lines that decide the outcome), merged "
                "pull requests, dependency upgrades, configuration or deployment changes, and "
                "tracker issues that describe the same symptom. Decide whether the behaviour is new "
                "(name the change that introduced it) or long-standing."
            ),
            produce=(
                "1. `## Timeline`: dated changes with commit ids or links, oldest first.\n"
                "2. `## Suspects`: the changes most likely related, ranked, each with the reason.\n"
                "3. `## Findings`: short sentences, each citing its evidence items."
            ),
        ),
        _spine.code_angle(
            "reproduce", persona="investigator", label="Find a reproduction",
            bands=["medium", "large"],
            task=(
                "Work out how to observe the behaviour on purpose: the smallest input, command or "
                "request sequence that shows it, and what the expected behaviour would look like. "
                "Stay read-only: use existing tests, logs, dry-run flags, and the test suite. Say "
                "which existing test would change outcome if the behaviour were fixed, or that none would."
            ),
            produce=(
                "1. `## Reproduction`: numbered steps, with the expected and the actual result.\n"
                "2. `## Existing coverage`: the tests that touch this path and what they assert.\n"
                "3. `## Findings`: short sentences, each citing its evidence items."
            ),
        ),
        _spine.code_angle(
            "environment", persona="investigator", label="Check the environment",
            bands=["large"],
            task=(
                "Check what outside the code shapes the behaviour: configuration files and environment "
                "variables the code reads and their defaults, dependency versions (pinned versus "
                "installed), platform differences (OS, runtime version, database), and the data itself "
                "(sizes, encodings, edge values). Name each setting, where it is read, and its value in "
                "the setup the question describes."
            ),
            produce=(
                "1. `## Settings`: each setting or version that matters, where it is read, its value.\n"
                "2. `## Findings`: short sentences, each citing its evidence items."
            ),
        ),
        _spine.fold(fold, ANGLES),
        _spine.synthesis(
            task=(
                "Answer the question. Say which explanation the evidence favours, which rival "
                "explanations it rules out, and what would change the answer."
            ),
            sections=(
                "1. `## Answer`: the conclusion in a few sentences, with how sure you are.\n"
                "2. `## Findings`: merged findings, each citing its items.\n"
                "3. `## Rival explanations`: each one, and the evidence for and against it.\n"
                "4. `## Recommendation`: the next checks or fixes, in order."
            ),
        ),
        _spine.validation(),
    ],
)
