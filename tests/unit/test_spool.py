"""The write-ahead spool on real files: order, trimming, restart, torn tails, the size limit."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from system_info_collector.config import RetrySettings
from system_info_collector.errors import TransientSinkError
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.sinks import CheckResult
from system_info_collector.spool import Spool, SpoolWorker, decode_batch, encode_batch
from tests.helpers import poll

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def batch(i: int, n: int = 3) -> list[Record]:
    return [
        Record(
            "cpu", T0 + timedelta(seconds=i), "h", {"cpu": f"cpu{k}"}, {"usage_percent": i + k / 4}
        )
        for k in range(n)
    ]


def ticks(entries: Sequence[Any]) -> list[int]:
    return [int((e.records[0].ts - T0).total_seconds()) for e in entries]


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    handler = logger.add(lambda m: seen.append({**m.record["extra"],
                                                "level": m.record["level"].name}),
                         level="DEBUG")  # fmt: skip
    yield seen
    logger.remove(handler)


def open_spool(path: Path, max_size: int = 1 << 20, **kw: Any) -> tuple[Spool, Metrics]:
    metrics = Metrics()
    spool = Spool(str(path), max_size=max_size, metrics=metrics, **kw)
    spool.open()
    return spool, metrics


def test_encoding_round_trips_records_exactly() -> None:
    memory = Record("memory", T0 + timedelta(microseconds=123), "h", {},
                    {"total_bytes": 2**62, "used_percent": 0.1})  # fmt: skip
    records = [*batch(7), memory]
    assert decode_batch(encode_batch(records)) == records


def test_batches_come_back_oldest_first_and_commit_trims(tmp_path: Path) -> None:
    spool, metrics = open_spool(tmp_path, segment_size=4096)
    for i in range(100):
        spool.append(batch(i))
    assert spool.pending_batches == 100 and spool.pending_rows == 300
    assert len(list(tmp_path.glob("*.seg"))) > 3  # several segments
    got: list[int] = []
    while spool.pending_batches:
        entries = spool.peek(max_rows=30)
        assert sum(e.rows for e in entries) <= 30
        got += ticks(entries)
        spool.commit(entries)
    assert got == list(range(100))
    assert len(list(tmp_path.glob("*.seg"))) == 1  # only the active segment is left
    assert metrics.registry.get_sample_value("sic_spool_bytes") == 0


def test_restart_replays_only_what_was_not_committed(tmp_path: Path) -> None:
    spool, _ = open_spool(tmp_path, segment_size=4096)
    for i in range(40):
        spool.append(batch(i))
    spool.commit(spool.peek(max_rows=45))  # the first 15 batches
    del spool  # no close(): as after kill -9
    again, _ = open_spool(tmp_path)
    assert again.pending_batches == 25
    assert ticks(again.peek(max_rows=10_000)) == list(range(15, 40))
    again.append(batch(40))
    assert ticks(again.peek(max_rows=10_000))[-1] == 40


@pytest.mark.parametrize("cut", ["every byte"])
def test_a_tail_torn_at_any_byte_keeps_intact_records_and_never_stops_start(
    tmp_path: Path, events: list[dict[str, Any]], cut: str
) -> None:
    src = tmp_path / "src"
    spool, _ = open_spool(src)
    for i in range(3):
        spool.append(batch(i))
    spool.close()
    [segment] = [p for p in src.glob("*.seg") if p.stat().st_size]
    data = segment.read_bytes()
    entry = len(data) // 3
    for size in range(2 * entry, len(data) + 1):  # the third record cut at every byte
        work = tmp_path / f"cut{size}"
        work.mkdir()
        (work / segment.name).write_bytes(data[:size])
        events.clear()
        restored, _ = open_spool(work)
        expected = list(range(3)) if size == len(data) else [0, 1]
        assert ticks(restored.peek(max_rows=100)) == expected
        torn = [e for e in events if e.get("event") == "spool_torn_tail"]
        if size in (2 * entry, len(data)):
            assert not torn
        else:
            assert torn and torn[0]["level"] == "ERROR"
            assert torn[0]["damaged_bytes"] == size - 2 * entry
            [aside] = list(work.glob("*.torn-*"))
            assert aside.read_bytes() == data[2 * entry : size]
        restored.append(batch(9))  # and it keeps working
        assert ticks(restored.peek(max_rows=100))[-1] == 9


def test_garbage_in_a_segment_is_set_aside_and_later_segments_survive(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    spool, _ = open_spool(tmp_path, segment_size=4096)
    for i in range(60):
        spool.append(batch(i))
    spool.close()
    first = sorted(tmp_path.glob("*.seg"))[0]
    raw = bytearray(first.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # a flipped bit in the middle: CRC mismatch
    first.write_bytes(bytes(raw))
    again, _ = open_spool(tmp_path)
    got = ticks(again.peek(max_rows=10_000))
    assert got[0] == 0 and got[-1] == 59 and len(got) < 60
    assert got == sorted(got)
    assert [e for e in events if e.get("event") == "spool_torn_tail"]


def test_over_the_size_limit_the_oldest_are_dropped_with_an_error_and_a_count(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    spool, metrics = open_spool(tmp_path, max_size=20_000, segment_size=4096)
    for i in range(200):
        spool.append(batch(i))
    on_disk = sum(p.stat().st_size for p in tmp_path.glob("*.seg"))
    assert on_disk <= 20_000
    got = ticks(spool.peek(max_rows=10_000))
    assert got[-1] == 199 and got == list(range(got[0], 200))  # the newest, contiguous
    dropped = metrics.registry.get_sample_value("sic_spool_dropped_records_total")
    assert dropped == 3 * got[0]
    assert [e for e in events if e.get("event") == "spool_overflow" and e["level"] == "ERROR"]


class FlakySink:
    name = "flaky"
    spool_dir = ""

    def __init__(self) -> None:
        self.rows: list[Record] = []
        self.down = threading.Event()

    def open(self) -> None:
        pass

    def write(self, records: Sequence[Record]) -> None:
        if self.down.is_set():
            raise TransientSinkError("server down")
        self.rows.extend(records)

    def close(self) -> None:
        pass

    def check(self) -> list[CheckResult]:
        return []


def test_worker_keeps_the_outage_on_disk_not_in_memory_and_drains_in_order(
    tmp_path: Path,
) -> None:
    sink = FlakySink()
    metrics = Metrics()
    spool = Spool(str(tmp_path), max_size=1 << 20, metrics=metrics)
    worker = SpoolWorker(sink, spool=spool, retry=RetrySettings(3, 0.001, 0.01), metrics=metrics,
                         batch_max_rows=50, flush_interval=0.01)  # fmt: skip
    worker.start()
    sink.down.set()
    for i in range(30):
        worker.submit(batch(i))
    assert worker.pending_records == 90
    assert worker._pending_records == 0  # nothing in memory: it is all in the spool
    poll(lambda: worker.degraded, timeout=5, what="degraded")
    sink.down.clear()
    poll(lambda: worker.pending_records == 0, timeout=5, what="drained")
    assert [int((r.ts - T0).total_seconds()) for r in sink.rows[::3]] == list(range(30))
    assert worker.close(2.0)


def test_worker_falls_back_to_memory_when_the_spool_cannot_be_written(tmp_path: Path) -> None:
    sink = FlakySink()
    metrics = Metrics()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")  # the spool directory cannot be created here
    spool = Spool(str(blocker / "spool"), max_size=1 << 20, metrics=metrics)
    worker = SpoolWorker(sink, spool=spool, retry=RetrySettings(3, 0.001, 0.01), metrics=metrics,
                         batch_max_rows=50, flush_interval=0.01)  # fmt: skip
    worker.start()  # never prevents start
    for i in range(5):
        worker.submit(batch(i))
    poll(lambda: len(sink.rows) == 15, timeout=5, what="written from memory")
    assert worker.close(2.0)
    assert os.path.isfile(blocker)
