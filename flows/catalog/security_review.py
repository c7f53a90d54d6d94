"""security-review: look for ways a system can be made to do what its owner did not intend.

Security reviewers each take one attack surface: input handling and access
control always; secrets and configuration from medium; dependencies and data
exposure at large. The fold numbers their evidence and carries the worst
severity found; a synthesizer ranks the issues with fixes, and a validator
attacks the ranking (an overstated issue wastes effort, an understated one
ships).
"""

from __future__ import annotations

from flows.catalog import _fold, _spine
from flows.model import Flow

ANGLES = ("input-handling", "access-control", "secrets-config", "dependencies", "data-exposure")

_PRODUCE = (
    "1. `## Findings`: one entry per issue: what, where (`file:line`), how it is abused, impact, a "
    "concrete fix, and its evidence items.\n"
    "2. `## Checked and clean`: what you examined and found no problem in, and how.\n"
    "Begin with a YAML frontmatter block (first line `---`) with exactly these fields: "
    "severity (one of low, medium, high, critical: the worst issue you found; low if none) and "
    "summary (one line)."
)


def fold(ctx: _fold.StepContext) -> str:
    """Fold the security angles into one ledger carrying the worst severity any angle reported."""
    return _fold.fold_angles(
        ctx, ANGLES, title="Security evidence", extra={"severity": _fold.worst_severity(ctx, ANGLES)}
    )


security_review = Flow(
    name="security-review",
    category="Review",
    description=(
        "Security review by attack surface: input handling and access control (+ secrets and config "
        "at medium, + dependencies and data exposure at large), folded with the worst severity, "
        "ranked with fixes, validated."
    ),
    steps=[
        _spine.code_angle(
            "input-handling", persona="security-reviewer", label="Input handling",
            task=(
                "Trace untrusted input in the system the question names, from where it enters "
                "(requests, files, messages, command-line arguments, environment) to where it is "
                "used. Look for injection into SQL, shells, templates and file paths; unsafe "
                "deserialization; server-side request forgery; and missing size, rate or type limits."
            ),
            produce=_PRODUCE,
        ),
        _spine.code_angle(
            "access-control", persona="security-reviewer", label="Authentication and authorization",
            task=(
                "Check authentication and authorization in the system the question names: every "
                "route, command or handler that acts on data, and the check that guards it. Look for "
                "missing or bypassable checks, object access by guessable id, privilege changes "
                "without re-checks, session and token handling, and defaults that grant too much."
            ),
            produce=_PRODUCE,
        ),
        _spine.code_angle(
            "secrets-config", persona="security-reviewer", label="Secrets and configuration",
            bands=["medium", "large"],
            task=(
                "Check secrets and security-relevant configuration in the system the question names: "
                "credentials in code, history, logs, error messages or images; how secrets are "
                "loaded and rotated; debug modes, permissive CORS, disabled TLS verification, and "
                "insecure defaults that reach production."
            ),
            produce=_PRODUCE,
        ),
        _spine.code_angle(
            "dependencies", persona="security-reviewer", label="Dependencies",
            bands=["large"],
            task=(
                "Check the dependencies of the system the question names: known advisories against "
                "the pinned versions (name the advisory), unpinned or loosely pinned packages, "
                "abandoned packages, install-time scripts, and how the lock file is kept current."
            ),
            produce=_PRODUCE,
        ),
        _spine.code_angle(
            "data-exposure", persona="security-reviewer", label="Data exposure",
            bands=["large"],
            task=(
                "Check what data the system the question names exposes: personal or sensitive fields "
                "in API responses, logs, metrics, error pages and exports; data kept longer than "
                "needed; encryption at rest and in transit; and who can read backups."
            ),
            produce=_PRODUCE,
        ),
        _spine.fold(fold, ANGLES),
        _spine.synthesis(
            task=(
                "Rank the security issues found, worst first, each with a fix. Severity follows "
                "impact and ease of abuse: critical = usable by an outsider now; high = a real "
                "weakness or data loss; medium = needs unusual access; low = hardening."
            ),
            sections=(
                "1. `## Answer`: the overall security posture in a few sentences.\n"
                "2. `## Findings`: issues worst first, each with severity, fix and items.\n"
                "3. `## Checked and clean`: surfaces examined with no issue, with items.\n"
                "4. `## Recommendation`: fixes in the order to ship them."
            ),
            fields=(
                "severity (one of low, medium, high, critical: the worst issue), confidence (one of "
                "low, medium, high) and summary (one line)"
            ),
        ),
        _spine.validation(focus="Is any severity overstated or understated, given how the issue is reached?"),
    ],
)
