"""The columns of each measurement: one definition serving CSV headers, SQL DDL and validation.

Every table/file starts with ``ts`` and ``host``, then the entity columns (which, with ``host``
and ``ts``, form the primary key), then the value columns, then ``tags`` (the static labels as
a JSON object).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from system_info_collector.model import Record

Kind = Literal["percent", "bytes", "count", "rate", "seconds"]


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: Kind
    sql_type: str  # "double precision" or "bigint"
    help: str


@dataclass(frozen=True, slots=True)
class Measurement:
    name: str
    entity: tuple[str, ...]  # labels that identify the row besides host and ts (primary key)
    labels: tuple[str, ...]  # other label columns stored with the row (not in the key)
    fields: tuple[Field, ...]
    help: str

    @property
    def label_columns(self) -> tuple[str, ...]:
        return self.entity + self.labels

    @property
    def columns(self) -> tuple[str, ...]:
        return ("ts", "host", *self.label_columns, *(f.name for f in self.fields), "tags")

    @property
    def primary_key(self) -> tuple[str, ...]:
        return ("host", *self.entity, "ts")

    def row(self, record: Record) -> list[object]:
        """The record's values in :attr:`columns` order (``tags`` as compact JSON)."""
        tags = record.tags
        extra = {k: v for k, v in tags.items() if k not in self.label_columns}
        return [
            record.ts,
            record.host,
            *(tags.get(c, "") for c in self.label_columns),
            *(record.fields.get(f.name) for f in self.fields),
            json.dumps(extra, separators=(",", ":"), sort_keys=True),
        ]


def _pct(name: str, help: str) -> Field:
    return Field(name, "percent", "double precision", help)


def _bytes(name: str, help: str) -> Field:
    return Field(name, "bytes", "bigint", help)


def _count(name: str, help: str) -> Field:
    return Field(name, "count", "bigint", help)


def _rate(name: str, help: str) -> Field:
    return Field(name, "rate", "double precision", help)


def _secs(name: str, help: str) -> Field:
    return Field(name, "seconds", "double precision", help)


CPU_STATES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
CPU_GUEST_STATES = ("guest", "guest_nice")

CPU = Measurement(
    name="cpu",
    entity=("cpu",),
    labels=(),
    fields=(
        *(
            _pct(f"{s}_percent", f"share of time in {s} since the previous reading")
            for s in CPU_STATES
        ),
        *(
            _pct(f"{s}_percent", f"share of time running a {s} (already part of user/nice)")
            for s in CPU_GUEST_STATES
        ),
        _pct("usage_percent", "100 - idle - iowait"),
    ),
    help="per-CPU and total (cpu=cpu-total) time shares from <proc>/stat",
)

MEMORY = Measurement(
    name="memory",
    entity=(),
    labels=(),
    fields=(
        _bytes("total_bytes", "MemTotal"),
        _bytes("available_bytes", "MemAvailable"),
        _bytes("used_bytes", "total - available (as free(1) from procps-ng 4)"),
        _bytes("free_bytes", "MemFree"),
        _bytes("buffers_bytes", "Buffers"),
        _bytes("cached_bytes", "Cached + SReclaimable (free's and psutil's cache)"),
        _bytes("shared_bytes", "Shmem"),
        _pct("used_percent", "used / total"),
        _bytes("swap_total_bytes", "SwapTotal"),
        _bytes("swap_used_bytes", "SwapTotal - SwapFree"),
        _bytes("swap_free_bytes", "SwapFree"),
        _pct("swap_used_percent", "swap used / swap total (0 without swap)"),
    ),
    help="memory and swap from <proc>/meminfo",
)

DISK = Measurement(
    name="disk",
    entity=("mountpoint",),
    labels=("device", "fstype"),
    fields=(
        _bytes("total_bytes", "f_blocks * f_frsize"),
        _bytes("used_bytes", "(f_blocks - f_bfree) * f_frsize, as df"),
        _bytes("free_bytes", "f_bfree * f_frsize (includes blocks reserved for root)"),
        _bytes("available_bytes", "f_bavail * f_frsize (what unprivileged users can use)"),
        _pct("used_percent", "used / (used + available), as df's Use% before rounding up"),
        _count("inodes_total", "f_files"),
        _count("inodes_used", "f_files - f_ffree"),
        _count("inodes_free", "f_ffree"),
        _pct("inodes_used_percent", "inodes used / inodes total (0 if the fs has none)"),
    ),
    help="filesystem usage of the host's mounts (statvfs of <root>/<mountpoint>)",
)

DISKIO = Measurement(
    name="diskio",
    entity=("device",),
    labels=(),
    fields=(
        _count("reads_total", "reads completed"),
        _count("writes_total", "writes completed"),
        _bytes("read_bytes_total", "sectors read * 512"),
        _bytes("written_bytes_total", "sectors written * 512"),
        _secs("read_time_seconds_total", "time spent reading"),
        _secs("write_time_seconds_total", "time spent writing"),
        _secs("io_time_seconds_total", "time spent doing I/O"),
        _rate("read_bytes_per_second", "read bytes per second since the previous reading"),
        _rate("write_bytes_per_second", "written bytes per second since the previous reading"),
        _rate("reads_per_second", "read IOPS since the previous reading"),
        _rate("writes_per_second", "write IOPS since the previous reading"),
        _pct("utilization_percent", "share of wall time the device was busy"),
    ),
    help="block device I/O counters and rates from <proc>/diskstats",
)

MEASUREMENTS: Mapping[str, Measurement] = {m.name: m for m in (CPU, MEMORY, DISK, DISKIO)}


def measurement(name: str) -> Measurement:
    return MEASUREMENTS[name]


def names() -> Sequence[str]:
    return tuple(MEASUREMENTS)
