"""node_exporter 1.5's names, labels, label values and units, one mapping per measurement.

Each mapping reads one :class:`~.families.View` (the measurement's fresh records and its
provider's last reading) and fills the families node_exporter's collector of the same data
would expose. Differences that remain are listed in docs/operations.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from system_info_collector.exposition.families import Families, View
from system_info_collector.providers.cpu import COLUMNS, USER_HZ, StatReading
from system_info_collector.providers.disk import MountState
from system_info_collector.providers.diskio import SECTOR_BYTES
from system_info_collector.providers.memory import MeminfoReading
from system_info_collector.providers.netstat import FIELDS as NETSTAT_FIELDS

_CPU_MODES = COLUMNS[:8]  # user … steal; guest and guest_nice have a family of their own


def _cpu_order(name: str) -> tuple[int, str]:
    number = name[3:]
    return (int(number), "") if number.isdigit() else (1 << 30, name)


def node_cpu(view: View, out: Families) -> None:
    """node_exporter's ``cpu`` and ``stat`` collectors: both read /proc/stat."""
    reading = view.reading
    if not isinstance(reading, StatReading):
        return
    seconds = out.counter(
        "node_cpu_seconds_total", "Seconds the CPUs spent in each mode.", ["cpu", "mode"]
    )
    guest = out.counter(
        "node_cpu_guest_seconds_total",
        "Seconds the CPUs spent in guests (VMs) for each mode.",
        ["cpu", "mode"],
    )
    for name in sorted(reading.cpus, key=_cpu_order):
        if name == "cpu-total":  # node_exporter has no total series: sum() the CPUs
            continue
        ticks = reading.cpus[name]
        cpu = name[3:]  # "cpu0" -> "0"
        for mode, value in zip(_CPU_MODES, ticks, strict=False):
            seconds.add([cpu, mode], value / USER_HZ)
        guest.add([cpu, "user"], ticks[8] / USER_HZ)
        guest.add([cpu, "nice"], ticks[9] / USER_HZ)
    kernel = reading.kernel
    for key, kind, name, help_ in _STAT:
        if key in kernel:
            out.of_kind(kind, name, help_).add([], kernel[key])


_STAT = (
    ("btime", "gauge", "node_boot_time_seconds", "Node boot time, in unixtime."),
    ("ctxt", "counter", "node_context_switches_total", "Total number of context switches."),
    ("intr", "counter", "node_intr_total", "Total number of interrupts serviced."),
    ("processes", "counter", "node_forks_total", "Total number of forks."),
    ("procs_running", "gauge", "node_procs_running", "Number of processes in runnable state."),
    (
        "procs_blocked",
        "gauge",
        "node_procs_blocked",
        "Number of processes blocked waiting for I/O to complete.",
    ),
)


def meminfo_metric_name(key: str, unitless: bool) -> str:
    """``Active(anon)`` -> ``node_memory_Active_anon_bytes`` (node_exporter's meminfo names)."""
    name = key.replace("(", "_").replace(")", "")
    return f"node_memory_{name}" if unitless else f"node_memory_{name}_bytes"


def node_memory(view: View, out: Families) -> None:
    """node_exporter's ``meminfo`` collector: every line of /proc/meminfo."""
    reading = view.reading
    if not isinstance(reading, MeminfoReading):
        return
    for key, value in reading.values.items():
        name = meminfo_metric_name(key, key in reading.unitless)
        out.gauge(name, f"Memory information field {name[len('node_memory_') :]}.").add([], value)


_FS_LABELS = ("device", "fstype", "mountpoint")
_FS_VALUES = (
    ("node_filesystem_size_bytes", "Filesystem size in bytes.", "total_bytes"),
    ("node_filesystem_free_bytes", "Filesystem free space in bytes.", "free_bytes"),
    (
        "node_filesystem_avail_bytes",
        "Filesystem space available to non-root users in bytes.",
        "available_bytes",
    ),
    ("node_filesystem_files", "Filesystem total file nodes.", "inodes_total"),
    ("node_filesystem_files_free", "Filesystem total free file nodes.", "inodes_free"),
)


