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

import contextlib
import errno
import math
import os
import select
import stat
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


# PSI poll trigger windows tried in turn: 1 s needs CAP_SYS_RESOURCE; without it kernels >= 6.5
# accept windows in multiples of 2 s (older ones refuse every unprivileged trigger).
TRIGGER_WINDOWS_US = (1_000_000, 2_000_000)
_TRIGGER_REFUSED = {
    errno.EINVAL: "refused (kernel < 5.2, or a window the kernel does not allow without "
    "CAP_SYS_RESOURCE)",
    errno.EPERM: "not permitted (needs CAP_SYS_RESOURCE, or kernel >= 6.5 for 2 s windows)",
    errno.EACCES: "not permitted (needs CAP_SYS_RESOURCE, or kernel >= 6.5 for 2 s windows)",
    errno.EROFS: "read-only mount of the pressure file",
    errno.EOPNOTSUPP: "not supported (PSI disabled)",
}


def _register_trigger(path: str, percent: float) -> tuple[int | None, str, float]:
    """Open ``path`` and write a ``some`` trigger of ``percent`` % of a window: the fd (None
    when refused), what was registered or why not, and the window in seconds."""
    if not 0 < percent <= 100:
        return None, f"not used (threshold {percent:g} %)", 0.0
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return None, f"unavailable: {_TRIGGER_REFUSED.get(exc.errno or 0, exc.strerror)}", 0.0
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size != 0:  # procfs files say size 0
        os.close(fd)  # never write into a plain file (a fixture tree under SIC_HOST_PROC)
        return None, "unavailable: not a procfs pressure file", 0.0
    refused: OSError | None = None
    for window in TRIGGER_WINDOWS_US:
        stall = max(1, round(window * percent / 100))  # as PsiTriggers.stalls
        try:
            os.write(fd, f"some {stall} {window}\0".encode())
        except OSError as exc:
            refused = exc
            if exc.errno == errno.EINVAL:
                continue  # this window is not allowed: try the next
            break
        return fd, f"some {stall} {window} (us)", window / 1e6
    os.close(fd)
    assert refused is not None
    reason = _TRIGGER_REFUSED.get(refused.errno or 0, refused.strerror)
    return None, f"unavailable: {reason}", 0.0


