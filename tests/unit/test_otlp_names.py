"""A tick as hostmetrics-named OTLP points: records plus the providers' readings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from system_info_collector.model import Record
from system_info_collector.providers.cpu import USER_HZ, StatReading
from system_info_collector.providers.disk import Mount, MountState
from system_info_collector.providers.memory import MeminfoReading
from system_info_collector.sinks.otlp_names import METRICS, OTLP, RESOURCE, otlp_records

T = datetime(2026, 1, 1, tzinfo=UTC)
Key = tuple[str, frozenset[tuple[str, str]]]


@dataclass
class Reader:
    """A provider as the mapping sees it: a name and its last reading."""

    name: str
    reading: object

    def prime(self) -> None: ...

    def collect(self) -> list[object]:
        return []

    def close(self) -> None: ...


def points(
    records: list[Record], *readers: Reader, tags: dict[str, str] | None = None
) -> dict[Key, object]:
    out: dict[Key, object] = {}
    for r in otlp_records(records, readers, tags or {}):
        assert r.measurement == OTLP and r.ts == T and r.host == "h"
        attrs = frozenset((k, v) for k, v in r.tags.items() if not k.startswith(RESOURCE))
        for name, value in r.fields.items():
            assert (name, attrs) not in out
            out[name, attrs] = value
    return out


def test_cpu_time_from_the_ticks_per_cpu_and_state_no_total() -> None:
    ticks = (100, 5, 50, 1000, 7, 1, 2, 0, 0, 0)
    reading = StatReading({"cpu-total": ticks, "cpu3": ticks}, {"processes": 42})
    shares = {f"{s}_percent": 10.0 for s in ("user", "idle", "iowait", "irq")}
    got = points([Record("cpu", T, "h", {"cpu": "cpu3"}, shares)], Reader("cpu", reading))
    time_states = {dict(a)["state"]: v for (n, a), v in got.items() if n == "system.cpu.time"}
    assert time_states == {
        "user": 100 / USER_HZ,
        "nice": 5 / USER_HZ,
        "system": 50 / USER_HZ,
        "idle": 1000 / USER_HZ,
        "wait": 7 / USER_HZ,
        "interrupt": 1 / USER_HZ,
        "softirq": 2 / USER_HZ,
        "steal": 0.0,
    }
    assert all(dict(a)["cpu"] == "cpu3" for n, a in got if n.startswith("system.cpu."))
    util = {dict(a)["state"]: v for (n, a), v in got.items() if n == "system.cpu.utilization"}
    assert util == {"user": 0.1, "idle": 0.1, "wait": 0.1, "interrupt": 0.1}
    assert got["system.processes.created", frozenset()] == 42


def test_memory_states_as_hostmetrics_with_the_slab_lines() -> None:
    record = Record(
        "memory",
        T,
        "h",
        {},
        {
            "total_bytes": 1000,
            "free_bytes": 100,
            "buffers_bytes": 50,
            "cached_bytes": 300,
            "used_bytes": 400,
            "swap_total_bytes": 0,
        },
    )
    meminfo = MeminfoReading({"SReclaimable": 40, "SUnreclaim": 20}, frozenset())
    got = points([record], Reader("memory", meminfo))
    usage = {dict(a)["state"]: v for (n, a), v in got.items() if n == "system.memory.usage"}
    assert usage == {
        "used": 550,  # total - free - buffers - cached, as hostmetrics (gopsutil) counts it
        "free": 100,
        "buffered": 50,
        "cached": 300,
        "slab_reclaimable": 40,
        "slab_unreclaimable": 20,
    }
    assert got["system.memory.utilization", frozenset({("state", "used")})] == 0.55
    assert not [n for n, _ in got if n.startswith("system.paging")]  # no swap: no paging usage


def test_filesystem_mode_from_the_mount_table_and_unknown_without_it() -> None:
    fields = {"used_bytes": 60, "free_bytes": 40, "available_bytes": 30, "used_percent": 66.6}
    tags = {"mountpoint": "/srv", "device": "/dev/sdb1", "fstype": "xfs"}
    record = Record("disk", T, "h", tags, {**fields, "inodes_used": 5, "inodes_free": 95})
    mount = Mount("8:17", "/srv", "xfs", "/dev/sdb1", readonly=True)
    got = points([record], Reader("disk", [MountState(mount, error=False)]))
    base = {("device", "/dev/sdb1"), ("mode", "ro"), ("mountpoint", "/srv"), ("type", "xfs")}
    assert got["system.filesystem.usage", frozenset({*base, ("state", "reserved")})] == 10
    assert got["system.filesystem.usage", frozenset({*base, ("state", "free")})] == 30
    assert got["system.filesystem.inodes.usage", frozenset({*base, ("state", "used")})] == 5
    bare = points([record])
    assert (
        "system.filesystem.usage",
        frozenset({*base - {("mode", "ro")}, ("mode", "unknown"), ("state", "used")}),
    ) in bare


def test_network_and_disk_by_device_and_direction() -> None:
    net = Record(
        "net",
        T,
        "h",
        {"interface": "eth0"},
        {
            "receive_bytes_total": 10,
            "transmit_bytes_total": 20,
            "receive_packets_total": 1,
            "transmit_packets_total": 2,
            "receive_errors_total": 0,
            "transmit_errors_total": 0,
            "receive_dropped_total": 3,
            "transmit_dropped_total": 0,
        },
    )
    disk = Record(
        "diskio", T, "h", {"device": "vda"}, {"read_bytes_total": 512, "io_time_seconds_total": 1.5}
    )
    diskstats = {
        "vda": {"reads_merged": 4, "writes_merged": 6, "io_weighted_ms": 2500, "io_now": 1}
    }
    got = points([net, disk], Reader("diskio", diskstats))
    eth0 = ("device", "eth0")
    assert got["system.network.io", frozenset({eth0, ("direction", "transmit")})] == 20
    assert got["system.network.dropped", frozenset({eth0, ("direction", "receive")})] == 3
    vda = ("device", "vda")
    assert got["system.disk.io", frozenset({vda, ("direction", "read")})] == 512
    assert got["system.disk.merged", frozenset({vda, ("direction", "write")})] == 6
    assert got["system.disk.weighted_io_time", frozenset({vda})] == 2.5
    assert got["system.disk.pending_operations", frozenset({vda})] == 1


def test_static_tags_are_resource_attributes_and_every_name_has_a_spec() -> None:
    record = Record("system", T, "h", {"env": "prod"}, {"load1": 0.5, "forks_total": 9})
    [one] = otlp_records([record], (), {"env": "prod"})
    assert one.tags == {RESOURCE + "env": "prod"}
    assert set(one.fields) == {"system.cpu.load_average.1m", "system.processes.created"}
    assert isinstance(one.fields["system.processes.created"], int)
    assert all(METRICS[name].unit for name in METRICS)
