"""The remote_write sink's encoding: the WriteRequest a receiver decodes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import cramjam

from system_info_collector.config import RemoteWriteSettings
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.sinks.prompb import write_request_class
from system_info_collector.sinks.remote_write import RemoteWriteSink, by_tick, chunk_ticks

T0 = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)


def records(ticks: int, cpus: int = 2) -> list[Record]:
    return [
        Record(
            "cpu",
            T0 + timedelta(seconds=t),
            "web-1",
            {"cpu": f"cpu{c}", "env": "prod"},
            {"user_percent": t + c / 10, "idle_percent": 50.0},
        )
        for t in range(ticks)
        for c in range(cpus)
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
        if ("cpu", "cpu1") in {(la.name, la.value) for la in ts.labels}
        and any(la.value == "sic_cpu_user_percent" for la in ts.labels)
    )
    assert {(la.name, la.value) for la in first.labels} == {
        ("__name__", "sic_cpu_user_percent"),
        ("cpu", "cpu1"),
        ("env", "prod"),
        ("instance", "web-1"),
        ("job", "system-info-collector"),
    }
    assert [(x.timestamp, x.value) for x in first.samples] == [
        (int(T0.timestamp() * 1000) + 1000 * t, t + 0.1) for t in range(3)
    ]


def test_requests_are_bounded_and_never_split_a_tick() -> None:
    chunks = list(chunk_ticks(by_tick(records(5)), 10))  # 4 samples a tick
    assert [len(c) for c in chunks] == [2, 2, 1]
    assert [r for c in chunks for t in c for r in t] == records(5)
