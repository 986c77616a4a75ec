"""Range, type and consistency rules between collectors and sinks.

Every measurement's fields must be present, numeric (whole numbers for ``bigint`` columns),
finite and non-negative, percentages at most 100; each collector adds its own rules
(:class:`~system_info_collector.collector.Rules`: parts not above wholes, consistency). An
invalid record is never written: the collect path drops it with a structured WARN log naming the
measurement, field, value and rule, and counts it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from operator import itemgetter
from typing import Any

from system_info_collector.collector import Collector
from system_info_collector.model import FieldValue, Record
from system_info_collector.providers import COLLECTORS

PERCENT_SLACK = 1e-6
_NUMBER = frozenset({int, float})
_INT = frozenset({int})


@dataclass(frozen=True, slots=True)
class Rejection:
    record: Record
    field: str
    value: object
    rule: str


def check(record: Record) -> Rejection | None:
    """The first rule ``record`` breaks, or None."""
    checker = _checker(record.measurement)
    if checker is None:
        return Rejection(record, "measurement", record.measurement, "unknown_measurement")
    return checker(record)


def _check_fields(record: Record, collector: Collector[Any]) -> Rejection | None:
    """The per-field rules one field at a time, in declaration order: the first broken one."""
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
    return None


def _getter(names: tuple[str, ...]) -> Callable[[Mapping[str, FieldValue]], tuple[Any, ...]]:
    if not names:
        return lambda fields: ()
    get = itemgetter(*names)
    return get if len(names) > 1 else lambda fields: (get(fields),)


@cache
def _checker(measurement: str) -> Callable[[Record], Rejection | None] | None:
    """All of ``measurement``'s rules compiled into one function (built once per measurement).

    The per-field rules are first proven for all fields at once, with a handful of C-level
    calls: every value is exactly an ``int`` or a ``float`` (``int`` only in ``bigint``
    columns), their sum is finite (so none is infinite or NaN), the smallest is not negative,
    the largest percentage is at most 100. Only a record failing that proof goes through the
    field-by-field rules, which name the first broken rule exactly as before; then the
    collector's own rules (parts not above wholes, its consistency check).
    """
    collector = COLLECTORS.get(measurement)
    if collector is None:
        return None
    declared = collector.measurement.fields
    values = _getter(tuple(f.name for f in declared))
    whole_numbers = _getter(tuple(f.name for f in declared if f.sql_type == "bigint"))
    percents = _getter(tuple(f.name for f in declared if f.kind == "percent"))
    pct_limit = 100 + PERCENT_SLACK
    not_above = tuple(
        (part, whole, f"not_above_{whole}") for part, whole in collector.rules.not_above
    )
    consistent = collector.rules.check
    isfinite = math.isfinite

    def fields_proven(fields: Mapping[str, FieldValue]) -> bool:
        try:
            vals = values(fields)
            kinds = set(map(type, vals))
            if not kinds <= _NUMBER or (
                float in kinds and not set(map(type, whole_numbers(fields))) <= _INT
            ):
                return False
            if not vals:
                return True
            pcts = percents(fields)
            return isfinite(sum(vals)) and min(vals) >= 0 and (not pcts or max(pcts) <= pct_limit)
        except (KeyError, OverflowError):  # a missing field; a number beyond float's range
            return False

    def check_record(record: Record) -> Rejection | None:
        fields = record.fields
        if not fields_proven(fields):
            problem = _check_fields(record, collector)
            if problem is not None:
                return problem
        for part, whole, rule in not_above:
            if fields[part] > fields[whole] + PERCENT_SLACK:
                return Rejection(record, part, fields[part], rule)
        found = consistent(fields) if consistent is not None else None
        return Rejection(record, *found) if found is not None else None

    return check_record


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
