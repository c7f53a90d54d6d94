"""Small flows for the API tests, loaded by the server with BATON_FLOWS=tests.api.api_flows."""

from flows import Flow, agent, approval, code


def tally(ctx):
    """Code step: how many steps came before."""
    return {"steps": len(ctx.outputs)}


api_chain = Flow(
    "api-chain",
    category="Analysis",
    description="Three agent steps in a row, then a fold: long enough to disconnect in the middle.",
    steps=[
        agent("first", persona="investigator", prompt="Investigate: $input.question"),
        agent("second", persona="reviewer", deps=["first"], prompt="Review: $first.output"),
        agent("third", persona="writer", deps=["second"], prompt="Write up: $second.output"),
        code("fold", fn=tally, deps=["third"]),
    ],
)

api_gate = Flow(
    "api-gate",
    category="Review",
    description="A draft, a person's approval, then the write-up.",
    steps=[
        agent("draft", persona="writer", prompt="Draft: $input.question"),
        approval("gate", deps=["draft"], prompt="Publish $draft.output?"),
        agent("publish", persona="writer", deps=["gate"], prompt="Publish: $draft.output"),
    ],
)

api_four_eyes = Flow(
    "api-four-eyes",
    category="Review",
    description="A draft, then an approval the run's launcher may not give.",
    steps=[
        agent("draft", persona="writer", prompt="Draft: $input.question"),
        approval("gate", deps=["draft"], prompt="Ship $draft.output?", four_eyes=True),
    ],
)
