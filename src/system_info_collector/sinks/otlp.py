"""OTLP/HTTP metrics sink: ``ExportMetricsServiceRequest`` (protobuf, gzip) to ``/v1/metrics``.

Messages are ``opentelemetry-proto``'s, written as bytes by
:mod:`~system_info_collector.sinks.otlp_wire` (the package's own serialization, byte for byte;
the package decodes a receiver's ``partial_success``); the transport is ``http.client``
(:mod:`~system_info_collector.sinks.push_http`): the full OpenTelemetry SDK and exporter would
add about twice the memory for nothing we use (docs/push.md, ``bench/import_rss.py``).

Names and attributes follow the Collector's ``hostmetrics`` receiver
(:mod:`~system_info_collector.sinks.otlp_names`), mapped at tick time (:meth:`OtlpSink.at_tick`)
from the tick's records and the providers' readings; the buffer (the write-ahead spool by
default) holds those points, so a replay after a crash sends what the tick produced.
Resource: ``host.name`` (the record's host) and the static ``SIC_TAGS``. Sums are cumulative,
their start time the host's boot time (``btime`` of ``<proc>/stat``), as hostmetrics does;
every point's time is the tick time.

Answers, as the OTLP/HTTP specification says: 2xx acknowledged (a ``partial_success`` with
rejected points is logged and counted in ``sic_sink_samples_refused_total``); 429, 502, 503,
504 and connection errors or timeouts are retried with the shared backoff; every other status
is permanent (not retried). ``open`` sends an empty request to check the URL and credentials.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from system_info_collector import __version__
from system_info_collector.collector import Provider
from system_info_collector.config import OtlpSettings
from system_info_collector.errors import PermanentSinkError, TransientSinkError
from system_info_collector.hostpaths import HostPaths
from system_info_collector.logging import event
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.sinks import CheckResult
from system_info_collector.sinks.otlp_names import METRICS, OTLP, RESOURCE, otlp_records
from system_info_collector.sinks.otlp_wire import MetricsRequest, key_values, point, resource_bytes
from system_info_collector.sinks.push_http import Auth, PushClient
from system_info_collector.sinks.remote_write import by_tick, chunk_ticks
from system_info_collector.sinks.series import with_leftovers_mapped

RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_POINTS_PER_REQUEST = 10_000
ATTRIBUTES_CACHE_MAX = 10_000  # attribute sets whose encoding is kept (they repeat every tick)
SCOPE = "system-info-collector"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def unix_nano(ts: datetime) -> int:
    return (ts - _EPOCH) // _US * 1000


def boot_time_nano(paths: HostPaths) -> int | None:
    """The host's boot time (``btime`` in ``<proc>/stat``) in Unix nanoseconds."""
    try:
        with open(paths.proc_path("stat"), encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("btime "):
                    return int(line.split()[1]) * 1_000_000_000
    except (OSError, ValueError):
        pass
    return None


class OtlpSink:
    name = "otlp"

    def __init__(
        self,
        settings: OtlpSettings,
        *,
        host_paths: HostPaths,
        metrics: Metrics,
        tags: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._paths = host_paths
        self._metrics = metrics
        self._tags = dict(tags or {})
        self._clock = clock
        self._client: PushClient | None = None
        # (host, tags) of a point record -> its encoded resource and attributes
        self._attributes_cache: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[bytes, bytes]]
        self._attributes_cache = {}
        self._start_nano = 0
        metrics.samples_refused.labels(self.name)
        metrics.delivery.track(self.name, own_units=True)

    # -- Sink --------------------------------------------------------------------------
    def open(self) -> None:
        self.close()  # a retried open must not leak the previous connection
        self._start_nano = boot_time_nano(self._paths) or int(self._clock()) * 1_000_000_000
        self._client = PushClient(
            self.settings.endpoint or "",
            timeout=self.settings.timeout,
            auth=Auth(headers_file=self.settings.headers_file),
            tls=self.settings.tls,
            retry_statuses=RETRY_STATUSES,
            what="OTLP export to",
        )
        try:
            self._post(b"")  # an empty ExportMetricsServiceRequest: reachability, credentials
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def at_tick(self, records: Sequence[Record], providers: Sequence[Provider]) -> list[Record]:
        """The tick's hostmetrics points, built in the sampling thread with its readings."""
        points = otlp_records(records, providers, self._tags)
        if points:
            self._metrics.delivery.produced(points[0].ts, len(points), sink=self.name)
        return points

    def write(self, batch: Sequence[Record]) -> None:
        batch = with_leftovers_mapped(batch, OTLP, lambda t: otlp_records(t, (), self._tags))
        for chunk in chunk_ticks(by_tick(batch), MAX_POINTS_PER_REQUEST):
            records = [r for tick in chunk for r in tick]
            body, count = self.encode(records)
            self._post(body, count)
            self._metrics.delivery.acknowledged(self.name, records, self._clock())

    def check(self) -> list[CheckResult]:
        name = "sink otlp"
        try:
            self.open()
        except (TransientSinkError, PermanentSinkError, ValueError) as exc:
            return [CheckResult(name, False, str(exc))]
        finally:
            self.close()
        assert self._client is not None
        return [CheckResult(name, True, f"{self._client.target} accepted an empty export")]

    # -- encoding ----------------------------------------------------------------------
    def encode(self, records: Sequence[Record]) -> tuple[bytes, int]:
        """The serialized ``ExportMetricsServiceRequest`` of :data:`OTLP` records and its number
        of points (:mod:`~system_info_collector.sinks.otlp_wire`)."""
        request = MetricsRequest(SCOPE, __version__)
        seen: set[bytes] = set()
        cache = self._attributes_cache
        if len(cache) > ATTRIBUTES_CACHE_MAX:  # series churn (containers' interfaces, mounts)
            cache.clear()
        stamps: dict[datetime, int] = {}
        start_nano = self._start_nano
        count = 0
        for record in records:
            key = (record.host, tuple(record.tags.items()))
            encoded = cache.get(key)  # (resource, attributes): the same every tick
            if encoded is None:
                attributes = [(k, v) for k, v in record.tags.items() if k[:1] != RESOURCE]
                encoded = cache[key] = (
                    resource_bytes(_resource(record)),
                    key_values(7, attributes),
                )
            resource, attributes_bytes = encoded
            if resource not in seen:
                seen.add(resource)
                request.resource(resource)
            time_nano = stamps.get(record.ts)
            if time_nano is None:
                time_nano = stamps[record.ts] = unix_nano(record.ts)
            for name, value in record.fields.items():
                spec = METRICS.get(name)
                if spec is None:
                    continue  # a name this release does not know (a spool of a newer one)
                number = int(value) if spec.integer else float(value)
                start = start_nano if spec.kind != "gauge" else 0
                data_point = point(attributes_bytes, start, time_nano, number)
                request.add(resource, name, spec.unit, spec.kind, data_point)
                count += 1
        return request.bytes(), count

    # -- sending -------------------------------------------------------------------------
    def _post(self, body: bytes, count: int = 0) -> None:
        if self._client is None:
            raise TransientSinkError("OTLP export: the sink is not open")
        headers = {"Content-Type": "application/x-protobuf"}
        if self.settings.compression == "gzip":
            body = gzip.compress(body, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
        _, answer = self._client.post(body, headers)
        self._partial_success(answer, count)

    def _partial_success(self, answer: bytes, count: int) -> None:
        if not answer:
            return
        # protobuf only here: a receiver that reports nothing answers with an empty body
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

        try:
            response = metrics_service_pb2.ExportMetricsServiceResponse.FromString(answer)
        except Exception:  # a receiver answering JSON or text: nothing to learn
            return
        rejected = response.partial_success.rejected_data_points
        if rejected:
            self._metrics.samples_refused.labels(self.name).inc(rejected)
            event(
                "WARNING",
                "otlp_partial_success",
                "the receiver rejected some data points",
                sink=self.name,
                rejected=rejected,
                points=count,
                error=response.partial_success.error_message[:300],
            )


def _resource(record: Record) -> tuple[tuple[str, str], ...]:
    """``host.name`` and the static tags (the record's tags marked as resource attributes)."""
    static = sorted((k[len(RESOURCE) :], v) for k, v in record.tags.items() if k[:1] == RESOURCE)
    return (("host.name", record.host), *static)
