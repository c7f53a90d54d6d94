"""Start-up with N runs parked at an approval, and the first approval after it (issue 15).

    python bench/parked_start.py --backend sqlite --parked 10000 [--goldens DIR]

One measurement per call, one JSON line: a server (``bench/scale_server.py``) on a
throw-away copy of ``bench/scale.py``'s parked store, its start-up phases
(``recovery`` = ``Engine.start()`` until the orchestrator answers; the read tables
are current by then), then one parked run approved over HTTP: the POST's
latency, and until the run has completed (GET of the run, polled every 2 ms).

It imports ``scale`` (and through its server, the engine) from the checkout it
is in, or from ``--root DIR`` given first: run with that checkout's interpreter,
it measures that checkout's code (an A/B against main in the same run). ``--goldens DIR``: the read tables of the cached stores
are rebuilt once by this checkout's code into copies of its own (SQLite files
in DIR, PostgreSQL databases suffixed with DIR's name), so a start does not
rebuild them (a new ``PROJECTION_VERSION`` otherwise makes every start rebuild).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

# ``--root DIR`` (first): measure that checkout's code (run with its interpreter); this one's by default.
_ROOT = Path(__file__).resolve().parent.parent
if sys.argv[1:2] == ["--root"]:
    _ROOT = Path(sys.argv[2])
    del sys.argv[1:3]
sys.path[:0] = [str(_ROOT), str(_ROOT / "bench")]

import httpx  # noqa: E402
import scale  # noqa: E402

CACHE = Path("/tmp/baton-bench-scale")


def own_goldens(stores: scale.Stores, goldens: Path) -> None:
    """Make ``stores.golden`` answer copies of the cached goldens, rebuilt by this code once."""
    original = stores.golden
    suffix = goldens.name.replace("-", "_")

    def golden(kind: str, n: int) -> str:
        source = original(kind, n)
        if stores.backend == "sqlite":
            path = goldens / Path(source.removeprefix("sqlite:///")).name
            url = f"sqlite:///{path}"
            if not path.exists():
                goldens.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                shutil.copyfile(source.removeprefix("sqlite:///"), tmp)
                rebuild(f"sqlite:///{tmp}")
                tmp.rename(path)
            return url
        name = f"{scale.pg_name(source)}_{suffix}"
        if not scale.pg_exists(name):
            tmp = f"{name}_tmp"
            scale.pg_admin(f'DROP DATABASE IF EXISTS "{tmp}" WITH (FORCE)',
                           f'CREATE DATABASE "{tmp}" TEMPLATE "{scale.pg_name(source)}"')
            rebuild(scale.pg_url(tmp))
            scale.pg_admin(f'ALTER DATABASE "{tmp}" RENAME TO "{name}"')
        return scale.pg_url(name)

    stores.golden = golden  # type: ignore[method-assign]


def rebuild(url: str) -> None:
    from eventstore import open_store
    from projections import rebuild as rebuild_tables

    store = open_store(url)
    try:
        rebuild_tables(store)
    finally:
        store.close()


def measure(stores: scale.Stores, parked: int) -> dict[str, object]:
    with stores.copy("parked", parked) as url:
        server = scale.Server(url)
        try:
            with httpx.Client(base_url=server.base, timeout=60) as client:
                run_id = client.get("/api/runs", params={"status": "paused", "limit": 1}).json()["runs"][0]["run_id"]
                t0 = time.perf_counter()
                r = client.post(f"/api/runs/{run_id}/steps/gate/approve", json={"comment": "ok"})
                posted = time.perf_counter()
                assert r.status_code < 300, r.text
                while client.get(f"/api/runs/{run_id}").json()["run"]["status"] != "completed":
                    assert time.perf_counter() - t0 < 60, "the approved run did not complete"
                    time.sleep(0.002)
                done = time.perf_counter()
        finally:
            server.stop()
    phases = server.phases
    return {"backend": stores.backend, "parked": parked,
            **{k: round(phases[k] * 1000, 1) for k in ("recovery", "ready", "projector", "catch_up")},
            "approve_post_ms": round((posted - t0) * 1000, 1), "approve_done_ms": round((done - t0) * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], required=True)
    parser.add_argument("--parked", type=int, required=True)
    parser.add_argument("--goldens", default="")
    args = parser.parse_args()
    stores = scale.Stores(args.backend, CACHE, scale.record_templates)
    if args.goldens:
        own_goldens(stores, Path(args.goldens))
    print(json.dumps(measure(stores, args.parked)), flush=True)


if __name__ == "__main__":
    main()
