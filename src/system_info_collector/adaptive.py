"""Adaptive sampling: cheap sentinels between base ticks, bursts of full collection on spikes.

With ``SIC_ADAPTIVE=on`` the ticker runs at the burst interval (``SIC_ADAPTIVE_INTERVAL``); on
every such fine slot the :class:`Sentinel` reads a few cheap host signals, and :class:`Bursts`
decides which collectors sample at the fine rate:

============== ========================================== ================= ==============
signal         source (share of the time since last read)  threshold         collectors
============== ========================================== ================= ==============
``cpu``        ``<proc>/stat`` totals: 100 - idle - iowait ``CPU_PERCENT``   ``cpu``
``memory_psi`` ``<proc>/pressure/memory`` some ``total``   ``MEMORY_PSI``    memory,pressure
``io_psi``     ``<proc>/pressure/io`` some ``total``       ``IO_PSI``        diskio,pressure
``disk_busy``  ``<proc>/diskstats`` io_ticks, busiest disk ``DISK_BUSY_PCT`` ``diskio``
============== ========================================== ================= ==============

A signal *fires* when its value reaches the absolute threshold, or jumps ``SIC_ADAPTIVE_JUMP``
percentage points above its recent baseline (an exponential average over about a minute, once
it has a few seconds of history). Its collectors switch to the fine rate at once and stay
there until ``SIC_ADAPTIVE_HOLD`` after the last reading that fired. PSI values are computed from
the ``total`` stall counter over the last half second, not from ``avg10`` (a 10 s average lags
a spike by seconds). All time comes from the injected monotonic clock.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from system_info_collector.config import AdaptiveSettings
from system_info_collector.errors import ProviderError
from system_info_collector.hostpaths import HostPaths
from system_info_collector.logging import event
from system_info_collector.providers._read import ProcFile
from system_info_collector.providers.diskio import parse_diskstats

# signal -> the collectors it switches to the burst interval
SIGNAL_COLLECTORS: Mapping[str, tuple[str, ...]] = {
    "cpu": ("cpu",),
    "memory_psi": ("memory", "pressure"),
    "io_psi": ("diskio", "pressure"),
    "disk_busy": ("diskio",),
}
SIGNAL_WINDOW = 0.5  # seconds each signal is measured over
BASELINE_SECONDS = 60.0  # time constant of the baseline average
BASELINE_WARMUP = 5.0  # seconds of readings before a jump can fire


def _psi_some_total(text: str) -> int:
    """The ``total=`` (µs) of the ``some`` line of a pressure file."""
    for line in text.splitlines():
        if line.startswith("some "):
            for part in line.split():
                if part.startswith("total="):
                    return int(part[6:])
    raise ProviderError(f"no 'some ... total=' line in {text[:80]!r}")


def psi_trigger_support(path: str) -> str:
    """Whether this process may register a PSI poll trigger on ``path`` (detected, not
    required: the sentinel polls ``total`` anyway). Unprivileged triggers need a window that
    is a multiple of 2 s (kernel ≥ 6.5); other windows need CAP_SYS_RESOURCE."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return f"unavailable: {exc.strerror or exc}"
    try:
        os.write(fd, b"some 150000 2000000\0")  # 150 ms of stall in a 2 s window
        return "available"
    except OSError as exc:
        reason = {errno.EPERM: "not permitted", errno.EINVAL: "not supported"}.get(exc.errno or 0)
        return f"unavailable: {reason or exc.strerror or exc}"
    finally:
        os.close(fd)


class Sentinel:
    """Reads the cheap signals; each :meth:`read` returns their share (%) of the last
    ``window`` seconds (since the newest earlier reading at least that old; nothing on the
    first). Half a second: one 250 ms window holds only 25 scheduler ticks per CPU at
    HZ=100, and a single busy blip of another process should not start a burst."""

    def __init__(
        self,
        paths: HostPaths,
        *,
        devices_exclude: Any,
        monotonic: Callable[[], float],
        window: float = SIGNAL_WINDOW,
    ) -> None:
        self._mono = monotonic
        self._exclude = devices_exclude
        self._stat = ProcFile(paths.proc_path("stat"))
        self._diskstats = ProcFile(paths.proc_path("diskstats"))
        self._psi: dict[str, ProcFile] = {}
        self.psi_missing: list[str] = []
        self.psi_paths: list[str] = []
        for kind in ("memory", "io"):
            path = paths.proc_path("pressure", kind)
            handle = ProcFile(path)
            try:
                _psi_some_total(handle.read())
            except (ProviderError, ValueError):
                handle.close()
                self.psi_missing.append(path)
            else:
                self._psi[f"{kind}_psi"] = handle
                self.psi_paths.append(path)
        self._window = window
        self._history: deque[tuple[float, dict[str, tuple[float, ...]]]] = deque()

    def _cpu(self) -> tuple[float, float]:
        line = self._stat.read().split("\n", 1)[0].split()
        if not line or line[0] != "cpu":
            raise ProviderError(f"{self._stat.path}: no 'cpu' line")
        n = [int(v) for v in line[1:9]]
        total = float(sum(n))
        return total - n[3] - n[4], total  # busy (not idle, not iowait), all

    def _disks(self) -> dict[str, int]:
        stats = parse_diskstats(self._diskstats.read(), self._diskstats.path)
        return {d: s.io_ms for d, s in stats.items() if not self._exclude.search(d)}

    def read(self) -> dict[str, float]:
        now = self._mono()
        current: dict[str, tuple[float, ...]] = {"cpu": self._cpu()}
        for name, handle in self._psi.items():
            current[name] = (float(_psi_some_total(handle.read())),)
        disks = self._disks()
        for device, io_ms in disks.items():
            current[f"disk:{device}"] = (float(io_ms),)
        history = self._history
        history.append((now, current))
        # compare with the newest reading at least `window` old (the oldest while there is none)
        while len(history) > 2 and now - history[1][0] >= self._window:
            history.popleft()
        prev_time, prev = history[0]
        if len(history) < 2 or now <= prev_time:
            return {}
        elapsed = now - prev_time
        out: dict[str, float] = {}
        if "cpu" in prev:
            busy = current["cpu"][0] - prev["cpu"][0]
            total = current["cpu"][1] - prev["cpu"][1]
            if total > 0 and busy >= 0:
                out["cpu"] = min(100.0, 100.0 * busy / total)
        for name in self._psi:
            if name in prev and current[name][0] >= prev[name][0]:
                stalled = (current[name][0] - prev[name][0]) / 1e6
                out[name] = min(100.0, 100.0 * stalled / elapsed)
        busiest = [
            (current[k][0] - prev[k][0]) / 1000.0
            for k in current
            if k.startswith("disk:") and k in prev and current[k][0] >= prev[k][0]
        ]
        if busiest:
            out["disk_busy"] = min(100.0, 100.0 * max(busiest) / elapsed)
        return out

    def close(self) -> None:
        for handle in (self._stat, self._diskstats, *self._psi.values()):
            handle.close()


