"""Zero loss through outages: the real collector process, a real server, real network faults.

The collector runs with the stdout and PostgreSQL sinks; stdout is the reference of what was
sampled. Outages are compressed in time (100 ms ticks, 50 ms initial retry, 300 ms max wait):
after each scenario every sampled record is in the database exactly once.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from system_info_collector.schema import MEASUREMENTS
from tests.helpers import poll
from tests.integration.conftest import Collector, PgServer
from tests.integration.faultproxy import FaultProxy

pytestmark = pytest.mark.integration

Query = Callable[..., list[tuple[Any, ...]]]
Key = tuple[str, str, str, tuple[str, ...]]
SLOT = timedelta(milliseconds=100)


def stdout_keys(records: list[dict[str, Any]]) -> list[Key]:
    return [
        (
            r["measurement"],
            r["ts"],
            r["host"],
            tuple(r[c] for c in MEASUREMENTS[r["measurement"]].entity),
        )
        for r in records
    ]


def db_keys(query: Query, schema: str) -> list[Key]:
    keys: list[Key] = []
    for name in ("cpu", "memory"):
        m = MEASUREMENTS[name]
        cols = ", ".join(f'"{c}"' for c in ("ts", "host", *m.entity))
        try:
            rows = query(f'SELECT {cols} FROM "{schema}"."{name}"')
        except psycopg.errors.UndefinedTable:
            return []  # the collector has not created its tables yet
        for ts, host, *entity in rows:
            iso = ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            keys.append((name, iso, host, tuple(entity)))
    return keys


def caught_up(c: Collector, query: Query, schema: str) -> bool:
    """Everything the collector printed so far is in the database."""
    printed = set(stdout_keys(c.records()))
    return printed <= set(db_keys(query, schema))


def ticks_printed(c: Collector) -> int:
    """Ticks the collector has printed: one memory record per tick."""
    return sum(1 for line in list(c.stdout) if '"measurement":"memory"' in line)


def wait_ticks(c: Collector, ticks: int, timeout: float = 10.0) -> None:
    target = ticks_printed(c) + ticks
    poll(lambda: ticks_printed(c) >= target, timeout=timeout, what=f"{ticks} more ticks")


def assert_exactly_once(reference: list[Key], in_db: list[Key]) -> None:
    assert len(in_db) == len(set(in_db))
    assert len(reference) == len(set(reference)), "the collector sampled a slot twice"
    missing = set(reference) - set(in_db)
    extra = set(in_db) - set(reference)
    assert not missing, (
        f"{len(missing)} sampled records are not in the database: {sorted(missing)[:5]}"
    )
    assert not extra, f"{len(extra)} rows in the database were never sampled: {sorted(extra)[:5]}"


def assert_every_slot_sampled(c: Collector) -> None:
    """The run sampled every 100 ms slot (bar the ones it reported skipping), each once."""
    slots = sorted(
        datetime.fromisoformat(k[1]) for k in stdout_keys(c.records()) if k[0] == "memory"
    )
    assert len(slots) == len(set(slots)) and len(slots) >= 3
    skipped = sum(e["skipped_slots"] for e in c.events("tick_overrun"))
    gaps = sum(round((b - a) / SLOT) - 1 for a, b in itertools.pairwise(slots))
    assert gaps == skipped, f"{gaps} missing 100ms slots, {skipped} skipped by overruns"


def test_refused_cut_black_holed_and_restarted_server_lose_nothing(
    pg_up: PgServer,
    db_schema: str,
    query: Query,
    proxy: FaultProxy,
    collector: Callable[..., Collector],
) -> None:
    host, port = proxy.address
    c = collector(pg_up.dsn(host=host, port=port), db_schema)
    poll(lambda: db_keys(query, db_schema), timeout=15, what="first rows in the database")

    # 1. the server's address refuses connections and the open connection is cut
    proxy.refuse()
    proxy.cut()
    poll(lambda: c.events("sink_degraded"), timeout=10, what="the sink to degrade to probing")
    wait_ticks(c, 5)
    proxy.heal()
    poll(lambda: caught_up(c, query, db_schema), timeout=10, what="catch-up after refusal")

    # 2. a black hole: connections accepted, nothing answered. Sampling must not stall.
    proxy.blackhole()
    before = len(c.stdout)
    started = time.monotonic()
    wait_ticks(c, 15, timeout=5)
    assert time.monotonic() - started < 3.0, "sampling slowed down behind a black-holed server"
    assert not c.events("tick_overrun")
    poll(
        lambda: (
            [e for e in c.events("sink_write_failed") if "no answer within" in e["error"]]
            or [e for e in c.events("sink_degraded") if "no answer within" in e["error"]]
        ),
        timeout=10,
        what="the client-side deadline to cut the black-holed connection",
    )
    proxy.heal()
    assert len(c.stdout) > before
    poll(lambda: caught_up(c, query, db_schema), timeout=15, what="catch-up after black hole")

    # 3. the server itself stops, then restarts (maybe on another port)
    if pg_up.can_stop:
        pg_up.stop()
        wait_ticks(c, 8)
        assert c.events("sink_write_failed")[-1]["ts"] > c.events("sink_recovered")[-1]["ts"]
        pg_up.start()
        proxy.upstream = pg_up.address
        poll(lambda: caught_up(c, query, db_schema), timeout=20, what="catch-up after restart")

    assert c.stop() == 0
    assert c.events("sink_recovered")
    assert_exactly_once(stdout_keys(c.records()), db_keys(query, db_schema))
    assert_every_slot_sampled(c)
    assert not [e for e in c.events() if e.get("level") == "CRITICAL"]


def test_kill_9_during_an_outage_then_restart_loses_nothing(
    pg_up: PgServer,
    db_schema: str,
    query: Query,
    proxy: FaultProxy,
    collector: Callable[..., Collector],
) -> None:
    host, port = proxy.address
    dsn = pg_up.dsn(host=host, port=port)
    first = collector(dsn, db_schema)
    poll(lambda: db_keys(query, db_schema), timeout=15, what="first rows in the database")
    proxy.refuse()
    proxy.cut()
    wait_ticks(first, 10)
    first.kill9()  # mid-outage: what was sampled is only in the spool
    spool = first.env["SIC_DB_SPOOL_DIR"]
    assert any(
        name.endswith(".seg") and os.path.getsize(os.path.join(spool, name))
        for name in os.listdir(spool)
    )
    proxy.heal()

    second = collector(dsn, db_schema)  # same spool directory
    recovered = poll(lambda: second.events("spool_recovered"), timeout=10, what="spool replay")
    assert recovered[0]["records"] > 0
    poll(lambda: caught_up(first, query, db_schema), timeout=15, what="the spool replayed")
    wait_ticks(second, 3)
    assert second.stop() == 0

    in_db = db_keys(query, db_schema)
    reference = stdout_keys(first.records()) + stdout_keys(second.records())
    # the tick in flight when kill -9 hit may be spooled (so in the database) but not printed
    last_printed = max(k[1] for k in stdout_keys(first.records()))
    in_flight = {k for k in set(in_db) - set(reference) if k[1] > last_printed}
    assert_exactly_once(reference, [k for k in in_db if k not in in_flight])
    assert len({k[1] for k in in_flight}) <= 1
    assert_every_slot_sampled(first)
    assert_every_slot_sampled(second)
    leftover = [
        n
        for n in os.listdir(spool)
        if n.endswith(".seg") and os.path.getsize(os.path.join(spool, n))
    ]
    assert not leftover, "committed spool segments were not trimmed"


def test_paused_and_restarted_container(
    pg_up: PgServer,
    db_schema: str,
    query: Query,
    proxy: FaultProxy,
    collector: Callable[..., Collector],
) -> None:
    if pg_up.kind != "docker":
        pytest.skip(f"needs the testcontainers PostgreSQL (server here: {pg_up.kind})")
    container = pg_up.container.get_wrapped_container()  # the docker SDK's Container
    host, port = proxy.address
    c = collector(pg_up.dsn(host=host, port=port), db_schema)
    poll(lambda: db_keys(query, db_schema), timeout=15, what="first rows in the database")

    container.pause()  # frozen: TCP is accepted by the engine, nothing answers
    started = time.monotonic()
    wait_ticks(c, 15, timeout=5)
    assert time.monotonic() - started < 3.0, "sampling slowed down behind a frozen server"
    poll(lambda: c.events("sink_write_failed"), timeout=10, what="the frozen server to be noticed")
    container.unpause()
    poll(lambda: caught_up(c, query, db_schema), timeout=15, what="catch-up after unpause")

    container.stop(timeout=5)
    wait_ticks(c, 8)
    container.start()
    pg_up.wait_ready()  # the engine may map a new host port
    proxy.upstream = pg_up.address
    poll(lambda: caught_up(c, query, db_schema), timeout=20, what="catch-up after restart")
    assert c.stop() == 0
    assert_exactly_once(stdout_keys(c.records()), db_keys(query, db_schema))
    assert_every_slot_sampled(c)
