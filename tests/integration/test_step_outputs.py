"""What a step's result leaves in the log: a capped output kept once, and where a code step raised."""

from __future__ import annotations

from typing import Any

import pytest

from actors.config import EngineConfig
from actors.engine import Engine
from eventstore import open_store
from flows import Flow, agent, code, map
from flows.catalog import FlowRegistry
from flows.events import stream_of
from tests.integration.scripted import ScriptedBackend

ROWS = 3000  # about 200 KB of JSON: under the output cap, well over what a StepCompleted copies into fields


def big_table(ctx: Any) -> dict[str, Any]:
    size = int(ctx.input.get("rows", ROWS))
    return {"verdict": "ship", "rows": [{"id": i, "note": "n" * 50} for i in range(size)]}


def parse_total(ctx: Any) -> str:
    return str(_lookup(ctx.input, "total"))


def _lookup(doc: dict[str, Any], key: str) -> Any:
    return doc[key]


FLOWS = FlowRegistry([
    Flow("big", steps=[
        code("table", fn=big_table),
        agent("judge", persona="reviewer", deps=["table"], when="$table.output.verdict == 'ship'",
              prompt="Verdict was $table.output.verdict"),
    ]),
    Flow("raises", steps=[code("total", fn=parse_total)]),
    Flow("talkative", steps=[agent("talk", persona="investigator", prompt="Talk")]),
])


@pytest.fixture
def store(sqlite_url):
    s = open_store(sqlite_url)
    yield s
    s.close()


def engine(store, backend: ScriptedBackend | None = None, **config: Any) -> Engine:
    return Engine(store, FLOWS, EngineConfig(**config), backend=backend or ScriptedBackend()).start()


def recorded(store, run_id: str, type_name: str) -> list:
    return [r for r in store.read_stream(stream_of(run_id)) if r.type == type_name]


def test_a_large_code_step_output_is_recorded_once_and_its_fields_still_resolve(store):
    backend = ScriptedBackend()
    with engine(store, backend) as e:
        run_id = e.launch("big", "q").run_id
        state = e.wait(run_id)
    assert state.status == "completed"
    (done,) = [r for r in recorded(store, run_id, "StepCompleted") if r.data["step_id"] == "table"]
    output = done.data["output"]
    assert len(output) > 150_000 and output.count('"note"') == ROWS  # the whole output, once
    assert done.data["fields"] == {} and done.data["fields_in_output"] is True  # not a second copy
    assert state.steps["table"].fields["verdict"] == "ship"  # read back from the output
    assert backend.calls[0].prompt.startswith("Verdict was ship")  # $table.output.verdict and `when` saw it
    report = state.report
    assert len(report) < 40_000 and "_(cut: the report shows 16 K of" in report
    assert f"the whole output is in event {done.position} (StepCompleted of table))_" in report


def test_an_output_over_the_cap_fails_the_step_and_says_which_setting_to_change(store):
    with engine(store, max_output_bytes=100_000) as e:
        run_id = e.launch("big", "q").run_id
        state = e.wait(run_id)
    assert state.status == "failed"
    (failed,) = recorded(store, run_id, "StepFailed")
    assert failed.data["error"].startswith("output too large: the code step returned 209.9 KB, ")
    assert "over the limit of 97.7 KB (BATON_MAX_OUTPUT_BYTES / --max-output-bytes)" in failed.data["error"]
    assert all(len(r.data.get("output", "")) < 1000 for r in store.read_stream(stream_of(run_id)))


def test_an_agent_answer_over_the_cap_fails_the_attempt(store):
    backend = ScriptedBackend()
    backend.answer("talk", "E1 (prompt:1): " + "blah " * 500)
    with engine(store, backend, max_output_bytes=1000) as e:
        run_id = e.launch("talkative", "q").run_id
        state = e.wait(run_id)
    assert state.status == "failed"
    assert state.steps["talk"].error.startswith("output too large: the model answered 2.5 KB")


def test_a_failing_code_step_records_the_last_frames_of_its_traceback(store):
    with engine(store) as e:
        run_id = e.launch("raises", "q").run_id
        state = e.wait(run_id)
    (failed,) = recorded(store, run_id, "StepFailed")
    assert failed.data["error"] == "KeyError: 'total'"
    assert failed.data["frames"] == [
        f"tests/integration/test_step_outputs.py:{parse_total.__code__.co_firstlineno + 1} in parse_total",
        f"tests/integration/test_step_outputs.py:{_lookup.__code__.co_firstlineno + 1} in _lookup",
    ]
    assert "  - at `tests/integration/test_step_outputs.py:" in state.report


# -- a function that changes what it was given changes nothing the run holds -----------------------


def classify(ctx: Any) -> dict[str, Any]:
    return {"severity": "high", "tags": ["a", "b"], "findings": [{"file": "x.py"}, {"file": "y.py"}]}


def meddle(ctx: Any) -> str:
    """A careless function: it edits the run's input and an earlier step's fields in place."""
    ctx.input["question"] = "edited"
    ctx.input["options"]["depth"] = 99
    ctx.fields["classify"]["severity"] = "low"
    ctx.fields["classify"]["tags"].append("z")
    return "meddled"


def look(ctx: Any) -> dict[str, Any]:
    return {"question": ctx.input["question"], "depth": ctx.input["options"]["depth"],
            "severity": ctx.fields["classify"]["severity"], "tags": ctx.fields["classify"]["tags"]}


def meddle_item(ctx: Any) -> str:
    finding = ctx.input["item"]
    finding["file"] = "edited.py"  # an item is a dict of the run's state: edited in place
    ctx.input["options"]["depth"] = 7
    return finding["file"]


MEDDLING = FlowRegistry([Flow("meddling", steps=[
    code("classify", fn=classify),
    code("meddle", fn=meddle, deps=["classify"]),
    map("each", over="$classify.output.findings", step=code("item", fn=meddle_item), deps=["meddle"],
        max_parallel=1),
    code("look", fn=look, deps=["each"]),
    agent("judge", persona="reviewer", deps=["look"], when="$classify.output.severity == 'high'",
          prompt="Judge $input.question at $classify.output.severity"),
])])


def test_a_function_that_edits_its_context_in_place_changes_nothing_the_run_holds(store):
    """``ctx.input`` and ``ctx.fields`` are the function's own copies: the next steps, the conditions,
    the prompts and the run's state see what the log holds, as they would after a restart."""
    backend = ScriptedBackend()
    with Engine(store, MEDDLING, EngineConfig(), backend=backend).start() as e:
        run_id = e.launch("meddling", "Why?", inputs={"options": {"depth": 1}}).run_id
        state = e.wait(run_id)
    assert state.status == "completed", state.steps
    assert state.launched is not None and state.launched.input["question"] == "Why?"
    assert state.launched.input["options"] == {"depth": 1}
    assert state.steps["classify"].fields["severity"] == "high"
    assert state.steps["each"].items == [{"file": "x.py"}, {"file": "y.py"}]
    assert state.steps["look"].fields == {"question": "Why?", "depth": 1, "severity": "high", "tags": ["a", "b"]}
    assert state.steps["judge"].status == "completed"  # its condition saw "high"
    assert backend.calls[0].prompt == "Judge Why? at high"
