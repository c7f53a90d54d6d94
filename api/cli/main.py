"""``baton``: the command line (DESIGN §9).

Every command reads its settings once (``BATON_*``, then the flags) and runs
in-process on ``BATON_DB``; no server is needed. Commands that change a run
(launch, approve, reject, cancel, demo) start an engine that drives that run
only (it starts with ``recover=False``). A run left unfinished, by another
process or by a command interrupted with Ctrl-C, is taken up again only by
``baton serve`` when it starts, or by a later command aimed at that very run
(``baton cancel RUN``); other commands leave it alone. Queries (runs, show)
start only the projector and wait for it to reach the store's head, so they
see every command that returned before them.

Bad input is checked against the log *before* an engine starts, so a refused
command appends nothing. Each error prints one line, ``baton: error: ...``,
and exits 2 (the input is wrong) or 1 (something failed at run time).
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from api import failures
from api.cli import progress
from api.cli.audit import Replay, replay_log
from api.failures import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, fail
from api.cli.progress import ProgressView, load_run, make_console, say, watch_run
from api.runtime import Runtime, load_registry
from api.settings import Settings, from_env, safe_url
from api.settings import check as check_settings
from flows import decide
from flows.launch import prepare
from flows.state import RUN_TERMINAL, RunState
from projections import Framer, rebuild

DEMO_DB = "sqlite:///baton-demo.db"
DEMO_FLOW, DEMO_BAND, DEMO_STEP = "review-and-approve", "large", "approve"
DEMO_QUESTION = ("Review the change that adds retries with exponential backoff to the HTTP client "
                 "(client/http.py: send and _backoff) before it is merged")



class CliError(Exception):
    """A command cannot go on; ``code`` is the exit status, the message one line for stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# -- settings and the runtime --------------------------------------------------------------------


# `baton serve` takes a flag for every setting (DESIGN §9): (flag, setting, type, help); the flag wins
# over its BATON_* variable. Their argparse dests carry SETTING_FLAG so that no command's own option of
# the same name (`launch --model`: the model of one run) is taken for a setting.
SERVE_FLAGS: tuple[tuple[str, str, type, str, str], ...] = (
    ("--host", "host", str, "HOST", "address to listen on (BATON_HOST)"),
    ("--port", "port", int, "PORT", "port to listen on (BATON_PORT)"),
    ("--model", "model", str, "NAME", "default model of agent steps (BATON_MODEL)"),
    ("--openai-base-url", "openai_base_url", str, "URL", "OpenAI-compatible server (BATON_OPENAI_BASE_URL)"),
    ("--openai-api-key", "openai_api_key", str, "KEY",
     "bearer token (BATON_OPENAI_API_KEY; a flag shows in the process list, the variable does not)"),
    ("--cli-command", "cli_command", str, "TEMPLATE", "CLI backend command with {prompt} (BATON_CLI_COMMAND)"),
    ("--max-active-runs", "max_active_runs", int, "N", "runs in progress at once, 0 = no limit "
     "(BATON_MAX_ACTIVE_RUNS)"),
    ("--agent-slots", "agent_slots", int, "N", "model calls at once, 0 = no limit (BATON_AGENT_SLOTS)"),
    ("--stall-s", "stall_s", float, "SECONDS", "silence before a running agent step is a stall (BATON_STALL_S)"),
    ("--node", "node", str, "NAME", "this process's unique name among those sharing the store (BATON_NODE)"),
    ("--max-connections", "max_connections", int, "N", "HTTP connections held at once (BATON_MAX_CONNECTIONS)"),
    ("--header-timeout-s", "header_timeout_s", float, "SECONDS", "time a client has to send a request head "
     "(BATON_HEADER_TIMEOUT_S)"),
    ("--body-timeout-s", "body_timeout_s", float, "SECONDS", "time a client has to send a request body "
     "(BATON_BODY_TIMEOUT_S)"),
)
SETTING_FLAG = "setting__"


def settings_of(args: argparse.Namespace) -> Settings:
    """Settings from the environment, then the global flags (and the command's own)."""
    flows = tuple(p.strip() for p in args.flows.split(",") if p.strip()) if getattr(args, "flows", None) else None
    flagged = {name.removeprefix(SETTING_FLAG): value for name, value in vars(args).items()
               if name.startswith(SETTING_FLAG)}
    settings = from_env().replace(db=getattr(args, "db", None), flows=flows, agent=getattr(args, "agent", None),
                                  **flagged)
    return check_settings(settings)


