"""DDL: the schema, the tables (from :mod:`~system_info_collector.schema`), the version row."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from system_info_collector import __version__
from system_info_collector.schema import MEASUREMENTS, Measurement
from system_info_collector.sinks.postgres import partitions
from system_info_collector.sinks.postgres.encoding import column_types, local_settings, quote_ident

SCHEMA_VERSION = 3  # 1: plain tables; 2: range-partitioned by ts; 3: interval_ms column
VERSION_TABLE = "sic_schema_version"
DDL_LOCK = 0x5_1C_DD_1  # pg_advisory_xact_lock key serialising concurrent DDL


def create_table_sql(
    schema: str, m: Measurement, *, partitioned: bool = False, name: str | None = None
) -> sql.Composed:
    defs: list[sql.Composable] = [
        sql.SQL("{} timestamptz NOT NULL").format(sql.Identifier("ts")),
        sql.SQL("{} text NOT NULL").format(sql.Identifier("host")),
        *(sql.SQL("{} text NOT NULL").format(sql.Identifier(c)) for c in m.entity),
        *(sql.SQL("{} text NOT NULL DEFAULT ''").format(sql.Identifier(c)) for c in m.labels),
        *(sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(f.sql_type)) for f in m.fields),
        sql.SQL("{} jsonb NOT NULL DEFAULT '{{}}'::jsonb").format(sql.Identifier("tags")),
        sql.SQL("{} integer").format(sql.Identifier("interval_ms")),
        sql.SQL("PRIMARY KEY ({})").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in m.primary_key)
        ),
    ]
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}){}").format(
        sql.Identifier(schema, name or m.name),
        sql.SQL(", ").join(defs),
        sql.SQL(" PARTITION BY RANGE (ts)" if partitioned else ""),
    )


def create_ts_index_sql(schema: str, table: str) -> sql.Composed:
    """The time-range index: BRIN on ``ts`` (rows arrive in time order; measured against a
    B-tree in docs/benchmarks.md: 400 times smaller, as fast for range scans)."""
    return sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING brin ({})").format(
        sql.Identifier(f"{table}_ts_idx"), sql.Identifier(schema, table), sql.Identifier("ts")
    )


@dataclass(frozen=True, slots=True)
class SchemaState:
    """What :func:`ensure_schema` found or made."""

    summary: str
    partitioned: tuple[str, ...] = ()  # measurement tables partitioned by ts
    unpartitioned: tuple[str, ...] = ()  # plain tables (schema version 1): `db migrate`
    hypertables: bool = False
    created: tuple[str, ...] = ()


def relkinds(conn: psycopg.Connection[Any], schema: str) -> dict[str, str]:
    """``{table: relkind}`` of our tables that exist (``r`` plain, ``p`` partitioned)."""
    rows = conn.execute(
        "SELECT c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = ANY(%s)",
        (schema, [*MEASUREMENTS, VERSION_TABLE]),
    ).fetchall()
    return {name: kind for name, kind in rows}


def ensure_schema(
    conn: psycopg.Connection[Any],
    schema: str,
    timescale: str = "auto",
    *,
    statement_timeout: float = 30.0,
    partition_interval: float = 0.0,
    now: datetime | None = None,
) -> SchemaState:
    """Create the schema, tables (range-partitioned by ``ts`` when ``partition_interval``),
    indexes, the current and next partitions and the version row if missing.

    Reads the catalogue first and takes the DDL advisory lock only when something is
    missing: a thousand collectors starting at once do not queue on it. An existing plain
    table (schema version 1) is left as it is and reported in ``unpartitioned``.
    """
    notes: list[str] = []
    created: list[str] = []
    now = now or datetime.now(UTC)
    with conn.transaction():
        conn.execute(local_settings(statement_timeout))
        kinds = relkinds(conn, schema)
        if len(kinds) < len(MEASUREMENTS) + 1:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))
            kinds = relkinds(conn, schema)
        hyper = False
        if timescale != "off":
            has_ext = conn.execute(
                "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"
            ).fetchone()
            if not has_ext and timescale == "on":
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                has_ext = (1,)
            hyper = bool(has_ext)
        if len(kinds) < len(MEASUREMENTS) + 1:
            exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
            if not exists.fetchone():
                conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                )
                notes.append(f"created schema {schema}")
        partition = partition_interval > 0 and not hyper
        for m in MEASUREMENTS.values():
            if m.name in kinds:
                continue
            conn.execute(create_table_sql(schema, m, partitioned=partition))
            kinds[m.name] = "p" if partition else "r"
            notes.append(f"created table {schema}.{m.name}")
            if hyper:  # TimescaleDB: its chunks are the partitions (not tested here)
                conn.execute(
                    "SELECT create_hypertable(%s::regclass, 'ts', if_not_exists => TRUE, "
                    "migrate_data => TRUE)",
                    (f"{quote_ident(schema)}.{quote_ident(m.name)}",),
                )
            else:
                conn.execute(create_ts_index_sql(schema, m.name))
        added = add_missing_columns(conn, schema, [n for n in MEASUREMENTS if n in kinds])
        notes += [f"added interval_ms to {schema}.{n}" for n in added]
        current = _version(conn, schema, VERSION_TABLE in kinds)
        if added and current < SCHEMA_VERSION:
            record_version(conn, schema, SCHEMA_VERSION)
            current = SCHEMA_VERSION
        if current > SCHEMA_VERSION:
            notes.append(
                f"schema version {current} is newer than this collector's {SCHEMA_VERSION}"
            )
    partitioned = tuple(n for n in MEASUREMENTS if kinds.get(n) == "p")
    unpartitioned = tuple(n for n in MEASUREMENTS if kinds.get(n) == "r")
    if partitioned and partition_interval > 0:
        made = partitions.maintain(
            conn,
            schema,
            [MEASUREMENTS[n] for n in partitioned],
            now=now,
            interval=partition_interval,
            retention=0,
            statement_timeout=statement_timeout,
        )
        if made:
            created += made[0]
    if created:
        notes.append(f"created partitions {', '.join(created)}")
    if unpartitioned and partition_interval > 0 and not hyper:
        notes.append(
            f"not partitioned (schema version 1): {', '.join(unpartitioned)} -- no retention "
            "applies to them; `system-info-collector db migrate` converts them (keeps every row)"
        )
    kind = "hypertables" if hyper else "partitioned tables" if partitioned else "tables"
    summary = f"schema {schema}: {kind} {', '.join(MEASUREMENTS)} ready (version {current})"
    return SchemaState(
        "; ".join([summary, *notes]), partitioned, unpartitioned, hyper, tuple(created)
    )


def add_missing_columns(conn: psycopg.Connection[Any], schema: str, tables: list[str]) -> list[str]:
    """Schema version 3: give tables created before it ``interval_ms integer`` (NULL in their
    rows: those stood for the ``SIC_INTERVAL`` of their time); returns the tables changed.

    One catalogue read when nothing is missing; otherwise under the DDL lock. ``ADD COLUMN`` of
    a nullable column without a default only changes the catalogue: instant on a table of any
    size, and on a partitioned table it reaches every partition. It comes last, as in a new
    table, so old and new tables have the same column order."""

    def lacking() -> list[str]:
        have = conn.execute(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = %s "
            "AND column_name = 'interval_ms' AND table_name = ANY(%s)",
            (schema, tables),
        ).fetchall()
        return sorted(set(tables) - {name for (name,) in have}, key=tables.index)

    if not tables or not lacking():
        return []
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))
    todo = lacking()
    for name in todo:
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} integer").format(
                sql.Identifier(schema, name), sql.Identifier("interval_ms")
            )
        )
    return todo


def _version(conn: psycopg.Connection[Any], schema: str, exists: bool) -> int:
    """The schema version recorded, recording this collector's if none is."""
    version = sql.Identifier(schema, VERSION_TABLE)
    if not exists:
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (version integer PRIMARY KEY, "
                "applied_at timestamptz NOT NULL DEFAULT now(), collector_version text)"
            ).format(version)
        )
    row = conn.execute(sql.SQL("SELECT max(version) FROM {}").format(version)).fetchone()
    current = row[0] if row else None
    if current is None:
        record_version(conn, schema, SCHEMA_VERSION)
        current = SCHEMA_VERSION
    return int(current)