def node_filesystem(view: View, out: Families) -> None:
    """node_exporter's ``filesystem`` collector, from the disk records and the mount table."""
    states: dict[str, MountState] = {}
    if isinstance(view.reading, list):
        states = {s.mount.mountpoint: s for s in view.reading if isinstance(s, MountState)}
    error = out.gauge(
        "node_filesystem_device_error",
        "Whether an error occurred while getting statistics for the given device.",
        _FS_LABELS,
    )
    readonly = out.gauge("node_filesystem_readonly", "Filesystem read-only status.", _FS_LABELS)
    values = [(out.gauge(name, help_, _FS_LABELS), field) for name, help_, field in _FS_VALUES]
    for state in states.values():
        if state.error:  # as node_exporter: the error and read-only flags, no sizes
            labels = [state.mount.source, state.mount.fstype, state.mount.mountpoint]
            error.add(labels, 1)
            readonly.add(labels, state.mount.readonly)
    for record in view.records:
        known = states.get(record.tags.get("mountpoint", ""))
        if known is not None and known.error:
            continue
        labels = [record.tags.get(k, "") for k in _FS_LABELS]
        error.add(labels, 0)
        readonly.add(labels, known.mount.readonly if known is not None else 0)
        for family, field in values:
            value = record.fields.get(field)
            if value is not None:
                family.add(labels, value)


def _ms(value: int) -> float:
    return value / 1000.0


def _sectors(value: int) -> float:
    return float(value * SECTOR_BYTES)


def _same(value: int) -> float:
    return float(value)


# (diskstats column, kind, name, help, unit conversion), in node_exporter's order
_DISK: tuple[tuple[str, str, str, str, Callable[[int], float]], ...] = (
    (
        "reads",
        "counter",
        "reads_completed_total",
        "The total number of reads completed successfully.",
        _same,
    ),
    ("reads_merged", "counter", "reads_merged_total", "The total number of reads merged.", _same),
    (
        "read_sectors",
        "counter",
        "read_bytes_total",
        "The total number of bytes read successfully.",
        _sectors,
    ),
    (
        "read_ms",
        "counter",
        "read_time_seconds_total",
        "The total number of seconds spent by all reads.",
        _ms,
    ),
    (
        "writes",
        "counter",
        "writes_completed_total",
        "The total number of writes completed successfully.",
        _same,
    ),
    ("writes_merged", "counter", "writes_merged_total", "The number of writes merged.", _same),
    (
        "write_sectors",
        "counter",
        "written_bytes_total",
        "The total number of bytes written successfully.",
        _sectors,
    ),
    (
        "write_ms",
        "counter",
        "write_time_seconds_total",
        "This is the total number of seconds spent by all writes.",
        _ms,
    ),
    ("io_now", "gauge", "io_now", "The number of I/Os currently in progress.", _same),
    ("io_ms", "counter", "io_time_seconds_total", "Total seconds spent doing I/Os.", _ms),
    (
        "io_weighted_ms",
        "counter",
        "io_time_weighted_seconds_total",
        "The weighted # of seconds spent doing I/Os.",
        _ms,
    ),
    (
        "discards",
        "counter",
        "discards_completed_total",
        "The total number of discards completed successfully.",
        _same,
    ),
    (
        "discards_merged",
        "counter",
        "discards_merged_total",
        "The total number of discards merged.",
        _same,
    ),
    (
        "discard_sectors",
        "counter",
        "discarded_sectors_total",
        "The total number of sectors discarded successfully.",
        _same,
    ),
    (
        "discard_ms",
        "counter",
        "discard_time_seconds_total",
        "This is the total number of seconds spent by all discards.",
        _ms,
    ),
    (
        "flushes",
        "counter",
        "flush_requests_total",
        "The total number of flush requests completed successfully",
        _same,
    ),
    (
        "flush_ms",
        "counter",
        "flush_requests_time_seconds_total",
        "This is the total number of seconds spent by all flush requests.",
        _ms,
    ),
)


