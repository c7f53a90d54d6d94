"""``baton fork RUN STEP [--input k=v]`` and ``baton retry RUN STEP``: runs from runs (DESIGN §15)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from api.cli.commands import follow_and_report, known_run
from api.cli.context import in_process, target
from api.cli.errors import CliError
from api.cli.escape import printable_line
from api.failures import EXIT_USAGE
from api.settings import Settings
from flows import fork as forking


def parse_inputs(pairs: list[str] | None) -> dict[str, Any]:
    """``k=v`` pairs as inputs: a value that reads as JSON is that JSON (``n=3``, ``ok=true``), else text."""
    inputs: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CliError(EXIT_USAGE, f"--input {pair!r}: give it as NAME=VALUE")
        try:
            inputs[key.strip()] = json.loads(value)
        except ValueError:
            inputs[key.strip()] = value
    return inputs


def cmd_fork(args: argparse.Namespace, settings: Settings) -> int:
    """Fork a run from a step (a retry with ``baton retry``), then follow the new run."""
    retry = args.command == "retry"
    inputs = {} if retry else parse_inputs(args.input)
    with target(args, settings, engine=True, creates=True) as where:
        by = where.actor(args.by or "")
        parent = where.resolve(args.run)
        if (local := in_process(where)) is not None:  # the decision the engine takes, on the log as it is: refused here
            local.check(lambda rt: forking.fork(*known_run(rt, parent), args.step, run_id="-", now=time.time(),
                                                by=by, inputs=inputs, retry=retry))
        launched = where.fork(parent, args.step, inputs=inputs, by=by, retry=retry)
        verb = "retried step" if retry else "forked at step"
        print(printable_line(f"run {launched.run_id}: {verb} '{args.step}' of run {parent} "
                             f"(position {launched.position}, by {by})"), flush=True)
        return follow_and_report(where, args, settings, launched.run_id)
