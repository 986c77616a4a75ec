"""The one worker loop: a thread per sink that drives the sink over its buffer.

The agent hands each tick's batch to :meth:`SinkWorker.submit`, which puts it into the sink's
:class:`~system_info_collector.buffer.Buffer` (memory or write-ahead disk; the worker never
knows which) and never blocks. The thread takes the oldest records (up to ``batch_max_rows``,
once ``flush_interval`` passed or that many wait), writes them, and accepts or rejects the
batch. A transient failure rejects the batch (it stays first in line and the buffer makes it
durable) and retries with :class:`~system_info_collector.retry.Backoff`, degrading to slow
probing after ``SIC_RETRY_MAX`` attempts; a permanent failure drops the batch with an ERROR and
a counter. Retry, backoff, degrade, gauges and close/flush live here, for every sink and buffer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from system_info_collector.buffer import Batch, Buffer
from system_info_collector.collector import Provider
from system_info_collector.config import RetrySettings
from system_info_collector.errors import PermanentSinkError, TransientSinkError
from system_info_collector.heap import release_free_memory
from system_info_collector.logging import event
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.redact import redact_dsn
from system_info_collector.retry import Backoff
from system_info_collector.sinks import AtTick, Sink

TRIM_AFTER_RECORDS = 1000  # hand the heap back after a drained backlog at least this large
STALL_AFTER_SECONDS = 60.0  # records waiting, no write attempt finished for this long: stalled


class SinkWorker:
    def __init__(
        self,
        sink: Sink,
        buffer: Buffer,
        *,
        retry: RetrySettings,
        metrics: Metrics,
        batch_max_rows: int = 5000,
        flush_interval: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        providers: Sequence[Provider] = (),
    ) -> None:
        self.sink = sink
        # A sink that buffers something else than the records (the push sinks: the series of
        # the tick) maps each tick here, in the sampling thread, with the readings just taken.
        self._at_tick: AtTick | None = getattr(sink, "at_tick", None)
        self._providers = providers
        self.buffer = buffer
        self.name = sink.name
        self._backoff = Backoff(retry)
        self._metrics = metrics
        self._batch_max_rows = batch_max_rows
        self._flush_interval = flush_interval
        self._clock = clock
        self._cond = threading.Condition()
        self._closing = False
        self._deadline = float("inf")
        self._opened = False
        self._failing = False
        self._next_flush = 0.0
        # While the thread waits for a flush deadline it wakes by itself then: a tick's records
        # that neither fill a batch nor are due need no wake-up (each one costs the thread a
        # context switch and a GIL hand-over; with SIC_DB_FLUSH_INTERVAL=5s, four in five).
        self._wakes_by_itself = False
        self._peak = 0  # records held at most since the buffer was last empty
        self._progress = clock()  # when the worker last finished a step (or had nothing to do)
        self.last_success: float | None = None
        self.last_error: str | None = None
        # Before the buffer and the sink are opened: raises TransientSinkError while the sink's
        # directory cannot be locked (cli.py); the records wait in memory meanwhile.
        self.gate: Callable[[], None] | None = None
        self._buffer_open = False
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)

    # -- called from the sampling thread -------------------------------------------------
    def start(self) -> None:
        if self.gate is None:
            self.buffer.open()  # a spool left by the previous run is recovered before new data
            self._buffer_open = True
        self._update_gauges()
        self._thread.start()

    def submit(self, batch: Sequence[Record]) -> None:
        if self._at_tick is not None and batch:
            batch = self._tick_mapped(batch)
        if not batch:
            return
        self.buffer.add(batch)
        with self._cond:
            self._update_gauges()
            if not self._wakes_by_itself or len(self.buffer) >= self._batch_max_rows:
                self._cond.notify()

    def _tick_mapped(self, batch: Sequence[Record]) -> Sequence[Record]:
        assert self._at_tick is not None
        try:
            return self._at_tick(batch, self._providers)
        except Exception as exc:  # a mapping bug must neither stop sampling nor lose the tick
            event(
                "ERROR",
                "sink_tick_mapping_failed",
                "cannot map this tick for the sink; its records are buffered as they are",
                sink=self.name,
                error=f"{type(exc).__name__}: {exc}",
            )
            return batch

    @property
    def durable(self) -> bool:
        return self.buffer.durable

    @property
    def degraded(self) -> bool:
        return self._failing and self._backoff.degraded

    @property
    def failing(self) -> bool:
        return self._failing

    @property
    def pending_records(self) -> int:
        return len(self.buffer)

    @property
    def pending_batches(self) -> int:
        return self.buffer.batches

    @property
    def stalled(self) -> bool:
        """Records wait but no write attempt finished for a while: a write hangs, or the loop
        is stuck. Readiness shows it (a damaged spool used to stop a sink silently)."""
        if not len(self.buffer) or self._failing:
            return False  # failing is "retrying"/"degraded", not stalled
        stall_after = max(STALL_AFTER_SECONDS, 3 * self._flush_interval)
        return self._clock() - self._progress > stall_after and self._thread.is_alive()

    @property
    def backlog_limit(self) -> int:
        return self.buffer.limit_records

    @property
    def buffer_problem(self) -> str | None:
        return self.buffer.problem

    def close(self, timeout: float) -> bool:
        """Write what is pending for up to ``timeout`` seconds, then close the sink and the
        buffer. A durable buffer keeps what the sink did not take for the next start.

        Returns True if everything was written.
        """
        with self._cond:
            self._closing = True
            self._deadline = self._clock() + timeout
            self._cond.notify_all()
        self._thread.join(timeout + 1.0)
        alive = self._thread.is_alive()
        left = len(self.buffer)
        if not alive and self._buffer_open:
            self.buffer.close()  # logs what stays (spool_kept) or is lost (sink_unflushed)
        elif left:
            event(
                "ERROR",
                "sink_unflushed",
                "shutdown timeout: records were not written"
                if alive
                else "shutdown: the sink's directory never became usable; records held in "
                "memory were not written",
                sink=self.name,
                records=left,
            )
        return left == 0 and not alive

    # -- the worker thread -----------------------------------------------------------------
    def _update_gauges(self) -> None:
        metrics = self._metrics
        metrics.child(metrics.queue_depth, self.name).set(self.buffer.batches)
        metrics.child(metrics.backlog_records, self.name).set(len(self.buffer))

    def _sleep(self, delay: float) -> None:
        with self._cond:
            end = min(self._clock() + delay, self._deadline)
            while not self._past_deadline():
                remaining = end - self._clock()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
                if self._closing and self._clock() >= end:
                    break

    def _past_deadline(self) -> bool:
        return self._closing and self._clock() >= self._deadline

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            try:
                if self._opened:
                    self.sink.close()
            except Exception as exc:
                event(
                    "ERROR",
                    "sink_close_failed",
                    "error while closing sink",
                    sink=self.name,
                    error=redact_dsn(str(exc)),
                )

    def _wait_for_work(self) -> bool:
        """Until there is something to write (or the sink to open); False: stop."""
        with self._cond:
            while True:
                if self._past_deadline():
                    return False
                pending = len(self.buffer)
                if self._closing and not pending:
                    return False
                if not self._opened:
                    return True
                now = self._clock()
                if pending and (
                    self._closing or pending >= self._batch_max_rows or now >= self._next_flush
                ):
                    return True
                self._progress = now  # waiting by choice is not a stall
                self._wakes_by_itself = bool(pending)
                try:
                    self._cond.wait(None if not pending else self._next_flush - now)
                finally:
                    self._wakes_by_itself = False

    def _loop(self) -> None:
        while self._wait_for_work():
            if not self._step():
                return
            self._progress = self._clock()
            held = len(self.buffer)
            self._peak = max(self._peak, held)
            if not held and self._peak >= TRIM_AFTER_RECORDS:
                # A backlog drained (its batches are released by now): glibc keeps the freed
                # heap unless asked, so the RSS of the outage would stay for good.
                self._peak = 0
                release_free_memory()

    def _step(self) -> bool:
        """One attempt: open the sink, or write the oldest batch and accept or reject it.
        False: stop now (shutting down, and the rest is safe in a durable buffer)."""
        if not self._opened:
            try:
                if not self._buffer_open:
                    assert self.gate is not None
                    self.gate()
                    self.buffer.open()
                    self._buffer_open = True
                self.sink.open()
                self._opened = True
            except Exception as exc:  # configuration or transient: keep the data, probe
                if self._closing and self.buffer.volatile == 0:
                    return False
                self._on_transient(exc)
            return True
        # While failing, probe with the oldest batch alone: a backlog is decoded in full only
        # once the sink writes again (a retry must not cost a 5000-record batch of memory).
        batch = self.buffer.batch(1 if self._failing else self._batch_max_rows)
        if batch is None:  # nothing intact was pending (damage set aside)
            with self._cond:
                self._update_gauges()
            return True
        self._next_flush = self._clock() + self._flush_interval
        try:
            self.sink.write(batch.records)
        except TransientSinkError as exc:
            self.buffer.reject(batch)
            if self._closing and self.buffer.volatile == 0:
                return False  # the rest is safe in the buffer for the next start
            self._on_transient(exc)
        except PermanentSinkError as exc:
            self.buffer.accept(batch)
            self._drop(batch, "permanent", exc)
        except Exception as exc:  # a bug must not kill the worker
            self.buffer.accept(batch)
            self._drop(batch, "unexpected", exc)
        else:
            self.buffer.accept(batch)
            self._on_success(batch)
        return True

    def _drop(self, batch: Batch, cls: str, exc: Exception) -> None:
        self._metrics.write_errors.labels(self.name, cls).inc()
        with self._cond:
            self._update_gauges()
        count = len(batch.records)
        self._metrics.sink_dropped.labels(self.name).inc(count)
        event(
            "ERROR",
            "sink_batch_rejected",
            "sink rejected a batch; dropped it",
            sink=self.name,
            records=count,
            error_class=cls,
            error=redact_dsn(f"{type(exc).__name__}: {exc}"),
        )

    def _on_transient(self, exc: Exception) -> None:
        self._metrics.write_errors.labels(self.name, "transient").inc()
        self._metrics.retries.labels(self.name).inc()
        was_degraded = self._backoff.degraded
        delay = self._backoff.next_delay()
        self.last_error = redact_dsn(str(exc))
        pending = len(self.buffer)  # spool and memory alike
        if not self._failing:
            self._failing = True
            event(
                "WARNING",
                "sink_write_failed",
                "sink failed; retrying with backoff",
                sink=self.name,
                error=self.last_error,
                pending_records=pending,
            )
        if self._backoff.degraded and not was_degraded:
            self._metrics.sink_degraded.labels(self.name).set(1)
            event(
                "ERROR",
                "sink_degraded",
                "sink still failing after retries; probing slowly",
                sink=self.name,
                error=self.last_error,
                probe_interval_seconds=delay,
                pending_records=pending,
            )
        self._sleep(delay)

    def _on_success(self, batch: Batch) -> None:
        with self._cond:
            self._update_gauges()
        left = len(self.buffer)
        self._metrics.child(self._metrics.rows_written, self.name).inc(len(batch.records))
        now = time.time()
        self.last_success = now
        self._metrics.child(self._metrics.last_write, self.name).set(now)
        if self._failing:
            self._failing = False
            self._metrics.sink_degraded.labels(self.name).set(0)
            event(
                "INFO",
                "sink_recovered",
                "sink writes again",
                sink=self.name,
                attempts=self._backoff.attempt,
                pending_records=left,
            )
        self._backoff.reset()
