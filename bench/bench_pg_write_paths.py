"""Benchmark: three PgBouncer-safe ways to write one batch, on the same records.

    .venv/bin/python bench/bench_pg_write_paths.py --dsn "host=... user=... password=... dbname=..."

Every path is one simple query (one implicit transaction, ``SET LOCAL statement_timeout``, no
session state, no prepared statement), idempotent through ``ON CONFLICT DO NOTHING``:

* ``unnest``: ``INSERT … SELECT … FROM unnest('{…}'::type[], …)`` -- the sink's real code
  (:func:`~system_info_collector.sinks.postgres.insert_script`);
* ``staging``: ``CREATE TEMP TABLE … ON COMMIT DROP`` + ``COPY`` into it + ``INSERT … SELECT``
  (what the earlier per-connection staging table becomes without session state);
* ``values``: a multi-row ``INSERT … VALUES (…), (…) ON CONFLICT DO NOTHING``.

Two batch shapes of a 16-CPU, 4-disk, 4-mount node (26 rows per tick): one tick per batch (a
fleet node in steady state) and 200 ticks per batch (catch-up after an outage). Reports the
median and p99 latency of a batch, rows/s and the client CPU per row.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import psycopg

from system_info_collector.model import Record
from system_info_collector.schema import MEASUREMENTS
from system_info_collector.sinks import postgres as pg

T0 = datetime(2024, 1, 1, tzinfo=UTC)
Batch = dict[str, list[Record]]


def tick(i: int, host: str = "bench") -> list[Record]:
    ts = T0 + timedelta(seconds=i)
    cpu = {f.name: 12.345 for f in MEASUREMENTS["cpu"].fields}
    out = [
        Record("cpu", ts, host, {"cpu": c}, cpu)
        for c in ["cpu-total", *(f"cpu{k}" for k in range(16))]
    ]
    memory = {f.name: 123456789 for f in MEASUREMENTS["memory"].fields}
    out.append(Record("memory", ts, host, {}, memory))
    for k in range(4):
        tags = {"mountpoint": f"/m{k}", "device": f"sd{k}", "fstype": "ext4"}
        out.append(
            Record("disk", ts, host, tags, {f.name: 1000 for f in MEASUREMENTS["disk"].fields})
        )
        out.append(
            Record(
                "diskio",
                ts,
                host,
                {"device": f"sd{k}"},
                {f.name: 5 for f in MEASUREMENTS["diskio"].fields},
            )
        )
    return out


def groups(batch: Sequence[Record]) -> Batch:
    out: Batch = {}
    for r in batch:
        out.setdefault(r.measurement, []).append(r)
    return out


def literal(v: object) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, datetime):
        v = v.isoformat()
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    return repr(v)


def copy_text(v: object) -> str:
    if v is None:
        return "\\N"
    if isinstance(v, datetime):
        return v.isoformat()
    text = repr(v) if isinstance(v, float) else str(v)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


ENCODERS = {n: pg.UnnestEncoder(m) for n, m in MEASUREMENTS.items()}


def unnest(conn: psycopg.Connection, schema: str, g: Batch) -> None:
    pg.run_script(conn, pg.insert_script(schema, g, ENCODERS, 10.0))


def values(conn: psycopg.Connection, schema: str, g: Batch) -> None:
    parts = [pg.local_settings(10.0)]
    for name, records in g.items():
        m = MEASUREMENTS[name]
        rows = ",".join("(" + ",".join(literal(v) for v in m.row(r)) + ")" for r in records)
        cols = ", ".join(f'"{c}"' for c in m.columns)
        key = ", ".join(f'"{c}"' for c in m.primary_key)
        parts.append(
            f'INSERT INTO "{schema}"."{name}" ({cols}) VALUES {rows} ON CONFLICT ({key}) DO NOTHING'
        )
    pg.run_script(conn, "; ".join(parts).encode())


def staging(conn: psycopg.Connection, schema: str, g: Batch) -> None:
    parts, data = [pg.local_settings(10.0)], []
    for name, records in g.items():
        m = MEASUREMENTS[name]
        stage = f"sic_stage_{name}"
        parts += [
            f'CREATE TEMP TABLE {stage} (LIKE "{schema}"."{name}" INCLUDING DEFAULTS) '
            "ON COMMIT DROP",
            f"COPY {stage} FROM STDIN",
            pg.insert_select_sql(schema, m, stage),
        ]
        data.append("".join("\t".join(copy_text(v) for v in m.row(r)) + "\n" for r in records))
    # one COPY per statement group: run_script feeds the same data to every COPY, so one
    # query per table here (still one transaction per table; the sink's path is one in all)
    for i in range(len(g)):
        query = [parts[0], *parts[1 + 3 * i : 4 + 3 * i]]
        pg.run_script(conn, "; ".join(query).encode(), data[i].encode())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--ticks", type=int, default=600)
    args = ap.parse_args()
    paths: dict[str, Callable[[psycopg.Connection, str, Batch], None]] = {
        "INSERT … SELECT FROM unnest(arrays) (the sink)": unnest,
        "temp staging table in the transaction + COPY": staging,
        "multi-row INSERT … VALUES": values,
    }
    print("| path | batch | median ms | p99 ms | rows/s | client CPU µs/row |")
    print("|---|---|---:|---:|---:|---:|")
    with psycopg.connect(args.dsn, autocommit=True, prepare_threshold=None) as conn:
        for label, path in paths.items():
            for shape, per_batch in (("1 tick (26 rows)", 1), ("200 ticks (5200 rows)", 200)):
                conn.execute("DROP SCHEMA IF EXISTS bench_paths CASCADE")
                pg.ensure_schema(conn, "bench_paths", "off")
                batches = max(3, args.ticks // per_batch)
                latencies, n = [], 0
                cpu0, wall0 = time.process_time(), time.perf_counter()
                for b in range(batches):
                    batch = [r for i in range(per_batch) for r in tick(b * per_batch + i)]
                    n += len(batch)
                    started = time.perf_counter()
                    path(conn, "bench_paths", groups(batch))
                    latencies.append(time.perf_counter() - started)
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                stored = sum(
                    (conn.execute(f'SELECT count(*) FROM bench_paths."{m}"').fetchone() or (0,))[0]
                    for m in MEASUREMENTS
                )
                assert stored == n, (label, stored, n)
                p99 = sorted(latencies)[max(0, int(len(latencies) * 0.99) - 1)]
                median = statistics.median(latencies)
                print(
                    f"| {label} | {shape} | {median * 1000:.2f} | {p99 * 1000:.2f} | "
                    f"{n / wall:,.0f} | {cpu / n * 1e6:.1f} |",
                    flush=True,
                )
        conn.execute("DROP SCHEMA IF EXISTS bench_paths CASCADE")


if __name__ == "__main__":
    main()
