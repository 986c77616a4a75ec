"""Sinks write batches of records somewhere. One module each; registered in a literal dict.

A sink only knows how to write: buffering, retries and backoff wrap it from outside
(:mod:`system_info_collector.worker`). ``write`` raises
:class:`~system_info_collector.errors.TransientSinkError` (retry the same batch later) or
:class:`~system_info_collector.errors.PermanentSinkError` (this batch will never be written).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from system_info_collector.collector import Provider
from system_info_collector.config import Settings
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


class Sink(Protocol):
    name: str

    def open(self) -> None: ...

    def write(self, batch: Sequence[Record]) -> None: ...

    def close(self) -> None: ...

    def check(self) -> list[CheckResult]:
        """Reachability checks for ``system-info-collector check`` (no data is written)."""
        ...


# Optional on a sink: ``at_tick(records, providers) -> records to buffer``, called by its
# worker in the sampling thread with each tick's records and the providers whose readings that
# tick just took. The push sinks buffer the tick's series (``sinks/series.py``), not records.
AtTick = Callable[[Sequence[Record], Sequence[Provider]], Sequence[Record]]


def _stdout(settings: Settings, metrics: Metrics) -> Sink:
    from system_info_collector.sinks.stdout import StdoutSink

    return StdoutSink(layout=settings.stdout_layout)


def _csv(settings: Settings, metrics: Metrics) -> Sink:
    from system_info_collector.sinks.csv import CsvSink

    return CsvSink(settings.csv, metrics=metrics)


def _postgres(settings: Settings, metrics: Metrics) -> Sink:
    from system_info_collector.sinks.postgres import PostgresSink

    return PostgresSink(settings.postgres, retry=settings.retry, metrics=metrics)


def _remote_write(settings: Settings, metrics: Metrics) -> Sink:
    from system_info_collector.sinks.remote_write import RemoteWriteSink

    return RemoteWriteSink(
        settings.remote_write, metrics=metrics, mode=settings.http.host_metrics, tags=settings.tags
    )


def _otlp(settings: Settings, metrics: Metrics) -> Sink:
    from system_info_collector.sinks.otlp import OtlpSink

    return OtlpSink(
        settings.otlp, host_paths=settings.host_paths, metrics=metrics, tags=settings.tags
    )


REGISTRY: dict[str, Callable[[Settings, Metrics], Sink]] = {
    "stdout": _stdout,
    "csv": _csv,
    "postgres": _postgres,
    "remote_write": _remote_write,
    "otlp": _otlp,
}


def build_sinks(settings: Settings, metrics: Metrics) -> list[Sink]:
    return [REGISTRY[name](settings, metrics) for name in settings.sinks]
