"""The approvals drain of ``bench/scale.py``, this tree against another, in interleaved rounds.

    python bench/approvals_ab.py --old /work/main --backend both --rounds 3 [--statements]

Each round runs ``measure_approvals`` (500 of 1,000 parked runs approved over
HTTP by 8 client threads; once with one SSE client, once with none) with this
tree's server and with ``--old``'s (its own ``bench/scale.py``, importing its
own baton), who goes first swapped each round, on copies of the cached stores
of ``bench/scale.py`` (made there once: wait for its READY). Per drain: runs/s,
the server's CPU per approved run split into user and system time, and on
PostgreSQL the transactions per run (``pg_stat_database`` of the copy).
``--statements``: one more drain per tree without a stream client on
PostgreSQL with every statement of the copy logged (``log_statement``), counted
per approved run by kind (the server's log must be readable at ``--pg-log``).
One JSON line per drain; medians per tree at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r'''
import json, os, re, sys, time, collections
from contextlib import contextmanager
from pathlib import Path
tree, backend, watched, statements, pg_log = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4] == "1", sys.argv[5]
sys.path[:0] = [tree, tree + "/bench"]
os.chdir(tree)
import scale
seen = {}
_copy = scale.Stores.copy
@contextmanager
def copy(self, kind, n):
    with _copy(self, kind, n) as url:
        seen["url"] = url
        if statements:
            scale.pg_admin(f'ALTER DATABASE "{scale.pg_name(url)}" SET log_statement = \'all\'')
        yield url
scale.Stores.copy = copy
def pg_counts():
    import psycopg
    name = scale.pg_name(seen["url"])
    time.sleep(2.0)  # the server's backends report their counts once idle
    with psycopg.connect(**{**scale.PG_ADMIN, "dbname": name}, autocommit=True) as conn:
        return conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (name,)).fetchone()[0]
def pg_backends_cpu():
    # the CPU of this copy's PostgreSQL backends (their parse, plan, execute), from /proc
    name, total = scale.pg_name(seen["url"]).encode(), 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            # "postgres: 15/main: root <database> [local] idle" (Debian sets the cluster's name)
            argv = (proc / "cmdline").read_bytes().split(b" ")
            if argv[0] == b"postgres:" and name in argv[1:5]:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            continue
    return total / os.sysconf("SC_CLK_TCK")
marks = []
def cpu(self):
    fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    mark = {"user": int(fields[11]) / tick, "sys": int(fields[12]) / tick}
    if backend == "postgresql":
        mark["xact"] = pg_counts()
        mark["pg_cpu"] = pg_backends_cpu()  # after pg_counts' wait: the projector's last batch in
        if statements:
            mark["log"] = Path(pg_log).stat().st_size
    marks.append(mark)
    return mark["user"] + mark["sys"]
scale.Server.cpu = cpu
stores = scale.Stores(backend, Path(os.environ.get("CACHE", "/tmp/baton-bench-scale")), scale.record_templates)
r = scale.measure_approvals(stores, 1000, scale.APPROVALS, watched=watched)
a, b = marks[0], marks[-1]
n = r["runs"]
out = {"runs_per_s": r["runs_per_s"], "cpu_ms": round((b["user"] + b["sys"] - a["user"] - a["sys"]) / n * 1000, 2),
       "user_ms": round((b["user"] - a["user"]) / n * 1000, 2), "sys_ms": round((b["sys"] - a["sys"]) / n * 1000, 2)}
if "pg_cpu" in a:
    out["pg_ms"] = round((b["pg_cpu"] - a["pg_cpu"]) / n * 1000, 2)
if "xact" in a:
    out["xact_per_run"] = round((b["xact"] - a["xact"]) / n, 2)
if statements:
    with open(pg_log, "rb") as f:
        f.seek(a["log"])
        text = f.read(b["log"] - a["log"]).decode(errors="replace")
    kinds = collections.Counter()
    for m in re.finditer(r"LOG:  (?:statement|execute [^:]*): (.*)", text):
        kinds[re.sub(r"'[^']*'", "'?'", re.sub(r"\s+", " ", m.group(1)))[:60]] += 1
    out["statements_per_run"] = round(sum(kinds.values()) / n, 2)
    out["by_kind"] = {k: round(v / n, 2) for k, v in kinds.most_common()}
print(json.dumps(out))
'''


def drain(tree: str, backend: str, watched: bool, statements: bool, pg_log: str) -> dict[str, object]:
    python = str(Path(tree) / ".venv" / "bin" / "python")
    if not Path(python).exists():
        python = sys.executable
    done = subprocess.run([python, "-c", CHILD, tree, backend, "1" if watched else "0", "1" if statements else "0",
                           pg_log], capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise RuntimeError(f"the drain with {tree} failed: {done.stderr[-2000:]}")
    result: dict[str, object] = json.loads(lines[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="the other tree (its own venv, if it has one, runs its bench)")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--statements", action="store_true")
    parser.add_argument("--pg-log", default="/var/log/postgresql/postgresql-15-main.log")
    args = parser.parse_args()
    trees = {"this": str(HERE.parent), "old": str(Path(args.old).resolve())}
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results: dict[tuple[str, str, bool], list[dict[str, object]]] = {}
    for backend in backends:
        for round_ in range(args.rounds):
            order = ["this", "old"] if round_ % 2 == 0 else ["old", "this"]
            for side in order:
                for watched in (True, False):
                    line = {"backend": backend, "tree": side, "stream_client": watched,
                            **drain(trees[side], backend, watched, False, args.pg_log),
                            "loadavg_1m": round(os.getloadavg()[0], 2), "at": time.strftime("%H:%M:%S")}
                    results.setdefault((backend, side, watched), []).append(line)
                    print(json.dumps(line), flush=True)
        if args.statements and backend == "postgresql":
            for side in ("this", "old"):
                print(json.dumps({"backend": backend, "tree": side, "stream_client": False, "logged": True,
                                  **drain(trees[side], backend, False, True, args.pg_log)}), flush=True)
    for (backend, side, watched), lines in sorted(results.items()):
        def med(key: str, lines: list[dict[str, object]] = lines) -> float | None:
            values = [float(str(x[key])) for x in lines if key in x]
            return round(statistics.median(values), 2) if values else None

        print(json.dumps({"median": True, "backend": backend, "tree": side, "stream_client": watched,
                          "rounds": len(lines), "runs_per_s": med("runs_per_s"), "cpu_ms": med("cpu_ms"),
                          "user_ms": med("user_ms"), "sys_ms": med("sys_ms"), "pg_ms": med("pg_ms"), "xact_per_run": med("xact_per_run")}),
              flush=True)


if __name__ == "__main__":
    main()
