"""Range, type and consistency rules between collectors and sinks.

Every measurement's fields must be present, numeric (whole numbers for ``bigint`` columns),
finite and non-negative, percentages at most 100; each collector adds its own rules
(:class:`~system_info_collector.collector.Rules`: parts not above wholes, consistency). An
invalid record is never written: the collect path drops it with a structured WARN log naming the
measurement, field, value and rule, and counts it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from system_info_collector.model import Record
from system_info_collector.providers import COLLECTORS

PERCENT_SLACK = 1e-6


@dataclass(frozen=True, slots=True)
class Rejection:
    record: Record
    field: str
    value: object
    rule: str


def check(record: Record) -> Rejection | None:
    """The first rule ``record`` breaks, or None."""
    collector = COLLECTORS.get(record.measurement)
    if collector is None:
        return Rejection(record, "measurement", record.measurement, "unknown_measurement")
    fields = record.fields
    for f in collector.measurement.fields:
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
    rules = collector.rules
    for part, whole in rules.not_above:
        if fields[part] > fields[whole] + PERCENT_SLACK:
            return Rejection(record, part, fields[part], f"not_above_{whole}")
    problem = rules.check(fields) if rules.check is not None else None
    return Rejection(record, *problem) if problem is not None else None


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
