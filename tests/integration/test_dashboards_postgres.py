"""Every SQL query of the chart's PostgreSQL dashboard, run on the real PostgreSQL against the
tables the collector wrote (Grafana's macros expanded as Grafana's PostgreSQL data source does)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import poll
from tests.integration.conftest import Collector, PgServer

pytestmark = pytest.mark.integration

DASHBOARD = (
    Path(__file__).resolve().parents[2]
    / "helm/system-info-collector/dashboards/system-info-collector-postgres.json"
)
TABLES = ("cpu", "memory", "disk", "diskio", "system", "net", "vmstat")


def expand(sql: str, schema: str, hosts: list[str]) -> str:
    """Grafana's $__timeFilter, $__timeGroupAlias (interval 1s) and variables, as text."""
    start = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    end = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 BETWEEN '{start}' AND '{end}'", sql)
    sql = re.sub(
        r"\$__timeGroupAlias\((\w+), *\$__interval\)",
        r'floor(extract(epoch from \1)/1)*1 AS "time"',
        sql,
    )
    sql = sql.replace("${schema}", schema)
    sql = sql.replace("($host)", "(" + ", ".join(f"'{h}'" for h in hosts) + ")")
    assert "$" not in sql, f"unexpanded macro or variable in {sql}"
    return sql


def test_every_dashboard_query_runs_on_the_collectors_tables(
    pg_up: PgServer,
    db_schema: str,
    collector: Callable[..., Collector],
    query: Callable[..., list[tuple[Any, ...]]],
) -> None:
    c = collector(pg_up.dsn(), db_schema, SIC_COLLECTORS=",".join(TABLES), SIC_HOSTNAME="node-1")

    def every_table_has_two_ticks() -> bool:
        try:
            return all(
                query(f'SELECT count(DISTINCT ts) FROM "{db_schema}".{t}')[0][0] >= 2
                for t in TABLES
            )
        except Exception:
            return False

    poll(every_table_has_two_ticks, timeout=20, what="rows in every table")
    assert c.stop() == 0
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    hosts = [row[0] for row in query(expand(variables["host"]["query"], db_schema, []))]
    assert hosts == ["node-1"]
    ran = 0
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            sql = expand(target["rawSql"], db_schema, hosts)
            rows = query(sql)
            assert rows, f"{panel['title']}: no rows from\n{sql}"
            if target["format"] == "time_series":
                assert all(len(r) == 3 and r[2] is not None for r in rows), panel["title"]
                assert {r[1].split(" ")[0] for r in rows} == {"node-1"}, panel["title"]
            ran += 1
    assert ran == sum(len(p.get("targets", [])) for p in dashboard["panels"]) > 5
