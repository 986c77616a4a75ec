"""The columns of each measurement: one definition serving CSV headers, SQL DDL and validation.

Every table/file starts with ``ts`` and ``host``, then the entity columns (which, with ``host``
and ``ts``, form the primary key), then the value columns, then ``tags`` (the static labels as
a JSON object), then ``interval_ms`` (the interval the sample stands for). Each measurement is
declared by its collector module (see :mod:`system_info_collector.collector`); this module
collects them from the registry.
"""

from __future__ import annotations

from collections.abc import Mapping

from system_info_collector.collector import Field, Kind, Measurement
from system_info_collector.providers import COLLECTORS

__all__ = ["MEASUREMENTS", "RESERVED_TAGS", "Field", "Kind", "Measurement"]

MEASUREMENTS: Mapping[str, Measurement] = {c.name: c.measurement for c in COLLECTORS.values()}

# Column names a static tag (SIC_TAGS) may not take: they would collide with a column.
RESERVED_TAGS = frozenset(
    {
        "ts",
        "host",
        "tags",
        "interval_ms",
        *(c for m in MEASUREMENTS.values() for c in m.label_columns),
    }
)
