"""``/metrics`` in ``node`` mode against the real node_exporter 1.5 (Debian's package).

Both read the same procfs: a canned tree (node_exporter's ``--path.procfs``, our
``SIC_HOST_PROC``), where every family must match to the sample — name, type, help, label
names, label values and value — and the real host, where names, types and label sets must match
and slow-moving values agree. The families node_exporter has and we do not are the ones listed
in docs/operations.md, nothing more.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from system_info_collector.agent import Agent
from system_info_collector.config import Settings
from system_info_collector.exposition import HostMetricsCollector
from system_info_collector.hostpaths import HostPaths
from system_info_collector.metrics import Metrics
from system_info_collector.providers import COLLECTORS, build_providers
from system_info_collector.scheduler import Tick
from tests.helpers import MDSTAT_FIXTURES, PROC_FIXTURES, poll
from tests.integration.promstack import collector, get, node_exporter, promtool

pytestmark = pytest.mark.integration

# node_exporter families of the collectors we match that we do not serve (docs/operations.md).
NOT_SERVED = {
    "node_disk_info",  # udev's model/serial/wwn: not read by the collector
    *(f"node_sockstat_{p}_{s}" for p in ("FRAG", "FRAG6") for s in ("inuse", "memory")),
    *(f"node_sockstat_{p}_inuse" for p in ("RAW", "RAW6", "UDPLITE", "UDPLITE6")),
    "node_network_info",  # address, broadcast, duplex, operstate, ifalias as labels
    *(
        f"node_nf_conntrack_stat_{c}"
        for c in (
            "drop",
            "early_drop",
            "found",
            "ignore",
            "invalid",
            "insert",
            "insert_failed",
            "search_restart",
        )
    ),  # per-CPU conntrack statistics
}
# node_exporter 1.5 reads the interface counters over netlink (its own network namespace, not
# --path.procfs): compared on the real host below, not on the canned tree.
NETDEV = {
    f"node_network_{d}_{c}"
    for d, cs in (
        (
            "receive",
            ("bytes", "packets", "errs", "drop", "fifo", "frame", "compressed", "multicast"),
        ),
        (
            "transmit",
            ("bytes", "packets", "errs", "drop", "fifo", "colls", "carrier", "compressed"),
        ),
    )
    for c in cs
}
# netclass properties, vmstat fields beyond node_exporter's defaults... that the host has and
# the collector does not read (docs/operations.md)
NOT_SERVED_NETCLASS = {
    "node_network_receive_nohandler",  # a /proc/net/dev column the collector does not keep
    *(
        f"node_network_{p}"
        for p in (
            "address_assign_type",
            "carrier",
            "carrier_changes",
            "carrier_down_changes",
            "carrier_up_changes",
            "device_id",
            "dormant",
            "flags",
            "iface_id",
            "iface_link",
            "iface_link_mode",
            "net_dev_group",
            "protocol_type",
            "transmit_queue_length",
            "name_assign_type",
        )
    ),
}
NETCLASS = {"node_network_up", "node_network_mtu_bytes", "node_network_speed_bytes"}
NE_FIXTURE_COLLECTORS = (
    *("cpu", "stat", "meminfo", "diskstats"),
    *(
        "loadavg",
        "pressure",
        "vmstat",
        "filefd",
        "netclass",
        "sockstat",
        "conntrack",
        "mdadm",
        "bonding",
        "netstat",
    ),
)
NE_FSTYPES_EXCLUDE = (  # node_exporter 1.5's --collector.filesystem.fs-types-exclude default
    "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660"
    "|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$"
)


def families(text: str) -> dict[str, Metric]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family: Metric) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples}


def _ours(proc: Path, collectors: tuple[str, ...]) -> Iterator[Agent]:
    settings = Settings(
        collectors=collectors,
        sinks=(),
        host_paths=HostPaths(proc=str(proc), sys=str(proc / "sysfs")),
    )
    agent = Agent(settings, build_providers(settings), [], Metrics(), host="h")
    agent.start()
    yield agent
    agent.close()


def test_a_canned_proc_tree_gives_node_exporters_families_sample_for_sample(
    tmp_path: Path,
) -> None:
    proc = tmp_path / "proc"
    shutil.copytree(PROC_FIXTURES / "basic", proc)
    # node_exporter reads the network files of its own namespace (<proc>/net = self/net), the
    # collector PID 1's (<proc>/1/net): the same files here
    (proc / "net").symlink_to("1/net")
    # node_exporter reads the conntrack count from sysctl, the collector from net/stat: one
    # kernel counter (the fixture has the latter)
    entries = (proc / "1/net/stat/nf_conntrack").read_text().splitlines()[1].split()[0]
    (proc / "sys/net/netfilter/nf_conntrack_count").write_text(f"{int(entries, 16)}\n")
    agents = _ours(
        proc,
        (
            "cpu",
            "memory",
            "diskio",
            "system",
            "pressure",
            "vmstat",
            "filefd",
            "md",
            "bonding",
            "net",
            "sockets",
            "netstat",
        ),
    )
    agent = next(agents)
    shutil.copytree(PROC_FIXTURES / "basic" / "later", proc, dirs_exist_ok=True)  # counters move
    now = datetime.now(UTC).replace(microsecond=0)
    agent.tick(Tick(1, now, 0.0, 0.0))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HostMetricsCollector(agent, "node", clock=now.timestamp))
    ours = {n: f for n, f in families(generate_latest(registry).decode()).items()}
    next(agents, None)

    args = [f"--path.procfs={proc}", f"--path.sysfs={proc / 'sysfs'}"]
    args += ["--collector.disable-defaults", *(f"--collector.{c}" for c in NE_FIXTURE_COLLECTORS)]
    with node_exporter(tmp_path, *args) as address:
        status, body = get(f"http://{address}/metrics")
    assert status == 200
    theirs = {n: f for n, f in families(body.decode()).items() if n.startswith("node_")}
    theirs = {
        n: f
        for n, f in theirs.items()
        if not n.startswith(("node_scrape", "node_textfile", "node_exporter_"))
    }

    ours_node = {n: f for n, f in ours.items() if n.startswith("node_") and n not in NETDEV}
    assert set(theirs) - set(ours_node) == NOT_SERVED, sorted(set(theirs) - set(ours_node))
    assert set(ours_node) <= set(theirs)
    for name, family in ours_node.items():
        assert (family.type, family.documentation) == (
            theirs[name].type,
            theirs[name].documentation,
        ), name
        mine, other = samples(family), samples(theirs[name])
        if name in NETCLASS:  # interfaces of net/dev only (sysfs may list more)
            assert mine and mine.items() <= other.items(), name
        else:
            assert mine == other, name


def test_software_raid_arrays_of_every_kind_give_node_exporters_md_families(
    tmp_path: Path,
) -> None:
    """Fifteen arrays: raid0/1/6/10 and linear, degraded, failed and spare members, recovery,
    resync, check, resync=PENDING/DELAYED, bitmap lines, read-only, inactive and
    external-metadata arrays: node_exporter 1.5's mdadm collector and ours agree."""
    proc = tmp_path / "proc"
    proc.mkdir()
    shutil.copy(MDSTAT_FIXTURES / "many-arrays", proc / "mdstat")
    agents = _ours(proc, ("md",))
    agent = next(agents)
    now = datetime.now(UTC).replace(microsecond=0)
    assert len(agent.tick(Tick(1, now, 0.0, 0.0))) == 15
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HostMetricsCollector(agent, "node", clock=now.timestamp))
    ours = {n: f for n, f in families(generate_latest(registry).decode()).items()}
    next(agents, None)
    args = [f"--path.procfs={proc}", "--collector.disable-defaults", "--collector.mdadm"]
    with node_exporter(tmp_path, *args) as address:
        status, body = get(f"http://{address}/metrics")
    assert status == 200
    theirs = {n: f for n, f in families(body.decode()).items() if n.startswith("node_md")}
    assert sorted(theirs) == sorted(n for n in ours if n.startswith("node_md"))
    for name, family in theirs.items():
        assert (ours[name].type, ours[name].documentation) == (family.type, family.documentation)
        assert samples(ours[name]) == samples(family), name


