"""The remote_write sink: the series it buffers at tick time (those of a ``/metrics`` scrape)
and the WriteRequest a receiver decodes."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import cramjam
import pytest

from system_info_collector.agent import Agent, LatestRecords
from system_info_collector.config import (
    BufferSettings,
    HostMetricsMode,
    RemoteWriteSettings,
    Settings,
)
from system_info_collector.exposition import HostMetricsCollector, mapping_for
from system_info_collector.exposition.families import MetricFamilies
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.providers import build_providers
from system_info_collector.scheduler import Tick
from system_info_collector.sinks.prompb import write_request_class
from system_info_collector.sinks.protowire import varint
from system_info_collector.sinks.remote_write import RemoteWriteSink, by_tick, chunk_ticks
from system_info_collector.sinks.series import (
    SERIES,
    push_mode,
    series_labels,
    series_records,
    tick_views,
    with_leftovers_mapped,
)
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
    return RemoteWriteSink(RemoteWriteSettings(url="http://127.0.0.1:1/w"), metrics=Metrics())


def decode(body: bytes) -> Any:
    """A serialized ``WriteRequest``, parsed by the protobuf library."""
    return write_request_class().FromString(body)


def test_one_series_per_field_labels_sorted_samples_in_time_order() -> None:
    s = sink()
    body, count = s.encode(by_tick(reversed(records(3))))
    assert count == 12 and len(decode(body).timeseries) == 4
    decoded = decode(bytes(cramjam.snappy.decompress_raw(s._compress(body))))
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
    body, _ = sink.encode([buffered])  # what the sink sends, parsed by the protobuf library
    pushed = {
        (tuple((la.name, la.value) for la in ts.labels), sample.value)
        for ts in decode(body).timeseries
        for sample in ts.samples
    }
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
    body, count = s.encode([with_leftovers_mapped([disk], SERIES, s._leftover_tick)])
    names = {
        la.value for ts in decode(body).timeseries for la in ts.labels if la.name == "__name__"
    }
    assert "node_filesystem_avail_bytes" in names and count >= 3


def library_encoding(ticks: list[list[Record]]) -> bytes:
    """The ``WriteRequest`` of ``ticks`` built with the protobuf library (what the sink built
    before it wrote the bytes itself): series in order of first sample, samples in tick order."""
    series: dict[tuple[tuple[str, str], ...], list[tuple[float, int]]] = {}
    for tick in ticks:
        for record in tick:
            ms = (record.ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
            for name, value in record.fields.items():
                series.setdefault(series_labels(record, name), []).append((float(value), ms))
    request = write_request_class()()
    for labels, samples in series.items():
        ts = request.timeseries.add()
        for name, text in labels:
            ts.labels.add(name=name, value=text)
        for value, ms in samples:
            ts.samples.add(value=value, timestamp=ms)
    return bytes(request.SerializeToString())


def test_the_written_bytes_are_what_the_protobuf_library_serializes() -> None:
    rng = random.Random(7)
    values = [0.0, -0.0, 1.0, -2.5, 1e300, 5e-324, float("inf"), float("-inf"), 3, 0, 2**53]
    texts = ["", "a", "é✓", "x" * 200, "/dev/nvme0n1", "a b=c"]
    s = sink()
    for _ in range(40):
        ticks = []
        for t in range(rng.randint(1, 4)):
            tick = []
            for _ in range(rng.randint(1, 30)):
                tags = {k: rng.choice(texts) for k in rng.sample(["cpu", "mode", "job", "__x"], 2)}
                if rng.random() < 0.2:
                    tags["instance"] = rng.choice(texts)
                fields = {
                    rng.choice(["node_a_total", "node_b_bytes", "n"]): rng.choice(values)
                    for _ in range(rng.randint(1, 3))
                }
                ts = T0 + timedelta(milliseconds=rng.choice([0, 1, 999, 10**6]) + 1000 * t)
                tick.append(Record(SERIES, ts, rng.choice(["h", "web-1"]), tags, fields))
            ticks.append(tick)
        body, count = s.encode(ticks)
        assert body == library_encoding(ticks)
        assert count == sum(len(r.fields) for tick in ticks for r in tick)
    epoch = Record(SERIES, datetime(1970, 1, 1, tzinfo=UTC), "h", {}, {"n": 0.0})
    assert s.encode([[epoch]])[0] == library_encoding([[epoch]])  # every field at its default


def test_varints_at_every_width_match_the_protobuf_library() -> None:
    from google.protobuf.internal.encoder import _VarintBytes  # the library's own varint

    edges = [0, 1, 0x7F, 0x80, 0x3FFF, 0x4000, 2**21 - 1, 2**21, 2**35, 2**63 - 1]
    for n in [*edges, -1, -(2**63), 1_700_000_000_123]:
        assert varint(n) == _VarintBytes(n if n >= 0 else n + (1 << 64)), n


def reference_series_records(
    records: list[Record], providers: Any, mode: HostMetricsMode, tags: dict[str, str]
) -> list[Record]:
    """series_records as it was: the prometheus-client families /metrics builds, regrouped."""
    out = MetricFamilies(tags)
    for view in tick_views(records, providers):
        mapping_for(push_mode(mode), view.measurement)(view, out)
    grouped: dict[tuple[tuple[str, str], ...], dict[str, float]] = {}
    for metric in out.metrics():
        for sample in metric.samples:
            key = tuple(sorted(sample.labels.items()))
            grouped.setdefault(key, {})[sample.name] = sample.value
    ts, host = records[0].ts, records[0].host
    return [Record(SERIES, ts, host, dict(key), fields) for key, fields in grouped.items()]


@pytest.mark.parametrize("mode", ["node", "sic"])
def test_series_records_are_the_families_metrics_would_hold(mode: HostMetricsMode) -> None:
    """The push builds its series without prometheus-client's metric objects: the same records,
    in the same order, as regrouping the families /metrics builds -- with static tags, one of
    them named like a family's own label (it gives way) and one empty."""
    agent, _ = agent_with(mode)
    agent._prime()
    records = tick_with_cpu(agent)
    providers = agent.providers
    for tags in ({}, {"env": "prod"}, {"mode": "static", "device": "", "zone": "b"}):
        got = series_records(records, providers, mode, tags)
        assert got == reference_series_records(records, providers, mode, tags)
        assert len(got) > 20
