"""The frame hub on its own, over a real SQLite store: hand-over, slow clients, filters, delta order."""

from __future__ import annotations

import asyncio
import threading
import time

from api.http.delta_order import DeltaOrder
from api.http.hub import FrameHub
from api.http.stream import sse_lines
from eventstore import NewEvent, open_store
from flows.catalog import FlowRegistry
from flows.events import RunStarted, event_data
from flows.launch import LaunchParams, prepare
from flows.workspace import Workspace
from projections.frames import Encoded, Framer
from tests.api.api_flows import api_chain

REGISTRY = FlowRegistry([api_chain])


def append_run(store, run_id: str, project_id: str = "") -> None:
    """RunLaunched + RunStarted of a run (two durable frames)."""
    pinned = Workspace(project_id=project_id, root=f"/srv/{project_id}", commit="0" * 40) if project_id else None
    launched = prepare(REGISTRY, LaunchParams("api-chain", "q", project_id=project_id), run_id=run_id,
                       now=time.time(), workspace=pinned)
    started = RunStarted(run_id=run_id, reason="test", plan_position=0, at=time.time())
    store.append(f"run-{run_id}", [NewEvent(type(e).__name__, event_data(e)) for e in (launched, started)], 0)


def all_frames(store) -> list[dict]:
    framer = Framer()
    return [f for rec in store.read_all() for f in framer.frames(rec)]


