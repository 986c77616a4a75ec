"""Expected-output scenarios, in the Telegraf/node_exporter style.

Each ``tests/fixtures/proc/<scenario>/`` is a canned procfs (the first reading) with:

- ``expected.jsonl``: the records ``once`` prints for that tree (the stdout sink's JSON lines),
  with ``ts`` 2024-01-01T00:00:00Z and 2 s between the two readings counters need;
- ``later/`` (optional): files that replace the first reading's before the second one;
- ``sysfs/`` (optional): the sysfs (``SIC_HOST_SYS``); ``statvfs.json`` (optional): what
  ``statvfs`` answers per mount point (the disk collector's only non-file source);
  ``timex.json`` (optional): what ``adjtimex`` answers (the timex collector's source);
- ``scenario.env`` (optional): ``SIC_*`` variables for the scenario (default: the defaults);
- ``expected-failures.txt`` (optional): the collectors that must fail (one a line).

One parametrised test runs every scenario through the one collect path ``once`` uses. To write
the expected output of a new scenario, run it once with ``SIC_WRITE_EXPECTED=1`` and review it.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from system_info_collector.agent import resolve_hostname
from system_info_collector.collect import Failures, base_intervals_ms, collect, prime
from system_info_collector.config import load_settings
from system_info_collector.providers import COLLECTORS, build_providers
from system_info_collector.providers.disk import DiskProvider
from system_info_collector.providers.timex import TimexProvider, TimexReading
from system_info_collector.sinks.stdout import record_json
from tests.helpers import PROC_FIXTURES, clean_env, run_cli

TS = datetime(2024, 1, 1, tzinfo=UTC)
ELAPSED = 2.0  # seconds between the two readings
META = (
    "expected.jsonl",
    "expected-failures.txt",
    "later",
    "sysfs",
    "statvfs.json",
    "timex.json",
    "scenario.env",
)
SCENARIOS = sorted(p.name for p in PROC_FIXTURES.iterdir() if p.is_dir())


def scenario_env(scenario: Path) -> dict[str, str]:
    path = scenario / "scenario.env"
    lines = path.read_text().splitlines() if path.exists() else []
    return dict(ln.split("=", 1) for ln in lines if ln.strip() and not ln.startswith("#"))


def fake_statvfs(scenario: Path) -> Any:
    table = json.loads((scenario / "statvfs.json").read_text())

    def statvfs(path: str) -> os.statvfs_result:
        if path not in table:
            raise FileNotFoundError(2, "No such file or directory", path)
        return os.statvfs_result(table[path])

    return statvfs


def run_scenario(name: str, tmp_path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The records and failed collectors of scenario ``name``, as ``once`` would collect them."""
    source = PROC_FIXTURES / name
    proc = tmp_path / "proc"
    shutil.copytree(source, proc, ignore=shutil.ignore_patterns(*META))
    sysfs = source / "sysfs"
    settings = load_settings(
        {
            "SIC_HOST_PROC": str(proc),
            "SIC_HOST_SYS": str(sysfs if sysfs.exists() else tmp_path / "no-sysfs"),
            **scenario_env(source),
        }
    )
    now = [1000.0]
    providers = build_providers(settings, clock=lambda: now[0])
    if (source / "statvfs.json").exists():
        disk = settings.collector("disk")
        providers = [
            DiskProvider(
                settings.host_paths,
                mountpoints_exclude=disk.mountpoints_exclude,
                fstypes_exclude=disk.fstypes_exclude,
                timeout=disk.timeout,
                statvfs=fake_statvfs(source),
            )
            if p.name == "disk"
            else p
            for p in providers
        ]
    if (source / "timex.json").exists():  # the kernel clock's state, as adjtimex would give it
        reading = TimexReading(**json.loads((source / "timex.json").read_text()))
        providers = [TimexProvider(lambda: reading) if p.name == "timex" else p for p in providers]
    try:
        prime(providers)
        if (source / "later").exists():
            shutil.copytree(source / "later", proc, dirs_exist_ok=True)
        now[0] += ELAPSED
        host = resolve_hostname(settings)
        intervals = base_intervals_ms(settings, providers)
        failures = Failures("collector failed")
        result = collect(providers, TS, host, settings.tags, failures, intervals_ms=intervals)
    finally:
        for p in providers:
            p.close()
    return [json.loads(record_json(r)) for r in result.accepted], result.failed


def expected_records(name: str) -> list[dict[str, Any]]:
    text = (PROC_FIXTURES / name / "expected.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def expected_failures(name: str) -> list[str]:
    path = PROC_FIXTURES / name / "expected-failures.txt"
    return path.read_text().split() if path.exists() else []


def approx(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "fields": {k: pytest.approx(v) for k, v in record["fields"].items()}}


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_output_is_the_expected_output(name: str, tmp_path: Path) -> None:
    records, failed = run_scenario(name, tmp_path)
    if os.environ.get("SIC_WRITE_EXPECTED") == "1":
        lines = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        (PROC_FIXTURES / name / "expected.jsonl").write_text(lines)
        pytest.skip("expected.jsonl written: review it and run again without SIC_WRITE_EXPECTED")
    assert records == [approx(r) for r in expected_records(name)]
    assert failed == expected_failures(name)


def test_every_collector_is_in_some_scenario() -> None:
    covered = {r["measurement"] for name in SCENARIOS for r in expected_records(name)}
    assert covered == set(COLLECTORS)


def test_once_prints_the_expected_gauges_of_a_scenario() -> None:
    """The harness is `once`: the real command on the scenario tree prints the same gauge
    records (counter rates need the scenario's second reading, which `once` cannot swap in)."""
    env = clean_env(
        SIC_HOST_PROC=str(PROC_FIXTURES / "basic"),
        SIC_COLLECTORS="memory",
        SIC_STDOUT_LAYOUT="nested",
    )  # the layout of expected.jsonl
    result = run_cli("once", env=env)
    assert result.returncode == 0, result.stderr
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    expected = [r for r in expected_records("basic") if r["measurement"] == "memory"]
    assert [{**r, "ts": TS} for r in printed] == [{**r, "ts": TS} for r in expected]
