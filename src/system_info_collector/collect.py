"""The one collect path (node_exporter's ``execute()``): run every due provider, stamp its samples
(measurement, tick time, host, static tags), validate them, and log and count what failed or was
rejected. ``Agent.tick`` and the ``once`` command both go through :func:`collect`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from itertools import repeat
from operator import itemgetter

from system_info_collector.collector import Provider
from system_info_collector.config import Settings
from system_info_collector.errors import ProviderError
from system_info_collector.logging import event
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.validate import Rejection, validate

_TAGS, _FIELDS = itemgetter(0), itemgetter(1)  # of a Sample


class Failures:
    """Which collectors are failing: the first failure is an ERROR, repeats are only counted,
    the first success after failures is an INFO -- so a broken file never floods the log."""

    def __init__(self, message: str = "collector failed; retrying next tick") -> None:
        self._message = message
        self._failing: set[str] = set()

    def failed(self, name: str, exc: Exception) -> None:
        if name not in self._failing:
            self._failing.add(name)
            event(
                "ERROR",
                "collector_failed",
                self._message,
                collector=name,
                error=f"{type(exc).__name__}: {exc}",
            )

    @property
    def names(self) -> frozenset[str]:
        """The collectors failing now."""
        return frozenset(self._failing)

    def succeeded(self, name: str) -> None:
        if name in self._failing:
            self._failing.discard(name)
            event("INFO", "collector_recovered", "collector works again", collector=name)


def prime(
    providers: Iterable[Provider], failures: Failures | None = None, metrics: Metrics | None = None
) -> None:
    """The first reading of every provider (counters that need two). A failure is reported to
    ``failures`` if given, else left to the first :func:`collect` to report."""
    for provider in providers:
        try:
            provider.prime()
        except ProviderError as exc:
            if metrics is not None:
                metrics.collector_errors.labels(provider.name).inc()
            if failures is not None:
                failures.failed(provider.name, exc)


def base_intervals_ms(settings: Settings, providers: Iterable[Provider]) -> dict[str, int]:
    """Each collector's configured interval (``SIC_<NAME>_INTERVAL`` or ``SIC_INTERVAL``), ms."""
    return {p.name: round(settings.collector_interval(p.name) * 1000) for p in providers}


@dataclass(slots=True)
class Collected:
    accepted: list[Record] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # names of the providers that raised
    # CPU seconds (this thread's) each provider took to collect and stamp its samples
    cpu_seconds: dict[str, float] = field(default_factory=dict)


def collect(
    providers: Iterable[Provider],
    ts: datetime,
    host: str,
    tags: Mapping[str, str],
    failures: Failures,
    metrics: Metrics | None = None,
    intervals_ms: Mapping[str, int] | None = None,
) -> Collected:
    """One reading of ``providers``, stamped with ``ts``/``host``/``tags`` and the interval each
    collector's sample stands for (``intervals_ms``, by collector name), and validated."""
    result = Collected()
    records: list[Record] = []
    for provider in providers:
        name = provider.name
        began = time.thread_time()
        try:
            samples = provider.collect()
        except Exception as exc:  # ProviderError, or a bug in one provider: the rest still run
            result.cpu_seconds[name] = time.thread_time() - began
            result.failed.append(name)
            failures.failed(name, exc)
            if metrics is not None:
                metrics.collector_errors.labels(name).inc()
            continue
        failed_parts = getattr(provider, "failed_parts", 0)
        if failed_parts and metrics is not None:
            metrics.collector_partial_errors.labels(name).inc(failed_parts)
        failures.succeeded(name)
        interval_ms = intervals_ms.get(name, 0) if intervals_ms else 0
        if tags:
            records.extend(
                Record(name, ts, host, {**tags, **s.tags}, s.fields, interval_ms) for s in samples
            )
        else:  # the samples' own tags: one C-level map, no generator frame per record
            samples = samples if isinstance(samples, list) else list(samples)
            stamp = repeat(name), repeat(ts), repeat(host)
            sample_tags, fields = map(_TAGS, samples), map(_FIELDS, samples)
            records.extend(map(Record, *stamp, sample_tags, fields, repeat(interval_ms)))
        result.cpu_seconds[name] = time.thread_time() - began
    result.accepted, result.rejected = validate(records)
    for rejection in result.rejected:
        if metrics is not None:
            metrics.records_dropped.labels(rejection.record.measurement, rejection.rule).inc()
        event(
            "WARNING",
            "record_rejected",
            "invalid record dropped",
            measurement=rejection.record.measurement,
            field=rejection.field,
            value=rejection.value,
            rule=rejection.rule,
            tags=dict(rejection.record.tags),
        )
    if metrics is not None:
        counts: dict[str, int] = {}
        for record in result.accepted:
            counts[record.measurement] = counts.get(record.measurement, 0) + 1
        for measurement, n in counts.items():
            metrics.child(metrics.records_collected, measurement).inc(n)
    return result
