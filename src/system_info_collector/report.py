"""``system-info-collector report``: per host and hour, completeness and freshness of the
samples stored in PostgreSQL -- the fleet's delivery SLOs measured from the data itself.

One row per host and UTC hour of the window (``--hours``, default 24), from the ``memory``
table (one row per host and tick, whatever the number of CPUs, disks or devices):

* ``samples`` -- ticks stored; ``expected`` -- ticks the interval (``--expected-interval``, default
  the memory collector's interval of this configuration) puts in the part of the hour the host
  was known: from its first sample in the window to the end of the hour, or to now minus one
  minute (the grace that in-flight samples get) for the current hour. A host that stopped
  sending keeps being expected: silence is what the report is for.
* ``complete_pct`` -- samples / expected (above 100 when the host samples more often than
  ``--expected-interval`` says);
* ``max_gap_s`` -- the longest time between two consecutive samples ending in that hour;
* ``newest_age_s`` -- on each host's last row: how old its newest stored sample is now.

Rows the sink wrote late count in the hour of their *sample time*: a backlog written after an
outage fills its hours up again, as the "100 % eventually" objective means.
"""

from __future__ import annotations

import csv
import math
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import psycopg
from psycopg import sql

from system_info_collector.config import PostgresSettings
from system_info_collector.redact import redact_secret
from system_info_collector.sinks.postgres import connect, dsn_secrets, read_password

GRACE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
COLUMNS = ("host", "hour_utc", "samples", "expected", "complete_pct", "max_gap_s", "newest_age_s")

_QUERY = """
WITH s AS (
    SELECT host, ts, ts - lag(ts) OVER (PARTITION BY host ORDER BY ts) AS gap
    FROM {table} WHERE ts >= %(since)s
)
SELECT host, date_trunc('hour', ts AT TIME ZONE 'UTC') AS hour, count(*),
       extract(epoch FROM max(gap))::float8, min(min(ts)) OVER (PARTITION BY host),
       max(max(ts)) OVER (PARTITION BY host)
FROM s GROUP BY host, hour ORDER BY host, hour
"""


@dataclass(frozen=True, slots=True)
class Row:
    host: str
    hour: datetime
    samples: int
    expected: int
    max_gap: float | None
    newest_age: float | None

    @property
    def complete_pct(self) -> float | None:
        return 100.0 * self.samples / self.expected if self.expected else None

    def cells(self) -> list[str]:
        def num(v: float | None, digits: int = 1) -> str:
            return "" if v is None else f"{v:.{digits}f}"

        return [
            self.host,
            self.hour.strftime("%Y-%m-%dT%H:00Z"),
            str(self.samples),
            str(self.expected),
            num(self.complete_pct, 2),
            num(self.max_gap),
            num(self.newest_age),
        ]


def _ticks_between(start: datetime, end: datetime, interval: float) -> int:
    """Multiples of ``interval`` (Unix time, as the scheduler aligns ticks) in [start, end)."""
    if end <= start:
        return 0
    first = math.ceil(start.timestamp() / interval - 1e-9)
    return math.ceil(end.timestamp() / interval - 1e-9) - first


def rows(
    conn: psycopg.Connection[Any], schema: str, *, hours: int, interval: float, now: datetime
) -> list[Row]:
    """One :class:`Row` per host and hour, from the host's first hour in the window up to the
    current hour -- hours without a single sample included."""
    current = now.replace(minute=0, second=0, microsecond=0)
    since = current - timedelta(hours=hours - 1)
    query = sql.SQL(_QUERY).format(table=sql.Identifier(schema, "memory"))
    by_host: dict[str, dict[datetime, tuple[int, float | None]]] = {}
    known: dict[str, tuple[datetime, datetime]] = {}
    for host, hour, samples, max_gap, first_ts, last_ts in conn.execute(
        query, {"since": since}
    ).fetchall():
        by_host.setdefault(host, {})[hour.replace(tzinfo=UTC)] = (samples, max_gap)
        known[host] = (first_ts, last_ts)
    out: list[Row] = []
    for host in sorted(by_host):
        first_ts, last_ts = known[host]
        hour = first_ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        while hour <= current:
            samples, max_gap = by_host[host].get(hour, (0, None))
            start, end = max(hour, first_ts), min(hour + HOUR, now - GRACE)
            age = (now - last_ts).total_seconds() if hour == current else None
            out.append(Row(host, hour, samples, _ticks_between(start, end, interval), max_gap, age))
            hour += HOUR
    return out


def report(
    settings: PostgresSettings,
    *,
    hours: int,
    interval: float,
    fmt: str = "text",
    out: TextIO = sys.stdout,
    now: datetime | None = None,
) -> int:
    """Print the report; 0 on success, 1 when the database cannot be read (message on stderr)."""
    try:
        password = read_password(settings)
    except OSError as exc:
        print(f"system-info-collector report: SIC_DB_PASSWORD_FILE: {exc}", file=sys.stderr)
        return 1
    try:
        with connect(settings, password) as conn:
            found = rows(
                conn, settings.schema, hours=hours, interval=interval, now=now or datetime.now(UTC)
            )
    except psycopg.Error as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        message = redact_secret(text, dsn_secrets(settings, password))
        print(f"system-info-collector report: {message}", file=sys.stderr)
        return 1
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(r.cells() for r in found)
        return 0
    table = [list(COLUMNS), *(r.cells() for r in found)]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    for row in table:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")
    return 0
