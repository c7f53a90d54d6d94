"""Flows of runs from runs for the API tests: a map and a subflow (BATON_FLOWS=tests.api.api_runs_flows)."""

from flows import Flow, agent, code, map, subflow


def listed(ctx):
    """Code step: the items a map goes over."""
    return {"items": ["one", "two"]}


api_map = Flow(
    "api-map",
    description="A list, then one reviewer per item.",
    steps=[
        code("list", fn=listed),
        map("review", over="$list.output.items", step=agent("r", persona="reviewer", prompt="Review $input.item")),
    ],
)

api_parent = Flow(
    "api-parent",
    description="A subflow step running api-map as a child run.",
    steps=[subflow("child", flow="api-map", inputs={"question": "Nested: $input.question"})],
)
