"""Flows for the end-to-end tests, loaded by child processes with ``--flows tests.e2e.flows_fixture``.

Every code step appends ``<run_id> <step_id> <attempt>`` to the file named by
the run's ``marker`` input (when there is one) as soon as it runs, so a test
can tell from outside the log which step executions really happened.
"""

from __future__ import annotations

import time
from typing import Any

from flows import Flow, agent, code


def mark(ctx: Any) -> None:
    """Record that this attempt of this step ran (one line, appended and flushed at once)."""
    marker = ctx.input.get("marker")
    if marker:
        with open(marker, "a", encoding="utf-8") as out:
            out.write(f"{ctx.run_id} {ctx.step_id} {ctx.attempt}\n")


def prep(ctx: Any) -> dict[str, Any]:
    """The first step: what the angles work from."""
    mark(ctx)
    return {"topic": ctx.input.get("question", ""), "prepared": True}


def hold(ctx: Any) -> str:
    """Stays running on its first attempt for ``hold_s`` seconds: the process is killed meanwhile.

    Its next attempt (after recovery) returns at once.
    """
    mark(ctx)
    if ctx.attempt == 1 and ctx.input.get("hold_s"):
        time.sleep(float(ctx.input["hold_s"]))
    return f"held on attempt {ctx.attempt}"


def join(ctx: Any) -> dict[str, Any]:
    """Fold what the steps before it produced."""
    mark(ctx)
    return {"joined": sorted(ctx.outputs), "n": len(ctx.outputs)}


def broken(ctx: Any) -> str:
    """Fails every attempt."""
    mark(ctx)
    raise RuntimeError("broken on purpose")


# Fan-out of two agent angles and a long code step, joined, then one agent step.
CRASH = Flow(
    "e2e-crash",
    category="Analysis",
    description="test flow: fan-out of agents and a code step that holds on its first attempt",
    steps=[
        code("prep", fn=prep),
        agent("a1", persona="researcher", deps=["prep"], prompt="Angle one on $input.question"),
        agent("a2", persona="researcher", deps=["prep"], prompt="Angle two on $input.question"),
        code("hold", fn=hold, deps=["prep"]),
        code("join", fn=join, deps=["a1", "a2", "hold"]),
        agent("final", persona="synthesizer", deps=["join"], prompt="Sum up: $join.output"),
    ],
)

# A small flow for the command-line tests: two parallel agent steps and a join.
QUICK = Flow(
    "e2e-quick",
    category="Analysis",
    description="test flow: two parallel offline agent steps and a code join",
    steps=[
        code("prep", fn=prep),
        agent("a1", persona="researcher", deps=["prep"], prompt="Angle one on $input.question"),
        agent("a2", persona="researcher", deps=["prep"], prompt="Angle two on $input.question"),
        code("join", fn=join, deps=["a1", "a2"]),
    ],
)

# A run that fails: its only leaf raises.
FAILING = Flow(
    "e2e-failing",
    category="Analysis",
    description="test flow: a code step that always raises",
    steps=[code("prep", fn=prep), code("broken", fn=broken, deps=["prep"])],
)


def hold_until(ctx: Any) -> str:
    """Runs until the file the question names exists (at most 30 s): the run stays driven meanwhile."""
    from pathlib import Path

    mark(ctx)
    release = Path(ctx.input.get("question", ""))
    deadline = time.monotonic() + 30
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return "released"


# A run that stays in progress, driven by whoever launched it, until the test lets it go.
HOLD = Flow(
    "e2e-hold",
    category="Analysis",
    description="test flow: a code step that runs until the file named by the question exists",
    steps=[code("hold", fn=hold_until)],
)
