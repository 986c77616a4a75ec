"""The project's own names (``sic_<measurement>_<field>``), as counters and 0-1 ratios.

One generic mapping serves every measurement from its schema: a ``*_percent`` field becomes a
``*_ratio`` gauge (0-1), a per-second rate is left out (Prometheus computes rates from the
counter beside it: ``rate(sic_diskio_read_bytes_total[5m])``), a ``*_total`` field is a counter,
the rest gauges. CPU shares are replaced by the provider's cumulative counters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from system_info_collector.exposition.families import Families, View
from system_info_collector.providers.cpu import COLUMNS, USER_HZ, StatReading
from system_info_collector.schema import MEASUREMENTS

# The disk measurement is a filesystem in node_exporter's words.
_PREFIX = {"disk": "sic_filesystem"}
_RENAME = {
    ("disk", "total_bytes"): "size_bytes",
    ("disk", "available_bytes"): "avail_bytes",
    ("disk", "inodes_total"): "inodes",  # a gauge, not a counter
}


def record_metric_name(measurement: str, field: str) -> str:
    """A record field's Prometheus name, unit kept: ``("disk", "available_bytes")`` ->
    ``"sic_filesystem_avail_bytes"``, ``("cpu", "usage_percent")`` ->
    ``"sic_cpu_usage_percent"``."""
    prefix = _PREFIX.get(measurement, f"sic_{measurement}")
    return f"{prefix}_{_RENAME.get((measurement, field), field)}"


def sic_metric_name(measurement: str, field: str) -> str:
    """The ``sic`` mode's name: :func:`record_metric_name`, with ``*_percent`` served as a 0-1
    ``*_ratio``: ``("memory", "used_percent")`` -> ``"sic_memory_used_ratio"``."""
    name = record_metric_name(measurement, field)
    if name.endswith("_percent"):
        name = name[: -len("_percent")] + "_ratio"
    return name


def sic_generic(view: View, out: Families) -> None:
    measurement = MEASUREMENTS.get(view.measurement)
    if measurement is None:
        return
    labels = measurement.label_columns
    for field in measurement.fields:
        if field.kind == "rate":
            continue
        name = sic_metric_name(measurement.name, field.name)
        scale = 0.01 if field.kind == "percent" else 1.0
        help_ = f"{field.help} ({measurement.name}.{field.name}{', as 0-1' if scale != 1 else ''})"
        family = (
            out.counter(name, help_, labels)
            if name.endswith("_total")
            else out.gauge(name, help_, labels)
        )
        for record in view.records:
            value = record.fields.get(field.name)
            if value is not None:
                family.add([record.tags.get(k, "") for k in labels], value * scale)


def sic_cpu(view: View, out: Families) -> None:
    """Cumulative CPU seconds per CPU and state (no ``cpu-total``: sum() the CPUs)."""
    reading = view.reading
    if not isinstance(reading, StatReading):
        return
    seconds = out.counter(
        "sic_cpu_seconds_total", "CPU seconds per state from <proc>/stat", ["cpu", "state"]
    )
    guest = out.counter(
        "sic_cpu_guest_seconds_total",
        "CPU seconds running guests (already part of user/nice)",
        ["cpu", "state"],
    )
    for cpu, ticks in reading.cpus.items():
        if cpu == "cpu-total":
            continue
        for state, value in zip(COLUMNS, ticks, strict=True):
            family = guest if state.startswith("guest") else seconds
            family.add([cpu, state], value / USER_HZ)


SIC: Mapping[str, Callable[[View, Families], None]] = {"cpu": sic_cpu}
