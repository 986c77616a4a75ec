"""Schema drift against a real server: `check` refuses it; `run`, at start or later, holds only
a drifted table's rows (kept, not dead-lettered) and releases them once fixed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from system_info_collector.config import PostgresSettings, RetrySettings
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.schema import MEASUREMENTS
from system_info_collector.sinks.postgres import PostgresSink
from system_info_collector.sinks.postgres import sink as sink_module
from tests.helpers import clean_env, poll, run_cli
from tests.integration.conftest import Collector, PgServer

pytestmark = pytest.mark.integration

Query = Callable[..., list[tuple[Any, ...]]]
T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)


def batch(start: int, n: int = 5) -> list[Record]:
    cpu = {f.name: 1.5 for f in MEASUREMENTS["cpu"].fields}
    memory = {f.name: 1 for f in MEASUREMENTS["memory"].fields}
    out = []
    for i in range(start, start + n):
        ts = T0 + timedelta(seconds=i)
        out += [
            Record("cpu", ts, "h1", {"cpu": "cpu-total"}, cpu),
            Record("memory", ts, "h1", {}, memory),
        ]
    return out


def test_check_refuses_a_drifted_table_and_run_starts_holding_only_its_rows(
    pg_up: PgServer,
    db_schema: str,
    query: Query,
    tmp_path: Path,
    collector: Callable[..., Collector],
) -> None:
    """`check` names each drifted table and exits 1 (a deploy-time gate); `run` starts anyway
    -- a drifted table must not stop the other sinks, /metrics or the other tables -- holds
    that table's rows in held.jsonl with one ERROR, and writes everything else."""
    env = clean_env(
        SIC_SINKS="csv,postgres",
        SIC_DB_DSN=pg_up.dsn(),
        SIC_DB_SCHEMA=db_schema,
        SIC_CSV_DIR=str(tmp_path / "csv"),
        SIC_HTTP_LISTEN="",
    )
    assert run_cli("check", env=env).returncode == 0
    query(f'ALTER TABLE "{db_schema}".memory ALTER COLUMN used_percent TYPE integer')
    query(f'ALTER TABLE "{db_schema}".cpu ADD CONSTRAINT sane CHECK (user_percent < 0)')
    bad = run_cli("check", env=env)
    assert bad.returncode == 1, bad.stdout
    assert (
        f"FAIL  sink postgres table {db_schema}.memory: column used_percent is integer, "
        "expected double precision"
    ) in bad.stdout
    assert "constraint sane (CHECK ((user_percent < (0)::double precision)))" in bad.stdout
    assert "ok    sink postgres: connected" in bad.stdout  # the rest is fine

    run = collector(
        pg_up.dsn(),
        db_schema,
        SIC_SINKS="stdout,csv,postgres",
        SIC_COLLECTORS="cpu,memory,disk",
    )
    poll(
        lambda: query(f'SELECT count(*) FROM "{db_schema}".disk')[0][0] > 0,
        timeout=20,
        what="disk rows in the database",
    )
    held = poll(
        lambda: len(run.events("postgres_table_held")) == 2 and run.events("postgres_table_held"),
        timeout=20,
        what="the two drifted tables held",
    )
    assert {e["table"] for e in held} == {f"{db_schema}.cpu", f"{db_schema}.memory"}
    assert all(e["level"] == "ERROR" for e in held)
    poll(
        lambda: (
            (tmp_path / "spool" / "held.jsonl").exists()
            and b'"memory"' in (tmp_path / "spool" / "held.jsonl").read_bytes()
        ),
        timeout=20,
        what="memory rows in held.jsonl",
    )
    run.wait_records(20)
    assert run.stop() == 0
    assert query(f'SELECT count(*) FROM "{db_schema}".cpu') == [(0,)]
    assert query(f'SELECT count(*) FROM "{db_schema}".memory') == [(0,)]
    assert sorted(p.name for p in (tmp_path / "csv").glob("*.csv")) == [
        "cpu.csv",
        "disk.csv",
        "memory.csv",
    ]
    assert "Traceback" not in "".join(run.stderr)


