"""A tool-using flow for the console's tool tests, loaded by their server with BATON_FLOWS=tests.web.web_flows."""

from flows import Flow, agent, approval

web_tools = Flow(
    "web-tools",
    category="Analysis",
    description="An explorer that reads the project with tools, then a person's approval.",
    steps=[
        agent("explore", persona="codebase-explorer", prompt="Explore: $input.question", tools=True),
        approval("gate", deps=["explore"], prompt="Keep what $explore.output says?"),
    ],
)
