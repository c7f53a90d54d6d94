"""The run report: markdown rendered from the pinned graph and the recorded events.

Pure: a function of the state and the ``(position, event)`` history, so a
replay renders the same report. Evidence discipline (DESIGN §3a) is checked
here: an agent output with no numbered evidence (E1, E2, ...) and no stated
"no evidence found" is not a finding; it goes under ``## Deferred (unverified)``.
The report ends with the provenance table and the after-action review.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from flows.events import (
    AnomalyDetected,
    Event,
    RunForked,
    StepCancelled,
    StepCompleted,
    StepFailed,
    StepPaused,
    StepResumed,
    StepSkipped,
    StepStarted,
    TaskStarted,
    ToolCalled,
    ToolResult,
)
from flows.evidence import EvidenceCheck, annotate, summary_line
from flows.kinds import KindRules, kind_rules
from flows.model import StepSpec
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
PARALLEL_CLAIM = 1.5
"""Average steps at a time (while any ran) from which parallelism counts as something that went right."""


def count(n: int, noun: str, plural: str = "") -> str:
    """``n`` and ``noun``, plural when ``n`` is not 1: "1 run", "2 runs", "3 evidence items"."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def _seconds(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.1f} s"


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
        f"| {_seconds(wall)} |",
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
    reading = _read(state, history)
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
    out += task_report.provenance(state.tasks, history) if state.tasks is not None else _provenance(reading)
    out += _review(state, reading, wall)
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


def credits(history: Sequence[tuple[int, Event]]) -> dict[int, tuple[str, int]]:
    """In a fork's history: each copied event's position -> (the parent run, the parent's position of it)."""
    out: dict[int, tuple[str, int]] = {}
    for i, (_, ev) in enumerate(history):
        if isinstance(ev, RunForked):
            following = history[i + 1:i + 1 + len(ev.copied_positions)]
            for (pos, _), parent_pos in zip(following, ev.copied_positions):
                out[pos] = (ev.parent_run_id, parent_pos)
            break
    return out


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


class _Reading(NamedTuple):
    """What the report's tables take from a run's history, gathered by :func:`_read` in one pass over it."""

    attempts: dict[tuple[str, int], list[Any]]
    """(step, attempt) -> [its StepStarted, that event's position, its end's position (0: none), duration,
    tool calls, usage]: the provenance table's rows."""
    resumed: list[tuple[int, StepResumed]]
    """Approvals answered, in order: the provenance table's last rows."""
    completed_at: dict[str, int]
    """Each step's last StepCompleted's position."""
    frames_of: dict[str, Sequence[str]]
    """Each step's last StepFailed's frames."""
    credit: dict[int, tuple[str, int]]
    """:func:`credits`: empty but in a fork."""
    incidents: list[tuple[int, Event]]
    """Failed attempts, anomalies and rejections, in order: what went wrong."""
    spans: list[tuple[float, float]]
    """(start, end) of every attempt, a step's or a task's, that ended after it started."""
    person_wait: float
    """Time steps were paused for a person, from each StepPaused to its StepResumed."""
    slot_wait: float
    """Sum over agent attempts of start time minus the time the step was free to start."""


_ATTEMPT_ENDS = (StepCompleted, StepFailed, StepCancelled, *task_report.ATTEMPT_ENDS)
"""The events that end an attempt, a step's or a task's (those that start one: StepStarted, TaskStarted)."""


