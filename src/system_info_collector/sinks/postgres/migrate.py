"""``system-info-collector db migrate``: plain tables of schema version 1 → range-partitioned.

Per table, in ONE transaction (all or nothing; a failure leaves the old table as it was):

1. ``LOCK TABLE <t> IN SHARE ROW EXCLUSIVE MODE`` -- queries go on, writers wait (the
   collectors' inserts time out after ``SIC_DB_STATEMENT_TIMEOUT`` and stay in their spools,
   then land in the new table);
2. create ``<t>_partitioned`` (the same columns and primary key, ``PARTITION BY RANGE (ts)``)
   with the partitions covering every row plus the ones ahead;
3. copy the rows one partition range at a time (progress on stderr), then check that the new
   table holds exactly as many rows as the old one;
4. rename the old table to ``<t>_unpartitioned`` (kept, with every row: drop it yourself when
   satisfied) and the new one to ``<t>``; record schema version 2.

Nothing is ever deleted. Running it again does nothing for tables already partitioned.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import psycopg
from psycopg import sql

from system_info_collector.config import PostgresSettings
from system_info_collector.progress import Progress as ProgressBar
from system_info_collector.redact import redact_secret
from system_info_collector.schema import MEASUREMENTS, Measurement
from system_info_collector.sinks.postgres import partitions
from system_info_collector.sinks.postgres.connection import connect, dsn_secrets, read_password
from system_info_collector.sinks.postgres.ddl import (
    DDL_LOCK,
    add_missing_columns,
    create_table_sql,
    create_ts_index_sql,
    record_version,
    relkinds,
)
from system_info_collector.sinks.postgres.encoding import quote_ident
from system_info_collector.sinks.postgres.errors import error_text

Progress = Callable[[str, int, int], None]  # (table, rows done, rows total)


class MigrationError(Exception):
    """The migration of one table failed and was rolled back; the message is for the user."""


def unpartitioned(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    kinds = relkinds(conn, schema)
    return [n for n in MEASUREMENTS if kinds.get(n) == "r"]


def migrate_table(
    conn: psycopg.Connection[Any],
    schema: str,
    m: Measurement,
    interval: float,
    progress: Progress,
    *,
    now: datetime | None = None,
) -> tuple[int, str]:
    """Convert one plain table; returns (rows copied, name the old table now has)."""
    now = now or datetime.now(UTC)
    table = f"{quote_ident(schema)}.{quote_ident(m.name)}"
    new_name, old_name = f"{m.name}_partitioned", f"{m.name}_unpartitioned"
    with conn.transaction():
        conn.execute("SET LOCAL statement_timeout = 0")  # a big table takes what it takes
        conn.execute("SET LOCAL lock_timeout = '30s'")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))
        conn.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
        add_missing_columns(conn, schema, [m.name])  # a table no collector has started on yet
        row = conn.execute(f"SELECT count(*), min(ts), max(ts) FROM {table}").fetchone()
        assert row is not None
        total, lo, hi = int(row[0]), row[1], row[2]
        taken = {
            n
            for (n,) in conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace "
                "WHERE s.nspname = %s",
                (schema,),
            ).fetchall()
        }
        if old_name in taken:
            old_name = f"{old_name}_{now:%Y%m%dT%H%M%S}"
        conn.execute(create_table_sql(schema, m, partitioned=True, name=new_name))
        wanted = partitions.wanted_around(now, interval)
        if lo is not None:
            first, _ = partitions.bounds(lo, interval)
            step = timedelta(seconds=interval)
            span = []
            start = first
            while start <= hi:
                span.append((start, start + step))
                start += step
            wanted = sorted(set(wanted) | set(span))
        _rename_old(conn, schema, m, old_name)
        made = partitions.create(conn, schema, _named(m, new_name), partitions.gaps(wanted, []))
        conn.execute(create_ts_index_sql(schema, new_name))
        new = f"{quote_ident(schema)}.{quote_ident(new_name)}"
        old = f"{quote_ident(schema)}.{quote_ident(old_name)}"
        cols = ", ".join(quote_ident(c) for c in m.columns)
        done = 0
        progress(m.name, 0, total)
        if lo is not None:
            for p_lo, p_hi in partitions.gaps(wanted, []):
                if p_hi <= lo or p_lo > hi:
                    continue
                cur = conn.execute(
                    f"INSERT INTO {new} ({cols}) SELECT {cols} FROM {old} "
                    "WHERE ts >= %s AND ts < %s",
                    (p_lo, p_hi),
                )
                done += max(cur.rowcount, 0)
                progress(m.name, done, total)
        row = conn.execute(f"SELECT count(*) FROM {new}").fetchone()
        if row is None or int(row[0]) != total:
            raise MigrationError(
                f"{schema}.{m.name}: copied {row[0] if row else 0} of {total} rows; rolled back"
            )
        conn.execute(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                sql.Identifier(schema, new_name), sql.Identifier(m.name)
            )
        )
        conn.execute(
            sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                sql.Identifier(schema, m.name),
                sql.Identifier(f"{new_name}_pkey"),
                sql.Identifier(f"{m.name}_pkey"),
            )
        )
        for name in made:  # the partitions were named after the new table; name them for <t>
            final = name.replace(f"{new_name}_p", f"{m.name}_p", 1)
            conn.execute(
                sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                    sql.Identifier(schema, name), sql.Identifier(final)
                )
            )
        conn.execute(
            sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                sql.Identifier(schema, f"{new_name}_ts_idx"), sql.Identifier(f"{m.name}_ts_idx")
            )
        )
        record_version(conn, schema, 2)
    return total, old_name


def _named(m: Measurement, name: str) -> Measurement:
    return replace(m, name=name)


def _rename_old(conn: psycopg.Connection[Any], schema: str, m: Measurement, old_name: str) -> None:
    """Move the old table and its index/constraint names out of the way (rows untouched)."""
    conn.execute(
        sql.SQL("ALTER TABLE {} RENAME TO {}").format(
            sql.Identifier(schema, m.name), sql.Identifier(old_name)
        )
    )
    for index, suffix in ((f"{m.name}_ts_idx", "ts_idx"), (f"{m.name}_pkey", "pkey")):
        exists = conn.execute(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            (schema, index),
        ).fetchone()
        if exists:
            conn.execute(
                sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                    sql.Identifier(schema, index), sql.Identifier(f"{old_name}_{suffix}")
                )
            )


EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def run_migrate(
    settings: PostgresSettings, *, out: TextIO | None = None, progress: TextIO | None = None
) -> int:
    """The ``db migrate`` command: 0 done (or nothing to do), 1 failed, 2 not configured."""
    out = out or sys.stdout
    err = progress or sys.stderr
    if not settings.dsn:
        print("db migrate: set SIC_DB_DSN (or --db-dsn) to the database to migrate", file=err)
        return EXIT_USAGE
    if settings.partition_interval <= 0:
        print(
            "db migrate: SIC_DB_PARTITION_INTERVAL=0 asks for plain tables; nothing to do", file=err
        )
        return EXIT_USAGE
    try:
        password = read_password(settings)
    except OSError as exc:
        print(f"db migrate: cannot read SIC_DB_PASSWORD_FILE: {exc}", file=err)
        return EXIT_USAGE
    secrets = dsn_secrets(settings, password)
    show = make_progress(err)
    migrated: list[str] = []
    started = time.monotonic()
    rows = 0
    try:
        with connect(settings, password) as conn:
            todo = unpartitioned(conn, settings.schema)
            if not todo:
                print(
                    f"db migrate: schema {settings.schema}: every table is already "
                    "partitioned (or none exists yet); nothing to do",
                    file=out,
                )
                return EXIT_OK
            for name in todo:
                copied, kept = migrate_table(
                    conn, settings.schema, MEASUREMENTS[name], settings.partition_interval, show
                )
                rows += copied
                migrated.append(f"{name} ({copied} rows; the old table is kept as {kept})")
    except (psycopg.Error, MigrationError, ValueError) as exc:
        text = error_text(exc) if isinstance(exc, psycopg.Error) else str(exc)
        print(f"db migrate: failed, rolled back: {redact_secret(text, secrets)}", file=err)
        if migrated:
            print(f"db migrate: migrated before the failure: {'; '.join(migrated)}", file=out)
        return EXIT_FAILED
    took = time.monotonic() - started
    print(
        f"db migrate: schema {settings.schema}: partitioned {'; '.join(migrated)}; {rows} rows "
        f"in {took:.1f}s. Nothing was deleted: drop the *_unpartitioned tables once you are "
        "satisfied.",
        file=out,
    )
    return EXIT_OK


def make_progress(stream: TextIO) -> Progress:
    """One :class:`~system_info_collector.progress.Progress` per table (rows)."""
    bars: dict[str, ProgressBar] = {}

    def show(table: str, done: int, total: int) -> None:
        bar = bars.get(table)
        if bar is None:
            bar = bars[table] = ProgressBar(stream, f"migrate: {table}", total, "rows")
        bar.update(done)
        if done >= total:
            if not stream.isatty():
                print(bar.line(), file=stream, flush=True)
            bar.close()

    return show