def baton_command(args: argparse.Namespace, settings: Settings) -> Callable[[str], str]:
    """How a person types a baton command to go on: with the database when a flag chose it."""
    prefix = f"BATON_DB={shlex.quote(safe_url(settings.db))} " if getattr(args, "db", None) else ""
    return lambda rest: f"{prefix}baton {rest}"


def whoami(given: str | None) -> str:
    """Who a command is recorded as: --by, else the login name."""
    if given:
        return given
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "cli"


@contextmanager
def running(settings: Settings, *, engine: bool = False, projector: bool = False,
            check: Callable[[Runtime], Any] | None = None) -> Iterator[Runtime]:
    """A Runtime for one command; ``check(rt)`` runs before anything starts (a refusal appends nothing).

    The command's engine goes by its own host:pid, never BATON_NODE: that
    name is the lease of a long-lived ``baton serve``, which a short command
    sharing it would either be refused (the server holds it) or impersonate.
    """
    rt = Runtime(settings.replace(node=""))
    try:
        if check is not None:
            check(rt)
        if engine or projector:
            rt.start(engine=engine, projector=projector, recover=False)  # drive only this command's run
        if projector:
            caught_up(rt)
        yield rt
    finally:
        rt.stop()


def caught_up(rt: Runtime) -> None:
    """Wait for the read tables to reflect everything recorded so far (read-your-writes)."""
    head = rt.store.head()
    assert rt.read_model is not None and rt.projector is not None
    if not rt.read_model.wait_for(head, timeout=60):
        error = f" ({rt.projector.last_error})" if rt.projector.last_error else ""
        print(f"baton: warning: the read tables are at position {rt.projector.position} of {head}; results may "
              f"be stale{error}", file=sys.stderr)


def known_run(rt: Runtime, run_id: str) -> tuple[RunState, list[Any]]:
    """The run folded from the log; UnknownRun when the log has no such run."""
    state, history = load_run(rt.store, run_id)
    if state.launched is None:
        raise decide.UnknownRun(run_id)
    return state, history


# -- driving a run -------------------------------------------------------------------------------


def settled(rt: Runtime, run_id: str) -> Callable[[RunState], bool]:
    """Ended, or paused with the engine idle on it.

    A paused state alone is not enough: a sibling agent step may still wait
    for a slot, and then the run moves on without anyone's decision.
    """
    def check_state(state: RunState) -> bool:
        if state.terminal:
            return True
        if state.status != "paused" or rt.engine is None:
            return False
        return all(r["run_id"] != run_id for r in rt.engine.plan()["in_progress"])
    return check_state


def drive(rt: Runtime, run_id: str, view: ProgressView | None) -> RunState:
    """Wait while the engine drives the run until it ends or waits for a person."""
    unsubscribe = rt.bus.subscribe(view.on_delta) if view is not None else None
    try:
        return watch_run(rt.store, run_id, settled(rt, run_id), view.update if view else None, recheck_s=0.2)
    finally:
        if unsubscribe is not None:
            unsubscribe()


def drive_and_report(rt: Runtime, args: argparse.Namespace, settings: Settings, run_id: str) -> int:
    """Drive the run (with the live table when following), say where it stands; 1 if it failed."""
    console = make_console()
    if args.follow:
        with ProgressView(console, run_id) as view:
            state = drive(rt, run_id, view)
    else:
        state = drive(rt, run_id, None)
    progress.print_outcome(console, state, baton_command(args, settings), report=args.follow)
    return EXIT_FAILED if state.status == "failed" else EXIT_OK


# -- commands ------------------------------------------------------------------------------------


def cmd_flows(args: argparse.Namespace, settings: Settings) -> int:
    """The catalogue (built-in flows and those of --flows / BATON_FLOWS)."""
    make_console().print(progress.flows_table(load_registry(settings.flows)))
    return EXIT_OK


