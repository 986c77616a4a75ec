"""Range partitions by ts against a real server: ahead, on demand, retention, no stampede,
no lock wait for inserts, and `db migrate` of plain tables from schema version 1."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from system_info_collector.config import PostgresSettings, RetrySettings
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.schema import MEASUREMENTS
from system_info_collector.sinks.postgres import PostgresSink, ensure_schema, partitions
from system_info_collector.sinks.postgres.ddl import create_table_sql, create_ts_index_sql
from tests.helpers import clean_env, run_cli
from tests.integration.conftest import PgServer

pytestmark = pytest.mark.integration

Query = Callable[..., list[tuple[Any, ...]]]
DAY = 86400.0


def mem(ts: datetime, host: str = "h1") -> Record:
    return Record("memory", ts, host, {}, {f.name: 1 for f in MEASUREMENTS["memory"].fields})


def parts(query: Query, schema: str, table: str) -> list[str]:
    rows = query(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass ORDER BY 1",
        f'"{schema}"."{table}"',
    )
    return [r[0] for r in rows]


@pytest.fixture
def sink_for(tmp_path: Path) -> Iterator[Callable[..., PostgresSink]]:
    made: list[PostgresSink] = []

    def make(dsn: str, schema: str, **kw: Any) -> PostgresSink:
        settings = PostgresSettings(
            dsn=dsn,
            schema=schema,
            spool_dir=str(tmp_path / "spool"),
            connect_timeout=2.0,
            statement_timeout=2.0,
            **kw,
        )
        made.append(PostgresSink(settings, retry=RetrySettings(), metrics=Metrics()))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_tables_are_partitioned_by_day_with_partitions_ahead_and_on_demand(
    pg_up: PgServer, db_schema: str, query: Query, sink_for: Callable[..., PostgresSink]
) -> None:
    sink = sink_for(pg_up.dsn(), db_schema)
    assert all(r.ok for r in sink.check())
    kinds = dict(
        query(
            "SELECT relname, relkind::text FROM pg_class c JOIN pg_namespace n ON "
            "n.oid = c.relnamespace WHERE nspname = %s",
            db_schema,
        )
    )
    assert all(kinds[m] == "p" for m in MEASUREMENTS)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    expected = [f"memory_p{today + timedelta(days=d):%Y%m%d}" for d in range(3)]
    assert parts(query, db_schema, "memory")[:3] == expected  # today and two days ahead
    pk = query(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = "
        "%s::regclass AND contype = 'p'",
        f'"{db_schema}"."memory"',
    )
    assert pk == [("PRIMARY KEY (host, ts)",)]

    now = datetime.now(UTC).replace(microsecond=0)
    old = datetime(2024, 5, 1, 12, tzinfo=UTC)  # a replayed old sample: no partition yet
    sink.write([mem(now), mem(old), mem(old + timedelta(days=1))])
    assert {"memory_p20240501", "memory_p20240502"} <= set(parts(query, db_schema, "memory"))
    rows = query(f'SELECT tableoid::regclass::text, ts FROM "{db_schema}".memory ORDER BY ts')
    assert [r[1] for r in rows] == [old, old + timedelta(days=1), now]
    assert rows[0][0].endswith("memory_p20240501")
    assert not Path(sink.dead_letter_path).exists()  # created, not dead-lettered


def test_retention_drops_whole_expired_partitions_only(
    pg_up: PgServer, db_schema: str, query: Query, sink_for: Callable[..., PostgresSink]
) -> None:
    sink = sink_for(pg_up.dsn(), db_schema, retention=30 * DAY)
    now = datetime.now(UTC)
    sink.write([mem(now - timedelta(days=d)) for d in (45, 31, 29, 0)])
    assert len(query(f'SELECT 1 FROM "{db_schema}".memory')) == 4
    with psycopg.connect(pg_up.dsn(), autocommit=True) as conn:
        _, dropped = partitions.maintain(
            conn,
            db_schema,
            [MEASUREMENTS["memory"]],
            now=now,
            interval=DAY,
            retention=30 * DAY,
            statement_timeout=5.0,
        ) or ([], [])
    day = timedelta(days=1)
    assert sorted(dropped) == sorted(
        f"memory_p{(now - d * day):%Y%m%d}" for d in (45, 31)
    )  # whose upper bound is older than 30 days; day 29 is kept
    left = query(f'SELECT ts FROM "{db_schema}".memory ORDER BY ts')
    assert [r[0].date() for r in left] == [(now - 29 * day).date(), now.date()]


def test_creating_a_partition_never_waits_for_open_insert_transactions(
    pg_up: PgServer, db_schema: str, query: Query, sink_for: Callable[..., PostgresSink]
) -> None:
    sink = sink_for(pg_up.dsn(), db_schema)
    now = datetime.now(UTC)
    sink.write([mem(now)])
    with psycopg.connect(pg_up.dsn()) as writer:  # an insert transaction left open
        writer.execute(
            f'INSERT INTO "{db_schema}".memory (ts, host) VALUES (%s, %s)', (now, "other")
        )
        started = time.monotonic()
        with psycopg.connect(pg_up.dsn(), autocommit=True) as ddl:
            made = partitions.ensure_for(
                ddl, db_schema, MEASUREMENTS["memory"], [now + timedelta(days=10)], DAY, 5.0
            )
        assert made and time.monotonic() - started < 1.5  # ATTACH: no ACCESS EXCLUSIVE
        writer.rollback()


def test_a_thousand_collectors_starting_at_once_do_not_stampede(
    pg_up: PgServer, db_schema: str, query: Query
) -> None:
    """Twenty concurrent starts on an empty schema: one creates, the others find it made."""
    errors: list[BaseException] = []
    states: list[Any] = []
    barrier = threading.Barrier(20)

    def start() -> None:
        try:
            with psycopg.connect(pg_up.dsn(), autocommit=True) as conn:
                barrier.wait(10)
                states.append(ensure_schema(conn, db_schema, "off", partition_interval=DAY))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sum(1 for s in states if "created table" in s.summary) == 1
    assert len(parts(query, db_schema, "cpu")) == 3
    # a second wave finds everything there and takes no DDL lock at all
    with psycopg.connect(pg_up.dsn(), autocommit=True) as conn:
        state = ensure_schema(conn, db_schema, "off", partition_interval=DAY)
    assert "created" not in state.summary


def test_plain_tables_from_version_1_are_reported_and_migrated_keeping_every_row(
    pg_up: PgServer,
    db_schema: str,
    query: Query,
    sink_for: Callable[..., PostgresSink],
    events: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    with psycopg.connect(pg_up.dsn(), autocommit=True) as conn:  # what version 1 created
        conn.execute(f'CREATE SCHEMA "{db_schema}"')
        for m in MEASUREMENTS.values():
            conn.execute(create_table_sql(db_schema, m))
            conn.execute(create_ts_index_sql(db_schema, m.name))
        conn.execute(
            f'CREATE TABLE "{db_schema}".sic_schema_version (version integer PRIMARY '
            "KEY, applied_at timestamptz NOT NULL DEFAULT now(), collector_version "
            "text)"
        )
        conn.execute(f'INSERT INTO "{db_schema}".sic_schema_version (version) VALUES (1)')
    sink = sink_for(pg_up.dsn(), db_schema)
    t0 = datetime(2026, 1, 30, 23, 59, tzinfo=UTC)
    sink.write([mem(t0 + timedelta(minutes=i), host) for i in range(50) for host in "ab"])
    warned = [e for e in events if e.get("event") == "postgres_table_unpartitioned"]
    assert warned and warned[0]["level"] == "WARNING" and "memory" in warned[0]["tables"]
    before = query(f'SELECT * FROM "{db_schema}".memory ORDER BY host, ts')

    env = clean_env(SIC_DB_DSN=pg_up.dsn(), SIC_DB_SCHEMA=db_schema)
    done = run_cli("db", "migrate", env=env, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "memory (100 rows; the old table is kept as memory_unpartitioned)" in done.stdout
    assert "migrate: memory: 100 % (100 rows of 100 rows)" in done.stderr  # plain: not a TTY
    assert pg_up.password not in done.stdout + done.stderr
    assert query(f'SELECT * FROM "{db_schema}".memory ORDER BY host, ts') == before
    assert {"memory_p20260130", "memory_p20260131"} <= set(parts(query, db_schema, "memory"))
    kept = query(f'SELECT count(*) FROM "{db_schema}".memory_unpartitioned')
    assert kept == [(100,)]  # nothing deleted
    assert (2,) in query(f'SELECT version FROM "{db_schema}".sic_schema_version')

    sink.close()  # the live sink reconnects and writes into the partitioned table
    sink.write([mem(t0 + timedelta(minutes=60))])
    assert query(f'SELECT count(*) FROM "{db_schema}".memory') == [(101,)]
    again = run_cli("db", "migrate", env=env, timeout=60)
    assert again.returncode == 0 and "nothing to do" in again.stdout
