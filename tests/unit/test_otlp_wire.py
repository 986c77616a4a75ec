"""The otlp sink writes the request's protobuf bytes itself: they must be the library's."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2

from system_info_collector import __version__
from system_info_collector.config import OtlpSettings
from system_info_collector.hostpaths import HostPaths
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.sinks.otlp import SCOPE, OtlpSink, _resource, unix_nano
from system_info_collector.sinks.otlp_names import METRICS, OTLP, RESOURCE

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def library_encoding(records: list[Record], start_nano: int) -> bytes:
    """The request as the sink built it with opentelemetry-proto before it wrote the bytes."""
    request = metrics_service_pb2.ExportMetricsServiceRequest()
    resources: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for record in records:
        resource = _resource(record)
        metrics = resources.get(resource)
        if metrics is None:
            rm = request.resource_metrics.add()
            for key, text in resource:
                rm.resource.attributes.add(key=key).value.string_value = text
            scope = rm.scope_metrics.add()
            scope.scope.name, scope.scope.version = SCOPE, __version__
            metrics = resources[resource] = {"scope": scope, "by_name": {}}
        attributes = [(k, v) for k, v in record.tags.items() if k[:1] != RESOURCE]
        for name, value in record.fields.items():
            spec = METRICS.get(name)
            if spec is None:
                continue
            metric = metrics["by_name"].get(name)
            if metric is None:
                metric = metrics["scope"].metrics.add(name=name, unit=spec.unit)
                if spec.kind != "gauge":
                    metric.sum.aggregation_temporality = (
                        metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
                    )
                    metric.sum.is_monotonic = spec.kind == "counter"
                metrics["by_name"][name] = metric
            data = metric.gauge if spec.kind == "gauge" else metric.sum
            dp = data.data_points.add()
            for key, text in attributes:
                dp.attributes.add(key=key).value.string_value = text
            dp.time_unix_nano = unix_nano(record.ts)
            if spec.kind != "gauge":
                dp.start_time_unix_nano = start_nano
            if spec.integer:
                dp.as_int = int(value)
            else:
                dp.as_double = float(value)
    return bytes(request.SerializeToString())


def sink(start_nano: int, tmp_path: Path) -> OtlpSink:
    s = OtlpSink(
        OtlpSettings(endpoint="http://127.0.0.1:1/v1/metrics"),
        host_paths=HostPaths(proc=str(tmp_path), sys=str(tmp_path), root=str(tmp_path)),
        metrics=Metrics(),
    )
    s._start_nano = start_nano
    return s


def test_the_written_bytes_are_what_opentelemetry_proto_serializes(tmp_path: Path) -> None:
    rng = random.Random(3)
    names = [*METRICS, "no.such.metric"]  # a name of a newer release is skipped
    texts = ["", "a", "é✓", "/dev/nvme0n1", "x" * 300]
    for start_nano in (0, 1_700_000_000_000_000_000):
        s = sink(start_nano, tmp_path)
        for _ in range(30):
            records = []
            for t in range(rng.randint(1, 3)):
                for _ in range(rng.randint(1, 25)):
                    tags = {k: rng.choice(texts) for k in rng.sample(["cpu", "state", "device"], 2)}
                    if rng.random() < 0.5:
                        tags[RESOURCE + rng.choice(["env", "zone"])] = rng.choice(texts)
                    fields = {}
                    for name in rng.sample(names, rng.randint(1, 3)):
                        integer = name in METRICS and METRICS[name].integer
                        fields[name] = (
                            rng.choice([0, 1, -5, 2**40, 2**63 - 1])
                            if integer
                            else rng.choice([0.0, -0.0, 1.5, -2.25, 1e300, float("inf")])
                        )
                    ts = T0 + timedelta(seconds=t, microseconds=rng.choice([0, 1, 999_999]))
                    host = rng.choice(["h", "web-1"])
                    records.append(Record(OTLP, ts, host, tags, fields))
            body, count = s.encode(records)
            assert body == library_encoding(records, start_nano)
            assert count == sum(1 for r in records for n in r.fields if n in METRICS)
    epoch = Record(OTLP, datetime(1970, 1, 1, tzinfo=UTC), "", {"": ""}, {"system.cpu.time": 0.0})
    assert sink(0, tmp_path).encode([epoch])[0] == library_encoding([epoch], 0)
