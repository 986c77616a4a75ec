"""Adaptive sampling without waiting: sentinels on a procfs we write, bursts on an injected clock,
the agent's slots, and the configuration contract (README table, Helm values)."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from system_info_collector.adaptive import Bursts, PsiTriggers, Sentinel
from system_info_collector.agent import Agent
from system_info_collector.budget import Budget
from system_info_collector.config import ADAPTIVE_OPTIONS, AdaptiveSettings, load_settings
from system_info_collector.errors import ConfigError
from system_info_collector.hostpaths import HostPaths
from system_info_collector.metrics import Metrics
from system_info_collector.providers import build_providers
from system_info_collector.scheduler import Tick
from system_info_collector.sinks.stdout import StdoutSink
from tests.helpers import PROC_FIXTURES
from tests.unit.test_declarations import CHART, readme_row, readme_section, schema, values

NEVER = re.compile(r"^$")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write_proc(proc: Path, busy: int, idle: int, mem_us: int, io_us: int, io_ms: int) -> None:
    """A procfs with the files the sentinel reads: cpu jiffies, PSI totals, disk io_ticks."""
    (proc / "pressure").mkdir(parents=True, exist_ok=True)
    (proc / "stat").write_text(
        f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 {busy} 0 0 {idle} 0 0 0 0 0 0\n"
    )
    for kind, total in (("memory", mem_us), ("io", io_us)):
        (proc / "pressure" / kind).write_text(
            f"some avg10=0.00 avg60=0.00 avg300=0.00 total={total}\n"
            f"full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
        )
    (proc / "diskstats").write_text(f" 253 0 vda 1 0 8 1 1 0 8 1 0 {io_ms} 2 0 0 0 0\n")


def test_the_sentinel_turns_counters_into_shares_of_the_elapsed_time(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    clock = Clock()
    write_proc(proc, busy=100, idle=900, mem_us=0, io_us=0, io_ms=0)
    sentinel = Sentinel(HostPaths(proc=str(proc)), devices_exclude=NEVER, monotonic=clock)
    assert sentinel.read() == {}  # the first reading has nothing to compare with
    clock.now += 0.5
    write_proc(proc, busy=160, idle=920, mem_us=100_000, io_us=25_000, io_ms=450)
    assert sentinel.read() == pytest.approx(
        {"cpu": 75.0, "memory_psi": 20.0, "io_psi": 5.0, "disk_busy": 90.0}
    )
    assert sentinel.psi_missing == []
    sentinel.close()


def test_without_psi_the_sentinel_says_so_and_uses_cpu_and_disks(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    clock = Clock()
    write_proc(proc, busy=0, idle=100, mem_us=0, io_us=0, io_ms=0)
    shutil.rmtree(proc / "pressure")
    sentinel = Sentinel(HostPaths(proc=str(proc)), devices_exclude=NEVER, monotonic=clock)
    sentinel.read()
    clock.now += 1.0
    write_proc(proc, busy=50, idle=150, mem_us=0, io_us=0, io_ms=100)
    shutil.rmtree(proc / "pressure")
    assert set(sentinel.read()) == {"cpu", "disk_busy"}
    assert sentinel.psi_missing == [
        str(proc / "pressure" / "memory"),
        str(proc / "pressure" / "io"),
    ]


def test_a_burst_starts_at_once_and_ends_a_hold_after_the_signal_cleared(events) -> None:
    clock = Clock()
    bursts = Bursts(AdaptiveSettings(enabled=True, hold=2.0), frozenset({"cpu", "memory"}), clock)
    assert bursts.update({"cpu": 20.0, "memory_psi": 0.0}) == frozenset()
    clock.now += 0.25
    assert bursts.update({"cpu": 95.0, "memory_psi": 0.0}) == {"cpu"}
    for _ in range(7):  # cleared, but within the hold
        clock.now += 0.25
        assert bursts.update({"cpu": 10.0, "memory_psi": 0.0}) == {"cpu"}
    clock.now += 0.25
    assert bursts.update({"cpu": 10.0, "memory_psi": 0.0}) == frozenset()
    names = [(e["event"], e.get("signal")) for e in events if "burst" in e.get("event", "")]
    assert names == [("burst_started", "cpu"), ("burst_ended", "cpu")]
    started = next(e for e in events if e.get("event") == "burst_started")
    assert started["reason"] == "threshold" and started["value_percent"] == 95.0
    ended = next(e for e in events if e.get("event") == "burst_ended")
    assert ended["duration_seconds"] == 2.0 and ended["peak_percent"] == 95.0


def test_a_jump_over_the_baseline_fires_only_after_the_warm_up() -> None:
    clock = Clock()
    quiet = AdaptiveSettings(enabled=True, hold=0.0, jump=30.0, cpu_percent=100.0)
    cpu = Bursts(quiet, frozenset({"cpu"}), clock)
    assert cpu.update({"cpu": 20.0}) == frozenset()
    clock.now += 0.25
    assert cpu.update({"cpu": 60.0}) == frozenset()  # +50, but no baseline history yet
    for _ in range(40):  # ten seconds of a quiet baseline
        clock.now += 0.25
        cpu.update({"cpu": 20.0})
    clock.now += 0.25
    assert cpu.update({"cpu": 45.0}) == frozenset()  # +25: not a jump
    clock.now += 0.25
    assert cpu.update({"cpu": 55.0}) == {"cpu"}  # +35 over a ~20 % baseline: a jump
    clock.now += 0.25
    assert cpu.update({"cpu": 20.0}) == frozenset()  # hold 0: over at once


def test_psi_triggers_are_never_written_into_a_plain_file(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    write_proc(proc, busy=0, idle=100, mem_us=5, io_us=0, io_ms=0)
    path = proc / "pressure" / "memory"
    before = path.read_bytes()
    triggers = PsiTriggers({"memory_psi": str(path)}, {"memory_psi": 10.0})
    try:
        assert triggers.status == {"memory_psi": "unavailable: not a procfs pressure file"}
        assert not triggers.active and path.read_bytes() == before
        threading.Timer(0.2, triggers.interrupt).start()
        began = time.monotonic()
        assert triggers.wait(10.0) == frozenset()  # an interrupt ends the wait
        assert time.monotonic() - began < 5
    finally:
        triggers.close()
    triggers.interrupt()  # closed: a no-op, no write into a reused descriptor


def test_a_trigger_starts_a_burst_that_holds_at_least_its_window(events) -> None:
    clock = Clock()
    settings = AdaptiveSettings(enabled=True, hold=0.5)
    bursts = Bursts(settings, frozenset({"memory", "pressure", "cpu"}), clock)
    assert bursts.triggered({"memory_psi": 2.0}) == {"memory", "pressure"}
    for _ in range(7):  # the polled share stays low: the kernel's window holds the burst
        clock.now += 0.25
        assert bursts.update({"memory_psi": 1.0, "cpu": 5.0}) == {"memory", "pressure"}
    clock.now += 0.25
    assert bursts.update({"memory_psi": 1.0, "cpu": 5.0}) == frozenset()
    started = [e for e in events if e.get("event") == "burst_started"]
    assert [(e["signal"], e["reason"], e["value_percent"]) for e in started] == [
        ("memory_psi", "psi_trigger", None)
    ]
    ended = next(e for e in events if e.get("event") == "burst_ended")
    assert ended["duration_seconds"] == 2.0 and ended["peak_percent"] == 1.0


def test_the_stall_a_trigger_claims_is_checked_against_the_total(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    clock = Clock()
    write_proc(proc, busy=0, idle=100, mem_us=0, io_us=0, io_ms=0)
    sentinel = Sentinel(HostPaths(proc=str(proc)), devices_exclude=NEVER, monotonic=clock)
    sentinel.psi_keep = 2.0
    totals = [0, 50_000, 100_000, 400_000, 900_000, 1_000_000]
    for mem_us in totals:  # readings every 0.5 s
        write_proc(proc, busy=0, idle=100, mem_us=mem_us, io_us=0, io_ms=0)
        sentinel.read()
        clock.now += 0.5
    write_proc(proc, busy=0, idle=100, mem_us=1_200_000, io_us=0, io_ms=0)
    # now = 3.0 s after the first: the newest reading at least 2 s old is the one at 1.0 s
    assert sentinel.psi_stall("memory_psi", 2.0) == (1_100_000.0, 2.0)
    sentinel.close()


def test_a_stop_signal_ends_the_wait_on_psi_triggers_at_once(tmp_path: Path) -> None:
    """Slots of 5 s: SIGUSR1's handler sets the stop flag while the main thread sleeps in
    poll() on the real /proc's triggers; the agent stops within a moment, not at the slot."""
    settings = load_settings(
        {
            "SIC_COLLECTORS": "memory",
            "SIC_INTERVAL": "10s",
            "SIC_ADAPTIVE": "on",
            "SIC_ADAPTIVE_INTERVAL": "5s",
            "SIC_SINKS": "stdout",
        }
    )
    agent = Agent(
        settings, build_providers(settings), [StdoutSink(io.StringIO())], Metrics(), host="h"
    )
    previous = signal.signal(signal.SIGUSR1, lambda *_: agent.stop_event.set())
    try:
        agent.start()
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        began = time.monotonic()
        agent.run()
        assert time.monotonic() - began < 2.0
    finally:
        signal.signal(signal.SIGUSR1, previous)
        agent.close()


