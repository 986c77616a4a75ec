"""One thread per sink: a bounded backlog in front of the sink, retries with backoff.

The agent hands each tick's batch to :meth:`SinkWorker.submit`, which never blocks. The worker
writes batches oldest-first; a transient failure keeps the batch (and everything behind it) in
the backlog and retries with :class:`~system_info_collector.retry.Backoff`; only when the
backlog exceeds its limit are the oldest records dropped, with an ERROR log and a counter.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from system_info_collector.config import RetrySettings
from system_info_collector.errors import PermanentSinkError, TransientSinkError
from system_info_collector.logging import event
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.redact import redact_dsn
from system_info_collector.retry import Backoff
from system_info_collector.sinks import Sink


class SinkWorker:
    def __init__(
        self,
        sink: Sink,
        *,
        retry: RetrySettings,
        backlog_limit: int,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.name = sink.name
        self._backoff = Backoff(retry)
        self._limit = backlog_limit
        self._metrics = metrics
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: deque[Sequence[Record]] = deque()
        self._pending_records = 0
        self._closing = False
        self._deadline = float("inf")
        self._opened = False
        self._failing = False
        self.last_success: float | None = None
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)

    # -- called from the sampling thread -------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, batch: Sequence[Record]) -> None:
        if not batch:
            return
        with self._cond:
            self._pending.append(batch)
            self._pending_records += len(batch)
            dropped = 0
            while self._pending_records > self._limit and len(self._pending) > 1:
                oldest = self._pending.popleft()
                self._pending_records -= len(oldest)
                dropped += len(oldest)
            self._update_gauges()
            self._cond.notify()
        if dropped:
            self._metrics.sink_dropped.labels(self.name).inc(dropped)
            event(
                "ERROR",
                "sink_backlog_overflow",
                "backlog full: dropped the oldest records",
                sink=self.name,
                dropped_records=dropped,
                limit_records=self._limit,
            )

    @property
    def degraded(self) -> bool:
        return self._failing and self._backoff.degraded

    @property
    def failing(self) -> bool:
        return self._failing

    @property
    def pending_records(self) -> int:
        return self._pending_records

    @property
    def pending_batches(self) -> int:
        return len(self._pending)

    def close(self, timeout: float) -> bool:
        """Flush what is pending for up to ``timeout`` seconds, then close the sink.

        Returns True if everything was written.
        """
        with self._cond:
            self._closing = True
            self._deadline = self._clock() + timeout
            self._cond.notify_all()
        self._thread.join(timeout + 1.0)
        left = self._pending_records
        if left:
            event(
                "ERROR",
                "sink_unflushed",
                "shutdown timeout: records were not written",
                sink=self.name,
                records=left,
            )
        return left == 0 and not self._thread.is_alive()

    # -- the worker thread -----------------------------------------------------------------
    def _update_gauges(self) -> None:
        self._metrics.queue_depth.labels(self.name).set(len(self._pending))
        self._metrics.backlog_records.labels(self.name).set(self._pending_records)

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

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing and self._opened:
                    self._cond.wait()
                if self._past_deadline() or (self._closing and not self._pending):
                    return
                batch = self._pending[0] if self._pending else None
            try:
                if not self._opened:
                    self.sink.open()
                    self._opened = True
                    continue
                assert batch is not None
                self.sink.write(batch)
            except TransientSinkError as exc:
                self._on_transient(exc)
                continue
            except PermanentSinkError as exc:
                if not self._opened:
                    self._on_transient(exc)  # configuration: keep probing, keep the data
                    continue
                self._drop(batch, "permanent", exc)
            except Exception as exc:
                if not self._opened:
                    self._on_transient(exc)
                    continue
                self._drop(batch, "unexpected", exc)
            else:
                self._on_success(batch)

    def _drop(self, batch: Sequence[Record] | None, cls: str, exc: Exception) -> None:
        self._metrics.write_errors.labels(self.name, cls).inc()
        with self._cond:
            if batch is not None and self._pending and self._pending[0] is batch:
                self._pending.popleft()
                self._pending_records -= len(batch)
                self._update_gauges()
        count = len(batch) if batch else 0
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
        if not self._failing:
            self._failing = True
            event(
                "WARNING",
                "sink_write_failed",
                "sink failed; retrying with backoff",
                sink=self.name,
                error=self.last_error,
                pending_records=self._pending_records,
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
                pending_records=self._pending_records,
            )
        self._sleep(delay)

    def _on_success(self, batch: Sequence[Record] | None) -> None:
        with self._cond:
            if batch is not None and self._pending and self._pending[0] is batch:
                self._pending.popleft()
                self._pending_records -= len(batch)
            self._update_gauges()
            left = self._pending_records
        if batch is not None:
            self._metrics.rows_written.labels(self.name).inc(len(batch))
        now = time.time()
        self.last_success = now
        self._metrics.last_write.labels(self.name).set(now)
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
