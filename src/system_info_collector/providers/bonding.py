"""Bonded network interfaces (Linux bonding driver) from the host's sysfs: one record per bond.

Read as node_exporter's ``bonding`` collector reads it: the bonds are listed in
``<sys>/class/net/bonding_masters``, each bond's members in ``<bond>/bonding/slaves``, and a
member counts as active when its ``lower_<member>/bonding_slave/mii_status`` (``slave_<member>``
on older kernels) says ``up``. node-mixin's ``NodeBondingDegraded`` fires when a bond has fewer
active members than configured ones.

No ``bonding_masters`` (the driver is not loaded, or no sysfs is mounted) means no bonds: no
record, not a failure (said once at start, INFO ``collector_source_missing``); the file is
looked for again every tick.
"""

from __future__ import annotations

import os

from system_info_collector.collector import Collector, Measurement, NoSettings, Rules, count
from system_info_collector.errors import ProviderError
from system_info_collector.hostpaths import HostPaths
from system_info_collector.model import Sample
from system_info_collector.providers._counters import say_missing
from system_info_collector.providers._read import read_text

MEASUREMENT = Measurement(
    name="bonding",
    entity=("master",),
    labels=(),
    fields=(
        count("slaves", "members configured in the bond (bonding/slaves)"),
        count("active", "members whose MII status is up; fewer than slaves: degraded"),
    ),
    help="bonded network interfaces (<sys>/class/net/bonding_masters)",
)


def read_bonds(net: str) -> dict[str, tuple[int, int]] | None:
    """``{bond: (members, active members)}`` under ``net`` (``<sys>/class/net``); None when
    there is no ``bonding_masters`` file. ProviderError names what cannot be read."""
    try:
        masters = read_text(os.path.join(net, "bonding_masters")).split()
    except ProviderError as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            return None  # no bonding driver (or no host sysfs)
        raise
    bonds = {}
    for master in masters:
        members = read_text(os.path.join(net, master, "bonding", "slaves")).split()
        active = 0
        for member in members:
            state = os.path.join(net, master, f"lower_{member}", "bonding_slave", "mii_status")
            if not os.path.exists(state):  # older kernels
                state = os.path.join(net, master, f"slave_{member}", "bonding_slave", "mii_status")
            active += read_text(state).strip() == "up"
        bonds[master] = (len(members), active)
    return bonds


class BondingProvider:
    name = "bonding"

    def __init__(self, paths: HostPaths) -> None:
        self._net = paths.sys_path("class", "net")

    def prime(self) -> None:
        if read_bonds(self._net) is None:
            say_missing(
                "bonding",
                os.path.join(self._net, "bonding_masters"),
                "no bonding driver loaded (or no host sysfs mounted)",
                "no bonded interfaces to report (looked for again every tick)",
            )

    def collect(self) -> list[Sample]:
        bonds = read_bonds(self._net) or {}
        return [
            Sample({"master": master}, {"slaves": members, "active": active})
            for master, (members, active) in bonds.items()
        ]

    def close(self) -> None:
        pass


def _probe(paths: HostPaths, settings: NoSettings) -> str:
    net = paths.sys_path("class", "net")
    bonds = read_bonds(net)
    if bonds is None:
        return f"{net}/bonding_masters absent: no bonded interfaces"
    degraded = [m for m, (members, active) in bonds.items() if active < members]
    return f"{net}/bonding_masters readable, {len(bonds)} bonds, {len(degraded)} degraded"


COLLECTOR = Collector(
    measurement=MEASUREMENT,
    settings=NoSettings,
    factory=lambda paths, settings, clock: BondingProvider(paths),
    probe=("sys bonding", _probe),
    rules=Rules(not_above=(("active", "slaves"),)),
)
