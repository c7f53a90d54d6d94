"""Flows of the console's run-pane tests (BATON_FLOWS=tests.web.flaky_flows): a code step that fails every
attempt, so the anomaly watch records on it; a map whose last item ends late."""

import time
from pathlib import Path

from flows import Flow, approval, code, map, subflow


def always_fails(ctx):
    raise RuntimeError("the service is down")


web_flaky = Flow(
    "web-flaky",
    category="Analysis",
    description="A code step that fails every attempt: past five, the anomaly watch speaks.",
    steps=[code("flaky", fn=always_fails, retries=5, retry_delay_s=0)],
)


def three(ctx):
    """Two items, and a third that ends once the test has created the file the run's question names."""
    return {"items": ["a", "b", {"slow": ctx.input["question"]}]}


def settle(ctx):
    """An item in capitals; an item ``{"slow": PATH}`` ends once the test has created PATH (at most 60 s):
    after the page opened, whatever the machine's speed."""
    item = ctx.input["item"]
    if isinstance(item, dict):
        release, deadline = Path(item["slow"]), time.monotonic() + 60
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return "SLOW"
    return item.upper()


web_slow_map = Flow(
    "web-slow-map",
    category="Analysis",
    description="A map whose last item ends when the test says.",
    steps=[code("list", fn=three), map("each", over="$list.output.items", step=code("i", fn=settle))],
)


def many(ctx):
    return {"items": [f"n{i}" for i in range(300)]}


def all_but_250(ctx):
    if ctx.input["index"] == 250:
        raise ValueError("item 250 is bad")
    return "ok"


web_wide_map = Flow(
    "web-wide-map",
    category="Analysis",
    description="A map over 300 items, one of which fails.",
    steps=[code("list", fn=many), map("each", over="$list.output.items", step=code("i", fn=all_but_250),
                                      max_parallel=8)],
)


web_gated_map = Flow(
    "web-gated-map",
    category="Analysis",
    description="A person's approval, then a map over the launch's items, whose last ends late.",
    steps=[approval("gate", prompt="Go over the items?"),
           map("each", over="$input.items", step=code("i", fn=settle), deps=["gate"])],
)


web_gated_parent = Flow(
    "web-gated-parent",
    category="Analysis",
    description="A person's approval, then a subflow running api-map as a child run.",
    steps=[approval("gate", prompt="Start the child?"),
           subflow("child", flow="api-map", inputs={"question": "Nested: $input.question"}, deps=["gate"])],
)
