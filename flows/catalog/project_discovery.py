"""project-discovery: get to know an unfamiliar repository, then write the guide to it.

Angles map the layout and the build/run/test loop (+ the conventions a
contribution must follow at medium, + the history's hot spots at large); the
fold numbers their evidence, a writer turns it into an onboarding guide, and
from medium a validator checks the guide against the evidence.
"""

from __future__ import annotations

from flows.catalog import _fold, _spine
from flows.model import Flow

ANGLES = ("layout", "build", "conventions", "history")


def fold(ctx: _fold.StepContext) -> str:
    """Fold the discovery angles into one renumbered evidence ledger."""
    return _fold.fold_angles(ctx, ANGLES, title="Project evidence")


project_discovery = Flow(
    name="project-discovery",
    category="Discovery",
    description=(
        "Get to know a repository: layout and build/test loop (+ conventions at medium, + history "
        "hot spots at large) in parallel, folded into an onboarding guide, validated from medium."
    ),
    steps=[
        _spine.code_angle(
            "layout", persona="codebase-explorer", label="Layout and components",
            task=(
                "Map the repository or directory named in the question: its top-level layout, the "
                "main components and what each is responsible for, the entry points (executables, "
                "services, public modules), and how the components depend on each other. Read the "
                "package manifests and import statements, not only the directory names."
            ),
            produce=(
                "1. `## Structure`: each component with its path, responsibility and dependencies.\n"
                "2. `## Entry points`: each with its path and what starts it.\n"
                "3. `## Findings`: anything surprising about the structure, with evidence items."
            ),
        ),
        _spine.code_angle(
            "build", persona="investigator", label="Build, run and test",
            task=(
                "Find out how to build, run and test the project named in the question: the "
                "toolchain and versions it needs, the exact commands (from the manifest, Makefile, "
                "CI configuration or contributor guide), the test suites and how long they take, and "
                "the services they need (databases, queues). Prefer what CI actually runs over what "
                "a guide says; note where they differ."
            ),
            produce=(
                "1. `## Setup`: the commands from a fresh checkout to a passing test run, in order.\n"
                "2. `## Test suites`: each suite, its command, what it needs and its rough duration.\n"
                "3. `## Findings`: traps a newcomer would hit, with evidence items."
            ),
        ),
        _spine.code_angle(
            "conventions", persona="investigator", label="Conventions",
            bands=["medium", "large"],
            task=(
                "Find the conventions a contribution to the project named in the question must "
                "follow: formatters and linters and their configuration, type checking, commit and "
                "branch rules, review rules, how errors and logging are done, how tests are organised "
                "and named. Take each rule from configuration or from a consistent pattern in the code "
                "(give two examples), never from taste."
            ),
            produce=(
                "1. `## Rules`: each rule, where it is enforced (tool or review) and evidence items.\n"
                "2. `## Findings`: places the code breaks its own rules, with evidence items."
            ),
        ),
        _spine.code_angle(
            "history", persona="investigator", label="History and hot spots",
            bands=["large"],
            task=(
                "Read the history of the project named in the question: the files changed most often "
                "in the last year (`git log --since=1.year --name-only`), the areas with the most "
                "fix commits, who maintains which area, and the recent direction (large refactors, "
                "deprecations, migrations under way)."
            ),
            produce=(
                "1. `## Hot spots`: the most-changed files or areas, with counts and evidence items.\n"
                "2. `## Direction`: work under way that a newcomer should know about, with evidence items."
            ),
        ),
        _spine.fold(fold, ANGLES),
        _spine.synthesis(
            step_id="guide", persona="writer", label="Write the onboarding guide",
            task=(
                "Write an onboarding guide for an engineer new to this project who wants to do what "
                "the question describes. Short sentences, concrete commands and paths, no marketing tone."
            ),
            sections=(
                "1. `## Answer`: what the project is and how it is put together, in one paragraph.\n"
                "2. `## Getting started`: from a fresh checkout to a passing test run, command by command.\n"
                "3. `## Map`: the components a newcomer touches first, with paths.\n"
                "4. `## Recommendation`: where to start for the task in the question, and what to avoid."
            ),
        ),
        _spine.validation(
            target="guide", bands=["medium", "large"],
            focus="Would any command in the guide fail on a fresh checkout, judging by the evidence?",
        ),
    ],
)
