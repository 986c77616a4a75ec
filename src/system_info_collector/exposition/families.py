"""What a mapping gets (:class:`View`) and what it fills (:class:`Families`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    UnknownMetricFamily,
)

from system_info_collector.model import Record


@dataclass(frozen=True, slots=True)
class View:
    """One measurement as the ticks left it: its fresh newest records (one per entity) and its
    provider's last reading (``None`` for a provider that keeps none)."""

    measurement: str
    records: Sequence[Record]
    reading: object | None


_Metric = GaugeMetricFamily | CounterMetricFamily | UnknownMetricFamily
_KINDS: dict[str, type[_Metric]] = {
    "counter": CounterMetricFamily,
    "gauge": GaugeMetricFamily,
    "untyped": UnknownMetricFamily,
}


class Family:
    def __init__(self, metric: _Metric, static: Sequence[str]):
        self.metric = metric
        self._static = list(static)
        self._seen: set[tuple[str, ...]] = set()

    def add(self, labels: Sequence[str], value: float) -> None:
        """One series; a second value for the same labels is ignored (two mappings may fill
        one family from the same file: ``cpu`` and ``system`` both read /proc/stat)."""
        key = tuple(labels)
        if key in self._seen:
            return
        self._seen.add(key)
        self.metric.add_metric([*labels, *self._static], float(value))


class Families:
    """The families of one scrape, by name; the static ``SIC_TAGS`` labels go on every series
    (``host`` is not one: Prometheus adds ``instance``)."""

    def __init__(self, static: Mapping[str, str]) -> None:
        self._static = dict(static)
        self._families: dict[str, Family] = {}

    def _family(self, kind: str, name: str, help_: str, labels: Sequence[str]) -> Family:
        family = self._families.get(name)
        if family is None:
            # A static label named like one of the family's own (``mode``…) gives way to it.
            static = [(k, v) for k, v in self._static.items() if k not in labels]
            metric = _KINDS[kind](name, help_, labels=[*labels, *(k for k, _ in static)])
            family = Family(metric, [v for _, v in static])
            self._families[name] = family
        return family

    def gauge(self, name: str, help_: str, labels: Sequence[str] = ()) -> Family:
        return self._family("gauge", name, help_, labels)

    def counter(self, name: str, help_: str, labels: Sequence[str] = ()) -> Family:
        """``name`` ends in ``_total`` (prometheus_client adds it back)."""
        return self._family("counter", name, help_, labels)

    def of_kind(self, kind: str, name: str, help_: str, labels: Sequence[str] = ()) -> Family:
        """``kind``: counter, gauge or untyped (node_exporter's vmstat values)."""
        return self._family(kind, name, help_, labels)

    def metrics(self) -> Iterator[Metric]:
        for family in self._families.values():
            if family.metric.samples:
                yield family.metric


class _Grouped(Family):
    """A family of :class:`SeriesGroups`: its series as (sorted labels, value), no Metric."""

    def __init__(self, sample: str, names: Sequence[str], static: Sequence[str]) -> None:
        self.sample = sample
        # label names are unique: sorting the pairs is sorting by name, the same every time
        order = sorted(range(len(names)), key=list(names).__getitem__)
        self._sorted_names = tuple(names[i] for i in order)
        self._pick = itemgetter(*order) if len(order) > 1 else None
        self._single = len(order) == 1
        self._static = list(static)
        self._seen: set[tuple[str, ...]] = set()
        self.items: list[tuple[tuple[tuple[str, str], ...], float]] = []

    def add(self, labels: Sequence[str], value: float) -> None:
        key = tuple(labels)
        if key in self._seen:  # as Family.add: the first value of a label set stays
            return
        self._seen.add(key)
        values = [*labels, *self._static]
        if self._pick is not None:
            pairs = tuple(zip(self._sorted_names, self._pick(values), strict=True))
        else:
            pairs = ((self._sorted_names[0], values[0]),) if self._single else ()
        self.items.append((pairs, float(value)))


class SeriesGroups(Families):
    """The same families as :class:`Families` fills, kept as what :meth:`groups` returns
    instead of prometheus-client metrics: for a push, which needs the series and not a
    scrape's text, without a ``Sample`` and a label dict built per series."""

    def _family(self, kind: str, name: str, help_: str, labels: Sequence[str]) -> Family:
        family = self._families.get(name)
        if family is None:
            static = [(k, v) for k, v in self._static.items() if k not in labels]
            # the sample's name as prometheus-client writes it: counters end in _total
            sample = name if kind != "counter" else name.removesuffix("_total") + "_total"
            family = _Grouped(sample, [*labels, *(k for k, _ in static)], [v for _, v in static])
            self._families[name] = family
        return family

    def metrics(self) -> Iterator[Metric]:
        raise TypeError("SeriesGroups keeps no metrics: use groups()")

    def groups(self) -> dict[tuple[tuple[str, str], ...], dict[str, float]]:
        """Sorted labels (``__name__`` not among them) -> {sample name: value}, in the order
        of :class:`Families`' metrics and their samples."""
        grouped: dict[tuple[tuple[str, str], ...], dict[str, float]] = {}
        for family in self._families.values():
            assert isinstance(family, _Grouped)
            name = family.sample
            for key, value in family.items:
                grouped.setdefault(key, {})[name] = value
        return grouped