def test_a_table_broken_at_run_time_holds_only_its_rows_until_fixed(
    pg_up: PgServer,
    db_schema: str,
    query: Query,
    tmp_path: Path,
    events: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = PostgresSettings(
        dsn=pg_up.dsn(), schema=db_schema, spool_dir=str(tmp_path), statement_timeout=2.0
    )
    metrics = Metrics()
    sink = PostgresSink(settings, retry=RetrySettings(), metrics=metrics)
    try:
        sink.write(batch(0))
        cut = (T0 + timedelta(seconds=5)).isoformat()  # the stored rows pass, every new one fails
        query(f"ALTER TABLE \"{db_schema}\".cpu ADD CONSTRAINT broken CHECK (ts < '{cut}')")
        sink.write(batch(5))  # every cpu row fails: a table problem, not 5 bad rows
        sink.write(batch(10))
        assert query(f'SELECT count(*) FROM "{db_schema}".memory') == [(15,)]  # others flow
        assert query(f'SELECT count(*) FROM "{db_schema}".cpu') == [(5,)]
        assert not Path(sink.dead_letter_path).exists()  # kept, not dead-lettered
        assert metrics.registry.get_sample_value("sic_db_held_rows_total") == 10
        held = [e for e in events if e.get("event") == "postgres_table_held"]
        assert len(held) == 1 and held[0]["level"] == "ERROR"  # once per state change
        assert "constraint broken" in held[0]["problems"][0]

        query(f'ALTER TABLE "{db_schema}".cpu DROP CONSTRAINT broken')
        monkeypatch.setattr(sink_module, "HOLD_RECHECK_EVERY", 0.0)
        sink._next_recheck = 0.0  # the next write re-checks now instead of in 30 s
        sink.write(batch(15))
        assert query(f'SELECT count(*) FROM "{db_schema}".cpu') == [(20,)]  # all released
        assert query(f'SELECT count(*) FROM "{db_schema}".memory') == [(20,)]
        assert [e for e in events if e.get("event") == "postgres_table_released"]
        assert Path(sink.held_path).read_bytes() == b""
    finally:
        sink.close()


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda line: bytes([line[0] ^ 0x20]) + line[1:], id="brace flipped"),
        # a byte turned into a carriage return: still one line for a file's reader (which
        # splits at newlines only), so the lines kept and set aside must be cut the same way
        pytest.param(lambda line: line[:20] + b"\r" + line[21:], id="carriage return"),
    ],
)
def test_rows_held_before_a_restart_are_written_once_the_table_is_fixed(
    pg_up: PgServer,
    db_schema: str,
    query: Query,
    tmp_path: Path,
    events: list[dict[str, Any]],
    damage: Callable[[bytes], bytes],
) -> None:
    """The collector stops while a table holds rows; the table is fixed while it is stopped.
    The next process writes the held rows with its first write, sets a damaged line of the
    file aside (ERROR, counted) instead of keeping it forever, and says so once."""
    settings = PostgresSettings(
        dsn=pg_up.dsn(), schema=db_schema, spool_dir=str(tmp_path), statement_timeout=2.0
    )
    first = PostgresSink(settings, retry=RetrySettings(), metrics=Metrics())
    try:
        first.write(batch(0))
        cut = (T0 + timedelta(seconds=5)).isoformat()
        query(f"ALTER TABLE \"{db_schema}\".cpu ADD CONSTRAINT broken CHECK (ts < '{cut}')")
        first.write(batch(5))
        first.write(batch(10))
    finally:
        first.close()  # stopped while the rows are held
    held = Path(first.held_path)
    lines = held.read_bytes().splitlines(keepends=True)
    assert len(lines) == 10
    damaged = damage(lines[3])  # the line no longer parses
    held.write_bytes(b"".join([*lines[:3], damaged, *lines[4:]]))
    query(f'ALTER TABLE "{db_schema}".cpu DROP CONSTRAINT broken')
    events.clear()

    metrics = Metrics()
    second = PostgresSink(settings, retry=RetrySettings(), metrics=metrics)
    try:
        second.write(batch(15))
        assert query(f'SELECT count(*) FROM "{db_schema}".cpu') == [(5 + 9 + 5,)]
        assert query(f'SELECT count(*) FROM "{db_schema}".memory') == [(20,)]
        assert held.read_bytes() == b""
        (aside,) = tmp_path.glob("held.jsonl.torn-*")
        assert aside.read_bytes() == damaged
        (report,) = [e for e in events if e.get("event") == "postgres_held_damaged"]
        assert report["level"] == "ERROR" and report["lines"] == 1
        assert report["damaged_bytes"] == len(damaged) and report["moved_to"] == str(aside)
        assert metrics.registry.get_sample_value(
            "sic_spool_damaged_bytes_total", {"sink": "postgres"}
        ) == len(damaged)
        (released,) = [e for e in events if e.get("event") == "postgres_table_released"]
        assert released["tables"] == ["cpu"] and released["rows"] == 9
        second.write(batch(20))  # once: nothing more to release, nothing said
        assert len([e for e in events if e.get("event") == "postgres_table_released"]) == 1
        assert query(f'SELECT count(*) FROM "{db_schema}".cpu') == [(24,)]
    finally:
        second.close()
