"""The PostgreSQL sink against a real server: schema, idempotent writes, bad rows, bad config."""

from __future__ import annotations

import json
import os
import pwd
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from system_info_collector.config import PostgresSettings, RetrySettings
from system_info_collector.errors import TransientSinkError
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.schema import MEASUREMENTS
from system_info_collector.sinks.postgres import PostgresSink
from system_info_collector.sinks.postgres.ddl import SCHEMA_VERSION
from tests.helpers import clean_env, run_cli
from tests.integration import conftest
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
def make_sink(tmp_path: Path) -> Iterator[Callable[..., tuple[PostgresSink, Metrics]]]:
    made: list[PostgresSink] = []

    def make(dsn: str, schema: str, **kw: Any) -> tuple[PostgresSink, Metrics]:
        metrics = Metrics()
        settings = PostgresSettings(
            dsn=dsn,
            schema=schema,
            spool_dir=str(tmp_path / "spool"),
            connect_timeout=2.0,
            statement_timeout=1.0,
            **kw,
        )
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
            db_schema,
            m.name,
        )
        assert [c for c, _ in cols] == list(m.columns)  # the CSV columns, in order
        assert dict(cols)["tags"] == "jsonb"
        assert dict(cols)["ts"] == "timestamp with time zone"
        pk = query(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary "
            "ORDER BY array_position(i.indkey, a.attnum)",
            f'"{db_schema}"."{m.name}"',
        )
        assert tuple(r[0] for r in pk) == m.primary_key
    assert query(f'SELECT version FROM "{db_schema}".sic_schema_version') == [(SCHEMA_VERSION,)]


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
    row = query(
        f'SELECT host, cpu, ts, tags, user_percent FROM "{db_schema}".cpu ORDER BY ts, cpu LIMIT 1'
    )[0]
    assert row == ("h1", "cpu-total", T0, {"env": "test"}, 1.5)
    sink.close()


def test_every_value_round_trips_exactly_through_the_copy_text_format(
    pg_up: PgServer, db_schema: str, query: Query, make_sink: MakeSink
) -> None:
    awkward = 'tab\there, new\nline, cr\r, back\\slash \\N, "quoted", é, 😀'
    floats = [0.1, 1e-300, 1.7976931348623157e308, -0.0, 123456789.123456789, 5e-324]
    cpu_fields = {f.name: floats[i % len(floats)] for i, f in enumerate(MEASUREMENTS["cpu"].fields)}
    disk_fields: dict[str, float | int] = {
        f.name: 2**63 - 1 if f.sql_type == "bigint" else 0.5 for f in MEASUREMENTS["disk"].fields
    }
    ts = T0 + timedelta(microseconds=123457)
    batch = [
        Record(
            "cpu",
            ts,
            "h\\1",
            {"cpu": awkward, "note": awkward, "k\\": "v\t"},
            cpu_fields,
            interval_ms=2**31 - 1,
        ),
        Record(
            "disk",
            ts,
            "h1",
            {"mountpoint": "/mnt/" + awkward, "device": "sda", "fstype": "ext4"},
            disk_fields,
        ),
    ]
    sink, _ = make_sink(pg_up.dsn(), db_schema)
    sink.write(batch)
    [row] = query(f'SELECT * FROM "{db_schema}".cpu')
    assert row[:3] == (ts, "h\\1", awkward)
    assert list(row[3:-2]) == [cpu_fields[f.name] for f in MEASUREMENTS["cpu"].fields]
    assert row[-2:] == ({"note": awkward, "k\\": "v\t"}, 2**31 - 1)
    [drow] = query(f'SELECT mountpoint, device, fstype FROM "{db_schema}".disk')
    assert drow == ("/mnt/" + awkward, "sda", "ext4")
    assert query(f'SELECT total_bytes FROM "{db_schema}".disk') == [(2**63 - 1,)]


