"""Native range partitions by ``ts``: created ahead, dropped by age, never a lock wait for inserts.

Each measurement table is ``PARTITION BY RANGE (ts)``; a partition covers one
``SIC_DB_PARTITION_INTERVAL`` aligned on the Unix epoch (UTC midnights for ``1d``) and is
named ``<table>_p<start>`` (``cpu_p20261124``, or ``cpu_p20261124T0600`` below a day).

* **Created ahead, without blocking inserts.** A new partition is created as a plain table
  (``CREATE TABLE … (LIKE <table> INCLUDING DEFAULTS)``) and then attached (``ALTER TABLE …
  ATTACH PARTITION``), which takes only ``SHARE UPDATE EXCLUSIVE`` on the parent: inserts
  (``ROW EXCLUSIVE``) and queries go on. ``CREATE TABLE … PARTITION OF`` would take ``ACCESS
  EXCLUSIVE`` on the parent and queue every insert behind it.
* **Dropped by age.** A partition whose upper bound is older than ``SIC_DB_RETENTION`` is
  dropped (``DROP TABLE`` needs ``ACCESS EXCLUSIVE`` on the parent for a moment; it runs with
  ``lock_timeout`` 500 ms, so an insert waits at most that long, once per interval; if the lock
  is not granted the drop is retried at the next maintenance).
* **No stampede.** Maintenance first reads the catalogue (one query per table); only when a
  partition is missing or expired does it take ``pg_try_advisory_xact_lock`` -- one collector
  of a thousand does the DDL, the others see it taken and carry on writing.
* **A row without a partition** (a clock far off, a replay of old files): the insert fails with
  ``23514 no partition of relation … found for row``; the sink creates the partitions the batch
  needs (under the blocking advisory lock) and writes again, instead of dead-lettering it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from system_info_collector.schema import Measurement
from system_info_collector.sinks.postgres.encoding import (
    local_settings,
    quote_ident,
    quote_literal,
)

PARTITION_LOCK = 0x5_1C_DD_2  # advisory lock key of partition maintenance
AHEAD = timedelta(days=1)  # partitions exist at least this far ahead (and two intervals)
ATTACH_LOCK_TIMEOUT = "2s"
DROP_LOCK_TIMEOUT = "500ms"
MAX_NEW_PARTITIONS = 5000  # per call: a far-off timestamp must not create a million tables
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Range = tuple[datetime, datetime]


def bounds(ts: datetime, interval: float) -> Range:
    """The aligned ``[start, end)`` of the partition that holds ``ts``."""
    n = math.floor((ts - EPOCH).total_seconds() / interval)
    start = EPOCH + timedelta(seconds=n * interval)
    return start, start + timedelta(seconds=interval)


def partition_name(m: Measurement, start: datetime) -> str:
    start = start.astimezone(UTC)
    if start.hour == start.minute == start.second == 0:
        return f"{m.name}_p{start:%Y%m%d}"
    if start.second == 0:
        return f"{m.name}_p{start:%Y%m%dT%H%M}"
    return f"{m.name}_p{start:%Y%m%dT%H%M%S}"


def ranges(conn: psycopg.Connection[Any], schema: str, table: str) -> list[tuple[str, Range]]:
    """The partitions of ``schema.table`` with their bounds (read by the server itself)."""
    rows = conn.execute(
        "SELECT c.relname, b[1]::timestamptz, b[2]::timestamptz FROM ("
        " SELECT c.oid, regexp_match(pg_get_expr(c.relpartbound, c.oid),"
        "  $$FROM \\('([^']+)'\\) TO \\('([^']+)'\\)$$) AS b"
        " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass) x JOIN pg_class c ON c.oid = x.oid"
        " WHERE b IS NOT NULL ORDER BY 2",
        (f"{quote_ident(schema)}.{quote_ident(table)}",),
    ).fetchall()
    return [(name, (lo, hi)) for name, lo, hi in rows]


def gaps(wanted: Iterable[Range], existing: Sequence[Range]) -> list[Range]:
    """The parts of the ``wanted`` ranges no ``existing`` partition covers (sorted, merged)."""
    out: list[Range] = []
    for lo, hi in sorted(set(wanted)):
        pieces = [(lo, hi)]
        for elo, ehi in existing:
            pieces = [
                part
                for plo, phi in pieces
                for part in ((plo, min(phi, elo)), (max(plo, ehi), phi))
                if part[0] < part[1]
            ]
        out += pieces
    return sorted(set(out))


def wanted_around(now: datetime, interval: float) -> list[Range]:
    """The partitions that should exist at ``now``: the current one and the ones ahead."""
    first, _ = bounds(now, interval)
    ahead = max(2, math.ceil(AHEAD.total_seconds() / interval))
    step = timedelta(seconds=interval)
    return [(first + i * step, first + (i + 1) * step) for i in range(ahead + 1)]


def wanted_for(timestamps: Iterable[datetime], interval: float) -> list[Range]:
    return sorted({bounds(ts, interval) for ts in timestamps})


def create(
    conn: psycopg.Connection[Any], schema: str, m: Measurement, missing: Sequence[Range]
) -> list[str]:
    """Create and attach partitions for ``missing`` ranges, in the caller's transaction."""
    if len(missing) > MAX_NEW_PARTITIONS:
        raise ValueError(
            f"{schema}.{m.name}: {len(missing)} partitions would be needed (timestamps from "
            f"{missing[0][0]:%Y-%m-%d} to {missing[-1][1]:%Y-%m-%d}); refusing more than "
            f"{MAX_NEW_PARTITIONS}"
        )
    conn.execute(f"SET LOCAL lock_timeout = '{ATTACH_LOCK_TIMEOUT}'")
    parent = f"{quote_ident(schema)}.{quote_ident(m.name)}"
    made = []
    for lo, hi in missing:
        name = partition_name(m, lo)
        child = f"{quote_ident(schema)}.{quote_ident(name)}"
        conn.execute(f"CREATE TABLE {child} (LIKE {parent} INCLUDING DEFAULTS)")
        span = f"FROM ({quote_literal(lo.isoformat())}) TO ({quote_literal(hi.isoformat())})"
        conn.execute(f"ALTER TABLE {parent} ATTACH PARTITION {child} FOR VALUES {span}")
        made.append(name)
    return made


