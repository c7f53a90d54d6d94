"""Checking a run's evidence when its report is rendered (DESIGN §11): the shell half of ``flows.evidence``.

Every completed agent step's output is parsed for evidence items; each item
citing ``path:line`` with a quote is checked against the run's pinned commit
(``actors.workspace.evidence``); without a workspace every item is
``unchecked``. The report (pure) then shows the verdicts.
"""

from __future__ import annotations

import logging

from actors.workspace.errors import WorkspaceError
from actors.workspace.evidence import EvidenceChecker
from flows.evidence import EvidenceCheck
from flows.kinds import kind_rules
from flows.report import Evidence, body
from flows.state import RunState
from flows.status import succeeded

log = logging.getLogger(__name__)


def check_evidence(state: RunState) -> Evidence:
    """Each completed agent step's evidence checks (over its report :func:`~flows.report.body`)."""
    launched = state.launched
    if launched is None:
        return {}
    checker = EvidenceChecker(launched.workspace)
    out: dict[str, list[EvidenceCheck]] = {}
    for spec in state.snapshot.steps:
        st = state.steps.get(spec.id)
        if st is None or not succeeded(st.status) or not kind_rules(spec.kind).held_to_evidence:
            continue
        try:
            checks = checker.check_output(body(st.output))
        except WorkspaceError as exc:  # git gone or timed out: say nothing rather than fail the run's end
            log.warning("run %s: evidence of step %s not checked: %s", state.run_id, spec.id, exc)
            continue
        if checks:
            out[spec.id] = checks
    return out
