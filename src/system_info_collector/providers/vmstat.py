"""Paging, swapping and OOM-kill counters and rates from ``<proc>/vmstat``."""

from __future__ import annotations

import re
import time

from system_info_collector.collector import (
    Clock,
    Collector,
    Measurement,
    NoSettings,
    Rules,
    byte_count,
    count,
    rate,
)
from system_info_collector.errors import ProviderError
from system_info_collector.hostpaths import HostPaths
from system_info_collector.model import FieldValue, Sample
from system_info_collector.providers._counters import Previous, deltas
from system_info_collector.providers._read import ProcFile, read_text

# field stem -> (vmstat key, multiplier): pgpgin/pgpgout are in KiB (mm/vmstat.c), the swap
# counters in pages, the faults in events. pgfault counts minor and major faults.
_COUNTERS: dict[str, tuple[str, int]] = {
    "page_faults": ("pgfault", 1),
    "major_page_faults": ("pgmajfault", 1),
    "paged_in_bytes": ("pgpgin", 1024),
    "paged_out_bytes": ("pgpgout", 1024),
    "swapped_in_pages": ("pswpin", 1),
    "swapped_out_pages": ("pswpout", 1),
    "oom_kills": ("oom_kill", 1),  # Linux 4.13+; 0 before
}
_OPTIONAL = frozenset({"oom_kill"})


MEASUREMENT = Measurement(
    name="vmstat",
    entity=(),
    labels=(),
    fields=(
        count("page_faults_total", "page faults, minor and major (pgfault)"),
        count("major_page_faults_total", "page faults that needed I/O (pgmajfault)"),
        count("minor_page_faults_total", "page faults served from memory (pgfault - pgmajfault)"),
        byte_count("paged_in_bytes_total", "bytes paged in from block devices (pgpgin KiB)"),
        byte_count("paged_out_bytes_total", "bytes paged out to block devices (pgpgout KiB)"),
        count("swapped_in_pages_total", "pages swapped in (pswpin)"),
        count("swapped_out_pages_total", "pages swapped out (pswpout)"),
        count("oom_kills_total", "processes killed by the OOM killer (oom_kill; 0 before 4.13)"),
        rate("page_faults_per_second", "page faults per second"),
        rate("major_page_faults_per_second", "major page faults per second"),
        rate("minor_page_faults_per_second", "minor page faults per second"),
        rate("paged_in_bytes_per_second", "bytes paged in per second"),
        rate("paged_out_bytes_per_second", "bytes paged out per second"),
        rate("swapped_in_pages_per_second", "pages swapped in per second"),
        rate("swapped_out_pages_per_second", "pages swapped out per second"),
        rate("oom_kills_per_second", "OOM kills per second"),
    ),
    help="paging, swapping and OOM kills from <proc>/vmstat",
)


_WANTED = re.compile(
    r"^(" + "|".join(key for key, _ in _COUNTERS.values()) + r") (.*)$", re.MULTILINE
)


def parse_vmstat(text: str, path: str = "vmstat") -> dict[str, int]:
    """The counters this collector reports, as totals in the field's unit (one regex scan over
    the ~180 lines instead of splitting each)."""
    raw: dict[str, int] = {}
    for key, value in _WANTED.findall(text):
        try:
            raw[key] = int(value)
        except ValueError:
            raise ProviderError(f"{path}: non-numeric {key}: {value[:40]!r}") from None
    missing = sorted({key for key, _ in _COUNTERS.values()} - _OPTIONAL - set(raw))
    if missing:
        raise ProviderError(f"{path}: no {', '.join(missing)} (truncated or not a vmstat file?)")
    totals = {stem: raw.get(key, 0) * unit for stem, (key, unit) in _COUNTERS.items()}
    totals["minor_page_faults"] = max(totals["page_faults"] - totals["major_page_faults"], 0)
    return totals


class VmstatProvider:
    name = "vmstat"

    def __init__(self, paths: HostPaths, clock: Clock = time.monotonic) -> None:
        self._file = ProcFile(paths.proc_path("vmstat"))
        self._prev: Previous[dict[str, int]] = Previous(clock)

    def prime(self) -> None:
        self._prev.start({"": parse_vmstat(self._file.read(), self._file.path)})

    def collect(self) -> list[Sample]:
        current = parse_vmstat(self._file.read(), self._file.path)
        elapsed, pairs = self._prev.advance({"": current})
        if not pairs:
            return []
        prev = pairs[0][1]
        names = list(current)
        d = deltas([prev[n] for n in names], [current[n] for n in names])
        if d is None:
            return []  # a counter went backwards: start again from this reading
        fields: dict[str, FieldValue] = {f"{n}_total": current[n] for n in names}
        fields.update({f"{n}_per_second": v / elapsed for n, v in zip(names, d, strict=True)})
        return [Sample({}, fields)]

    def close(self) -> None:
        self._file.close()


def _probe(paths: HostPaths, settings: NoSettings) -> str:
    path = paths.proc_path("vmstat")
    totals = parse_vmstat(read_text(path), path)
    return f"{path} readable, {totals['major_page_faults']} major page faults since boot"


COLLECTOR = Collector(
    measurement=MEASUREMENT,
    settings=NoSettings,
    factory=lambda paths, settings, clock: VmstatProvider(paths, clock),
    probe=("proc vmstat", _probe),
    rules=Rules(
        not_above=(
            ("major_page_faults_total", "page_faults_total"),
            ("minor_page_faults_total", "page_faults_total"),
        )
    ),
)
