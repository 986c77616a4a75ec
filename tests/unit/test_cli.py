"""The command-line interface as a user meets it: real processes, exit codes, output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from system_info_collector import __version__
from tests.helpers import PROC_FIXTURES, clean_env, run_cli


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip().endswith(__version__)


@pytest.mark.parametrize("command", [[], ["run"], ["once"], ["check"]])
def test_help_on_every_command(command: list[str]) -> None:
    result = run_cli(*command, "--help")
    assert result.returncode == 0
    assert "--interval" in result.stdout and "SIC_" in result.stdout


def test_python_dash_m_works() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "system_info_collector", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0


def test_invalid_configuration_lists_every_problem_and_exits_2() -> None:
    env = clean_env(
        SIC_INTERVAL="10ms",
        SIC_LOG_LEVEL="loud",
        SIC_CSV_RETENTION="forever",
        SIC_DB_DSN="postgresql://sic:hunter2@db/m",
        SIC_SINKS="postgres,nope",
    )
    result = run_cli("once", env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("  ")]
    assert len(lines) == 4, result.stderr
    assert "SIC_INTERVAL='10ms'" in result.stderr and "SIC_CSV_RETENTION='forever'" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_a_flag_overrides_its_variable() -> None:
    env = clean_env(SIC_INTERVAL="1s")
    result = run_cli("once", "--interval", "5ms", env=env)
    assert result.returncode == 2 and "SIC_INTERVAL='5ms'" in result.stderr


def test_once_prints_one_sample_of_every_collector_from_the_host_proc() -> None:
    env = clean_env(
        SIC_HOST_PROC=str(PROC_FIXTURES / "basic"),
        SIC_TAGS="env=test",
        SIC_COLLECTORS="memory,disk",
    )
    result = run_cli("once", env=env)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["measurement"] for r in records} == {"memory", "disk"}
    memory = next(r for r in records if r["measurement"] == "memory")
    assert memory["host"] == "node-a.example"  # the host's <proc>/sys/kernel/hostname
    assert memory["tags"] == {"env": "test"}
    assert memory["fields"]["total_bytes"] == 8_000_000 * 1024
    assert memory["ts"].endswith("Z")
    assert len({r["ts"] for r in records}) == 1


def test_once_reports_a_broken_collector_and_exits_1_but_prints_the_others() -> None:
    env = clean_env(SIC_HOST_PROC=str(PROC_FIXTURES / "malformed"), SIC_LOG_FORMAT="json")
    result = run_cli("once", env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines()]
    failed = {e["collector"] for e in events if e["event"] == "collector_failed"}
    assert failed == {"cpu", "memory", "disk", "diskio"}
    assert all("malformed" in e["error"] for e in events if e["event"] == "collector_failed")


def test_check_passes_on_this_machine_and_fails_on_a_broken_proc(tmp_path: object) -> None:
    ok = run_cli("check", env=clean_env(SIC_SINKS="stdout"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert all(line.startswith("ok") for line in ok.stdout.splitlines())
    assert any("mount table" in line for line in ok.stdout.splitlines())
    bad = run_cli(
        "check", env=clean_env(SIC_SINKS="stdout", SIC_HOST_PROC=str(PROC_FIXTURES / "truncated"))
    )
    assert bad.returncode == 1
    failing = [line for line in bad.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failing) >= 4 and "Traceback" not in bad.stderr
