"""Load, uptime and kernel activity counters: ``<proc>/loadavg``, ``<proc>/uptime`` and the
``ctxt``/``intr``/``processes``/``procs_*``/``btime`` lines of ``<proc>/stat`` (proc(5))."""

from __future__ import annotations

import time
from typing import NamedTuple

from system_info_collector.collector import (
    Clock,
    Collector,
    Measurement,
    NoSettings,
    count,
    gauge,
    rate,
    seconds,
)
from system_info_collector.errors import ProviderError
from system_info_collector.hostpaths import HostPaths
from system_info_collector.model import FieldValue, Sample
from system_info_collector.providers._counters import Previous, deltas
from system_info_collector.providers._read import ProcFile, read_text

_COUNTERS = (("ctxt", "context_switches"), ("intr", "interrupts"), ("processes", "forks"))

MEASUREMENT = Measurement(
    name="system",
    entity=(),
    labels=(),
    fields=(
        gauge("load1", "run-queue load average over 1 minute"),
        gauge("load5", "load average over 5 minutes"),
        gauge("load15", "load average over 15 minutes"),
        gauge("load1_per_cpu", "load1 / cpus (above 1: more runnable tasks than CPUs)"),
        gauge("load5_per_cpu", "load5 / cpus"),
        gauge("load15_per_cpu", "load15 / cpus"),
        count("cpus", "online CPUs (cpuN lines of <proc>/stat)"),
        seconds("uptime_seconds", "time since boot (<proc>/uptime)"),
        seconds("boot_time_seconds", "Unix time of the boot (btime)"),
        count("context_switches_total", "context switches since boot (ctxt)"),
        count("interrupts_total", "interrupts serviced since boot (intr)"),
        count("forks_total", "processes and threads created since boot (processes)"),
        rate("context_switches_per_second", "context switches per second"),
        rate("interrupts_per_second", "interrupts per second"),
        rate("forks_per_second", "forks per second"),
        count("procs_running", "tasks runnable now (procs_running)"),
        count("procs_blocked", "tasks blocked on I/O now (procs_blocked)"),
    ),
    help="load averages, uptime and kernel counters of the host",
)


class KernelStat(NamedTuple):
    cpus: int
    counters: tuple[int, int, int]  # ctxt, intr, processes
    boot_time: int
    procs_running: int
    procs_blocked: int


def parse_kernel_stat(text: str, path: str = "stat") -> KernelStat:
    values: dict[str, int] = {}
    cpus = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        key, _, rest = line.partition(" ")
        if key.startswith("cpu"):
            cpus += key != "cpu"
            continue
        if key not in ("ctxt", "intr", "processes", "btime", "procs_running", "procs_blocked"):
            continue
        first = rest.split(None, 1)[:1]  # intr: the total, then one count per interrupt
        try:
            values[key] = int(first[0])
        except (ValueError, IndexError):
            raise ProviderError(f"{path}: line {lineno}: non-numeric {key}: {line!r}") from None
    missing = [k for k in ("ctxt", "intr", "processes", "btime") if k not in values]
    if missing:
        raise ProviderError(f"{path}: no {', '.join(missing)} line (truncated?)")
    return KernelStat(
        max(cpus, 1),
        (values["ctxt"], values["intr"], values["processes"]),
        values["btime"],
        values.get("procs_running", 0),
        values.get("procs_blocked", 0),
    )


def parse_loadavg(text: str, path: str = "loadavg") -> tuple[float, float, float]:
    parts = text.split()
    try:
        return float(parts[0]), float(parts[1]), float(parts[2])
    except (ValueError, IndexError):
        raise ProviderError(f"{path}: expected 'load1 load5 load15 ...': {text[:80]!r}") from None


def parse_uptime(text: str, path: str = "uptime") -> float:
    try:
        return float(text.split()[0])
    except (ValueError, IndexError):
        raise ProviderError(f"{path}: expected 'uptime idle': {text[:80]!r}") from None


class SystemProvider:
    name = "system"

    def __init__(self, paths: HostPaths, clock: Clock = time.monotonic) -> None:
        self._stat = ProcFile(paths.proc_path("stat"))
        self._loadavg = ProcFile(paths.proc_path("loadavg"))
        self._uptime = ProcFile(paths.proc_path("uptime"))
        self._prev: Previous[tuple[int, int, int]] = Previous(clock)

    def prime(self) -> None:
        self._prev.start({"": parse_kernel_stat(self._stat.read(), self._stat.path).counters})

    def collect(self) -> list[Sample]:
        stat = parse_kernel_stat(self._stat.read(), self._stat.path)
        load = parse_loadavg(self._loadavg.read(), self._loadavg.path)
        uptime = parse_uptime(self._uptime.read(), self._uptime.path)
        elapsed, pairs = self._prev.advance({"": stat.counters})
        d = deltas(pairs[0][1], stat.counters) if pairs else None
        if d is None:
            return []  # first reading or counters reset: rates start again from this one
        fields: dict[str, FieldValue] = {
            "load1": load[0],
            "load5": load[1],
            "load15": load[2],
            "load1_per_cpu": load[0] / stat.cpus,
            "load5_per_cpu": load[1] / stat.cpus,
            "load15_per_cpu": load[2] / stat.cpus,
            "cpus": stat.cpus,
            "uptime_seconds": uptime,
            "boot_time_seconds": float(stat.boot_time),
        }
        for (_, name), total, delta in zip(_COUNTERS, stat.counters, d, strict=True):
            fields[f"{name}_total"] = total
            fields[f"{name}_per_second"] = delta / elapsed
        fields["procs_running"] = stat.procs_running
        fields["procs_blocked"] = stat.procs_blocked
        return [Sample({}, fields)]

    def close(self) -> None:
        for file in (self._stat, self._loadavg, self._uptime):
            file.close()


def _probe(paths: HostPaths, settings: NoSettings) -> str:
    load = parse_loadavg(read_text(paths.proc_path("loadavg")), paths.proc_path("loadavg"))
    parse_uptime(read_text(paths.proc_path("uptime")), paths.proc_path("uptime"))
    stat = parse_kernel_stat(read_text(paths.proc_path("stat")), paths.proc_path("stat"))
    return f"{paths.proc_path('loadavg')} readable, load1 {load[0]:g} on {stat.cpus} CPUs"


COLLECTOR = Collector(
    measurement=MEASUREMENT,
    settings=NoSettings,
    factory=lambda paths, settings, clock: SystemProvider(paths, clock),
    probe=("proc loadavg", _probe),
)
