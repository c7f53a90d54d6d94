"""Flows whose code steps outlive their timeout, for the shutdown tests (BATON_FLOWS / --flows)."""

from __future__ import annotations

import time
from typing import Any

from flows import Flow, code


def oversleep(ctx: Any) -> str:
    """A code step that takes ten minutes, far past its one-second timeout."""
    time.sleep(600)
    return "woke up"


OVERSLEEP = Flow(
    "e2e-oversleep",
    category="Analysis",
    description="One code step that sleeps far longer than its timeout allows.",
    steps=[code("nap", fn=oversleep, timeout_s=1)],
)

BUSY = Flow(
    "e2e-busy",
    category="Analysis",
    description="A code step that takes ten minutes and has no timeout: still running at shutdown.",
    steps=[code("nap", fn=oversleep)],
)
