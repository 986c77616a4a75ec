"""Prometheus remote-write 1.0 messages (``prometheus.WriteRequest``), built at run time.

The field numbers are those of ``prompb/types.proto`` and ``prompb/remote.proto`` (normative
for the protocol); only the parts a 1.0 sender needs are declared: ``WriteRequest.timeseries``
(1), ``TimeSeries.labels`` (1) and ``samples`` (2), ``Label.name``/``value`` (1, 2),
``Sample.value`` (1, double) and ``timestamp`` (2, int64 milliseconds). The descriptor lives in
a private pool, so it cannot clash with another copy of ``prometheus.*`` in the process.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _messages() -> dict[str, Any]:
    proto = descriptor_pb2.FileDescriptorProto(
        name="system_info_collector/prompb_remote.proto", package="prometheus", syntax="proto3"
    )

    def message(name: str, *fields: tuple[str, int, int, str]) -> None:
        msg = proto.message_type.add(name=name)
        for field_name, number, kind, type_name in fields:
            repeated = type_name.startswith("*")
            msg.field.add(
                name=field_name,
                number=number,
                type=kind,
                type_name=type_name.lstrip("*") or None,
                label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
            )

    message("Label", ("name", 1, _F.TYPE_STRING, ""), ("value", 2, _F.TYPE_STRING, ""))
    message("Sample", ("value", 1, _F.TYPE_DOUBLE, ""), ("timestamp", 2, _F.TYPE_INT64, ""))
    message(
        "TimeSeries",
        ("labels", 1, _F.TYPE_MESSAGE, "*.prometheus.Label"),
        ("samples", 2, _F.TYPE_MESSAGE, "*.prometheus.Sample"),
    )
    message("WriteRequest", ("timeseries", 1, _F.TYPE_MESSAGE, "*.prometheus.TimeSeries"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    classes: dict[str, Any] = message_factory.GetMessages([proto], pool=pool)
    return classes


def write_request_class() -> Any:
    """The ``prometheus.WriteRequest`` message class (built on each call: call it once)."""
    return _messages()["prometheus.WriteRequest"]
