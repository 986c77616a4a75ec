"""The PostgreSQL sink against a real server: schema, idempotent writes, bad rows, bad config."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from system_info_collector.config import PostgresSettings, RetrySettings
from system_info_collector.errors import TransientSinkError
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.schema import MEASUREMENTS
from system_info_collector.sinks.postgres import PostgresSink
from tests.helpers import clean_env, run_cli
from tests.integration.conftest import PgServer
from tests.integration.faultproxy import FaultProxy

pytestmark = pytest.mark.integration

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
Query = Callable[..., list[tuple[Any, ...]]]


def cpu(i: int, cpu_name: str = "cpu-total", host: str = "h1") -> Record:
    fields: dict[str, float] = {f.name: 1.5 for f in MEASUREMENTS["cpu"].fields}
    return Record("cpu", T0 + timedelta(seconds=i), host, {"cpu": cpu_name, "env": "test"}, fields)


def mem(i: int, total: int = 8 << 30) -> Record:
    fields: dict[str, float | int] = {f.name: 1 for f in MEASUREMENTS["memory"].fields}
    fields["total_bytes"] = total
    fields["used_percent"] = 12.5
    return Record("memory", T0 + timedelta(seconds=i), "h1", {}, fields)


def disk(i: int) -> Record:
    fields: dict[str, float | int] = {f.name: 2 for f in MEASUREMENTS["disk"].fields}
    tags = {"mountpoint": "/", "device": "vda1", "fstype": "ext4"}
    return Record("disk", T0 + timedelta(seconds=i), "h1", tags, fields)


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    handler = logger.add(
        lambda m: seen.append(
            {**m.record["extra"], "level": m.record["level"].name, "msg": m.record["message"]}
        ),
        level="DEBUG",
    )
    yield seen
    logger.remove(handler)


@pytest.fixture
def make_sink(tmp_path: Path) -> Iterator[Callable[..., tuple[PostgresSink, Metrics]]]:
    made: list[PostgresSink] = []

    def make(dsn: str, schema: str, **kw: Any) -> tuple[PostgresSink, Metrics]:
        metrics = Metrics()
        settings = PostgresSettings(
            dsn=dsn, schema=schema, spool_dir=str(tmp_path / "spool"),
            connect_timeout=2.0, statement_timeout=1.0, **kw,
        )  # fmt: skip
        made.append(PostgresSink(settings, retry=RetrySettings(), metrics=metrics))
        return made[-1], metrics

    yield make
    for sink in made:
        sink.close()


MakeSink = Callable[..., tuple[PostgresSink, Metrics]]


def count(query: Query, schema: str, table: str) -> int:
    return int(query(f'SELECT count(*) FROM "{schema}"."{table}"')[0][0])


def test_schema_matches_the_one_definition_and_is_created_idempotently(
    pg_up: PgServer, db_schema: str, query: Query, make_sink: MakeSink
) -> None:
    sink, _ = make_sink(pg_up.dsn(), db_schema)
    first = sink.check()
    second = sink.check()  # again: nothing to create, still ok
    assert all(r.ok for r in first + second), first + second
    assert "created table" in first[0].detail and "created" not in second[0].detail
    for m in MEASUREMENTS.values():
        cols = query(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            db_schema, m.name,
        )  # fmt: skip
        assert [c for c, _ in cols] == list(m.columns)  # the CSV columns, in order
        assert dict(cols)["tags"] == "jsonb"
        assert dict(cols)["ts"] == "timestamp with time zone"
        pk = query(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary "
            "ORDER BY array_position(i.indkey, a.attnum)",
            f'"{db_schema}"."{m.name}"',
        )  # fmt: skip
        assert tuple(r[0] for r in pk) == m.primary_key
    assert query(f'SELECT version FROM "{db_schema}".sic_schema_version') == [(1,)]


def test_writes_are_idempotent_and_application_name_is_set(
    pg_up: PgServer, db_schema: str, query: Query, make_sink: MakeSink
) -> None:
    sink, _ = make_sink(pg_up.dsn(), db_schema)
    batch = [cpu(i, c) for i in range(50) for c in ("cpu-total", "cpu0")] + [
        mem(i) for i in range(50)
    ]
    sink.write(batch)
    names = query(
        "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
    )
    assert ("system-info-collector",) in names
    sink.write(batch)  # a retry of the same batch
    sink.write(batch[10:60])  # an overlapping replay
    assert count(query, db_schema, "cpu") == 100
    assert count(query, db_schema, "memory") == 50
    row = query(f'SELECT host, cpu, ts, tags, user_percent FROM "{db_schema}".cpu '
                "ORDER BY ts, cpu LIMIT 1")[0]  # fmt: skip
    assert row == ("h1", "cpu-total", T0, {"env": "test"}, 1.5)
    sink.close()


def test_rejected_rows_are_bisected_out_to_the_dead_letter_file(
    pg_up: PgServer,
    db_schema: str,
    query: Query,
    make_sink: MakeSink,
    events: list[dict[str, Any]],
) -> None:
    sink, metrics = make_sink(pg_up.dsn(), db_schema)
    batch = [mem(i) for i in range(16)] + [disk(i) for i in range(4)]
    batch[5] = mem(5, total=2**70)  # bigint out of range: the server rejects this row only
    batch[11] = mem(11, total=2**65)
    sink.write(batch)
    assert count(query, db_schema, "memory") == 14
    assert count(query, db_schema, "disk") == 4
    lines = [json.loads(x) for x in Path(sink.dead_letter_path).read_text().splitlines()]
    assert sorted(x["ts"] for x in lines) == [(T0 + timedelta(seconds=s)).isoformat()
                                               for s in (5, 11)]  # fmt: skip
    assert all(x["error"].startswith("22003") for x in lines), lines
    assert metrics.registry.get_sample_value("sic_dead_lettered_rows_total") == 2
    assert [e for e in events if e.get("event") == "postgres_row_rejected"]


def test_bad_password_is_a_config_error_that_keeps_probing_and_never_leaks(
    pg_up: PgServer,
    db_schema: str,
    query: Query,
    make_sink: MakeSink,
    tmp_path: Path,
    events: list[dict[str, Any]],
) -> None:
    secret = tmp_path / "password"
    secret.write_text("wrong-password-XYZ\n")
    dsn = pg_up.dsn().replace(f"password={pg_up.password}", "")
    sink, _ = make_sink(dsn, db_schema, password_file=str(secret))
    check = sink.check()
    assert not check[0].ok and "password authentication failed" in check[0].detail
    with pytest.raises(TransientSinkError) as err:
        sink.write([mem(1)])  # not dropped: the worker keeps the data and probes
    assert "config" in str(err.value)
    logged = [e for e in events if e.get("event") == "postgres_config_error"]
    assert logged and logged[0]["level"] == "ERROR"
    assert "password authentication failed" in logged[0]["error"]
    assert "wrong-password-XYZ" not in repr(events) + str(err.value) + repr(check)
    secret.write_text(pg_up.password + "\n")  # fixing the secret recovers, no restart
    sink.write([mem(1)])
    assert count(query, db_schema, "memory") == 1


def test_check_command_reports_the_server_and_the_spool(
    pg_up: PgServer, db_schema: str, tmp_path: Path
) -> None:
    env = clean_env(SIC_SINKS="postgres", SIC_DB_DSN=pg_up.dsn(), SIC_DB_SCHEMA=db_schema,
                    SIC_DB_SPOOL_DIR=str(tmp_path / "spool"))  # fmt: skip
    ok = run_cli("check", env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok    sink postgres: connected to" in ok.stdout
    bad = run_cli("check", env={**env, "SIC_DB_DSN": pg_up.dsn(password="not-it-123")})
    assert bad.returncode == 1
    assert "FAIL  sink postgres: config error:" in bad.stdout
    assert "not-it-123" not in bad.stdout + bad.stderr
    missing = run_cli("check", env={**env, "SIC_DB_DSN": pg_up.dsn(dbname="no_such_db")})
    assert missing.returncode == 1 and 'database "no_such_db" does not exist' in missing.stdout


def test_a_black_holed_server_times_out_instead_of_hanging(
    pg_up: PgServer, db_schema: str, query: Query, proxy: FaultProxy, make_sink: MakeSink
) -> None:
    host, port = proxy.address
    sink, _ = make_sink(pg_up.dsn(host=host, port=port), db_schema)
    sink.write([mem(0)])
    proxy.blackhole()
    started = time.monotonic()
    with pytest.raises(TransientSinkError, match="no answer within"):
        sink.write([mem(1)])
    assert time.monotonic() - started < 4.0  # statement_timeout 1s + 1s grace, not forever
    started = time.monotonic()
    with pytest.raises(TransientSinkError):
        sink.write([mem(1)])  # a new connection into the black hole: connect_timeout
    assert time.monotonic() - started < 5.0
    proxy.heal()
    sink.write([mem(1)])
    assert count(query, db_schema, "memory") == 2
