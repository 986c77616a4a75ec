"""Memory and swap from ``<proc>/meminfo`` with the definitions of ``free`` (procps-ng 4)."""

from __future__ import annotations

from system_info_collector.errors import ProviderError
from system_info_collector.hostpaths import HostPaths
from system_info_collector.model import FieldValue, Sample
from system_info_collector.providers._read import ProcFile


def parse_meminfo(text: str, path: str = "meminfo") -> dict[str, int]:
    values: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if len(parts) < 2 or parts[0][-1] != ":":
            raise ProviderError(f"{path}: line {lineno}: expected 'Key: value kB': {line!r}")
        try:
            number = int(parts[1])
        except ValueError:
            raise ProviderError(f"{path}: line {lineno}: non-numeric value: {line!r}") from None
        values[parts[0][:-1]] = number * 1024 if len(parts) == 3 and parts[2] == "kB" else number
    for required in ("MemTotal", "MemFree"):
        if required not in values:
            raise ProviderError(f"{path}: missing {required} (truncated or not a meminfo file?)")
    return values


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

    def prime(self) -> None:
        pass

    def collect(self) -> list[Sample]:
        return [Sample({}, memory_fields(parse_meminfo(self._file.read(), self._path)))]

    def close(self) -> None:
        self._file.close()
