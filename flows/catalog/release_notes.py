"""release-notes: draft release notes from the changes themselves, check them, publish on approval.

An investigator lists what changed in the range the question names; from
medium an analyst works out the user-facing impact (breaking changes,
migrations, deprecations) and a reviewer checks every sentence of the draft
against the evidence; at large a second investigator verifies the upgrade
path. A writer drafts, and a person approves publication.
"""

from __future__ import annotations

from flows.catalog import _fold, _spine
from flows.model import Flow, agent, approval

ANGLES = ("changes", "impact", "upgrade")


def fold(ctx: _fold.StepContext) -> str:
    """Fold the release angles into one renumbered evidence ledger."""
    return _fold.fold_angles(ctx, ANGLES, title="Release evidence")


release_notes = Flow(
    name="release-notes",
    category="Authoring",
    description=(
        "Release notes from the changes: what changed (+ user impact and a fact check at medium, "
        "+ upgrade path at large), folded, drafted by a writer, published on approval."
    ),
    steps=[
        _spine.angle(
            "changes", persona="investigator", label="What changed",
            task=(
                "List what changed in the release or range the question names (for example "
                "`git log --no-merges v1.2.0..v1.3.0`, merged pull requests, changelog fragments). "
                "Group the changes as added, changed, fixed, removed. For each, give the commit or "
                "pull request and one plain sentence on what a user notices. Leave out internal "
                "refactors no user can notice, but count them."
            ),
            produce=(
                "1. `## Changes`: grouped as Added / Changed / Fixed / Removed, one line each with its "
                "evidence items.\n"
                "2. `## Left out`: how many internal-only changes you left out, and their kinds."
            ),
        ),
        _spine.angle(
            "impact", persona="analyst", label="User impact",
            bands=["medium", "large"],
            task=(
                "Work out what the release or range the question names means for its users: "
                "breaking changes (removed or renamed options, changed defaults, changed output "
                "formats), required migrations, deprecations and their timelines, and changed "
                "minimum versions of dependencies or runtimes. Check each against the diff, not the "
                "commit message alone."
            ),
            produce=(
                "1. `## Breaking`: each breaking change, who it affects, what they must do.\n"
                "2. `## Deprecations`: each with its replacement and timeline.\n"
                "3. `## Findings`: short sentences, each citing its evidence items."
            ),
        ),
        _spine.angle(
            "upgrade", persona="investigator", label="Upgrade path",
            bands=["large"],
            task=(
                "Verify the upgrade path to the release the question names: the steps a user takes "
                "from the previous release (configuration changes, data or schema migrations, "
                "commands to run), in order, and whether any step cannot be undone. Read the "
                "migration code and the tests that cover it."
            ),
            produce=(
                "1. `## Upgrade steps`: numbered, each with how to check it worked.\n"
                "2. `## One-way steps`: steps that cannot be undone, with evidence items."
            ),
        ),
        _spine.fold(fold, ANGLES),
        _spine.synthesis(
            step_id="draft", persona="writer", label="Draft the notes",
            task=(
                "Write the release notes for the release the question names, for the people who "
                "use it (not its developers). Plain sentences; breaking changes first; each line "
                "traceable to its evidence item."
            ),
            sections=(
                "1. `## Answer`: a two-sentence summary of the release.\n"
                "2. `## Breaking changes` (if any), each with what the user must do.\n"
                "3. `## Added`, `## Changed`, `## Fixed`, `## Removed`: one line per change, citing items.\n"
                "4. `## Recommendation`: how to upgrade, in order."
            ),
        ),
        agent(
            "check", persona="reviewer", label="Fact-check the draft",
            deps=["draft"], bands=["medium", "large"], retries=1, retry_delay_s=5.0,
            timeout_s=_spine.SYNTHESIS_TIMEOUT_S,
            prompt=(
                "Fact-check these release notes line by line against the evidence they cite.\n\n"
                "Release: $input.question\n\n## Draft\n\n$draft.output\n\n## Evidence\n\n$fold.output\n\n"
                "For each line of the draft: is the cited item there, and does it say that? Is a "
                "user-visible change from the evidence missing from the draft? Is a breaking change "
                "described as anything less?\n\n"
                "Begin with a YAML frontmatter block (first line `---`) with exactly these fields: "
                "recommendation (one of approve, changes_requested) and summary (one line).\n"
                "Then `## Blocking`: wrong or missing lines, each with the fix. `## Suggestions`: "
                "wording that can wait.\n\n" + _spine.EVIDENCE_RULES
            ),
        ),
        approval(
            "publish", deps=["draft", "check"], label="Publish the notes?",
            prompt=(
                "Publish the release notes for: $input.question\n\n"
                "Draft summary: $draft.output.summary\n\n"
                "Approve to publish; your comment is recorded with the approval. Reject to hold them back."
            ),
        ),
    ],
)
