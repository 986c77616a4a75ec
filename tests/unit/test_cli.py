"""The command-line interface as a user meets it: real processes, exit codes, output."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from system_info_collector import __version__
from system_info_collector.config import DEFAULT_COLLECTORS
from tests.helpers import EXE, PROC_FIXTURES, clean_env, poll, run_cli


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip().endswith(__version__)


ALL_FLAGS = (
    "--interval",
    "--csv",
    "--db-dsn",
    "--retry-max",
    "--retry-initial",
    "--retry-max-wait",
)


@pytest.mark.parametrize(
    ("command", "flags", "described"),
    [
        ([], ALL_FLAGS, "Sample the host's CPU"),
        (["run"], ALL_FLAGS, "until SIGTERM or SIGINT"),
        (["once"], (), "Take one sample of every collector"),
        (["check"], ALL_FLAGS, "SIC_HTTP_LISTEN can be bound"),
        (["health"], (), "GET /healthz of the collector"),
        (
            ["replay"],
            ("--db-dsn", "--retry-max", "--retry-initial", "--retry-max-wait"),
            "Load CSV files written by the CSV sink",
        ),
    ],
)
def test_help_of_every_command_describes_it_and_lists_only_its_flags(
    command: list[str], flags: tuple[str, ...], described: str
) -> None:
    result = run_cli(*command, "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert described in text and "SIC_" in text
    for flag in ALL_FLAGS:
        assert (f"{flag} " in result.stdout) == (flag in flags), (command, flag)


def test_a_flag_that_does_not_apply_is_a_usage_error() -> None:
    result = run_cli("once", "--csv", "/tmp/x")
    assert result.returncode == 2 and "unrecognized arguments: --csv" in result.stderr


def test_check_notices_that_the_http_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = clean_env(
            SIC_HTTP_LISTEN=f"127.0.0.1:{port}",
            SIC_SINKS="",
            SIC_HOST_PROC=str(PROC_FIXTURES / "basic"),
        )
        result = run_cli("check", env=env)
    assert result.returncode == 1
    assert f"FAIL  http listen: cannot listen on 127.0.0.1:{port}: Address already in use" in (
        result.stdout
    )
    free = run_cli("check", env=env)  # the port is free again
    assert f"ok    http listen: 127.0.0.1:{port} can be bound" in free.stdout


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
    result = run_cli("run", "--interval", "5ms", env=env)
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
    assert memory["total_bytes"] == 8_000_000 * 1024
    assert memory["ts"].endswith("Z")
    assert len({r["ts"] for r in records}) == 1


def test_once_reports_a_broken_collector_and_exits_1_but_prints_the_others() -> None:
    env = clean_env(SIC_HOST_PROC=str(PROC_FIXTURES / "malformed"), SIC_LOG_FORMAT="json")
    result = run_cli("once", env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines()]
    failed = {e["collector"] for e in events if e["event"] == "collector_failed"}
    # every file of that tree is broken; timex reads no file (it asks the kernel's clock), and
    # the tree has no sysfs, so no bonds (which is not a failure)
    assert failed == set(DEFAULT_COLLECTORS) - {"timex", "bonding"}
    assert [json.loads(line)["measurement"] for line in result.stdout.splitlines()] == ["timex"]
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


class Blocked:
    """``run`` with its stdout sink stuck on a full pipe nobody reads, so the flush at shutdown
    waits (up to SIC_SHUTDOWN_TIMEOUT) -- the time a second signal arrives in."""

    def __init__(self) -> None:
        read_end, write_end = os.pipe()
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
        env = clean_env(
            SIC_SINKS="stdout",
            SIC_INTERVAL="100ms",
            SIC_LOG_LEVEL="DEBUG",
            SIC_SHUTDOWN_TIMEOUT="60s",
            SIC_COLLECTORS="memory",
            SIC_HTTP_LISTEN="127.0.0.1:0",
        )
        self.proc = subprocess.Popen(
            [EXE, "run"], env=env, stdout=write_end, stderr=subprocess.PIPE, text=True
        )
        os.close(write_end)
        self.stdout = read_end
        self.events: list[dict[str, object]] = []
        self.stderr = self.proc.stderr
        assert self.stderr is not None
        os.set_blocking(self.stderr.fileno(), False)
        url = str(self.wait_event("http_listening")["url"])

        def stuck() -> bool:  # a batch blocked in the write and another one waiting behind it
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:
                return bool(json.load(response)["sinks"][0]["pending_batches"] >= 2)

        poll(stuck, what="the stdout sink to block on the full pipe")

    def wait_event(self, name: str) -> dict[str, object]:
        def seen() -> dict[str, object] | None:
            assert self.stderr is not None
            for line in self.stderr.readlines():
                self.events.append(json.loads(line))
            return next((e for e in self.events if e["event"] == name), None)

        return poll(seen, what=f"event {name}")

    def drain(self) -> None:
        with os.fdopen(self.stdout, "rb") as out:
            out.read()

    def finish(self, timeout: float = 10) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.proc.kill()
            self.proc.wait()
            assert self.stderr is not None
            os.set_blocking(self.stderr.fileno(), True)
            self.events += [json.loads(line) for line in self.stderr.readlines()]
            self.stderr.close()


def test_a_repeated_sigterm_during_the_flush_changes_nothing() -> None:
    run = Blocked()
    run.proc.send_signal(signal.SIGTERM)
    run.wait_event("shutdown_requested")
    run.proc.send_signal(signal.SIGTERM)  # as `timeout` does: to the process and to its group
    run.wait_event("shutdown_signal_repeated")
    assert run.proc.poll() is None  # still flushing
    run.drain()  # the reader comes back: the sink writes everything and the process exits
    assert run.finish() == 0
    names = [e["event"] for e in run.events]
    assert names.count("shutdown_requested") == 1
    stopped = next(e for e in run.events if e["event"] == "collector_stopped")
    assert stopped["flushed"] is True


def test_a_second_sigint_during_the_flush_exits_at_once() -> None:
    run = Blocked()
    run.proc.send_signal(signal.SIGINT)
    run.wait_event("shutdown_requested")
    run.proc.send_signal(signal.SIGINT)  # Ctrl-C again: the user does not want to wait
    assert run.finish(timeout=5) == 130
    os.close(run.stdout)
    forced = next(e for e in run.events if e["event"] == "shutdown_forced")
    assert forced["level"] == "ERROR" and forced["unflushed_records"]


def test_run_stops_like_a_unix_filter_when_its_stdout_reader_leaves() -> None:
    """``run | head -1``: the reader exits, the collector stops at once instead of retrying."""
    env = clean_env(SIC_SINKS="stdout", SIC_INTERVAL="100ms", SIC_COLLECTORS="memory")
    proc = subprocess.Popen(
        [EXE, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    proc.stdout.close()  # the reader is gone: the next write gets EPIPE
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Exception ignored" not in err
    events = [json.loads(line)["event"] for line in err.splitlines()]
    assert "stdout_closed" in events and events[-1] == "collector_stopped"


def test_check_reads_the_textfile_directory_as_a_scrape_would(tmp_path: Path) -> None:
    (tmp_path / "good.prom").write_text("backup_ok 1\n")
    env = clean_env(SIC_SINKS="stdout", SIC_HTTP_LISTEN="", SIC_TEXTFILE_DIRECTORY=str(tmp_path))
    ok = run_cli("check", env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"ok    textfile directory: {tmp_path}: 1 .prom file(s) read" in ok.stdout
    (tmp_path / "bad.prom").write_text("bad{ 1\n")
    failed = run_cli("check", env=env)
    assert failed.returncode == 1
    assert "FAIL  textfile directory" in failed.stdout and "bad.prom" in failed.stderr
