"""The series a scrape of ``/metrics`` shows, built at tick time: what ``remote_write`` pushes.

``/metrics`` builds node_exporter's families (``node_cpu_seconds_total`` from the CPU ticks,
``node_memory_*_bytes`` from every meminfo line, …) from the newest records *and* the
providers' raw readings (:class:`~system_info_collector.exposition.families.View`). Records
alone do not carry those readings, so the push sink cannot map records to these names later,
in its worker thread or after a crash. Instead, :func:`series_records` runs the very mappings
``/metrics`` runs (:func:`~system_info_collector.exposition.mapping_for`, in the mode of
``SIC_PROMETHEUS_HOST_METRICS``: ``node`` or ``sic``) **in the sampling thread, at tick time**,
over that tick's records and the readings the tick just took, and turns the resulting samples
into records of the pseudo-measurement :data:`SERIES`: one record per label set, its tags the
labels, its fields ``{metric name: value}``, its time the tick time. Those records are what
the sink's buffer holds -- memory or the write-ahead spool -- so a series replayed after
``kill -9`` is byte for byte the series the tick produced.

:func:`series_labels` gives each field of such a record the labels a scrape would give it,
adding ``instance`` (the record's host) and ``job`` (``system-info-collector``); a tag of
the same name wins. Labels with an empty value are left out (the remote-write spec forbids
them). A record that is not a :data:`SERIES` record (an ordinary record: the fallback when the
tick-time mapping failed) is mapped on the way out with no readings: the families that need
only records (filesystem, network, load …) are still sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from system_info_collector.collector import Provider
from system_info_collector.config import HostMetricsMode
from system_info_collector.exposition import mapping_for
from system_info_collector.exposition.families import SeriesGroups, View
from system_info_collector.model import Record

JOB = "system-info-collector"
SERIES = "@series"  # the measurement of a record that holds series (never a schema name)


def push_mode(mode: HostMetricsMode) -> HostMetricsMode:
    """The naming the push sends: ``/metrics``' mode; ``off`` (no host metrics on ``/metrics``)
    still pushes node_exporter's names."""
    return "sic" if mode == "sic" else "node"


def tick_views(records: Sequence[Record], providers: Iterable[Provider]) -> list[View]:
    """One :class:`View` per measurement of ``records``, with its provider's reading."""
    readings = {p.name: getattr(p, "reading", None) for p in providers}
    grouped: dict[str, list[Record]] = {}
    for record in records:
        grouped.setdefault(record.measurement, []).append(record)
    return [View(name, recs, readings.get(name)) for name, recs in grouped.items()]


def series_records(
    records: Sequence[Record],
    providers: Iterable[Provider],
    mode: HostMetricsMode,
    tags: Mapping[str, str],
) -> list[Record]:
    """The families ``/metrics`` would serve for this tick, as :data:`SERIES` records."""
    if not records:
        return []
    out = SeriesGroups(tags)
    for view in tick_views(records, providers):
        mapping_for(push_mode(mode), view.measurement)(view, out)
    ts, host = records[0].ts, records[0].host
    return [Record(SERIES, ts, host, dict(key), fields) for key, fields in out.groups().items()]


def with_leftovers_mapped(
    batch: Sequence[Record], kind: str, map_tick: Callable[[Sequence[Record]], list[Record]]
) -> list[Record]:
    """``batch`` with every ordinary record (not of the pseudo-measurement ``kind``) replaced
    by what ``map_tick`` makes of its tick: the fallback when the tick-time mapping failed."""
    if all(r.measurement == kind for r in batch):
        return list(batch)
    out = [r for r in batch if r.measurement == kind]
    ticks: dict[tuple[object, str], list[Record]] = {}
    for r in batch:
        if r.measurement != kind:
            ticks.setdefault((r.ts, r.host), []).append(r)
    for tick in ticks.values():
        out.extend(map_tick(tick))
    return out


def series_labels(record: Record, name: str) -> tuple[tuple[str, str], ...]:
    """The labels of the series of field ``name`` of a :data:`SERIES` record, sorted:
    ``__name__``, ``instance`` (the host) and ``job``, then the tags (a tag of the same name
    wins; tags starting with ``__`` are not labels); labels with an empty value left out."""
    base = {"instance": record.host, "job": JOB}
    base.update((k, v) for k, v in record.tags.items() if k[:2] != "__")
    return tuple(sorted([("__name__", name), *((k, v) for k, v in base.items() if v != "")]))
