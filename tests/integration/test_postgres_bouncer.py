"""Through a real PgBouncer in transaction mode with its default settings.

PgBouncer refuses startup ``options``, hands each transaction to whichever server connection
is free (no session state survives a transaction) and, in 1.18, knows nothing of server-side
prepared statements. The pool here is smaller than the number of collectors, and the server
behind it restarts: every sampled record must still be in the database exactly once.
"""

from __future__ import annotations

import csv
import io
import time
from collections import Counter
from collections.abc import Callable
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
from tests.helpers import clean_env, poll, run_cli
from tests.integration.conftest import Bouncer, Collector, PgServer

pytestmark = pytest.mark.integration

Query = Callable[..., list[tuple[Any, ...]]]
Key = tuple[str, str, str, tuple[str, ...]]
TABLES = ("cpu", "memory")


def csv_keys(csv_dir: Path) -> list[Key]:
    """The key of every complete row of every CSV file the collector wrote."""
    keys: list[Key] = []
    for path in sorted(csv_dir.glob("*.csv")):
        name = path.name.split(".")[0]
        m = MEASUREMENTS[name]
        text = path.read_text()
        complete = text[: text.rfind("\n") + 1]
        for row in csv.DictReader(io.StringIO(complete)):
            keys.append((name, row["ts"], row["host"], tuple(row[c] for c in m.entity)))
    return keys


def db_keys(query: Query, schema: str, host: str | None = None) -> list[Key]:
    keys: list[Key] = []
    for name in TABLES:
        m = MEASUREMENTS[name]
        cols = ", ".join(f'"{c}"' for c in ("ts", "host", *m.entity))
        where = "WHERE host = %s" if host else ""
        try:
            rows = query(f'SELECT {cols} FROM "{schema}"."{name}" {where}', *([host] * bool(host)))
        except psycopg.errors.UndefinedTable:
            return []
        for ts, h, *entity in rows:
            iso = ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            keys.append((name, iso, h, tuple(entity)))
    return keys


def test_three_collectors_share_two_pooled_connections_through_a_server_restart(
    pg_up: PgServer,
    db_schema: str,
    other_schema: str,
    query: Query,
    bouncer: Callable[..., Bouncer],
    collector: Callable[..., Collector],
    tmp_path: Path,
) -> None:
    b = bouncer(pool_size=2)
    hosts = ("node-a", "node-b", "node-c")
    procs = {
        h: collector(
            b.dsn(),
            db_schema,
            SIC_SINKS="csv,postgres",
            SIC_HOSTNAME=h,
            SIC_CSV_DIR=str(tmp_path / h / "csv"),
            SIC_DB_SPOOL_DIR=str(tmp_path / h / "spool"),
        )
        for h in hosts
    }
    for h in hosts:
        poll(lambda h=h: db_keys(query, db_schema, h), timeout=20, what=f"rows from {h}")

    pg_up.stop()  # the server restarts behind the bouncer; the collectors keep sampling
    during = {h: len(csv_keys(tmp_path / h / "csv")) for h in hosts}
    for h in hosts:
        poll(
            lambda h=h: len(csv_keys(tmp_path / h / "csv")) >= during[h] + 10,
            timeout=10,
            what=f"{h} to sample during the outage",
        )
    pg_up.start()
    b.retarget()
    back = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def caught_up() -> bool:  # everything sampled up to the restart is in (newer rows may lag)
        sampled = {k for h in hosts for k in csv_keys(tmp_path / h / "csv") if k[1] <= back}
        return sampled <= set(db_keys(query, db_schema))

    try:
        poll(caught_up, timeout=40, interval=0.2, what="the collectors to catch up")
    except AssertionError:
        log = Path(b.log).read_text()[-3000:]
        last = {h: c.stderr[-5:] for h, c in procs.items()}
        raise AssertionError(f"not caught up; pgbouncer log: {log}; collectors: {last}") from None
    for c in procs.values():
        assert c.stop() == 0, "".join(c.stderr[-20:])

    sampled = [k for h in hosts for k in csv_keys(tmp_path / h / "csv")]
    stored = db_keys(query, db_schema)
    assert len(sampled) == len(set(sampled)) and len(sampled) > 3 * 40
    duplicated = [k for k, n in Counter(stored).items() if n > 1]
    assert not duplicated  # the primary key forbids them; the count below is exact
    assert not set(sampled) - set(stored), "lost rows"
    assert not set(stored) - set(sampled), "rows in the database that were never sampled"
    assert {k[2] for k in stored} == set(hosts)
    for c in procs.values():
        assert not c.events("postgres_row_rejected")
        assert not [e for e in c.events() if "Traceback" in str(e)]

    # replay through the same bouncer (pool of 2): everything new, then everything present
    env = clean_env(SIC_DB_DSN=b.dsn(), SIC_DB_SCHEMA=other_schema)
    dirs = [str(tmp_path / h / "csv") for h in hosts]
    first = run_cli("replay", *dirs, env=env, timeout=60)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"{len(sampled)} new" in first.stdout
    again = run_cli("replay", *dirs, env=env, timeout=60)  # the staging path, in one transaction
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"0 new, {len(sampled)} already present" in again.stdout
    assert sorted(db_keys(query, other_schema)) == sorted(sampled)


def test_statement_timeout_holds_through_the_bouncer(
    pg_up: PgServer, db_schema: str, query: Query, bouncer: Callable[..., Bouncer], tmp_path: Path
) -> None:
    """No startup ``options`` reach the server, yet its statement_timeout applies (SET LOCAL)."""
    b = bouncer(pool_size=1)
    settings = PostgresSettings(
        dsn=b.dsn(),
        schema=db_schema,
        spool_dir=str(tmp_path / "spool"),
        connect_timeout=2.0,
        statement_timeout=1.0,
    )
    sink = PostgresSink(settings, retry=RetrySettings(), metrics=Metrics())
    fields = {f.name: 1 for f in MEASUREMENTS["memory"].fields}
    t0 = datetime(2024, 5, 1, tzinfo=UTC)
    batches = [[Record("memory", t0 + timedelta(seconds=i), "h1", {}, fields)] for i in range(12)]
    try:
        for batch in batches[:10]:  # more than psycopg's prepare threshold (5)
            sink.write(batch)
        with psycopg.connect(pg_up.dsn()) as locker:
            locker.execute(f'LOCK TABLE "{db_schema}".memory IN ACCESS EXCLUSIVE MODE')
            started = time.monotonic()
            with pytest.raises(TransientSinkError, match="statement timeout"):
                sink.write(batches[10])  # the server cancels it after 1 s, not the watchdog
            assert time.monotonic() - started < 1.9
        assert query("SHOW statement_timeout") == [("0",)]  # nothing leaked into sessions
        sink.write(batches[10])
        sink.write(batches[11])
    finally:
        sink.close()
    assert len(db_keys(query, db_schema)) == 12