class PsiTriggers:
    """Kernel PSI poll triggers (``"some <stall us> <window us>"`` written to a pressure file,
    then ``poll(POLLPRI)``): the kernel wakes :meth:`wait` as soon as a signal's stall over
    the window crosses its threshold, so a memory or I/O stall is acted on at once instead of
    at the next sentinel slot. Where the kernel or the privileges refuse, :attr:`status` says
    why and the sentinel's polling alone detects the stall."""

    def __init__(self, files: Mapping[str, str], thresholds: Mapping[str, float]) -> None:
        self.status: dict[str, str] = {}
        self.windows: dict[str, float] = {}  # signal -> its trigger window, seconds
        self.stalls: dict[str, float] = {}  # signal -> the stall (µs) per window it fires at
        self._fds: dict[int, str] = {}
        self._closed = False
        self._poll = select.poll()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poll.register(self._wake_r, select.POLLIN)
        for name, path in files.items():
            fd, self.status[name], window = _register_trigger(path, thresholds[name])
            if fd is not None:
                self._fds[fd] = name
                self.windows[name] = window
                self.stalls[name] = max(1, round(window * 1e6 * thresholds[name] / 100))
                self._poll.register(fd, select.POLLPRI)

    @property
    def active(self) -> bool:
        return bool(self._fds)

    def wait(self, timeout: float) -> frozenset[str]:
        """Block up to ``timeout`` seconds (or until :meth:`interrupt`); the signals whose
        trigger fired."""
        fired: set[str] = set()
        for fd, events in self._poll.poll(max(0, math.ceil(timeout * 1000))):
            if fd == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
                continue
            name = self._fds.get(fd)
            if name is None:
                continue
            if events & (select.POLLERR | select.POLLNVAL | select.POLLHUP):
                self._drop(fd, name, events)
            elif events & select.POLLPRI:
                fired.add(name)
        return frozenset(fired)

    def _drop(self, fd: int, name: str, events: int) -> None:
        self._poll.unregister(fd)
        os.close(fd)
        del self._fds[fd]
        self.status[name] = "lost: polling only"
        event(
            "WARNING",
            "adaptive_psi_trigger_lost",
            "the kernel dropped a PSI poll trigger: the sentinel polls that signal only",
            signal=name,
            poll_events=events,
        )

    def interrupt(self) -> None:
        """End a :meth:`wait` now (safe from a signal handler or another thread)."""
        if not self._closed:
            with contextlib.suppress(OSError):  # a full pipe: a wake-up is pending already
                os.write(self._wake_w, b"\0")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for fd in (*self._fds, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()


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
        self.psi_files: dict[str, str] = {}  # signal -> its pressure file
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
                self.psi_files[f"{kind}_psi"] = path
        self._window = window
        self._history: deque[tuple[float, dict[str, tuple[float, ...]]]] = deque()
        # (time, stall total µs) of each PSI signal, back to the newest at least `psi_keep` old:
        # what a PSI poll trigger's claim is checked against (:meth:`psi_stall`)
        self.psi_keep = 0.0
        self._psi_log: dict[str, deque[tuple[float, int]]] = {n: deque() for n in self._psi}

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
        for name in self._psi:
            current[name] = (float(self._psi_total(name, now)),)
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

    def _psi_total(self, name: str, now: float) -> int:
        total = _psi_some_total(self._psi[name].read())
        log = self._psi_log[name]
        log.append((now, total))
        while len(log) > 2 and now - log[1][0] >= self.psi_keep:
            log.popleft()
        return total

    def psi_stall(self, name: str, window: float) -> tuple[float, float]:
        """Read ``name``'s stall total now: (µs stalled, seconds) since the newest earlier
        reading at least ``window`` old (else the oldest; (0, 0) with none)."""
        log = self._psi_log[name]
        now = self._mono()
        earlier = [entry for entry in log if now - entry[0] >= window]
        then = earlier[-1] if earlier else (log[0] if log else None)
        total = self._psi_total(name, now)
        if then is None or now <= then[0]:
            return 0.0, 0.0
        return float(total - then[1]), now - then[0]

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
    until: float = 0.0  # the burst lasts at least until then (the hold after the last firing)
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
                reason = "threshold" if value >= state.threshold else "jump"
                self._fire(name, state, now, value, reason, self.settings.hold)
            elif state.fired_at is not None:
                state.peak = max(state.peak, value)  # a burst a trigger started: its peak
            alpha = min(1.0, dt / BASELINE_SECONDS) if state.baseline is not None else 1.0
            previous = state.baseline if state.baseline is not None else value
            state.baseline = previous + alpha * (value - previous)
            state.history += dt
        active: set[str] = set()
        for name, state in self.states.items():
            if state.fired_at is None:
                continue
            if state.fired_at < now and now >= state.until:
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

    def _fire(
        self, name: str, state: _State, now: float, value: float | None, reason: str, hold: float
    ) -> None:
        if state.fired_at is None:
            state.started, state.peak = now, value or 0.0
            if self.metrics is not None:
                self.metrics.bursts.labels(name).inc()
            event(
                "INFO",
                "burst_started",
                "spike: sampling at the burst interval",
                signal=name,
                value_percent=None if value is None else round(value, 1),
                threshold_percent=state.threshold,
                baseline_percent=None if state.baseline is None else round(state.baseline, 1),
                reason=reason,
                collectors=list(state.collectors),
                interval_seconds=self.settings.interval,
            )
        state.fired_at = now
        state.until = max(state.until, now + hold)
        if value is not None:
            state.peak = max(state.peak, value)

    def triggered(self, signals: Mapping[str, float]) -> frozenset[str]:
        """PSI poll triggers fired (signal -> the trigger's window, s): those signals fire now
        (``reason="psi_trigger"``; the kernel said the stall over the window reached the
        threshold). The burst holds at least a window: the kernel reports a stall that goes
        on at most once per window. The collectors in a burst now."""
        now = self.monotonic()
        for name, window in signals.items():
            state = self.states.get(name)
            if state is not None:
                self._fire(name, state, now, None, "psi_trigger", max(self.settings.hold, window))
        return frozenset(
            c for st in self.states.values() if st.fired_at is not None for c in st.collectors
        )


def announce(
    sentinel: Sentinel,
    settings: AdaptiveSettings,
    collectors: Iterable[str],
    triggers: PsiTriggers | None,
) -> None:
    """Say once at start what the sentinels watch, what is missing, and which PSI signals
    have a kernel poll trigger (``psi_poll_triggers``: signal -> the trigger or why not)."""
    status: dict[str, str] | str
    if sentinel.psi_missing:
        status = "unavailable: no PSI"
        event(
            "WARNING",
            "adaptive_psi_unavailable",
            "no pressure stall information (kernel < 4.20 or psi=0): thresholds on CPU and "
            "disk busy only",
            missing=sentinel.psi_missing,
        )
    elif not settings.psi_triggers:
        status = "off (SIC_ADAPTIVE_PSI_TRIGGERS=off): polling only"
    else:
        status = triggers.status if triggers is not None else {}
    event(
        "INFO",
        "adaptive_started",
        "watching spikes between base ticks",
        interval_seconds=settings.interval,
        hold_seconds=settings.hold,
        collectors=list(collectors),
        psi_poll_triggers=status,
    )