async def until(condition, what: str, timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds (checked on the loop, between its callbacks); fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up after {timeout} s waiting for {what}"
        await asyncio.sleep(0.005)  # hands the loop to the hub's dispatches, which move the condition


async def collect(subscriber, until, timeout: float = 10.0) -> list[dict]:
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    while not until(got):
        assert time.monotonic() < deadline, f"only {len(got)} frames"
        frames = await subscriber.next_frames(0.5)
        assert frames is not None, "the subscriber was closed"
        got += frames
    return got


def replay_pages(store) -> list[Encoded]:
    """The pages a hub's replay from position 0 to the head gives a consumer with no filter."""

    async def main() -> list[Encoded]:
        hub = FrameHub(store).start()
        try:
            return [page async for page in hub.read_frames(0, store.head(), None)]
        finally:
            hub.stop()

    return asyncio.run(main())


def test_resume_while_the_log_grows_gives_every_frame_once_in_order(sqlite_url):
    store = open_store(sqlite_url)
    for i in range(50):
        append_run(store, f"before-{i:03}")

    go_on = threading.Event()

    def write() -> None:  # 20 runs before the client connects, the other 180 while it replays
        for i in range(200):
            if i == 20:
                assert go_on.wait(10), "the test never let the writer go on"
            append_run(store, f"during-{i:03}")

    async def main() -> list[dict]:
        hub = FrameHub(store).start()
        writer = threading.Thread(target=write)
        writer.start()
        await until(lambda: store.head() >= 2 * (50 + 20), "the first 20 runs to be appended")
        subscriber = hub.subscribe()
        replay = subscriber.replay(0)
        got = (await replay.__anext__()).frames()  # the replay is under way ...
        go_on.set()  # ... and the log grows meanwhile
        got += [f async for page in replay for f in page.frames()]
        await asyncio.to_thread(writer.join)
        head = store.head()
        got += await collect(subscriber, lambda g: g and g[-1]["id"] >= head)
        hub.stop()
        return got

    try:
        got = asyncio.run(main())
        assert got == all_frames(store)
        assert len(got) == 2 * 250
    finally:
        store.close()


def test_a_slow_client_is_closed_and_the_others_go_on(sqlite_url):
    store = open_store(sqlite_url)

    async def main() -> None:
        hub = FrameHub(store, buffer=5).start()
        slow, fast = hub.subscribe(), hub.subscribe()
        got = []
        for i in range(1, 11):  # as the hub thread hands batches over, one event at a time
            hub._dispatch([{"type": "anomaly", "id": i, "run_id": "r", "project_id": ""}], i)
            got += await fast.next_frames(0)  # the fast one keeps up
        assert [f["id"] for f in got] == list(range(1, 11))
        assert await slow.next_frames(0.1) is None and slow.overflowed  # its stream ends; it resumes by id
        slow.close()
        assert slow not in hub.subscribers and fast in hub.subscribers
        hub.stop()

    try:
        asyncio.run(main())
    finally:
        store.close()


def test_filters_by_run_and_project(sqlite_url):
    store = open_store(sqlite_url)

    async def main() -> None:
        hub = FrameHub(store).start()
        by_project, by_run = hub.subscribe(project_id="p1"), hub.subscribe(run_id="b")
        await asyncio.to_thread(lambda: [append_run(store, r, p) for r, p in (("a", "p1"), ("b", "p2"), ("c", "p1"))])
        got = await collect(by_project, lambda g: len(g) >= 4)
        assert {f["run_id"] for f in got} == {"a", "c"}
        assert {f["run_id"] for f in await collect(by_run, lambda g: len(g) >= 2)} == {"b"}
        hub._dispatch([{"type": "plan_updated", "plan": {}}], None)  # the plan is global
        assert (await by_project.next_frames(1))[0]["type"] == "plan_updated"
        assert await by_run.next_frames(0.1) == []
        hub.stop()

    try:
        asyncio.run(main())
    finally:
        store.close()


def test_deltas_wait_for_their_running_frame():
    async def main() -> None:
        released: list[list[dict]] = []
        let_out = asyncio.Event()
        order = DeltaOrder(asyncio.get_running_loop(), lambda frames: (released.append(frames), let_out.set()))
        delta = {"type": "step_delta", "run_id": "r", "step_id": "s", "attempt": 1, "text": "hi"}
        running = {"type": "flow_run_step_updated", "id": 7, "run_id": "r", "step_id": "s", "status": "running",
                   "attempt": 1}
        assert order.ephemeral(delta) is False  # its step has not been seen running yet
        assert order.durable([running]) == [running, delta]
        assert order.ephemeral(delta) is True
        late = {**delta, "step_id": "t"}
        held_at = time.monotonic()
        assert order.ephemeral(late) is False
        await asyncio.wait_for(let_out.wait(), DeltaOrder.HOLD_S + 10)  # its running frame never comes
        assert time.monotonic() - held_at >= DeltaOrder.HOLD_S * 0.9, "let out before its hold was over"
        assert released == [[late]]

    asyncio.run(main())


def test_a_client_overflowing_during_its_replay_replays_what_it_missed(sqlite_url):
    store = open_store(sqlite_url)
    for i in range(50):
        append_run(store, f"old-{i:03}")

    async def main() -> list[dict]:
        hub = FrameHub(store, buffer=5).start()
        subscriber = hub.subscribe()
        replay = subscriber.replay(0)
        got = (await replay.__anext__()).frames()  # the first page; the replay is under way
        await asyncio.to_thread(lambda: [append_run(store, f"new-{i:03}") for i in range(10)])
        head = store.head()
        # the hub dispatches them live: 20 frames overflow a buffer of 5
        await until(lambda: hub.position >= head, f"the hub to dispatch up to position {head}")
        assert subscriber.overflowed and subscriber not in hub.subscribers
        got += [f async for page in replay for f in page.frames()]  # goes on to the hub's new position
        assert subscriber in hub.subscribers and not subscriber.overflowed
        await asyncio.to_thread(append_run, store, "live")
        got += await collect(subscriber, lambda g: len(g) >= 2)  # the live run's two frames
        hub.stop()
        return got

    try:
        got = asyncio.run(main())
        assert got == all_frames(store) and len(got) == 2 * 61
    finally:
        store.close()


def test_a_replay_reads_only_the_events_that_give_frames(store_url):
    """Resuming from 0: the database hands over the run events of framed types alone (other
    streams and RunRecovered are left out in the query), and the frames are those the log gives."""
    from flows.events import RunRecovered
    from projections.frames import FRAMED_TYPES
    from projections.source import read_framed, read_framed_rows

    store = open_store(store_url)
    try:
        for i in range(7):
            append_run(store, f"r{i}", project_id="p" if i % 2 else "")
            store.append(f"other-{i}", [NewEvent("Noted", {"n": i})], 0)
        recovered = RunRecovered(node="n", at=time.time())
        store.append("run-r3", [NewEvent("RunRecovered", event_data(recovered))], 2)
        framed = [r for r in store.read_all() if r.type in FRAMED_TYPES and r.stream_id.startswith("run-")]
        pages = list(read_framed(store, 0, store.head(), FRAMED_TYPES, page=4))
        assert sum(p.count for p in pages) == len(framed) == 14  # what the database sent: nothing else
        assert [i[2] for p in pages for i in p.items] == [r.position for r in framed]
        rows = [row for page in read_framed_rows(store, 0, store.head(), FRAMED_TYPES, page=4) for row in page]
        assert [(row[0], row[1]) for row in rows] == [(r.position, r.stream_id[4:]) for r in framed]

        replayed = replay_pages(store)
        assert [f for page in replayed for f in page.frames()] == all_frames(store)
        # what an SSE client receives: the same bytes as the log's frames encoded one by one
        assert b"".join(sse_lines(page) for page in replayed) == sse_lines(all_frames(store))
    finally:
        store.close()


def test_a_project_replay_leaves_other_projects_runs_in_the_database(store_url):
    """With a project filter, runs the read tables place in another project are not even read;
    runs launched after the projector's checkpoint are read and filtered by their launch."""
    from projections import ReadModel, rebuild
    from projections.frames import FRAMED_TYPES
    from projections.source import read_framed

    store = open_store(store_url)
    try:
        for i in range(6):
            append_run(store, f"old{i}", project_id="mine" if i % 3 == 0 else "other")
        rebuild(store)  # the read tables know the runs so far
        for i in range(3):
            append_run(store, f"new{i}", project_id="mine" if i == 0 else "other")
        head = store.head()
        read = sum(p.count for p in read_framed(store, 0, head, FRAMED_TYPES, 4, project_id="mine"))
        assert read == 2 * 2 + 3 * 2  # old0 and old3, then every run the tables do not know yet
        expected = [f for f in all_frames(store) if f["project_id"] == "mine"]

        async def main() -> list[dict]:
            hub = FrameHub(store, project_of=ReadModel(store.database).run_project).start()
            subscriber = hub.subscribe(project_id="mine")
            try:
                return [f async for page in subscriber.replay(0) for f in page.frames()]
            finally:
                hub.stop()

        got = asyncio.run(main())
        assert got == expected and {f["run_id"] for f in got} == {"old0", "old3", "new0"}
    finally:
        store.close()


def test_a_runs_project_read_on_the_stores_reading_connections_is_the_read_tables(store_url):
    """The hub asks the project of each run launched before it started (once per run): through the
    store's own reading connections it answers what the pooled query answers."""
    from projections import ReadModel, rebuild

    store = open_store(store_url)
    try:
        append_run(store, "in-mine", project_id="mine")
        append_run(store, "in-none")
        rebuild(store)
        pooled, direct = ReadModel(store.database), ReadModel(store.database, read=store.read_sql)
        for run_id in ("in-mine", "in-none", "unknown"):
            assert direct.run_project(run_id) == pooled.run_project(run_id)
        assert [direct.run_project(r) for r in ("in-mine", "in-none", "unknown")] == ["mine", "", None]
    finally:
        store.close()


def test_a_hub_learns_the_projects_of_open_runs_at_start_and_asks_none_run_by_run(store_url):
    """Runs launched before the hub started (parked runs being approved) get their frames' project from
    one read of the open runs at the hub's start (``ReadModel.open_run_projects``), not one query each."""
    from projections import ReadModel, rebuild

    store = open_store(store_url)
    try:
        append_run(store, "in-mine", project_id="mine")
        append_run(store, "in-none")
        rebuild(store)
        reads = ReadModel(store.database, read=store.read_sql)
        asked: list[str] = []

        def project_of(run_id: str) -> str | None:
            asked.append(run_id)
            return reads.run_project(run_id)

        async def main() -> list[dict]:
            hub = FrameHub(store, project_of=project_of, open_projects=reads.open_run_projects).start()
            try:
                subscriber = hub.subscribe()
                for run_id in ("in-mine", "in-none"):  # each run moves on after the hub started
                    moved = RunStarted(run_id=run_id, reason="again", plan_position=0, at=time.time())
                    await asyncio.to_thread(store.append, f"run-{run_id}",
                                            [NewEvent("RunStarted", event_data(moved))], 2)
                return await collect(subscriber, lambda got: len({f["run_id"] for f in got}) == 2)
            finally:
                hub.stop()

        frames = asyncio.run(asyncio.wait_for(main(), 30))
        assert {f["run_id"]: f["project_id"] for f in frames} == {"in-mine": "mine", "in-none": ""}
        assert asked == [], "asked the project of a run the hub knew open at its start"
    finally:
        store.close()


def test_replays_dropped_after_their_first_page_hold_nothing_back(store_url, monkeypatch):
    """A client that goes away during its replay (its page reads run ahead of it in worker threads)
    leaves no read behind that holds a connection: many of them, then a whole replay, all come."""
    monkeypatch.setattr("api.http.hub.REPLAY_PAGE", 4)  # 20 pages: the next one is always being read
    store = open_store(store_url)
    try:
        for i in range(40):
            append_run(store, f"r{i:02}")
        expected = sse_lines(all_frames(store))

        async def main() -> bytes:
            hub = FrameHub(store)
            for _ in range(40):  # more than the pool holds (10 + 20 overflow on PostgreSQL)
                replay = hub.read_frames(0, store.head(), None)
                assert len(await replay.__anext__()) > 0
                await replay.aclose()
            return b"".join([sse_lines(page) async for page in hub.read_frames(0, store.head(), None)])

        assert asyncio.run(asyncio.wait_for(main(), 60)) == expected
    finally:
        store.close()


def test_a_replay_of_text_of_every_kind_is_the_live_frames_byte_for_byte(store_url):
    """The replay reads its rows' data as bytes on both backends (PostgreSQL's text as its UTF-8
    bytes): non-ASCII text, escapes, a NUL and a report come out as the live frames, byte for byte."""
    from flows.events import RunCompleted, StepCompleted, StepStarted

    text = 'é 日本 😀 "quoted" \\ back\nslash \x00 nul \u2028 \\u0041 \\/'
    store = open_store(store_url)
    try:
        append_run(store, "r1", project_id="p")
        events = [StepStarted(step_id="s1", attempt=1, prompt=text, persona="é", at=time.time()),
                  StepCompleted(step_id="s1", attempt=1, output=text, at=time.time()),
                  RunCompleted(report="# r\n" + text, at=time.time())]
        store.append("run-r1", [NewEvent(type(e).__name__, event_data(e)) for e in events], 2)

        replayed = replay_pages(store)
        live = all_frames(store)
        assert [f for page in replayed for f in page.frames()] == live and len(live) == 5
        assert b"".join(sse_lines(page) for page in replayed) == sse_lines(live)
        assert "\ufffd" in live[3]["output"] and "日本" in live[4]["report"]
    finally:
        store.close()


# -- the frames the projector keeps (projections.tables.stream_frames) ---------------------------------


def append_events(store, pairs) -> None:
    """Append (run id, event) pairs, each to its run's stream, in order."""
    versions: dict[str, int] = {}
    for run_id, event in pairs:
        stream = f"run-{run_id}"
        store.append(stream, [NewEvent(type(event).__name__, event_data(event))], versions.get(stream, 0))
        versions[stream] = versions.get(stream, 0) + 1


def read_pages(store, after: int, upto: int, run_id=None, project_id=None, **hub_args) -> list:
    from projections import ReadModel

    async def main() -> list:
        hub = FrameHub(store, project_of=ReadModel(store.database).run_project, **hub_args)
        return [page async for page in hub.read_frames(after, upto, run_id, project_id)]

    return asyncio.run(asyncio.wait_for(main(), 60))


def test_kept_frames_of_every_framed_type_are_the_live_frames_byte_for_byte(store_url):
    """A resume sends the frames the projector kept (no event decoded again): for every framed type,
    text of every kind, both frames of a pause, the bytes an SSE client and the messages a WebSocket
    client get are the live frames', and what the log's replay gives."""
    from api.http.stream import json_texts
    from projections import ReadModel, rebuild
    from projections.kept_frames import KeptPage
    from tests.unit.test_frames import _every_framed_event

    store = open_store(store_url)
    try:
        append_events(store, _every_framed_event())
        rebuild(store)
        # (as a server's hub frames them: the project of an event after its run's end is the read tables')
        framer = Framer(ReadModel(store.database).run_project)
        live = [f for rec in store.read_all() for f in framer.frames(rec)]
        pages = read_pages(store, 0, store.head())
        assert pages and all(isinstance(page, KeptPage) for page in pages)
        assert b"".join(sse_lines(page) for page in pages) == sse_lines(live)
        assert [t for page in pages for t in json_texts(page)] == json_texts(live)
        assert [f for page in pages for f in page.frames()] == live
        assert [i for page in pages for i in page.ids] == [f["id"] for f in live]
        log_pages = read_pages(store, 0, store.head(), kept=None)  # the log's replay: what it was before
        assert b"".join(sse_lines(page) for page in log_pages) == sse_lines(live)
    finally:
        store.close()


def test_a_resume_across_the_projectors_checkpoint_has_no_gap_and_no_duplicate(store_url, monkeypatch):
    """The kept frames up to the checkpoint (pages of a few rows), then the events not projected yet from
    the log: every frame once, in order, from any resume position, whatever the filter."""
    from projections import rebuild
    from projections.frames import Encoded
    from projections.kept_frames import KeptPage

    monkeypatch.setattr("api.http.hub.REPLAY_PAGE", 3)
    store = open_store(store_url)
    try:
        for i in range(8):
            append_run(store, f"old{i}", project_id="mine" if i % 2 else "")
        rebuild(store)
        checkpoint = store.head()
        for i in range(5):
            append_run(store, f"new{i}", project_id="mine" if i % 2 else "")
        head = store.head()
        live = all_frames(store)
        for after in (0, 1, checkpoint - 1, checkpoint, checkpoint + 1, head - 1):
            pages = read_pages(store, after, head)
            kinds = [type(page) for page in pages]
            assert kinds == sorted(kinds, key=lambda k: k is Encoded)  # kept first, then the log's
            assert (KeptPage in kinds) == (after < checkpoint) and Encoded in kinds
            assert all(page.ids[-1] <= checkpoint for page in pages if isinstance(page, KeptPage))
            assert b"".join(sse_lines(page) for page in pages) == sse_lines([f for f in live if f["id"] > after])
        for run_id, project_id in (("old3", None), ("new1", None), (None, "mine"), (None, "")):
            pages = read_pages(store, 0, head, run_id=run_id, project_id=project_id)
            expected = [f for f in live if run_id in (None, f["run_id"]) and project_id in (None, f["project_id"])]
            assert b"".join(sse_lines(page) for page in pages) == sse_lines(expected) and expected
        # up to a position before the checkpoint: kept frames alone, none beyond it
        pages = read_pages(store, 0, checkpoint - 2)
        assert all(isinstance(page, KeptPage) for page in pages)
        assert b"".join(sse_lines(p) for p in pages) == sse_lines([f for f in live if f["id"] <= checkpoint - 2])
    finally:
        store.close()


def test_a_kept_resume_with_a_filter_reads_only_that_run_or_project_in_the_database(store_url, monkeypatch):
    """A project filter selects in the query: the rows the database hands over are those of the
    consumer's project alone; the other projects' rows never leave it. A run's resume reads that
    run's stream from the log, not the kept frames of every run."""
    import projections.source as source
    from projections import rebuild

    store = open_store(store_url)
    try:
        for i in range(9):
            append_run(store, f"r{i}", project_id="mine" if i % 3 == 0 else "other")
        rebuild(store)
        rows: list[int] = []
        bodies: list[bytes] = []

        def counting(*args, **kwargs):
            for body, last, count in source.read_kept_pages(*args, **kwargs):
                rows.append(count)
                bodies.append(body)
                yield body, last, count

        monkeypatch.setattr("api.http.hub.read_kept_pages", counting)
        live = all_frames(store)
        pages = read_pages(store, 0, store.head(), project_id="mine")
        assert sum(rows) == 3 * 2 and b"other" not in b"".join(bodies)  # r0, r3, r6: two events each
        assert b"".join(sse_lines(page) for page in pages) == sse_lines([f for f in live if f["project_id"] == "mine"])
        rows.clear()
        read: list[str] = []
        real_stream = store.read_stream
        monkeypatch.setattr(store, "read_stream", lambda stream, *a, **k: (read.append(stream), real_stream(
            stream, *a, **k))[1])
        pages = read_pages(store, 0, store.head(), run_id="r4")
        assert rows == [] and read == ["run-r4"]
        assert b"".join(sse_lines(page) for page in pages) == sse_lines([f for f in live if f["run_id"] == "r4"])
    finally:
        store.close()


def test_a_store_whose_read_tables_are_of_an_older_version_resumes_from_the_log(store_url):
    """Read tables of another version (not rebuilt yet: no kept frames, or kept by other code) are not
    read: the resume frames the log, as before, and gives every frame."""
    import sqlalchemy as sa

    from projections import rebuild
    from projections.frames import Encoded

    store = open_store(store_url)
    try:
        for i in range(4):
            append_run(store, f"r{i}", project_id="p" if i % 2 else "")
        rebuild(store)
        live = sse_lines(all_frames(store))
        with store.database.begin() as conn:  # rows another version kept would differ: they are not read
            conn.execute(sa.text("UPDATE stream_frames SET body = :b"), {"b": b"id: 1\nevent: x\ndata: {}\n\n"})
            conn.execute(sa.text("UPDATE projection_checkpoints SET version = version - 1"))
        pages = read_pages(store, 0, store.head())
        assert pages and all(isinstance(page, Encoded) for page in pages)
        assert b"".join(sse_lines(page) for page in pages) == live
        with store.database.begin() as conn:  # a store of the version before this table existed
            conn.execute(sa.text("DROP TABLE stream_frames"))
        pages = read_pages(store, 0, store.head())
        assert b"".join(sse_lines(page) for page in pages) == live
    finally:
        store.close()
