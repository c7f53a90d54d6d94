"""incident-review: a blameless post-incident review that always ends with a report.

Investigator and analyst angles reconstruct the timeline and the cause (+ the
impact at medium, + detection and response at large). An angle that fails or
times out must not sink the review, so the fold runs ``all_done`` and says
which angles are missing. A synthesizer writes the postmortem and a validator
attacks it. The ``report`` step is the ``all_done`` cleanup: it runs whatever
happened upstream and records which steps completed and what they concluded.

Why ``report`` does not wait for ``validate``: a run's outcome is decided by
its leaves, and an ``all_done`` step that were the only leaf would complete
the run even when the postmortem failed. Keeping ``validate`` a leaf too
means a failed postmortem still fails the run, while the report is written.
"""

from __future__ import annotations

from flows.catalog import _fold, _spine
from flows.model import Flow, TriggerRule, code

ANGLES = ("timeline", "cause", "impact", "response")
REPORTED = (*ANGLES, "fold", "postmortem")


def fold(ctx: _fold.StepContext) -> str:
    """Fold whichever incident angles completed into one renumbered evidence ledger."""
    return _fold.fold_angles(ctx, ANGLES, title="Incident evidence")


def report(ctx: _fold.StepContext) -> str:
    """The cleanup report: which steps completed, and the postmortem's key fields."""
    return _fold.run_summary(ctx, REPORTED, required=("postmortem",), title="Incident review: run summary")


incident_review = Flow(
    name="incident-review",
    category="Analysis",
    description=(
        "Blameless post-incident review: timeline and cause (+ impact at medium, + response at large) "
        "in parallel, folded even if an angle failed, a postmortem, a validator, and an all_done report."
    ),
    steps=[
        _spine.angle(
            "timeline", persona="investigator", label="Timeline",
            task=(
                "Reconstruct the timeline of the incident described in the question from primary "
                "records: logs, metrics, deploy and change records, alerts, chat or ticket history. "
                "Use UTC timestamps. Mark the moments that matter: the triggering change or event, "
                "the first symptom, detection, each mitigation attempt, and recovery."
            ),
            produce=(
                "1. `## Timeline`: one line per event, `YYYY-MM-DD HH:MM UTC - what happened (E#)`.\n"
                "2. `## Gaps in the record`: periods or events with no record, and where one should exist."
            ),
        ),
        _spine.angle(
            "cause", persona="investigator", label="Cause",
            task=(
                "Find the cause of the incident described in the question. Separate the trigger (what "
                "set it off) from the underlying conditions that let it do harm (missing limits, "
                "unchecked assumptions, absent safeguards). Follow each contributing factor to code, "
                "configuration or process, and test rival explanations against the record."
            ),
            produce=(
                "1. `## Trigger`: what set the incident off, with its evidence items.\n"
                "2. `## Contributing factors`: each with where it lives and its evidence items.\n"
                "3. `## Rival explanations ruled out`: each with the evidence that rules it out."
            ),
        ),
        _spine.angle(
            "impact", persona="analyst", label="Impact",
            bands=["medium", "large"],
            task=(
                "Quantify the impact of the incident described in the question: who and what was "
                "affected, for how long, how many requests, jobs, users or records, and whether any "
                "data was lost or corrupted and how that was established. Say how you measured each figure."
            ),
            produce=(
                "1. `## Impact`: each figure with its unit, time window, method and evidence items.\n"
                "2. `## Unknowns`: what could not be measured and why."
            ),
        ),
        _spine.angle(
            "response", persona="analyst", label="Detection and response",
            bands=["large"],
            task=(
                "Assess how the incident described in the question was detected and handled: time to "
                "detect, time to mitigate, time to recover; which alert or person noticed first; "
                "which runbooks existed and whether they worked; what slowed the response down."
            ),
            produce=(
                "1. `## Durations`: detect, mitigate and recover times, each with its evidence items.\n"
                "2. `## What helped` and `## What slowed us down`: each point with its evidence items.\n"
                "3. `## Actions`: concrete follow-ups, each with an owner role and how to verify it is done."
            ),
        ),
        # all_done: a failed or timed-out angle is reported as missing, not fatal.
        _spine.fold(fold, ANGLES, trigger_rule=TriggerRule.ALL_DONE),
        _spine.synthesis(
            step_id="postmortem", label="Write the postmortem",
            task=(
                "Write a blameless postmortem of the incident: describe systems and decisions, never "
                "individuals' faults."
            ),
            sections=(
                "1. `## Answer`: summary of the incident in three sentences: what, impact, cause.\n"
                "2. `## Timeline`: the key moments, each citing its items.\n"
                "3. `## Cause`: trigger and contributing factors, each citing its items.\n"
                "4. `## Recommendation`: follow-up actions in priority order, each with how to verify it."
            ),
        ),
        _spine.validation(
            target="postmortem",
            focus="Does the postmortem blame a person where the evidence points to a missing safeguard?",
        ),
        code(
            "report", fn=report, deps=["fold", "postmortem"], trigger_rule=TriggerRule.ALL_DONE,
            label="Report what ran", timeout_s=_spine.FOLD_TIMEOUT_S,
        ),
    ],
)