@dataclass(slots=True)
class _State:
    threshold: float
    collectors: tuple[str, ...]
    baseline: float | None = None
    history: float = 0.0  # seconds of readings in the baseline
    fired_at: float | None = None  # last reading that fired (None: no burst)
    started: float = 0.0
    peak: float = 0.0


@dataclass(slots=True)
class Bursts:
    """Which collectors are in a burst, from the sentinel's readings."""

    settings: AdaptiveSettings
    enabled: frozenset[str]
    monotonic: Callable[[], float]
    metrics: Any = None  # a Metrics: counts bursts by signal
    states: dict[str, _State] = field(default_factory=dict)
    _last: float | None = None

    def __post_init__(self) -> None:
        thresholds = {
            "cpu": self.settings.cpu_percent,
            "memory_psi": self.settings.memory_psi,
            "io_psi": self.settings.io_psi,
            "disk_busy": self.settings.disk_busy_percent,
        }
        for name, collectors in SIGNAL_COLLECTORS.items():
            mine = tuple(c for c in collectors if c in self.enabled)
            if mine:
                self.states[name] = _State(thresholds[name], mine)

    def update(self, values: Mapping[str, float]) -> frozenset[str]:
        now = self.monotonic()
        dt = 0.0 if self._last is None else max(0.0, now - self._last)
        self._last = now
        for name, value in values.items():
            state = self.states.get(name)
            if state is None:
                continue
            jump = (
                state.baseline is not None
                and state.history >= BASELINE_WARMUP
                and value >= state.baseline + self.settings.jump
            )
            if value >= state.threshold or jump:
                if state.fired_at is None:
                    state.started, state.peak = now, value
                    if self.metrics is not None:
                        self.metrics.bursts.labels(name).inc()
                    event(
                        "INFO",
                        "burst_started",
                        "spike: sampling at the burst interval",
                        signal=name,
                        value_percent=round(value, 1),
                        threshold_percent=state.threshold,
                        baseline_percent=None
                        if state.baseline is None
                        else round(state.baseline, 1),
                        reason="threshold" if value >= state.threshold else "jump",
                        collectors=list(state.collectors),
                        interval_seconds=self.settings.interval,
                    )
                state.fired_at = now
                state.peak = max(state.peak, value)
            alpha = min(1.0, dt / BASELINE_SECONDS) if state.baseline is not None else 1.0
            previous = state.baseline if state.baseline is not None else value
            state.baseline = previous + alpha * (value - previous)
            state.history += dt
        active: set[str] = set()
        for name, state in self.states.items():
            if state.fired_at is None:
                continue
            if state.fired_at < now and now - state.fired_at >= self.settings.hold:
                event(
                    "INFO",
                    "burst_ended",
                    "signal cleared for the hold time: base interval",
                    signal=name,
                    duration_seconds=round(now - state.started, 3),
                    peak_percent=round(state.peak, 1),
                    collectors=list(state.collectors),
                )
                state.fired_at = None
            else:
                active.update(state.collectors)
        return frozenset(active)


def announce(sentinel: Sentinel, settings: AdaptiveSettings, collectors: Iterable[str]) -> None:
    """Say once at start what the sentinels watch and what is missing."""
    triggers = "unavailable: no PSI"
    if sentinel.psi_missing:
        event(
            "WARNING",
            "adaptive_psi_unavailable",
            "no pressure stall information (kernel < 4.20 or psi=0): thresholds on CPU and "
            "disk busy only",
            missing=sentinel.psi_missing,
        )
    else:
        triggers = psi_trigger_support(sentinel.psi_paths[0])
    event(
        "INFO",
        "adaptive_started",
        "watching spikes between base ticks",
        interval_seconds=settings.interval,
        hold_seconds=settings.hold,
        collectors=list(collectors),
        psi_poll_triggers=triggers,
    )
