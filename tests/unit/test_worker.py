"""SinkWorker policy: order, retries with backoff, overflow, degraded state, flush on close.

The sink here is a small in-memory sink whose failures the test scripts; the real sinks'
failures (full disk, stopped server) are exercised in tests/integration.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from system_info_collector.buffer import MemoryBuffer
from system_info_collector.config import RetrySettings
from system_info_collector.errors import PermanentSinkError, TransientSinkError
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.sinks import CheckResult
from system_info_collector.worker import SinkWorker
from tests.helpers import poll

FAST = RetrySettings(max_attempts=3, initial=0.001, max_wait=0.01)


class ScriptedSink:
    name = "scripted"

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.fail_with: Exception | None = None
        self.attempts = 0
        self.closed = threading.Event()

    def open(self) -> None:
        pass

    def write(self, batch: Sequence[Record]) -> None:
        self.attempts += 1
        if self.fail_with is not None:
            raise self.fail_with
        self.rows.extend(int(r.fields["n"]) for r in batch)

    def close(self) -> None:
        self.closed.set()

    def check(self) -> list[CheckResult]:
        return []


def batch(*ns: int) -> list[Record]:
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    return [Record("x", ts, "h", {}, {"n": n}) for n in ns]


def memory_worker(sink: ScriptedSink, metrics: Metrics, limit: int) -> SinkWorker:
    buffer = MemoryBuffer(sink.name, max_bytes=1 << 20, max_records=limit, metrics=metrics)
    return SinkWorker(sink, buffer, retry=FAST, metrics=metrics)


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_batches_are_written_in_order_after_an_outage() -> None:
    sink, metrics = ScriptedSink(), Metrics()
    worker = memory_worker(sink, metrics, 1000)
    worker.start()
    sink.fail_with = TransientSinkError("disk full")
    worker.submit(batch(1, 2))
    poll(lambda: worker.degraded, what="degraded after max attempts")
    worker.submit(batch(3))
    worker.submit(batch(4, 5))
    assert sink.rows == []
    sink.fail_with = None
    poll(lambda: sink.rows == [1, 2, 3, 4, 5], what="backlog written in order")
    assert not worker.failing and worker.pending_records == 0
    assert value(metrics, "sic_sink_retries_total", sink="scripted") >= 3
    assert worker.close(1.0)
    assert sink.closed.is_set()


def test_overflow_drops_the_oldest_and_counts() -> None:
    sink, metrics = ScriptedSink(), Metrics()
    sink.fail_with = TransientSinkError("down")
    worker = memory_worker(sink, metrics, 4)
    worker.start()
    for n in range(1, 7):
        worker.submit(batch(n))
    assert worker.pending_records == 4
    assert value(metrics, "sic_sink_records_dropped_total", sink="scripted") == 2
    # A batch taken before the drops may still be in flight; two more attempts later every
    # batch the worker holds was taken after them (an attempt takes its batch, then writes).
    seen = sink.attempts
    poll(lambda: sink.attempts >= seen + 2, what="attempts after the overflow")
    sink.fail_with = None
    poll(lambda: sink.rows == [3, 4, 5, 6], what="newest records written")
    worker.close(1.0)


def test_a_permanently_rejected_batch_is_dropped_and_the_rest_flows() -> None:
    sink, metrics = ScriptedSink(), Metrics()
    worker = memory_worker(sink, metrics, 100)
    sink.fail_with = PermanentSinkError("bad row")
    worker.start()
    worker.submit(batch(1))
    poll(
        lambda: (
            value(metrics, "sic_sink_write_errors_total", sink="scripted", **{"class": "permanent"})
            == 1
        ),
        what="permanent error counted",
    )
    sink.fail_with = None
    worker.submit(batch(2))
    poll(lambda: sink.rows == [2], what="next batch written")
    worker.close(1.0)


def test_close_gives_up_after_the_timeout_and_reports_unflushed() -> None:
    sink = ScriptedSink()
    sink.fail_with = TransientSinkError("down")
    worker = memory_worker(sink, Metrics(), 100)
    worker.start()
    worker.submit(batch(1))
    assert worker.close(0.2) is False
    assert sink.closed.is_set()


def test_a_write_that_hangs_shows_as_stalled_until_it_returns() -> None:
    now = [0.0]
    release = threading.Event()

    class HangingSink(ScriptedSink):
        def write(self, batch: Sequence[Record]) -> None:
            self.attempts += 1
            release.wait(10)
            self.rows.extend(int(r.fields["n"]) for r in batch)

    sink, metrics = HangingSink(), Metrics()
    buffer = MemoryBuffer(sink.name, max_bytes=1 << 20, metrics=metrics)
    worker = SinkWorker(sink, buffer, retry=FAST, metrics=metrics, clock=lambda: now[0])
    worker.start()
    worker.submit(batch(1))
    poll(lambda: sink.attempts == 1, what="the write to start")
    assert not worker.stalled
    now[0] += 61.0  # a minute without a finished attempt while records wait
    assert worker.stalled
    release.set()
    poll(lambda: sink.rows == [1], what="the write to return")
    poll(lambda: not worker.stalled, what="progress again")
    assert worker.close(1.0)


def test_failure_logs_report_what_the_buffer_really_holds(events: list[dict[str, Any]]) -> None:
    sink, metrics = ScriptedSink(), Metrics()
    sink.fail_with = TransientSinkError("down")
    worker = memory_worker(sink, metrics, 1000)
    for n in range(40):
        worker.buffer.add(batch(n))  # held before the worker even starts (a recovered spool)
    worker.start()
    failed = poll(
        lambda: [e for e in events if e.get("event") == "sink_write_failed"],
        what="the first failure",
    )
    assert failed[0]["pending_records"] == 40
    degraded = poll(
        lambda: [e for e in events if e.get("event") == "sink_degraded"], what="degraded"
    )
    assert degraded[0]["pending_records"] == 40
    sink.fail_with = None
    poll(lambda: len(sink.rows) == 40, what="written")
    assert worker.close(1.0)


class MappingSink(ScriptedSink):
    """A sink that buffers its own form of each tick (as the push sinks do)."""

    def __init__(self, broken: bool = False) -> None:
        super().__init__()
        self.broken = broken
        self.seen: list[Sequence[Any]] = []

    def at_tick(self, records: Sequence[Record], providers: Sequence[Any]) -> list[Record]:
        self.seen.append(providers)
        if self.broken:
            raise KeyError("a bug in the mapping")
        return [Record("@mine", r.ts, r.host, {}, {"n": int(r.fields["n"]) * 10}) for r in records]


def test_a_sink_with_at_tick_buffers_what_it_maps_with_the_providers() -> None:
    sink, metrics = MappingSink(), Metrics()
    buffer = MemoryBuffer(sink.name, max_bytes=1 << 20, max_records=100, metrics=metrics)
    providers = [object()]
    worker = SinkWorker(sink, buffer, retry=FAST, metrics=metrics, providers=providers)
    worker.start()
    worker.submit(batch(1, 2))
    poll(lambda: sink.rows == [10, 20], what="the mapped records written")
    assert sink.seen == [providers]
    assert worker.close(2.0)


def test_a_failing_tick_mapping_buffers_the_records_as_they_are(
    events: list[dict[str, Any]],
) -> None:
    sink, metrics = MappingSink(broken=True), Metrics()
    worker = memory_worker(sink, metrics, 100)
    worker.start()
    worker.submit(batch(3))  # must not raise into the sampling thread
    poll(lambda: sink.rows == [3], what="the records written as they are")
    assert worker.close(2.0)
    [failed] = [e for e in events if e.get("event") == "sink_tick_mapping_failed"]
    assert failed["level"] == "ERROR" and "KeyError" in failed["error"]


def _voluntary_switches(native_id: int) -> int:
    with open(f"/proc/self/task/{native_id}/status", encoding="ascii") as f:
        line = next(x for x in f if x.startswith("voluntary_ctxt_switches:"))
    return int(line.split()[1])


def test_a_worker_waiting_for_its_flush_deadline_sleeps_through_ticks() -> None:
    """With a flush interval (SIC_DB_FLUSH_INTERVAL) the records of a tick that neither fill a
    batch nor are due do not wake the sink's thread (each wake-up is a context switch and a GIL
    hand-over); the deadline still writes them, and a full batch is written at once."""
    sink, metrics = ScriptedSink(), Metrics()
    buffer = MemoryBuffer(sink.name, max_bytes=1 << 20, max_records=1000, metrics=metrics)
    worker = SinkWorker(
        sink, buffer, retry=FAST, metrics=metrics, batch_max_rows=50, flush_interval=2.0
    )
    worker.start()
    worker.submit(batch(0))
    poll(lambda: sink.rows == [0], what="the first batch written at once")
    worker.submit(batch(1))  # wakes the idle thread, which then waits for the deadline
    poll(lambda: worker._wakes_by_itself, what="the worker waiting for its flush deadline")
    native_id = worker._thread.native_id
    assert native_id is not None
    before = _voluntary_switches(native_id)
    for n in range(2, 21):  # 19 more ticks inside the 2 s flush interval
        worker.submit(batch(n))
    switches = _voluntary_switches(native_id) - before
    assert sink.rows == [0]
    assert switches <= 1, f"the waiting worker woke {switches} times for 19 ticks"
    worker.submit(batch(*range(21, 50)))  # 49 waiting, then 50: a full batch
    assert sink.rows == [0]
    worker.submit(batch(50))
    poll(lambda: sink.rows == list(range(51)), what="the full batch written before the deadline")
    worker.submit(batch(51))
    poll(lambda: sink.rows[-1:] == [51], timeout=5.0, what="the deadline writes what waits")
    assert worker.close(2.0)