def node_disk(view: View, out: Families) -> None:
    """node_exporter's ``diskstats`` collector: every column of /proc/diskstats."""
    reading = view.reading
    if not isinstance(reading, dict):
        return
    # Every device of the last reading, also one whose counters went back (re-created: the
    # provider has no rates for it this time, but Prometheus' rate() handles the reset).
    devices = sorted(reading) if view.records else []
    for column, kind, name, help_, convert in _DISK:
        full = f"node_disk_{name}"
        for device in devices:
            value = reading[device].get(column)
            if value is None:
                continue  # a column older kernels do not have (discards < 4.18, flush < 5.5)
            out.of_kind(kind, full, help_, ["device"]).add([device], convert(value))


# -- collectors whose records already hold node_exporter's numbers ---------------------------
@dataclass(frozen=True, slots=True)
class FromField:
    """One record field served as one node_exporter family."""

    field: str
    kind: str  # counter | gauge | untyped
    name: str
    help: str
    scale: float = 1.0
    skip_zero: bool = False  # 0 means "unknown" here; node_exporter serves no series then


def from_records(
    labels: Mapping[str, str], series: Sequence[FromField]
) -> Callable[[View, Families], None]:
    """A mapping serving record fields under node_exporter's names; ``labels`` maps our entity
    label names to node_exporter's (``{"interface": "device"}``)."""

    def mapping(view: View, out: Families) -> None:
        for spec in series:
            family = out.of_kind(spec.kind, spec.name, spec.help, list(labels.values()))
            for record in view.records:
                value = record.fields.get(spec.field)
                if value is None or (spec.skip_zero and value == 0):
                    continue
                family.add([record.tags.get(k, "") for k in labels], value * spec.scale)

    return mapping


_NET_RECEIVE = {
    "bytes": "bytes",
    "packets": "packets",
    "errors": "errs",
    "dropped": "drop",
    "fifo_errors": "fifo",
    "frame_errors": "frame",
    "compressed": "compressed",
    "multicast": "multicast",
}
_NET_TRANSMIT = {
    "bytes": "bytes",
    "packets": "packets",
    "errors": "errs",
    "dropped": "drop",
    "fifo_errors": "fifo",
    "collisions": "colls",
    "carrier_errors": "carrier",
    "compressed": "compressed",
}
node_network = from_records(
    {"interface": "device"},
    (
        *(
            FromField(
                f"{direction}_{ours}_total",
                "counter",
                f"node_network_{direction}_{theirs}_total",
                f"Network device statistic {direction}_{theirs}.",
            )
            for direction, names in (("receive", _NET_RECEIVE), ("transmit", _NET_TRANSMIT))
            for ours, theirs in names.items()
        ),
        FromField(
            "up", "gauge", "node_network_up", "Value is 1 if operstate is 'up', 0 otherwise."
        ),
        FromField(
            "mtu_bytes",
            "gauge",
            "node_network_mtu_bytes",
            "Network device property: mtu_bytes",
            skip_zero=True,
        ),
        FromField(
            "speed_bytes_per_second",
            "gauge",
            "node_network_speed_bytes",
            "Network device property: speed_bytes",
            skip_zero=True,
        ),
    ),
)

node_system = from_records(
    {},
    (
        FromField("load1", "gauge", "node_load1", "1m load average."),
        FromField("load5", "gauge", "node_load5", "5m load average."),
        FromField("load15", "gauge", "node_load15", "15m load average."),
        *(
            FromField(field, kind, name, help_)
            for field, kind, name, help_ in (
                ("boot_time_seconds", "gauge", *_STAT[0][2:]),
                ("context_switches_total", "counter", *_STAT[1][2:]),
                ("interrupts_total", "counter", *_STAT[2][2:]),
                ("forks_total", "counter", *_STAT[3][2:]),
                ("procs_running", "gauge", *_STAT[4][2:]),
                ("procs_blocked", "gauge", *_STAT[5][2:]),
            )
        ),
    ),
)

