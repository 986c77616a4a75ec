"""Collectors against canned proc trees (tests/fixtures/proc/<scenario>)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from system_info_collector.errors import ProviderError
from system_info_collector.hostpaths import HostPaths
from system_info_collector.providers.cpu import CpuProvider, parse_stat, shares
from system_info_collector.providers.disk import (
    DEFAULT_FSTYPES_EXCLUDE,
    DEFAULT_MOUNTPOINTS_EXCLUDE,
    DiskProvider,
    parse_mountinfo,
    select_mounts,
)
from system_info_collector.providers.diskio import DEFAULT_DEVICES_EXCLUDE, DiskIOProvider
from system_info_collector.providers.memory import MemoryProvider
from tests.helpers import PROC_FIXTURES


def proc_tree(tmp_path: Path, scenario: str) -> Path:
    """A writable copy of a fixture tree, so a test can move to a 'later' reading."""
    target = tmp_path / "proc"
    shutil.copytree(PROC_FIXTURES / scenario, target, dirs_exist_ok=True)
    return target


def test_cpu_shares_from_counter_deltas(tmp_path: Path) -> None:
    proc = proc_tree(tmp_path, "basic")
    cpu = CpuProvider(HostPaths(proc=str(proc)))
    cpu.prime()
    shutil.copy(PROC_FIXTURES / "basic" / "later" / "stat", proc / "stat")
    samples = {s.tags["cpu"]: s.fields for s in cpu.collect()}
    assert set(samples) == {"cpu-total", "cpu0", "cpu1"}
    total = samples["cpu-total"]  # deltas: user 100, system 50, idle 300 -> total 450
    assert total["user_percent"] == pytest.approx(100 / 450 * 100)
    assert total["system_percent"] == pytest.approx(50 / 450 * 100)
    assert total["idle_percent"] == pytest.approx(300 / 450 * 100)
    assert total["usage_percent"] == pytest.approx(150 / 450 * 100)


def test_cpu_counter_reset_produces_no_garbage() -> None:
    before = (100, 0, 50, 1000, 0, 0, 0, 0, 0, 0)
    after_hotplug = (10, 0, 5, 100, 0, 0, 0, 0, 0, 0)
    assert shares(before, after_hotplug) is None
    assert shares(before, before) is None  # no time passed


def test_cpu_that_appears_later_starts_from_its_first_reading(tmp_path: Path) -> None:
    proc = proc_tree(tmp_path, "basic")
    (proc / "stat").write_text("cpu  100 0 50 1000 0 0 0 0 0 0\ncpu0 100 0 50 1000 0 0 0 0 0 0\n")
    cpu = CpuProvider(HostPaths(proc=str(proc)))
    cpu.prime()
    (proc / "stat").write_text(
        "cpu  200 0 100 2000 0 0 0 0 0 0\ncpu0 150 0 75 1500 0 0 0 0 0 0\n"
        "cpu1 50 0 25 500 0 0 0 0 0 0\n"
    )
    assert sorted(s.tags["cpu"] for s in cpu.collect()) == ["cpu-total", "cpu0"]


def test_old_kernels_with_fewer_cpu_columns_parse() -> None:
    cpus = parse_stat("cpu  1 2 3 4 5 6 7\n")
    assert cpus["cpu-total"] == (1, 2, 3, 4, 5, 6, 7, 0, 0, 0)


def test_memory_matches_free_definitions() -> None:
    (sample,) = MemoryProvider(HostPaths(proc=str(PROC_FIXTURES / "basic"))).collect()
    f = sample.fields
    k = 1024
    assert f["total_bytes"] == 8_000_000 * k
    assert f["available_bytes"] == 5_000_000 * k
    assert f["used_bytes"] == 3_000_000 * k  # total - available, as free(1) >= procps-ng 4
    assert f["cached_bytes"] == 2_700_000 * k  # Cached + SReclaimable, as free's buff/cache
    assert f["buffers_bytes"] == 100_000 * k and f["shared_bytes"] == 50_000 * k
    assert f["used_percent"] == pytest.approx(37.5)
    assert f["swap_used_bytes"] == 250_000 * k and f["swap_used_percent"] == pytest.approx(25.0)


def _filters() -> dict[str, re.Pattern[str]]:
    return {
        "mountpoints_exclude": re.compile(DEFAULT_MOUNTPOINTS_EXCLUDE),
        "fstypes_exclude": re.compile(DEFAULT_FSTYPES_EXCLUDE),
    }


def test_mount_table_filters_and_dedup() -> None:
    text = (PROC_FIXTURES / "basic" / "1" / "mountinfo").read_text()
    kept = select_mounts(parse_mountinfo(text), **_filters())
    # /proc, /sys, /dev, /run (tmpfs), the overlay and the squashfs are filtered; /var/lib/kubelet
    # is /dev/vda again (a bind mount) and deduplicated; the octal escape is decoded.
    assert [(m.mountpoint, m.source, m.fstype) for m in kept] == [
        ("/", "/dev/vda", "ext4"),
        ("/srv/my data", "/dev/vdb", "xfs"),
    ]


def test_disk_statvfs_goes_through_the_host_root(tmp_path: Path) -> None:
    root = tmp_path / "hostroot"
    (root / "srv" / "my data").mkdir(parents=True)
    disk = DiskProvider(HostPaths(proc=str(PROC_FIXTURES / "basic"), root=str(root)), **_filters())
    try:
        samples = {s.tags["mountpoint"]: s for s in disk.collect()}
    finally:
        disk.close()
    assert set(samples) == {"/", "/srv/my data"}
    st = os.statvfs(root / "srv" / "my data")
    f = samples["/srv/my data"].fields
    assert f["total_bytes"] == st.f_blocks * st.f_frsize
    assert samples["/srv/my data"].tags == {
        "mountpoint": "/srv/my data",
        "device": "/dev/vdb",
        "fstype": "xfs",
    }


def test_a_vanished_mount_is_skipped_and_the_rest_measured(tmp_path: Path) -> None:
    root = tmp_path / "hostroot"
    root.mkdir()  # /srv/my data does not exist under this root
    disk = DiskProvider(HostPaths(proc=str(PROC_FIXTURES / "basic"), root=str(root)), **_filters())
    try:
        assert [s.tags["mountpoint"] for s in disk.collect()] == ["/"]
    finally:
        disk.close()


def test_diskio_counters_and_rates(tmp_path: Path) -> None:
    proc = proc_tree(tmp_path, "basic")
    now = [100.0]
    diskio = DiskIOProvider(
        HostPaths(proc=str(proc)),
        devices_exclude=re.compile(DEFAULT_DEVICES_EXCLUDE),
        clock=lambda: now[0],
    )
    diskio.prime()
    shutil.copy(PROC_FIXTURES / "basic" / "later" / "diskstats", proc / "diskstats")
    now[0] = 102.0
    samples = {s.tags["device"]: s.fields for s in diskio.collect()}
    # partitions (vda1, nvme0n1p1) and loop devices are excluded; nvme0n1's counters went
    # backwards (device re-created), so it restarts from this reading instead of a negative rate.
    assert set(samples) == {"vda"}
    vda = samples["vda"]
    assert vda["reads_total"] == 1100 and vda["read_bytes_total"] == 22000 * 512
    assert vda["read_bytes_per_second"] == pytest.approx(2000 * 512 / 2)
    assert vda["writes_per_second"] == pytest.approx(50.0)
    assert vda["utilization_percent"] == pytest.approx(500 / 2000 * 100)
    assert vda["io_time_seconds_total"] == pytest.approx(1.3)


@pytest.mark.parametrize("scenario", ["malformed", "truncated"])
def test_broken_files_give_clear_errors(scenario: str) -> None:
    paths = HostPaths(proc=str(PROC_FIXTURES / scenario))
    cpu = CpuProvider(paths)
    with pytest.raises(ProviderError, match=r"stat"):
        cpu.prime()
    with pytest.raises(ProviderError, match=r"meminfo"):
        MemoryProvider(paths).collect()
    diskio = DiskIOProvider(paths, devices_exclude=re.compile("^$"))
    with pytest.raises(ProviderError, match=r"diskstats"):
        diskio.prime()
    disk = DiskProvider(paths, **_filters())
    try:
        with pytest.raises(ProviderError, match=r"mountinfo"):
            disk.collect()
    finally:
        disk.close()


def test_missing_proc_is_a_provider_error(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match=r"cannot read .*/meminfo"):
        MemoryProvider(HostPaths(proc=str(tmp_path / "nope"))).collect()
