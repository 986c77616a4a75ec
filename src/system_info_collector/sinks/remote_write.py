"""Prometheus remote-write 1.0 sink: snappy-compressed protobuf ``WriteRequest`` over HTTP.

What it sends is what a scrape of ``/metrics`` shows (node_exporter's names by default,
``SIC_PROMETHEUS_HOST_METRICS``), each sample at its tick time (milliseconds): :meth:`at_tick`
builds the tick's series in the sampling thread (:func:`~.series.series_records`) and the
worker buffers those (memory or the write-ahead spool), so a replay after a crash sends the
same series. A batch is sent as requests of at most :data:`MAX_SAMPLES_PER_REQUEST` samples,
ticks never split, each series' samples in time order, labels sorted, with the headers the
spec requires (``Content-Encoding: snappy``, ``Content-Type: application/x-protobuf``,
``X-Prometheus-Remote-Write-Version: 0.1.0``, ``User-Agent``).

Answers (:mod:`~system_info_collector.sinks.push_http`): 2xx acknowledged; 429 and 5xx, a
refused connection or a timeout raise :class:`TransientSinkError` (the worker retries with
the shared backoff); other 4xx raise :class:`PermanentSinkError` and are not retried --
except the one case a retry or a replay provokes: Prometheus answers a whole request with
``400 out of order sample`` / ``duplicate sample for timestamp`` when *any* of its samples is
not newer than what it already stored, and stores none of them. So when such a request holds
several ticks, they are sent again one tick per request; the ticks still refused are counted in
``sic_sink_samples_refused_total`` (they were, as a rule, stored by the earlier attempt) and
the rest is stored. ``open`` sends an empty ``WriteRequest``: a wrong URL or a refused
credential is found before any data is at stake, and the worker keeps the data and probes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime

import cramjam

from system_info_collector.collector import Provider
from system_info_collector.config import HostMetricsMode, RemoteWriteSettings
from system_info_collector.errors import PermanentSinkError, TransientSinkError
from system_info_collector.logging import event
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.sinks import CheckResult
from system_info_collector.sinks.prompb import WriteRequestWriter, labels_bytes
from system_info_collector.sinks.push_http import Auth, PushClient, RejectedError
from system_info_collector.sinks.series import (
    SERIES,
    series_labels,
    series_records,
    with_leftovers_mapped,
)

MAX_SAMPLES_PER_REQUEST = 5000
LABELS_CACHE_MAX = 100_000  # series whose encoded labels are kept (a series' labels never change)
RETRY_STATUSES = frozenset({429, *range(500, 600)})
HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
_REFUSED = ("out of order sample", "duplicate sample for timestamp", "out of bounds")


def by_tick(batch: Iterable[Record]) -> list[list[Record]]:
    """The records grouped by tick time, oldest first."""
    ticks: dict[datetime, list[Record]] = {}
    for record in batch:
        ticks.setdefault(record.ts, []).append(record)
    return [ticks[ts] for ts in sorted(ticks)]


def chunk_ticks(ticks: list[list[Record]], limit: int) -> Iterator[list[list[Record]]]:
    """Consecutive ticks, grouped so a group holds at most ``limit`` fields (at least a tick)."""
    chunk: list[list[Record]] = []
    size = 0
    for tick in ticks:
        fields = sum(len(r.fields) for r in tick)
        if chunk and size + fields > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(tick)
        size += fields
    if chunk:
        yield chunk


class RemoteWriteSink:
    name = "remote_write"

    def __init__(
        self,
        settings: RemoteWriteSettings,
        *,
        metrics: Metrics,
        mode: HostMetricsMode = "node",
        tags: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._metrics = metrics
        self._mode: HostMetricsMode = mode
        self._tags = dict(tags or {})
        self._clock = clock
        # (host, tags) of a series record -> its fields' encoded labels
        self._labels_cache: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, bytes]] = {}
        self._client: PushClient | None = None
        metrics.samples_refused.labels(self.name)
        metrics.delivery.track(self.name, own_units=True)

    def _make_client(self) -> PushClient:
        s = self.settings
        return PushClient(
            s.url or "",
            timeout=s.timeout,
            auth=Auth(
                bearer_token_file=s.bearer_token_file,
                basic_user=s.basic_user,
                basic_password_file=s.basic_password_file,
                headers_file=s.headers_file,
            ),
            tls=s.tls,
            retry_statuses=RETRY_STATUSES,
            what="remote write to",
        )

    # -- Sink --------------------------------------------------------------------------
    def open(self) -> None:
        self.close()  # a retried open must not leak the previous connection
        self._client = self._make_client()
        try:
            self._post(self._compress(b""))  # an empty WriteRequest: reachability, credentials
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def at_tick(self, records: Sequence[Record], providers: Sequence[Provider]) -> list[Record]:
        """The tick's series, built in the sampling thread with the readings just taken."""
        series = series_records(records, providers, self._mode, self._tags)
        if series:
            self._metrics.delivery.produced(series[0].ts, len(series), sink=self.name)
        return series

    def write(self, batch: Sequence[Record]) -> None:
        batch = with_leftovers_mapped(batch, SERIES, self._leftover_tick)
        for chunk in chunk_ticks(by_tick(batch), MAX_SAMPLES_PER_REQUEST):
            self._send(chunk)

    def _leftover_tick(self, records: Sequence[Record]) -> list[Record]:
        return series_records(records, (), self._mode, self._tags)

    def check(self) -> list[CheckResult]:
        name = "sink remote_write"
        try:
            self.open()
        except (TransientSinkError, PermanentSinkError, ValueError) as exc:
            return [CheckResult(name, False, str(exc))]
        finally:
            self.close()
        assert self._client is not None
        return [CheckResult(name, True, f"{self._client.target} accepted an empty write")]

    # -- encoding ----------------------------------------------------------------------
    def encode(self, ticks: Sequence[Sequence[Record]]) -> tuple[bytes, int]:
        """The serialized ``WriteRequest`` of these ticks (oldest first) and its number of
        samples: per record, the labels :func:`~.series.series_labels` gives each field,
        encoded once per series and kept (:data:`LABELS_CACHE_MAX`)."""
        writer = WriteRequestWriter()
        cache = self._labels_cache
        if len(cache) > LABELS_CACHE_MAX:  # series churn (containers' interfaces, mounts)
            cache.clear()
        for tick in ticks:
            for record in tick:
                stamp = writer.stamp(record.ts)
                key = (record.host, tuple(record.tags.items()))
                names = cache.get(key)
                if names is None:
                    names = cache[key] = {}
                for name, value in record.fields.items():
                    labels = names.get(name)
                    if labels is None:
                        labels = names[name] = labels_bytes(series_labels(record, name))
                    writer.add(labels, float(value), stamp)
        return writer.bytes(), writer.samples

    @staticmethod
    def _compress(body: bytes) -> bytes:
        return bytes(cramjam.snappy.compress_raw(body))

    # -- sending -------------------------------------------------------------------------
    def _post(self, body: bytes) -> None:
        if self._client is None:
            raise TransientSinkError("remote write: the sink is not open")
        self._client.post(body, HEADERS)

    def _send(self, ticks: list[list[Record]]) -> None:
        request, count = self.encode(ticks)
        try:
            self._post(self._compress(request))
        except RejectedError as exc:
            if not any(p in exc.body for p in _REFUSED):
                raise
            if len(ticks) > 1:
                for tick in ticks:
                    self._send([tick])
                return
            self._metrics.samples_refused.labels(self.name).inc(count)
            event(
                "WARNING",
                "remote_write_refused",
                "the receiver refused samples it already has or that are too old",
                sink=self.name,
                samples=count,
                tick=ticks[0][0].ts.isoformat() if ticks[0] else None,
                error=str(exc),
            )
            return
        self._metrics.delivery.acknowledged(
            self.name, [r for tick in ticks for r in tick], self._clock()
        )
