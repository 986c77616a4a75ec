"""The remote_write sink: the series it buffers at tick time (those of a ``/metrics`` scrape)
and the WriteRequest a receiver decodes."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import cramjam
import pytest

from system_info_collector.agent import Agent, LatestRecords
from system_info_collector.config import (
    BufferSettings,
    HostMetricsMode,
    RemoteWriteSettings,
    Settings,
)
from system_info_collector.exposition import HostMetricsCollector
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.providers import build_providers
from system_info_collector.scheduler import Tick
from system_info_collector.sinks.prompb import write_request_class
from system_info_collector.sinks.remote_write import RemoteWriteSink, by_tick, chunk_ticks
from system_info_collector.sinks.series import SERIES, with_leftovers_mapped
from tests.helpers import poll

T0 = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)


def records(ticks: int, cpus: int = 2) -> list[Record]:
    return [
        Record(
            SERIES,
            T0 + timedelta(seconds=t),
            "web-1",
            {"cpu": str(c), "mode": mode, "env": "prod"},
            {"node_cpu_seconds_total": t + c / 10 + (mode == "idle")},
        )
        for t in range(ticks)
        for c in range(cpus)
        for mode in ("user", "idle")
    ]


def sink() -> RemoteWriteSink:
    s = RemoteWriteSink(RemoteWriteSettings(url="http://127.0.0.1:1/w"), metrics=Metrics())
    s._request_class = write_request_class()
    return s


def test_one_series_per_field_labels_sorted_samples_in_time_order() -> None:
    s = sink()
    request, count = s.encode(by_tick(reversed(records(3))))
    assert count == 12 and len(request.timeseries) == 4
    decoded = write_request_class().FromString(
        bytes(cramjam.snappy.decompress_raw(s._compress(request)))
    )
    for ts in decoded.timeseries:
        names = [label.name for label in ts.labels]
        assert names == sorted(names) and len(set(names)) == len(names)
        assert all(label.value for label in ts.labels)
        stamps = [sample.timestamp for sample in ts.samples]
        assert stamps == sorted(stamps) and len(stamps) == 3
    first = next(
        ts
        for ts in decoded.timeseries
        if {("cpu", "1"), ("mode", "user")} <= {(la.name, la.value) for la in ts.labels}
    )
    assert {(la.name, la.value) for la in first.labels} == {
        ("__name__", "node_cpu_seconds_total"),
        ("cpu", "1"),
        ("mode", "user"),
        ("env", "prod"),
        ("instance", "web-1"),
        ("job", "system-info-collector"),
    }
    assert [(x.timestamp, x.value) for x in first.samples] == [
        (int(T0.timestamp() * 1000) + 1000 * t, t + 0.1) for t in range(3)
    ]


def test_requests_are_bounded_and_never_split_a_tick() -> None:
    chunks = list(chunk_ticks(by_tick(records(5)), 10))  # 4 samples a tick (2 CPUs, 2 modes)
    assert [len(c) for c in chunks] == [2, 2, 1]
    assert [r for c in chunks for t in c for r in t] == records(5)


COLLECTORS = ("cpu", "memory", "disk", "diskio", "net", "system", "vmstat", "filefd", "sockets")


def agent_with(mode: HostMetricsMode) -> tuple[Agent, RemoteWriteSink]:
    settings = Settings(
        interval=0.1,
        collectors=COLLECTORS,
        tags={"env": "prod"},
        buffers={"remote_write": BufferSettings()},  # in memory
    )
    sink = RemoteWriteSink(
        RemoteWriteSettings(url="http://127.0.0.1:1/w"),
        metrics=Metrics(),
        mode=mode,
        tags=settings.tags,
    )
    return Agent(settings, build_providers(settings), [sink], Metrics(), host="h"), sink


def tick_with_cpu(agent: Agent) -> list[Record]:
    """Tick until a tick has CPU records; the sink's buffer then holds that tick only."""
    [worker] = agent.workers

    def once() -> list[Record] | None:
        while (held := worker.buffer.batch(1_000_000)) is not None:
            worker.buffer.accept(held)
        slot = int(time.time() / 0.1)
        ts = datetime.fromtimestamp(round(slot * 0.1, 3), UTC)
        records = agent.tick(Tick(slot, ts, time.monotonic(), 0.0))
        return records if any(r.measurement == "cpu" for r in records) else None

    return poll(once, what="a tick with cpu records")


@pytest.mark.parametrize("mode", ["node", "sic"])
def test_the_buffered_series_are_those_a_scrape_of_metrics_shows(mode: HostMetricsMode) -> None:
    """The real providers on this host, one tick: what the sink's worker buffered for the tick
    is, name for name, label for label, value for value, what ``/metrics`` serves for it."""
    agent, sink = agent_with(mode)
    agent._prime()
    records = tick_with_cpu(agent)
    agent.latest = LatestRecords().update(records)
    [worker] = agent.workers
    taken = worker.buffer.batch(1_000_000)
    assert taken is not None
    buffered = list(taken.records)
    assert buffered and all(r.measurement == SERIES and r.ts == records[0].ts for r in buffered)
    pushed = {(s.labels, s.value) for r in buffered for s in sink._series(r)}
    scraped = {
        (
            tuple(
                sorted(
                    {
                        **sample.labels,
                        "__name__": sample.name,
                        "instance": "h",
                        "job": "system-info-collector",
                    }.items()
                )
            ),
            sample.value,
        )
        for family in HostMetricsCollector(agent, mode).collect()
        for sample in family.samples
        if family.name != "sic_host_sample_timestamp_seconds"
    }
    assert pushed == scraped
    names = {dict(labels)["__name__"] for labels, _ in pushed}
    if mode == "node":
        assert {"node_cpu_seconds_total", "node_memory_MemAvailable_bytes"} <= names
        assert all(n.startswith("node_") for n in names)
    else:
        assert {"sic_cpu_seconds_total", "sic_memory_available_bytes"} <= names
        assert all(n.startswith("sic_") for n in names)
    assert ("env", "prod") in next(iter(pushed))[0]


def test_an_ordinary_record_left_in_the_buffer_is_still_sent() -> None:
    """A tick whose mapping failed is buffered as records: on the way out they are mapped
    with no readings, so what records alone carry (the filesystem families) still goes."""
    s = sink()
    disk = Record(
        "disk",
        T0,
        "web-1",
        {"mountpoint": "/", "device": "/dev/vda1", "fstype": "ext4"},
        {"available_bytes": 10, "total_bytes": 40, "free_bytes": 12},
    )
    request, count = s.encode([with_leftovers_mapped([disk], SERIES, s._leftover_tick)])
    names = {la.value for ts in request.timeseries for la in ts.labels if la.name == "__name__"}
    assert "node_filesystem_avail_bytes" in names and count >= 3
