"""The network, system, pressure, vmstat, filefd, md and sockets collectors beyond their expected
output (tests/unit/test_scenarios.py): what they say once, and only once, about missing sources
and a host view they cannot have."""

from __future__ import annotations

import random
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from system_info_collector.collect import Failures, collect, prime
from system_info_collector.config import load_settings
from system_info_collector.errors import ProviderError
from system_info_collector.providers import build_providers
from system_info_collector.providers.md import parse_mdstat
from system_info_collector.providers.net import DEFAULT_INTERFACES_EXCLUDE, parse_net_dev
from tests.helpers import MDSTAT_FIXTURES, PROC_FIXTURES, clean_env, run_cli

TS = datetime(2024, 1, 1, tzinfo=UTC)


def ticks(proc: Path, collectors: str, n: int) -> list[list[str]]:
    """``n`` collections of ``collectors`` on ``proc``; the measurements of each."""
    settings = load_settings(
        {
            "SIC_HOST_PROC": str(proc),
            "SIC_HOST_SYS": str(proc / "nosys"),
            "SIC_COLLECTORS": collectors,
        }
    )
    now = [0.0]
    providers = build_providers(settings, clock=lambda: now[0])
    failures = Failures()
    out = []
    try:
        prime(providers, failures)
        for _ in range(n):
            now[0] += 1.0
            result = collect(providers, TS, "h", {}, failures)
            out.append([r.measurement for r in result.accepted])
    finally:
        for p in providers:
            p.close()
    return out


def named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("event") == name]


def test_missing_psi_conntrack_and_sysfs_are_said_once_and_never_an_error(
    events: list[dict[str, Any]],
) -> None:
    proc = PROC_FIXTURES / "no-psi-own-netns"
    seen = ticks(proc, "net,pressure,sockets,filefd", 3)
    assert seen == [["net", "sockets", "filefd"]] * 3
    missing = named(events, "collector_source_missing")
    assert [e["collector"] for e in missing] == ["net", "pressure", "sockets", "sockets"]
    assert all(e["level"] == "INFO" for e in missing)
    assert "psi=0" in missing[1]["msg"] and "cpu, memory, io" in missing[1]["msg"]
    assert not [e for e in events if e["level"] == "ERROR"]


def test_without_pid_1_the_own_namespace_is_reported_with_one_warning(
    events: list[dict[str, Any]],
) -> None:
    ticks(PROC_FIXTURES / "no-psi-own-netns", "net,sockets", 3)
    (warning,) = named(events, "net_host_namespace_unavailable")[:1]
    fallbacks = named(events, "net_host_namespace_unavailable")
    assert [e["collector"] for e in fallbacks] == ["net", "sockets"]  # once per collector
    assert warning["level"] == "WARNING"
    assert warning["path"].endswith("/1/net/dev") and warning["fallback"].endswith("/self/net/dev")


