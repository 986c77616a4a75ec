"""Range, type and consistency rules between collectors and sinks.

Every measurement's fields must be present, numeric (whole numbers for ``bigint`` columns),
finite and non-negative (unless declared ``signed``: a clock offset), percentages at most 100;
each collector adds its own rules (:class:`~system_info_collector.collector.Rules`: parts not
above wholes, consistency). An
invalid record is never written: the collect path drops it with a structured WARN log naming the
measurement, field, value and rule, and counts it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import chain, groupby, repeat
from operator import add, attrgetter, gt, itemgetter
from typing import Any

from system_info_collector.collector import Collector
from system_info_collector.model import FieldValue, Record
from system_info_collector.providers import COLLECTORS

PERCENT_SLACK = 1e-6
_PERCENT_LIMIT = 100 + PERCENT_SLACK
_NUMBER = frozenset({int, float})
_INT = frozenset({int})
_MEASUREMENT = attrgetter("measurement")


@dataclass(frozen=True, slots=True)
class Rejection:
    record: Record
    field: str
    value: object
    rule: str


def check(record: Record) -> Rejection | None:
    """The first rule ``record`` breaks, or None."""
    rules = _compiled(record.measurement)
    if rules is None:
        return Rejection(record, "measurement", record.measurement, "unknown_measurement")
    return rules.check(record)


def validate(records: Iterable[Record]) -> tuple[list[Record], list[Rejection]]:
    """``records`` split into the valid ones (in order) and the first broken rule of each other.

    Each run of records of one measurement (a collector's samples of a tick) is first proven
    valid as a whole (:meth:`_Rules.proven`); then the collector's consistency check runs for the
    whole run at once where the collector has one (``Rules.check_all``), else (or if that finds a
    problem) per record. A run that fails the proof is checked record by record.
    """
    accepted: list[Record] = []
    rejected: list[Rejection] = []
    for measurement, run in groupby(records, key=_MEASUREMENT):
        rules = _compiled(measurement)
        batch = list(run)
        fields_list = [r.fields for r in batch]
        if rules is not None and rules.proven(fields_list):
            consistent = rules.consistent
            if consistent is None or (rules.consistent_all and rules.consistent_all(fields_list)):
                accepted.extend(batch)
                continue
            for record in batch:
                found = consistent(record.fields)
                if found is None:
                    accepted.append(record)
                else:
                    rejected.append(Rejection(record, *found))
            continue
        for record in batch:
            problem = check(record)
            if problem is None:
                accepted.append(record)
            else:
                rejected.append(problem)
    return accepted, rejected


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
        if value < 0 and not f.signed:
            return Rejection(record, f.name, value, "non_negative")
        if f.kind == "percent" and value > 100 + PERCENT_SLACK:
            return Rejection(record, f.name, value, "percent_range")
    return None


def _getter(names: tuple[str, ...]) -> Callable[[Mapping[str, FieldValue]], tuple[Any, ...]]:
    if not names:
        return lambda fields: ()
    get = itemgetter(*names)
    return get if len(names) > 1 else lambda fields: (get(fields),)


FieldsList = Sequence[Mapping[str, FieldValue]]


class _Rules:
    """All of one measurement's rules, compiled once (:func:`_compiled`).

    :meth:`proven` proves the per-field rules and the parts-not-above-wholes rules for many
    records at once with a handful of C-level calls over all their values: every value is
    exactly an ``int`` or a ``float`` (``int`` only in ``bigint`` columns), their sum is finite
    (so none is infinite or NaN), the smallest (of the fields not signed) is not negative, the
    largest percentage is at most 100, no part exceeds its whole. :meth:`check` is the exact
    path: the proof for one record, and if that fails the rules field by field, naming the
    first broken rule exactly as before; then the collector's consistency check.
    """

    def __init__(self, collector: Collector[Any]) -> None:
        declared = collector.measurement.fields
        self._collector = collector
        self._values = _getter(tuple(f.name for f in declared))
        # None: no field is signed (the values themselves must not be negative)
        unsigned = tuple(f.name for f in declared if not f.signed)
        self._unsigned = None if len(unsigned) == len(declared) else _getter(unsigned)
        wholes = tuple(f.name for f in declared if f.sql_type == "bigint")
        self._whole_numbers = _getter(wholes) if wholes else None
        percents = tuple(f.name for f in declared if f.kind == "percent")
        # None: every field is a percentage (the values themselves), () none is
        self._percents = None if len(percents) == len(declared) else _getter(percents)
        self._not_above = tuple(
            (itemgetter(part), itemgetter(whole), part, f"not_above_{whole}")
            for part, whole in collector.rules.not_above
        )
        self.consistent = collector.rules.check
        self.consistent_all = collector.rules.check_all

    def proven(self, fields_list: FieldsList) -> bool:
        try:
            flat = list(chain.from_iterable(map(self._values, fields_list)))
            kinds = set(map(type, flat))
            if not kinds <= _NUMBER:
                return False
            if float in kinds and self._whole_numbers is not None:
                wholes = chain.from_iterable(map(self._whole_numbers, fields_list))
                if not set(map(type, wholes)) <= _INT:
                    return False
            if not flat:
                return True
            if not math.isfinite(sum(flat)):
                return False
            if self._unsigned is None:
                if min(flat) < 0:
                    return False
            elif min(chain.from_iterable(map(self._unsigned, fields_list)), default=0) < 0:
                return False
            percents = (
                flat
                if self._percents is None
                else list(chain.from_iterable(map(self._percents, fields_list)))
            )
            if percents and max(percents) > _PERCENT_LIMIT:
                return False
            for part, whole, _, _ in self._not_above:
                wholes_plus = map(add, map(whole, fields_list), repeat(PERCENT_SLACK))
                if any(map(gt, map(part, fields_list), wholes_plus)):
                    return False
            return True
        except (KeyError, OverflowError):  # a missing field; a number beyond float's range
            return False

    def check(self, record: Record) -> Rejection | None:
        fields = record.fields
        if not self.proven((fields,)):
            problem = _check_fields(record, self._collector)
            if problem is not None:
                return problem
            for _, _, part, rule in self._not_above:
                whole = rule[len("not_above_") :]
                if fields[part] > fields[whole] + PERCENT_SLACK:
                    return Rejection(record, part, fields[part], rule)
        found = self.consistent(fields) if self.consistent is not None else None
        return Rejection(record, *found) if found is not None else None


@cache
def _compiled(measurement: str) -> _Rules | None:
    collector = COLLECTORS.get(measurement)
    return _Rules(collector) if collector is not None else None
