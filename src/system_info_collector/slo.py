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

The records of one tick share their sample time, hence their latency: a batch is observed once
per distinct tick time with its record count (:class:`_Latency`), not once per record -- the
same buckets, count and sum as ``Histogram.observe`` per record (up to the float rounding of
the sum), for a few operations a batch instead of a locked ``observe`` per sample (a remote
write of a 256-CPU host acknowledges ~3,000 series a tick: 4.3 ms a tick before, measured).
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from operator import attrgetter

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from system_info_collector.model import Record

WINDOW = 15 * 60.0
GRACE = 60.0
BUCKET = 60.0
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_TS = attrgetter("ts")


class DeliveryLedger:
    """Records produced and acknowledged per minute of sample time (module docstring)."""

    def __init__(self, registry: CollectorRegistry, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._produced: dict[int, int] = {}
        self._produced_by: dict[str, dict[int, int]] = {}  # sinks counting their own units
        self._acked: dict[str, dict[int, int]] = {}
        self.latency = _Latency(LATENCY_BUCKETS)
        registry.register(self.latency)
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
        per_minute: dict[int, int] = {}
        for ts, count in Counter(map(_TS, records)).items():  # a tick's records share ts
            sampled = ts.timestamp()
            self.latency.observe(sink, max(0.0, now - sampled), count)
            minute = self._minute(sampled)
            per_minute[minute] = per_minute.get(minute, 0) + count
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


class _Latency:
    """``sic_sink_delivery_latency_seconds{sink}``: a histogram observed ``count`` samples of
    one value at a time (Prometheus' ``le`` buckets: a value counts in the first bound that is
    not below it, and in every bound above through the cumulative sums)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = tuple(float(b) for b in bounds)
        go = floatToGoString  # the le texts prometheus-client writes
        self._les = [go(b) for b in self._bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        self._lock = threading.Lock()
        self._counts: dict[str, list[int]] = {}  # per sink: one count per bound, then +Inf
        self._sums: dict[str, float] = {}

    def observe(self, sink: str, value: float, count: int = 1) -> None:
        index = bisect_left(self._bounds, value)
        with self._lock:
            counts = self._counts.get(sink)
            if counts is None:
                counts = self._counts[sink] = [0] * (len(self._bounds) + 1)
                self._sums[sink] = 0.0
            counts[index] += count
            self._sums[sink] += value * count

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "sic_sink_delivery_latency_seconds",
            "Time from a record's sample (tick) time until its destination acknowledged it",
            labels=["sink"],
        )
        with self._lock:
            state = {sink: (list(c), self._sums[sink]) for sink, c in self._counts.items()}
        for sink, (counts, total) in sorted(state.items()):
            cumulative, running = [], 0
            for le, n in zip(self._les, counts, strict=True):
                running += n
                cumulative.append((le, running))
            family.add_metric([sink], cumulative, total)
        yield family
