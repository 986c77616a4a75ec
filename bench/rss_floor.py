"""The RSS floor of the chosen libraries, next to the running collector, in one run.

    .venv/bin/python bench/rss_floor.py [--dsn "host=… dbname=…"] [--seconds 20] [--repeat 3]

Issue 12 asks for RSS ≤ 40 MB with the CSV and PostgreSQL sinks. This prints what a fresh
interpreter weighs (VmRSS from /proc/self/status, the median of ``--repeat`` interpreters)
after importing nothing, each runtime library the collector chose alone, ``asyncio`` (which
both psycopg and loguru import at the top of their packages, and which imports ``ssl``), all
of them together, and all of them plus the collector's own modules that a CSV + PostgreSQL
run loads -- then, in the same run, the steady VmRSS of ``system-info-collector run`` with
the CSV sink (no ``SIC_DB_DSN``) and with both sinks (1 s, this host's /proc, ``/metrics``
on, product defaults otherwise) after ``--seconds``. The PostgreSQL server is ``--dsn`` or a
throwaway one (tests/integration/conftest.py's ``start_server``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rss_smaps import Proc  # bench/rss_smaps.py
from run import free_port, status_kb  # bench/run.py
from scale import collector_env, start_postgres, stop, stop_postgres

EXE = Path(sys.executable).with_name("system-info-collector")
LIBRARIES = ["psycopg", "loguru", "environs", "prometheus_client"]
OURS = [  # what `run` with the CSV and PostgreSQL sinks and /metrics imports of ours
    "system_info_collector.cli",
    "system_info_collector.agent",
    "system_info_collector.sinks.csv",
    "system_info_collector.sinks.postgres.sink",
    "system_info_collector.http",
]
PROBE = """
import sys
for name in sys.argv[1:]:
    __import__(name)
with open("/proc/self/status") as f:
    print(next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")))
"""


def import_rss_mb(modules: list[str], repeat: int) -> float:
    runs = [
        int(subprocess.check_output([sys.executable, "-c", PROBE, *modules], text=True)) / 1024
        for _ in range(repeat)
    ]
    return statistics.median(runs)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dsn")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows: list[tuple[str, float]] = [("bare interpreter", import_rss_mb([], args.repeat))]
    for name in LIBRARIES:
        rows.append((f"`import {name}` alone", import_rss_mb([name], args.repeat)))
    rows.append(("`import asyncio` alone", import_rss_mb(["asyncio"], args.repeat)))
    rows.append(("the four libraries together", import_rss_mb(LIBRARIES, args.repeat)))
    rows.append(
        (
            "the four + the collector's modules for CSV + PostgreSQL",
            import_rss_mb(LIBRARIES + OURS, args.repeat),
        )
    )
    server, dsn = start_postgres(args.dsn)
    base = tempfile.mkdtemp(prefix="sic-rss-floor-")
    procs: list[Proc] = []
    try:
        for i, sinks in enumerate(["csv", "csv,postgres"]):
            env = collector_env(
                SIC_INTERVAL="1s",
                SIC_SINKS=sinks,
                SIC_CSV_DIR=f"{base}/csv{i}",
                SIC_HTTP_LISTEN=f"127.0.0.1:{free_port()}",
                SIC_DB_SCHEMA=f"bench_rss_floor{i}",
                # a DSN is checked with psycopg at start even when no sink uses it
                **({"SIC_DB_DSN": dsn} if "postgres" in sinks else {}),
            )
            popen = subprocess.Popen([str(EXE), "run"], env=env, stdout=subprocess.DEVNULL)
            procs.append(Proc(f"`run`, sinks {sinks} (steady, after {args.seconds:g} s)", popen))
        time.sleep(args.seconds)
        for p in procs:
            if p.popen.poll() is not None:
                raise SystemExit(f"{p.name}: the collector exited with {p.popen.returncode}")
            rows.append((p.name, status_kb(p.popen.pid, "VmRSS") / 1024))
    finally:
        stop(procs)  # type: ignore[arg-type]
        stop_postgres(server)
    bare = rows[0][1]
    print("| process | VmRSS MB | over a bare interpreter MB |")
    print("|---|---:|---:|")
    for name, mb in rows:
        print(f"| {name} | {mb:.1f} | {mb - bare:+.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
