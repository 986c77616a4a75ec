"""The one data type that flows from providers to sinks."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import NamedTuple

FieldValue = float | int


class Record(NamedTuple):
    """One row of one table (one line of one CSV file); immutable.

    ``tags`` holds the entity labels of the measurement (``{"cpu": "cpu0"}``) and the static
    labels from ``SIC_TAGS``; :mod:`system_info_collector.schema` knows which are which.

    A named tuple rather than a frozen dataclass: a tick makes one per entity (hundreds on a
    big host), and a frozen dataclass's ``__init__`` sets each attribute through
    ``object.__setattr__`` -- 0.75 against 0.24 µs a record (docs/benchmarks.md).
    """

    measurement: str
    ts: datetime
    host: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    # The interval the sample stands for, in milliseconds: the collector's interval when the
    # record was taken (its base interval, a burst interval, or a stretched one). 0: unknown.
    interval_ms: int = 0


class Sample(NamedTuple):
    """What a provider returns: the entity labels and the values; the agent stamps the rest."""

    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
