"""``baton replay``'s audit folds the log in one pass, letting each run go once it ended: what it
finds must be what folding each run's whole stream finds, in the order the runs first appear."""

from __future__ import annotations

from actors.config import EngineConfig
from actors.engine import Engine
from api.cli import progress
from api.cli.audit import refold, replay_log
from eventstore import NewEvent, open_store
from flows import Flow, code
from flows.catalog import FlowRegistry
from flows.events import stream_of


def echo(ctx):
    return "ok"


REGISTRY = FlowRegistry([Flow("two-steps", steps=[code("a", fn=echo), code("b", fn=echo, deps=["a"])])])


def whole_stream_folds(store, run_ids):
    problems: list[str] = []
    lines = []
    for run_id in run_ids:
        records = store.read_stream(stream_of(run_id))
        state = refold(stream_of(run_id), records, problems)
        lines.append(progress.replay_line(run_id, state, len(records)))
    return lines, problems


def test_one_pass_finds_what_whole_streams_find_even_after_a_run_ended(store_url):
    store = open_store(store_url)
    try:
        with Engine(store, REGISTRY, EngineConfig(recover=False)) as engine:
            runs = [engine.launch("two-steps", f"q{i}").run_id for i in range(4)]
            for run_id in runs:
                assert engine.wait(run_id).status == "completed"
        # An event after a run's end (an intact log never has one): that run is folded again whole.
        late = store.read_stream(stream_of(runs[1]))
        step = next(r for r in late if r.type == "StepCompleted")
        store.append(stream_of(runs[1]), [NewEvent(step.type, step.data, step.metadata)], len(late))
        replay = replay_log(store)
        lines, problems = whole_stream_folds(store, runs)
        assert replay.summaries == lines and replay.problems == problems
        assert replay.runs == 4 and replay.events == store.head()
        assert f"{len(late) + 1} events" in replay.summaries[1]  # the late event was folded in too
    finally:
        store.close()


def test_rows_the_fast_read_cannot_take_are_reported_as_the_store_reads_them(store_url):
    """A row that does not decode (in a run's stream or another), and a run event whose schema
    version is not a number: the audit names each as the store's own reading does."""
    from tests.contract.eventstore_testkit import insert_raw_row

    store = open_store(store_url)
    try:
        with Engine(store, REGISTRY, EngineConfig(recover=False)) as engine:
            run_id = engine.launch("two-steps", "q").run_id
            assert engine.wait(run_id).status == "completed"
        bad_run = insert_raw_row(store, "run-broken", 1, "{not json", type_="RunLaunched")
        bad_other = insert_raw_row(store, "tokens", 1, "[1, 2", type_="TokenIssued")
        step = next(r for r in store.read_stream(stream_of(run_id)) if r.type == "StepCompleted")
        odd = insert_raw_row(store, "run-odd", 1, msgspec_text(step.data), metadata='{"schema_version": "two"}',
                             type_="StepCompleted")
        replay = replay_log(store)
        assert replay.events == store.head()
        found = "\n".join(replay.problems)
        assert f"position {bad_run}:" in found and f"position {bad_other}:" in found
        assert f"(position {odd}): schema_version 'two' is not an integer" in found
        assert not any(run_id in p for p in replay.problems)  # the sound run has none
    finally:
        store.close()


def msgspec_text(data) -> str:
    import msgspec

    return msgspec.json.encode(data).decode()


def test_verify_in_the_same_read_finds_what_the_store_verify_finds(store_url):
    """``--verify`` checks the chains and seals on the fold's own read of the log: what it finds is
    the fold's problems, then exactly what ``store.verify()`` finds, with runs ended and let go, an
    event after a run's end, an event edited and one removed."""
    from tests.contract.eventstore_testkit import tamper

    store = open_store(store_url)
    try:
        with Engine(store, REGISTRY, EngineConfig(recover=False)) as engine:
            runs = [engine.launch("two-steps", f"q{i}").run_id for i in range(4)]
            for run_id in runs:
                assert engine.wait(run_id).status == "completed"
        seal = store.seal()
        assert replay_log(store, verify=True, seal=seal).problems == []
        late = store.read_stream(stream_of(runs[1]))
        step = next(r for r in late if r.type == "StepCompleted")
        store.append(stream_of(runs[1]), [NewEvent(step.type, step.data, step.metadata)], len(late))
        assert replay_log(store, verify=True, seal=seal).problems == []  # a clean chain, folded again
        edited = next(r for r in store.read_stream(stream_of(runs[2])) if r.type == "StepCompleted")
        removed = store.read_stream(stream_of(runs[3]))[2]
        tamper(store, f"UPDATE events SET data = replace(data, '\"ok\"', '\"OK\"') WHERE position = {edited.position}",
               f"DELETE FROM events WHERE position = {removed.position}")
        found = replay_log(store, verify=True, seal=seal).problems
        assert found == replay_log(store).problems + store.verify(seal=seal)
        text = "\n".join(found)
        assert f"edited: stream {stream_of(runs[2])!r} version {edited.version}" in text
        assert f"removed: version {removed.version} of stream {stream_of(runs[3])!r}" in text
        assert "does not match the seal given" in text
    finally:
        store.close()
