"""A tick: providers → validator → one bounded backlog and worker per sink."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime

from system_info_collector.adaptive import Bursts, Sentinel, announce
from system_info_collector.budget import Budget
from system_info_collector.buffer import build_buffer
from system_info_collector.collect import Failures, base_intervals_ms, collect, prime
from system_info_collector.config import Settings
from system_info_collector.errors import ProviderError
from system_info_collector.hostpaths import HostPaths
from system_info_collector.logging import event
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.providers import Provider
from system_info_collector.scheduler import Tick, Ticker
from system_info_collector.schema import MEASUREMENTS
from system_info_collector.sinks import Sink
from system_info_collector.worker import SinkWorker


def resolve_hostname(settings: Settings) -> str:
    """The ``host`` of every record.

    ``SIC_HOSTNAME``/``NODE_NAME``; else, when the host's root is mounted (``SIC_HOST_ROOT``),
    its ``/etc/hostname``; else ``<proc>/sys/kernel/hostname``. (Inside a container the latter
    shows the *container's* UTS namespace even through the host's procfs, so a mounted host root
    is the better witness.)
    """
    if settings.hostname:
        return settings.hostname
    return host_hostname(settings.host_paths)


def _first_line(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.readline().strip()
    except OSError:
        return ""


def host_hostname(paths: HostPaths) -> str:
    name = ""
    if paths.root not in ("", "/"):
        name = _first_line(paths.root_path("/etc/hostname"))
    name = name or _first_line(paths.proc_path("sys", "kernel", "hostname"))
    return name or socket.gethostname()


def make_worker(sink: Sink, settings: Settings, metrics: Metrics) -> SinkWorker:
    """The sink's worker over the buffer its settings name (``SIC_<SINK>_BUFFER``)."""
    config = settings.buffer(sink.name)
    return SinkWorker(
        sink,
        build_buffer(sink.name, config, metrics),
        retry=settings.retry,
        metrics=metrics,
        batch_max_rows=config.batch_max_rows,
        flush_interval=config.flush_interval,
    )


class LatestRecords:
    """The newest record of every entity of every measurement (what ``/metrics`` shows).

    New records replace those with the same measurement and entity labels; entities a tick did
    not report (a CPU whose counters did not move, a collector that runs less often) keep their
    previous record until it goes stale. Kept incrementally (one entity key per new record);
    :attr:`snapshot` is replaced as a whole, so readers on other threads see a consistent dict.
    """

    def __init__(self, snapshot: dict[str, list[Record]] | None = None) -> None:
        self._index: dict[str, dict[tuple[str, ...], Record]] = {}
        self._keys: dict[str, Callable[[Mapping[str, str]], tuple[str, ...]]] = {}
        self.snapshot: dict[str, list[Record]] = {}
        if snapshot:
            self.update([r for records in snapshot.values() for r in records])

    def _key(self, measurement: str) -> Callable[[Mapping[str, str]], tuple[str, ...]]:
        key = self._keys.get(measurement)
        if key is None:
            cols = MEASUREMENTS[measurement].entity
            if len(cols) == 1:
                (col,) = cols
                key = self._keys[measurement] = lambda tags: (tags.get(col, ""),)
            else:
                key = self._keys[measurement] = lambda tags: tuple(tags.get(c, "") for c in cols)
        return key

    def update(self, records: Sequence[Record]) -> dict[str, list[Record]]:
        touched: dict[str, tuple[dict[tuple[str, ...], Record], Callable[..., tuple[str, ...]]]]
        touched = {}
        for record in records:
            name = record.measurement
            entry = touched.get(name)
            if entry is None:
                entry = touched[name] = (self._index.setdefault(name, {}), self._key(name))
            entry[0][entry[1](record.tags)] = record
        if touched:
            fresh = {name: list(by_entity.values()) for name, (by_entity, _) in touched.items()}
            self.snapshot = {**self.snapshot, **fresh}
        return self.snapshot


def merge_latest(
    latest: dict[str, list[Record]], records: Sequence[Record]
) -> dict[str, list[Record]]:
    """``latest`` with ``records`` merged in, as :class:`LatestRecords` keeps it."""
    return LatestRecords(latest).update(records)