def test_pid_1_is_preferred_to_self(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    shutil.copytree(PROC_FIXTURES / "basic", proc)
    shutil.copytree(PROC_FIXTURES / "no-psi-own-netns" / "self", proc / "self")
    settings = load_settings(
        {"SIC_HOST_PROC": str(proc), "SIC_COLLECTORS": "net", "SIC_NET_INTERFACES_EXCLUDE": "^$"}
    )
    (net,) = build_providers(settings)
    try:
        net.prime()
        assert net.host_namespace  # type: ignore[attr-defined]
        names = {s.tags["interface"] for s in net.collect()}
    finally:
        net.close()
    assert {"eth0", "wlan0", "docker0"} <= names  # PID 1's table, not self's (lo, eth0)


def test_a_failing_collector_errors_once_while_the_others_keep_reporting(
    events: list[dict[str, Any]], tmp_path: Path
) -> None:
    proc = tmp_path / "proc"
    shutil.copytree(PROC_FIXTURES / "basic", proc)
    (proc / "vmstat").write_text("pgfault 1\n")  # truncated: pgmajfault and the rest missing
    seen = ticks(proc, "vmstat,filefd,system", 3)
    assert seen[1:] == [["filefd", "system"]] * 2
    errors = named(events, "collector_failed")
    assert len(errors) == 1 and errors[0]["collector"] == "vmstat"
    assert "pgmajfault" in errors[0]["error"]


def test_default_interface_filter_is_node_exporter_like() -> None:
    import re

    exclude = re.compile(DEFAULT_INTERFACES_EXCLUDE)
    dropped = [
        "lo",
        "veth1a2b",
        "cali12ab",
        "flannel.1",
        "cni0",
        "docker0",
        "br-3f2a",
        "virbr0",
        "vxlan.calico",
        "cilium_host",
        "lxc12ab",
        "tunl0",
        "kube-ipvs0",
        "0123456789abcde",
    ]
    kept = ["eth0", "ens5", "enp0s31f6", "eno1", "bond0", "wlan0", "wlp2s0", "ib0", "bond0.100"]
    assert [n for n in dropped if not exclude.search(n)] == []
    assert [n for n in kept if exclude.search(n)] == []


@pytest.mark.parametrize(
    "text",
    ["", "Inter-|\n face |bytes\n", "h|a|b\nh|a|b\n  eth0: 1 2 3\n", "h|a|b\nh|a|b\neth0 1 2\n"],
)
def test_net_dev_that_is_not_one_is_a_clear_error(text: str) -> None:
    from system_info_collector.errors import ProviderError

    with pytest.raises(ProviderError, match="net/dev"):
        parse_net_dev(text, "/host/proc/1/net/dev")


def test_without_the_md_driver_there_are_no_arrays_and_arrays_appear_when_it_loads(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    settings = load_settings({"SIC_HOST_PROC": str(proc), "SIC_COLLECTORS": "md"})
    providers = build_providers(settings)
    failures = Failures()
    try:
        prime(providers, failures)
        assert collect(providers, TS, "h", {}, failures).accepted == []
        shutil.copy(PROC_FIXTURES / "basic" / "mdstat", proc / "mdstat")  # modprobe, assemble
        result = collect(providers, TS, "h", {}, failures)
    finally:
        for p in providers:
            p.close()
    assert [r.tags["device"] for r in result.accepted][:3] == ["md0", "md1", "md2"]
    assert not result.failed
    missing = named(events, "collector_source_missing")
    assert [(e["collector"], e["level"]) for e in missing] == [("md", "INFO")]
    assert not [e for e in events if e["level"] in ("WARNING", "ERROR")]
    result = run_cli("check", env=clean_env(SIC_SINKS="stdout", SIC_HOST_PROC=str(proc)))
    assert "8 arrays, 2 degraded or with failed disks" in result.stdout, result.stdout


def test_bonds_are_read_as_node_exporter_reads_them_and_a_broken_one_is_named(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    sysfs = tmp_path / "sys"
    settings = load_settings({"SIC_HOST_SYS": str(sysfs), "SIC_COLLECTORS": "bonding"})
    providers = build_providers(settings)
    failures = Failures()
    prime(providers, failures)  # no sysfs at all: no bonds, said once
    assert collect(providers, TS, "h", {}, failures).accepted == []
    net = sysfs / "class" / "net"
    shutil.copytree(PROC_FIXTURES / "basic" / "sysfs" / "class" / "net", net)
    result = collect(providers, TS, "h", {}, failures)
    assert {r.tags["master"]: dict(r.fields) for r in result.accepted} == {
        "bond0": {"slaves": 2, "active": 1},  # lower_eth3 is down
        "bond1": {"slaves": 2, "active": 2},  # slave_<member>: an older kernel's layout
    }
    (net / "bond1" / "slave_eth5" / "bonding_slave" / "mii_status").unlink()
    result = collect(providers, TS, "h", {}, failures)
    assert result.failed == ["bonding"]
    (failed,) = named(events, "collector_failed")
    assert "slave_eth5/bonding_slave/mii_status" in failed["error"]
    missing = named(events, "collector_source_missing")
    assert [(e["collector"], e["level"]) for e in missing] == [("bonding", "INFO")]
    check = run_cli("check", env=clean_env(SIC_SINKS="stdout", SIC_HOST_SYS=str(sysfs)))
    assert "FAIL  sys bonding" in check.stdout and "slave_eth5" in check.stdout, check.stdout


def test_a_damaged_mdstat_is_a_clear_error_never_an_exception() -> None:
    """Random cuts, inserts and changed characters in a real-looking mdstat: the parse returns
    arrays or raises ProviderError naming the file (what `check` and the ERROR log show)."""
    text = (MDSTAT_FIXTURES / "many-arrays").read_text()
    rng = random.Random("mdstat")
    errors = 0
    for _ in range(5000):
        chars = list(text)
        for _ in range(rng.choice([1, 2, 5, 20])):
            k = rng.randrange(len(chars))
            roll = rng.random()
            if roll < 0.3:
                del chars[k]
            elif roll < 0.6:
                chars[k] = rng.choice("0123456789.[]/_U ()=%:\nFSabc")
            else:
                chars.insert(k, rng.choice("0123456789.[]/_U ()=%:\nFSk"))
        try:
            parse_mdstat("".join(chars), "/host/proc/mdstat")
        except ProviderError as exc:
            errors += 1
            assert str(exc).startswith("/host/proc/mdstat: ")
    assert errors > 100  # the damage was seen, not parsed around


def test_check_says_what_is_missing_without_failing_for_it() -> None:
    proc = PROC_FIXTURES / "no-psi-own-netns"
    result = run_cli(
        "check",
        env=clean_env(
            SIC_SINKS="stdout", SIC_HOST_PROC=str(proc), SIC_COLLECTORS="net,pressure,sockets"
        ),
    )
    lines = {ln.split(":", 1)[0]: ln for ln in result.stdout.splitlines()}
    assert lines["ok    proc pressure"].endswith("nothing to collect"), result.stdout
    assert "FALLBACK" in lines["ok    proc net/dev"]
    assert "conntrack 0 of 0" in lines["ok    proc sockstat"]