def _root_mount() -> tuple[str, str]:
    for line in Path("/proc/1/mountinfo").read_text().splitlines():
        parts = line.split(" ")
        if parts[4] == "/":
            sep = parts.index("-", 6)
            return parts[sep + 2], parts[sep + 1]
    raise AssertionError("no root mount")


ROOT_DEVICE, ROOT_FSTYPE = _root_mount()


def test_the_real_host_gives_node_exporters_names_labels_and_values(tmp_path: Path) -> None:
    # node_exporter's own filesystem type filter (ours also leaves out tmpfs and the like)
    # node_exporter's own filters for interfaces too (none), and every collector
    env = {
        "SIC_DISK_FSTYPES_EXCLUDE": NE_FSTYPES_EXCLUDE,
        "SIC_NET_INTERFACES_EXCLUDE": "^$",
        "SIC_COLLECTORS": ",".join(COLLECTORS),
    }
    # We leave out a link speed the kernel does not know (-1: virtual NICs), as node_exporter
    # does with this flag (its default from 2.x; 1.5 serves -125000 without it)
    ne_args = ("--collector.netclass.ignore-invalid-speed",)
    with node_exporter(tmp_path, *ne_args) as ne, collector(tmp_path, **env) as sic:

        def scrape_with_cpu() -> str | None:
            text = get(f"http://{sic}/metrics")[1].decode()
            return text if "node_cpu_seconds_total" in text else None

        ours_text = poll(scrape_with_cpu, what="cpu counters on /metrics")
        theirs_text = get(f"http://{ne}/metrics")[1].decode()
    ours, theirs = families(ours_text), families(theirs_text)
    ours_node = {n: f for n, f in ours.items() if n.startswith("node_")}
    prefixes = ("node_cpu_", "node_memory_", "node_filesystem_", "node_disk_", "node_boot_")
    prefixes += ("node_network_", "node_load", "node_pressure_", "node_vmstat_", "node_filefd_")
    prefixes += ("node_sockstat_", "node_nf_conntrack_", "node_timex_", "node_netstat_")
    expected = {n for n in theirs if n.startswith(prefixes)} - NOT_SERVED - NOT_SERVED_NETCLASS
    # node_exporter's stat collector (the parser names counters without _total)
    expected |= {"node_context_switches", "node_intr", "node_forks"}
    expected |= {"node_procs_running", "node_procs_blocked"}
    # node_exporter's netclass collector fails whole when an interface goes away while it reads
    # (containers of other work on this host come and go): compare netclass only when it worked
    success = samples(theirs["node_scrape_collector_success"])
    if success.get((("collector", "netclass"),)) != 1.0:
        ours_node = {n: f for n, f in ours_node.items() if n not in NETCLASS}
    assert expected - set(ours_node) == set(), "node_exporter families we do not serve"
    assert set(ours_node) - set(theirs) == set(), "families node_exporter does not have"
    for name, family in ours_node.items():
        mine, other = samples(family), samples(theirs[name])
        assert family.type == theirs[name].type, name
        assert {tuple(k for k, _ in key) for key in mine} == {
            tuple(k for k, _ in key) for key in other
        }, f"{name}: label names"
        if name.startswith(("node_cpu_", "node_memory_")):
            assert set(mine) == set(other), f"{name}: label values"
        elif name.startswith("node_network_"):
            # every interface (SIC_NET_INTERFACES_EXCLUDE=^$), but containers' veths come and go
            # between the two readings: the interfaces both saw
            assert set(mine) & set(other), f"{name}: no interface in common"
        elif name.startswith(("node_filesystem_", "node_disk_")):
            # Ours: one series per filesystem (bind mounts counted once), no zram (see
            # docs/operations.md); the root filesystem and the real disks are in both.
            assert set(mine) & set(other), f"{name}: no series in common"
    root = (("device", ROOT_DEVICE), ("fstype", ROOT_FSTYPE), ("mountpoint", "/"))
    for name in ("node_filesystem_size_bytes", "node_filesystem_readonly", "node_filesystem_files"):
        assert samples(ours[name])[root] == samples(theirs[name])[root], name
    for name in ("node_memory_MemTotal_bytes", "node_boot_time_seconds", "node_filefd_maximum"):
        assert samples(ours[name]) == samples(theirs[name]), name
    # one kernel clock, asked by both (adjtimex): its state and constants are the same number
    for name in (
        "status",
        "sync_status",
        "tick_seconds",
        "tai_offset_seconds",
        "loop_time_constant",
    ):
        name = f"node_timex_{name}"
        assert samples(ours[name]) == samples(theirs[name]), name
        assert ours[name].documentation == theirs[name].documentation, name

    # promtool's lint: nothing beyond what it says of node_exporter's same names (meminfo's
    # CamelCase keys), and nothing at all of the collector's own families.
    lint_ours = promtool("check", "metrics", input=ours_text)
    lint_theirs = promtool("check", "metrics", input=theirs_text)
    problems = set(lint_ours.stdout.splitlines() + lint_ours.stderr.splitlines())
    known = set(lint_theirs.stdout.splitlines() + lint_theirs.stderr.splitlines())
    assert problems - known == set()
    assert not [p for p in problems if p.startswith("sic_")]


def test_sic_mode_is_lint_clean_counters_and_ratios(tmp_path: Path) -> None:
    with collector(tmp_path, SIC_PROMETHEUS_HOST_METRICS="sic") as sic:

        def scrape_with_cpu() -> str | None:
            text = get(f"http://{sic}/metrics")[1].decode()
            return text if "sic_cpu_seconds_total" in text else None

        text = poll(scrape_with_cpu, what="cpu counters on /metrics")
    lint = promtool("check", "metrics", input=text)
    assert (lint.returncode, lint.stdout + lint.stderr) == (0, "")
    found = families(text)
    assert not [n for n in found if n.startswith("node_")]
    assert found["sic_cpu_seconds"].type == "counter"
    ratios = [s.value for n, f in found.items() if n.endswith("_ratio") for s in f.samples]
    assert ratios and all(0 <= v <= 1 for v in ratios)
    assert not [n for n in found if n.endswith(("_percent", "_per_second"))]