class Agent:
    def __init__(
        self,
        settings: Settings,
        providers: Sequence[Provider],
        sinks: Sequence[Sink],
        metrics: Metrics,
        *,
        host: str,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.providers = list(providers)
        self.metrics = metrics
        self.host = host
        self.stop_event = threading.Event()
        self.workers = [make_worker(sink, settings, metrics) for sink in sinks]
        metrics.prepare([w.name for w in self.workers], [p.name for p in self.providers])
        # write-ahead (spooled) sinks first: a sample is on disk before any other sink shows it
        self._submit_order = sorted(self.workers, key=lambda w: not w.durable)
        # The ticker's slot: the base interval, or with SIC_ADAPTIVE=on the burst interval
        # (the sentinels read on every slot; base samples stay on their wall-clock slots).
        self.adaptive = settings.adaptive.enabled
        self.slot_interval = settings.adaptive.interval if self.adaptive else settings.interval
        self._every = {
            p.name: max(1, round(settings.collector_interval(p.name) / self.slot_interval))
            for p in self.providers
        }
        self._sentinel: Sentinel | None = None
        self._bursts: Bursts | None = None
        self._in_burst: frozenset[str] = frozenset()
        if self.adaptive:
            self._sentinel = Sentinel(
                settings.host_paths,
                devices_exclude=settings.collector("diskio").devices_exclude,
                monotonic=monotonic,
            )
            self._bursts = Bursts(settings.adaptive, frozenset(self._every), monotonic, metrics)
        self._budget = Budget(
            settings.overhead_budget,
            settings.overhead_window,
            {p.name: settings.collector_interval(p.name) for p in self.providers},
            monotonic,
        )
        self._show_intervals(self._every)
        self._base_ms = base_intervals_ms(settings, self.providers)
        self._last_ts: dict[str, datetime] = {}  # each collector's previous sample time
        self._failures = Failures()
        self.last_records: list[Record] = []
        # The newest records of each measurement, also of collectors that did not run this tick
        # (replaced as a whole each tick, so readers on other threads see a consistent dict);
        # kept only when /metrics shows host metrics: nobody else reads it.
        self.expose_latest = bool(settings.http.listen) and settings.http.host_metrics != "off"
        self._latest = LatestRecords()
        self.latest: dict[str, list[Record]] = {}
        self.last_tick_monotonic: float | None = None

    @property
    def failing_collectors(self) -> frozenset[str]:
        """Collectors whose last run failed (they are retried every tick)."""
        return self._failures.names

    def start(self) -> None:
        self._prime()
        for worker in self.workers:
            worker.start()

    def _prime(self) -> None:
        prime(self.providers, self._failures, self.metrics)
        if self._sentinel is not None:
            self._burst()  # the first reading: the next one has rates

    def run(self) -> None:
        """Tick until :attr:`stop_event` is set (SIGTERM/SIGINT), then flush and close."""
        ticker = Ticker(
            self.slot_interval,
            wait=self.stop_event.wait,
            on_overrun=self._overrun,
            on_clock_step=self._clock_stepped,
        )
        if self._sentinel is not None:
            announce(self._sentinel, self.settings.adaptive, sorted(self._every))
        event(
            "INFO",
            "collector_started",
            "sampling",
            host=self.host,
            interval_seconds=self.settings.interval,
            adaptive=self.adaptive,
            collectors=list(self._every),
            sinks=[w.name for w in self.workers],
        )
        primed = False
        for tick in ticker:
            if not primed:
                # Read the counters again on the first slot and sample from the next one, so
                # the first sample's rates cover a whole interval, not the few ms to the slot.
                primed = True
                self._prime()
                self.last_tick_monotonic = time.monotonic()
                continue
            self.tick(tick)

    def _burst(self) -> frozenset[str]:
        """Read the sentinels; the collectors in a burst now (their metric follows)."""
        assert self._sentinel is not None and self._bursts is not None
        try:
            values = self._sentinel.read()
        except (ProviderError, ValueError) as exc:
            self._failures.failed("adaptive", exc)
            values = {}
        else:
            self._failures.succeeded("adaptive")
        burst = self._bursts.update(values)
        if burst != self._in_burst:
            changed = burst ^ self._in_burst
            self._in_burst = burst
            self._show_intervals(changed)
        return burst

    def _show_intervals(self, names: Iterable[str]) -> None:
        """``sic_collector_interval_seconds``: burst or base interval, times the stretch."""
        for name in names:
            base = self.slot_interval if name in self._in_burst else None
            interval = base or self.settings.collector_interval(name)
            self.metrics.collector_interval.labels(name).set(
                interval * self._budget.stretch.get(name, 1)
            )

    def tick(self, tick: Tick) -> list[Record]:
        started, cpu_started = time.perf_counter(), time.thread_time()
        burst = self._burst() if self.adaptive else frozenset()
        sentinel = {"adaptive": time.thread_time() - cpu_started} if self.adaptive else {}
        stretch = self._budget.stretch
        due = [
            p
            for p in self.providers
            if (p.name in burst and not tick.slot % stretch[p.name])
            or not tick.slot % (self._every[p.name] * stretch[p.name])
        ]
        if changed := self._budget.evaluate():
            self._show_intervals(changed)
        if self.adaptive and not due:
            self._budget.charge(sentinel)
            return []  # a sentinel-only slot
        self.metrics.tick_lateness.observe(tick.lateness)
        result = collect(
            due,
            tick.ts,
            self.host,
            self.settings.tags,
            self._failures,
            self.metrics,
            intervals_ms=self._intervals_since_last(due, tick.ts),
        )
        for p in due:
            if p.name not in result.failed:
                self._last_ts[p.name] = tick.ts
        costs = {**result.cpu_seconds, **sentinel}
        accepted = result.accepted
        self.metrics.delivery.produced(tick.ts, len(accepted))
        for worker in self._submit_order:
            worker.submit(accepted)
        self.last_records = accepted
        if accepted and self.expose_latest:
            self.latest = self._latest.update(accepted)
        self.metrics.ticks.inc()
        self.metrics.tick_duration.observe(time.perf_counter() - started)
        self.metrics.last_tick.set(time.time())
        self._charge(costs, accepted, time.thread_time() - cpu_started)
        self.last_tick_monotonic = time.monotonic()
        return accepted

    def _charge(self, costs: dict[str, float], records: Sequence[Record], tick_cpu: float) -> None:
        """Charge each collector its collect() time plus its records' share of the rest."""
        rest = tick_cpu - sum(costs.values())
        if records and rest > 0:
            for name, n in Counter(r.measurement for r in records).items():
                costs[name] = costs.get(name, 0.0) + rest * n / len(records)
        self._budget.charge(costs)
        for name, seconds in costs.items():
            self.metrics.collector_cpu.labels(name).inc(seconds)

    def _intervals_since_last(self, due: Sequence[Provider], ts: datetime) -> dict[str, int]:
        """``interval_ms`` of each due collector's sample: the time since its previous sample
        (what its rates were measured over, and the share of time a gauge stands for), so
        weighting by it is right across bursts, stretched intervals and skipped slots; the
        first sample stands for the configured interval."""
        out = {}
        for p in due:
            last = self._last_ts.get(p.name)
            gap = round((ts - last).total_seconds() * 1000) if last is not None else 0
            out[p.name] = gap if gap > 0 else self._base_ms[p.name]
        return out

    def close(self) -> bool:
        """Let every sink flush within ``SIC_SHUTDOWN_TIMEOUT`` (in parallel); True if all did."""
        deadline = time.monotonic() + self.settings.shutdown_timeout
        results: list[bool] = []
        closers = [
            threading.Thread(
                target=lambda w=w: results.append(w.close(max(0.0, deadline - time.monotonic())))
            )
            for w in self.workers
        ]
        for t in closers:
            t.start()
        for t in closers:
            t.join()
        for provider in self.providers:
            provider.close()
        if self._sentinel is not None:
            self._sentinel.close()
        return all(results)

    def _overrun(self, skipped: int, late: float) -> None:
        self.metrics.tick_overruns.inc()
        self.metrics.ticks_skipped.inc(skipped)
        event(
            "WARNING",
            "tick_overrun",
            "tick ran past its slot; skipping missed slots",
            skipped_slots=skipped,
            overrun_seconds=round(late, 6),
        )

    def _clock_stepped(self, step: float) -> None:
        self.metrics.clock_steps.inc()
        event(
            "WARNING",
            "clock_stepped",
            "the wall clock jumped; timestamps re-anchored to it from the next slot",
            step_seconds=round(step, 6),
            direction="backward" if step < 0 else "forward",
        )
