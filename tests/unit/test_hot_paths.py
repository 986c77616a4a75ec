"""The per-record hot paths, made cheap, give exactly what the straightforward code they replaced
gave (kept here as the reference): CPU shares, disk I/O rates, the /metrics snapshot."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from system_info_collector.agent import Agent, LatestRecords, merge_latest
from system_info_collector.config import load_settings
from system_info_collector.hostpaths import HostPaths
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.providers import build_providers
from system_info_collector.providers.cpu import shares
from system_info_collector.providers.diskio import (
    DEFAULT_DEVICES_EXCLUDE,
    SECTOR_BYTES,
    DiskIOProvider,
)
from system_info_collector.scheduler import Tick
from system_info_collector.schema import MEASUREMENTS
from tests.helpers import PROC_FIXTURES

COLUMNS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest",
           "guest_nice")  # fmt: skip


def reference_shares(prev: tuple[int, ...], cur: tuple[int, ...]) -> dict[str, float] | None:
    deltas = [c - p for p, c in zip(prev, cur, strict=True)]
    if any(d < 0 for d in deltas):
        return None
    total = sum(deltas[:8])
    if total <= 0:
        return None
    fields = {f"{name}_percent": 100.0 * d / total for name, d in zip(COLUMNS, deltas, strict=True)}
    fields["usage_percent"] = 100.0 * (total - deltas[3] - deltas[4]) / total
    return fields


def test_cpu_shares_are_the_same_floats_in_the_same_order() -> None:
    rng = random.Random("cpu-shares")
    for _ in range(5000):
        prev = tuple(rng.randrange(0, 10**12) for _ in COLUMNS)
        step = rng.choice([0, 1, 7, 1000, 10**6])
        cur = tuple(p + rng.randrange(-1 if rng.random() < 0.05 else 0, step + 1) for p in prev)
        got, want = shares(prev, cur), reference_shares(prev, cur)
        assert got == want
        if want is not None:
            assert got is not None and list(got) == list(want)  # column order too


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def diskstats(devices: dict[str, list[int]]) -> str:
    return "".join(f" 259 {i} {d} " + " ".join(map(str, n)) + "\n"
                   for i, (d, n) in enumerate(devices.items()))  # fmt: skip


def test_diskio_rates_are_the_same_numbers(tmp_path: Path) -> None:
    rng = random.Random("diskio")
    names = ["nvme0n1", "sda", "loop3", "vdb", "dm-0"]
    counters = {d: [rng.randrange(10**9) for _ in range(17)] for d in names}
    (tmp_path / "diskstats").write_text(diskstats(counters))
    clock = Clock()
    exclude = re.compile(DEFAULT_DEVICES_EXCLUDE)
    provider = DiskIOProvider(HostPaths(proc=str(tmp_path)), clock=clock, devices_exclude=exclude)
    provider.prime()
    for _ in range(50):
        before = {d: list(n) for d, n in counters.items()}
        for n in counters.values():
            for i in range(len(n)):
                n[i] += rng.randrange(0, 5000)
        if rng.random() < 0.1:
            counters["sda"][0] = 0  # a reset: no sample for sda this time
        then = clock.now
        clock.now += rng.choice([0.25, 1.0, 0.999, 3.0])
        elapsed = clock.now - then
        (tmp_path / "diskstats").write_text(diskstats(counters))
        got = {s.tags["device"]: dict(s.fields) for s in provider.collect()}
        want = {}
        for d, n in counters.items():
            p = before[d]
            if d == "loop3" or any(n[i] < p[i] for i in (0, 2, 3, 4, 6, 7, 9)):
                continue
            dlt = [c - q for q, c in zip(p, n, strict=True)]
            want[d] = {
                "reads_total": n[0], "writes_total": n[4],
                "read_bytes_total": n[2] * SECTOR_BYTES, "written_bytes_total": n[6] * SECTOR_BYTES,
                "read_time_seconds_total": n[3] / 1000.0,
                "write_time_seconds_total": n[7] / 1000.0, "io_time_seconds_total": n[9] / 1000.0,
                "read_bytes_per_second": dlt[2] * SECTOR_BYTES / elapsed,
                "write_bytes_per_second": dlt[6] * SECTOR_BYTES / elapsed,
                "reads_per_second": dlt[0] / elapsed, "writes_per_second": dlt[4] / elapsed,
                "utilization_percent": min(100.0, dlt[9] / (elapsed * 10.0)),
            }  # fmt: skip
        assert got == want


def reference_merge(
    latest: dict[str, list[Record]], records: list[Record]
) -> dict[str, list[Record]]:
    def entity(r: Record) -> tuple[str, ...]:
        return tuple(r.tags.get(k, "") for k in MEASUREMENTS[r.measurement].entity)

    merged = {name: {entity(r): r for r in recs} for name, recs in latest.items()}
    for record in records:
        merged.setdefault(record.measurement, {})[entity(record)] = record
    return {name: list(by_entity.values()) for name, by_entity in merged.items()}


def test_latest_records_match_a_full_merge_every_tick() -> None:
    rng = random.Random("latest")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    kept = LatestRecords()
    want: dict[str, list[Record]] = {}
    for i in range(200):
        ts = t0 + timedelta(seconds=i)
        batch = []
        for name, m in MEASUREMENTS.items():
            for _ in range(rng.randrange(0, 6)):
                tags = {c: f"{c}{rng.randrange(4)}" for c in m.entity}
                batch.append(Record(name, ts, "h", tags, {"n": i}))
        got = kept.update(batch)
        want = reference_merge(want, batch)
        assert got == want and [list(got)] == [list(want)]
        assert merge_latest(want, batch) == reference_merge(want, batch)


@pytest.mark.parametrize(
    ("env", "kept"),
    [
        ({}, True),
        ({"SIC_HTTP_LISTEN": ""}, False),
        ({"SIC_PROMETHEUS_HOST_METRICS": "false"}, False),
    ],
)
def test_the_metrics_snapshot_is_kept_only_when_host_metrics_are_exposed(
    env: dict[str, str], kept: bool
) -> None:
    proc = str(PROC_FIXTURES / "basic")
    settings = load_settings(
        {"SIC_HOST_PROC": proc, "SIC_COLLECTORS": "memory", "SIC_SINKS": "stdout", **env}
    )
    agent = Agent(settings, build_providers(settings), [], Metrics(), host="h")
    agent.start()
    try:
        ts = datetime.fromtimestamp(1_000, UTC)
        accepted = agent.tick(Tick(1_000, ts, 0.0, 0.0))
    finally:
        agent.close()
    assert [r.measurement for r in accepted] == ["memory"]
    assert agent.latest == ({"memory": accepted} if kept else {})
