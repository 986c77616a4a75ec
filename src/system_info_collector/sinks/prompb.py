"""Prometheus remote-write 1.0 messages (``prometheus.WriteRequest``): written, and declared.

The field numbers are those of ``prompb/types.proto`` and ``prompb/remote.proto`` (normative
for the protocol); a 1.0 sender needs only ``WriteRequest.timeseries`` (1),
``TimeSeries.labels`` (1) and ``samples`` (2), ``Label.name``/``value`` (1, 2),
``Sample.value`` (1, double) and ``timestamp`` (2, int64 milliseconds).

:class:`WriteRequestWriter` writes those bytes itself (protobuf's wire format: a tag byte, a
varint length, the payload; proto3 leaves out a field at its default, and so does this): one
cached byte string per series' labels, one small concatenation per sample, the same bytes the
protobuf library serializes (a test compares them), at a fraction of its per-sample cost
through the Python API (``timeseries.add()``, ``samples.add()`` per sample: 25 ms a tick for
a 256-CPU host's 4,100 samples). :func:`write_request_class` declares the messages for
protobuf (in a private pool, so it cannot clash with another copy of ``prometheus.*``): the
tests decode with it; the sink never imports protobuf.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from system_info_collector.sinks.protowire import DOUBLE, field, text, varint

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_ZERO = b"\0" * 8


def labels_bytes(labels: Iterable[tuple[str, str]]) -> bytes:
    """The ``TimeSeries.labels`` entries of ``labels`` (in the order given)."""
    return b"".join(field(1, text(1, name) + text(2, value)) for name, value in labels)


class WriteRequestWriter:
    """A ``WriteRequest``'s bytes, series by series: :meth:`add` samples (a series is named by
    its encoded labels, :func:`labels_bytes`), then :meth:`bytes`. Series keep the order of
    their first sample; a series' samples keep the order they were added in."""

    def __init__(self) -> None:
        self._series: dict[bytes, list[bytes]] = {}
        self._stamps: dict[datetime, tuple[bytes, bytes, bytes]] = {}
        self.samples = 0

    def stamp(self, ts: datetime) -> tuple[bytes, bytes, bytes]:
        """What every sample at ``ts`` starts and ends with (kept: a tick's samples share it):
        the ``samples`` entry's head up to the value, its ``timestamp`` field, and the whole
        entry of a sample whose value is zero (left out, as proto3 leaves out defaults)."""
        found = self._stamps.get(ts)
        if found is None:
            ms = (ts - _EPOCH) // _MS
            tail = b"\x10" + varint(ms) if ms else b""
            head = b"\x12" + varint(9 + len(tail)) + b"\x09"
            found = self._stamps[ts] = (head, tail, b"\x12" + varint(len(tail)) + tail)
        return found

    def add(self, labels: bytes, value: float, stamp: tuple[bytes, bytes, bytes]) -> None:
        packed = DOUBLE(value)
        head, tail, zero = stamp
        sample = head + packed + tail if packed != _ZERO else zero
        self._series.setdefault(labels, []).append(sample)
        self.samples += 1

    def bytes(self) -> bytes:
        out = []
        for labels, samples in self._series.items():
            body = labels + b"".join(samples)
            out.append(b"\x0a" + varint(len(body)) + body)
        return b"".join(out)


def _messages() -> dict[str, Any]:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field_type = descriptor_pb2.FieldDescriptorProto
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
                label=field_type.LABEL_REPEATED if repeated else field_type.LABEL_OPTIONAL,
            )

    message(
        "Label", ("name", 1, field_type.TYPE_STRING, ""), ("value", 2, field_type.TYPE_STRING, "")
    )
    message(
        "Sample",
        ("value", 1, field_type.TYPE_DOUBLE, ""),
        ("timestamp", 2, field_type.TYPE_INT64, ""),
    )
    message(
        "TimeSeries",
        ("labels", 1, field_type.TYPE_MESSAGE, "*.prometheus.Label"),
        ("samples", 2, field_type.TYPE_MESSAGE, "*.prometheus.Sample"),
    )
    message("WriteRequest", ("timeseries", 1, field_type.TYPE_MESSAGE, "*.prometheus.TimeSeries"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    classes: dict[str, Any] = message_factory.GetMessages([proto], pool=pool)
    return classes


def write_request_class() -> Any:
    """The ``prometheus.WriteRequest`` message class (built on each call: call it once)."""
    return _messages()["prometheus.WriteRequest"]
