"""Records as Prometheus series: the one mapping the push sinks share with ``/metrics``.

:func:`prometheus_series` is the only place that turns a record into Prometheus names and
labels for the ``remote_write`` sink. The names come from the exposition's naming
(:func:`system_info_collector.exposition.sic.record_metric_name`, re-exported as
``http.host_metric_name``): ``sic_<measurement>_<field>`` with the unit kept. The
node_exporter names ``/metrics`` serves by default are built from the providers' raw readings
(CPU ticks, every meminfo line), which records -- and so the write-ahead spool -- do not carry;
a pushed sample is always one field of one record, replayable after a crash.

Labels: the measurement's label columns (``cpu``, ``mountpoint``, ``device``, ``fstype``) and
the static ``SIC_TAGS``, plus ``instance`` (the record's host) and ``job``
(``system-info-collector``) -- what a scrape would add. A tag of the same name wins. Labels
with an empty value are left out (the remote-write spec forbids them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from system_info_collector.model import Record

JOB = "system-info-collector"


class Series(NamedTuple):
    name: str
    labels: tuple[tuple[str, str], ...]  # sorted by name, ``__name__`` included
    value: float


def prometheus_series(record: Record) -> Iterator[Series]:
    """One :class:`Series` per field of ``record`` (sample time: ``record.ts``)."""
    from system_info_collector.http import host_metric_name

    base = {"instance": record.host, "job": JOB}
    base.update((k, v) for k, v in record.tags.items() if k[:2] != "__")
    shared = [(k, v) for k, v in base.items() if v != ""]
    for field, value in record.fields.items():
        name = host_metric_name(record.measurement, field)
        labels = tuple(sorted([("__name__", name), *shared]))
        yield Series(name, labels, float(value))
