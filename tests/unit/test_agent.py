"""One tick end to end on a canned proc tree: stamping, validation, per-collector intervals."""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from system_info_collector.agent import Agent, LatestRecords, resolve_hostname
from system_info_collector.config import load_settings
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record, Sample
from system_info_collector.providers import build_providers
from system_info_collector.scheduler import Tick
from system_info_collector.sinks.stdout import StdoutSink
from tests.helpers import PROC_FIXTURES, poll


def tick(slot: int, interval: float) -> Tick:
    return Tick(slot, datetime.fromtimestamp(slot * interval, UTC), 0.0, 0.0)


def test_a_tick_stamps_validates_and_hands_records_to_every_sink() -> None:
    settings = load_settings(
        {
            "SIC_HOST_PROC": str(PROC_FIXTURES / "basic"),
            "SIC_COLLECTORS": "memory,disk",
            "SIC_INTERVAL": "1s",
            "SIC_DISK_INTERVAL": "2s",
            "SIC_TAGS": "env=test",
            "SIC_SINKS": "stdout",
        }
    )
    out = io.StringIO()
    metrics = Metrics()
    agent = Agent(settings, build_providers(settings), [StdoutSink(out)], metrics, host="h1")
    agent.start()
    try:
        first = agent.tick(tick(1_000, 1.0))  # even slot: disk is due
        second = agent.tick(tick(1_001, 1.0))  # odd slot: memory only
    finally:
        agent.close()
    assert {r.measurement for r in first} == {"memory", "disk"}
    assert {r.measurement for r in second} == {"memory"}
    assert all(r.host == "h1" and r.tags["env"] == "test" for r in first + second)
    assert {r.ts for r in first} == {datetime.fromtimestamp(1_000, UTC)}
    # The newest sample of every measurement stays available (for /metrics) between its ticks.
    assert agent.latest["disk"][0].ts == datetime.fromtimestamp(1_000, UTC)
    assert agent.latest["memory"][0].ts == datetime.fromtimestamp(1_001, UTC)
    lines = poll(
        lambda: out.getvalue().splitlines() if out.getvalue().count("\n") >= 3 else None,
        what="records on the sink",
    )
    assert [json.loads(line)["measurement"] for line in lines].count("memory") == 2
    collected = metrics.registry.get_sample_value(
        "sic_records_collected_total", {"measurement": "memory"}
    )
    assert collected == 2


def test_interval_ms_is_the_time_each_collectors_sample_stands_for() -> None:
    """The first sample stands for the configured interval, later ones for the time since the
    collector's previous sample: skipped slots (an overrun) widen it, a 2 s collector says 2 s."""
    settings = load_settings(
        {
            "SIC_HOST_PROC": str(PROC_FIXTURES / "basic"),
            "SIC_COLLECTORS": "memory,disk",
            "SIC_INTERVAL": "1s",
            "SIC_DISK_INTERVAL": "2s",
            "SIC_SINKS": "stdout",
        }
    )
    agent = Agent(
        settings, build_providers(settings), [StdoutSink(io.StringIO())], Metrics(), host="h1"
    )
    agent.start()
    try:
        ticks = [agent.tick(tick(slot, 1.0)) for slot in (1_000, 1_001, 1_002, 1_005, 1_006)]
    finally:
        agent.close()
    seen = [sorted({(r.measurement, r.interval_ms) for r in records}) for records in ticks]
    assert seen == [
        [("disk", 2000), ("memory", 1000)],
        [("memory", 1000)],
        [("disk", 2000), ("memory", 1000)],
        [("memory", 3000)],
        [("disk", 4000), ("memory", 1000)],
    ]


