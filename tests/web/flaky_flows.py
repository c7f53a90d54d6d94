"""A flow whose code step fails every attempt, so the anomaly watch records on it (BATON_FLOWS=tests.web.flaky_flows)."""

from flows import Flow, code


def always_fails(ctx):
    raise RuntimeError("the service is down")


web_flaky = Flow(
    "web-flaky",
    category="Analysis",
    description="A code step that fails every attempt: past five, the anomaly watch speaks.",
    steps=[code("flaky", fn=always_fails, retries=5, retry_delay_s=0)],
)
