"""Block device I/O counters and per-interval rates from ``<proc>/diskstats``."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import NamedTuple

from system_info_collector.errors import ProviderError
from system_info_collector.hostpaths import HostPaths
from system_info_collector.model import Sample
from system_info_collector.providers._read import ProcFile

SECTOR_BYTES = 512  # diskstats counts 512-byte sectors whatever the device's sector size


class DiskStats(NamedTuple):
    reads: int
    read_sectors: int
    read_ms: int
    writes: int
    write_sectors: int
    write_ms: int
    io_ms: int


def parse_diskstats(text: str, path: str = "diskstats") -> dict[str, DiskStats]:
    devices: dict[str, DiskStats] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 14:
            raise ProviderError(f"{path}: line {lineno}: expected at least 14 fields: {line!r}")
        try:
            n = [int(v) for v in parts[3:14]]
        except ValueError:
            raise ProviderError(f"{path}: line {lineno}: non-numeric counter: {line!r}") from None
        devices[parts[2]] = DiskStats(n[0], n[2], n[3], n[4], n[6], n[7], n[9])
    return devices


class DiskIOProvider:
    name = "diskio"

    def __init__(
        self,
        paths: HostPaths,
        *,
        devices_exclude: re.Pattern[str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = paths.proc_path("diskstats")
        self._file = ProcFile(self._path)
        self._exclude = devices_exclude
        self._clock = clock
        self._prev: dict[str, DiskStats] = {}
        self._prev_time = 0.0

    def _read(self) -> dict[str, DiskStats]:
        stats = parse_diskstats(self._file.read(), self._path)
        return {d: s for d, s in stats.items() if not self._exclude.search(d)}

    def prime(self) -> None:
        self._prev = self._read()
        self._prev_time = self._clock()

    def collect(self) -> list[Sample]:
        current = self._read()
        now = self._clock()
        elapsed = now - self._prev_time
        samples = []
        for device, cur in current.items():
            prev = self._prev.get(device)
            if prev is None or elapsed <= 0:
                continue
            delta = [c - p for p, c in zip(prev, cur, strict=True)]
            if any(d < 0 for d in delta):
                continue  # counter wrap or device re-created: start again from this reading
            d = DiskStats(*delta)
            samples.append(
                Sample(
                    {"device": device},
                    {
                        "reads_total": cur.reads,
                        "writes_total": cur.writes,
                        "read_bytes_total": cur.read_sectors * SECTOR_BYTES,
                        "written_bytes_total": cur.write_sectors * SECTOR_BYTES,
                        "read_time_seconds_total": cur.read_ms / 1000.0,
                        "write_time_seconds_total": cur.write_ms / 1000.0,
                        "io_time_seconds_total": cur.io_ms / 1000.0,
                        "read_bytes_per_second": d.read_sectors * SECTOR_BYTES / elapsed,
                        "write_bytes_per_second": d.write_sectors * SECTOR_BYTES / elapsed,
                        "reads_per_second": d.reads / elapsed,
                        "writes_per_second": d.writes / elapsed,
                        # io_ticks can run a little ahead of our clock: cap at 100 %.
                        "utilization_percent": min(100.0, d.io_ms / (elapsed * 10.0)),
                    },
                )
            )
        self._prev = current
        self._prev_time = now
        return samples

    def close(self) -> None:
        self._file.close()