def test_rejected_rows_are_bisected_out_to_the_dead_letter_file(
    pg_up: PgServer,
    db_schema: str,
    query: Query,
    make_sink: MakeSink,
    events: list[dict[str, Any]],
) -> None:
    sink, metrics = make_sink(pg_up.dsn(), db_schema)
    # a dead-letter file left by a crash: one complete line, then one torn mid-line
    earlier = '{"measurement":"memory","error":"22003: earlier"}\n'
    Path(sink.dead_letter_path).parent.mkdir(parents=True)
    Path(sink.dead_letter_path).write_text(earlier + '{"measurement":"mem')
    batch = [mem(i) for i in range(16)] + [disk(i) for i in range(4)]
    batch[5] = mem(5, total=2**70)  # bigint out of range: the server rejects this row only
    batch[11] = mem(11, total=2**65)
    sink.write(batch)
    assert count(query, db_schema, "memory") == 14
    assert count(query, db_schema, "disk") == 4
    text = Path(sink.dead_letter_path).read_text()
    assert text.startswith(earlier)
    lines = [json.loads(x) for x in text.splitlines()[1:]]  # every line parses
    [aside] = Path(sink.dead_letter_path).parent.glob("dead-letter.jsonl.torn-*")
    assert aside.read_text() == '{"measurement":"mem'
    torn = [e for e in events if e.get("event") == "dead_letter_torn_tail"]
    assert len(torn) == 1 and torn[0]["level"] == "ERROR"
    assert sorted(x["ts"] for x in lines) == [
        (T0 + timedelta(seconds=s)).isoformat() for s in (5, 11)
    ]
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
    env = clean_env(
        SIC_SINKS="postgres",
        SIC_DB_DSN=pg_up.dsn(),
        SIC_DB_SCHEMA=db_schema,
        SIC_DB_SPOOL_DIR=str(tmp_path / "spool"),
    )
    ok = run_cli("check", env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok    sink postgres: connected to" in ok.stdout
    bad = run_cli("check", env={**env, "SIC_DB_DSN": pg_up.dsn(password="not-it-123")})
    assert bad.returncode == 1
    assert "FAIL  sink postgres: config error:" in bad.stdout
    assert "not-it-123" not in bad.stdout + bad.stderr
    missing = run_cli("check", env={**env, "SIC_DB_DSN": pg_up.dsn(dbname="no_such_db")})
    assert missing.returncode == 1 and 'database "no_such_db" does not exist' in missing.stdout
    assert pg_up.password not in missing.stdout + missing.stderr
    uri = f"postgresql://{pg_up.user}:wrong-uri-pw-5@{pg_up.host}:{pg_up.port}/{pg_up.dbname}"
    bad_uri = run_cli("check", env={**env, "SIC_DB_DSN": uri})
    assert bad_uri.returncode == 1 and "password authentication failed" in bad_uri.stdout
    assert "wrong-uri-pw-5" not in bad_uri.stdout + bad_uri.stderr
    assert "Traceback" not in bad.stderr + missing.stderr + bad_uri.stderr


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


def test_without_docker_the_server_is_a_local_cluster_run_unprivileged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fixture's fallback, for real: no Docker engine reachable -> initdb/pg_ctl."""
    if conftest._local_bin() is None:
        pytest.skip("no local PostgreSQL server binaries (initdb) on this machine")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    server, reasons = conftest.start_server()
    assert server is not None, reasons
    try:
        assert server.kind == "local"
        assert reasons and "no Docker engine at /nonexistent/docker.sock" in reasons[0]
        with Path(server.datadir, "postmaster.pid").open() as pidfile:
            postmaster = int(pidfile.readline())
        uid = int(Path(f"/proc/{postmaster}/status").read_text().split("Uid:")[1].split()[0])
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: the fixture drops to nobody
            assert uid == pwd.getpwnam("nobody").pw_uid
        with psycopg.connect(server.dsn(), connect_timeout=5) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (server.user,)
        server.stop()  # the outage tests stop and start it
        assert not server.running()
        server.start()
        with psycopg.connect(server.dsn(), connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        conftest.stop_server(server)
    assert not Path(server.extra["base"]).exists()


def test_a_dsn_that_is_only_a_password_never_shows_it(tmp_path: Path) -> None:
    """libpq quotes an unparsable conninfo back in its error; no message may print it.
    (A DSN that does not parse is a configuration error: exit 2.)"""
    env = clean_env(
        SIC_DB_DSN="hunter2secret", SIC_SINKS="postgres", SIC_DB_SPOOL_DIR=str(tmp_path / "spool")
    )
    result = run_cli("check", env=env)
    assert result.returncode == 2
    assert "SIC_DB_DSN (not shown, it may hold a password): not a libpq" in result.stderr
    assert "hunter2secret" not in result.stdout + result.stderr


def test_a_key_stored_with_other_values_is_counted_logged_and_kept_not_dropped(
    pg_up: PgServer,
    db_schema: str,
    query: Query,
    make_sink: MakeSink,
    events: list[dict[str, Any]],
) -> None:
    """A wall clock stepped back, or two hosts with one host name: same key, other values."""
    sink, metrics = make_sink(pg_up.dsn(), db_schema)
    sink.write([mem(i) for i in range(10)])
    sink.write([mem(i) for i in range(10)])  # a retried batch: same values, not a conflict
    conflicts = Path(sink.conflicts_path)
    assert not conflicts.exists()
    assert metrics.registry.get_sample_value("sic_db_conflicting_rows_total") == 0

    sink.write([mem(i, total=4 << 30) for i in range(5, 15)])  # 5..9 collide, 10..14 are new
    assert count(query, db_schema, "memory") == 15
    stored = query(
        f'SELECT total_bytes FROM "{db_schema}".memory WHERE ts < %s ORDER BY ts',
        T0 + timedelta(seconds=10),
    )
    assert stored == [(8 << 30,)] * 10  # the first write wins, as before
    assert metrics.registry.get_sample_value("sic_db_conflicting_rows_total") == 5
    kept = [json.loads(line) for line in conflicts.read_text().splitlines()]
    assert [k["ts"] for k in kept] == [
        (T0 + timedelta(seconds=s)).isoformat() for s in range(5, 10)
    ]
    assert all(k["fields"]["total_bytes"] == 4 << 30 for k in kept)  # the new values, recoverable
    assert all(k["stored"]["total_bytes"] == 8 << 30 for k in kept)  # next to the stored ones
    [warning] = [e for e in events if e.get("event") == "postgres_conflicting_rows"]
    assert warning["level"] == "WARNING" and warning["rows"] == 5 and warning["host"] == "h1"
    assert "same host name" in warning["msg"]


def test_replay_of_the_dead_letter_file_loads_what_the_server_now_accepts(
    pg_up: PgServer, db_schema: str, query: Query, make_sink: MakeSink
) -> None:
    sink, _ = make_sink(pg_up.dsn(), db_schema)
    batch = [mem(i) for i in range(6)]
    batch[2], batch[4] = mem(2, total=2**70), mem(4, total=2**65)
    sink.write(batch)
    assert count(query, db_schema, "memory") == 4
    path = Path(sink.dead_letter_path)
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) == 2
    lines[0] = lines[0].replace(str(2**70), str(8 << 30))  # the operator fixes one value
    path.write_text("".join(lines))
    env = clean_env(SIC_DB_DSN=pg_up.dsn(), SIC_DB_SCHEMA=db_schema)
    result = run_cli("replay", str(path), env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "dead-letter.jsonl: line 2: rejected: 22003" in result.stderr
    assert "2 rows from 1 files" in result.stdout and "1 new" in result.stdout
    assert count(query, db_schema, "memory") == 5
    again = run_cli("replay", str(path), env=env)  # idempotent: nothing new the second time
    assert "0 new" in again.stdout and count(query, db_schema, "memory") == 5
