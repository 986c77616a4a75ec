"""``system-info-collector report`` against a real PostgreSQL: per host and hour, the samples
stored, the ticks expected, completeness, the longest gap and the newest sample's age."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from system_info_collector.sinks.postgres import ensure_schema
from tests.helpers import clean_env, run_cli
from tests.integration.conftest import PgServer

pytestmark = pytest.mark.integration


def test_report_per_host_and_hour(pg_up: PgServer, db_schema: str) -> None:
    now = datetime.now(UTC)
    current = now.replace(minute=0, second=0, microsecond=0)
    h1, h2 = current - timedelta(hours=3), current - timedelta(hours=2)
    rows: list[tuple[datetime, str]] = []
    rows += [(h1 + timedelta(minutes=m), "a") for m in range(60) if not 10 <= m < 15]
    rows += [(h2 + timedelta(minutes=m), "a") for m in range(60)]  # then silent
    rows += [(h2 + timedelta(minutes=m), "b") for m in range(30, 60)]
    rows += [(h2 + timedelta(hours=1, minutes=m), "b") for m in range(60)]
    rows += [(current + timedelta(minutes=m), "b") for m in range(now.minute - 1)]
    with psycopg.connect(pg_up.dsn(), autocommit=True) as conn:
        ensure_schema(conn, db_schema)
        with conn.cursor() as cur:
            cur.executemany(
                f'INSERT INTO "{db_schema}".memory (ts, host, used_bytes) VALUES (%s, %s, 1)', rows
            )
    env = clean_env(SIC_DB_DSN=pg_up.dsn(), SIC_DB_SCHEMA=db_schema)
    result = run_cli(
        "report", "--hours", "6", "--expected-interval", "60", "--format", "csv", env=env
    )
    assert result.returncode == 0, result.stderr
    got = {(r["host"], r["hour_utc"]): r for r in csv.DictReader(io.StringIO(result.stdout))}

    def hour(h: datetime) -> str:
        return h.strftime("%Y-%m-%dT%H:00Z")

    a1, a2 = got["a", hour(h1)], got["a", hour(h2)]
    assert (a1["samples"], a1["expected"], a1["complete_pct"], a1["max_gap_s"]) == (
        "55",
        "60",
        "91.67",
        "360.0",
    )
    assert (a2["samples"], a2["expected"], a2["complete_pct"]) == ("60", "60", "100.00")
    silent = got["a", hour(h2 + timedelta(hours=1))]  # host a stopped: still expected
    assert (silent["samples"], silent["expected"], silent["complete_pct"]) == ("0", "60", "0.00")
    a_now = got["a", hour(current)]
    assert float(a_now["newest_age_s"]) == pytest.approx(
        (now - (h2 + timedelta(minutes=59))).total_seconds(), abs=30
    )
    b2 = got["b", hour(h2)]  # first seen at :30: expected from there
    assert (b2["samples"], b2["expected"], b2["complete_pct"]) == ("30", "30", "100.00")
    assert ("b", hour(h1)) not in got
    assert got["a", hour(h1)]["newest_age_s"] == ""


def test_report_without_a_database_is_a_clear_error() -> None:
    result = run_cli("report", env=clean_env())
    assert result.returncode == 2 and "SIC_DB_DSN is not set" in result.stderr
    env = clean_env(
        SIC_DB_DSN="postgresql://sic:pw-leak-77@127.0.0.1:1/x", SIC_DB_CONNECT_TIMEOUT="1s"
    )
    result = run_cli("report", env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "pw-leak-77" not in result.stderr and result.stderr.startswith(
        "system-info-collector report:"
    )
