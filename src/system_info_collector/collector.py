"""What a collector declares, once: its measurement (columns, units, SQL types), its settings
(the ``SIC_<NAME>_*`` variables), its validation rules, its provider factory and its host check.

Everything else is derived from these declarations (the registry in
:mod:`system_info_collector.providers`): ``KNOWN_COLLECTORS`` and the per-collector settings in
:mod:`~system_info_collector.config`, the reserved tag names, CSV headers and SQL DDL
(:mod:`~system_info_collector.schema`), validation (:mod:`~system_info_collector.validate`),
``check`` lines; the README's variable table and the Helm values are checked against them by
``tests/unit/test_declarations.py``.

This module imports nothing of the package but the leaf modules, so collector modules can
import it without cycles.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

from system_info_collector.hostpaths import HostPaths
from system_info_collector.model import FieldValue, Record, Sample

Kind = Literal["percent", "bytes", "count", "rate", "seconds", "gauge"]
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: Kind
    sql_type: str  # "double precision" or "bigint"
    help: str
    signed: bool = False  # may be negative (a clock offset); every other field may not


def percent(name: str, help: str) -> Field:
    return Field(name, "percent", "double precision", help)


def byte_count(name: str, help: str) -> Field:
    return Field(name, "bytes", "bigint", help)


def count(name: str, help: str) -> Field:
    return Field(name, "count", "bigint", help)


def rate(name: str, help: str) -> Field:
    return Field(name, "rate", "double precision", help)


def seconds(name: str, help: str) -> Field:
    return Field(name, "seconds", "double precision", help)


def signed_seconds(name: str, help: str) -> Field:
    """Seconds that may be negative (an offset from a reference)."""
    return Field(name, "seconds", "double precision", help, signed=True)


def signed_gauge(name: str, help: str) -> Field:
    """A unitless number that may be negative (a frequency correction)."""
    return Field(name, "gauge", "double precision", help, signed=True)


def gauge(name: str, help: str) -> Field:
    """A unitless non-negative number that is not a whole count (a load average)."""
    return Field(name, "gauge", "double precision", help)


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
        # interval_ms last: tables created before it got it by ALTER TABLE ADD COLUMN, so new
        # and migrated tables (and CSV files) have the same column order.
        return (
            "ts",
            "host",
            *self.label_columns,
            *(f.name for f in self.fields),
            "tags",
            "interval_ms",
        )

    @property
    def primary_key(self) -> tuple[str, ...]:
        return ("host", *self.entity, "ts")

    def row(self, record: Record) -> list[object]:
        """The record's values in :attr:`columns` order (``tags`` as compact JSON, an unknown
        ``interval_ms`` as None: an empty CSV cell, SQL NULL)."""
        tags = record.tags
        extra = {k: v for k, v in tags.items() if k not in self.label_columns}
        return [
            record.ts,
            record.host,
            *(tags.get(c, "") for c in self.label_columns),
            *(record.fields.get(f.name) for f in self.fields),
            json.dumps(extra, separators=(",", ":"), sort_keys=True) if extra else "{}",
            record.interval_ms or None,
        ]


@dataclass(frozen=True, slots=True)
class Option:
    """One ``SIC_<NAME>_*`` variable of a collector, read by config.py into ``attribute`` of the
    collector's settings dataclass. ``parse`` names one of config.py's parsers; ``default`` is
    the value as a user would write it (the dataclass default must equal it parsed, which a test
    checks)."""

    variable: str
    attribute: str
    parse: Literal["regex", "duration", "positive_duration", "bool"]
    default: str
    help: str
    default_doc: str = ""  # README text for the default when the value itself is too long

    @property
    def helm_key(self) -> str:
        """The key under ``collectors.<name>`` in the chart's values: camelCase of attribute."""
        head, *rest = self.attribute.split("_")
        return head + "".join(part.capitalize() for part in rest)


# (field, value, rule) of the first consistency rule a record's fields break.
Problem = tuple[str, object, str]


@dataclass(frozen=True, slots=True)
class Rules:
    """Validation beyond the per-field ones every measurement gets (type, finite, non-negative,
    percent ≤ 100): ``not_above`` pairs (part, whole) and a consistency check."""

    not_above: tuple[tuple[str, str], ...] = ()
    check: Callable[[Mapping[str, FieldValue]], Problem | None] | None = None
    # ``check`` for many records at once (a tick's): True only if ``check`` finds no problem in
    # any of them; False sends them through ``check`` one by one (which names the problem).
    check_all: Callable[[Sequence[Mapping[str, FieldValue]]], bool] | None = None


class Provider(Protocol):
    """Reads one measurement. A provider may also keep ``failed_parts``: how many parts of its
    last ``collect()`` failed while the rest was collected (counted by the collect path)."""

    name: str

    def prime(self) -> None:
        """Take the first reading of counters that need two (no-op for gauges)."""

    def collect(self) -> Iterable[Sample]:
        """One reading; raises :class:`~system_info_collector.errors.ProviderError`."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class NoSettings:
    """The settings of a collector without ``SIC_<NAME>_*`` variables of its own."""


S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Collector(Generic[S]):
    """A collector's declaration; the registry holds one per collector name."""

    measurement: Measurement
    settings: type[S]
    factory: Callable[[HostPaths, S, Clock], Provider]
    # `check` command: (line name, function returning a detail line or raising ProviderError).
    probe: tuple[str, Callable[[HostPaths, S], str]]
    options: tuple[Option, ...] = ()
    rules: Rules = field(default_factory=Rules)
    optional: bool = False  # not in the default SIC_COLLECTORS

    @property
    def name(self) -> str:
        return self.measurement.name

    def build(self, paths: HostPaths, settings: Any, clock: Clock) -> Provider:
        return self.factory(paths, settings, clock)
