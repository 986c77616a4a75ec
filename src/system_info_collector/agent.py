"""A tick: providers → validator → one bounded backlog and worker per sink."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime

from system_info_collector.adaptive import Bursts, PsiTriggers, Sentinel, announce
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


def make_worker(
    sink: Sink, settings: Settings, metrics: Metrics, providers: Sequence[Provider] = ()
) -> SinkWorker:
    """The sink's worker over the buffer its settings name (``SIC_<SINK>_BUFFER``); a sink
    that maps each tick (``at_tick``) gets the providers' readings."""
    config = settings.buffer(sink.name)
    return SinkWorker(
        sink,
        build_buffer(sink.name, config, metrics),
        retry=settings.retry,
        metrics=metrics,
        batch_max_rows=config.batch_max_rows,
        flush_interval=config.flush_interval,
        providers=providers,
    )


class LatestRecords:
    """The newest record of every entity of every measurement (what ``/metrics`` shows).

    A measurement whose collector ran is replaced by that reading, as node_exporter serves
    only what its last scrape read: a disk, mount, interface or CPU absent from it disappears
    (an entity whose record the validator rejected keeps its previous record until it goes
    stale). A measurement whose collector did not run this tick (a longer
    ``SIC_<C>_INTERVAL``) or failed keeps its records until they go stale. Without ``read``,
    records are merged in (one entity key per new record). :attr:`snapshot` is replaced as a
    whole, so readers on other threads see a consistent dict.
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

    def update(
        self,
        records: Sequence[Record],
        read: Collection[str] | None = None,
        rejected: Sequence[Record] = (),
    ) -> dict[str, list[Record]]:
        """Merge ``records`` in; the measurements in ``read`` (collectors that ran and
        succeeded) are replaced by their ``records`` instead, except the entities of
        ``rejected`` records, which keep their previous record."""
        touched: dict[str, tuple[dict[tuple[str, ...], Record], Callable[..., tuple[str, ...]]]]
        touched = {}
        old: dict[str, dict[tuple[str, ...], Record]] = {}
        for name in read or ():
            old[name] = self._index.pop(name, {})
            touched[name] = (self._index.setdefault(name, {}), self._key(name))
        for record in records:
            name = record.measurement
            entry = touched.get(name)
            if entry is None:
                entry = touched[name] = (self._index.setdefault(name, {}), self._key(name))
            entry[0][entry[1](record.tags)] = record
        for record in rejected:
            name = record.measurement
            if name in old:
                by_entity, key = touched[name]
                previous = old[name].get(k := key(record.tags))
                if previous is not None:
                    by_entity.setdefault(k, previous)
        if touched:
            fresh = {name: list(by_entity.values()) for name, (by_entity, _) in touched.items()}
            snapshot = {**self.snapshot, **fresh}
            for name in [name for name, recs in fresh.items() if not recs]:
                del snapshot[name], self._index[name]  # every entity vanished
            self.snapshot = snapshot
        return self.snapshot


class StopEvent(threading.Event):
    """The agent's stop flag; ``set`` also runs :attr:`on_set` (it ends a wait on the PSI poll
    triggers: a signal handler's ``set`` must wake a ``poll`` that the interpreter would
    otherwise resume until its timeout)."""

    def __init__(self) -> None:
        super().__init__()
        self.on_set: Callable[[], None] | None = None

    def set(self) -> None:
        super().set()
        if self.on_set is not None:
            self.on_set()


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
        self.stop_event = StopEvent()
        self.workers = [make_worker(s, settings, metrics, self.providers) for s in sinks]
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
        self._triggers: PsiTriggers | None = None  # kernel PSI poll triggers, where allowed
        self._in_burst: frozenset[str] = frozenset()
        if self.adaptive:
            self._sentinel = Sentinel(
                settings.host_paths,
                devices_exclude=settings.collector("diskio").devices_exclude,
                monotonic=monotonic,
            )
            self._bursts = Bursts(settings.adaptive, frozenset(self._every), monotonic, metrics)
            if settings.adaptive.psi_triggers:
                thresholds = {
                    name: state.threshold
                    for name, state in self._bursts.states.items()
                    if name in self._sentinel.psi_files
                }
                files = {name: self._sentinel.psi_files[name] for name in thresholds}
                self._triggers = PsiTriggers(files, thresholds)
                self._sentinel.psi_keep = max(self._triggers.windows.values(), default=0.0)
                self.stop_event.on_set = self._triggers.interrupt
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
            wait=self._wait,
            on_overrun=self._overrun,
            on_clock_step=self._clock_stepped,
        )
        if self._sentinel is not None:
            announce(self._sentinel, self.settings.adaptive, sorted(self._every), self._triggers)
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

    def _wait(self, seconds: float) -> bool:
        """The ticker's sleep: True when stopping. With PSI poll triggers the sleep ends early
        when one fires: the affected collectors are sampled at once (:meth:`_triggered`), then
        the sleep goes on to the slot."""
        triggers = self._triggers
        if triggers is None or not triggers.active:
            return self.stop_event.wait(seconds)
        deadline = time.monotonic() + seconds
        while not self.stop_event.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            fired = triggers.wait(remaining)
            if fired and not self.stop_event.is_set():
                self._triggered(fired)
        return True

    def _triggered(self, fired: Iterable[str]) -> None:
        """A PSI poll trigger fired: its collectors join the burst now and, unless they were in
        one already (or are stretched by the budget), are sampled at this moment -- an
        off-slot sample whose ``interval_ms`` is the time since their previous one."""
        assert self._bursts is not None and self._triggers is not None
        started, cpu_started = time.perf_counter(), time.thread_time()
        confirmed = {name: self._triggers.windows[name] for name in fired if self._confirm(name)}
        before = self._in_burst
        burst = self._bursts.triggered(confirmed)
        if burst != before:
            self._in_burst = burst
            self._show_intervals(burst ^ before)
        stretch = self._budget.stretch
        due = [
            p
            for p in self.providers
            if p.name in burst and p.name not in before and stretch[p.name] == 1
        ]
        if due:
            self._sample(due, self._off_slot_ts(), started, cpu_started, {})

    def _confirm(self, name: str) -> bool:
        """Whether the stall total agrees with a trigger that fired: at least its stall over
        its window (less what the part of the window before the oldest reading could hold).
        Triggers have been seen firing on a VM while the total grew by a few ms."""
        assert self._sentinel is not None and self._triggers is not None
        window, needed = self._triggers.windows[name], self._triggers.stalls[name]
        try:
            stalled, elapsed = self._sentinel.psi_stall(name, window)
        except (ProviderError, ValueError, OSError):
            ok, stalled, elapsed = True, 0.0, 0.0  # no total to check against: the kernel says so
        else:
            ok = stalled >= needed - max(0.0, window - elapsed) * 1e6
        self.metrics.psi_triggers.labels(name, "confirmed" if ok else "not_confirmed").inc()
        if not ok:
            event(
                "DEBUG",
                "psi_trigger_not_confirmed",
                "a PSI poll trigger fired but the stall total does not show the stall",
                signal=name,
                stalled_ms=round(stalled / 1000, 1),
                over_seconds=round(elapsed, 3),
                trigger_ms=round(needed / 1000, 1),
                window_seconds=window,
            )
        return ok

    def _off_slot_ts(self) -> datetime:
        """Now to the millisecond, never a slot's time (which a slot's samples have: a
        primary key of host, entity and ts must stay unique)."""
        now_ms = time.time() * 1000
        ms = round(now_ms)
        if ms % round(self.slot_interval * 1000) == 0:
            ms += 1 if now_ms >= ms else -1  # after a slot that ran, before one to come
        return datetime.fromtimestamp(ms / 1000, UTC)

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
        accepted = self._sample(due, tick.ts, started, cpu_started, sentinel)
        self.metrics.ticks.inc()
        return accepted

    def _sample(
        self,
        due: Sequence[Provider],
        ts: datetime,
        started: float,
        cpu_started: float,
        costs: dict[str, float],
    ) -> list[Record]:
        """Collect ``due`` stamped ``ts``, hand the records to the sinks, charge the budget."""
        result = collect(
            due,
            ts,
            self.host,
            self.settings.tags,
            self._failures,
            self.metrics,
            intervals_ms=self._intervals_since_last(due, ts),
        )
        for p in due:
            if p.name not in result.failed:
                self._last_ts[p.name] = ts
        costs = {**result.cpu_seconds, **costs}
        accepted = result.accepted
        self.metrics.delivery.produced(ts, len(accepted))
        for worker in self._submit_order:
            worker.submit(accepted)
        self.last_records = accepted
        if self.expose_latest:  # what the collectors that ran did not report is forgotten
            read = {p.name for p in due}.difference(result.failed)
            rejected = [r.record for r in result.rejected]
            self.latest = self._latest.update(accepted, read, rejected)
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
            self.metrics.child(self.metrics.collector_cpu, name).inc(seconds)

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
        if self._triggers is not None:
            self.stop_event.on_set = None
            self._triggers.close()
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
