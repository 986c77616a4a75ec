"""DDL: the schema, the tables (from :mod:`~system_info_collector.schema`), the version row."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from system_info_collector import __version__
from system_info_collector.schema import MEASUREMENTS, Measurement
from system_info_collector.sinks.postgres.encoding import local_settings, quote_ident

SCHEMA_VERSION = 1
VERSION_TABLE = "sic_schema_version"
DDL_LOCK = 0x5_1C_DD_1  # pg_advisory_xact_lock key serialising concurrent DDL


def table_ident(schema: str, m: Measurement) -> sql.Identifier:
    return sql.Identifier(schema, m.name)


def columns_sql(m: Measurement) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(c) for c in m.columns)


def create_table_sql(schema: str, m: Measurement) -> sql.Composed:
    defs: list[sql.Composable] = [
        sql.SQL("{} timestamptz NOT NULL").format(sql.Identifier("ts")),
        sql.SQL("{} text NOT NULL").format(sql.Identifier("host")),
        *(sql.SQL("{} text NOT NULL").format(sql.Identifier(c)) for c in m.entity),
        *(sql.SQL("{} text NOT NULL DEFAULT ''").format(sql.Identifier(c)) for c in m.labels),
        *(sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(f.sql_type)) for f in m.fields),
        sql.SQL("{} jsonb NOT NULL DEFAULT '{{}}'::jsonb").format(sql.Identifier("tags")),
        sql.SQL("PRIMARY KEY ({})").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in m.primary_key)
        ),
    ]
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
        table_ident(schema, m), sql.SQL(", ").join(defs)
    )


def ensure_schema(
    conn: psycopg.Connection[Any],
    schema: str,
    timescale: str = "auto",
    *,
    statement_timeout: float = 30.0,
) -> str:
    """Create the schema, tables, indexes and version row if missing. Returns a summary."""
    notes: list[str] = []
    with conn.transaction():
        conn.execute(local_settings(statement_timeout))
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))
        if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone():
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            notes.append(f"created schema {schema}")
        hyper = False
        if timescale != "off":
            has_ext = conn.execute(
                "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"
            ).fetchone()
            if not has_ext and timescale == "on":
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                has_ext = (1,)
            hyper = bool(has_ext)
        for m in MEASUREMENTS.values():
            regclass = f"{quote_ident(schema)}.{quote_ident(m.name)}"
            exists = conn.execute("SELECT to_regclass(%s)", (regclass,)).fetchone()
            if exists is None or exists[0] is None:
                conn.execute(create_table_sql(schema, m))
                notes.append(f"created table {schema}.{m.name}")
                if hyper:
                    conn.execute(
                        "SELECT create_hypertable(%s::regclass, 'ts', if_not_exists => TRUE, "
                        "migrate_data => TRUE)",
                        (regclass,),
                    )
                else:
                    conn.execute(
                        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                            sql.Identifier(f"{m.name}_ts_idx"),
                            table_ident(schema, m),
                            sql.Identifier("ts"),
                        )
                    )
        version = sql.Identifier(schema, VERSION_TABLE)
        regclass = f"{quote_ident(schema)}.{quote_ident(VERSION_TABLE)}"
        exists = conn.execute("SELECT to_regclass(%s)", (regclass,)).fetchone()
        if exists is None or exists[0] is None:
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (version integer PRIMARY KEY, "
                    "applied_at timestamptz NOT NULL DEFAULT now(), collector_version text)"
                ).format(version)
            )
        row = conn.execute(sql.SQL("SELECT max(version) FROM {}").format(version)).fetchone()
        current = row[0] if row else None
        if current is None:
            conn.execute(
                sql.SQL("INSERT INTO {} (version, collector_version) VALUES (%s, %s) "
                        "ON CONFLICT DO NOTHING").format(version),
                (SCHEMA_VERSION, __version__),
            )  # fmt: skip
            current = SCHEMA_VERSION
        if current > SCHEMA_VERSION:
            notes.append(f"schema version {current} is newer than this collector's "
                         f"{SCHEMA_VERSION}")  # fmt: skip
    kind = "hypertables" if hyper else "tables"
    summary = f"schema {schema}: {kind} {', '.join(MEASUREMENTS)} ready (version {current})"
    return "; ".join([summary, *notes])
