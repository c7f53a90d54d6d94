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
import contextlib
import getpass
import json
import logging
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from actors.errors import FlowsModuleMissing
from api import failures
from api.cli import progress
from api.cli.audit import Replay, replay_log
from api.cli.client import Client, ServerError, discover
from api.cli.escape import printable, printable_line
from api.cli.progress import ProgressView, load_run, make_console, say
from api.cli.targets import Local, Remote, RunIdError, Target, resolve_in
from api.failures import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, fail
from api.runtime import Runtime, load_registry
from api.settings import Settings, SettingsError, from_env, require_model, safe_url
from api.settings import check as check_settings
from eventstore import open_store
from flows import decide
from flows.launch import prepare
from flows.state import RUN_STATUSES, RUN_TERMINAL, RunState
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


# -- settings, and where a command is carried out ------------------------------------------------


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
)
SETTING_FLAG = "setting__"


def settings_of(args: argparse.Namespace) -> Settings:
    """Settings from the environment, then the global flags (and the command's own)."""
    flows = tuple(p.strip() for p in args.flows.split(",") if p.strip()) if getattr(args, "flows", None) else None
    flagged = {name.removeprefix(SETTING_FLAG): value for name, value in vars(args).items()
               if name.startswith(SETTING_FLAG)}
    settings = from_env().replace(db=getattr(args, "db", None), flows=flows, agent=getattr(args, "agent", None),
                                  url=getattr(args, "server", None), personas=getattr(args, "personas", None),
                                  **flagged)
    return check_settings(settings)


def program() -> str:
    """How the person runs baton: ``baton`` when that is on their PATH, else the path they typed.

    ``make demo`` runs ``.venv/bin/baton``; a follow-up line saying ``baton
    show ...`` failed with "command not found" in a shell without the venv.
    """
    typed = sys.argv[0] if sys.argv and sys.argv[0] else "baton"
    if os.path.basename(typed) != "baton":  # python -m api.cli.main
        return "python -m api.cli.main"
    on_path = shutil.which("baton")
    if on_path and os.path.realpath(on_path) == os.path.realpath(typed):
        return "baton"
    return shlex.quote(typed)


def baton_command(args: argparse.Namespace, settings: Settings) -> Callable[[str], str]:
    """How a person types a baton command to go on: as they ran this one, with the database a flag chose."""
    prefix = f"BATON_DB={shlex.quote(safe_url(settings.db))} " if getattr(args, "db", None) else ""
    name = program()
    return lambda rest: f"{prefix}{name} {rest}"


def whoami(given: str | None) -> str:
    """Who a command is recorded as: --by, else the login name."""
    if given:
        return given
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "cli"


def sqlite_file(url: str) -> Path | None:
    """The file behind a SQLite store URL (None for another backend or an in-memory database)."""
    try:
        parsed = sa.engine.make_url(url)
    except Exception:
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def missing_store(settings: Settings) -> Path | None:
    """The SQLite file the settings name, when it does not exist (opening it would create an empty store)."""
    path = sqlite_file(settings.db)
    return path if path is not None and not path.exists() else None


def refuse_missing_store(settings: Settings) -> None:
    """A command that only reads: say there is no store rather than create an empty one."""
    path = missing_store(settings)
    if path is not None:
        raise CliError(EXIT_USAGE, f"no store at {path} (set BATON_DB or run a command that creates one, e.g. "
                                   f"{program()} launch FLOW -q TEXT)")


