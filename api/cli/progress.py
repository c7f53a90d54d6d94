"""What ``baton`` shows: a run's live progress table, and the tables and lines of the other commands.

Everything here reads a run's state folded from its stream (``flows.state``)
or rows of the read model; nothing here changes the log. The command logic
lives in ``api.cli.main``.

On a terminal the progress table is a rich ``Live`` display that redraws
itself (elapsed times tick); when the output is a pipe or a file, each step's
change of status is printed as one line instead, and the table once at the end,
so logs and CI output stay readable.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Self

from rich.console import Console
from rich.live import Live
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from api.cli.escape import printable, printable_line
from flows.status import RunStatus, StepStatus, step_ended

# A run's fold (the log's codec, the state) is imported where a run is followed or read: the tables of
# `baton runs` through a server need none of it (docs/PERFORMANCE.md, "CLI start-up").
if TYPE_CHECKING:
    from eventstore import EventStore
    from flows.events import Event
    from flows.state import RunState, StepState

STATUS_STYLE: dict[str, str] = {
    StepStatus.COMPLETED: "green",
    StepStatus.RUNNING: "yellow",
    StepStatus.PAUSED: "bold magenta",
    RunStatus.QUEUED: "cyan",
    StepStatus.FAILED: "bold red",
    StepStatus.REJECTED: "red",
    StepStatus.CANCELLED: "red",
    StepStatus.SKIPPED: "dim",
    StepStatus.PENDING: "dim",
}
"""How a status is shown (run and step statuses share their names: one style each)."""


def make_console(*, stderr: bool = False) -> Console:
    """A console for our output: wide enough for tables when it is not a terminal."""
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, width=max(console.width, 120))
    return console


# -- reading a run from the log ------------------------------------------------------------------


def load_run(store: EventStore, run_id: str) -> tuple[RunState, list[tuple[int, Event]]]:
    """A run's state folded from its stream, and its ``(position, event)`` history.

    Decoded through the engine's codec (``actors.runlog``), upcasters
    included. An unknown run gives an empty state (``state.launched`` is None).
    """
    from actors.runlog import fold_records
    from flows.events import stream_of

    return fold_records(store.read_stream(stream_of(run_id)), run_id)


# -- the live progress table ---------------------------------------------------------------------


def _elapsed(step: StepState, now: float) -> str:
    if step.status in (StepStatus.RUNNING, StepStatus.PAUSED) and step.started_at:
        return f"{max(now - step.started_at, 0.0):.1f}s"
    if step.duration_s:
        return f"{step.duration_s:.1f}s"
    if step.ended_at and step.started_at:
        return f"{max(step.ended_at - step.started_at, 0.0):.1f}s"
    return ""


def _note(step: StepState, latest: str) -> str:
    if step.status == StepStatus.RUNNING:
        return latest
    if step.status == StepStatus.PAUSED:
        return "waiting for a person"
    if step.status == StepStatus.SKIPPED:
        return f"{step.skip_reason}: {step.detail}" if step.detail else step.skip_reason
    if step.status in (StepStatus.FAILED, StepStatus.CANCELLED) or (step.status == StepStatus.PENDING and step.error):
        return step.error
    if step.decided_by:
        return f"by {step.decided_by}"
    return ""


def steps_table(state: RunState, latest: dict[str, str] | None = None, *, now: float | None = None) -> Table:
    """The table of a run's steps: step, kind, persona, status, attempt, elapsed, note."""
    now = time.time() if now is None else now
    latest = latest or {}
    launched = state.launched
    end = state.ended_at or now
    took = f" · {max(end - state.launched_at, 0.0):.1f}s" if state.launched_at else ""
    title = f"{launched.flow if launched else '?'} · run {state.run_id} · {state.status}{took}"
    table = Table(title=cell(title), title_justify="left", expand=False)
    for name, kw in (("step", {}), ("kind", {}), ("persona", {}), ("status", {}),
                     ("attempt", {"justify": "right"}), ("elapsed", {"justify": "right"}),
                     ("note", {"overflow": "ellipsis", "no_wrap": True, "max_width": 60})):
        table.add_column(name, **kw)
    if launched is None:
        return table
    from flows.state import StepState  # imported already: a run's state is shown

    for spec in launched.snapshot.steps:
        step = state.steps.get(spec.id, StepState())
        table.add_row(
            cell(spec.id), spec.kind, cell(spec.persona or "-"),
            Text(step.status, style=STATUS_STYLE.get(step.status, "")),
            str(step.attempt) if step.attempt else "", _elapsed(step, now),
            cell(_note(step, latest.get(spec.id, ""))[:200]),
        )
    return table


