"""flows.report's cost: a run's report is rendered inside the commit of its last event, so it grows with the
run's history by a constant a step, never by a pass over the history for each step.

Counted, not timed: how often the history is iterated, and the Python
opcodes of a render (``sys.settrace``), which do not move with the machine's load.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

from flows import Flow, code
from flows.events import Event, RunLaunched, RunStarted, StepCompleted, StepFailed, StepStarted
from flows.report import render
from flows.state import RunState, evolve

T0 = 100.0
OUTPUT = ("baton " * 40)[:200]


def output(ctx: Any) -> str:
    """A code step's function (never called: the log says what it returned)."""
    return OUTPUT


class CountedHistory(list[tuple[int, Event]]):
    """A history that counts the passes over it."""

    passes = 0

    def __iter__(self) -> Iterator[tuple[int, Event]]:
        self.passes += 1
        return super().__iter__()


def chain_run(length: int) -> tuple[RunState, CountedHistory]:
    """A finished chain of ``length`` code steps, one a second; the middle one failed once and was retried."""
    flow = Flow("chain", [code(f"s{i}", fn=output, deps=[f"s{i - 1}"] if i else [], retries=1)
                          for i in range(length)])
    log: list[Event] = [RunLaunched(run_id="r1", flow="chain", snapshot=flow.snapshot(), input={"question": "q"},
                                    at=T0), RunStarted(run_id="r1", at=T0)]
    for i in range(length):
        at, sid = T0 + i, f"s{i}"
        log.append(StepStarted(step_id=sid, attempt=1, kind="code", backend="code", at=at))
        if i == length // 2:
            log += [StepFailed(step_id=sid, attempt=1, error="boom", will_retry=True, retry_at=at, at=at),
                    StepStarted(step_id=sid, attempt=2, kind="code", backend="code", at=at)]
        log.append(StepCompleted(step_id=sid, attempt=2 if i == length // 2 else 1, output=OUTPUT, duration_s=0.5,
                                 at=at + 0.5))
    state, history = RunState(), CountedHistory()
    for position, event in enumerate(log, start=1):
        state = evolve(state, event, position)
        history.append((position, event))
    return state, history


def opcodes_per_step(length: int) -> float:
    """Python opcodes of one render of a ``length``-step chain's report, over ``length``."""
    state, history = chain_run(length)
    count = 0

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        frame.f_trace_opcodes = True
        if event == "opcode":
            count += 1
        return tracer

    before = sys.gettrace()
    sys.settrace(tracer)
    try:
        render(state, history, "completed", "", T0 + length)
    finally:
        sys.settrace(before)
    return count / length


def test_a_report_reads_the_run_history_once() -> None:
    """Each table of the report had a pass of its own over the history (nine in all); one reading serves them."""
    state, history = chain_run(20)
    text = render(state, history, "completed", "", T0 + 20)
    assert "| s10 | - | code | - | 2 | 500 ms | 0 | - | 25, 26 |" in text  # the retried attempt, read in that pass
    assert history.passes == 1


def test_a_report_costs_the_same_a_step_for_a_long_chain_as_for_a_short_one() -> None:
    """Linear in the run's length: a pass over the history for each step would make 1 000 steps cost 5 times
    what 200 do, a step."""
    short, long = opcodes_per_step(200), opcodes_per_step(1000)
    assert long < short * 1.05, (short, long)
