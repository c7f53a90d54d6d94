"""The ``baton`` commands, one function each: ``cmd_<name>(args, settings) -> exit status``.

Each asks ``target`` where it is carried out and prints what it finds with
``api.cli.progress``; the parser and the error handling are in
``api.cli.main``.

A command imports what it uses when it runs: what this module imports at its
top is what every command needs (the output, the targets). A command sent to
a server imports neither the engine nor the store; one that only reads the
log, not the engine (docs/PERFORMANCE.md, "CLI start-up").
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from api.cli import progress
from api.cli.context import (
    baton_command,
    in_process,
    missing_store,
    program,
    refuse_missing_store,
    running,
    target,
    whoami,
)
from api.cli.errors import CliError
from api.cli.escape import printable, printable_line
from api.cli.progress import ProgressView, load_run, make_console, say
from api.cli.targets import Remote, Target, resolve_in
from api.failures import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from api.settings import Settings, require_model, safe_url
from flows import errors
from flows.status import RUN_TERMINAL, RunStatus, StepStatus

if TYPE_CHECKING:
    from api.cli.audit import Replay
    from api.runtime import Runtime
    from flows.launch import LaunchParams
    from flows.state import RunState

DEMO_DB = "sqlite:///baton-demo.db"
DEMO_FLOW, DEMO_BAND, DEMO_STEP = "review-and-approve", "large", "approve"
DEMO_QUESTION = ("Review the change that adds retries with exponential backoff to the HTTP client "
                 "(client/http.py: send and _backoff) before it is merged")


def known_run(rt: Runtime, run_id: str) -> tuple[RunState, list[Any]]:
    """The run folded from the log; UnknownRun when the log has no such run."""
    state, history = load_run(rt.store, run_id)
    if state.launched is None:
        raise errors.UnknownRun(run_id)
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
    return EXIT_FAILED if state.status == RunStatus.FAILED else EXIT_OK


def print_json(value: Any) -> None:
    """``value`` as one JSON document on stdout (strings keep their control characters, JSON-escaped)."""
    sys.stdout.write(json.dumps(value, default=str) + "\n")


# -- commands ------------------------------------------------------------------------------------


def cmd_flows(args: argparse.Namespace, settings: Settings) -> int:
    """The catalogue: the server's when one runs, else this process's (built-in and --flows modules)."""
    if missing_store(settings) is not None and not settings.url:  # no store, so no server of it to ask
        from api.runtime import load_registry

        flows = [flow.describe() for flow in load_registry(settings.flows, personas=settings.personas)]
    else:
        with target(args, settings) as where:
            flows = where.flows()
    if args.json:
        print_json(flows)
    else:
        make_console().print(progress.flows_table(flows))
    return EXIT_OK


def launch_params(args: argparse.Namespace) -> LaunchParams:
    """What ``baton launch`` asks for, as the value a launch travels as."""
    from flows.launch import LaunchParams

    return LaunchParams(args.flow, args.question, band=args.band, model=args.model or "",
                        project_id=args.project or "", fast=args.fast, launched_by=whoami(None))


def launchable(rt: Runtime, args: argparse.Namespace) -> None:
    """Refuse a launch this process would refuse, before any engine starts (nothing is appended).

    The openai backend needs a model: the run's (--model) or the default.
    """
    from actors.workspace.projects import ProjectBook
    from flows.launch import prepare

    # A named project is pinned now as the engine will pin it (an unknown one is refused, naming it).
    prepare(rt.registry, launch_params(args), run_id="-", now=0.0, pin=ProjectBook(rt.store, time.time).pin)
    if not args.model:
        require_model(rt.settings)


def cmd_launch(args: argparse.Namespace, settings: Settings) -> int:
    """Launch a run and follow it until it ends or waits for a person."""
    if not (args.question or "").strip():
        raise CliError(EXIT_USAGE, f"missing question: baton launch {args.flow} -q TEXT")
    with target(args, settings, engine=True, creates=True) as where:
        if (local := in_process(where)) is not None:  # refused here before an engine starts, appending nothing
            local.check(lambda rt: launchable(rt, args))
        launched = where.launch(launch_params(args))
        print(printable_line(f"launched run {launched.run_id} ({args.flow}, band {args.band}"
                             f"{', fast' if args.fast else ''}) at position {launched.position}"), flush=True)
        return follow_and_report(where, args, settings, launched.run_id)


def cmd_decide(args: argparse.Namespace, settings: Settings) -> int:
    """Approve or reject a paused step, then follow the run until it ends or pauses again."""
    decision = "approved" if args.command == "approve" else "rejected"
    comment = args.comment or ""
    with target(args, settings, engine=True) as where:
        by = where.actor(args.by or "")
        run_id = where.resolve(args.run)
        if not args.step:
            args.step = waiting_step(where, run_id, args.command)
        if (local := in_process(where)) is not None:
            from flows import decide

            local.check(lambda rt: decide.resume(  # the same decision the run will take, on the log as it is
                known_run(rt, run_id)[0], args.step, decision, time.time(), by=by, comment=comment))
        position = where.decide(run_id, args.step, args.command, by=by, comment=comment)
        print(printable_line(f"{decision} step '{args.step}' of run {run_id} (position {position}, by {by})"),
              flush=True)
        return follow_and_report(where, args, settings, run_id)


def waiting_step(where: Target, run_id: str, command: str) -> str:
    """The one step of ``run_id`` waiting for a person; a usage error naming them when there is not exactly one."""
    waiting = where.waiting(run_id)
    if len(waiting) == 1:
        return str(waiting[0])
    if not waiting:
        raise CliError(EXIT_USAGE, f"run {run_id} has no step waiting for a person: nothing to {command}")
    raise CliError(EXIT_USAGE, f"run {run_id} has {len(waiting)} steps waiting ({', '.join(waiting)}): "
                               f"name one: baton {command} {run_id} STEP")


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    """Cancel a run that has not ended."""
    reason = args.reason or ""
    with target(args, settings, engine=True) as where:
        by = where.actor(args.by or "")
        run_id = where.resolve(args.run)
        if (local := in_process(where)) is not None:
            from flows import decide

            local.check(lambda rt: decide.cancel(*known_run(rt, run_id), time.time(), reason=reason, by=by))
        position = where.cancel(run_id, reason=reason, by=by)  # answers once RunCancelled is recorded
        print(printable_line(f"run {run_id} cancelled (position {position}, by {by})"))
        return EXIT_OK


def cmd_tokens_create(args: argparse.Namespace, settings: Settings) -> int:
    """Make a token; it goes to stdout alone (``TOKEN=$(baton tokens create ...)``), shown this once."""
    with target(args, settings, creates=True) as where:
        issued = where.create_token(args.name, args.role, by=where.actor(""))
    print(issued.token, flush=True)
    print(printable_line(f"baton: token {issued.name!r} ({issued.role.value}) made at position {issued.position}; "
                         f"it is shown this once: keep it now (only its hash is recorded)"), file=sys.stderr)
    return EXIT_OK


def cmd_tokens_list(args: argparse.Namespace, settings: Settings) -> int:
    """The valid tokens: name, role, who issued each and when (never a token itself)."""
    with target(args, settings) as where:
        rows = where.tokens()
    if args.json:
        print_json(rows)
        return EXIT_OK
    width = max((len(r["name"]) for r in rows), default=4)
    print(f"{'NAME':<{width}}  {'ROLE':<8}  {'ISSUED':<19}  ISSUED BY")
    for row in rows:
        issued = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["issued_at"]))
        print(printable_line(f"{row['name']:<{width}}  {row['role']:<8}  {issued:<19}  {row['issued_by']}"))
    return EXIT_OK


def cmd_tokens_revoke(args: argparse.Namespace, settings: Settings) -> int:
    """Revoke a token: it opens nothing from now on (through a server, at once there)."""
    with target(args, settings) as where:
        position = where.revoke_token(args.name, by=where.actor(""))
    print(printable_line(f"token {args.name!r} revoked (position {position})"))
    return EXIT_OK


def cmd_projects_add(args: argparse.Namespace, settings: Settings) -> int:
    """Register a git work tree as a project runs may read (``--project NAME`` on a launch)."""
    path = os.path.abspath(args.path)  # a server reads it on its disk: never relative to its directory
    with target(args, settings, creates=True) as where:
        row = where.add_project(args.name, path, by=where.actor(""))
    print(printable_line(f"project {row['project_id']!r} registered at {row['root']}"))
    return EXIT_OK


def cmd_projects_remove(args: argparse.Namespace, settings: Settings) -> int:
    """Unregister a project: no launch can name it from now on; runs pinned to it keep their pin."""
    with target(args, settings) as where:
        position = where.remove_project(args.name, by=where.actor(""), reason=args.reason)
    print(printable_line(f"project {args.name!r} removed (position {position}); runs launched with it keep "
                         "their pinned commit"))
    return EXIT_OK


def cmd_projects_list(args: argparse.Namespace, settings: Settings) -> int:
    """The registered projects: id, root, who registered each and when."""
    with target(args, settings) as where:
        rows = where.projects()
    if getattr(args, "json", False):
        print_json(rows)
        return EXIT_OK
    if not rows:
        print("no projects; register one with: baton projects add NAME PATH")
        return EXIT_OK
    width = max([len("PROJECT"), *(len(r["project_id"]) for r in rows)])
    print(f"{'PROJECT':<{width}}  {'REGISTERED':<19}  {'BY':<12}  ROOT")
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["registered_at"]))
        print(printable_line(f"{row['project_id']:<{width}}  {when:<19}  {row['registered_by']:<12}  {row['root']}"))
    return EXIT_OK


def cmd_runs(args: argparse.Namespace, settings: Settings) -> int:
    """Runs, newest first, from the read model."""
    with target(args, settings, projector=True) as where:
        rows = where.runs(status=args.status, flow=args.flow, project_id=args.project, limit=args.limit)
    if args.json:
        print_json(rows)
    else:
        console = make_console()
        console.print(progress.runs_table(rows, console.width))
    return EXIT_OK


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    """One run: its row, its steps and its report (``--report``: the report alone, as markdown)."""
    with target(args, settings, projector=True) as where:
        run_id = where.resolve(args.run)
        found = where.run(run_id)
        problems = where.projection_errors(run_id) if found is None else found.get("problems", [])
    if found is None and problems:
        first = problems[0]
        raise CliError(EXIT_FAILED, f"run {run_id} is in the log, but the read tables could not apply its event "
                                    f"at position {first['position']} ({first['event_type']}): {first['error']}; "
                                    f"baton replay --run {run_id} reads it from the log")
    if found is None:
        raise errors.UnknownRun(run_id)
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


def cmd_nodes(args: argparse.Namespace, settings: Settings) -> int:
    """The nodes sharing the store: alive or not, their lease, their server, the runs each drives."""
    with target(args, settings) as where:
        nodes = where.nodes()
    if args.json:
        print_json(nodes)
    else:
        progress.print_nodes(make_console(), nodes)
    return EXIT_OK


def cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    """Print durable frames as they are recorded; with RUN, that run's, until it ends."""
    from flows.events import stream_of
    from projections import Framer

    refuse_missing_store(settings)
    with running(settings) as rt:
        after, run_id = args.after, None
        if args.run:
            run_id = resolve_in(rt.store, args.run)
            events = rt.store.read_stream(stream_of(run_id))
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
    from api.cli.audit import replay_log
    from api.cli.seal import seal_argument
    from flows.review import count

    seal = seal_argument(getattr(args, "seal", None))
    if seal is not None and (args.run or not args.verify):
        raise CliError(EXIT_USAGE, "--seal checks the whole log: use it with --verify, without --run")
    refuse_missing_store(settings)
    with running(settings) as rt:
        run_id = resolve_in(rt.store, args.run) if args.run else None
        replay = replay_log(rt.store, run_id=run_id, verify=args.verify, seal=seal)
    for line in replay.summaries:
        print(line)
    code = report_verification(replay, verify=args.verify)
    if seal is not None:
        print(f"the seal holds: the log up to position {seal.head} is as it was sealed ({count(seal.events, 'event')})")
    return code


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    """Rebuild the read tables from position 0."""
    from flows.review import count
    from projections import rebuild

    refuse_missing_store(settings)
    with running(settings) as rt:
        stats = rebuild(rt.store)
    print(f"projections rebuilt: {count(stats.events, 'event')} up to position {stats.position} in {stats.seconds:.2f} s "
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
    from api.cli.audit import replay_log
    from api.cli.local import Local

    console = make_console()
    if getattr(args, "db", None) is None and settings.db == Settings.db:
        settings = settings.replace(db=DEMO_DB)  # BATON_DB unset: keep the demo out of the default database
    ignored = f"; BATON_AGENT={settings.agent} is ignored for the demo" if settings.agent != "offline" else ""
    settings = settings.replace(agent="offline", model="", offline_delay_s=settings.offline_delay_s or 0.6)
    db = shlex.quote(safe_url(settings.db))
    command: Callable[[str], str] = lambda rest: f"BATON_DB={db} {program()} {rest}"  # noqa: E731
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
            if not state.terminal and state.steps[DEMO_STEP].status == StepStatus.PAUSED:
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
    return EXIT_OK if state.status == RunStatus.COMPLETED else EXIT_FAILED


def report_verification(replay: Replay, *, verify: bool) -> int:
    """Print the problems (stderr) and fail, or print the verified line."""
    from flows.review import count

    if replay.problems:
        for problem in replay.problems:
            print(printable_line(f"  problem: {problem}"), file=sys.stderr)
        what = "the log does not verify" if verify else "some runs do not replay"
        raise CliError(EXIT_FAILED, f"{what}: {count(len(replay.problems), 'problem')}, listed above")
    if verify:
        print(f"log verified: {count(replay.events, 'event')}, {count(replay.runs, 'run')}, hash chains intact",
              flush=True)
    return EXIT_OK
