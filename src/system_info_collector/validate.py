"""Range, type and consistency rules between collectors and sinks.

An invalid record is never written: it is dropped with a structured WARN log naming the
measurement, field, value and rule, and counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from system_info_collector.model import Record
from system_info_collector.schema import CPU_STATES, MEASUREMENTS

PERCENT_SLACK = 1e-6
CPU_SUM_TOLERANCE = 0.5  # percent points

# (part, whole): part must not exceed whole.
_NOT_ABOVE: dict[str, tuple[tuple[str, str], ...]] = {
    "memory": (
        ("available_bytes", "total_bytes"),
        ("used_bytes", "total_bytes"),
        ("free_bytes", "total_bytes"),
        ("swap_used_bytes", "swap_total_bytes"),
        ("swap_free_bytes", "swap_total_bytes"),
    ),
    "disk": (
        ("used_bytes", "total_bytes"),
        ("free_bytes", "total_bytes"),
        ("available_bytes", "free_bytes"),
        ("inodes_used", "inodes_total"),
        ("inodes_free", "inodes_total"),
    ),
    "cpu": tuple(
        (f"{g}_percent", f"{s}_percent") for g, s in (("guest", "user"), ("guest_nice", "nice"))
    ),
}


@dataclass(frozen=True, slots=True)
class Rejection:
    record: Record
    field: str
    value: object
    rule: str


def check(record: Record) -> Rejection | None:
    """The first rule ``record`` breaks, or None."""
    spec = MEASUREMENTS.get(record.measurement)
    if spec is None:
        return Rejection(record, "measurement", record.measurement, "unknown_measurement")
    fields = record.fields
    for f in spec.fields:
        value = fields.get(f.name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return Rejection(record, f.name, value, "type")
        if f.sql_type == "bigint" and not isinstance(value, int):
            return Rejection(record, f.name, value, "type")
        if not math.isfinite(value):
            return Rejection(record, f.name, value, "finite")
        if value < 0:
            return Rejection(record, f.name, value, "non_negative")
        if f.kind == "percent" and value > 100 + PERCENT_SLACK:
            return Rejection(record, f.name, value, "percent_range")
    for part, whole in _NOT_ABOVE.get(record.measurement, ()):
        if fields[part] > fields[whole] + PERCENT_SLACK:
            return Rejection(record, part, fields[part], f"not_above_{whole}")
    if record.measurement == "cpu":
        total = sum(fields[f"{s}_percent"] for s in CPU_STATES)
        if abs(total - 100.0) > CPU_SUM_TOLERANCE:
            return Rejection(record, "user_percent..steal_percent", total, "cpu_states_sum_100")
    elif record.measurement == "memory":
        if fields["used_bytes"] + fields["available_bytes"] != fields["total_bytes"]:
            return Rejection(
                record, "used_bytes", fields["used_bytes"], "used_plus_available_total"
            )
        parts = fields["free_bytes"] + fields["buffers_bytes"] + fields["cached_bytes"]
        if parts > fields["total_bytes"]:
            return Rejection(record, "free+buffers+cached", parts, "not_above_total_bytes")
    elif (
        record.measurement == "disk"
        and fields["used_bytes"] + fields["free_bytes"] != fields["total_bytes"]
    ):
        return Rejection(record, "used_bytes", fields["used_bytes"], "used_plus_free_total")
    return None


def validate(records: Iterable[Record]) -> tuple[list[Record], list[Rejection]]:
    accepted: list[Record] = []
    rejected: list[Rejection] = []
    for record in records:
        problem = check(record)
        if problem is None:
            accepted.append(record)
        else:
            rejected.append(problem)
    return accepted, rejected


def describe(rejections: Sequence[Rejection]) -> list[dict[str, object]]:
    return [
        {
            "measurement": r.record.measurement,
            "field": r.field,
            "value": r.value,
            "rule": r.rule,
            "tags": dict(r.record.tags),
        }
        for r in rejections
    ]
