"""The run report: markdown rendered from the pinned graph and the recorded events.

Pure: a function of the state and the ``(position, event)`` history, so a
replay renders the same report. Evidence discipline (DESIGN §3a) is checked
here: an agent output with no numbered evidence (E1, E2, ...) and no stated
"no evidence found" is not a finding; it goes under ``## Deferred (unverified)``.
The report ends with the provenance table and the after-action review (``flows.review``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from flows.events import (
    Event,
    RunForked,
)
from flows.evidence import EvidenceCheck, annotate, summary_line
from flows.kinds import KindRules, kind_rules
from flows.model import StepSpec
from flows.review import provenance_rows, read, review, seconds
from flows.state import RunState
from flows.status import RunStatus, StepStatus, decided, rejects_run, succeeded
from flows.tasks import report as task_report

# Evidence is cited as E1..E99 ("see E3"); a lint code such as E501 is not evidence.
EVIDENCE = re.compile(r"\bE\d{1,2}\b")
NO_EVIDENCE = re.compile(r"no evidence (was )?found", re.IGNORECASE)
FRONTMATTER = re.compile(r"\A\s*---[ \t]*\n.*?\n(---|\.\.\.)[ \t]*(\n|\Z)", re.DOTALL)


def body(output: str) -> str:
    """The output without its leading YAML frontmatter block."""
    return FRONTMATTER.sub("", output, count=1).strip()


HEADING = re.compile(r"^(#{1,6})(?=\s)")
FENCE = re.compile(r"^\s*(```|~~~)")


def nest(text: str, under: int = 3) -> str:
    """Markdown headings of a step's output moved below the step's own heading.

    A model's ``## Findings`` would otherwise become a section of the report
    beside Validation and Recommendation. Headings in code fences are left alone.
    """
    if "#" not in text:  # no heading to move: the text as it is (a line at a time cost 40 opcodes a step)
        return text
    out, fenced = [], False
    for line in text.split("\n"):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := HEADING.match(line)):
            line = "#" * min(6, len(m.group(1)) + under) + line[len(m.group(1)):]
        out.append(line)
    return "\n".join(out)


def has_evidence(text: str) -> bool:
    """Whether a worker's output follows the evidence discipline."""
    return bool(EVIDENCE.search(text) or NO_EVIDENCE.search(text))


EMBED_LIMIT = 16 * 1024
"""Characters of one step's output the report embeds; the rest stays in the step's event."""


def _size(chars: int) -> str:
    return f"{chars / (1024 * 1024):.1f} M" if chars >= 1024 * 1024 else f"{chars / 1024:.0f} K"


