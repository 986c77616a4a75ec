"""The network, system, pressure, vmstat, file-handle and socket collectors on this machine's
real files, compared with ip(8) and the kernel files read just before and just after."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import clean_env, run_cli

pytestmark = pytest.mark.integration


def once(*collectors: str, **env: str) -> list[dict[str, Any]]:
    # these tests read the records as {"tags": {...}, "fields": {...}} (SIC_STDOUT_LAYOUT=nested)
    env = {"SIC_STDOUT_LAYOUT": "nested", **env}
    result = run_cli("once", env=clean_env(SIC_COLLECTORS=",".join(collectors), **env))
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def ip_links() -> dict[str, dict[str, Any]]:
    out = subprocess.run(["ip", "-s", "-j", "link"], capture_output=True, text=True, check=True)
    return {link["ifname"]: link for link in json.loads(out.stdout)}


def test_net_counters_and_links_match_ip_s_link() -> None:
    before = ip_links()
    records = once("net", SIC_NET_INTERFACES_EXCLUDE="^$")
    after = ip_links()
    by_interface = {r["tags"]["interface"]: r["fields"] for r in records}
    stable = set(before) & set(after)
    assert stable and stable <= set(by_interface), (stable, set(by_interface))
    for name in stable:
        f, lo, hi = by_interface[name], before[name]["stats64"], after[name]["stats64"]
        for direction, prefix in (("rx", "receive"), ("tx", "transmit")):
            for key, field in (("bytes", "bytes"), ("packets", "packets"), ("errors", "errors")):
                value = f[f"{prefix}_{field}_total"]
                assert lo[direction][key] <= value <= hi[direction][key], (name, direction, key)
        assert f["mtu_bytes"] == after[name]["mtu"], name
        assert f["up"] == int(after[name]["operstate"] == "UP"), name


def test_net_default_filter_drops_loopback_and_container_interfaces() -> None:
    names = {r["tags"]["interface"] for r in once("net")}
    assert "lo" not in names
    assert not {n for n in names if n.startswith(("veth", "docker", "br-"))}


def proc_fields(path: str) -> list[str]:
    return Path(path).read_text().split()


def test_system_matches_proc_loadavg_uptime_and_stat() -> None:
    load_before, up_before = proc_fields("/proc/loadavg"), float(proc_fields("/proc/uptime")[0])
    (record,) = once("system")
    load_after, up_after = proc_fields("/proc/loadavg"), float(proc_fields("/proc/uptime")[0])
    f = record["fields"]
    for i, name in enumerate(("load1", "load5", "load15")):
        low, high = sorted((float(load_before[i]), float(load_after[i])))
        assert low <= f[name] <= high, name
        assert f[f"{name}_per_cpu"] == pytest.approx(f[name] / f["cpus"])
    assert f["cpus"] == os.sysconf("SC_NPROCESSORS_ONLN")
    assert up_before <= f["uptime_seconds"] <= up_after
    stat = dict(ln.split(None, 1) for ln in Path("/proc/stat").read_text().splitlines())
    assert f["boot_time_seconds"] == int(stat["btime"])
    assert f["context_switches_total"] <= int(stat["ctxt"])
    assert f["forks_total"] <= int(stat["processes"])
    assert f["context_switches_per_second"] > 0


def test_pressure_matches_proc_pressure() -> None:
    resources = [r for r in ("cpu", "memory", "io") if Path("/proc/pressure", r).exists()]
    before = {r: Path("/proc/pressure", r).read_text() for r in resources}
    records = once("pressure")
    after = {r: Path("/proc/pressure", r).read_text() for r in resources}
    assert sorted(r["tags"]["resource"] for r in records) == sorted(resources)

    def total(text: str, kind: str) -> float:
        line = next(ln for ln in text.splitlines() if ln.startswith(kind))
        return int(line.rsplit("total=", 1)[1]) / 1e6

    for r in records:
        name, f = r["tags"]["resource"], r["fields"]
        for kind in ("some", "full"):
            if kind in before[name]:
                low, high = total(before[name], kind), total(after[name], kind)
                assert low <= f[f"{kind}_stall_seconds_total"] <= high, (name, kind)


def test_vmstat_and_filefd_match_the_kernel_files() -> None:
    def vmstat() -> dict[str, int]:
        lines = Path("/proc/vmstat").read_text().splitlines()
        return {k: int(v) for k, v in (ln.split() for ln in lines)}

    before = vmstat()
    records = {r["measurement"]: r["fields"] for r in once("vmstat", "filefd")}
    after = vmstat()
    v = records["vmstat"]
    assert before["pgmajfault"] <= v["major_page_faults_total"] <= after["pgmajfault"]
    assert before["pgfault"] <= v["page_faults_total"] <= after["pgfault"]
    assert before["pgpgin"] * 1024 <= v["paged_in_bytes_total"] <= after["pgpgin"] * 1024
    assert v["oom_kills_total"] == after.get("oom_kill", 0)
    fd = records["filefd"]
    assert fd["maximum"] == int(Path("/proc/sys/fs/file-max").read_text())
    assert 0 < fd["allocated"] <= fd["maximum"]


def test_sockets_match_sockstat_and_conntrack() -> None:
    (record,) = once("sockets")
    f = record["fields"]
    limit = Path("/proc/sys/net/netfilter/nf_conntrack_max")
    assert f["conntrack_max"] == (int(limit.read_text()) if limit.exists() else 0)
    sockstat = Path("/proc/1/net/sockstat").read_text().split()
    assert abs(f["sockets_used"] - int(sockstat[sockstat.index("used") + 1])) < 200
    assert f["tcp_allocated"] >= f["tcp_in_use"] >= 0


def test_check_reports_every_new_collector_source() -> None:
    result = run_cli(
        "check",
        env=clean_env(
            SIC_SINKS="stdout", SIC_COLLECTORS="net,system,pressure,vmstat,filefd,sockets"
        ),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    names = [line.split(":", 1)[0] for line in result.stdout.splitlines()]
    for label in (
        "proc net/dev",
        "proc loadavg",
        "proc pressure",
        "proc vmstat",
        "proc file-nr",
        "proc sockstat",
    ):
        assert f"ok    {label}" in names, result.stdout