def test_hostname_prefers_the_mounted_host_root_over_the_uts_namespace(tmp_path: Path) -> None:
    root = tmp_path / "hostroot"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("real-node\n")
    proc = str(PROC_FIXTURES / "basic")  # its sys/kernel/hostname says node-a.example
    assert resolve_hostname(load_settings({"SIC_HOST_PROC": proc})) == "node-a.example"
    with_root = {"SIC_HOST_PROC": proc, "SIC_HOST_ROOT": str(root)}
    assert resolve_hostname(load_settings(with_root)) == "real-node"
    assert resolve_hostname(load_settings({**with_root, "NODE_NAME": "k8s-node"})) == "k8s-node"


def test_series_exist_at_zero_and_a_vanished_mount_is_counted(tmp_path: Path) -> None:
    root = tmp_path / "hostroot"
    root.mkdir()  # the fixture's /srv/my data is not there: that mount vanished
    settings = load_settings(
        {
            "SIC_HOST_PROC": str(PROC_FIXTURES / "basic"),
            "SIC_HOST_ROOT": str(root),
            "SIC_COLLECTORS": "memory,disk",
            "SIC_SINKS": "stdout",
        }
    )
    metrics = Metrics()
    agent = Agent(
        settings, build_providers(settings), [StdoutSink(io.StringIO())], metrics, host="h1"
    )
    value = metrics.registry.get_sample_value
    # Before anything happened, alerts on rate()/increase() already have a series to look at.
    assert value("sic_sink_write_errors_total", {"sink": "stdout", "class": "transient"}) == 0
    assert value("sic_sink_rows_written_total", {"sink": "stdout"}) == 0
    assert value("sic_collector_errors_total", {"collector": "disk"}) == 0
    agent.start()
    try:
        records = agent.tick(tick(1_000, 1.0))
        agent.tick(tick(1_001, 1.0))
    finally:
        agent.close()
    assert [r.tags["mountpoint"] for r in records if r.measurement == "disk"] == ["/"]
    assert value("sic_collector_partial_errors_total", {"collector": "disk"}) == 2  # each tick
    assert value("sic_collector_errors_total", {"collector": "disk"}) == 0  # the rest worked


class SlowOnce:
    """A provider whose second run takes 2.5 intervals; the agent stops on its sixth run."""

    name = "memory"

    def __init__(self, agent_stop: list[Agent]) -> None:
        self.runs = 0
        self._agent = agent_stop

    def prime(self) -> None:
        pass

    def collect(self) -> list[Sample]:
        self.runs += 1
        if self.runs == 2:
            time.sleep(0.25)  # the work of an overrunning tick, not a synchronisation
        if self.runs == 6:
            self._agent[0].stop_event.set()
        return []

    def close(self) -> None:
        pass


def test_an_overrunning_tick_is_counted_and_its_missed_slots_skipped() -> None:
    settings = load_settings({"SIC_INTERVAL": "100ms", "SIC_SINKS": "stdout"})
    metrics = Metrics()
    holder: list[Agent] = []
    provider = SlowOnce(holder)
    agent = Agent(settings, [provider], [StdoutSink(io.StringIO())], metrics, host="h1")
    holder.append(agent)
    agent.start()
    try:
        agent.run()
    finally:
        agent.close()
    value = metrics.registry.get_sample_value
    assert value("sic_tick_overruns_total") == 1
    assert value("sic_ticks_skipped_total") >= 2  # 250 ms of work: the next two slots are gone
    assert value("sic_ticks_total") == 6


def test_latest_keeps_entities_a_tick_did_not_report() -> None:
    t0, t1 = datetime.fromtimestamp(1_000, UTC), datetime.fromtimestamp(1_001, UTC)
    cpu = {"user_percent": 1.0}
    first = [Record("cpu", t0, "h", {"cpu": name}, cpu) for name in ("cpu-total", "cpu0")]
    second = [Record("cpu", t1, "h", {"cpu": "cpu0"}, cpu)]  # cpu-total did not move
    keeper = LatestRecords()
    keeper.update(first)
    latest = keeper.update(second)
    by_cpu = {r.tags["cpu"]: r.ts for r in latest["cpu"]}
    assert by_cpu == {"cpu-total": t0, "cpu0": t1}
