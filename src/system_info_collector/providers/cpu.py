"""CPU time shares from ``<proc>/stat`` counter deltas (total as ``cpu-total`` and per CPU).

The provider also keeps its last reading (:attr:`CpuProvider.reading`): the raw cumulative
counters, which ``/metrics`` serves as counters (``node_cpu_seconds_total``) instead of the
shares, together with the kernel-wide lines of the same file (boot time, context switches, …).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import gt, itemgetter, mul, sub, truediv

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
    return _read_stat_flat(text, path)[0]


def _read_stat_flat(text: str, path: str) -> tuple[StatReading, list[str], list[int] | None]:
    """:func:`read_stat`, and the CPU names in file order with all their counters in one flat
    list (:data:`COLUMNS` per CPU), or None when the lines were not all ten counters.

    The whole block of CPU lines is parsed at once: one ``split`` of all of them, the names taken
    out by a slice, one ``int`` over the rest. That is exact only when every CPU line has a name
    and ten counters, which it proves (11 tokens a line; every token but the names is a number,
    so every name sits at a multiple of 11); anything else goes through the line-by-line parse,
    which names the broken line.
    """
    lines = text.splitlines()
    cpu_lines = [line for line in lines if line.startswith("cpu")]
    width = 1 + len(COLUMNS)
    tokens = " ".join(cpu_lines).split()
    if len(tokens) == width * len(cpu_lines) and tokens:
        names = tokens[::width]
        del tokens[::width]
        try:
            flat = list(map(int, tokens))
        except ValueError:
            pass
        else:
            if names[0] == "cpu":
                names[0] = "cpu-total"
                per_cpu = zip(*[iter(flat)] * len(COLUMNS), strict=True)
                cpus = dict(zip(names, per_cpu, strict=True))
                if len(cpus) == len(names) and "cpu" not in cpus:  # no CPU twice
                    return StatReading(cpus, _kernel_lines(lines)), names, flat
    reading = _read_stat_lines(lines, path)
    return reading, list(reading.cpus), None


def _kernel_lines(lines: list[str]) -> dict[str, int]:
    kernel: dict[str, int] = {}
    for line in lines:
        if not line.startswith("cpu"):
            key, _, rest = line.partition(" ")
            if key in STAT_LINES:
                first = rest.split(None, 1)
                if first and first[0].isdigit():
                    kernel[key] = int(first[0])
    return kernel


def _read_stat_lines(lines: list[str], path: str) -> StatReading:
    cpus: dict[str, tuple[int, ...]] = {}
    for lineno, line in enumerate(lines, 1):
        if not line.startswith("cpu"):
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
    return StatReading(cpus, _kernel_lines(lines))


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


_FIELD_NAMES = (*(f"{name}_percent" for name in COLUMNS), "usage_percent")


def all_shares(prev: list[int], cur: list[int]) -> list[tuple[float, ...]] | None:
    """:func:`shares` of many CPUs at once, from their counters in one flat list each
    (:data:`COLUMNS` per CPU): per CPU the values of :data:`_FIELD_NAMES`, the very same floats
    by the very same operations, each done for every CPU by one ``map``. None if :func:`shares`
    would be None for any CPU (a reset, no progress): the caller then goes CPU by CPU."""
    n = len(COLUMNS)
    deltas = list(map(sub, cur, prev))
    if not deltas or min(deltas) < 0:
        return None
    columns = [deltas[i::n] for i in range(n)]
    totals = list(map(sum, zip(*columns[:_TOTAL_COLUMNS], strict=True)))
    if min(totals) <= 0:
        return None
    hundred = repeat(100.0)
    busy = map(sub, map(sub, totals, columns[3]), columns[4])
    percents = [map(truediv, map(mul, hundred, c), totals) for c in (*columns, busy)]
    return list(zip(*percents, strict=True))


class CpuProvider:
    name = "cpu"

    def __init__(self, paths: HostPaths) -> None:
        self._path = paths.proc_path("stat")
        self._file = ProcFile(self._path)
        self._prev: dict[str, tuple[int, ...]] = {}
        self._prev_names: list[str] = []
        self._prev_flat: list[int] | None = None
        self._tags: list[dict[str, str]] = []  # {"cpu": name} of _prev_names, kept across ticks
        self.reading: StatReading | None = None  # the last one (replaced whole: thread-safe)

    def _keep(self, reading: StatReading, names: list[str], flat: list[int] | None) -> None:
        if names != self._prev_names:
            self._tags = [{"cpu": name} for name in names]
        self._prev, self._prev_names, self._prev_flat = reading.cpus, names, flat
        self.reading = reading

    def prime(self) -> None:
        self._keep(*_read_stat_flat(self._file.read(), self._path))

    def collect(self) -> list[Sample]:
        reading, names, flat = _read_stat_flat(self._file.read(), self._path)
        rows = None
        if flat is not None and self._prev_flat is not None and names == self._prev_names:
            rows = all_shares(self._prev_flat, flat)
        if rows is not None:  # the same CPUs as before, every one with a share: all at once
            fields = map(dict, map(zip, repeat(_FIELD_NAMES), rows))
            samples = list(map(Sample, self._tags, fields))
        else:
            samples = []
            for cpu, values in reading.cpus.items():
                prev = self._prev.get(cpu)
                found = shares(prev, values) if prev is not None else None
                if found is not None:
                    samples.append(Sample({"cpu": cpu}, found))
        # CPUs that went offline drop out; new or reset ones start again from this reading.
        self._keep(reading, names, flat)
        return samples

    def close(self) -> None:
        self._file.close()


def _states_sum_to_100(fields: Mapping[str, FieldValue]) -> Problem | None:
    total = sum(fields[f"{s}_percent"] for s in CPU_STATES)
    if abs(total - 100.0) > CPU_SUM_TOLERANCE:
        return "user_percent..steal_percent", total, "cpu_states_sum_100"
    return None


_STATES = itemgetter(*(f"{s}_percent" for s in CPU_STATES))


def _all_states_sum_to_100(fields_list: Sequence[Mapping[str, FieldValue]]) -> bool:
    """:func:`_states_sum_to_100` finds nothing in any of ``fields_list`` (the same sums)."""
    off = map(abs, map(sub, map(sum, map(_STATES, fields_list)), repeat(100.0)))
    return not any(map(gt, off, repeat(CPU_SUM_TOLERANCE)))


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
        check_all=_all_states_sum_to_100,
    ),
)
