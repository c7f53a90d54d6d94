"""``baton`` on a PostgreSQL log that holds what its read tables cannot take as it is.

Before: the projector retried the first such event forever, so ``baton runs``
and ``baton show`` waited a minute and answered without the runs after it,
and ``baton projections rebuild`` failed. The events are appended straight
to the store, as an older version (or another tool) could have written them.
"""

from __future__ import annotations

import msgspec
import pytest

from baton_cli import Baton
from eventstore import NewEvent, open_store
from flows.catalog import builtin
from flows.events import AnomalyDetected, RunStarted, event_data
from flows.launch import LaunchParams, prepare

FFFD = "\ufffd"


@pytest.fixture
def pg_baton(pg_url, tmp_path) -> Baton:
    return Baton(pg_url, tmp_path)


def poison(url: str) -> tuple[str, int]:
    """A run whose question holds NUL and whose anomaly no database can take; its id, and that position."""
    launched = prepare(builtin(), LaunchParams("research", "x", band="small"), run_id="01J0000000000000000000NULL",
                       now=1.0)
    launched = msgspec.structs.replace(launched, input={"question": "is a\x00b safe?"})
    with open_store(url) as store:
        recorded = store.append(f"run-{launched.run_id}", [
            NewEvent("RunLaunched", event_data(launched)),
            NewEvent("RunStarted", event_data(RunStarted(run_id=launched.run_id, at=2.0))),
            NewEvent("AnomalyDetected", event_data(AnomalyDetected(  # anomalies.attempt is an integer column
                step_id="x", attempt=2**63, kind="stall", severity="high", detail="?", at=3.0))),
        ], 0)
    return launched.run_id, recorded[-1].position


def test_show_runs_and_rebuild_work_on_a_poisoned_log(pg_baton):
    run_id, bad = poison(pg_baton.url)
    after = pg_baton.ok("launch", "review-and-approve", "-q", "and after it?").run_id

    runs = pg_baton.ok("runs", timeout=30)
    assert run_id in runs.out and after in runs.out and "warning" not in runs.err

    shown = pg_baton.ok("show", run_id, timeout=30)
    assert f"question: is a{FFFD}b safe?" in shown.out
    assert f"could not apply event {bad} (AnomalyDetected)" in " ".join(shown.out.split())
    assert "paused" in pg_baton.ok("show", after, timeout=30).out

    rebuilt = pg_baton.ok("projections", "rebuild", timeout=60)
    assert f"up to position {pg_baton.head()}" in rebuilt.out
    assert f"question: is a{FFFD}b safe?" in pg_baton.ok("show", run_id, timeout=30).out
