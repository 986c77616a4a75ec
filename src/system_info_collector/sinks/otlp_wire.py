"""An OTLP ``ExportMetricsServiceRequest``'s bytes, written directly (protobuf's wire format).

The messages and field numbers are those of ``opentelemetry/proto/collector/metrics/v1`` and
``opentelemetry/proto/metrics/v1`` (``ResourceMetrics`` → ``ScopeMetrics`` → ``Metric`` →
``Gauge``/``Sum`` → ``NumberDataPoint``); only what the otlp sink sends is written: resource
attributes, the scope's name and version, a metric's name and unit, cumulative sums with their
monotonicity, and points with string attributes, start and sample time and an int or double
value. Fields are written in field-number order and left out at their proto3 default, except
the members of a ``oneof`` (a point's value, an attribute's string), which are always written:
the same bytes the protobuf library serializes for the same message (a test compares them).

Why not the library: building the request through its Python API (``data_points.add()`` per
point, attribute messages merged from cached bytes) cost 16.5 ms of the sink's thread a tick at
256 CPUs (5,200 points); here a point is a cached attribute block and three packed numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from system_info_collector.sinks.protowire import DOUBLE, FIXED64, SFIXED64, field, text, varint

# Sum.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE (2), Sum.is_monotonic = true
_CUMULATIVE = varint(2 << 3) + varint(2)
_MONOTONIC = varint(3 << 3) + b"\x01"


def key_values(number: int, pairs: Iterable[tuple[str, str]]) -> bytes:
    """``KeyValue`` entries (string values) as field ``number`` of their message."""
    out = b""
    for key, value in pairs:
        any_value = field(1, value.encode())  # AnyValue.string_value: a oneof, always written
        out += field(number, text(1, key) + field(2, any_value))
    return out


def point(attributes: bytes, start_nano: int, time_nano: int, value: float | int) -> bytes:
    """One ``NumberDataPoint``: ``value`` an ``int`` (``as_int``) or a ``float`` (``as_double``);
    ``attributes`` from :func:`key_values` with field number 7."""
    out = b"\x11" + FIXED64(start_nano) if start_nano else b""
    if time_nano:
        out += b"\x19" + FIXED64(time_nano)
    out += b"\x31" + SFIXED64(value) if type(value) is int else b"\x21" + DOUBLE(value)
    return out + attributes


class MetricsRequest:
    """``ExportMetricsServiceRequest`` bytes: resources, then metrics by name in the order of
    their first point, each metric's points in the order they were added."""

    def __init__(self, scope_name: str, scope_version: str) -> None:
        self._scope = field(1, text(1, scope_name) + text(2, scope_version))
        # resource attributes -> (Resource bytes, {metric name -> (head, kind, points)})
        self._resources: dict[bytes, dict[str, tuple[bytes, str, list[bytes]]]] = {}

    def resource(self, resource: bytes) -> None:
        """Start ``resource``'s entry now (it keeps this place even if no point follows)."""
        self._resources.setdefault(resource, {})

    def add(self, resource: bytes, name: str, unit: str, kind: str, data_point: bytes) -> None:
        """A point of metric ``name`` (``kind``: gauge, counter or sum -- a counter is a
        monotonic cumulative sum) of ``resource`` (started by :meth:`resource` before)."""
        metrics = self._resources[resource]  # started by resource()
        found = metrics.get(name)
        if found is None:
            found = metrics[name] = (text(1, name) + text(3, unit), kind, [])
        found[2].append(field(1, data_point))

    def bytes(self) -> bytes:
        out = []
        for resource, metrics in self._resources.items():
            body = []
            for head, kind, points in metrics.values():
                if kind == "gauge":
                    data = field(5, b"".join(points))
                else:
                    tail = _CUMULATIVE + (_MONOTONIC if kind == "counter" else b"")
                    data = field(7, b"".join(points) + tail)
                body.append(field(2, head + data))
            scope_metrics = field(2, self._scope + b"".join(body))
            out.append(field(1, field(1, resource) + scope_metrics))
        return b"".join(out)


def resource_bytes(attributes: Sequence[tuple[str, str]]) -> bytes:
    """A ``Resource``'s payload: its attributes."""
    return key_values(1, attributes)
