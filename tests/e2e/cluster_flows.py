"""Flows of the cluster tests (BATON_FLOWS=tests.e2e.cluster_flows): a fan-out of agent calls, and a no-op."""

from flows import Flow, agent, code


def fold(ctx):
    """Code step: how many answers came in."""
    return {"answers": len(ctx.outputs)}


def nothing(ctx):
    """Code step: no work at all (the cluster benchmark's unit)."""
    return "ok"


cluster_fan = Flow(
    "cluster-fan",
    category="Analysis",
    description="Three agent calls at once, then a fold: presses on the agent slots.",
    steps=[
        *(agent(f"a{i}", persona="analyst", prompt=f"Angle {i}: $input.question") for i in range(3)),
        code("fold", fn=fold, deps=["a0", "a1", "a2"]),
    ],
)

cluster_noop = Flow(
    "cluster-noop",
    category="Analysis",
    description="Four no-op code steps in a row.",
    steps=[code("s0", fn=nothing), *(code(f"s{i}", fn=nothing, deps=[f"s{i - 1}"]) for i in range(1, 4))],
)