def cmd_launch(args: argparse.Namespace, settings: Settings) -> int:
    """Launch a run and drive it until it ends or waits for a person."""
    if not (args.question or "").strip():
        raise CliError(EXIT_USAGE, f"missing question: baton launch {args.flow} -q TEXT")

    def check(rt: Runtime) -> None:  # against the catalogue, before any engine starts
        prepare(rt.registry, run_id="-", now=0.0, flow=args.flow, question=args.question, band=args.band)

    with running(settings, engine=True, check=check) as rt:
        assert rt.engine is not None
        launched = rt.engine.launch(args.flow, args.question, band=args.band, model=args.model or "",
                                    project_id=args.project or "", launched_by=whoami(None))
        print(f"launched run {launched.run_id} ({args.flow}, band {args.band}) at position {launched.position}",
              flush=True)
        return drive_and_report(rt, args, settings, launched.run_id)


def cmd_decide(args: argparse.Namespace, settings: Settings) -> int:
    """Approve or reject a paused step, then drive the run until it ends or pauses again."""
    decision = "approved" if args.command == "approve" else "rejected"
    by, comment = whoami(args.by), args.comment or ""

    def check(rt: Runtime) -> None:  # the same decision the run will take, on the log as it is
        decide.resume(known_run(rt, args.run)[0], args.step, decision, time.time(), by=by, comment=comment)

    with running(settings, engine=True, check=check) as rt:
        assert rt.engine is not None
        call = rt.engine.approve if decision == "approved" else rt.engine.reject
        position = call(args.run, args.step, by=by, comment=comment)
        print(f"{decision} step '{args.step}' of run {args.run} (position {position}, by {by})", flush=True)
        return drive_and_report(rt, args, settings, args.run)


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    """Cancel a run that has not ended."""
    by, reason = whoami(args.by), args.reason or ""

    def check(rt: Runtime) -> None:
        decide.cancel(*known_run(rt, args.run), time.time(), reason=reason, by=by)

    with running(settings, engine=True, check=check) as rt:
        assert rt.engine is not None
        position = rt.engine.cancel(args.run, reason=reason, by=by)  # answers once RunCancelled is recorded
        print(f"run {args.run} cancelled (position {position}, by {by})")
        return EXIT_OK


def cmd_runs(args: argparse.Namespace, settings: Settings) -> int:
    """Runs, newest first, from the read model."""
    with running(settings, projector=True) as rt:
        assert rt.read_model is not None
        rows, _ = rt.read_model.list_runs(project_id=args.project, status=args.status, flow=args.flow,
                                          limit=args.limit)
        make_console().print(progress.runs_table(rows))
        return EXIT_OK


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    """One run: its row, its steps and its report (``--report``: the report alone, as markdown)."""
    with running(settings, projector=True) as rt:
        assert rt.read_model is not None
        found = rt.read_model.get_run(args.run)
    if found is None:
        raise decide.UnknownRun(args.run)
    if not args.report:
        progress.print_run(make_console(), found)
    elif found["report"]:
        sys.stdout.write(found["report"].rstrip("\n") + "\n")
    else:
        raise CliError(EXIT_FAILED, f"run {args.run} has no report yet (it is {found['run']['status']})")
    return EXIT_OK


def cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    """Print durable frames as they are recorded; with RUN, that run's, until it ends."""
    with running(settings) as rt:
        after = args.after
        if args.run:
            events = rt.store.read_stream(progress.stream_of(args.run))
            if not events:
                raise decide.UnknownRun(args.run)
            after = events[0].position - 1 if after is None else after
        framer = Framer()
        subscription = rt.store.subscribe(after=rt.store.head() if after is None else after)
        try:
            while True:
                rec = subscription.next_event(timeout=1.0)
                for frame in framer.frames(rec) if rec is not None else ():
                    if args.run and frame["run_id"] != args.run:
                        continue
                    print(json.dumps(frame, default=str) if args.json else progress.frame_line(frame), flush=True)
                    if args.run and frame.get("step_id", "") is None and frame.get("run_status") in RUN_TERMINAL:
                        return EXIT_OK
        except KeyboardInterrupt:  # the usual way to stop following everything
            return EXIT_OK
        finally:
            subscription.close()


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    """Re-fold every run (or one) from the log; with --verify, check hash chains and consistency."""
    with running(settings, check=lambda rt: known_run(rt, args.run) if args.run else None) as rt:
        replay = replay_log(rt.store, run_id=args.run, verify=args.verify)
    for line in replay.summaries:
        print(line)
    return report_verification(replay, verify=args.verify)


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    """Rebuild the read tables from position 0."""
    with running(settings) as rt:
        stats = rebuild(rt.store)
    print(f"projections rebuilt: {stats.events} events up to position {stats.position} in {stats.seconds:.2f} s "
          f"({stats.rate:,.0f} events/s)")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """The HTTP API (``api.http.app.serve``), with its exit code."""
    try:
        from api.http.app import serve
    except ImportError as exc:
        raise CliError(EXIT_FAILED, f"the HTTP server is not available: {exc}") from None
    try:
        return int(serve(settings) or 0)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown: the normal way out
        return EXIT_OK


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """review-and-approve on the offline backend, approved by the demo, reported and verified."""
    console = make_console()
    if getattr(args, "db", None) is None and settings.db == Settings.db:
        settings = settings.replace(db=DEMO_DB)  # BATON_DB unset: keep the demo out of the default database
    ignored = f"; BATON_AGENT={settings.agent} is ignored for the demo" if settings.agent != "offline" else ""
    settings = settings.replace(agent="offline", model="", offline_delay_s=settings.offline_delay_s or 0.6)
    db = shlex.quote(safe_url(settings.db))
    say(console, f"baton demo: {DEMO_FLOW}, band {DEMO_BAND} (three reviews in parallel, a fold, a synthesis, "
                 f"then an approval gate) on {safe_url(settings.db)}")
    say(console, "demo: forcing the offline backend: deterministic, labelled text; no model is called" + ignored)
    with running(settings, engine=True) as rt:
        assert rt.engine is not None
        launched = rt.engine.launch(DEMO_FLOW, DEMO_QUESTION, band=DEMO_BAND, launched_by="baton demo")
        run_id = launched.run_id
        say(console, f"launched run {run_id} at position {launched.position}")
        with ProgressView(console, run_id) as view:
            state = drive(rt, run_id, view)
            if not state.terminal and state.steps[DEMO_STEP].status == "paused":
                say(console, f"demo: approving step '{DEMO_STEP}' on your behalf (in real use: baton approve "
                             f"{run_id} {DEMO_STEP})")
                rt.engine.approve(run_id, DEMO_STEP, by="baton demo", comment="Approved by `baton demo` for you.")
                state = drive(rt, run_id, view)
        progress.print_outcome(console, state, baton_command(args, settings), report=True)
        say(console, f"the report as plain markdown: BATON_DB={db} baton show {run_id} --report")
        say(console, f"verify the log yourself: BATON_DB={db} baton replay --verify")
        say(console, "demo: running that verification now")
        replay = replay_log(rt.store, verify=True)
    report_verification(replay, verify=True)
    return EXIT_OK if state.status == "completed" else EXIT_FAILED


def report_verification(replay: Replay, *, verify: bool) -> int:
    """Print the problems (stderr) and fail, or print the verified line."""
    if replay.problems:
        for problem in replay.problems:
            print(f"  problem: {problem}", file=sys.stderr)
        what = "the log does not verify" if verify else "some runs do not replay"
        raise CliError(EXIT_FAILED, f"{what}: {len(replay.problems)} problem(s), listed above")
    if verify:
        print(f"log verified: {replay.events} events, {replay.runs} runs, hash chains intact", flush=True)
    return EXIT_OK


