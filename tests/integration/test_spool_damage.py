"""A damaged spool never stalls the PostgreSQL sink: the real collector, real segment files
with a flipped byte, a real server.

The collector samples with the server unreachable, so every record is only in the spool. One
byte is flipped in a segment while the collector is stopped (found at start) and another while
it runs (found while draining). When the server is reachable again every record of every
intact entry -- before and after the damage -- is in the database exactly once, the records of
the two damaged entries are not, and the damage is logged and counted. Likewise a segment
truncated to zero under the running collector (only its records are lost) and a spool
directory removed with ``rm -rf`` (re-created; a kill -9 afterwards loses nothing).
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from system_info_collector.sinks.stdout import record_line
from system_info_collector.spool import HEADER, decode_batch, scan
from tests.helpers import poll
from tests.integration.conftest import Collector, PgServer, _free_port
from tests.integration.faultproxy import FaultProxy
from tests.integration.test_postgres_outage import (
    Key,
    Query,
    assert_exactly_once,
    db_keys,
    stdout_keys,
    wait_ticks,
)

pytestmark = pytest.mark.integration


def flip_byte(spool: str, at: float) -> set[Key]:
    """Flip one byte ``at`` (0..1) into the oldest non-empty segment, in place as a bad disk
    would; return the keys of the records of the entry it hit."""
    segments = sorted(p for p in Path(spool).glob("spool-*.seg") if p.stat().st_size)
    data = segments[0].read_bytes()
    pos = int(len(data) * at)
    entries, damaged = scan(data)
    assert not damaged
    off, end, _ = next(e for e in entries if e[0] <= pos < e[1])
    hit = [json.loads(record_line(r)) for r in decode_batch(data[off + HEADER.size : end])]
    with open(segments[0], "r+b") as handle:
        handle.seek(pos)
        handle.write(bytes([data[pos] ^ 0x20]))
    return set(stdout_keys(hit))


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_flipped_bytes_in_the_spool_at_start_and_while_draining_lose_only_their_entries(
    pg_up: PgServer,
    db_schema: str,
    query: Query,
    proxy: FaultProxy,
    collector: Callable[..., Collector],
) -> None:
    host, port = proxy.address
    dsn = pg_up.dsn(host=host, port=port)
    proxy.refuse()  # unreachable from the start: everything goes to the spool
    first = collector(dsn, db_schema)
    wait_ticks(first, 30)
    assert first.stop() == 0
    spool = first.env["SIC_DB_SPOOL_DIR"]
    lost_at_start = flip_byte(spool, 0.3)

    http = _free_port()
    second = collector(dsn, db_schema, SIC_HTTP_LISTEN=f"127.0.0.1:{http}")
    [found] = poll(lambda: second.events("spool_damaged"), timeout=10, what="damage at start")
    assert found["level"] == "ERROR" and found["damaged_bytes"] > 0
    kept_at_start = found["intact_records"]
    wait_ticks(second, 5)
    lost_running = flip_byte(spool, 0.1)  # the recovered segment: read from disk, not memory
    proxy.heal()

    reference = set(stdout_keys(first.records()))
    assert kept_at_start == len(reference) - len(lost_at_start)
    poll(lambda: len(second.events("spool_damaged")) == 2, timeout=20, what="damage at run time")
    expected = reference - lost_at_start - lost_running
    poll(lambda: expected <= set(db_keys(query, db_schema)), timeout=20, what="intact rows")
    running = second.events("spool_damaged")[1]
    assert running["level"] == "ERROR" and running["lost_records"] == len(lost_running)
    assert metric(http, 'sic_spool_damage_events_total{sink="postgres"}') == 2
    assert (
        metric(http, 'sic_spool_damaged_bytes_total{sink="postgres"}') >= found["damaged_bytes"] + 1
    )
    wait_ticks(second, 3)
    assert second.stop() == 0

    in_db = db_keys(query, db_schema)
    assert lost_at_start and lost_running and not (lost_at_start | lost_running) & set(in_db)
    assert_exactly_once(sorted(expected | set(stdout_keys(second.records()))), in_db)
    aside = [p for p in Path(spool).iterdir() if ".torn-" in p.name]
    assert len(aside) == 2 and all(p.stat().st_size for p in aside)
    assert not [
        n
        for n in os.listdir(spool)
        if n.endswith(".seg") and os.path.getsize(os.path.join(spool, n))
    ]


def entry_keys(segment: Path) -> set[Key]:
    data = segment.read_bytes()
    entries, _ = scan(data)
    records = [r for off, end, _ in entries for r in decode_batch(data[off + HEADER.size : end])]
    return set(stdout_keys([json.loads(record_line(r)) for r in records]))


def test_a_segment_truncated_to_zero_while_draining_loses_only_what_it_held(
    pg_up: PgServer,
    db_schema: str,
    query: Query,
    proxy: FaultProxy,
    collector: Callable[..., Collector],
) -> None:
    host, port = proxy.address
    dsn = pg_up.dsn(host=host, port=port)
    proxy.refuse()
    small = {"SIC_DB_SPOOL_MAX_SIZE": "64KB"}  # 8 KiB segments: the outage spans several
    first = collector(dsn, db_schema, **small)
    wait_ticks(first, 30)
    assert first.stop() == 0
    assert len([p for p in Path(first.env["SIC_DB_SPOOL_DIR"]).glob("*.seg")]) >= 2
    second = collector(dsn, db_schema, **small)  # the spool is on disk only now: not cached
    poll(lambda: second.events("spool_recovered"), timeout=10, what="the spool recovered")
    spool = first.env["SIC_DB_SPOOL_DIR"]
    oldest = min(p for p in Path(spool).glob("spool-*.seg") if p.stat().st_size)
    lost = entry_keys(oldest)
    os.truncate(oldest, 0)  # `: > segment` under the running collector
    wait_ticks(second, 5)
    proxy.heal()
    kept = set(stdout_keys(first.records())) - lost
    poll(
        lambda: kept | set(stdout_keys(second.records())) <= set(db_keys(query, db_schema)),
        timeout=20,
        what="every record outside the truncated segment",
    )
    [damage] = second.events("spool_damaged")
    assert damage["level"] == "ERROR" and damage["lost_records"] == len(lost) > 0
    assert kept, "the segments after the truncated one were delivered"
    assert second.stop() == 0
    assert not lost & set(db_keys(query, db_schema))


def test_a_spool_directory_removed_while_running_is_recreated_and_survives_kill_9(
    pg_up: PgServer,
    db_schema: str,
    query: Query,
    proxy: FaultProxy,
    collector: Callable[..., Collector],
) -> None:
    host, port = proxy.address
    dsn = pg_up.dsn(host=host, port=port)
    proxy.refuse()
    first = collector(dsn, db_schema)
    wait_ticks(first, 10)
    spool = first.env["SIC_DB_SPOOL_DIR"]
    shutil.rmtree(spool)  # an operator's rm -rf, a volume re-created under the pod
    [removed] = poll(
        lambda: first.events("spool_files_removed"), timeout=10, what="the removal noticed"
    )
    assert removed["level"] == "ERROR" and removed["directory_recreated"] is True
    assert removed["lost_records"] == 0 and removed["kept_records"] > 0
    wait_ticks(first, 5)
    first.kill9()  # only what is on disk in the re-created directory can survive this
    proxy.heal()
    second = collector(dsn, db_schema)
    printed = set(stdout_keys(first.records()))
    poll(
        lambda: printed <= set(db_keys(query, db_schema)),
        timeout=20,
        what="everything sampled before the kill",
    )
    assert second.stop() == 0
