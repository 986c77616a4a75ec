"""The collector's own numbers, on a registry of its own (no global default registry)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.metrics import MetricWrapperBase

from system_info_collector import __version__
from system_info_collector.slo import DeliveryLedger

WRITE_ERROR_CLASSES = ("transient", "permanent", "unexpected")  # the worker's error classes
_M = TypeVar("_M", bound=MetricWrapperBase)
_TICK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """All self-metrics; one instance per agent, passed to the components that update them."""

    def child(self, metric: _M, *values: str) -> _M:
        """``metric.labels(*values)``, looked up once: the per-tick paths update the same few
        series every tick, and ``labels()`` validates and locks on every call. The same child
        object is returned either way (series are never removed from these metrics)."""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self.build_info = Info("sic_build", "Build information", registry=r)
        self.build_info.info({"version": __version__})
        self.ticks = Counter("sic_ticks", "Ticks run by the scheduler", registry=r)
        self.tick_duration = Histogram(
            "sic_tick_duration_seconds",
            "Time to sample all due collectors in a tick",
            buckets=_TICK_BUCKETS,
            registry=r,
        )
        self.tick_lateness = Histogram(
            "sic_tick_lateness_seconds",
            "How late a tick started after its scheduled time (jitter)",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1),
            registry=r,
        )
        self.tick_overruns = Counter(
            "sic_tick_overruns", "Ticks that ran past the next slot", registry=r
        )
        self.ticks_skipped = Counter(
            "sic_ticks_skipped", "Slots skipped (never burst-replayed) after an overrun", registry=r
        )
        self.clock_steps = Counter(
            "sic_clock_steps",
            "Wall-clock steps (NTP step, date -s, resume from suspend) the ticker re-anchored on",
            registry=r,
        )
        self.last_tick = Gauge(
            "sic_last_tick_timestamp_seconds", "Unix time of the last completed tick", registry=r
        )
        self.records_collected = Counter(
            "sic_records_collected", "Records produced by collectors", ["measurement"], registry=r
        )
        self.records_dropped = Counter(
            "sic_records_dropped",
            "Records rejected by the validator",
            ["measurement", "rule"],
            registry=r,
        )
        self.collector_errors = Counter(
            "sic_collector_errors", "Collector runs that failed", ["collector"], registry=r
        )
        self.collector_partial_errors = Counter(
            "sic_collector_partial_errors",
            "Parts of a collector run that failed while the rest was collected "
            "(a mount whose statvfs failed or did not return in time)",
            ["collector"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "sic_sink_queue_depth", "Batches waiting in a sink's queue", ["sink"], registry=r
        )
        self.backlog_records = Gauge(
            "sic_sink_backlog_records",
            "Records held by a sink awaiting a successful write",
            ["sink"],
            registry=r,
        )
        self.rows_written = Counter(
            "sic_sink_rows_written", "Records written by a sink", ["sink"], registry=r
        )
        self.write_errors = Counter(
            "sic_sink_write_errors",
            "Failed writes by sink and error class",
            ["sink", "class"],
            registry=r,
        )
        self.retries = Counter("sic_sink_retries", "Write retries", ["sink"], registry=r)
        self.sink_dropped = Counter(
            "sic_sink_records_dropped",
            "Records a sink dropped (backlog overflow or a permanently rejected batch)",
            ["sink"],
            registry=r,
        )
        self.last_write = Gauge(
            "sic_sink_last_success_timestamp_seconds",
            "Unix time of the last successful write",
            ["sink"],
            registry=r,
        )
        self.sink_degraded = Gauge(
            "sic_sink_degraded", "1 while a sink is failing and backing off", ["sink"], registry=r
        )
        self.spool_bytes = Gauge(
            "sic_spool_bytes",
            "Bytes not yet written in a sink's write-ahead spool (PostgreSQL's by default; "
            "every sink with SIC_<SINK>_BUFFER=disk has its own; 0 for a sink without one)",
            ["sink"],
            registry=r,
        )
        self.spool_batches = Gauge(
            "sic_spool_batches",
            "Batches not yet written in a sink's write-ahead spool",
            ["sink"],
            registry=r,
        )
        self.spool_dropped = Counter(
            "sic_spool_dropped_records",
            "Spooled records dropped (oldest first) because the spool reached its size limit",
            ["sink"],
            registry=r,
        )
        self.spool_damaged_bytes = Counter(
            "sic_spool_damaged_bytes",
            "Damaged spool bytes set aside (flipped, torn, zeroed) or lost (a truncated or "
            "removed segment); every intact entry around them is kept",
            ["sink"],
            registry=r,
        )
        self.spool_damage_events = Counter(
            "sic_spool_damage_events",
            "Times damage was found in the spool (at start or while draining)",
            ["sink"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "sic_dead_lettered_rows",
            "Rows the database rejected, written to the dead-letter file",
            registry=r,
        )
        self.samples_refused = Counter(
            "sic_sink_samples_refused",
            "Samples a receiver refused as already stored or out of order (a retried or "
            "replayed request sends samples it may already have)",
            ["sink"],
            registry=r,
        )
        self.delivery = DeliveryLedger(r)
        self.db_held = Counter(
            "sic_db_held_rows",
            "Rows held in the spool directory because their table does not match the schema",
            registry=r,
        )
        self.db_conflicts = Counter(
            "sic_db_conflicting_rows",
            "Rows whose key the database already held with different values (clock stepped "
            "back, or two hosts with one host name); the stored row is kept, the new one is "
            "written to conflicts.jsonl",
            registry=r,
        )
        self.collector_interval = Gauge(
            "sic_collector_interval_seconds",
            "Effective sampling interval of each collector (burst, base or stretched)",
            ["collector"],
            registry=r,
        )
        self.collector_cpu = Counter(
            "sic_collector_cpu_seconds",
            "CPU time the sampling thread spent in each collector (the overhead budget's input)",
            ["collector"],
            registry=r,
        )
        self.bursts = Counter(
            "sic_adaptive_bursts",
            "Bursts of fine sampling started, by signal",
            ["signal"],
            registry=r,
        )
        self.psi_triggers = Counter(
            "sic_adaptive_psi_triggers",
            "PSI poll trigger events the kernel delivered, by whether the stall total confirmed "
            "them (only confirmed ones start a burst)",
            ["signal", "outcome"],
            registry=r,
        )
        self.csv_rotations = Counter("sic_csv_rotations", "CSV files rotated", registry=r)
        self.csv_truncations = Counter(
            "sic_csv_truncations",
            "Active CSV files found cut short by another program (copytruncate) and restarted",
            registry=r,
        )
        self.csv_bytes = Counter("sic_csv_written_bytes", "Bytes written to CSV files", registry=r)
        self.csv_damaged_bytes = Counter(
            "sic_csv_damaged_bytes",
            "Bytes of CSV files found damaged at start (torn tail, NUL hole, bad header) and "
            "set aside in .torn- files",
            registry=r,
        )
        self.csv_damage_events = Counter(
            "sic_csv_damage_events",
            "CSV files found damaged at start and repaired (ERROR csv_torn_tail_repaired or "
            "csv_damage_salvaged)",
            registry=r,
        )

    def spool_state(self, sink: str, pending_bytes: int, pending_batches: int) -> None:
        """The backlog of ``sink``'s spool (``sic_spool_bytes{sink}``, ``sic_spool_batches``)."""
        self.child(self.spool_bytes, sink).set(pending_bytes)  # every append: looked up once
        self.child(self.spool_batches, sink).set(pending_batches)

    def prepare(self, sinks: Iterable[str], collectors: Iterable[str]) -> None:
        """Create the labelled series of these sinks and collectors at zero.

        A series that appears only with its first error leaves ``rate()`` and alerts such as
        ``increase(sic_sink_write_errors_total[5m]) > 0`` blind to that first error.
        """
        for sink in sinks:
            for metric in (
                self.rows_written,
                self.retries,
                self.sink_dropped,
                self.spool_dropped,
                self.spool_damaged_bytes,
                self.spool_damage_events,
            ):
                metric.labels(sink)
            for cls in WRITE_ERROR_CLASSES:
                self.write_errors.labels(sink, cls)
            for gauge in (
                self.queue_depth,
                self.backlog_records,
                self.sink_degraded,
                self.spool_bytes,
                self.spool_batches,
            ):
                gauge.labels(sink)
        for collector in collectors:
            self.collector_errors.labels(collector)
            self.collector_partial_errors.labels(collector)
            self.records_collected.labels(collector)
