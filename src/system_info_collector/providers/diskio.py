"""Block device I/O counters and per-interval rates from ``<proc>/diskstats``.

The provider keeps its last reading (:attr:`DiskIOProvider.reading`: every counter of every
device kept, as :class:`DiskCounters`) for ``/metrics`` (``node_disk_*``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
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
from system_info_collector.providers._counters import Previous
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
    return {d: DiskStats(*_STATS(n)) for d, n in _read_counters(text, path).items()}


# reads, read_sectors, read_ms, writes, write_sectors, write_ms, io_ms: DiskStats' fields
_STATS = itemgetter(0, 2, 3, 4, 6, 7, 9)


def read_diskstats(text: str, path: str = "diskstats") -> DiskCounters:
    """Every counter of every device line."""
    return {
        d: dict(zip(DISKSTATS_COLUMNS, n, strict=False))
        for d, n in _read_counters(text, path).items()
    }


def _read_counters(text: str, path: str) -> dict[str, list[int]]:
    """Every device line's counters in :data:`DISKSTATS_COLUMNS` order (at least 11)."""
    devices: dict[str, list[int]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 14:
            raise ProviderError(f"{path}: line {lineno}: expected at least 14 fields: {line!r}")
        try:
            devices[parts[2]] = list(map(int, parts[3 : 3 + len(DISKSTATS_COLUMNS)]))
        except ValueError:
            raise ProviderError(f"{path}: line {lineno}: non-numeric counter: {line!r}") from None
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
        self._kept: dict[str, dict[str, str] | None] = {}  # device -> its tags, None: excluded
        self._prev: Previous[tuple[int, ...]] = Previous(clock)
        self.reading: DiskCounters = {}  # the last one, excluded devices left out (replaced whole)

    def _tags(self, device: str) -> dict[str, str] | None:
        """``{"device": device}`` (kept across readings: records share it), None if excluded."""
        if device not in self._kept:
            if len(self._kept) > 4096:  # devices come and go (loop, dm): forget the old ones
                self._kept.clear()
            excluded = self._exclude.search(device)
            self._kept[device] = None if excluded else {"device": device}
        return self._kept[device]

    def _read(self) -> dict[str, tuple[int, ...]]:
        counters = _read_counters(self._file.read(), self._path)
        kept = {d: n for d, n in counters.items() if self._tags(d) is not None}
        self.reading = {d: dict(zip(DISKSTATS_COLUMNS, n, strict=False)) for d, n in kept.items()}
        return {d: _STATS(n) for d, n in kept.items()}

    def prime(self) -> None:
        self._prev.start(self._read())

    def collect(self) -> list[Sample]:
        elapsed, pairs = self._prev.advance(self._read())
        samples = []
        for device, prev, cur in pairs:
            reads, read_sectors, read_ms, writes, write_sectors, write_ms, io_ms = cur
            d_reads, d_read_sectors = reads - prev[0], read_sectors - prev[1]
            d_writes, d_write_sectors, d_io_ms = (
                writes - prev[3],
                write_sectors - prev[4],
                io_ms - prev[6],
            )
            if (
                d_reads < 0
                or d_read_sectors < 0
                or read_ms < prev[2]
                or d_writes < 0
                or d_write_sectors < 0
                or write_ms < prev[5]
                or d_io_ms < 0
            ):
                continue  # counter wrap or device re-created: start again from this reading
            tags = self._tags(device)
            assert tags is not None
            samples.append(
                Sample(
                    tags,
                    {
                        "reads_total": reads,
                        "writes_total": writes,
                        "read_bytes_total": read_sectors * SECTOR_BYTES,
                        "written_bytes_total": write_sectors * SECTOR_BYTES,
                        "read_time_seconds_total": read_ms / 1000.0,
                        "write_time_seconds_total": write_ms / 1000.0,
                        "io_time_seconds_total": io_ms / 1000.0,
                        "read_bytes_per_second": d_read_sectors * SECTOR_BYTES / elapsed,
                        "write_bytes_per_second": d_write_sectors * SECTOR_BYTES / elapsed,
                        "reads_per_second": d_reads / elapsed,
                        "writes_per_second": d_writes / elapsed,
                        # io_ticks can run a little ahead of our clock: cap at 100 %.
                        "utilization_percent": min(100.0, d_io_ms / (elapsed * 10.0)),
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