def _read(state: RunState, history: Sequence[tuple[int, Event]]) -> _Reading:
    """The history read once for the provenance table and the after-action review.

    Each table had a pass of its own (nine in all, with the render's): one
    pass, each event asked its class once, the two of nearly every step
    first, took a 20-step chain's render from ~820 to ~560 opcodes a step
    (bench/report_render.py).
    """
    snap = state.snapshot
    run_started = state.started_at or state.launched_at
    attempts: dict[tuple[str, int], list[Any]] = {}
    resumed: list[tuple[int, StepResumed]] = []
    completed_at: dict[str, int] = {}
    frames_of: dict[str, Sequence[str]] = {}
    incidents: list[tuple[int, Event]] = []
    begun: dict[tuple[str, int], float] = {}  # attempts started and not yet ended -> their start
    spans: list[tuple[float, float]] = []
    ended_at: dict[str, float] = {}  # for the slot wait: when each step last ended
    retry_at: dict[str, float] = {}
    paused: dict[str, float] = {}
    person_wait = slot_wait = 0.0
    forked = False
    for pos, ev in history:
        if ev.__class__ is StepCompleted:
            key = (ev.step_id, ev.attempt)
            if (row := attempts.get(key)) and not row[2]:
                row[2], row[3], row[5] = pos, ev.duration_s, ev.usage
            completed_at[ev.step_id] = pos
            if (start := begun.pop(key, None)) is not None and ev.at > start:
                spans.append((start, ev.at))
            ended_at[ev.step_id] = ev.at
        elif ev.__class__ is StepStarted:
            key = (ev.step_id, ev.attempt)
            attempts[key] = [ev, pos, 0, 0.0, 0, {}]
            begun[key] = ev.at
            spec = snap.step(ev.step_id)
            if kind_rules(spec.kind).needs_agent_slot:
                ready = max([run_started, retry_at.get(ev.step_id, 0.0), *(ended_at.get(d, 0.0) for d in spec.deps)])
                slot_wait += max(0.0, ev.at - ready)
        elif ev.__class__ is ToolCalled:
            if row := attempts.get((ev.step_id, ev.attempt)):
                row[4] += 1
        elif ev.__class__ is AnomalyDetected:
            incidents.append((pos, ev))
        elif ev.__class__ is not ToolResult:  # a rarer event: any with a step and an attempt ends that attempt's row
            if (row := attempts.get((getattr(ev, "step_id", ""), getattr(ev, "attempt", -1)))) and not row[2]:
                row[2], row[3] = pos, getattr(ev, "duration_s", 0.0)
                if ev.__class__ is StepFailed:
                    row[5] = ev.usage
            if ev.__class__ is TaskStarted:
                begun[(ev.step_id, ev.attempt)] = ev.at
            elif isinstance(ev, _ATTEMPT_ENDS):
                if (start := begun.pop((ev.step_id, ev.attempt), None)) is not None and ev.at > start:
                    spans.append((start, ev.at))
            if ev.__class__ is StepFailed:
                frames_of[ev.step_id] = ev.frames
                incidents.append((pos, ev))
                if ev.will_retry:
                    retry_at[ev.step_id] = ev.retry_at
                else:
                    ended_at[ev.step_id] = ev.at
            elif ev.__class__ is StepSkipped or ev.__class__ is StepCancelled:
                ended_at[ev.step_id] = ev.at
            elif ev.__class__ is StepPaused:
                paused[ev.step_id] = ev.at
            elif ev.__class__ is StepResumed:
                ended_at[ev.step_id] = ev.at
                if ev.step_id in paused:
                    person_wait += max(0.0, ev.at - paused.pop(ev.step_id))
                resumed.append((pos, ev))
                if ev.decision == "rejected":
                    incidents.append((pos, ev))
            elif ev.__class__ is RunForked:
                forked = True
    return _Reading(attempts, resumed, completed_at, frames_of, credits(history) if forked else {}, incidents,
                    spans, person_wait, slot_wait)


def provenance(state: RunState, history: Sequence[tuple[int, Event]]) -> list[str]:
    """One row per attempt: what ran where, for how long, its tool calls and tokens, and which events say so.

    In a fork, an event copied from the parent is credited to it: ``<parent>@<position>``.
    """
    return _provenance(_read(state, history))


def _provenance(reading: _Reading) -> list[str]:
    credit = reading.credit

    def credited(pos: int) -> str:
        return f"{credit[pos][0]}@{credit[pos][1]}" if pos in credit else str(pos)

    where = credited if credit else str  # no fork: every event is this run's own

    rows = ["## Provenance", "",
            ("| step | persona | backend | model | attempt | duration | tool calls | tokens (prompt + completion) "
             "| events |"),
            "|---|---|---|---|---|---|---|---|---|"]
    all_calls = all_prompt = all_completion = 0
    for (sid, attempt), (started, pos, end, duration, calls, usage) in reading.attempts.items():
        positions = f"{where(pos)}, {where(end)}" if end else where(pos)
        prompt, completion = (_tokens(usage, "prompt_tokens"), _tokens(usage, "completion_tokens")) if usage else (0, 0)
        all_calls, all_prompt, all_completion = all_calls + calls, all_prompt + prompt, all_completion + completion
        tokens = f"{prompt:,} + {completion:,}" if usage else "-"
        rows.append(
            f"| {sid} | {started.persona or '-'} | {started.backend} | {started.model or '-'} | {attempt} "
            f"| {_seconds(duration)} | {calls} | {tokens} | {positions} |"
        )
    rows.append(f"| **total** | | | | | | {all_calls} | {all_prompt:,} + {all_completion:,} | |")
    for pos, ev in reading.resumed:
        who = f"(timer: {ev.timer})" if ev.timer else f"(person: {ev.by or 'unknown'})"
        rows.append(f"| {ev.step_id} | {who} | approval | - | 1 | - | - | - | {where(pos)} |")
    return rows + [""]


