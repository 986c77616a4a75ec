"""The real collector process misused as issue 10 found it: a second collector on the same
directory, stray signals, ``copytruncate`` of an active file, a stepped wall clock.

Each spawns our own process only (no database, no Docker) except the stepped clock, which
needs Debian's libfaketime (installed by .ci/bootstrap.sh; marked ``integration``).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from system_info_collector.dirlock import EXIT_LOCKED, LOCK_NAME
from tests.helpers import poll
from tests.integration.test_csv_faults import Collector, assert_increasing_per_entity, rows_in
from tests.integration.test_http_process import free_port

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with NO_PROXY.open(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def exited(c: Collector, timeout: float = 20.0) -> int:
    return c.proc.wait(timeout)


def test_a_second_collector_on_the_same_csv_directory_exits_3_and_the_first_loses_nothing(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    env = {"SIC_SINKS": "csv,stdout", "SIC_CSV_DIR": str(data), "SIC_COLLECTORS": "cpu,memory"}
    first = Collector(tmp_path, "first", **env)
    try:
        poll(lambda: rows_in(data / "memory.csv") >= 3, timeout=20, what="rows of the first")
        second = Collector(tmp_path, "second", **env)
        assert exited(second) == EXIT_LOCKED
        (locked,) = second.events("directory_locked")
        assert locked["level"] == "ERROR" and locked["directory"] == str(data)
        assert locked["variable"] == "SIC_CSV_DIR"
        assert f"pid {first.proc.pid} " in locked["held_by"]
        assert second.stdout.read_text() == ""  # it sampled nothing
        assert first.proc.poll() is None
        seen = rows_in(data / "memory.csv")
        poll(lambda: rows_in(data / "memory.csv") >= seen + 3, timeout=20, what="more rows")
        assert first.stop() == 0
    finally:
        first.kill()
    # one writer: every file parses, each entity's timestamps strictly increase, and the CSV
    # holds exactly what the first collector emitted
    assert_increasing_per_entity(data)
    assert rows_in(data / "memory.csv") == len(first.stdout_records("memory"))
    assert json.loads((data / LOCK_NAME).read_text())["pid"] == first.proc.pid


def test_a_shared_spool_directory_is_locked_too(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    env = {
        "SIC_SINKS": "postgres",
        "SIC_COLLECTORS": "memory",
        # nothing listens there: records wait in the spool
        "SIC_DB_DSN": f"postgresql://sic@127.0.0.1:{free_port()}/metrics?connect_timeout=1",
        "SIC_DB_SPOOL_DIR": str(spool),
    }
    first = Collector(tmp_path, "first", SIC_CSV_DIR=str(tmp_path / "a"), **env)
    try:
        segments = poll(lambda: sorted(spool.glob("spool-*.seg")), timeout=20, what="a segment")
        second = Collector(tmp_path, "second", SIC_CSV_DIR=str(tmp_path / "b"), **env)
        assert exited(second) == EXIT_LOCKED
        (locked,) = second.events("directory_locked")
        assert locked["variable"] == "SIC_DB_SPOOL_DIR" and locked["directory"] == str(spool)
        assert all(s.exists() for s in segments), "the second start touched the first's spool"
        assert not second.events("spool_recovered")
    finally:
        first.kill()


def test_with_a_lock_timeout_the_second_waits_not_ready_then_takes_over(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"SIC_SINKS": "csv", "SIC_CSV_DIR": str(data), "SIC_COLLECTORS": "memory"}
    first = Collector(tmp_path, "first", **env)
    port = free_port()
    second = None
    try:
        poll(lambda: rows_in(data / "memory.csv") >= 1, timeout=20, what="the first's rows")
        second = Collector(
            tmp_path, "second", SIC_LOCK_TIMEOUT="60s", SIC_HTTP_LISTEN=f"127.0.0.1:{port}", **env
        )

        def waiting() -> dict[str, Any] | None:
            try:
                status, body = get(port, "/readyz")
            except OSError:
                return None
            return body if status == 503 else None

        body = poll(waiting, timeout=20, what="/readyz 503 while waiting for the lock")
        assert body["status"] == "waiting for directory lock"
        assert f"{data} in use by pid {first.proc.pid} " in body["reason"]
        assert body["locks"][0]["state"] == "waiting"
        assert get(port, "/healthz")[0] == 200  # alive: liveness must not restart it
        assert second.events("directory_lock_wait")
        rows = rows_in(data / "memory.csv")
        assert first.stop() == 0  # the rollout's old pod goes away
        poll(lambda: get(port, "/readyz")[0] == 200, timeout=20, what="ready after takeover")
        assert get(port, "/readyz")[1]["locks"][0]["state"] == "held"
        poll(lambda: rows_in(data / "memory.csv") > rows + 2, timeout=20, what="its own rows")
        assert second.stop() == 0
    finally:
        first.kill()
        if second is not None:
            second.kill()
    assert_increasing_per_entity(data)


def test_sighup_sigusr1_sigusr2_never_stop_it_and_nothing_is_lost(tmp_path: Path) -> None:
    data = tmp_path / "data"
    c = Collector(
        tmp_path, "c", SIC_SINKS="csv,stdout", SIC_CSV_DIR=str(data), SIC_COLLECTORS="memory"
    )
    try:
        poll(lambda: rows_in(data / "memory.csv") >= 2, timeout=20, what="rows")
        for signum, name in (
            (signal.SIGUSR1, "status"),
            (signal.SIGHUP, "csv_files_reopened"),
            (signal.SIGUSR2, "log_level_changed"),
        ):
            c.proc.send_signal(signum)
            event = poll(lambda n=name: c.events(n), timeout=10, what=name)[0]
            assert c.proc.poll() is None, f"{signum!r} ended the process"
        status = c.events("status")[0]
        assert status["ticks"] >= 2 and status["sinks"][0]["name"] in ("csv", "stdout")
        assert status["locks"][0]["state"] == "held" and status["clock_steps"] == 0
        assert event["debug"] is True  # SIGUSR2 turned DEBUG on
        n = rows_in(data / "memory.csv")
        poll(lambda: rows_in(data / "memory.csv") >= n + 3, timeout=20, what="rows after HUP")
        for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2) * 5:  # a burst
            c.proc.send_signal(signum)  # (the kernel may merge repeats of one signal)
        poll(
            lambda: len(c.events("log_level_changed")) >= 2 and len(c.events("status")) >= 2,
            timeout=10,
            what="the burst handled",
        )
        assert c.proc.poll() is None
        assert c.stop() == 0
    finally:
        c.kill()
    # flushed: the CSV holds every record the stdout sink saw, once, in order
    assert rows_in(data / "memory.csv") == len(c.stdout_records("memory"))
    assert_increasing_per_entity(data)
    assert "Traceback" not in c.stderr.read_text()


def test_copytruncate_of_an_active_file_restarts_it_with_a_header(tmp_path: Path) -> None:
    data = tmp_path / "data"
    memory = data / "memory.csv"
    c = Collector(
        tmp_path,
        "c",
        SIC_SINKS="csv,stdout",
        SIC_CSV_DIR=str(data),
        SIC_COLLECTORS="memory",
        SIC_CSV_COMPRESS="none",
    )
    try:
        poll(lambda: rows_in(memory) >= 5, timeout=20, what="rows")
        copied = memory.read_bytes()  # what logrotate's copytruncate copies ...
        os.truncate(memory, 0)  # ... and then cuts (`: > data/memory.csv`)
        truncated = poll(lambda: c.events("csv_file_truncated"), timeout=10, what="detection")
        assert truncated[0]["level"] == "WARNING" and truncated[0]["found_bytes"] == 0
        poll(lambda: rows_in(memory) >= 3, timeout=20, what="rows after the truncation")
        assert c.stop() == 0
    finally:
        c.kill()
    after = memory.read_bytes()
    header = copied[: copied.index(b"\n") + 1]
    assert b"\0" not in after and after.startswith(header) and after.count(header) == 1
    stamps = [
        line.split(b",", 1)[0]
        for line in (copied + after).splitlines()
        if not line.startswith(b"ts,")
    ]
    emitted = [r["ts"].encode() for r in c.stdout_records("memory")]
    assert len(stamps) == len(set(stamps)), "a row was written twice around the truncation"
    # Every row is in logrotate's copy or in the restarted file, except (at most) one written
    # in the instant between the copy and the cut -- copytruncate's own race.
    assert set(stamps) <= set(emitted) and len(set(emitted) - set(stamps)) <= 1


def test_a_file_with_a_nul_hole_keeps_its_valid_rows_at_start(tmp_path: Path) -> None:
    """What a copytruncate racing our write leaves: NUL bytes where the header was."""
    data = tmp_path / "data"
    memory = data / "memory.csv"
    env = {
        "SIC_SINKS": "csv,stdout",
        "SIC_CSV_DIR": str(data),
        "SIC_COLLECTORS": "memory",
        "SIC_CSV_COMPRESS": "none",
    }
    first = Collector(tmp_path, "first", **env)
    try:
        poll(lambda: rows_in(memory) >= 4, timeout=20, what="rows")
        assert first.stop() == 0
    finally:
        first.kill()
    raw = memory.read_bytes()
    header_end = raw.index(b"\n") + 1
    rows = raw[header_end:].splitlines(keepends=True)
    memory.write_bytes(b"\0" * 4096 + b"".join(rows))  # the hole runs into the first row
    second = Collector(tmp_path, "second", **env)
    try:
        poll(lambda: len(second.stdout_records("memory")) >= 2, timeout=20, what="new ticks")
        assert second.stop() == 0
    finally:
        second.kill()
    (salvaged,) = second.events("csv_damage_salvaged")
    assert salvaged["level"] == "ERROR" and salvaged["kept_rows"] == len(rows)
    assert salvaged["removed_bytes"] == 4096
    assert Path(salvaged["set_aside"]).read_bytes() == b"\0" * 4096
    after = memory.read_bytes()
    assert after.startswith(raw)  # header and every earlier row kept, in place
    assert rows_in(memory) == len(rows) + len(second.stdout_records("memory"))
    assert_increasing_per_entity(data)


@pytest.mark.integration
def test_a_real_wall_clock_step_is_detected_and_timestamps_follow_it(tmp_path: Path) -> None:
    """libfaketime steps CLOCK_REALTIME of the collector alone (monotonic time untouched)."""
    if not os.path.exists(FAKETIME):
        pytest.skip(f"{FAKETIME} missing (apt-get install libfaketime)")
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    c = Collector(
        tmp_path,
        "c",
        SIC_SINKS="stdout",
        SIC_COLLECTORS="memory",
        LD_PRELOAD=FAKETIME,
        FAKETIME_TIMESTAMP_FILE=str(offset),
        FAKETIME_NO_CACHE="1",
        FAKETIME_DONT_FAKE_MONOTONIC="1",
    )
    try:
        poll(lambda: len(c.stdout_records("memory")) >= 5, timeout=20, what="ticks")
        offset.write_text("-30s\n")  # an NTP step backwards of 30 s
        (step,) = poll(lambda: c.events("clock_stepped"), timeout=10, what="clock_stepped")
        assert step["level"] == "WARNING" and step["direction"] == "backward"
        assert step["step_seconds"] == pytest.approx(-30, abs=0.5)
        seen = len(c.stdout_records("memory"))
        poll(lambda: len(c.stdout_records("memory")) >= seen + 5, timeout=20, what="ticks")
        assert c.stop() == 0
    finally:
        c.kill()
    stamps = [datetime.fromisoformat(r["ts"]) for r in c.stdout_records("memory")]
    now = datetime.now(UTC)
    # the last samples carry the stepped clock's time (30 s behind ours), not the old anchor
    assert abs((now - stamps[-1]).total_seconds() - 30) < 5, (now, stamps[-1])
    back = [(a, b) for a, b in itertools.pairwise(stamps) if b < a]
    assert len(back) == 1 and (back[0][0] - back[0][1]).total_seconds() == pytest.approx(
        30, abs=0.5
    )
