"""Host metrics on ``/metrics``: the collectors' newest readings as Prometheus families.

The server never samples the host: every family is built from what the ticks already read —
the newest validated record of every entity (``Agent.latest``) and, for the counters a record
does not keep (CPU ticks, every meminfo line, every diskstats column, mount options), the
provider's last reading (its ``reading`` attribute).

How a measurement becomes families is **one mapping per measurement** in one of two modes
(``SIC_PROMETHEUS_HOST_METRICS``):

- ``node`` (default): node_exporter's names, labels, label values and units
  (:mod:`.node`); a measurement without a node mapping is served in ``sic`` form;
- ``sic``: the project's names, as counters and 0-1 ratios (:mod:`.sic`);
- ``off``: none.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from system_info_collector.config import HOST_METRICS_MODES as MODES
from system_info_collector.config import HostMetricsMode as Mode
from system_info_collector.exposition.families import Families, MetricFamilies, View
from system_info_collector.exposition.node import NODE
from system_info_collector.exposition.sic import SIC, sic_generic, sic_metric_name
from system_info_collector.model import Record

if TYPE_CHECKING:
    from system_info_collector.agent import Agent

STALE_TICKS = 3  # a record older than this many of its collector's intervals is not shown

Mapping_ = Callable[[View, Families], None]

__all__ = ["MODES", "HostMetricsCollector", "Mode", "View", "sic_metric_name"]


def mapping_for(mode: Mode, measurement: str) -> Mapping_:
    table: Mapping[str, Mapping_] = NODE if mode == "node" else SIC
    return table.get(measurement) or SIC.get(measurement) or sic_generic


class HostMetricsCollector:
    """A prometheus_client collector over an agent's newest readings.

    Measurements sampled less often than every tick (``SIC_<C>_INTERVAL``) keep their last
    records until they are older than three of their intervals.
    """

    def __init__(
        self, agent: Agent, mode: Mode = "node", clock: Callable[[], float] = time.time
    ) -> None:
        if mode not in ("node", "sic"):
            raise ValueError(f"host metrics mode {mode!r}: expected node or sic")
        self._agent = agent
        self._mode: Mode = mode
        self._clock = clock

    def describe(self) -> Iterable[Metric]:
        return ()  # names vary with the data; nothing to check at registration

    def _snapshot(self) -> dict[str, list[Record]]:
        latest = self._agent.latest  # replaced as a whole by the agent each tick
        now = self._clock()
        fresh = {}
        for name, recs in latest.items():
            limit = STALE_TICKS * self._agent.settings.collector_interval(name)
            alive = [r for r in recs if now - r.ts.timestamp() <= limit]
            if alive:
                fresh[name] = alive
        return fresh

    def collect(self) -> Iterator[Metric]:
        latest = self._snapshot()
        stamp = GaugeMetricFamily(
            "sic_host_sample_timestamp_seconds",
            "Scheduled Unix time of the latest sample of each measurement",
            labels=["measurement"],
        )
        for name, records in latest.items():
            stamp.add_metric([name], max(r.ts for r in records).timestamp())
        yield stamp
        providers = {p.name: p for p in self._agent.providers}
        out = MetricFamilies(self._agent.settings.tags)
        for name, records in latest.items():
            reading = getattr(providers.get(name), "reading", None)
            mapping_for(self._mode, name)(View(name, records, reading), out)
        yield from out.metrics()
