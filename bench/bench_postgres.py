"""Benchmark: PostgreSQL write paths next to a plain psycopg COPY (the ceiling).

    .venv/bin/python bench/bench_postgres.py --dsn "host=... user=... password=... dbname=..."
    .venv/bin/python bench/bench_postgres.py          # starts a testcontainers PostgreSQL
                                                      # (image SIC_TEST_POSTGRES_IMAGE)

Measures, on the same generated rows (the ``cpu`` table, 14 columns):

* ``raw COPY``: psycopg ``COPY … FROM STDIN (FORMAT csv)`` of the CSV bytes straight into an
  empty table with its primary key -- the ceiling;
* ``executemany`` and ``INSERT … ON CONFLICT`` (executemany) for reference;
* ``replay``: :func:`system_info_collector.replay.replay` of the same rows as CSV files
  (``COPY`` into the table, or into a staging table created in the transaction +
  ``INSERT … SELECT … ON CONFLICT DO NOTHING``);
* ``live sink``: :meth:`PostgresSink.write` of 5000-record batches (``SET LOCAL`` and one
  ``INSERT … SELECT FROM unnest(…)`` per table, sent as one query);
* ``write-ahead``: what the spool costs per tick (encode + append in the sampling thread, the
  fsync in the sink's thread), for a real tick of this host's records;
* ``per-tick cycle``: CPU of one 1 s tick through the spool and the sink as the worker runs it
  (append, read back, write, commit), warm and with 0.3 s pauses between ticks (cold caches).

For the collector's CPU % and RSS with both sinks on, run ``bench/run.py --sinks csv,postgres
--env SIC_DB_DSN=...`` (it puts the psutil floor side by side).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import psycopg

from system_info_collector.config import PostgresSettings, RetrySettings, load_settings
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.schema import MEASUREMENTS
from system_info_collector.sinks.csv import encode_rows, header_bytes
from system_info_collector.sinks.postgres import (
    PostgresSink,
    connect,
    ensure_schema,
)
from system_info_collector.spool import Spool

CPU = MEASUREMENTS["cpu"]
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def records(n: int, host: str = "bench") -> list[Record]:
    fields = {f.name: 12.345 for f in CPU.fields}
    return [
        Record("cpu", T0 + timedelta(seconds=i // 4), host, {"cpu": f"cpu{i % 4}"}, fields)
        for i in range(n)
    ]


def fresh_schema(conn: psycopg.Connection, name: str) -> None:
    conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    ensure_schema(conn, name, "off")


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>10,.0f} rows/s  ({seconds:.2f} s)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", default=os.environ.get("SIC_BENCH_DSN"))
    ap.add_argument("--rows", type=int, default=400_000)
    args = ap.parse_args()
    container = None
    dsn = args.dsn
    if not dsn:
        os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
        os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
        from testcontainers.community.postgres import PostgresContainer

        image = os.environ.get("SIC_TEST_POSTGRES_IMAGE", "postgres:16-alpine")
        container = PostgresContainer(image, username="b", password="b", dbname="b", driver=None)
        container.start()
        host, port = container.get_container_host_ip(), container.get_exposed_port(5432)
        dsn = f"host={host} port={port} user=b password=b dbname=b"
    try:
        run(dsn, args.rows)
    finally:
        if container is not None:
            container.stop()


def run(dsn: str, n: int) -> None:
    settings = PostgresSettings(dsn=dsn, schema="bench", statement_timeout=600.0)
    rows = records(n)
    csv_body = encode_rows(CPU.row(r) for r in rows)
    print(f"{n:,} cpu rows ({len(csv_body) / n:.0f} CSV bytes/row)")
    results: dict[str, float] = {}

    with connect(settings) as conn:
        # ceiling: COPY CSV straight into the table (primary key index included)
        fresh_schema(conn, "bench")
        started = time.perf_counter()
        with (
            conn.transaction(),
            conn.cursor().copy(
                "COPY bench.cpu FROM STDIN WITH (FORMAT csv, FORCE_NOT_NULL (host, cpu))"
            ) as copy,
        ):
            copy.write(csv_body)
        results["raw COPY"] = time.perf_counter() - started

        m = min(n, 100_000)
        cols = ", ".join(f'"{c}"' for c in CPU.columns)
        marks = ", ".join(["%s"] * len(CPU.columns))
        values = [CPU.row(r) for r in rows[:m]]
        for label, suffix in (
            ("executemany", ""),
            ("INSERT ON CONFLICT", " ON CONFLICT DO NOTHING"),
        ):
            fresh_schema(conn, "bench")
            started = time.perf_counter()
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(f"INSERT INTO bench.cpu ({cols}) VALUES ({marks}){suffix}", values)
            results[label] = (time.perf_counter() - started) * n / m

        # replay: the same rows as CSV files, through the real command's code
        fresh_schema(conn, "bench")
    with tempfile.TemporaryDirectory() as tmp:
        per_file = 100_000
        for i in range(0, n, per_file):
            body = encode_rows(CPU.row(r) for r in rows[i : i + per_file])
            Path(tmp, f"cpu.{i:09d}.csv").write_bytes(header_bytes("cpu") + body)
        from system_info_collector.replay import replay

        started = time.perf_counter()
        sink_out = io.StringIO()
        code = replay(settings, RetrySettings(), [tmp], out=sink_out, progress=io.StringIO())
        results["replay"] = time.perf_counter() - started
        assert code == 0, sink_out.getvalue()
        started = time.perf_counter()
        replay(settings, RetrySettings(), [tmp], out=io.StringIO(), progress=io.StringIO())
        results["replay again (all present)"] = time.perf_counter() - started

    with connect(settings) as conn:
        fresh_schema(conn, "bench")
    sink = PostgresSink(settings, retry=RetrySettings(), metrics=Metrics())
    started = time.perf_counter()
    for i in range(0, n, 5000):
        sink.write(rows[i : i + 5000])
    results["live sink (5000-row batches)"] = time.perf_counter() - started
    sink.close()

    ceiling = results["raw COPY"]
    print(f"{'path':<30} {'rate':>28}   vs raw COPY")
    for label, seconds in results.items():
        print(f"{label:<30} {rate(n, seconds)}   {ceiling / seconds:6.1%}")
    write_ahead_cost()
    tick_cycle_cost(settings)
    with connect(settings) as conn:
        conn.execute("DROP SCHEMA IF EXISTS bench CASCADE")


def real_tick() -> list[Record]:
    from system_info_collector.agent import resolve_hostname
    from system_info_collector.providers import build_providers

    settings = load_settings({"SIC_HTTP_LISTEN": ""})
    providers = build_providers(settings)
    for p in providers:
        p.prime()
    time.sleep(0.2)
    host = resolve_hostname(settings)
    ts = datetime.now(UTC)
    tick = [Record(p.name, ts, host, s.tags, s.fields) for p in providers for s in p.collect()]
    for p in providers:
        p.close()
    return tick


def tick_cycle_cost(settings: PostgresSettings) -> None:
    """The sink thread's (and the append's) CPU per tick, as the SinkWorker runs them."""
    tick = real_tick()
    sink = PostgresSink(settings, retry=RetrySettings(), metrics=Metrics())
    with tempfile.TemporaryDirectory(dir=os.environ.get("SIC_BENCH_SPOOL_DIR")) as tmp:
        spool = Spool(tmp, max_size=1 << 30, metrics=Metrics())
        spool.open()
        for label, n, pause in (("warm", 300, 0.0), ("cold", 40, 0.3)):
            cpu = 0.0
            for i in range(n):
                time.sleep(pause)
                shifted = [r._replace(ts=r.ts + timedelta(seconds=i)) for r in tick]
                t = time.thread_time()
                spool.append(shifted)
                entries = spool.peek(5000)
                sink.write([r for e in entries for r in e.records])
                spool.commit(entries)
                cpu += time.thread_time() - t
            print(
                f"per-tick cycle ({len(tick)} records, {label}): CPU {cpu / n * 1e6:.0f} µs "
                f"= {cpu / n * 100:.3f} % of a core at 1 s"
            )
        spool.close()
    sink.close()


def write_ahead_cost() -> None:
    """Spool append (sampling thread) and fsync (sink thread) for one real tick."""
    from system_info_collector.agent import resolve_hostname
    from system_info_collector.providers import build_providers

    settings = load_settings({"SIC_HTTP_LISTEN": ""})
    providers = build_providers(settings)
    for p in providers:
        p.prime()
    time.sleep(0.2)
    host = resolve_hostname(settings)
    ts = datetime.now(UTC)
    tick = [Record(p.name, ts, host, s.tags, s.fields) for p in providers for s in p.collect()]
    with tempfile.TemporaryDirectory(dir=os.environ.get("SIC_BENCH_SPOOL_DIR")) as tmp:
        spool = Spool(tmp, max_size=1 << 30, metrics=Metrics())
        spool.open()
        appends, syncs = [], []
        cpu0 = time.process_time()
        for _ in range(1000):
            t = time.perf_counter()
            spool.append(tick)
            appends.append(time.perf_counter() - t)
            t = time.perf_counter()
            spool.sync()
            syncs.append(time.perf_counter() - t)
        cpu = (time.process_time() - cpu0) / 1000
        spool.close()
    print(
        f"write-ahead per tick ({len(tick)} records): append median "
        f"{statistics.median(appends) * 1e6:.0f} µs (sampling thread), fsync median "
        f"{statistics.median(syncs) * 1e6:.0f} µs wall (sink thread), CPU "
        f"{cpu * 1e6:.0f} µs/tick = {cpu * 100:.3f} % of a core at 1 s"
    )
    for p in providers:
        p.close()


if __name__ == "__main__":
    main()
