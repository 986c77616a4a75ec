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
    """One family's series as the mappings add them; where they go is the subclass's."""

    def __init__(self, static: Sequence[str]) -> None:
        self._static = list(static)  # the values of the static labels, after the family's own
        self._seen: set[tuple[str, ...]] = set()

    def add(self, labels: Sequence[str], value: float) -> None:
        """One series; a second value for the same labels is ignored (two mappings may fill
        one family from the same file: ``cpu`` and ``system`` both read /proc/stat)."""
        key = tuple(labels)
        if key in self._seen:
            return
        self._seen.add(key)
        self._keep([*labels, *self._static], float(value))

    def _keep(self, values: list[str], value: float) -> None:
        raise NotImplementedError


class _MetricFamily(Family):
    """A family of :class:`MetricFamilies`: a prometheus-client metric."""

    def __init__(self, metric: _Metric, static: Sequence[str]) -> None:
        super().__init__(static)
        self.metric = metric

    def _keep(self, values: list[str], value: float) -> None:
        self.metric.add_metric(values, value)


class _Grouped(Family):
    """A family of :class:`SeriesGroups`: its series as (sorted label pairs, value)."""

    def __init__(self, sample: str, names: Sequence[str], static: Sequence[str]) -> None:
        super().__init__(static)
        self.sample = sample
        # label names are unique: sorting the pairs is sorting by name, the same every time
        order = sorted(range(len(names)), key=list(names).__getitem__)
        self._sorted_names = tuple(names[i] for i in order)
        # one C call for the usual two or more labels (itemgetter of one index is no tuple)
        self._pick = itemgetter(*order) if len(order) > 1 else (lambda v: [v[i] for i in order])
        self.items: list[tuple[tuple[tuple[str, str], ...], float]] = []

    def _keep(self, values: list[str], value: float) -> None:
        self.items.append((tuple(zip(self._sorted_names, self._pick(values), strict=True)), value))


class Families:
    """The families of one tick, by name, as the mappings fill them; the static ``SIC_TAGS``
    labels go on every series (``host`` is not one: Prometheus adds ``instance``). What a
    family keeps is the subclass's: :class:`MetricFamilies` for a scrape, :class:`SeriesGroups`
    for a push."""

    def __init__(self, static: Mapping[str, str]) -> None:
        self._static = dict(static)
        self._families: dict[str, Family] = {}

    def _family(self, kind: str, name: str, help_: str, labels: Sequence[str]) -> Family:
        family = self._families.get(name)
        if family is None:
            # A static label named like one of the family's own (``mode``…) gives way to it.
            static = [(k, v) for k, v in self._static.items() if k not in labels]
            names = [*labels, *(k for k, _ in static)]
            family = self._new(kind, name, help_, names, [v for _, v in static])
            self._families[name] = family
        return family

    def _new(self, kind: str, name: str, help_: str, names: list[str], static: list[str]) -> Family:
        raise NotImplementedError

    def gauge(self, name: str, help_: str, labels: Sequence[str] = ()) -> Family:
        return self._family("gauge", name, help_, labels)

    def counter(self, name: str, help_: str, labels: Sequence[str] = ()) -> Family:
        """``name`` ends in ``_total`` (prometheus_client adds it back)."""
        return self._family("counter", name, help_, labels)

    def of_kind(self, kind: str, name: str, help_: str, labels: Sequence[str] = ()) -> Family:
        """``kind``: counter, gauge or untyped (node_exporter's vmstat values)."""
        return self._family(kind, name, help_, labels)


class MetricFamilies(Families):
    """The families of one scrape, as prometheus-client metrics (:meth:`metrics`)."""

    def __init__(self, static: Mapping[str, str]) -> None:
        super().__init__(static)
        self._metrics: list[_Metric] = []

    def _new(self, kind: str, name: str, help_: str, names: list[str], static: list[str]) -> Family:
        metric = _KINDS[kind](name, help_, labels=names)
        self._metrics.append(metric)
        return _MetricFamily(metric, static)

    def metrics(self) -> Iterator[Metric]:
        return (metric for metric in self._metrics if metric.samples)


class SeriesGroups(Families):
    """The same families kept as what :meth:`groups` returns instead of prometheus-client
    metrics: for a push, which needs the series and not a scrape's text, without a ``Sample``
    and a label dict built per series."""

    def __init__(self, static: Mapping[str, str]) -> None:
        super().__init__(static)
        self._groups: list[_Grouped] = []

    def _new(self, kind: str, name: str, help_: str, names: list[str], static: list[str]) -> Family:
        # the sample's name as prometheus-client writes it: counters end in _total
        sample = name if kind != "counter" else name.removesuffix("_total") + "_total"
        family = _Grouped(sample, names, static)
        self._groups.append(family)
        return family

    def groups(self) -> dict[tuple[tuple[str, str], ...], dict[str, float]]:
        """Sorted labels (``__name__`` not among them) -> {sample name: value}, in the order
        of :class:`MetricFamilies`' metrics and their samples."""
        grouped: dict[tuple[tuple[str, str], ...], dict[str, float]] = {}
        for family in self._groups:
            for key, value in family.items:
                grouped.setdefault(key, {})[family.sample] = value
        return grouped
