"""``interval_ms`` (schema version 3) on a real server: tables created by the release before
it (``tests/fixtures/pg-v1/schema.sql``, the DDL that release rendered) get the column by an
idempotent migration; its CSV files (``tests/fixtures/csv-v1/``) still replay."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from system_info_collector.config import PostgresSettings, RetrySettings
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.schema import MEASUREMENTS
from system_info_collector.sinks.postgres import PostgresSink
from system_info_collector.sinks.postgres.ddl import SCHEMA_VERSION
from tests.helpers import clean_env, run_cli
from tests.integration.conftest import PgServer

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent.parent / "fixtures"
Query = Callable[..., list[tuple[Any, ...]]]


def create_v1(pg: PgServer, schema: str) -> None:
    ddl = (FIXTURES / "pg-v1" / "schema.sql").read_text().replace("{schema}", schema)
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(ddl)
        conn.execute(
            f'INSERT INTO "{schema}".memory (ts, host, total_bytes) '
            "VALUES ('2024-01-01T00:00:00Z', 'old-host', 1)"
        )


def sink(pg: PgServer, schema: str, tmp_path: Path) -> PostgresSink:
    settings = PostgresSettings(
        dsn=pg.dsn(),
        schema=schema,
        spool_dir=str(tmp_path / "spool"),
        connect_timeout=2.0,
        statement_timeout=5.0,
    )
    return PostgresSink(settings, retry=RetrySettings(), metrics=Metrics())


def test_v1_tables_get_interval_ms_once_and_keep_their_rows(
    pg_up: PgServer, db_schema: str, query: Query, tmp_path: Path
) -> None:
    create_v1(pg_up, db_schema)
    first = sink(pg_up, db_schema, tmp_path)
    checked = first.check()
    assert all(r.ok for r in checked), checked
    assert f"added interval_ms to {db_schema}.memory" in checked[0].detail
    fields = {f.name: 1 for f in MEASUREMENTS["memory"].fields}
    ts = datetime(2024, 1, 1, 0, 0, 5, tzinfo=UTC)
    first.write([Record("memory", ts, "new-host", {}, fields, interval_ms=250)])
    first.close()
    again = sink(pg_up, db_schema, tmp_path)  # a second start: nothing left to migrate
    checked = again.check()
    assert all(r.ok for r in checked) and "interval_ms" not in checked[0].detail, checked
    again.close()
    for m in MEASUREMENTS.values():
        cols = query(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            db_schema,
            m.name,
        )
        assert [c for c, _ in cols] == list(m.columns)  # same order as a new table's
        assert dict(cols)["interval_ms"] == "integer"
    rows = query(f'SELECT host, interval_ms FROM "{db_schema}".memory ORDER BY ts')
    assert rows == [("old-host", None), ("new-host", 250)]
    versions = query(f'SELECT version FROM "{db_schema}".sic_schema_version ORDER BY version')
    assert versions == [(1,), (SCHEMA_VERSION,)]


def test_csv_files_of_the_previous_release_replay_with_unknown_interval(
    pg_up: PgServer, db_schema: str, query: Query
) -> None:
    files = sorted((FIXTURES / "csv-v1").glob("*.csv"))
    env = clean_env(SIC_DB_DSN=pg_up.dsn(), SIC_DB_SCHEMA=db_schema)
    result = run_cli("replay", *map(str, files), env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    for path in files:
        lines = path.read_text().splitlines()
        rows = query(f'SELECT host, interval_ms FROM "{db_schema}"."{path.stem}"')
        assert len(rows) == len(lines) - 1
        assert {r for r in rows} == {("v1-host", None)}
