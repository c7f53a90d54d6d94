"""The flow bench/web.py streams: two agent steps in a row.

Each step's model is the bench's paced server, which streams its answer at a
set rate (100 deltas per second) for a set count.
"""

from flows import Flow, agent

STEPS = 2

bench_stream = Flow(
    "bench-stream",
    category="Analysis",
    description="Two agent steps in a row: an even stream of deltas for the web bench.",
    steps=[agent(f"s{i}", persona="writer", deps=[f"s{i - 1}"] if i > 1 else [],
                 prompt="Write about: $input.question") for i in range(1, STEPS + 1)],
)
