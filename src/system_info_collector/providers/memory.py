"""Memory and swap from ``<proc>/meminfo`` with the definitions of ``free`` (procps-ng 4).

The provider keeps its last reading (:attr:`MemoryProvider.reading`, every line of the file)
for ``/metrics``, which serves all of it as node_exporter does (``node_memory_<Key>_bytes``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from system_info_collector.collector import (
    Collector,
    Measurement,
    NoSettings,
    Problem,
    Rules,
    byte_count,
    percent,
)
from system_info_collector.errors import ProviderError
from system_info_collector.hostpaths import HostPaths
from system_info_collector.model import FieldValue, Sample
from system_info_collector.providers._read import ProcFile, read_text

MEASUREMENT = Measurement(
    name="memory",
    entity=(),
    labels=(),
    fields=(
        byte_count("total_bytes", "MemTotal"),
        byte_count("available_bytes", "MemAvailable"),
        byte_count("used_bytes", "total - available (as free(1) from procps-ng 4)"),
        byte_count("free_bytes", "MemFree"),
        byte_count("buffers_bytes", "Buffers"),
        byte_count("cached_bytes", "Cached + SReclaimable (free's and psutil's cache)"),
        byte_count("shared_bytes", "Shmem"),
        percent("used_percent", "used / total"),
        byte_count("swap_total_bytes", "SwapTotal"),
        byte_count("swap_used_bytes", "SwapTotal - SwapFree"),
        byte_count("swap_free_bytes", "SwapFree"),
        percent("swap_used_percent", "swap used / swap total (0 without swap)"),
    ),
    help="memory and swap from <proc>/meminfo",
)


@dataclass(frozen=True, slots=True)
class MeminfoReading:
    """Every line of meminfo: ``values`` in bytes (or counts for the lines without a unit,
    named in ``unitless``: HugePages_Total, …)."""

    values: dict[str, int]
    unitless: frozenset[str]


def parse_meminfo(text: str, path: str = "meminfo") -> dict[str, int]:
    return read_meminfo(text, path).values


def read_meminfo(text: str, path: str = "meminfo") -> MeminfoReading:
    values: dict[str, int] = {}
    unitless: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if len(parts) < 2 or parts[0][-1] != ":":
            raise ProviderError(f"{path}: line {lineno}: expected 'Key: value kB': {line!r}")
        try:
            number = int(parts[1])
        except ValueError:
            raise ProviderError(f"{path}: line {lineno}: non-numeric value: {line!r}") from None
        key = parts[0][:-1]
        if len(parts) == 3 and parts[2] == "kB":
            values[key] = number * 1024
        else:
            values[key] = number
            unitless.add(key)
    for required in ("MemTotal", "MemFree"):
        if required not in values:
            raise ProviderError(f"{path}: missing {required} (truncated or not a meminfo file?)")
    return MeminfoReading(values, frozenset(unitless))


def memory_fields(info: dict[str, int]) -> dict[str, FieldValue]:
    total = info["MemTotal"]
    free = info["MemFree"]
    buffers = info.get("Buffers", 0)
    cached = info.get("Cached", 0) + info.get("SReclaimable", 0)
    # Kernels before 3.14 have no MemAvailable; fall back to free + reclaimable caches.
    available = min(info.get("MemAvailable", free + buffers + cached), total)
    used = max(total - available, 0)
    swap_total = info.get("SwapTotal", 0)
    swap_free = min(info.get("SwapFree", 0), swap_total)
    swap_used = swap_total - swap_free
    return {
        "total_bytes": total,
        "available_bytes": available,
        "used_bytes": used,
        "free_bytes": free,
        "buffers_bytes": buffers,
        "cached_bytes": cached,
        "shared_bytes": info.get("Shmem", 0),
        "used_percent": 100.0 * used / total if total else 0.0,
        "swap_total_bytes": swap_total,
        "swap_used_bytes": swap_used,
        "swap_free_bytes": swap_free,
        "swap_used_percent": 100.0 * swap_used / swap_total if swap_total else 0.0,
    }


class MemoryProvider:
    name = "memory"

    def __init__(self, paths: HostPaths) -> None:
        self._path = paths.proc_path("meminfo")
        self._file = ProcFile(self._path)
        self.reading: MeminfoReading | None = None  # the last one (replaced whole)

    def prime(self) -> None:
        pass

    def collect(self) -> list[Sample]:
        reading = read_meminfo(self._file.read(), self._path)
        self.reading = reading
        return [Sample({}, memory_fields(reading.values))]

    def close(self) -> None:
        self._file.close()


def _consistent(fields: Mapping[str, FieldValue]) -> Problem | None:
    if fields["used_bytes"] + fields["available_bytes"] != fields["total_bytes"]:
        return "used_bytes", fields["used_bytes"], "used_plus_available_total"
    parts = fields["free_bytes"] + fields["buffers_bytes"] + fields["cached_bytes"]
    if parts > fields["total_bytes"]:
        return "free+buffers+cached", parts, "not_above_total_bytes"
    return None


def _probe(paths: HostPaths, settings: NoSettings) -> str:
    path = paths.proc_path("meminfo")
    info = parse_meminfo(read_text(path), path)
    return f"{path} readable, MemTotal {info['MemTotal']} bytes"


COLLECTOR = Collector(
    measurement=MEASUREMENT,
    settings=NoSettings,
    factory=lambda paths, settings, clock: MemoryProvider(paths),
    probe=("proc meminfo", _probe),
    rules=Rules(
        not_above=(
            ("available_bytes", "total_bytes"),
            ("used_bytes", "total_bytes"),
            ("free_bytes", "total_bytes"),
            ("swap_used_bytes", "swap_total_bytes"),
            ("swap_free_bytes", "swap_total_bytes"),
        ),
        check=_consistent,
    ),
)
