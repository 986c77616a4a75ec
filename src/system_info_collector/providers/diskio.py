"""Block device I/O counters and per-interval rates from ``<proc>/diskstats``.

The provider keeps its last reading (:attr:`DiskIOProvider.reading`: every counter of every
device kept, as :class:`DiskCounters`) for ``/metrics`` (``node_disk_*``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from system_info_collector.collector import (
    Collector,
    Measurement,
    Option,
    byte_count,
    count,
    percent,
    rate,
    seconds,
)
from system_info_collector.errors import ProviderError
from system_info_collector.hostpaths import HostPaths
from system_info_collector.model import Sample
from system_info_collector.providers._counters import Previous, deltas
from system_info_collector.providers._read import ProcFile, read_text

SECTOR_BYTES = 512  # diskstats counts 512-byte sectors whatever the device's sector size

# node_exporter's (collector/diskstats_linux.go): partitions, loop, ram, zram, floppy, optical.
DEFAULT_DEVICES_EXCLUDE = (
    r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p|mmcblk\d+p|md\d+p|dm-\d+p|sr)\d+$"
)


@dataclass(frozen=True, slots=True)
class DiskIOSettings:
    devices_exclude: re.Pattern[str] = re.compile(DEFAULT_DEVICES_EXCLUDE)


OPTIONS = (
    Option(
        "SIC_DISKIO_DEVICES_EXCLUDE",
        "devices_exclude",
        "regex",
        DEFAULT_DEVICES_EXCLUDE,
        "regex of block devices to skip (partitions, loop, ram, zram, optical)",
    ),
)

MEASUREMENT = Measurement(
    name="diskio",
    entity=("device",),
    labels=(),
    fields=(
        count("reads_total", "reads completed"),
        count("writes_total", "writes completed"),
        byte_count("read_bytes_total", "sectors read * 512"),
        byte_count("written_bytes_total", "sectors written * 512"),
        seconds("read_time_seconds_total", "time spent reading"),
        seconds("write_time_seconds_total", "time spent writing"),
        seconds("io_time_seconds_total", "time spent doing I/O"),
        rate("read_bytes_per_second", "read bytes per second since the previous reading"),
        rate("write_bytes_per_second", "written bytes per second since the previous reading"),
        rate("reads_per_second", "read IOPS since the previous reading"),
        rate("writes_per_second", "write IOPS since the previous reading"),
        percent("utilization_percent", "share of wall time the device was busy"),
    ),
    help="block device I/O counters and rates from <proc>/diskstats",
)


class DiskStats(NamedTuple):
    reads: int
    read_sectors: int
    read_ms: int
    writes: int
    write_sectors: int
    write_ms: int
    io_ms: int


# The columns after the device name (Documentation/admin-guide/iostats.rst); the discard
# columns exist since Linux 4.18, the flush columns since 5.5 (absent from older kernels' lines).
DISKSTATS_COLUMNS = (
    "reads",
    "reads_merged",
    "read_sectors",
    "read_ms",
    "writes",
    "writes_merged",
    "write_sectors",
    "write_ms",
    "io_now",
    "io_ms",
    "io_weighted_ms",
    "discards",
    "discards_merged",
    "discard_sectors",
    "discard_ms",
    "flushes",
    "flush_ms",
)
DiskCounters = dict[str, dict[str, int]]  # device -> DISKSTATS_COLUMNS -> value


def parse_diskstats(text: str, path: str = "diskstats") -> dict[str, DiskStats]:
    return {d: _stats(c) for d, c in read_diskstats(text, path).items()}


def _stats(c: dict[str, int]) -> DiskStats:
    return DiskStats(
        c["reads"],
        c["read_sectors"],
        c["read_ms"],
        c["writes"],
        c["write_sectors"],
        c["write_ms"],
        c["io_ms"],
    )


def read_diskstats(text: str, path: str = "diskstats") -> DiskCounters:
    """Every counter of every device line."""
    devices: DiskCounters = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 14:
            raise ProviderError(f"{path}: line {lineno}: expected at least 14 fields: {line!r}")
        try:
            n = [int(v) for v in parts[3 : 3 + len(DISKSTATS_COLUMNS)]]
        except ValueError:
            raise ProviderError(f"{path}: line {lineno}: non-numeric counter: {line!r}") from None
        devices[parts[2]] = dict(zip(DISKSTATS_COLUMNS, n, strict=False))
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
        self._prev: Previous[DiskStats] = Previous(clock)
        self.reading: DiskCounters = {}  # the last one, excluded devices left out (replaced whole)

    def _read(self) -> dict[str, DiskStats]:
        counters = read_diskstats(self._file.read(), self._path)
        kept = {d: c for d, c in counters.items() if not self._exclude.search(d)}
        self.reading = kept
        return {d: _stats(c) for d, c in kept.items()}

    def prime(self) -> None:
        self._prev.start(self._read())

    def collect(self) -> list[Sample]:
        elapsed, pairs = self._prev.advance(self._read())
        samples = []
        for device, prev, cur in pairs:
            delta = deltas(prev, cur)
            if delta is None:
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
        return samples

    def close(self) -> None:
        self._file.close()


def _probe(paths: HostPaths, settings: DiskIOSettings) -> str:
    path = paths.proc_path("diskstats")
    devices = parse_diskstats(read_text(path), path)
    kept = [d for d in devices if not settings.devices_exclude.search(d)]
    return f"{path} readable, {len(kept)} devices after filters ({', '.join(kept[:8])})"


COLLECTOR = Collector(
    measurement=MEASUREMENT,
    settings=DiskIOSettings,
    factory=lambda paths, settings, clock: DiskIOProvider(
        paths, devices_exclude=settings.devices_exclude, clock=clock
    ),
    probe=("proc diskstats", _probe),
    options=OPTIONS,
)