@contextmanager
def target(args: argparse.Namespace, settings: Settings, *, engine: bool = False, projector: bool = False,
           creates: bool = False) -> Iterator[Target]:
    """Where this command is carried out: a server (named, or found on the store), else this process.

    ``creates``: the command may create the store (a launch); any other
    refuses a SQLite file that does not exist. With ``--server`` / BATON_URL
    the store is opened only if it exists here (to resolve id prefixes).
    """
    user = whoami(None)
    local = bool(getattr(args, "local", False))
    if settings.url and not local:
        store = None if missing_store(settings) else open_store(settings.db)
        chosen: Target = Remote(Client(settings.url, user=user), store)
    else:
        if not creates:
            refuse_missing_store(settings)
        store = open_store_for(settings)
        url = None if local or store is None else discover(store)
        chosen = Remote(Client(url, user=user), store) if url else Local(settings, store=store, engine=engine,
                                                                         projector=projector)
    try:
        yield chosen
    except ServerError as exc:
        raise CliError(exc.code, str(exc)) from None
    finally:
        chosen.close()


def open_store_for(settings: Settings) -> Any:
    """The store of the settings, or None when it is a SQLite file that does not exist yet."""
    if missing_store(settings) is not None:
        return None
    try:
        return open_store(settings.db)
    except ValueError as exc:  # the URL is wrong, not the database
        raise SettingsError(f"BATON_DB / --db: {exc}") from None


@contextmanager
def running(settings: Settings, *, engine: bool = False) -> Iterator[Runtime]:
    """A Runtime for a command that only works in this process (tail, replay, rebuild, demo)."""
    local = Local(settings, engine=engine)
    try:
        yield local.start()
    finally:
        local.close()


def known_run(rt: Runtime, run_id: str) -> tuple[RunState, list[Any]]:
    """The run folded from the log; UnknownRun when the log has no such run."""
    state, history = load_run(rt.store, run_id)
    if state.launched is None:
        raise decide.UnknownRun(run_id)
    return state, history


def follow_and_report(where: Target, args: argparse.Namespace, settings: Settings, run_id: str) -> int:
    """Follow the run until it ends or waits for a person (the live table with --follow); 1 if it failed."""
    console = make_console()
    if args.follow:
        with ProgressView(console, run_id) as view:
            state = where.follow(run_id, view)
    else:
        state = where.follow(run_id, None)
    progress.print_outcome(console, state, baton_command(args, settings), report=args.follow)
    return EXIT_FAILED if state.status == "failed" else EXIT_OK


def print_json(value: Any) -> None:
    """``value`` as one JSON document on stdout (strings keep their control characters, JSON-escaped)."""
    sys.stdout.write(json.dumps(value, default=str) + "\n")


# -- commands ------------------------------------------------------------------------------------


def cmd_flows(args: argparse.Namespace, settings: Settings) -> int:
    """The catalogue: the server's when one runs, else this process's (built-in and --flows modules)."""
    if missing_store(settings) is not None and not settings.url:  # no store, so no server of it to ask
        flows = [flow.describe() for flow in load_registry(settings.flows, personas=settings.personas)]
    else:
        with target(args, settings) as where:
            flows = where.flows()
    if args.json:
        print_json(flows)
    else:
        make_console().print(progress.flows_table(flows))
    return EXIT_OK


def launchable(rt: Runtime, args: argparse.Namespace) -> None:
    """Refuse a launch this process would refuse, before any engine starts (nothing is appended).

    The openai backend needs a model: the run's (--model) or the default.
    """
    prepare(rt.registry, run_id="-", now=0.0, flow=args.flow, question=args.question, band=args.band)
    if not args.model:
        require_model(rt.settings)


def cmd_launch(args: argparse.Namespace, settings: Settings) -> int:
    """Launch a run and follow it until it ends or waits for a person."""
    if not (args.question or "").strip():
        raise CliError(EXIT_USAGE, f"missing question: baton launch {args.flow} -q TEXT")
    with target(args, settings, engine=True, creates=True) as where:
        if isinstance(where, Local):
            where.check(lambda rt: launchable(rt, args))
        launched = where.launch(args.flow, args.question, band=args.band, model=args.model or "",
                                project_id=args.project or "", by=whoami(None))
        print(printable_line(f"launched run {launched.run_id} ({args.flow}, band {args.band}) at position "
                             f"{launched.position}"), flush=True)
        return follow_and_report(where, args, settings, launched.run_id)