_VMSTAT = (
    ("page_faults_total", "pgfault", 1),
    ("major_page_faults_total", "pgmajfault", 1),
    ("paged_in_bytes_total", "pgpgin", 1 / 1024),  # node_exporter serves the raw KiB
    ("paged_out_bytes_total", "pgpgout", 1 / 1024),
    ("swapped_in_pages_total", "pswpin", 1),
    ("swapped_out_pages_total", "pswpout", 1),
    ("oom_kills_total", "oom_kill", 1),
)
node_vmstat = from_records(
    {},
    tuple(
        FromField(
            field, "untyped", f"node_vmstat_{key}", f"/proc/vmstat information field {key}.", scale
        )
        for field, key, scale in _VMSTAT
    ),
)

node_filefd = from_records(
    {},
    (
        FromField(
            "allocated", "gauge", "node_filefd_allocated", "File descriptor statistics: allocated."
        ),
        FromField(
            "maximum", "gauge", "node_filefd_maximum", "File descriptor statistics: maximum."
        ),
    ),
)

node_timex = from_records(
    {},
    tuple(
        FromField(field, kind, f"node_timex_{field}", help_)
        for field, kind, help_ in (
            ("offset_seconds", "gauge", "Time offset in between local system and reference clock."),
            ("frequency_adjustment_ratio", "gauge", "Local clock frequency adjustment."),
            ("maxerror_seconds", "gauge", "Maximum error in seconds."),
            ("estimated_error_seconds", "gauge", "Estimated error in seconds."),
            ("status", "gauge", "Value of the status array bits."),
            (
                "sync_status",
                "gauge",
                "Is clock synchronized to a reliable server (1 = yes, 0 = no).",
            ),
            ("loop_time_constant", "gauge", "Phase-locked loop time constant."),
            ("tick_seconds", "gauge", "Seconds between clock ticks."),
            ("tai_offset_seconds", "gauge", "International Atomic Time (TAI) offset."),
            ("pps_frequency_hertz", "gauge", "Pulse per second frequency."),
            ("pps_jitter_seconds", "gauge", "Pulse per second jitter."),
            ("pps_shift_seconds", "gauge", "Pulse per second interval duration."),
            (
                "pps_stability_hertz",
                "gauge",
                "Pulse per second stability, average of recent frequency changes.",
            ),
            (
                "pps_jitter_total",
                "counter",
                "Pulse per second count of jitter limit exceeded events.",
            ),
            (
                "pps_calibration_total",
                "counter",
                "Pulse per second count of calibration intervals.",
            ),
            ("pps_error_total", "counter", "Pulse per second count of calibration errors."),
            (
                "pps_stability_exceeded_total",
                "counter",
                "Pulse per second count of stability limit exceeded events.",
            ),
        )
    ),
)

node_bonding = from_records(
    {"master": "master"},
    (
        FromField(
            "slaves",
            "gauge",
            "node_bonding_slaves",
            "Number of configured slaves per bonding interface.",
        ),
        FromField(
            "active",
            "gauge",
            "node_bonding_active",
            "Number of active slaves per bonding interface.",
        ),
    ),
)

node_netstat = from_records(
    {},
    tuple(
        FromField(field, "untyped", f"node_netstat_{proto}_{key}", f"Statistic {proto}{key}.")
        for (proto, key), field in NETSTAT_FIELDS.items()
    ),
)

_PAGE = os.sysconf("SC_PAGE_SIZE")
_SOCKSTAT = (
    ("tcp_in_use", "TCP", "inuse", 1),
    ("tcp_orphans", "TCP", "orphan", 1),
    ("tcp_time_wait", "TCP", "tw", 1),
    ("tcp_allocated", "TCP", "alloc", 1),
    ("tcp_memory_pages", "TCP", "mem", 1),
    ("tcp_memory_pages", "TCP", "mem_bytes", _PAGE),
    ("udp_in_use", "UDP", "inuse", 1),
    ("udp_memory_pages", "UDP", "mem", 1),
    ("udp_memory_pages", "UDP", "mem_bytes", _PAGE),
    ("tcp6_in_use", "TCP6", "inuse", 1),
    ("udp6_in_use", "UDP6", "inuse", 1),
)
_sockstat = from_records(
    {},
    (
        FromField(
            "sockets_used", "gauge", "node_sockstat_sockets_used", "Number of IPv4 sockets in use."
        ),
        *(
            FromField(
                field,
                "gauge",
                f"node_sockstat_{proto}_{state}",
                f"Number of {proto} sockets in state {state}.",
                scale,
            )
            for field, proto, state, scale in _SOCKSTAT
        ),
    ),
)


