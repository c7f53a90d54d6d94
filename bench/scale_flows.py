"""The flows of ``bench/scale.py``'s stores (``BATON_FLOWS=scale_flows`` in its server processes).

Code steps returning 200 characters, as a small model answer or a tool's
result would: ``scale-chain`` is eight of them in a row; ``scale-review`` is
work, a person's approval, then a last step.
"""

from __future__ import annotations

from typing import Any

from flows import Flow, approval, code

OUTPUT = ("scale " * 40)[:200]


def answer(ctx: Any) -> str:
    """A code step that does no work and returns 200 characters."""
    return OUTPUT


scale_chain = Flow("scale-chain", [code(f"s{i}", fn=answer, deps=[f"s{i - 1}"] if i else []) for i in range(8)])
scale_review = Flow("scale-review", [
    code("work", fn=answer),
    approval("gate", deps=["work"], prompt="Go on?"),
    code("finish", fn=answer, deps=["gate"]),
])