def _tokens(usage: Mapping[str, Any], key: str) -> int:
    value = usage.get(key, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def after_action_review(state: RunState, history: Sequence[tuple[int, Event]], wall: float) -> list[str]:
    """What went right, what went wrong, what could be better, and where the time went: from the events alone."""
    return _review(state, _read(state, history), wall)


def _review(state: RunState, reading: _Reading, wall: float) -> list[str]:
    snap = state.snapshot
    right: list[str] = []
    wrong: list[str] = []
    better: list[str] = []

    first_time = [sid for sid, st in state.steps.items()
                  if succeeded(st.status) and st.attempt == 1
                  and not kind_rules(snap.step(sid).kind).pauses_for_person]
    if first_time:
        right.append(f"- {count(len(first_time), 'step')} passed first time: {', '.join(first_time)}.")
    step_time, running = _step_time(reading.spans)
    parallelism = step_time / running if running > 0 else 0.0
    if parallelism >= PARALLEL_CLAIM:
        right.append(f"- Steps ran side by side: {parallelism:.2f} at a time on average while any step ran.")

    for pos, ev in reading.incidents:
        if isinstance(ev, StepFailed):
            what = "retried" if ev.will_retry else "gave up"
            where = f" at `{ev.frames[-1]}`" if ev.frames else ""
            wrong.append(f"- Step {ev.step_id} attempt {ev.attempt} failed ({ev.error}){where}; {what} [event {pos}].")
        elif isinstance(ev, AnomalyDetected):
            wrong.append(f"- Anomaly on {ev.step_id}: {ev.kind} ({ev.severity}) - {ev.detail}; "
                         f"action {ev.action} [event {pos}].")
        elif isinstance(ev, StepResumed):
            wrong.append(f"- Step {ev.step_id} was rejected by {ev.by or 'someone'}"
                         + (f": {ev.comment}" if ev.comment else "") + f" [event {pos}].")

    timed = [(st.duration_s, sid) for sid, st in state.steps.items() if st.duration_s > 0]
    if timed:
        d, sid = max(timed)
        better.append(f"- Slowest step: {sid} ({_seconds(d)}).")
    slot_wait = reading.slot_wait
    if slot_wait > 0.0005:
        better.append(f"- Time steps waited for an agent slot: {_seconds(slot_wait)}.")

    out = ["## After-action review", "", "### What went right", ""]
    out += right or ["- Nothing stood out."]
    out += ["", "### What went wrong", ""]
    out += wrong or ["- Nothing: no failures, retries, stalls or rejections."]
    out += ["", "### What could be better", ""]
    out += better or ["- Nothing measurable."]
    out += ["", *_time(wall, running, step_time, reading.person_wait, slot_wait)]
    return out + [""]


def _time(wall: float, running: float, step_time: float, person: float, slots: float) -> list[str]:
    """Where the wall time went, and the parallelism measured over the time steps ran (a neutral account).

    Parallelism is step time (every attempt, failed ones too) over the time at
    least one step was running: waiting for a person or for an agent slot,
    when nothing ran, neither helps nor hurts it. 1.00 is one step at a time.
    """
    if wall <= 0 and running <= 0:
        return []
    parts = [f"a step was running for {_seconds(running)}"]
    if person > 0:
        parts.append(f"a person was awaited for {_seconds(person)}")
    if slots > 0.0005:
        parts.append(f"steps waited {_seconds(slots)} in all for an agent slot")
    lines = ["### Where the time went", "", f"- Wall time {_seconds(wall)}: {'; '.join(parts)}."]
    if running > 0:
        lines.append(f"- Parallelism {step_time / running:.2f}: {_seconds(step_time)} of step time in the "
                     f"{_seconds(running)} when at least one step was running.")
    return lines


def _step_time(spans: list[tuple[float, float]]) -> tuple[float, float]:
    """(sum of every attempt's time, time at least one attempt was running), from the attempts' spans."""
    total = sum(end - start for start, end in spans)
    covered, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            covered += end - max(start, reach)
            reach = end
    return total, covered
