"""The flows of ``bench/engine.py``, importable on their own (the W4 child process loads only these).

Every step is a ``code`` step (a module-level function), so the engine bench
measures orchestration: deciding, recording, dispatching. The concurrent
shape's steps return nothing, as before; the sequential shape's return a
200-character output, as a small model answer or a tool's result would.
"""

from __future__ import annotations

import time
from typing import Any

from flows import Flow, approval, code
from flows.catalog import FlowRegistry

OUTPUT = ("baton " * 40)[:200]  # a 200-character step output


def nothing(ctx: Any) -> str:
    """A code step that does no work."""
    return ""


def output(ctx: Any) -> str:
    """A code step that does no work and returns 200 characters."""
    return OUTPUT


def half_second(ctx: Any) -> str:
    """A code step that sleeps 0.5 s (W3)."""
    time.sleep(0.5)
    return ""


def chain(name: str, fn: Any, length: int = 20) -> Flow:
    """s0 -> s1 -> ... -> s{length-1}."""
    return Flow(name, [code(f"s{i}", fn=fn, deps=[f"s{i - 1}"] if i else []) for i in range(length)])


def fan(name: str, fn: Any, width: int = 50) -> Flow:
    """head -> width parallel steps -> join."""
    return Flow(name, [
        code("head", fn=fn),
        *(code(f"p{i}", fn=fn, deps=["head"]) for i in range(width)),
        code("join", fn=fn, deps=[f"p{i}" for i in range(width)]),
    ])


CHAIN = chain("bench-chain", nothing)
FAN = fan("bench-fan", nothing)
CHAIN_OUT = chain("bench-chain-out", output)
FAN_OUT = fan("bench-fan-out", output)
SLEEPERS = Flow("bench-sleepers", [
    *(code(f"p{i}", fn=half_second) for i in range(3)),
    code("join", fn=nothing, deps=["p0", "p1", "p2"]),
])
GATED = Flow("bench-gated", [
    code("work", fn=output),
    approval("gate", deps=["work"], prompt="Go on?"),
    code("finish", fn=output, deps=["gate"]),
])
REGISTRY = FlowRegistry([CHAIN, FAN, CHAIN_OUT, FAN_OUT, SLEEPERS, GATED])