def record_version(conn: psycopg.Connection[Any], schema: str, version: int) -> None:
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (version, collector_version) VALUES (%s, %s) ON CONFLICT DO NOTHING"
        ).format(sql.Identifier(schema, VERSION_TABLE)),
        (version, __version__),
    )


_TYPE_NAMES = {"timestamptz": "timestamp with time zone"}


def verify(conn: psycopg.Connection[Any], schema: str) -> dict[str, list[str]]:
    """Schema drift: ``{table: [problem, ...]}`` for each of our tables whose columns, types,
    primary key or constraints differ from :mod:`~system_info_collector.schema` (a table that
    does not exist is not drift: :func:`ensure_schema` creates it)."""
    found: dict[str, list[str]] = {}
    rows = conn.execute(
        "SELECT table_name, column_name, data_type, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_schema = %s AND table_name = ANY(%s)",
        (schema, list(MEASUREMENTS)),
    ).fetchall()
    columns: dict[str, dict[str, tuple[str, str, str | None]]] = {}
    for table, column, data_type, nullable, default in rows:
        columns.setdefault(table, {})[column] = (data_type, nullable, default)
    for name, m in MEASUREMENTS.items():
        have = columns.get(name)
        if have is None:
            continue
        problems = []
        for column, sql_type in column_types(m):
            expected = _TYPE_NAMES.get(sql_type, sql_type)
            if column not in have:
                problems.append(f"column {column} is missing (expected {expected})")
            elif have[column][0] != expected:
                problems.append(f"column {column} is {have[column][0]}, expected {expected}")
        for column, (data_type, nullable, default) in have.items():
            if column not in m.columns and nullable == "NO" and default is None:
                problems.append(
                    f"extra column {column} ({data_type}) is NOT NULL without a "
                    "default: no insert can succeed"
                )
        regclass = f"{quote_ident(schema)}.{quote_ident(name)}"
        constraints = conn.execute(
            "SELECT conname, contype::text, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype IN ('c', 'p', 'u', 'f', 'x')",
            (regclass,),
        ).fetchall()
        key = f"PRIMARY KEY ({', '.join(m.primary_key)})"
        if not any(kind == "p" and text == key for _, kind, text in constraints):
            problems.append(f"the primary key is not {key} (idempotent writes need it)")
        for conname, kind, text in constraints:
            if kind != "p":
                problems.append(f"constraint {conname} ({text}) is not part of the schema")
        if problems:
            found[name] = problems
    return found
