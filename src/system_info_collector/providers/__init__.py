"""The collector registry: one line per collector, in the order records are written.

Each collector module declares itself once (``COLLECTOR``: measurement, settings, rules,
provider factory, host check; see :mod:`system_info_collector.collector`). Adding a collector is
a module, one line here and a fixture scenario under ``tests/fixtures/proc/``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from system_info_collector.collector import Clock, Collector, Provider
from system_info_collector.providers import (
    bonding,
    cpu,
    disk,
    diskio,
    filefd,
    md,
    memory,
    net,
    netstat,
    pressure,
    sockets,
    system,
    timex,
    vmstat,
)

if TYPE_CHECKING:
    from system_info_collector.config import Settings

__all__ = ["COLLECTORS", "Provider", "build_providers"]

COLLECTORS: Mapping[str, Collector[Any]] = {
    "cpu": cpu.COLLECTOR,
    "memory": memory.COLLECTOR,
    "disk": disk.COLLECTOR,
    "diskio": diskio.COLLECTOR,
    "net": net.COLLECTOR,
    "system": system.COLLECTOR,
    "pressure": pressure.COLLECTOR,
    "vmstat": vmstat.COLLECTOR,
    "filefd": filefd.COLLECTOR,
    "md": md.COLLECTOR,
    "timex": timex.COLLECTOR,
    "bonding": bonding.COLLECTOR,
    "sockets": sockets.COLLECTOR,
    "netstat": netstat.COLLECTOR,
}


def build_providers(settings: Settings, clock: Clock = time.monotonic) -> list[Provider]:
    return [
        COLLECTORS[name].build(settings.host_paths, settings.collector(name), clock)
        for name in settings.collectors
    ]
