"""Records as OpenTelemetry metrics, named as the OpenTelemetry Collector's ``hostmetrics``
receiver names them (its semantic conventions for ``system.*`` metrics).

:func:`otlp_points` is the only record → OTLP mapping; docs/push.md has the table of what
maps to what.

Not sent, because our records do not carry what the convention means: ``system.cpu.time``
(cumulative CPU seconds; the cpu measurement records shares of each interval, sent as
``system.cpu.utilization``), the ``cpu-total`` record (hostmetrics has no total), the
filesystem ``mode`` attribute (mount options are not recorded), the rate and percent fields of
diskio (derivable from the counters). Every sum is cumulative. Ratios are ``percent / 100``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Literal, NamedTuple

from system_info_collector.model import FieldValue, Record

Kind = Literal["gauge", "sum", "counter"]  # counter = monotonic sum


class Point(NamedTuple):
    name: str
    unit: str
    kind: Kind
    attributes: tuple[tuple[str, str], ...]
    value: float | int


CPU_STATES = {
    "user": "user",
    "nice": "nice",
    "system": "system",
    "idle": "idle",
    "iowait": "wait",
    "irq": "interrupt",
    "softirq": "softirq",
    "steal": "steal",
}


def _cpu(record: Record) -> Iterator[Point]:
    cpu = record.tags.get("cpu", "")
    if cpu == "cpu-total":
        return
    for ours, state in CPU_STATES.items():
        value = record.fields.get(f"{ours}_percent")
        if value is not None:
            attrs = (("cpu", cpu), ("state", state))
            yield Point("system.cpu.utilization", "1", "gauge", attrs, value / 100)


def _memory(record: Record) -> Iterator[Point]:
    f = record.fields
    total = f.get("total_bytes")
    for ours, state in (
        ("used", "used"),
        ("free", "free"),
        ("buffers", "buffered"),
        ("cached", "cached"),
    ):
        value = f.get(f"{ours}_bytes")
        if value is None:
            continue
        attrs = (("state", state),)
        yield Point("system.memory.usage", "By", "sum", attrs, int(value))
        if total:
            yield Point("system.memory.utilization", "1", "gauge", attrs, value / total)
    swap_total = f.get("swap_total_bytes")
    for ours, state in (("swap_used", "used"), ("swap_free", "free")):
        value = f.get(f"{ours}_bytes")
        if value is None or not swap_total:
            continue
        attrs = (("state", state),)
        yield Point("system.paging.usage", "By", "sum", attrs, int(value))
        yield Point("system.paging.utilization", "1", "gauge", attrs, value / swap_total)


def _disk(record: Record) -> Iterator[Point]:
    f, t = record.fields, record.tags
    base = (
        ("device", t.get("device", "")),
        ("mountpoint", t.get("mountpoint", "")),
        ("type", t.get("fstype", "")),
    )
    used, free, avail = f.get("used_bytes"), f.get("free_bytes"), f.get("available_bytes")
    states: list[tuple[str, FieldValue | None]] = [("used", used), ("free", avail)]
    if free is not None and avail is not None:
        states.append(("reserved", max(0, free - avail)))
    for state, value in states:
        if value is not None:
            yield Point(
                "system.filesystem.usage", "By", "sum", (*base, ("state", state)), int(value)
            )
    for state, field in (("used", "inodes_used"), ("free", "inodes_free")):
        value = f.get(field)
        if value is not None:
            attrs = (*base, ("state", state))
            yield Point("system.filesystem.inodes.usage", "{inodes}", "sum", attrs, int(value))
    if f.get("used_percent") is not None:
        yield Point("system.filesystem.utilization", "1", "gauge", base, f["used_percent"] / 100)


def _diskio(record: Record) -> Iterator[Point]:
    f = record.fields
    device = (("device", record.tags.get("device", "")),)
    for name, unit, by_direction, cast in (
        ("system.disk.io", "By", {"read": "read_bytes_total", "write": "written_bytes_total"}, int),
        (
            "system.disk.operations",
            "{operations}",
            {"read": "reads_total", "write": "writes_total"},
            int,
        ),
        (
            "system.disk.operation_time",
            "s",
            {"read": "read_time_seconds_total", "write": "write_time_seconds_total"},
            float,
        ),
    ):
        for direction, field in by_direction.items():
            value = f.get(field)
            if value is not None:
                attrs = (*device, ("direction", direction))
                yield Point(name, unit, "counter", attrs, cast(value))
    if f.get("io_time_seconds_total") is not None:
        yield Point(
            "system.disk.io_time", "s", "counter", device, float(f["io_time_seconds_total"])
        )


MAPPERS: Mapping[str, Callable[[Record], Iterator[Point]]] = {
    "cpu": _cpu,
    "memory": _memory,
    "disk": _disk,
    "diskio": _diskio,
}


def otlp_points(record: Record) -> Iterator[Point]:
    """The hostmetrics-named points of ``record`` (none for a measurement without a mapping)."""
    mapper = MAPPERS.get(record.measurement)
    if mapper is not None:
        yield from mapper(record)
