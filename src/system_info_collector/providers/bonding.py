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


def _read(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as handle:
        return handle.read()


def read_bonds(net: str) -> dict[str, tuple[int, int]] | None:
    """``{bond: (members, active members)}`` under ``net`` (``<sys>/class/net``); None when
    there is no ``bonding_masters`` file. ProviderError names what cannot be read."""
    try:
        masters = _read(os.path.join(net, "bonding_masters")).split()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ProviderError(f"cannot read {net}/bonding_masters: {exc.strerror or exc}") from exc
    bonds = {}
    for master in masters:
        path = os.path.join(net, master, "bonding", "slaves")
        try:
            members = _read(path).split()
            active = 0
            for member in members:
                state = os.path.join(net, master, f"lower_{member}", "bonding_slave", "mii_status")
                if not os.path.exists(state):  # older kernels
                    state = os.path.join(
                        net, master, f"slave_{member}", "bonding_slave", "mii_status"
                    )
                path = state
                active += _read(state).strip() == "up"
        except OSError as exc:
            raise ProviderError(f"cannot read {path}: {exc.strerror or exc}") from exc
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
