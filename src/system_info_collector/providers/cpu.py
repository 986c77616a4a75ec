"""CPU time shares from ``<proc>/stat`` counter deltas (total as ``cpu-total`` and per CPU).

The provider also keeps its last reading (:attr:`CpuProvider.reading`): the raw cumulative
counters, which ``/metrics`` serves as counters (``node_cpu_seconds_total``) instead of the
shares, together with the kernel-wide lines of the same file (boot time, context switches, …).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from system_info_collector.collector import (
    Collector,
    Measurement,
    NoSettings,
    Problem,
    Rules,
    percent,
)
from system_info_collector.errors import ProviderError
from system_info_collector.hostpaths import HostPaths
from system_info_collector.model import FieldValue, Sample
from system_info_collector.providers._read import ProcFile, read_text

# Column order of the cpu lines in /proc/stat (proc(5)); guest/guest_nice are already counted
# in user/nice, so they are not part of the total.
COLUMNS = (
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
)
_TOTAL_COLUMNS = 8
# The kernel-wide lines of /proc/stat kept for /metrics (first number of each line).
STAT_LINES = ("btime", "ctxt", "intr", "processes", "procs_running", "procs_blocked")
USER_HZ = os.sysconf("SC_CLK_TCK")  # /proc/stat counts in these ticks per second (100)


@dataclass(frozen=True, slots=True)
class StatReading:
    """One reading of /proc/stat: per-CPU counters in ticks (``cpu-total`` is the ``cpu`` line)
    in :data:`COLUMNS` order, and the kernel-wide counters of :data:`STAT_LINES` found."""

    cpus: dict[str, tuple[int, ...]]
    kernel: dict[str, int] = field(default_factory=dict)


CPU_STATES = COLUMNS[:_TOTAL_COLUMNS]
CPU_GUEST_STATES = COLUMNS[_TOTAL_COLUMNS:]
CPU_SUM_TOLERANCE = 0.5  # percent points

MEASUREMENT = Measurement(
    name="cpu",
    entity=("cpu",),
    labels=(),
    fields=(
        *(
            percent(f"{s}_percent", f"share of time in {s} since the previous reading")
            for s in CPU_STATES
        ),
        *(
            percent(f"{s}_percent", f"share of time running a {s} (already part of user/nice)")
            for s in CPU_GUEST_STATES
        ),
        percent("usage_percent", "100 - idle - iowait"),
    ),
    help="per-CPU and total (cpu=cpu-total) time shares from <proc>/stat",
)


def parse_stat(text: str, path: str = "stat") -> dict[str, tuple[int, ...]]:
    """``{"cpu-total": (user, …, guest_nice), "cpu0": …}`` from the text of /proc/stat."""
    return read_stat(text, path).cpus


def read_stat(text: str, path: str = "stat") -> StatReading:
    """The CPU lines and the kernel-wide lines of /proc/stat."""
    cpus: dict[str, tuple[int, ...]] = {}
    kernel: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.startswith("cpu"):
            key, _, rest = line.partition(" ")
            if key in STAT_LINES:
                first = rest.split(None, 1)
                if first and first[0].isdigit():
                    kernel[key] = int(first[0])
            continue
        parts = line.split()
        if len(parts) < 8:  # user..softirq exist since Linux 2.6.0
            raise ProviderError(f"{path}: line {lineno}: expected at least 7 counters: {line!r}")
        try:
            values = tuple(int(v) for v in parts[1:11])
        except ValueError:
            raise ProviderError(f"{path}: line {lineno}: non-numeric counter: {line!r}") from None
        name = "cpu-total" if parts[0] == "cpu" else parts[0]
        cpus[name] = values + (0,) * (len(COLUMNS) - len(values))
    if "cpu-total" not in cpus:
        raise ProviderError(f"{path}: no 'cpu' line (is this a procfs stat file?)")
    return StatReading(cpus, kernel)


def shares(prev: tuple[int, ...], cur: tuple[int, ...]) -> dict[str, float] | None:
    """Percent of time per state between two readings; None on a counter reset or no progress."""
    deltas = [c - p for p, c in zip(prev, cur, strict=True)]
    if any(d < 0 for d in deltas):
        return None
    total = sum(deltas[:_TOTAL_COLUMNS])
    if total <= 0:
        return None
    fields = {f"{name}_percent": 100.0 * d / total for name, d in zip(COLUMNS, deltas, strict=True)}
    busy = total - deltas[3] - deltas[4]
    fields["usage_percent"] = 100.0 * busy / total
    return fields


class CpuProvider:
    name = "cpu"

    def __init__(self, paths: HostPaths) -> None:
        self._path = paths.proc_path("stat")
        self._file = ProcFile(self._path)
        self._prev: dict[str, tuple[int, ...]] = {}
        self.reading: StatReading | None = None  # the last one (replaced whole: thread-safe)

    def prime(self) -> None:
        reading = read_stat(self._file.read(), self._path)
        self._prev = reading.cpus
        self.reading = reading

    def collect(self) -> list[Sample]:
        reading = read_stat(self._file.read(), self._path)
        current = reading.cpus
        samples = []
        for cpu, values in current.items():
            prev = self._prev.get(cpu)
            fields = shares(prev, values) if prev is not None else None
            if fields is not None:
                samples.append(Sample({"cpu": cpu}, fields))
        # CPUs that went offline drop out; new or reset ones start again from this reading.
        self._prev = current
        self.reading = reading
        return samples

    def close(self) -> None:
        self._file.close()


def _states_sum_to_100(fields: Mapping[str, FieldValue]) -> Problem | None:
    total = sum(fields[f"{s}_percent"] for s in CPU_STATES)
    if abs(total - 100.0) > CPU_SUM_TOLERANCE:
        return "user_percent..steal_percent", total, "cpu_states_sum_100"
    return None


def _probe(paths: HostPaths, settings: NoSettings) -> str:
    path = paths.proc_path("stat")
    cpus = parse_stat(read_text(path), path)
    return f"{path} readable, {len(cpus) - 1} CPUs"


COLLECTOR = Collector(
    measurement=MEASUREMENT,
    settings=NoSettings,
    factory=lambda paths, settings, clock: CpuProvider(paths),
    probe=("proc stat", _probe),
    rules=Rules(
        not_above=(("guest_percent", "user_percent"), ("guest_nice_percent", "nice_percent")),
        check=_states_sum_to_100,
    ),
)