def expired(
    parts: Sequence[tuple[str, Range]], m: Measurement, now: datetime, retention: float
) -> list[str]:
    """Our partitions (``<table>_p…``) whose upper bound is older than ``retention``."""
    if retention <= 0:
        return []
    cutoff = now - timedelta(seconds=retention)
    return [name for name, (_, hi) in parts if hi <= cutoff and name.startswith(f"{m.name}_p")]


def ensure_for(
    conn: psycopg.Connection[Any],
    schema: str,
    m: Measurement,
    timestamps: Iterable[datetime],
    interval: float,
    statement_timeout: float,
) -> list[str]:
    """Make sure the partitions for ``timestamps`` exist (blocking advisory lock: a batch
    waits for them). Returns the partitions created."""
    wanted = wanted_for(timestamps, interval)
    with conn.transaction():
        conn.execute(local_settings(statement_timeout))
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
        missing = gaps(wanted, [r for _, r in ranges(conn, schema, m.name)])
        return create(conn, schema, m, missing)


def maintain(
    conn: psycopg.Connection[Any],
    schema: str,
    tables: Sequence[Measurement],
    *,
    now: datetime,
    interval: float,
    retention: float,
    statement_timeout: float,
) -> tuple[list[str], list[str]] | None:
    """Partitions ahead, expired ones dropped: ``(created, dropped)``, or None when another
    collector holds the maintenance lock. Reads first; DDL only when something is to do."""
    todo = []
    for m in tables:
        parts = ranges(conn, schema, m.name)
        missing = gaps(wanted_around(now, interval), [r for _, r in parts])
        old = expired(parts, m, now, retention)
        if missing or old:
            todo.append(m)
    created: list[str] = []
    dropped: list[str] = []
    if not todo:
        return created, dropped
    with conn.transaction():
        conn.execute(local_settings(statement_timeout))
        got = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (PARTITION_LOCK,)).fetchone()
        if not got or not got[0]:
            return None
        for m in todo:
            parts = ranges(conn, schema, m.name)
            created += create(
                conn, schema, m, gaps(wanted_around(now, interval), [r for _, r in parts])
            )
    for m in todo:  # each drop in its own short transaction, bounded by lock_timeout
        for name in expired(ranges(conn, schema, m.name), m, now, retention):
            try:
                with conn.transaction():
                    conn.execute(local_settings(statement_timeout))
                    conn.execute(f"SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'")
                    lock = "SELECT pg_try_advisory_xact_lock(%s)"
                    got = conn.execute(lock, (PARTITION_LOCK,)).fetchone()
                    if not got or not got[0]:
                        return created, dropped
                    table = f"{quote_ident(schema)}.{quote_ident(name)}"
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
                dropped.append(name)
            except psycopg.errors.LockNotAvailable:
                continue  # busy parent: next maintenance
    return created, dropped