# -- the parser and main -------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with our one-line error (and exit 2) instead of the usage dump."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise CliError(EXIT_USAGE, f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The ``baton`` parser; global flags are accepted before or after the command."""
    common = argparse.ArgumentParser(add_help=False)
    s = argparse.SUPPRESS
    common.add_argument("--db", metavar="URL", default=s, help="event store URL (BATON_DB)")
    common.add_argument("--flows", metavar="MOD,MOD", default=s, help="modules of extra flows (BATON_FLOWS)")
    common.add_argument("--agent", metavar="NAME", default=s, help="offline, openai or cli (BATON_AGENT)")
    common.add_argument("-v", "--verbose", action="store_true", default=s, help="log more, with tracebacks")
    parser = _Parser(prog="baton", parents=[common],
                     description="baton: event-sourced orchestrator for LLM agent flows.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser, required=True)

    def add(name: str, handler: Callable[..., int], text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        p.set_defaults(handler=handler)
        return p

    p = add("serve", cmd_serve, "serve the HTTP API and the frame stream")
    for flag, name, kind, metavar, text in SERVE_FLAGS:
        p.add_argument(flag, dest=SETTING_FLAG + name, type=kind, default=None, metavar=metavar, help=text)
    add("demo", cmd_demo, "run review-and-approve offline, approve it, print the report and verify the log")
    add("flows", cmd_flows, "list the flow catalogue")
    p = add("launch", cmd_launch, "launch a run and drive it until it ends or waits for approval")
    p.add_argument("flow", metavar="FLOW")
    p.add_argument("-q", "--question", metavar="TEXT", help="what the run is about (required)")
    p.add_argument("--band", default="medium", help="small, medium or large (default: medium)")
    p.add_argument("--model", metavar="M", help="model name passed to the backend")
    p.add_argument("--project", metavar="P", help="project id")
    p.add_argument("--follow", action="store_true", help="show the live progress table and the report")
    p = add("runs", cmd_runs, "list runs, newest first")
    p.add_argument("--status")
    p.add_argument("--flow")
    p.add_argument("--project")
    p.add_argument("--limit", type=int, default=20)
    p = add("show", cmd_show, "show a run, its steps and its report")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--report", action="store_true", help="print only the report, as markdown")
    for name, text in (("approve", "approve a paused step and drive the run on"),
                       ("reject", "reject a paused step and drive the run on")):
        p = add(name, cmd_decide, text)
        p.add_argument("run", metavar="RUN")
        p.add_argument("step", metavar="STEP")
        p.add_argument("--comment", metavar="C", help="recorded with the decision (the step's output)")
        p.add_argument("--by", metavar="NAME", help="who decides (default: your login name)")
        p.add_argument("--follow", action="store_true", help="show the live progress table and the report")
    p = add("cancel", cmd_cancel, "cancel a run that has not ended")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--reason", metavar="R")
    p.add_argument("--by", metavar="NAME")
    p = add("tail", cmd_tail, "follow durable frames (of one run, until it ends)")
    p.add_argument("run", metavar="RUN", nargs="?")
    p.add_argument("--after", type=int, metavar="N", help="start after position N (default: the run's start, "
                   "or the head without RUN)")
    p.add_argument("--json", action="store_true", help="print each frame as JSON")
    p = add("replay", cmd_replay, "re-fold runs from the log; --verify checks it was not edited")
    p.add_argument("--verify", action="store_true")
    p.add_argument("--run", metavar="RUN")
    p = add("projections", lambda a, s: EXIT_USAGE, "manage the read tables")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser, required=True)
    actions.add_parser("rebuild", parents=[common], help="rebuild the read tables from position 0").set_defaults(
        handler=cmd_rebuild)
    return parser


class _OneLineFormatter(logging.Formatter):
    """Log records as single lines without tracebacks (``-v`` keeps them)."""

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return " ".join(super().format(record).split())


def configure_logging(verbose: bool) -> None:
    """Warnings (info with -v) on stderr; tracebacks only with -v."""
    handler = logging.StreamHandler(sys.stderr)
    fmt = "baton: %(levelname)s: %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt) if verbose else _OneLineFormatter(fmt))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler], force=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``baton`` command; returns the exit status."""
    verbose, db = False, ""
    try:
        args = build_parser().parse_args(argv)
        verbose = bool(getattr(args, "verbose", False))
        configure_logging(verbose)
        settings = settings_of(args)
        db = settings.db
        return args.handler(args, settings)
    except CliError as exc:
        return fail(exc.code, str(exc))
    except failures.INPUT_ERRORS + failures.RUNTIME_ERRORS as exc:
        return fail(failures.exit_code(exc), failures.describe(exc, db))
    except KeyboardInterrupt:
        print("baton: interrupted; a run this command was driving stays in the log, unfinished: baton serve "
              "takes it up when it next starts (so does a command aimed at that run, e.g. baton cancel RUN)",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if verbose:
            raise
        return fail(EXIT_FAILED, failures.describe(exc, db))


if __name__ == "__main__":
    sys.exit(main())
