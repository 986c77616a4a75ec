"""The real collector process writing CSV files through real faults.

1. SIGKILL mid-run, files torn by hand, restart: every file parses, one header each, and the
   timestamps of every entity strictly increase across rotated and active files.
2. (root) The sink alone on a full 64 KiB tmpfs: a batch that fails half-way leaves no partial
   line and, retried after the volume grows, lands exactly once.
3. (root) A tiny tmpfs fills up: CSV writes fail, the collector keeps ticking (the stdout sink
   shows it), and once space is freed the backlog lands in order without a gap.
4. (root + PostgreSQL) The same with the PostgreSQL sink on: the database keeps receiving while
   the CSV volume is full (with its spool elsewhere, or on the same full volume), and in the end
   the CSV files, the database and stdout hold exactly the same tick slots.
5. (root) The CSV volume is read-only at start: only the CSV sink waits, and once the volume
   is writable every sample since the start lands.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import itertools
import json
import os
import signal
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from system_info_collector.errors import TransientSinkError
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.schema import MEASUREMENTS
from system_info_collector.sinks.csv import CsvSink
from tests.helpers import EXE, clean_env, poll
from tests.integration.conftest import PgServer
from tests.integration.promstack import free_port
from tests.unit.test_csv_sink import Clock, expected, keys, read_directory, settings, tick

pytestmark = pytest.mark.integration
SLOT = timedelta(milliseconds=100)
Query = Callable[..., list[tuple[Any, ...]]]


class Collector:
    """``system-info-collector run`` as a child process, stdout and stderr in files."""

    def __init__(self, workdir: Path, name: str, **env: str) -> None:
        self.stdout = workdir / f"{name}.stdout"
        self.stderr = workdir / f"{name}.stderr"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                [EXE, "run"],
                env=clean_env(SIC_INTERVAL="100ms", SIC_LOG_FORMAT="json", **env),
                stdout=out,
                stderr=err,
            )

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = []
        for line in self.stderr.read_text().splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if name is None or item.get("event") == name:
                out.append(item)
        return out

    def stdout_records(self, measurement: str) -> list[dict[str, Any]]:
        text = self.stdout.read_text()  # once: a second read may end a line the first cut
        lines = text.splitlines()
        if lines and not text.endswith("\n"):
            lines = lines[:-1]
        return [r for r in map(json.loads, lines) if r["measurement"] == measurement]

    def stop(self, timeout: float = 20.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def csv_and_stdout(workdir: Path, name: str, data: Path, **more: str) -> Collector:
    """The volume tests' collector: CSV files in ``data`` and stdout, cpu and memory, quick
    retries."""
    return Collector(
        workdir,
        name,
        SIC_SINKS="csv,stdout",
        SIC_CSV_DIR=str(data),
        SIC_CSV_COMPRESS="none",
        SIC_COLLECTORS="cpu,memory",
        SIC_RETRY_INITIAL="50ms",
        SIC_RETRY_MAX_WAIT="300ms",
        **more,
    )


def wait_landed(collector: Collector, data: Path, what: str) -> None:
    """Until the newest memory record on stdout is in the CSV file too."""
    target = collector.stdout_records("memory")[-1]["ts"]
    poll(lambda: target.encode() in (data / "memory.csv").read_bytes(), timeout=20, what=what)


def rows_in(path: Path) -> int:
    try:
        return max(0, path.read_bytes().count(b"\n") - 1)
    except FileNotFoundError:
        return 0


def assert_increasing_per_entity(directory: Path) -> dict[str, int]:
    counts = {}
    for m, spec in MEASUREMENTS.items():
        rows = read_directory(directory, m)  # every file parses; one header each
        series: dict[tuple[object, ...], list[datetime]] = defaultdict(list)
        for r in rows:
            series[(r["host"], *(r[c] for c in spec.entity))].append(r["ts"])  # type: ignore[arg-type]
        for entity, stamps in series.items():
            bad = [(a, b) for a, b in itertools.pairwise(stamps) if b <= a]
            assert not bad, f"{m} {entity}: timestamps not strictly increasing: {bad[:3]}"
        counts[m] = len(rows)
    return counts


def test_sigkill_and_torn_files_then_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"SIC_SINKS": "csv,stdout", "SIC_CSV_DIR": str(data), "SIC_CSV_ROTATE_SIZE": "4KB"}
    first = Collector(tmp_path, "first", **env)
    try:
        poll(
            lambda: (
                rows_in(data / "cpu.csv") >= 3
                and rows_in(data / "memory.csv") >= 3
                and any(p.name.endswith(".gz") for p in data.iterdir())
            ),
            timeout=30,
            what="rows in the CSV files and a compressed rotation",
        )
    finally:
        first.kill()
    assert first.proc.returncode == -signal.SIGKILL
    # Tear the files as a power cut could: half a row, garbage, a row without its newline.
    tears = {
        "cpu": lambda raw: raw + raw[raw.index(b"\n") + 1 :][:37],
        "memory": lambda raw: raw + b"\x00\x00garbage,\n\x00",
        "disk": lambda raw: raw[:-1],
        "diskio": lambda raw: raw[:-1],
    }
    torn = set()
    for m, tear in tears.items():
        path = data / f"{m}.csv"
        if rows_in(path) >= 1:  # disk/diskio: only where this host has such devices
            path.write_bytes(tear(path.read_bytes()))
            torn.add(path.name)
    assert torn

    second = Collector(tmp_path, "second", **env)
    try:
        poll(
            lambda: len(second.stdout_records("memory")) >= 15,
            timeout=30,
            what="ticks after the restart",
        )
        assert second.stop() == 0
    finally:
        second.kill()
    repaired = second.events("csv_torn_tail_repaired")
    assert {Path(e["file"]).name for e in repaired} == torn
    assert all(e["level"] == "ERROR" and e["removed_bytes"] > 0 for e in repaired)
    assert len(list(data.glob("*.csv.torn-*"))) == len(torn)
    assert not second.events("fatal")
    counts = assert_increasing_per_entity(data)
    assert counts["memory"] >= 15 + 3, counts
    # what the second run sampled is all in the files, after what the first run left
    second_ts = [datetime.fromisoformat(r["ts"]) for r in second.stdout_records("memory")]
    assert [r["ts"] for r in read_directory(data, "memory")][-len(second_ts) :] == second_ts


@contextlib.contextmanager
def tmpfs(size: str) -> Iterator[Path]:
    """A fresh tmpfs of ``size`` mounted on a temporary directory (skip unless root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (run the integration suite as root)")
    mnt = Path(tempfile.mkdtemp(prefix="sic-csv-tmpfs-"))
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        mnt.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
        mnt.rmdir()


def test_sink_on_a_full_filesystem_cuts_partial_writes_and_retries_once() -> None:
    """CsvSink alone on a 64 KiB tmpfs: ENOSPC mid-batch, then the volume grows."""
    three = ("cpu", "memory", "diskio")
    with tmpfs("64k") as mnt:
        sink = CsvSink(settings(mnt, compress="none"), metrics=Metrics(), clock=Clock())
        sink.open()
        try:
            written: list[list[Record]] = []
            for i in itertools.count():
                batch = tick(i, three)
                try:
                    sink.write(batch)
                except TransientSinkError as exc:
                    assert "No space left on device" in str(exc)
                    break
                written.append(batch)
            for m in three:  # no partial line left behind
                assert (mnt / f"{m}.csv").read_bytes().endswith(b"\n")
            with pytest.raises(TransientSinkError):
                sink.write(batch)  # still full: the worker retries the same batch object
            # space comes back (the operator grows the volume): the batch lands exactly once
            subprocess.run(["mount", "-o", "remount,size=1m", str(mnt)], check=True)
            sink.write(batch)
            sink.write(tick(i + 1, three))
            written += [batch, tick(i + 1, three)]
            for m in three:
                assert keys(read_directory(mnt, m), m) == expected(written, m)
        finally:
            sink.close()


@pytest.fixture
def tiny_tmpfs() -> Iterator[Path]:
    with tmpfs("256k") as mnt:
        yield mnt


def fill(path: Path) -> int:
    """Write zeros to ``path`` until the filesystem is full; returns the bytes written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    written = 0
    try:
        while True:
            try:
                written += os.write(fd, b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return written
    finally:
        os.close(fd)


def test_full_filesystem_backlog_lands_in_order(tmp_path: Path, tiny_tmpfs: Path) -> None:
    data = tiny_tmpfs / "data"
    collector = csv_and_stdout(tmp_path, "full", data)
    ballast = tiny_tmpfs / "ballast"
    try:
        poll(lambda: rows_in(data / "memory.csv") >= 5, timeout=20, what="first CSV rows")
        assert fill(ballast) > 0
        failed = poll(
            lambda: collector.events("sink_write_failed"),
            timeout=30,
            what="the CSV sink to report the full disk",
        )
        assert failed[0]["sink"] == "csv" and "No space left on device" in failed[0]["error"]
        # the collector keeps sampling while the CSV sink cannot write
        ticks_at_failure = len(collector.stdout_records("memory"))
        poll(
            lambda: len(collector.stdout_records("memory")) >= ticks_at_failure + 15,
            timeout=20,
            what="ticks while the disk is full",
        )
        csv_rows_during_outage = rows_in(data / "memory.csv")
        assert len(collector.stdout_records("memory")) > csv_rows_during_outage
        ballast.unlink()
        poll(lambda: collector.events("sink_recovered"), timeout=20, what="sink_recovered")
        wait_landed(collector, data, "the backlog to land")
        assert collector.stop() == 0
    finally:
        collector.kill()
        ballast.unlink(missing_ok=True)
    stdout_ts = [datetime.fromisoformat(r["ts"]) for r in collector.stdout_records("memory")]
    csv_ts = [r["ts"] for r in read_directory(data, "memory")]
    assert csv_ts == stdout_ts  # every sample, once, in order
    skipped = sum(e["skipped_slots"] for e in collector.events("tick_overrun"))
    gaps = sum(round((b - a) / SLOT) - 1 for a, b in itertools.pairwise(csv_ts))
    assert gaps == skipped, f"{gaps} missing 100ms slots, {skipped} skipped by overruns"
    assert not collector.events("sink_backlog_overflow")
    assert_increasing_per_entity(data)


@pytest.mark.parametrize("spool", ["elsewhere", "on the full volume"])
def test_full_csv_volume_while_the_database_sink_keeps_receiving(
    tmp_path: Path, tiny_tmpfs: Path, pg_up: PgServer, db_schema: str, query: Query, spool: str
) -> None:
    """Issue 3: the CSV volume fills up; sampling goes on, PostgreSQL keeps receiving; after
    space is freed both hold exactly the same rows: every tick slot once, in order, no gap."""
    data = tiny_tmpfs / "data"
    env = {
        "SIC_SINKS": "csv,stdout,postgres",
        "SIC_CSV_DIR": str(data),
        "SIC_CSV_COMPRESS": "none",
        "SIC_COLLECTORS": "cpu,memory",
        "SIC_RETRY_INITIAL": "50ms",
        "SIC_RETRY_MAX_WAIT": "300ms",
        "SIC_DB_DSN": pg_up.dsn(),
        "SIC_DB_SCHEMA": db_schema,
        "SIC_DB_FLUSH_INTERVAL": "100ms",
    }
    if spool == "elsewhere":
        env["SIC_DB_SPOOL_DIR"] = str(tmp_path / "spool")
    else:  # the default <csv dir>/.spool, small segments so committed ones are trimmed often
        env["SIC_DB_SPOOL_MAX_SIZE"] = "64KB"
    collector = Collector(tmp_path, "both", **env)
    ballast = tiny_tmpfs / "ballast"
    try:
        poll(
            lambda: rows_in(data / "memory.csv") >= 5 and db_memory_ts(query, db_schema),
            timeout=20,
            what="first rows in the CSV file and the database",
        )
        assert fill(ballast) > 0
        failed = poll(
            lambda: [e for e in collector.events("sink_write_failed") if e["sink"] == "csv"],
            timeout=30,
            what="the CSV sink to report the full disk",
        )
        assert "No space left on device" in failed[0]["error"]
        csv_rows = rows_in(data / "memory.csv")
        in_db = len(db_memory_ts(query, db_schema))
        # the database keeps receiving while the CSV files cannot grow
        poll(
            lambda: len(db_memory_ts(query, db_schema)) >= in_db + 15,
            timeout=20,
            what="rows reaching PostgreSQL while the CSV volume is full",
        )
        assert rows_in(data / "memory.csv") == csv_rows, "the CSV file grew on a full volume"
        ballast.unlink()
        poll(
            lambda: [e for e in collector.events("sink_recovered") if e["sink"] == "csv"],
            timeout=20,
            what="the CSV sink to recover",
        )
        target = collector.stdout_records("memory")[-1]["ts"]
        poll(
            lambda: target.encode() in (data / "memory.csv").read_bytes(),
            timeout=20,
            what="the CSV backlog to land",
        )
        assert collector.stop() == 0
    finally:
        collector.kill()
        ballast.unlink(missing_ok=True)
    assert not collector.events("sink_backlog_overflow")
    assert not collector.events("sink_batch_rejected")
    for m in ("cpu", "memory"):
        spec = MEASUREMENTS[m]
        sampled = [
            (datetime.fromisoformat(r["ts"]), *(r[c] for c in spec.entity))
            for r in collector.stdout_records(m)
        ]
        in_csv = [(r["ts"], *(r[c] for c in spec.entity)) for r in read_directory(data, m)]
        order = ", ".join(f'"{c}"' for c in ("ts", *spec.entity))
        in_pg = [
            tuple(r) for r in query(f'SELECT {order} FROM "{db_schema}"."{m}" ORDER BY {order}')
        ]
        assert in_csv == sampled, f"{m}: the CSV files differ from what was sampled"
        assert in_pg == sorted(sampled), f"{m}: PostgreSQL differs from what was sampled"
    slots = [ts for ts, *_ in in_pg]  # memory: one row per tick
    assert len(slots) == len(set(slots))
    skipped = sum(e["skipped_slots"] for e in collector.events("tick_overrun"))
    gaps = sum(round((b - a) / SLOT) - 1 for a, b in itertools.pairwise(slots))
    assert gaps == skipped, f"{gaps} missing 100ms slots, {skipped} skipped by overruns"
    if spool == "on the full volume":  # the spool could not be written either: memory took it
        assert [e for e in collector.events("spool_unavailable") if e["level"] == "ERROR"]


def db_memory_ts(query: Query, schema: str) -> list[datetime]:
    try:
        return [r[0] for r in query(f'SELECT ts FROM "{schema}".memory ORDER BY ts')]
    except psycopg.errors.UndefinedTable:
        return []


def test_a_read_only_csv_volume_at_start_stops_only_the_csv_sink(tmp_path: Path) -> None:
    """The CSV volume is read-only when the collector starts (a disk remounted read-only after
    errors, a volume mounted wrongly): the CSV sink cannot lock its directory, so it waits --
    its records held in memory -- while sampling, the other sinks and /readyz go on (not
    ready, naming the directory); once the volume is writable the lock is taken and every
    sample since the start lands in the CSV files, in order."""
    with tmpfs("4m") as mnt:
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        data = mnt / "data"
        port = free_port()
        collector = csv_and_stdout(tmp_path, "readonly", data, SIC_HTTP_LISTEN=f"127.0.0.1:{port}")
        try:
            (report,) = poll(
                lambda: collector.events("directory_unavailable"),
                timeout=20,
                what="the ERROR naming the read-only directory",
            )
            assert report["level"] == "ERROR" and report["sinks"] == ["csv"]
            assert report["directory"] == str(data) and "Read-only" in report["error"]
            poll(
                lambda: len(collector.stdout_records("memory")) >= 10,
                timeout=20,
                what="ticks on stdout while the CSV volume is read-only",
            )
            status, body = readyz(port)
            assert status == 503 and body["status"] == "directory unavailable"
            assert body["locks"][0]["state"] == "unavailable" and str(data) in body["reason"]
            assert not data.exists()
            subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=True)
            poll(lambda: collector.events("directory_available"), timeout=20, what="the lock")
            wait_landed(collector, data, "the records held in memory to land")
            poll(lambda: readyz(port)[0] == 200, timeout=20, what="/readyz 200")
            assert collector.stop() == 0
        finally:
            collector.kill()
        stdout_ts = [datetime.fromisoformat(r["ts"]) for r in collector.stdout_records("memory")]
        assert [r["ts"] for r in read_directory(data, "memory")] == stdout_ts  # none lost
        assert not collector.events("sink_backlog_overflow")


def readyz(port: int) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/readyz")
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()
