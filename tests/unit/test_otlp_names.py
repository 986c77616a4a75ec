"""Records as hostmetrics-named OTLP points."""

from __future__ import annotations

from datetime import UTC, datetime

from system_info_collector.model import Record
from system_info_collector.sinks.otlp_names import otlp_points

T = datetime(2026, 1, 1, tzinfo=UTC)


def points(record: Record) -> dict[tuple[str, frozenset[tuple[str, str]]], tuple[str, object]]:
    return {(p.name, frozenset(p.attributes)): (p.kind, p.value) for p in otlp_points(record)}


def test_cpu_states_as_hostmetrics_and_no_total() -> None:
    fields = {
        f"{s}_percent": 10.0
        for s in ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    }
    got = points(Record("cpu", T, "h", {"cpu": "cpu3"}, {**fields, "usage_percent": 80.0}))
    states = {dict(attrs)["state"] for _, attrs in got}
    assert states == {"user", "nice", "system", "idle", "wait", "interrupt", "softirq", "steal"}
    assert set(got.values()) == {("gauge", 0.1)}
    assert not points(Record("cpu", T, "h", {"cpu": "cpu-total"}, fields))


def test_filesystem_reserved_is_free_minus_available_and_no_swap_without_swap() -> None:
    disk = Record(
        "disk",
        T,
        "h",
        {"mountpoint": "/", "device": "/dev/sda1", "fstype": "ext4"},
        {
            "used_bytes": 60,
            "free_bytes": 40,
            "available_bytes": 30,
            "used_percent": 66.6,
            "inodes_used": 5,
            "inodes_free": 95,
        },
    )
    got = points(disk)
    base = {("device", "/dev/sda1"), ("mountpoint", "/"), ("type", "ext4")}
    assert got["system.filesystem.usage", frozenset({*base, ("state", "reserved")})] == ("sum", 10)
    assert got["system.filesystem.usage", frozenset({*base, ("state", "free")})] == ("sum", 30)
    assert got["system.filesystem.inodes.usage", frozenset({*base, ("state", "used")})] == (
        "sum",
        5,
    )
    memory = Record(
        "memory",
        T,
        "h",
        {},
        {"total_bytes": 100, "used_bytes": 25, "swap_total_bytes": 0, "swap_used_bytes": 0},
    )
    names = {name for name, _ in points(memory)}
    assert names == {"system.memory.usage", "system.memory.utilization"}
    assert points(memory)["system.memory.utilization", frozenset({("state", "used")})] == (
        "gauge",
        0.25,
    )


def test_disk_counters_are_monotonic_sums_by_direction() -> None:
    got = points(
        Record(
            "diskio",
            T,
            "h",
            {"device": "sda"},
            {
                "read_bytes_total": 512,
                "written_bytes_total": 1024,
                "reads_total": 1,
                "writes_total": 2,
                "io_time_seconds_total": 0.5,
                "read_bytes_per_second": 9.0,
            },
        )
    )
    assert got["system.disk.io", frozenset({("device", "sda"), ("direction", "write")})] == (
        "counter",
        1024,
    )
    assert got["system.disk.io_time", frozenset({("device", "sda")})] == ("counter", 0.5)
    assert all(kind == "counter" for kind, _ in got.values())


def test_a_measurement_without_a_mapping_sends_nothing() -> None:
    assert not list(otlp_points(Record("netdev", T, "h", {"device": "eth0"}, {"rx_bytes": 1})))