def cmd_decide(args: argparse.Namespace, settings: Settings) -> int:
    """Approve or reject a paused step, then follow the run until it ends or pauses again."""
    decision = "approved" if args.command == "approve" else "rejected"
    by, comment = whoami(args.by), args.comment or ""
    with target(args, settings, engine=True) as where:
        run_id = where.resolve(args.run)
        if isinstance(where, Local):
            where.check(lambda rt: decide.resume(  # the same decision the run will take, on the log as it is
                known_run(rt, run_id)[0], args.step, decision, time.time(), by=by, comment=comment))
        position = where.decide(run_id, args.step, args.command, by=by, comment=comment)
        print(printable_line(f"{decision} step '{args.step}' of run {run_id} (position {position}, by {by})"),
              flush=True)
        return follow_and_report(where, args, settings, run_id)


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    """Cancel a run that has not ended."""
    by, reason = whoami(args.by), args.reason or ""
    with target(args, settings, engine=True) as where:
        run_id = where.resolve(args.run)
        if isinstance(where, Local):
            where.check(lambda rt: decide.cancel(*known_run(rt, run_id), time.time(), reason=reason, by=by))
        position = where.cancel(run_id, reason=reason, by=by)  # answers once RunCancelled is recorded
        print(printable_line(f"run {run_id} cancelled (position {position}, by {by})"))
        return EXIT_OK


def cmd_runs(args: argparse.Namespace, settings: Settings) -> int:
    """Runs, newest first, from the read model."""
    with target(args, settings, projector=True) as where:
        rows = where.runs(status=args.status, flow=args.flow, project_id=args.project, limit=args.limit)
    if args.json:
        print_json(rows)
    else:
        make_console().print(progress.runs_table(rows))
    return EXIT_OK


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    """One run: its row, its steps and its report (``--report``: the report alone, as markdown)."""
    with target(args, settings, projector=True) as where:
        run_id = where.resolve(args.run)
        found = where.run(run_id)
    if found is None:
        raise decide.UnknownRun(run_id)
    if args.json:
        print_json(found)
    elif not args.report:
        progress.print_run(make_console(), found, baton_command(args, settings))
    elif found["report"]:
        sys.stdout.write(printable(found["report"]).rstrip("\n") + "\n")  # controls escaped, as everywhere
    else:
        raise CliError(EXIT_FAILED, f"run {run_id} has no report yet (it is {found['run']['status']})")
    return EXIT_OK


def cmd_plan(args: argparse.Namespace, settings: Settings) -> int:
    """The scheduler's plan: the server's when one runs, else what the log shows."""
    with target(args, settings) as where:
        plan = where.plan()
        live = isinstance(where, Remote)
    if args.json:
        print_json(plan)
    else:
        progress.print_plan(make_console(), plan, live=live)
    return EXIT_OK


def cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    """Print durable frames as they are recorded; with RUN, that run's, until it ends."""
    refuse_missing_store(settings)
    with running(settings) as rt:
        after, run_id = args.after, None
        if args.run:
            run_id = resolve_in(rt.store, args.run)
            events = rt.store.read_stream(progress.stream_of(run_id))
            after = events[0].position - 1 if after is None else after
        framer = Framer()
        subscription = rt.store.subscribe(after=rt.store.head() if after is None else after)
        try:
            while True:
                rec = subscription.next_event(timeout=1.0)
                for frame in framer.frames(rec) if rec is not None else ():
                    if run_id and frame["run_id"] != run_id:
                        continue
                    print(json.dumps(frame, default=str) if args.json else progress.frame_line(frame), flush=True)
                    if run_id and frame.get("step_id", "") is None and frame.get("run_status") in RUN_TERMINAL:
                        return EXIT_OK
        except KeyboardInterrupt:  # the usual way to stop following everything
            return EXIT_OK
        finally:
            subscription.close()


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    """Re-fold every run (or one) from the log; with --verify, check hash chains and consistency."""
    refuse_missing_store(settings)
    with running(settings) as rt:
        run_id = resolve_in(rt.store, args.run) if args.run else None
        replay = replay_log(rt.store, run_id=run_id, verify=args.verify)
    for line in replay.summaries:
        print(line)
    return report_verification(replay, verify=args.verify)


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    """Rebuild the read tables from position 0."""
    refuse_missing_store(settings)
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
    """review-and-approve on the offline backend, approved by the demo, reported and verified.

    Always in this process (a server on the same store is not asked): the
    demo shows the engine at work in front of the person.
    """
    console = make_console()
    if getattr(args, "db", None) is None and settings.db == Settings.db:
        settings = settings.replace(db=DEMO_DB)  # BATON_DB unset: keep the demo out of the default database
    ignored = f"; BATON_AGENT={settings.agent} is ignored for the demo" if settings.agent != "offline" else ""
    settings = settings.replace(agent="offline", model="", offline_delay_s=settings.offline_delay_s or 0.6)
    db = shlex.quote(safe_url(settings.db))
    command = lambda rest: f"BATON_DB={db} {program()} {rest}"  # noqa: E731
    say(console, f"baton demo: {DEMO_FLOW}, band {DEMO_BAND} (three reviews in parallel, a fold, a synthesis, "
                 f"then an approval gate) on {safe_url(settings.db)}")
    say(console, "demo: forcing the offline backend: deterministic, labelled text; no model is called" + ignored)
    local = Local(settings, engine=True)
    try:
        engine = local.start().engine
        assert engine is not None
        launched = engine.launch(DEMO_FLOW, DEMO_QUESTION, band=DEMO_BAND, launched_by="baton demo")
        run_id = launched.run_id
        say(console, f"launched run {run_id} at position {launched.position}")
        with ProgressView(console, run_id) as view:
            state = local.follow(run_id, view)
            if not state.terminal and state.steps[DEMO_STEP].status == "paused":
                say(console, f"demo: approving step '{DEMO_STEP}' on your behalf (in real use: "
                             f"{command(f'approve {run_id} {DEMO_STEP}')})")
                engine.approve(run_id, DEMO_STEP, by="baton demo", comment="Approved by `baton demo` for you.")
                state = local.follow(run_id, view)
        progress.print_outcome(console, state, command, report=True)
        say(console, f"the report as plain markdown: {command(f'show {run_id} --report')}")
        say(console, f"verify the log yourself: {command('replay --verify')}")
        if program() != "baton":
            say(console, f"(or put baton on your PATH first: source {shlex.quote(os.path.dirname(sys.argv[0]) or '.')}"
                         f"/activate)")
        say(console, "demo: running that verification now")
        replay = replay_log(local.rt.store, verify=True)
    finally:
        local.close()
    report_verification(replay, verify=True)
    return EXIT_OK if state.status == "completed" else EXIT_FAILED


def report_verification(replay: Replay, *, verify: bool) -> int:
    """Print the problems (stderr) and fail, or print the verified line."""
    if replay.problems:
        for problem in replay.problems:
            print(printable_line(f"  problem: {problem}"), file=sys.stderr)
        what = "the log does not verify" if verify else "some runs do not replay"
        raise CliError(EXIT_FAILED, f"{what}: {len(replay.problems)} problem(s), listed above")
    if verify:
        print(f"log verified: {replay.events} events, {replay.runs} runs, hash chains intact", flush=True)
    return EXIT_OK


# -- the parser and main -------------------------------------------------------------------------


