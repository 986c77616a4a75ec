"""Benchmark: the time-range index of a partition, B-tree vs BRIN on ``ts``.

    .venv/bin/python bench/bench_pg_ts_index.py --dsn "host=... user=... password=... dbname=..."

One day-partition-sized ``memory`` table (``--hosts`` hosts x one row per second for
``--hours``, time-ordered as the collectors write it), loaded server-side with
``generate_series``: each index kind is built on the same rows; reported are the index size,
the load time with the index in place, and the median time of a one-hour and a five-minute
range query across all hosts (``avg(used_percent)``), warm.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import psycopg

from system_info_collector.schema import MEASUREMENTS
from system_info_collector.sinks.postgres.ddl import create_table_sql

INDEXES = {
    "none (primary key only)": None,
    "B-tree (ts)": "CREATE INDEX ON bench_idx.memory (ts)",
    "BRIN (ts)": "CREATE INDEX ON bench_idx.memory USING brin (ts)",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--hours", type=int, default=6)
    args = ap.parse_args()
    rows = args.hosts * args.hours * 3600
    print(f"{rows:,} rows ({args.hosts} hosts x {args.hours} h at 1 s)")
    print("| index | index size | load s | 1 h range ms | 5 min range ms |")
    print("|---|---:|---:|---:|---:|")
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        for label, ddl in INDEXES.items():
            conn.execute("DROP SCHEMA IF EXISTS bench_idx CASCADE")
            conn.execute("CREATE SCHEMA bench_idx")
            conn.execute(create_table_sql("bench_idx", MEASUREMENTS["memory"]))
            if ddl:
                conn.execute(ddl)
            started = time.perf_counter()
            conn.execute(
                "INSERT INTO bench_idx.memory (ts, host, used_percent, total_bytes) "
                "SELECT timestamptz '2026-01-01' + s * interval '1 second', 'host-' || h, "
                "random() * 100, 8589934592 FROM generate_series(0, %s) s, "
                "generate_series(1, %s) h ORDER BY s",
                (args.hours * 3600 - 1, args.hosts),
            )
            load = time.perf_counter() - started
            conn.execute("VACUUM ANALYZE bench_idx.memory")
            size = conn.execute(
                "SELECT coalesce(sum(pg_relation_size(indexrelid)), 0) FROM pg_index "
                "WHERE indrelid = 'bench_idx.memory'::regclass AND NOT indisprimary"
            ).fetchone()
            timings = []
            for span in ("1 hour", "5 minutes"):
                start = "timestamptz '2026-01-01 02:00'"
                query = (
                    f"SELECT avg(used_percent) FROM bench_idx.memory WHERE ts >= {start} "
                    f"AND ts < {start} + interval '{span}'"
                )
                runs = []
                for _ in range(7):
                    t = time.perf_counter()
                    conn.execute(query).fetchone()
                    runs.append(time.perf_counter() - t)
                timings.append(statistics.median(runs[1:]) * 1000)
            kb = (size[0] if size else 0) / 1024
            print(
                f"| {label} | {kb:,.0f} KiB | {load:.1f} | {timings[0]:.1f} | {timings[1]:.2f} |",
                flush=True,
            )
        conn.execute("DROP SCHEMA IF EXISTS bench_idx CASCADE")


if __name__ == "__main__":
    main()