def embed(text: str, where: str) -> str:
    """``text`` as the report shows it: at most EMBED_LIMIT characters, cut at a line break, with a note
    saying how much was cut and where the whole of it is (``where``, e.g. "event 42")."""
    if len(text) <= EMBED_LIMIT:
        return text
    cut = text.rfind("\n", 0, EMBED_LIMIT)
    shown = text[:cut if cut > EMBED_LIMIT // 2 else EMBED_LIMIT]
    if shown.count("```") % 2 or shown.count("~~~") % 2:
        shown += "\n```"  # an open code fence would swallow the rest of the report
    return (f"{shown}\n\n_(cut: the report shows {_size(len(shown))} of {_size(len(text))} characters; "
            f"the whole output is in {where})_")


def _section(spec: StepSpec, rules: KindRules) -> str:
    if spec.persona == "validator":
        return "validation"
    if section := rules.report_section:
        return section
    if spec.persona in ("synthesizer", "writer"):
        return "recommendation"
    return "findings"


Evidence = Mapping[str, Sequence[EvidenceCheck]]
"""Each completed step's evidence items and their verdicts (checked by the shell against the pinned commit,
``actors.workspace.evidence``), over the step's :func:`body`."""


def render(state: RunState, history: Sequence[tuple[int, Event]], status: str, reason: str, now: float,
           evidence: Evidence | None = None) -> str:
    """The markdown report of a run that ended with ``status`` (and ``reason``).

    ``evidence`` (when the shell checked it) puts the verdict counts at the
    top and each verdict on its item's line.
    """
    snap = state.snapshot
    launched = state.launched
    assert launched is not None
    question = str(launched.input.get("question", ""))
    wall = max(0.0, (now or state.ended_at) - (state.started_at or state.launched_at))
    out = [f"# {snap.name}: {status}", ""]
    if question:
        out += [f"> {question}", ""]
    band = f"{snap.band}, fast" if launched.fast else snap.band
    out += [
        "| run | flow | band | backend | model | wall time |",
        "|---|---|---|---|---|---|",
        f"| `{state.run_id}` | {snap.name} | {band} | {launched.backend} | {launched.model or 'default'} "
        f"| {seconds(wall)} |",
        "",
    ]
    if status == RunStatus.REJECTED:
        out += [outcome_rejected(state, reason), ""]
    elif reason and status != RunStatus.COMPLETED:
        out += [f"**Outcome:** {status}: {reason}", ""]
    if state.parent_run_id:
        out += [forked_line(history), ""]
    if launched.fast:
        out += ["_Fast mode: every agent step was asked for a concise answer._", ""]
    out += workspace_lines(state)
    if evidence is not None:
        out += evidence_lines(state, evidence)
    reading = read(state, history)
    completed_at, frames_of = reading.completed_at, reading.frames_of
    credit = reading.credit if state.parent_run_id else {}

    sections: dict[str, list[str]] = {"validation": [], "recommendation": [], "findings": [], "approvals": []}
    deferred: list[str] = []
    not_run: list[str] = []
    for spec in snap.steps:
        if state.tasks is not None:
            break  # a task run's steps are its tasks: their section follows (flows.tasks.report)
        st = state.steps[spec.id]
        title = spec.label or spec.id
        rules = kind_rules(spec.kind)
        if rules.pauses_for_person and decided(st.status):
            verdict = "approved" if succeeded(st.status) else "rejected"
            who = f" by {st.decided_by}" if st.decided_by else ""
            note = f": {st.output}" if st.output else ""
            sections["approvals"].append(f"- **{title}**: {verdict}{who}{note}")
            continue
        if not succeeded(st.status):
            why = st.detail or st.error or st.skip_reason
            not_run.append(f"- **{title}**: {st.status}" + (f" ({st.skip_reason})" if st.skip_reason else "")
                           + (f": {why}" if why and why != st.skip_reason else ""))
            if st.status == StepStatus.FAILED:
                not_run += [f"  - at `{frame}`" for frame in frames_of.get(spec.id, ())]
            continue
        position = completed_at.get(spec.id)
        where = f"event {position} (StepCompleted of {spec.id})" if position else f"the StepCompleted of {spec.id}"
        if position in credit:  # a fork's copy: the parent recorded it
            where = f"event {credit[position][1]} of run {credit[position][0]} (StepCompleted of {spec.id})"
        full = body(st.output)
        if evidence and evidence.get(spec.id):
            full = annotate(full, evidence[spec.id])
        who = f" ({spec.persona})" if spec.persona else ""
        block = [f"### {title}{who}", "", nest(embed(full, where)) or "_(empty output)_", ""]
        if rules.held_to_evidence and not has_evidence(full):
            deferred += block
        else:
            sections[_section(spec, rules)] += block
    for key, heading in (("validation", "Validation"), ("recommendation", "Recommendation"),
                         ("findings", "Findings"), ("approvals", "Approvals")):
        if sections[key]:
            out += [f"## {heading}", "", *sections[key]]
            if key == "approvals":
                out.append("")
    if deferred:
        out += ["## Deferred (unverified)", "", "_These outputs cite no evidence; they are not findings._", "",
                *deferred]
    if not_run:
        out += ["## Steps that did not complete", "", *not_run, ""]
    if state.tasks is not None:
        out += task_report.tasks_section(state.tasks, history)
        out += task_report.landing_section(state.tasks, history)
    out += task_report.provenance(state.tasks, history) if state.tasks is not None else provenance_rows(reading)
    out += review(state, reading, wall)
    if state.tasks is not None:
        out += task_report.task_review(state.tasks, history)
    return "\n".join(out).rstrip() + "\n"


def outcome_rejected(state: RunState, reason: str) -> str:
    """The outcome line of a rejected run: who rejected which step, and their comment; the approver once.

    Built from the state, not from the run's reason: RunRejected carries the
    approver in ``by`` beside its reason (and logs from before that change
    named them in the reason as well).
    """
    sid, st = next(((k, v) for k, v in state.steps.items() if rejects_run(v.status)), ("", None))
    if st is None:
        return f"**Outcome:** rejected: {reason}"
    who = f" by {st.decided_by}" if st.decided_by else ""
    return f"**Outcome:** rejected{who} at step {sid!r}" + (f": {st.output}" if st.output else "")


def workspace_lines(state: RunState) -> list[str]:
    """What the run could read: its pinned workspace, or, for a flow whose steps use tools, that it had none."""
    launched = state.launched
    assert launched is not None
    ws = launched.workspace
    if ws is not None:
        where = f"branch `{ws.branch}`" if ws.branch else "detached HEAD"
        dirty = ", with uncommitted changes" if ws.dirty else ""
        return [f"**Workspace:** project `{ws.project_id}` at commit `{ws.commit[:12]}` ({where}{dirty}).", ""]
    if any(spec.tools for spec in state.snapshot.steps):
        return [("**Workspace:** none. This run was launched without a project, so its agents worked from the "
                 "question alone and read no file; launch it with a project to let them read the code."), ""]
    return []


def evidence_lines(state: RunState, evidence: Evidence) -> list[str]:
    """The verdict counts over every checked item, and what they were checked against."""
    checks = [c for sid in evidence for c in evidence[sid]]
    if not checks:
        return []
    ws = state.launched.workspace if state.launched is not None else None
    against = (f"checked against commit `{ws.commit[:12]}` of `{ws.project_id}`" if ws is not None
               else "unchecked: the run had no workspace to check them against")
    return [f"**{summary_line(checks)}**; {against}.", ""]


def forked_line(history: Sequence[tuple[int, Event]]) -> str:
    """Where a fork came from: the parent, the step, and which outcomes it kept."""
    forked = next((ev for _, ev in history if isinstance(ev, RunForked)), None)
    if forked is None:
        return ""
    verb = "Retried" if forked.retry else "Forked"
    kept = ", ".join(f"`{s}`" for s in forked.copied_steps) or "none"
    changed = f"; inputs changed: {', '.join(sorted(forked.inputs))}" if forked.inputs else ""
    return (f"_{verb} from run `{forked.parent_run_id}` at step `{forked.from_step}` (parent position "
            f"{forked.parent_position}); outcomes kept from the parent's events: {kept}{changed}._")