def positive_int(raw: str) -> int:
    """An argparse type: a whole number of at least 1 (argparse names the flag in its error)."""
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw!r}: must be at least 1")
    return value


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
    common.add_argument("--personas", metavar="DIR", default=s,
                        help="a folder of your own persona files, NAME.md (BATON_PERSONAS)")
    common.add_argument("--server", metavar="URL", default=s,
                        help="send commands to the baton server at URL (BATON_URL); default: a live server of "
                             "the same store, when one answers")
    common.add_argument("--local", action="store_true", default=s,
                        help="carry the command out in this process, even when a server runs")
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
    p = add("flows", cmd_flows, "list the flow catalogue")
    p.add_argument("--json", action="store_true", help="print the catalogue as JSON")
    p = add("plan", cmd_plan, "show the scheduler's plan: what runs, what waits and why")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p = add("launch", cmd_launch, "launch a run and drive it until it ends or waits for approval")
    p.add_argument("flow", metavar="FLOW")
    p.add_argument("-q", "--question", metavar="TEXT", help="what the run is about (required)")
    p.add_argument("--band", default="medium", help="small, medium or large (default: medium)")
    p.add_argument("--model", metavar="M", help="model name passed to the backend")
    p.add_argument("--project", metavar="P", help="project id")
    p.add_argument("--follow", action="store_true", help="show the live progress table and the report")
    p = add("runs", cmd_runs, "list runs, newest first")
    p.add_argument("--status", choices=RUN_STATUSES, metavar="STATUS", help=f"one of {', '.join(RUN_STATUSES)}")
    p.add_argument("--flow")
    p.add_argument("--project")
    p.add_argument("--limit", type=positive_int, default=20, metavar="N", help="at most N runs (default: 20)")
    p.add_argument("--json", action="store_true", help="print the runs as JSON")
    p = add("show", cmd_show, "show a run, its steps and its report")
    p.add_argument("run", metavar="RUN", help="a run id, or the start of exactly one")
    p.add_argument("--report", action="store_true", help="print only the report, as markdown")
    p.add_argument("--json", action="store_true", help="print the run, its steps and its report as JSON")
    for name, text in (("approve", "approve a paused step and drive the run on"),
                       ("reject", "reject a paused step and drive the run on")):
        p = add(name, cmd_decide, text)
        p.add_argument("run", metavar="RUN", help="a run id, or the start of exactly one")
        p.add_argument("step", metavar="STEP")
        p.add_argument("--comment", metavar="C", help="recorded with the decision (the step's output)")
        p.add_argument("--by", metavar="NAME", help="who decides (default: your login name)")
        p.add_argument("--follow", action="store_true", help="show the live progress table and the report")
    p = add("cancel", cmd_cancel, "cancel a run that has not ended")
    p.add_argument("run", metavar="RUN", help="a run id, or the start of exactly one")
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


def reader_gone() -> int:
    """The command's output went to a reader that stopped reading (``baton tail | head -1``): end quietly.

    stdout is pointed at /dev/null first, so the interpreter's last flush
    at exit does not fail again (that was the traceback).
    """
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return EXIT_OK


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
        return fail(exc.code, printable_line(str(exc)))
    except FlowsModuleMissing as exc:
        return fail(EXIT_USAGE, f"run {exc.run_id} needs flows module {exc.module!r}, which this shell cannot "
                                f"import; start the command where {exc.module!r} imports, or send it to the server "
                                f"with --server / BATON_URL")
    except RunIdError as exc:
        return fail(EXIT_USAGE, printable_line(str(exc)))
    except failures.INPUT_ERRORS + failures.RUNTIME_ERRORS as exc:
        return fail(failures.exit_code(exc), printable_line(failures.describe(exc, db)))
    except BrokenPipeError:
        return reader_gone()
    except KeyboardInterrupt:
        print("baton: interrupted; a run this command was driving stays in the log, unfinished: baton serve "
              "takes it up when it next starts (so does a command aimed at that run, e.g. baton cancel RUN)",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if verbose:
            raise
        return fail(EXIT_FAILED, printable_line(failures.describe(exc, db)))


if __name__ == "__main__":
    sys.exit(main())