def test_the_agent_samples_only_burst_collectors_between_base_slots(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    shutil.copytree(PROC_FIXTURES / "basic", proc, ignore=shutil.ignore_patterns("expected*"))
    write_proc(proc, busy=100, idle=900, mem_us=0, io_us=0, io_ms=0)
    settings = load_settings(
        {
            "SIC_HOST_PROC": str(proc),
            "SIC_COLLECTORS": "cpu,memory",
            "SIC_INTERVAL": "1s",
            "SIC_ADAPTIVE": "on",
            "SIC_ADAPTIVE_INTERVAL": "250ms",
            "SIC_ADAPTIVE_HOLD": "0.5s",
            "SIC_SINKS": "stdout",
        }
    )
    clock = Clock()
    metrics = Metrics()
    agent = Agent(
        settings,
        build_providers(settings),
        [StdoutSink(io.StringIO())],
        metrics,
        host="h",
        monotonic=clock,
    )
    agent.start()
    seen: list[set[tuple[str, int]]] = []
    busy, idle = 100, 900
    try:
        for slot in range(4000, 4012):  # 3 s of 250 ms slots; the CPU is saturated in 4001-4005
            clock.now += 0.25
            if 4001 <= slot <= 4005:
                busy += 1000
            else:
                idle += 1000
            write_proc(proc, busy=busy, idle=idle, mem_us=0, io_us=0, io_ms=0)
            tick = Tick(slot, datetime.fromtimestamp(slot * 0.25, UTC), clock.now, 0.0)
            seen.append(
                {
                    (r.measurement, r.interval_ms)
                    for r in agent.tick(tick)
                    if r.tags.get("cpu", "cpu-total") == "cpu-total"
                }
            )
            if slot == 4002:
                gauge = metrics.registry.get_sample_value(
                    "sic_collector_interval_seconds", {"collector": "cpu"}
                )
                assert gauge == 0.25
    finally:
        agent.close()
    cpu, both = {("cpu", 250)}, {("cpu", 250), ("memory", 1000)}
    # base slots (every 4th) sample both; the burst samples cpu every 250 ms from the first
    # reading whose half-second window is saturated through the 0.5 s hold after the last;
    # then sentinel-only slots until the next base slot
    assert seen == [
        {("cpu", 1000), ("memory", 1000)},
        set(),
        {("cpu", 500)},
        cpu,
        both,
        cpu,
        cpu,
        set(),
        {("cpu", 500), ("memory", 1000)},
        set(),
        set(),
        set(),
    ]
    assert metrics.registry.get_sample_value("sic_adaptive_bursts_total", {"signal": "cpu"}) == 1
    assert (
        metrics.registry.get_sample_value("sic_collector_interval_seconds", {"collector": "cpu"})
        == 1.0
    )


def test_configuration_errors_are_reported_together() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(
            {
                "SIC_ADAPTIVE": "maybe",
                "SIC_ADAPTIVE_CPU_PERCENT": "150",
                "SIC_ADAPTIVE_HOLD": "soon",
                "SIC_ADAPTIVE_PSI_TRIGGERS": "always",
            }
        )
    text = str(err.value)
    assert "SIC_ADAPTIVE='maybe'" in text and "SIC_ADAPTIVE_CPU_PERCENT" in text
    assert "SIC_ADAPTIVE_HOLD" in text
    assert "SIC_ADAPTIVE_PSI_TRIGGERS='always': expected one of auto, off" in text
    for env, message in (
        ({"SIC_ADAPTIVE_INTERVAL": "50ms"}, "at least 100ms"),
        ({"SIC_ADAPTIVE_INTERVAL": "2s"}, "must not exceed SIC_INTERVAL"),
        ({"SIC_INTERVAL": "1s", "SIC_ADAPTIVE_INTERVAL": "300ms"}, "whole multiple"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_settings({"SIC_ADAPTIVE": "on", **env})
    ok = load_settings(
        {"SIC_ADAPTIVE": "on", "SIC_INTERVAL": "5s", "SIC_ADAPTIVE_MEMORY_PSI": "12.5%"}
    )
    assert ok.adaptive == AdaptiveSettings(enabled=True, memory_psi=12.5)


def test_readme_and_chart_document_every_adaptive_variable() -> None:
    table = readme_section("variables")
    assert readme_row(table, "`SIC_ADAPTIVE`")[1] == "`off`"
    helpers = (CHART / "templates" / "_helpers.tpl").read_text(encoding="utf-8")
    chart, props = values()["adaptive"], schema()["properties"]["adaptive"]["properties"]
    assert props["mode"]["description"] == "SIC_ADAPTIVE" and chart["mode"] in ("", "off")
    defaults = AdaptiveSettings()
    for variable, attribute, default in ADAPTIVE_OPTIONS:
        assert readme_row(table, f"`{variable}`")[1] == f"`{default}`", variable
        parsed = load_settings({variable: default}).adaptive
        assert getattr(parsed, attribute) == getattr(defaults, attribute), variable
        head, *rest = attribute.split("_")
        key = head + "".join(part.capitalize() for part in rest)
        assert props[key]["description"] == variable
        assert chart[key] in ("", default), variable
        assert f'(list "{variable}" $v.adaptive.{key})' in helpers, variable
    # the one choice among them: kernel PSI poll triggers where allowed, or polling only
    assert readme_row(table, "`SIC_ADAPTIVE_PSI_TRIGGERS`")[1] == "`auto`"
    assert props["psiTriggers"] == {
        "type": "string",
        "enum": ["", "auto", "off"],
        "description": "SIC_ADAPTIVE_PSI_TRIGGERS",
    }
    assert chart["psiTriggers"] in ("", "auto")
    assert '(list "SIC_ADAPTIVE_PSI_TRIGGERS" $v.adaptive.psiTriggers)' in helpers
    assert defaults.psi_triggers is True
    assert load_settings({"SIC_ADAPTIVE_PSI_TRIGGERS": "off"}).adaptive.psi_triggers is False


class CpuClock:
    def __init__(self) -> None:
        self.cpu = 0.0

    def __call__(self) -> float:
        return self.cpu


def test_over_budget_the_costliest_collectors_are_stretched_and_later_restored(events) -> None:
    wall, cpu = Clock(), CpuClock()
    budget = Budget(2.0, 10.0, {"disk": 1.0, "diskio": 1.0, "memory": 1.0}, wall, cpu)
    budget.evaluate()  # the window starts
    wall.now += 10
    cpu.cpu += 1.0  # 10 % of a core over the window
    budget.charge({"disk": 0.6, "diskio": 0.3, "memory": 0.1})  # shares 6 %, 3 %, 1 %
    assert sorted(budget.evaluate()) == ["disk", "diskio", "memory"]
    # doubling the costliest until the projection fits: 6/8 + 3/4 + 1/2 = 2.0
    assert budget.stretch == {"disk": 8, "diskio": 4, "memory": 2}
    backoff = {e["collector"]: e for e in events if e.get("event") == "collector_backoff"}
    assert backoff["disk"]["collector_cpu_percent"] == 6.0
    assert backoff["disk"]["total_cpu_percent"] == 10.0
    assert backoff["disk"]["new_interval_seconds"] == 8.0
    # the load drops: restored a step at a time, the costliest first, while well under budget
    restored = []
    for _ in range(8):
        wall.now += 10
        cpu.cpu += 0.01  # 0.1 % of a core
        budget.charge({"disk": 0.005, "diskio": 0.003, "memory": 0.002})
        restored += budget.evaluate()
    assert budget.stretch == {"disk": 1, "diskio": 1, "memory": 1}
    assert len(restored) == 6  # 8→4→2→1, 4→2→1, 2→1: one step per window
    assert [e["event"] for e in events].count("collector_restored") == 6


def test_a_zero_budget_never_stretches() -> None:
    wall, cpu = Clock(), CpuClock()
    budget = Budget(0.0, 1.0, {"disk": 1.0}, wall, cpu)
    budget.evaluate()
    wall.now += 5
    cpu.cpu += 5
    budget.charge({"disk": 5.0})
    assert budget.evaluate() == [] and budget.stretch == {"disk": 1}


def test_readme_and_chart_document_the_overhead_budget() -> None:
    table = readme_section("variables")
    helpers = (CHART / "templates" / "_helpers.tpl").read_text(encoding="utf-8")
    chart, props = values()["overhead"], schema()["properties"]["overhead"]["properties"]
    defaults = load_settings({})
    for variable, key, default, attribute in (
        ("SIC_OVERHEAD_BUDGET", "budget", "2%", "overhead_budget"),
        ("SIC_OVERHEAD_WINDOW", "window", "60s", "overhead_window"),
    ):
        assert readme_row(table, f"`{variable}`")[1] == f"`{default}`"
        assert getattr(load_settings({variable: default}), attribute) == getattr(
            defaults, attribute
        )
        assert props[key]["description"] == variable and chart[key] == ""
        assert f'(list "{variable}" $v.overhead.{key})' in helpers
    assert load_settings({"SIC_OVERHEAD_BUDGET": "0"}).overhead_budget == 0
    with pytest.raises(ConfigError, match="SIC_OVERHEAD_BUDGET"):
        load_settings({"SIC_OVERHEAD_BUDGET": "lots"})
