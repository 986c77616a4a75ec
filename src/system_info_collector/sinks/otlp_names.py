"""A tick as OpenTelemetry points, named as the OpenTelemetry Collector's ``hostmetrics``
receiver names them (its ``metadata.yaml`` per scraper: cpu, load, memory, paging, filesystem,
disk, network, processes, pressure).

As for remote write (:mod:`~system_info_collector.sinks.series`), the mapping runs **at tick
time** in the sampling thread (:func:`otlp_records`), over the tick's records and the readings
the providers just took -- ``system.cpu.time`` needs the CPU ticks, the memory slab states
every meminfo line, the filesystem ``mode`` the mount options, the disk ``merged`` and
``weighted_io_time`` every diskstats column -- and what it returns is what the sink's buffer
(the write-ahead spool by default) holds: records of the pseudo-measurement :data:`OTLP`, one
per attribute set, tags = the point attributes plus the resource attributes (the ``SIC_TAGS``,
prefixed :data:`RESOURCE`), fields = ``{metric name: value}``. :data:`METRICS` gives each name
its unit, kind and value type. docs/push.md has the table and what differs from hostmetrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal, NamedTuple

from system_info_collector.collector import Provider
from system_info_collector.exposition.families import View
from system_info_collector.model import FieldValue, Record
from system_info_collector.providers.cpu import CPU_STATES, USER_HZ, StatReading
from system_info_collector.providers.disk import MountState
from system_info_collector.providers.memory import MeminfoReading
from system_info_collector.sinks.series import tick_views

Kind = Literal["gauge", "sum", "counter"]  # counter = monotonic sum; every sum is cumulative
OTLP = "@otlp"  # the measurement of a record that holds OTLP points (never a schema name)
RESOURCE = "@"  # prefix of a record tag that is a resource attribute


class Metric(NamedTuple):
    unit: str
    kind: Kind
    integer: bool  # sent as_int (hostmetrics' value_type int), else as_double


def _m(unit: str, kind: Kind, integer: bool = True) -> Metric:
    return Metric(unit, kind, integer)


METRICS: Mapping[str, Metric] = {
    "system.cpu.time": _m("s", "counter", False),
    "system.cpu.utilization": _m("1", "gauge", False),
    "system.cpu.load_average.1m": _m("{thread}", "gauge", False),
    "system.cpu.load_average.5m": _m("{thread}", "gauge", False),
    "system.cpu.load_average.15m": _m("{thread}", "gauge", False),
    "system.memory.usage": _m("By", "sum"),
    "system.memory.utilization": _m("1", "gauge", False),
    "system.paging.usage": _m("By", "sum"),
    "system.paging.utilization": _m("1", "gauge", False),
    "system.paging.operations": _m("{operations}", "counter"),
    "system.paging.faults": _m("{faults}", "counter"),
    "system.filesystem.usage": _m("By", "sum"),
    "system.filesystem.inodes.usage": _m("{inodes}", "sum"),
    "system.filesystem.utilization": _m("1", "gauge", False),
    "system.disk.io": _m("By", "counter"),
    "system.disk.operations": _m("{operations}", "counter"),
    "system.disk.io_time": _m("s", "counter", False),
    "system.disk.operation_time": _m("s", "counter", False),
    "system.disk.weighted_io_time": _m("s", "counter", False),
    "system.disk.merged": _m("{operations}", "counter"),
    "system.disk.pending_operations": _m("{operations}", "sum"),
    "system.network.io": _m("By", "counter"),
    "system.network.packets": _m("{packets}", "counter"),
    "system.network.errors": _m("{errors}", "counter"),
    "system.network.dropped": _m("{packets}", "counter"),
    "system.network.conntrack.count": _m("{entries}", "sum"),
    "system.network.conntrack.max": _m("{entries}", "sum"),
    "system.processes.count": _m("{processes}", "sum"),
    "system.processes.created": _m("{processes}", "counter"),
    **{
        f"system.{resource}.linux.pressure.{window}": _m("1", "gauge", False)
        for resource in ("cpu", "io", "memory")
        for window in ("10s", "1m", "5m")
    },
    **{
        f"system.{resource}.linux.pressure.total": _m("s", "counter", False)
        for resource in ("cpu", "io", "memory")
    },
}

Attrs = tuple[tuple[str, str], ...]


class Points:
    """The points of one tick, by attribute set; a second value for the same metric and
    attributes is ignored (the cpu and system collectors both read /proc/stat)."""

    def __init__(self) -> None:
        self.by_attrs: dict[Attrs, dict[str, FieldValue]] = {}

    def add(self, name: str, attrs: Attrs, value: FieldValue | None) -> None:
        if value is None:
            return
        number = int(value) if METRICS[name].integer else float(value)
        self.by_attrs.setdefault(attrs, {}).setdefault(name, number)


# hostmetrics' cpu states, in /proc/stat's column order (CPU_STATES)
CPU_STATE_NAMES = ("user", "nice", "system", "idle", "wait", "interrupt", "softirq", "steal")


def _cpu(view: View, out: Points) -> None:
    reading = view.reading
    if isinstance(reading, StatReading):
        for cpu, ticks in reading.cpus.items():
            if cpu == "cpu-total":  # hostmetrics reports per CPU only
                continue
            for state, tick_count in zip(CPU_STATE_NAMES, ticks, strict=False):
                attrs = (("cpu", cpu), ("state", state))
                out.add("system.cpu.time", attrs, tick_count / USER_HZ)
        kernel = reading.kernel
        out.add("system.processes.created", (), kernel.get("processes"))
        out.add("system.processes.count", (("status", "running"),), kernel.get("procs_running"))
        out.add("system.processes.count", (("status", "blocked"),), kernel.get("procs_blocked"))
    for record in view.records:
        cpu = record.tags.get("cpu", "")
        if cpu == "cpu-total":
            continue
        for ours, state in zip(CPU_STATES, CPU_STATE_NAMES, strict=True):
            value = record.fields.get(f"{ours}_percent")
            if value is not None:
                attrs = (("cpu", cpu), ("state", state))
                out.add("system.cpu.utilization", attrs, value / 100)


def _system(view: View, out: Points) -> None:
    for record in view.records:
        f = record.fields
        for window, field in (("1m", "load1"), ("5m", "load5"), ("15m", "load15")):
            out.add(f"system.cpu.load_average.{window}", (), f.get(field))
        out.add("system.processes.created", (), f.get("forks_total"))
        out.add("system.processes.count", (("status", "running"),), f.get("procs_running"))
        out.add("system.processes.count", (("status", "blocked"),), f.get("procs_blocked"))


def _memory(view: View, out: Points) -> None:
    meminfo = view.reading.values if isinstance(view.reading, MeminfoReading) else {}
    for record in view.records:
        f = record.fields
        total, free = f.get("total_bytes"), f.get("free_bytes")
        buffers, cached = f.get("buffers_bytes"), f.get("cached_bytes")
        states: dict[str, FieldValue | None] = {"free": free, "buffered": buffers}
        if total is not None and free is not None and buffers is not None and cached is not None:
            # hostmetrics' (gopsutil's) used: what is neither free nor buffers/page cache
            states["used"] = max(0, total - free - buffers - cached)
        states["cached"] = cached  # Cached + SReclaimable, as gopsutil counts it
        states["slab_reclaimable"] = meminfo.get("SReclaimable")
        states["slab_unreclaimable"] = meminfo.get("SUnreclaim")
        for state, value in states.items():
            attrs = (("state", state),)
            out.add("system.memory.usage", attrs, value)
            if total and value is not None:
                out.add("system.memory.utilization", attrs, value / total)
        swap_total = f.get("swap_total_bytes")
        if swap_total:
            for state in ("used", "free"):
                value = f.get(f"swap_{state}_bytes")
                attrs = (("state", state),)
                out.add("system.paging.usage", attrs, value)
                if value is not None:
                    out.add("system.paging.utilization", attrs, value / swap_total)


def _vmstat(view: View, out: Points) -> None:
    for record in view.records:
        f = record.fields
        out.add("system.paging.faults", (("type", "major"),), f.get("major_page_faults_total"))
        out.add("system.paging.faults", (("type", "minor"),), f.get("minor_page_faults_total"))
        for direction, swapped, paged in (
            ("page_in", "swapped_in_pages_total", "paged_in_bytes_total"),
            ("page_out", "swapped_out_pages_total", "paged_out_bytes_total"),
        ):
            major = (("direction", direction), ("type", "major"))
            minor = (("direction", direction), ("type", "minor"))
            out.add("system.paging.operations", major, f.get(swapped))  # pswpin/pswpout
            value = f.get(paged)  # bytes of pgpgin/pgpgout, which the kernel counts in KiB
            out.add("system.paging.operations", minor, None if value is None else value // 1024)


def _filesystem(view: View, out: Points) -> None:
    modes: dict[str, str] = {}
    if isinstance(view.reading, list):
        modes = {
            s.mount.mountpoint: "ro" if s.mount.readonly else "rw"
            for s in view.reading
            if isinstance(s, MountState)
        }
    for record in view.records:
        f, t = record.fields, record.tags
        mountpoint = t.get("mountpoint", "")
        base = (
            ("device", t.get("device", "")),
            ("mode", modes.get(mountpoint, "unknown")),  # hostmetrics' value without rw/ro
            ("mountpoint", mountpoint),
            ("type", t.get("fstype", "")),
        )
        used, free, avail = f.get("used_bytes"), f.get("free_bytes"), f.get("available_bytes")
        out.add("system.filesystem.usage", (*base, ("state", "used")), used)
        out.add("system.filesystem.usage", (*base, ("state", "free")), avail)
        if free is not None and avail is not None:
            out.add("system.filesystem.usage", (*base, ("state", "reserved")), max(0, free - avail))
        for state in ("used", "free"):
            attrs = (*base, ("state", state))
            out.add("system.filesystem.inodes.usage", attrs, f.get(f"inodes_{state}"))
        percent = f.get("used_percent")
        if percent is not None:
            out.add("system.filesystem.utilization", base, percent / 100)


# diskstats columns of the provider's reading that records do not keep
_DISK_READING = (
    ("system.disk.merged", "reads_merged", "read", 1),
    ("system.disk.merged", "writes_merged", "write", 1),
    ("system.disk.weighted_io_time", "io_weighted_ms", None, 1000),
    ("system.disk.pending_operations", "io_now", None, 1),
)


def _disk(view: View, out: Points) -> None:
    reading = view.reading if isinstance(view.reading, dict) else {}
    for record in view.records:
        f = record.fields
        device = record.tags.get("device", "")
        dev = (("device", device),)
        for name, read, write in (
            ("system.disk.io", "read_bytes_total", "written_bytes_total"),
            ("system.disk.operations", "reads_total", "writes_total"),
            ("system.disk.operation_time", "read_time_seconds_total", "write_time_seconds_total"),
        ):
            out.add(name, (*dev, ("direction", "read")), f.get(read))
            out.add(name, (*dev, ("direction", "write")), f.get(write))
        out.add("system.disk.io_time", dev, f.get("io_time_seconds_total"))
        columns = reading.get(device) or {}
        for name, column, direction, divisor in _DISK_READING:
            value = columns.get(column)
            if value is not None:
                attrs = dev if direction is None else (*dev, ("direction", direction))
                out.add(name, attrs, value / divisor)


def _network(view: View, out: Points) -> None:
    for record in view.records:
        f = record.fields
        device = (("device", record.tags.get("interface", "")),)
        for name, field in (
            ("system.network.io", "bytes"),
            ("system.network.packets", "packets"),
            ("system.network.errors", "errors"),
            ("system.network.dropped", "dropped"),
        ):
            for direction in ("receive", "transmit"):
                attrs = (*device, ("direction", direction))
                out.add(name, attrs, f.get(f"{direction}_{field}_total"))


def _sockets(view: View, out: Points) -> None:
    for record in view.records:
        if record.fields.get("conntrack_max"):  # 0: no nf_conntrack module
            out.add("system.network.conntrack.count", (), record.fields.get("conntrack_entries"))
            out.add("system.network.conntrack.max", (), record.fields["conntrack_max"])


def _pressure(view: View, out: Points) -> None:
    for record in view.records:
        resource = record.tags.get("resource", "")
        if resource not in ("cpu", "io", "memory"):
            continue
        for kind in ("some", "full"):
            attrs = (("system.pressure.stall_type", kind),)
            f = record.fields
            total = f.get(f"{kind}_stall_seconds_total")
            out.add(f"system.{resource}.linux.pressure.total", attrs, total)
            for window, field in (("10s", "avg10"), ("1m", "avg60"), ("5m", "avg300")):
                percent = f.get(f"{kind}_{field}_percent")
                if percent is not None:
                    out.add(f"system.{resource}.linux.pressure.{window}", attrs, percent / 100)


MAPPERS: Mapping[str, Callable[[View, Points], None]] = {
    "cpu": _cpu,
    "system": _system,
    "memory": _memory,
    "vmstat": _vmstat,
    "disk": _filesystem,
    "diskio": _disk,
    "net": _network,
    "sockets": _sockets,
    "pressure": _pressure,
}


def otlp_records(
    records: Sequence[Record], providers: Iterable[Provider], tags: Mapping[str, str]
) -> list[Record]:
    """The tick's hostmetrics points as :data:`OTLP` records (module docstring)."""
    if not records:
        return []
    out = Points()
    for view in tick_views(records, providers):
        mapper = MAPPERS.get(view.measurement)
        if mapper is not None:
            mapper(view, out)
    resource = {RESOURCE + k: v for k, v in tags.items()}
    ts, host = records[0].ts, records[0].host
    return [
        Record(OTLP, ts, host, {**dict(attrs), **resource}, fields)
        for attrs, fields in out.by_attrs.items()
    ]
