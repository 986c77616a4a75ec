"""Buffers on real files and real memory: the byte bound, the compact form, durability chosen
by configuration for any sink, and the per-sink settings."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from system_info_collector.buffer import MemoryBuffer, build_buffer
from system_info_collector.config import BufferSettings, RetrySettings, load_settings
from system_info_collector.errors import ConfigError, TransientSinkError
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.sinks import CheckResult
from system_info_collector.worker import SinkWorker
from tests.helpers import poll

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def tick(i: int) -> list[Record]:
    """What one tick of the cpu and memory collectors looks like on an 8-CPU host."""
    ts = T0 + timedelta(seconds=i)
    cpus = [
        Record(
            "cpu",
            ts,
            "host-1",
            {"cpu": f"cpu{k}"},
            {
                "usage_percent": 12.5 + k + i % 7,
                "user_percent": 3.25,
                "system_percent": 1.5,
                "iowait_percent": 0.0,
                "idle_percent": 80.0 - k,
            },
        )
        for k in range(8)
    ]
    memory = Record(
        "memory",
        ts,
        "host-1",
        {},
        {"total_bytes": 16 << 30, "available_bytes": (8 << 30) - i, "used_percent": 43.7},
    )
    return [*cpus, memory]


def test_a_memory_backlog_is_bounded_in_bytes_and_keeps_the_newest(
    events: list[dict[str, Any]],
) -> None:
    metrics = Metrics()
    buffer = MemoryBuffer("csv", max_bytes=200_000, metrics=metrics)
    for i in range(3000):
        buffer.add(tick(i))
    assert buffer.bytes <= 200_000
    kept = len(buffer)
    assert kept >= 200_000 // 60  # compact: well under 60 bytes a record (~1 KB as objects)
    dropped = metrics.registry.get_sample_value("sic_sink_records_dropped_total", {"sink": "csv"})
    assert dropped == 3000 * 9 - kept
    overflow = [e for e in events if e.get("event") == "sink_backlog_overflow"]
    assert overflow and overflow[0]["level"] == "ERROR" and overflow[0]["limit_bytes"] == 200_000
    got: list[Record] = []
    while (batch := buffer.batch(500)) is not None:
        assert len(batch.records) <= 500
        got.extend(batch.records)
        buffer.accept(batch)
    newest = [r for i in range(3000 - kept // 9, 3000) for r in tick(i)]
    assert got == newest  # exactly the records added, oldest first
    assert len(buffer) == 0 and buffer.bytes == 0


def test_only_a_waiting_batch_is_encoded_and_a_batch_in_flight_survives_overflow() -> None:
    buffer = MemoryBuffer("x", max_bytes=1 << 20, max_records=18, metrics=Metrics())
    buffer.add(tick(0))
    head = buffer.batch(100)
    assert head is not None and head.records == tick(0)
    for i in range(1, 4):  # the sink is slow: tick 0 is in flight, these wait (compressed)
        buffer.add(tick(i))
    assert len(buffer) == 18  # the record bound dropped ticks 0 and 1
    buffer.accept(head)  # written after it was dropped: nothing else goes with it
    rest = buffer.batch(100)
    assert rest is not None and rest.records == [*tick(2), *tick(3)]


class RestartingSink:
    """A sink that fails until told otherwise; a new one stands for the next process."""

    name = "remote_write"  # any sink, not only PostgreSQL

    def __init__(self) -> None:
        self.rows: list[Record] = []
        self.down = threading.Event()

    def open(self) -> None:
        pass

    def write(self, batch: Sequence[Record]) -> None:
        if self.down.is_set():
            raise TransientSinkError("no route to host")
        self.rows.extend(batch)

    def close(self) -> None:
        pass

    def check(self) -> list[CheckResult]:
        return []


def test_any_sink_becomes_durable_by_configuration_alone(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    config = BufferSettings(kind="disk", spool_dir=str(tmp_path / "spool"), flush_interval=0.01)
    retry = RetrySettings(3, 0.001, 0.01)
    sink, metrics = RestartingSink(), Metrics()
    sink.down.set()
    worker = SinkWorker(
        sink,
        build_buffer(sink.name, config, metrics),
        retry=retry,
        metrics=metrics,
        batch_max_rows=100,
        flush_interval=0.01,
    )
    worker.start()
    for i in range(20):
        worker.submit(tick(i))
    assert worker.durable and worker.buffer.volatile == 0
    assert not worker.close(0.5)  # the destination is down: nothing written, nothing lost
    assert next(e for e in events if e.get("event") == "spool_kept")["records"] == 180

    again, metrics = RestartingSink(), Metrics()  # the next start, destination reachable
    worker = SinkWorker(
        again,
        build_buffer(again.name, config, metrics),
        retry=retry,
        metrics=metrics,
        batch_max_rows=100,
        flush_interval=0.01,
    )
    worker.start()
    worker.submit(tick(20))
    poll(lambda: len(again.rows) == 189, timeout=5, what="the spooled records written")
    assert again.rows == [r for i in range(21) for r in tick(i)]
    assert worker.close(2.0)


def test_each_sink_names_its_buffer_with_the_documented_defaults() -> None:
    s = load_settings({"SIC_CSV_DIR": "/data"})
    assert s.buffer("postgres").kind == "disk" and s.buffer("postgres").spool_dir == "/data/.spool"
    assert s.buffer("csv").kind == "memory" and s.buffer("csv").memory_max_records == 86400
    assert s.buffer("stdout").kind == "memory"
    assert s.buffer("csv").memory_max_size == 8_000_000
    s = load_settings(
        {
            "SIC_CSV_DIR": "/data",
            "SIC_CSV_BUFFER": "disk",
            "SIC_POSTGRES_BUFFER": "memory",
            "SIC_BUFFER_MEMORY_MAX_SIZE": "2MiB",
        }
    )
    assert s.buffer("csv").kind == "disk" and s.buffer("csv").spool_dir == "/data/.spool-csv"
    assert s.buffer("postgres").kind == "memory"
    assert s.buffer("stdout").memory_max_size == 2 << 20


def test_bad_buffer_settings_are_refused_together() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({"SIC_CSV_BUFFER": "tape", "SIC_BUFFER_MEMORY_MAX_SIZE": "1KB"})
    text = str(err.value)
    assert "SIC_CSV_BUFFER='tape'" in text and "memory, disk" in text
    assert "SIC_BUFFER_MEMORY_MAX_SIZE='1KB'" in text and "64KiB" in text


def test_records_held_in_memory_while_the_disk_failed_go_to_the_spool_at_shutdown(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.write_text("")  # a file where the directory belongs: the spool cannot open
    config = BufferSettings(kind="disk", spool_dir=str(spool_dir))
    buffer = build_buffer("remote_write", config, Metrics())
    buffer.open()
    buffer.add(tick(0))
    assert buffer.volatile == 9 and buffer.problem
    spool_dir.unlink()  # the operator fixes it; the process is asked to stop before a write
    buffer.close()
    assert not [e for e in events if e.get("event") == "sink_unflushed"]
    again = build_buffer("remote_write", config, Metrics())
    again.open()
    batch = again.batch(100)
    assert batch is not None and list(batch.records) == tick(0)


def test_each_spool_has_its_own_sic_spool_series_labelled_by_sink(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    metrics = Metrics()
    buffers = {
        name: build_buffer(
            name, BufferSettings(kind="disk", spool_dir=str(tmp_path / name)), metrics
        )
        for name in ("postgres", "remote_write")
    }
    for buffer in buffers.values():
        buffer.open()
    for i in range(3):
        buffers["remote_write"].add(tick(i))
    buffers["postgres"].add(tick(9))

    def value(metric: str, sink: str) -> float | None:
        return metrics.registry.get_sample_value(metric, {"sink": sink})

    assert value("sic_spool_batches", "remote_write") == 3
    assert value("sic_spool_batches", "postgres") == 1
    assert 0 < value("sic_spool_bytes", "postgres") < value("sic_spool_bytes", "remote_write")
    text = generate_latest(metrics.registry).decode()
    assert "sic_spool_bytes{" in text and "\nsic_spool_bytes " not in text  # no unlabelled sum
    batch = buffers["remote_write"].batch(100)
    assert batch is not None
    buffers["remote_write"].accept(batch)  # written: its spool empties, the other one waits
    assert value("sic_spool_batches", "remote_write") == 0
    assert value("sic_spool_batches", "postgres") == 1
    for buffer in buffers.values():
        buffer.close()
    metrics.prepare(["csv"], [])  # a sink without a spool: its series exist, at 0
    assert value("sic_spool_bytes", "csv") == 0 and value("sic_spool_batches", "csv") == 0