_NEWS = frozenset({RunStatus.QUEUED, RunStatus.RUNNING})  # a run's news printed before its steps' (an end after)


class ProgressView:
    """Shows one run's progress while the caller feeds it states (``update``).

    Use as a context manager. ``on_delta`` takes the engine's ephemeral
    ``step_delta`` frames (from the FrameBus, on the publisher's thread) and
    only stores the latest words per step.
    """

    def __init__(self, console: Console, run_id: str) -> None:
        self.console = console
        self.run_id = run_id
        from flows.state import RunState  # a run is followed: its fold is needed

        self.live_mode = console.is_terminal and not console.is_dumb_terminal
        self._state = RunState()
        self._latest: dict[str, str] = {}
        self._seen: dict[str, tuple[str, int]] = {}
        self._run_status = ""
        self._lock = threading.Lock()
        self._live: Live | None = None
        self._closed = False

    def __enter__(self) -> Self:
        if self.live_mode:
            self._live = Live(get_renderable=self._render, console=self.console,
                              refresh_per_second=4, transient=False)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the live display (leaving the last table on screen), or print the table once."""
        if self._closed:
            return
        self._closed = True
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None
        elif not self.live_mode and self._state.launched is not None:
            self.console.print(self._render())

    def on_delta(self, frame: dict[str, Any]) -> None:
        """Keep the tail of the streamed text of a running step (bus callback: only store)."""
        if frame.get("type") != "step_delta" or frame.get("run_id") != self.run_id:
            return
        step_id = frame.get("step_id") or ""
        with self._lock:
            text = (self._latest.get(step_id, "") + str(frame.get("text", ""))).replace("\n", " ")
            self._latest[step_id] = text[-80:]

    def update(self, state: RunState) -> None:
        """Show ``state``; without a terminal, print one line per change of status."""
        self._state = state
        if self.live_mode:
            return
        now = time.time()
        t0 = state.launched_at or now
        changed = state.status != self._run_status
        self._run_status = state.status
        if changed and state.status in _NEWS:  # news before its steps; an end after them
            say(self.console, f"  {now - t0:6.1f}s  run {state.run_id} is {state.status}")
        for step_id, step in state.steps.items():
            key = (step.status, step.attempt)
            if self._seen.get(step_id) == key:
                continue
            self._seen[step_id] = key
            if step.status == StepStatus.PENDING and not step.error:
                continue
            attempt = f" (attempt {step.attempt})" if step.attempt > 1 else ""
            note = _note(step, "") if step.status != StepStatus.RUNNING else ""
            say(self.console, f"  {now - t0:6.1f}s  {step_id:<14} {step.status}{attempt}"
                              + (f"  {note.splitlines()[0][:100]}" if note else ""))
        if changed and state.status not in _NEWS:
            say(self.console, f"  {now - t0:6.1f}s  run {state.run_id} is {state.status}")

    def _render(self) -> Table:
        with self._lock:
            latest = dict(self._latest)
        return steps_table(self._state, latest)


# -- outcomes, reports and one-off tables --------------------------------------------------------


def cell(text: str) -> Text:
    """User text for a table cell: on one line, controls escaped, markup shown as typed."""
    return Text(printable_line(text))


def say(console: Console, text: str) -> None:
    """Print text as it is (no markup, no highlighting: run ids and prompts stay intact).

    Control characters are printed escaped: a line may carry a question, a
    name or a comment a person typed.
    """
    console.print(printable(text), markup=False, highlight=False, soft_wrap=True)  # commands stay copyable


def print_outcome(console: Console, state: RunState, command: Callable[[str], str], *, report: bool) -> None:
    """Where a run stands after a command: how to go on when it waits, its end and report otherwise.

    ``command("approve RUN STEP")`` is how the person types a baton command here.
    """
    run_id = state.run_id
    if not state.terminal:
        say(console, f"run {run_id} is {state.status}")
        for sid, step in state.steps.items():
            if step.status != StepStatus.PAUSED:
                continue
            say(console, f"  step '{sid}' waits for a person: {state.spec(sid).label or sid}")
            for line in step.prompt.strip().splitlines():
                say(console, f"    | {line}")
            say(console, f"  to continue: {command(f'approve {run_id} {sid}')} [--comment TEXT]")
            say(console, f"  or:          {command(f'reject {run_id} {sid}')} [--comment TEXT]")
        return
    took = f" in {state.ended_at - state.launched_at:.1f} s" if state.ended_at and state.launched_at else ""
    say(console, f"run {run_id} {state.status}{took}" + (f" ({state.reason})" if state.reason else ""))
    if report and state.report:
        print_report(console, state.report)
    else:
        say(console, f"report: {command(f'show {run_id}')}")


def replay_line(run_id: str, state: RunState, events: int) -> str:
    """One run re-folded: id, flow, status, its steps by status, how many events (controls escaped)."""
    counts: dict[str, int] = {}
    for step in state.steps.values():
        counts[step.status] = counts.get(step.status, 0) + 1
    detail = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    flow = state.launched.flow if state.launched else "?"
    from flows.review import count  # replay's lines: a plural helper, not the whole report module

    return printable_line(f"{run_id}  {flow:<24} {state.status:<10} {count(len(state.steps), 'step')} ({detail}), "
                          f"{count(events, 'event')}")


def print_report(console: Console, markdown: str, *, title: str = "report") -> None:
    """The report: rendered on a terminal, the markdown text itself otherwise (so it can be saved).

    Either way its control characters are printed escaped: a report quotes
    questions and model outputs.
    """
    markdown = printable(markdown)
    console.print(Rule(title))
    if console.is_terminal:
        from rich.markdown import Markdown  # markdown-it: a report's command only

        console.print(Markdown(markdown))
    else:
        console.print(markdown, markup=False, highlight=False, soft_wrap=True)
    console.print(Rule())


def flows_table(flows: Iterable[dict[str, Any]]) -> Table:
    """The catalogue (``Flow.describe()`` entries): name, category, bands, steps, description."""
    table = Table(title="flows", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("category")
    table.add_column("bands")
    table.add_column("steps", justify="right")
    table.add_column("description")
    for flow in flows:
        table.add_row(cell(flow["name"]), cell(flow["category"]), ", ".join(flow["bands"]), str(len(flow["steps"])),
                      cell(flow["description"]))
    return table


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


RUN_COLUMNS = ("run", "flow", "band", "status", "steps", "launched", "project", "question")
_KEPT_FIRST = ("run", "status", "flow", "steps", "question", "launched", "band", "project")  # what a narrow table keeps
_QUESTION_MIN = 16
# A child run's id nests its parent's (``<parent>-<step>-<n>``, up to 10 subflows deep: 116 characters
# with a step named "deeper"). Past this width it folds onto more lines, whole, rather than take the
# room of every other column of every run.
_RUN_FOLD = 40


def runs_table(rows: list[dict[str, Any]], width: int = 120) -> Table:
    """The runs list, newest first, as the read model has it, on one line a run, ``width`` columns wide.

    Run ids (and flow names) are never cut: a person copies them into the
    next command (a child run's id longer than ``_RUN_FOLD`` folds onto more lines). The question takes the room left and is cut with an
    ellipsis (``baton show RUN`` has it whole); a terminal too narrow for
    every column drops the least useful ones first (project, band, launch
    time), so nothing else is cut.
    """
    cells = [_run_cells(r) for r in rows]
    natural = {name: max([len(name), *(len(c[name].plain) for c in cells)]) for name in RUN_COLUMNS}
    natural["run"] = min(natural["run"], _RUN_FOLD)
    kept: list[str] = []
    for name in _KEPT_FIRST:
        trial = [*kept, name]
        need = sum(min(natural[c], _QUESTION_MIN) if c == "question" else natural[c] for c in trial)
        if name != "run" and need + 3 * len(trial) + 1 > width:
            break  # and leave out what comes after it too: the columns go in order of use
        kept.append(name)
    shown = [name for name in RUN_COLUMNS if name in kept]
    table = Table(title=f"runs ({len(rows)})", title_justify="left")
    room = width - sum(natural[c] for c in shown if c != "question") - 3 * len(shown) - 1
    for name in shown:
        if name == "question":
            table.add_column(name, no_wrap=True, overflow="ellipsis", max_width=max(room, _QUESTION_MIN))
        elif name == "run":
            table.add_column(name, overflow="fold", min_width=natural[name], max_width=natural[name])
        else:
            table.add_column(name, no_wrap=True, min_width=natural[name])
    for c in cells:
        table.add_row(*(c[name] for name in shown))
    return table


def _run_cells(r: dict[str, Any]) -> dict[str, Text]:
    status = r["status"] + (f" ({r['queue_reason']})" if r["status"] == RunStatus.QUEUED and r["queue_reason"] else "")
    return {"run": Text(r["run_id"]), "flow": cell(r["flow"]), "band": Text(r["band"]),
            "status": Text(status, style=STATUS_STYLE.get(r["status"], "")),
            "steps": Text(f"{r['steps_done']}/{r['steps_total']}"), "launched": Text(_when(r["launched_at"])),
            "project": cell(r["project_id"]), "question": cell(r["question"][:200])}


def print_run(console: Console, found: dict[str, Any], command: Callable[[str], str]) -> None:
    """``baton show``: the run, its steps and its report (from the read model).

    ``command("approve RUN STEP")`` is how the person types a baton command here.
    """
    run, steps = found["run"], found["steps"]
    console.print(Text.assemble((f"run {run['run_id']}", "bold"),
                                printable_line(f"  {run['flow']} ({run['category']}), band {run['band']}, "
                                               f"backend {run['backend']}")))
    console.print(Text.assemble("status: ", (run["status"], STATUS_STYLE.get(run["status"], "")),
                                f"   steps {run['steps_done']}/{run['steps_total']} ended{ended_by_status(steps)}"
                                f"   recoveries {run['recoveries']}   anomalies {run['anomalies']}"))
    say(console, f"question: {run['question']}")
    for problem in found.get("problems", ()):
        say(console, f"warning: the read tables could not apply event {problem['position']} "
                     f"({problem['event_type']}) of this run, so what follows lacks its effect: {problem['error']} "
                     f"(baton replay --run {run['run_id']} reads the log itself)")
    times = f"launched {_when(run['launched_at'])}"
    if run["ended_at"]:
        times += f", ended {_when(run['ended_at'])} ({run['ended_at'] - run['launched_at']:.1f} s)"
    say(console, times + (f"; by {run['launched_by']}" if run["launched_by"] else ""))
    if run["reason"]:
        say(console, f"reason: {run['reason']}" + (f" (by {run['ended_by']})" if run["ended_by"] else ""))
    if run.get("parent_run_id"):
        how = {"subflow": "child of", "retry": "retry of", "fork": "fork of"}.get(run["parent_link"], "from")
        say(console, f"{how} run {run['parent_run_id']} at step {run['forked_from']}")
    for child in found.get("children", ()):
        say(console, f"  {child['parent_link']}: run {child['run_id']} ({child['flow']}, {child['status']}) "
                     f"from step {child['forked_from']}")
    table = Table(title="steps", title_justify="left")
    for name in ("step", "kind", "persona", "status", "attempt", "duration", "note"):
        table.add_column(name, overflow="ellipsis", no_wrap=name != "note")
    for s in steps:
        note = s["error"] or (f"{s['skip_reason']}: {s['detail']}" if s["skip_reason"] else "") or \
            (f"kept from run {s['kept_from']}" if s.get("kept_from") else "")
        table.add_row(cell(s["step_id"]), s["kind"], cell(s["persona"] or "-"),
                      Text(s["status"], style=STATUS_STYLE.get(s["status"], "")),
                      str(s["attempt"] or ""), f"{s['duration_s']:.1f}s" if s["duration_s"] else "",
                      cell(note[:120]))
    console.print(table)
    print_map_items(console, steps)
    print_tool_calls(console, steps)
    for s in steps:
        if s["status"] == StepStatus.PAUSED:
            go_on = f"{run['run_id']} {s['step_id']}"
            say(console, f"step '{s['step_id']}' waits for a person: {command('approve ' + go_on)} "
                         f"(or {command('reject ' + go_on)})")
    if found["report"]:
        print_report(console, found["report"])
    else:
        console.print("(no report yet: the run has not ended)")


def ended_by_status(steps: list[dict[str, Any]]) -> str:
    """How the ended steps ended, `` (1 completed, 3 cancelled)``, in the order of their first; empty when
    none has or all completed (``4/4 ended`` alone said a cancelled run had done its work)."""
    tally: dict[str, int] = {}
    for s in steps:
        if step_ended(s["status"]):
            tally[s["status"]] = tally.get(s["status"], 0) + 1
    if set(tally) <= {StepStatus.COMPLETED}:
        return ""
    return " (" + ", ".join(f"{n} {status}" for status, n in tally.items()) + ")"


def call_text(tool: str, arguments: str, limit: int = 80) -> str:
    """A tool call on one line: ``read_file {"path": "src/app.py"}``, its arguments cut at ``limit``."""
    args = " ".join(arguments.split())
    return f"{tool} {args[:limit]}{'…' if len(args) > limit else ''}".rstrip()


def result_text(ok: bool | None, outcome: str, error: str, size: int, truncated: bool) -> str:
    """A tool result on one line: ``ok 1,234 B`` (``cut`` when capped), or ``error outside-root``."""
    if ok is None:
        return "(no result)"
    if ok:
        return f"ok {size:,} B" + (" cut" if truncated else "")
    return f"{outcome} {error}".strip()


def print_map_items(console: Console, steps: list[dict[str, Any]]) -> None:
    """Each map step's items: how many ended how, then the ones that failed (or are still to end) by index."""
    for s in steps:
        items = s.get("items")
        if not items:
            continue
        done = sum(1 for it in items if it["status"] == "completed")
        failed = [it for it in items if it["status"] == "failed"]
        left = [it for it in items if it["status"] == "pending"]
        say(console, f"items of '{s['step_id']}': {done} of {len(items)} done" + (f", {len(failed)} failed" if failed else "")
            + (f", {len(left)} not ended" if left else ""))
        for it in failed[:20]:
            say(console, f"  #{it['index']} {short_value(it['item'])}: {it['error'][:200]}")
        if len(failed) > 20:
            say(console, f"  ... {len(failed) - 20} more failed (baton show --json lists every item)")


def short_value(value: Any, limit: int = 60) -> str:
    """An item as one short line: its text, or its JSON."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "…"


def print_tool_calls(console: Console, steps: list[dict[str, Any]]) -> None:
    """The tool calls of each step that made any, one compact line each, and the step's token totals."""
    for s in steps:
        calls = s.get("tool_calls") or []
        if not calls:
            continue
        usage = s.get("usage") or {}
        tokens = f", {usage.get('prompt_tokens', 0):,} prompt + {usage.get('completion_tokens', 0):,} completion " \
                 f"tokens in {len(usage.get('turns', ()))} turns" if usage else ""
        say(console, f"tool calls of '{s['step_id']}': {len(calls)}{tokens}")
        for c in calls:
            say(console, f"  #{c['seq']} t{c['turn']} {call_text(c['tool'], c['arguments'])}  -> "
                         f"{result_text(c['ok'], c['outcome'], c['error'], c['bytes'], c['truncated'])}")


def frame_line(frame: dict[str, Any]) -> str:
    """One durable frame as ``<id> <type> <run> <step> <status>`` (``-`` for what it lacks).

    A tool frame ends with the call (``read_file {"path": ...}``) or its result (``ok 320 B``).
    """
    if frame["type"] == "tool_call":
        what = call_text(frame.get("tool", "?"), frame.get("arguments", ""))
        return printable_line(f"{frame['id']} tool_call {frame.get('run_id') or '-'} {frame.get('step_id') or '-'} "
                              f"#{frame.get('seq', '?')} {what}")
    if frame["type"] == "tool_result":
        what = result_text(frame.get("ok"), frame.get("outcome", ""), frame.get("error", ""),
                           int(frame.get("bytes", 0)), bool(frame.get("truncated")))
        return printable_line(f"{frame['id']} tool_result {frame.get('run_id') or '-'} "
                              f"{frame.get('step_id') or '-'} {frame.get('tool', '?')} {what}")
    status = frame.get("status") or frame.get("run_status")
    if status is None:
        status = {"flow_run_started": "launched", "approval_requested": StepStatus.PAUSED}.get(frame["type"], "-")
    return printable_line(
        f"{frame['id']} {frame['type']} {frame.get('run_id') or '-'} {frame.get('step_id') or '-'} {status}")


def print_nodes(console: Console, nodes: list[dict[str, Any]]) -> None:
    """``baton nodes``: each node, whether its lease lives, its server, the runs it drives, its slots."""
    say(console, f"{sum(1 for n in nodes if n['alive'])} live node(s) of {len(nodes)} known")
    table = Table(title="nodes", title_justify="left")
    for name in ("node", "process", "lease", "server", "drives", "paused", "slots"):
        table.add_column(name, overflow="fold")
    now = time.time()
    for n in nodes:
        expires = n.get("lease_expires_at")
        lease = ("alive" if n["alive"] else "gone") + (f", {expires - now:+.0f} s" if expires else "")
        slots = ", ".join(f"{held} of {pool}" for pool, held in n["slots"].items())
        drives = f"{len(n['driving'])}" + (f": {', '.join(n['driving'][:5])}" if n["driving"] else "")
        table.add_row(cell(n["node"]), cell(n["owner"]), lease + (" (cluster)" if n["member"] else ""),
                      cell(n["url"] or ""), drives + (", ..." if len(n["driving"]) > 5 else ""),
                      str(len(n["paused"])), slots)
    console.print(table)


def print_plan(console: Console, plan: dict[str, Any], *, live: bool) -> None:
    """``baton plan``: runs in progress, then waiting runs in plan order with the reason each waits.

    ``live`` says whether it is a running engine's plan (a server's) or what
    the log shows when no server runs.
    """
    source = "the server's scheduler" if live else "the log (no server runs: nothing is admitted until one does)"
    limit = plan["max_active_runs"] or "no limit"
    slots = plan["agent_slots"] or "no limit"
    say(console, f"plan from {source}: {len(plan['in_progress'])} in progress (max {limit}), "
                 f"{plan['slots_in_use']} agent slot(s) in use (of {slots})")
    table = Table(title="in progress", title_justify="left")
    table.add_column("run", no_wrap=True, min_width=26)
    nodes = not live or bool(plan.get("cluster"))  # the log's plan, or a cluster's: name who drives each run
    for name in ("flow", "since", "slots", "waiting for a slot", *(("node",) if nodes else ())):
        table.add_column(name, overflow="fold")
    for r in plan["in_progress"]:
        table.add_row(r["run_id"], cell(r["flow"]), _when(r.get("since")), str(r.get("slots_held", "-")),
                      str(r.get("steps_waiting_for_slot", "-")), *((cell(r.get("node") or ""),) if nodes else ()))
    console.print(table)
    table = Table(title="planned (waiting)", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("run", no_wrap=True, min_width=26)
    for name in ("flow", "waits for", "detail"):
        table.add_column(name, overflow="fold")
    for r in plan["planned_queued"]:
        table.add_row(str(r["position"]), r["run_id"], cell(r["flow"]), r["reason"], cell(r["detail"]))
    console.print(table)