def node_sockets(view: View, out: Families) -> None:
    """node_exporter's ``sockstat`` and ``conntrack`` collectors. Without the nf_conntrack module
    the collector reads 0 for both conntrack fields: then, as node_exporter, no series."""
    _sockstat(view, out)
    entries = out.gauge(
        "node_nf_conntrack_entries",
        "Number of currently allocated flow entries for connection tracking.",
    )
    limit = out.gauge(
        "node_nf_conntrack_entries_limit", "Maximum size of connection tracking table."
    )
    for record in view.records:
        if record.fields.get("conntrack_max"):
            entries.add([], record.fields.get("conntrack_entries", 0))
            limit.add([], record.fields["conntrack_max"])


# (resource, some|full) -> node_exporter's family; it serves no cpu "full" line
_PRESSURE = {
    ("cpu", "some"): (
        "node_pressure_cpu_waiting_seconds_total",
        "Total time in seconds that processes have waited for CPU time",
    ),
    ("io", "some"): (
        "node_pressure_io_waiting_seconds_total",
        "Total time in seconds that processes have waited due to IO congestion",
    ),
    ("io", "full"): (
        "node_pressure_io_stalled_seconds_total",
        "Total time in seconds no process could make progress due to IO congestion",
    ),
    ("memory", "some"): (
        "node_pressure_memory_waiting_seconds_total",
        "Total time in seconds that processes have waited for memory",
    ),
    ("memory", "full"): (
        "node_pressure_memory_stalled_seconds_total",
        "Total time in seconds no process could make progress due to memory congestion",
    ),
}


def node_pressure(view: View, out: Families) -> None:
    """node_exporter's ``pressure`` collector: the stall counters of <proc>/pressure/*."""
    for record in view.records:
        resource = record.tags.get("resource", "")
        for kind in ("some", "full"):
            spec = _PRESSURE.get((resource, kind))
            value = record.fields.get(f"{kind}_stall_seconds_total")
            if spec is not None and value is not None:
                out.counter(*spec).add([], value)


_MD_STATES = ("active", "inactive", "recovering", "resync", "check")


def node_md(view: View, out: Families) -> None:
    """node_exporter's ``mdadm`` collector: one series per array (and state) of <proc>/mdstat."""
    if not view.records:
        return
    state = out.gauge("node_md_state", "Indicates the state of md-device.", ["device", "state"])
    disks = out.gauge(
        "node_md_disks", "Number of active/failed/spare disks of device.", ["device", "state"]
    )
    required = out.gauge("node_md_disks_required", "Total number of disks of device.", ["device"])
    blocks = out.gauge("node_md_blocks", "Total number of blocks on device.", ["device"])
    synced = out.gauge("node_md_blocks_synced", "Number of blocks synced on device.", ["device"])
    for record in view.records:
        device, fields = record.tags.get("device", ""), record.fields
        for name in _MD_STATES:
            state.add([device, name], 1.0 if record.tags.get("state") == name else 0.0)
        for name in ("active", "failed", "spare"):
            disks.add([device, name], fields[f"disks_{name}"])
        required.add([device], fields["disks_required"])
        blocks.add([device], fields["size_bytes"] / 1024)  # mdstat's 1 KiB blocks
        synced.add([device], fields["synced_bytes"] / 1024)


NODE: Mapping[str, Callable[[View, Families], None]] = {
    "cpu": node_cpu,
    "memory": node_memory,
    "disk": node_filesystem,
    "diskio": node_disk,
    "net": node_network,
    "system": node_system,
    "pressure": node_pressure,
    "vmstat": node_vmstat,
    "filefd": node_filefd,
    "md": node_md,
    "timex": node_timex,
    "bonding": node_bonding,
    "sockets": node_sockets,
    "netstat": node_netstat,
}
