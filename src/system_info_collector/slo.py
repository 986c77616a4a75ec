"""Delivery SLIs of the push sinks: latency (sample time → acknowledged) and completeness.

* ``sic_sink_delivery_latency_seconds{sink}`` (histogram): for every record a destination
  acknowledged, the time from the record's tick time to the acknowledgement;
* ``sic_sink_completeness_ratio{sink}`` (gauge): of the records sampled in the window
  ``[now - WINDOW, now - GRACE)`` (:data:`WINDOW` 15 minutes, :data:`GRACE` 1 minute: younger
  records are not judged yet), the share the sink has had acknowledged so far, capped at 1 (a
  replay acknowledges some records twice). 1 when nothing was sampled in the window.

Both are measured per record, from the data: ``produced`` is called by the agent with each
tick's accepted records, ``acknowledged`` by a sink when its destination answered success. A
sink that buffers something else than the records (the push sinks buffer each tick's series,
``sinks/series.py``) reports its own ``produced(ts, count, sink=…)`` in those units, and is
judged against them.
Counts are kept per minute of sample time for the window only, so memory stays constant.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from system_info_collector.model import Record

WINDOW = 15 * 60.0
GRACE = 60.0
BUCKET = 60.0
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class DeliveryLedger:
    """Records produced and acknowledged per minute of sample time (module docstring)."""

    def __init__(self, registry: CollectorRegistry, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._produced: dict[int, int] = {}
        self._produced_by: dict[str, dict[int, int]] = {}  # sinks counting their own units
        self._acked: dict[str, dict[int, int]] = {}
        self.latency = Histogram(
            "sic_sink_delivery_latency_seconds",
            "Time from a record's sample (tick) time until its destination acknowledged it",
            ["sink"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        registry.register(_Completeness(self))

    @staticmethod
    def _minute(ts: datetime | float) -> int:
        seconds = ts if isinstance(ts, float | int) else ts.timestamp()
        return math.floor(seconds / BUCKET)

    def _expire(self, counts: dict[int, int], now: float) -> None:
        oldest = self._minute(now - WINDOW - BUCKET)
        for minute in [m for m in counts if m < oldest]:
            del counts[minute]

    def track(self, sink: str, own_units: bool = False) -> None:
        """Show ``sink`` in the gauge from the start (at 1 until it has data to judge);
        ``own_units``: the sink reports what it was given (``produced(..., sink=sink)``)."""
        with self._lock:
            self._acked.setdefault(sink, {})
            if own_units:
                self._produced_by.setdefault(sink, {})

    def produced(self, ts: datetime, count: int, sink: str | None = None) -> None:
        """``count`` records sampled at ``ts`` (for every sink, or in ``sink``'s own units)."""
        if not count:
            return
        with self._lock:
            counts = self._produced if sink is None else self._produced_by.setdefault(sink, {})
            minute = self._minute(ts)
            counts[minute] = counts.get(minute, 0) + count
            self._expire(counts, self._clock())

    def acknowledged(self, sink: str, records: Sequence[Record], now: float | None = None) -> None:
        now = self._clock() if now is None else now
        histogram = self.latency.labels(sink)
        per_minute: dict[int, int] = {}
        for record in records:
            sampled = record.ts.timestamp()
            histogram.observe(max(0.0, now - sampled))
            minute = self._minute(sampled)
            per_minute[minute] = per_minute.get(minute, 0) + 1
        with self._lock:
            counts = self._acked.setdefault(sink, {})
            for minute, count in per_minute.items():
                counts[minute] = counts.get(minute, 0) + count
            self._expire(counts, now)

    def completeness(self) -> dict[str, float]:
        now = self._clock()
        lo, hi = now - WINDOW, now - GRACE
        with self._lock:
            return {
                sink: _ratio(self._produced_by.get(sink, self._produced), acked, lo, hi)
                for sink, acked in self._acked.items()
            }


def _ratio(produced: dict[int, int], acked: dict[int, int], lo: float, hi: float) -> float:
    judged = [m for m in produced if lo <= m * BUCKET and (m + 1) * BUCKET <= hi]
    total = sum(produced[m] for m in judged)
    return 1.0 if not total else min(1.0, sum(acked.get(m, 0) for m in judged) / total)


class _Completeness:
    def __init__(self, ledger: DeliveryLedger) -> None:
        self._ledger = ledger

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "sic_sink_completeness_ratio",
            f"Share of the records sampled {int(GRACE)}s to {int(WINDOW)}s ago that the sink's "
            "destination acknowledged",
            labels=["sink"],
        )
        for sink, ratio in sorted(self._ledger.completeness().items()):
            family.add_metric([sink], ratio)
        yield family
