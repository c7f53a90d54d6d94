"""security-escalation: investigate a report, classify it, and bring in security only when it matters.

An investigator establishes the facts and a triager classifies them, emitting
``severity`` in its frontmatter. The security review runs only when
``$classify.output.severity in ['high', 'critical']`` (and at large a
blast-radius assessment joins it under the same condition); otherwise both are
skipped by their condition. The response is a join that tolerates the skipped
branch (``none_failed_min_one_success``), so a low-severity report still gets
an answer, and from medium a validator checks that the decision is proportionate.
"""

from __future__ import annotations

from flows.catalog import _spine
from flows.model import Flow, TriggerRule, agent

# The one condition the flow exists for; both security steps share it.
ESCALATE = "$classify.output.severity in ['high', 'critical']"

# The investigation and classification prompts stay free of alarming words on
# purpose: the triager (and the offline backend standing in for it) must rate
# the report, not the boilerplate around it.
_INVESTIGATE = (
    "Investigate the report in the question before anyone classifies it. Establish what "
    "exactly happens, where in the code or configuration it happens, since when, which users, "
    "data or systems it touches, and whether someone outside the organisation could set it off "
    "on purpose. Work read-only."
)

_SECURITY_OUTPUT = (
    "Begin with a YAML frontmatter block (first line `---`) with exactly these fields: "
    "severity (one of low, medium, high, critical: your own assessment) and summary (one line)."
)

security_escalation = Flow(
    name="security-escalation",
    category="Review",
    description=(
        "Investigate a report, classify its severity, and run a security review only when the "
        "severity is high or critical (+ blast radius at large); a response either way, validated "
        "from medium."
    ),
    steps=[
        _spine.angle(
            "investigate", persona="investigator", label="Establish the facts",
            task=_INVESTIGATE,
            produce=(
                "1. A one-paragraph account of what happens, saying how sure you are.\n"
                "2. `## Findings`: short sentences, each citing its evidence items.\n"
                "3. `## Reach`: who or what is affected, and who could set it off."
            ),
        ),
        agent(
            "classify", persona="triager", label="Classify severity", deps=["investigate"],
            retries=1, retry_delay_s=5.0, timeout_s=_spine.ANGLE_TIMEOUT_S,
            prompt=(
                "Classify the problem investigated below so the flow can route it.\n\n"
                "Report: $input.question\n\n## Investigation\n\n$investigate.output\n\n"
                "Begin with a YAML frontmatter block: the very first line of your answer is `---`, "
                "with no code fence, and it holds exactly these fields:\n"
                "- severity: one of low, medium, high, critical. critical = someone outside can abuse "
                "it now, or stored keys or passwords are exposed; high = a security weakness or a loss "
                "of data; medium = a real defect with a workaround; low = cosmetic.\n"
                "- category: one word from your instructions (for example security, bug, performance).\n"
                "- summary: what the problem is, in one line.\n"
                "Below the frontmatter, justify the severity in a few sentences, citing the "
                "investigation's evidence items by number (E1, E2, ...). When unsure between two "
                "levels, pick the higher and say why."
            ),
        ),
        agent(
            "security", persona="security-reviewer", label="Security review", deps=["classify"],
            when=ESCALATE, retries=1, retry_delay_s=5.0, timeout_s=_spine.ANGLE_TIMEOUT_S,
            prompt=(
                "A report was classified $classify.output.severity: $classify.output.summary\n"
                "Review it as a security issue before anyone responds.\n\n"
                "Report: $input.question\n\n## Investigation\n\n$investigate.output\n\n"
                "Establish: how it can be abused (preconditions, who can do it, from where); what it "
                "gives an attacker; whether it is being abused now and which logs would show it; the "
                "immediate containment; and the lasting fix.\n\n"
                "Produce `## Findings` (what, where, how abused, impact, fix, evidence items) and "
                "`## Containment` (what to do in the next hour).\n"
                f"{_SECURITY_OUTPUT}\n\n{_spine.EVIDENCE_RULES}"
            ),
        ),
        agent(
            "exposure", persona="security-reviewer", label="Blast radius", deps=["classify"],
            when=ESCALATE, bands=["large"],
            retries=1, retry_delay_s=5.0, timeout_s=_spine.ANGLE_TIMEOUT_S,
            prompt=(
                "A report was classified $classify.output.severity: $classify.output.summary\n"
                "Assess its blast radius.\n\n"
                "Report: $input.question\n\n## Investigation\n\n$investigate.output\n\n"
                "Establish: the affected versions and deployments; the data reachable through it and "
                "its sensitivity; since when it has been reachable; who must be told (users, "
                "operators, a security contact) and any disclosure duty.\n\n"
                "Produce `## Affected` (versions, deployments, data, each with evidence items) and "
                f"`## Notify` (who, why, by when).\n{_SECURITY_OUTPUT}\n\n{_spine.EVIDENCE_RULES}"
            ),
        ),
        agent(
            "respond", persona="synthesizer", label="Escalation decision",
            deps=["classify", "security", "exposure"],
            # The security steps are skipped by their condition on low or medium
            # severity: this join must still run then, but not after a failure.
            trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
            retries=1, retry_delay_s=5.0, timeout_s=_spine.SYNTHESIS_TIMEOUT_S,
            prompt=(
                "Write the escalation decision for the report below.\n\n"
                "Report: $input.question\n"
                "Triage: severity $classify.output.severity, category $classify.output.category: "
                "$classify.output.summary\n\n"
                "## Investigation\n\n$investigate.output\n\n"
                "## Security review (empty when the severity did not call for one)\n\n$security.output\n\n"
                "## Blast radius (empty unless assessed)\n\n$exposure.output\n\n"
                "Each section numbers its evidence from E1: cite items with their section, e.g. "
                "\"investigation E2\", \"security E1\".\n"
                "Write, in this order:\n"
                "1. `## Answer`: escalate or not, to whom, and how urgently.\n"
                "2. `## Findings`: the facts the decision rests on, each citing its items.\n"
                "3. `## Recommendation`: immediate actions first, then the lasting fix, each with an "
                "owner role.\n"
                "Claims no item supports go under a final `## Deferred (unverified)` heading.\n\n"
                "Begin with a YAML frontmatter block (first line `---`) with exactly these fields: "
                "escalate (yes or no), severity (one of low, medium, high, critical) and summary (one line)."
            ),
        ),
        _spine.validation(
            target="respond", bands=["medium", "large"],
            evidence_text=(
                "### Investigation\n\n$investigate.output\n\n### Triage\n\n$classify.output\n\n"
                "### Security review (empty when not run)\n\n$security.output"
            ),
            focus="Is the decision proportionate: no alarm without evidence, no dismissal without evidence?",
        ),
    ],
)
