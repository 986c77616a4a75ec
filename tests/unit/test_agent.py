"""One tick end to end on a canned proc tree: stamping, validation, per-collector intervals."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

from system_info_collector.agent import Agent, resolve_hostname
from system_info_collector.config import load_settings
from system_info_collector.metrics import Metrics
from system_info_collector.providers import build_providers
from system_info_collector.scheduler import Tick
from system_info_collector.sinks.stdout import StdoutSink
from tests.helpers import PROC_FIXTURES, poll


def tick(slot: int, interval: float) -> Tick:
    return Tick(slot, datetime.fromtimestamp(slot * interval, UTC), 0.0, 0.0)


def test_a_tick_stamps_validates_and_hands_records_to_every_sink() -> None:
    settings = load_settings({"SIC_HOST_PROC": str(PROC_FIXTURES / "basic"),
                              "SIC_COLLECTORS": "memory,disk", "SIC_INTERVAL": "1s",
                              "SIC_DISK_INTERVAL": "2s", "SIC_TAGS": "env=test",
                              "SIC_SINKS": "stdout"})  # fmt: skip
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
    lines = poll(lambda: out.getvalue().splitlines() if out.getvalue().count("\n") >= 3 else None,
                 what="records on the sink")  # fmt: skip
    assert [json.loads(line)["measurement"] for line in lines].count("memory") == 2
    collected = metrics.registry.get_sample_value(
        "sic_records_collected_total", {"measurement": "memory"})  # fmt: skip
    assert collected == 2


def test_hostname_prefers_the_mounted_host_root_over_the_uts_namespace(tmp_path: Path) -> None:
    root = tmp_path / "hostroot"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("real-node\n")
    proc = str(PROC_FIXTURES / "basic")  # its sys/kernel/hostname says node-a.example
    assert resolve_hostname(load_settings({"SIC_HOST_PROC": proc})) == "node-a.example"
    with_root = {"SIC_HOST_PROC": proc, "SIC_HOST_ROOT": str(root)}
    assert resolve_hostname(load_settings(with_root)) == "real-node"
    assert resolve_hostname(load_settings({**with_root, "NODE_NAME": "k8s-node"})) == "k8s-node"
