"""CSV sink on real files: format, retry safety, rotation, compression, retention, long runs.

Every test reads the directory back with the standard library only (csv + gzip), the way a
backup job or a script would, and compares it with exactly what was written.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from system_info_collector.config import CsvSettings
from system_info_collector.errors import TransientSinkError
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.schema import MEASUREMENTS
from system_info_collector.sinks.csv import CsvSink, format_float

T0 = datetime(2026, 11, 24, 0, 0, 0, tzinfo=UTC)
ROTATED = re.compile(r"^(\w+)\.(\d{8}T\d{6}Z)-(\d{8}T\d{6}Z)(_\d{3})?\.csv(\.gz)?$")


# -- helpers shared with tests/unit/test_csv_recovery.py and tests/integration ---------------
class Clock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now


def record(measurement: str, ts: datetime, n: int, entity: str = "") -> Record:
    """A valid-looking record whose every field encodes ``n`` (so rows can be told apart)."""
    spec = MEASUREMENTS[measurement]
    tags = {c: (entity or f"{c}0") for c in spec.entity}
    tags.update({c: f"{c}-x" for c in spec.labels})
    tags["site"] = 'a "quoted", comma'
    fields: dict[str, float | int] = {
        f.name: (n if f.sql_type == "bigint" else n + 0.25) for f in spec.fields
    }
    return Record(measurement, ts, "host-1", tags, fields, interval_ms=1000)


def tick(
    i: int, measurements: tuple[str, ...] = ("cpu", "memory"), step: float = 1.0
) -> list[Record]:
    ts = T0 + timedelta(seconds=i * step)
    out: list[Record] = []
    for m in measurements:
        entities = ("cpu-total", "cpu0") if m == "cpu" else ("",)
        out.extend(record(m, ts, i, e) for e in entities)
    return out


def settings(directory: Path, **overrides: object) -> CsvSettings:
    base = CsvSettings(directory=str(directory), fsync="never", retention=1e9)
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def typed(measurement: str, row: list[str]) -> dict[str, object]:
    """One CSV row converted back to Python types by the schema (fails loudly if malformed)."""
    spec = MEASUREMENTS[measurement]
    assert len(row) == len(spec.columns), row
    out: dict[str, object] = dict(zip(spec.columns, row, strict=True))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", row[0]), row[0]
    out["ts"] = datetime.fromisoformat(row[0])
    for f in spec.fields:
        out[f.name] = (
            int(row[spec.columns.index(f.name)])
            if f.sql_type == "bigint"
            else float(row[spec.columns.index(f.name)])
        )
    out["tags"] = json.loads(row[spec.columns.index("tags")])
    interval = row[spec.columns.index("interval_ms")]
    out["interval_ms"] = int(interval) if interval else None  # empty: unknown
    return out


def files_of(directory: Path, measurement: str) -> list[Path]:
    """Rotated files (sorted by name = by time) then the active file."""
    rotated = sorted(
        p for p in directory.iterdir() if (m := ROTATED.match(p.name)) and m[1] == measurement
    )
    active = directory / f"{measurement}.csv"
    return rotated + ([active] if active.exists() else [])


def read_file(path: Path, measurement: str) -> list[dict[str, object]]:
    raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    assert raw.endswith(b"\n") or raw == b"", f"{path} does not end with a newline"
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline=""), strict=True))
    assert rows, f"{path} is empty"
    assert rows[0] == list(MEASUREMENTS[measurement].columns), f"{path}: bad header {rows[0]}"
    assert all(r != rows[0] for r in rows[1:]), f"{path}: a second header"
    return [typed(measurement, r) for r in rows[1:]]


def read_directory(directory: Path, measurement: str) -> list[dict[str, object]]:
    return [row for p in files_of(directory, measurement) for row in read_file(p, measurement)]


def keys(rows: list[dict[str, object]], measurement: str) -> list[tuple[object, ...]]:
    """(ts, entity labels, first field) of each row read back."""
    spec = MEASUREMENTS[measurement]
    return [(r["ts"], *(r[c] for c in spec.entity), r[spec.fields[0].name]) for r in rows]


def expected(batches: list[list[Record]], measurement: str) -> list[tuple[object, ...]]:
    """The same key for every record written, in order."""
    spec = MEASUREMENTS[measurement]
    return [
        (r.ts, *(r.tags[c] for c in spec.entity), r.fields[spec.fields[0].name])
        for b in batches
        for r in b
        if r.measurement == measurement
    ]


@pytest.fixture
def sink_factory(tmp_path: Path) -> Iterator[Callable[..., CsvSink]]:
    sinks: list[CsvSink] = []

    def make(**overrides: object) -> CsvSink:
        clock = overrides.pop("clock", Clock())
        s = CsvSink(settings(tmp_path / "data", **overrides), metrics=Metrics(), clock=clock)  # type: ignore[arg-type]
        sinks.append(s)
        return s

    yield make
    for s in sinks:
        s.maintainer.stop()
        for a in list(s._active.values()):
            os.close(a.fd)
        s._active.clear()


# -- format ----------------------------------------------------------------------------------
def test_format_header_types_quoting_and_timestamps(sink_factory, tmp_path: Path) -> None:
    sink: CsvSink = sink_factory()
    sink.open()
    ts = T0 + timedelta(milliseconds=1234)
    rec = Record(
        "disk",
        ts,
        "h",
        {"mountpoint": "/srv/a,b", "device": "vda", "fstype": "ext4", "env": "prod"},
        {
            f.name: (10**12 if f.sql_type == "bigint" else 0.00001)
            for f in MEASUREMENTS["disk"].fields
        },
    )
    sink.write([rec])
    sink.close()
    text = (tmp_path / "data" / "disk.csv").read_text()
    header, line, rest = text.split("\n")
    assert rest == ""
    assert header == ",".join(MEASUREMENTS["disk"].columns)
    assert line.startswith('2026-11-24T00:00:01.234Z,h,"/srv/a,b",vda,ext4,1000000000000,')
    assert "0.00001" in line and "e-" not in line  # plain decimal, never exponent notation
    assert line.endswith(',"{""env"":""prod""}",')  # interval_ms unknown (0): an empty cell
    (row,) = read_file(tmp_path / "data" / "disk.csv", "disk")
    assert row["ts"] == ts and row["total_bytes"] == 10**12 and row["used_percent"] == 0.00001
    assert row["mountpoint"] == "/srv/a,b" and row["tags"] == {"env": "prod"}


@pytest.mark.parametrize("value", [0.0, 1.5, 1e-05, 1e16, 123456789.123, 1 / 3, 5e-324, -2.5e-7])
def test_floats_are_plain_decimals_that_round_trip(value: float) -> None:
    text = format_float(value)
    assert "e" not in text and "." in text
    assert float(text) == value


def test_newlines_in_labels_never_break_a_line(sink_factory, tmp_path: Path) -> None:
    sink: CsvSink = sink_factory()
    sink.open()
    rec = record("disk", T0, 1)
    rec = rec._replace(tags={**rec.tags, "mountpoint": "/mnt/a\nb"})
    sink.write([rec])
    lines = (tmp_path / "data" / "disk.csv").read_bytes().split(b"\n")
    assert len(lines) == 3 and b"/mnt/a\\012b" in lines[1]


def test_files_get_the_configured_mode_whatever_the_umask(sink_factory, tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        sink: CsvSink = sink_factory(file_mode=0o640, rotate_size=600, compress="gzip")
        sink.open()
        for i in range(6):
            sink.write(tick(i, ("memory",)))
        assert sink.flush_maintenance()
    finally:
        os.umask(old)
    files = list((tmp_path / "data").iterdir())
    assert any(p.name.endswith(".gz") for p in files) and (tmp_path / "data/memory.csv").exists()
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o640, p


# -- writing, retries ------------------------------------------------------------------------
@pytest.mark.parametrize("fsync", ["tick", "rotate", "never"])
def test_rows_metrics_and_one_header_across_restarts(sink_factory, tmp_path, fsync) -> None:
    batches = [tick(i) for i in range(5)]
    first: CsvSink = sink_factory(fsync=fsync, backlog=123)
    assert first.name == "csv"
    first.open()
    for b in batches[:3]:
        first.write(b)
    first.close()
    second: CsvSink = sink_factory(fsync=fsync)
    second.open()
    for b in batches[3:]:
        second.write(b)
    second.close()
    for m in ("cpu", "memory"):
        assert keys(read_directory(tmp_path / "data", m), m) == expected(batches, m)
    size = sum(p.stat().st_size for p in (tmp_path / "data").iterdir())
    written = sum(
        s._metrics.registry.get_sample_value("sic_csv_written_bytes_total") or 0
        for s in (first, second)
    )
    assert written == size


@pytest.mark.parametrize("damage", ["torn tail", "NUL hole before the header"])
def test_damage_found_at_start_is_set_aside_and_counted(sink_factory, tmp_path, damage) -> None:
    batches = [tick(i) for i in range(3)]
    first: CsvSink = sink_factory()
    first.open()
    for b in batches:
        first.write(b)
    first.close()
    path = tmp_path / "data" / "memory.csv"
    intact = path.read_bytes()
    junk = b"2026-01-01T00:00:00.000Z,torn-half-row" if damage == "torn tail" else b"\0" * 333
    path.write_bytes(intact + junk if damage == "torn tail" else junk + intact)
    second: CsvSink = sink_factory()
    second.open()
    second.write(tick(3))
    second.close()
    value = second._metrics.registry.get_sample_value
    assert value("sic_csv_damage_events_total") == 1
    [torn] = [p.read_bytes() for p in (tmp_path / "data").glob("memory.csv.torn-*")]
    assert junk in torn  # (a salvage also sets aside the old header line it rewrites)
    assert value("sic_csv_damaged_bytes_total") == len(torn)
    assert keys(read_directory(tmp_path / "data", "memory"), "memory") == expected(
        [*batches, tick(3)], "memory"
    )


def test_a_retried_batch_is_not_duplicated_after_a_real_failure(sink_factory, tmp_path) -> None:
    """cpu rows land, memory.csv cannot be opened (a directory is in the way): EISDIR."""
    sink: CsvSink = sink_factory()
    sink.open()
    sink.write(tick(0))
    (tmp_path / "data" / "memory.csv").unlink()
    (tmp_path / "data" / "memory.csv").mkdir()
    sink._active.pop("memory")
    batch = tick(1)
    with pytest.raises(TransientSinkError, match=r"memory\.csv"):
        sink.write(batch)
    with pytest.raises(TransientSinkError):
        sink.write(batch)  # still failing: the worker retries the same batch object
    (tmp_path / "data" / "memory.csv").rmdir()
    sink.write(batch)
    sink.write(tick(2))
    assert keys(read_directory(tmp_path / "data", "cpu"), "cpu") == expected(
        [tick(0), tick(1), tick(2)], "cpu"
    )
    memory = read_directory(tmp_path / "data", "memory")
    assert keys(memory, "memory") == expected([tick(1), tick(2)], "memory")


def test_a_vanished_directory_is_recreated(sink_factory, tmp_path: Path) -> None:
    sink: CsvSink = sink_factory()
    sink.open()
    sink.write(tick(0))
    shutil.rmtree(tmp_path / "data")
    sink.write(tick(1))
    assert keys(read_directory(tmp_path / "data", "memory"), "memory") == expected(
        [tick(1)], "memory"
    )


def test_an_unwritable_directory_is_a_transient_error_with_the_path(sink_factory, tmp_path) -> None:
    (tmp_path / "data").write_text("a file where the directory should be")
    sink: CsvSink = sink_factory()
    with pytest.raises(
        TransientSinkError, match="cannot open CSV directory: exists but is not a directory"
    ):
        sink.open()
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(TransientSinkError, match=r"memory\.csv"):
            sink.write(tick(0, ("memory",)))
    assert len(os.listdir("/proc/self/fd")) == fds  # no descriptor leaked by the failures
    (tmp_path / "data").unlink()
    sink.open()
    sink.write(tick(0, ("memory",)))
    assert len(read_directory(tmp_path / "data", "memory")) == 1


def test_check_reports_directory_writability_and_free_space(sink_factory, tmp_path) -> None:
    ok = {r.name: r for r in sink_factory().check()}
    assert all(r.ok for r in ok.values()), ok
    assert set(ok) == {"sink csv directory", "sink csv writable", "sink csv free space"}
    assert os.listdir(tmp_path / "data") == []  # the probe file was removed
    (tmp_path / "data").rmdir()
    (tmp_path / "data").write_text("x")
    (bad,) = sink_factory().check()
    assert not bad.ok and "exists but is not a directory" in bad.detail


# -- rotation, compression, retention ----------------------------------------------------------
def test_rotation_by_size_names_by_first_and_last_row(sink_factory, tmp_path: Path) -> None:
    sink: CsvSink = sink_factory(rotate_size=600, compress="none")
    sink.open()
    batches = [tick(i, ("memory",), step=10) for i in range(20)]
    for b in batches:
        sink.write(b)
    data = tmp_path / "data"
    rotated = files_of(data, "memory")[:-1]
    assert len(rotated) >= 3
    for p in rotated:
        assert p.stat().st_size <= 600
        rows = read_file(p, "memory")
        m = ROTATED.match(p.name)
        assert m is not None and not m[5]
        assert m[2] == rows[0]["ts"].strftime("%Y%m%dT%H%M%SZ")  # type: ignore[attr-defined]
        assert m[3] == rows[-1]["ts"].strftime("%Y%m%dT%H%M%SZ")  # type: ignore[attr-defined]
    assert keys(read_directory(data, "memory"), "memory") == expected(batches, "memory")
    assert sink._metrics.registry.get_sample_value("sic_csv_rotations_total") == len(rotated)


def test_rotation_by_age_with_an_injected_clock(sink_factory, tmp_path: Path) -> None:
    clock = Clock()
    sink: CsvSink = sink_factory(rotate_interval=60.0, compress="none", clock=clock)
    sink.open()
    for i in range(3):  # files opened at t=0; rows at 0, 30, 59.9 s
        clock.now = T0.timestamp() + [0, 30, 59.9][i]
        sink.write([record("memory", datetime.fromtimestamp(clock.now, UTC), i)])
    assert len(files_of(tmp_path / "data", "memory")) == 1
    clock.now = T0.timestamp() + 60
    sink.write([record("memory", T0 + timedelta(seconds=60), 3)])
    names = [p.name for p in files_of(tmp_path / "data", "memory")]
    assert names == ["memory.20261124T000000Z-20261124T000059Z.csv", "memory.csv"]
    clock.now += 59
    sink.write([record("memory", T0 + timedelta(seconds=119), 4)])
    assert len(files_of(tmp_path / "data", "memory")) == 2


def test_same_second_rotations_get_sortable_unique_names(sink_factory, tmp_path: Path) -> None:
    sink: CsvSink = sink_factory(rotate_size=1, compress="none")
    sink.open()
    batches = [tick(i, ("memory",), step=0.1) for i in range(5)]  # all within one second
    for b in batches:
        sink.write(b)
    names = [p.name for p in files_of(tmp_path / "data", "memory")]
    assert names[:4] == [
        "memory.20261124T000000Z-20261124T000000Z.csv",
        "memory.20261124T000000Z-20261124T000000Z_001.csv",
        "memory.20261124T000000Z-20261124T000000Z_002.csv",
        "memory.20261124T000000Z-20261124T000000Z_003.csv",
    ]
    assert keys(read_directory(tmp_path / "data", "memory"), "memory") == expected(
        batches, "memory"
    )


def test_compressed_rotations_concatenate_to_exactly_what_was_written(sink_factory, tmp_path):
    sink: CsvSink = sink_factory(rotate_size=1500, compress="gzip")
    sink.open()
    batches = [tick(i, ("cpu", "memory", "disk", "diskio")) for i in range(60)]
    for b in batches:
        sink.write(b)
    assert sink.flush_maintenance()
    data = tmp_path / "data"
    assert not [
        p for p in data.iterdir() if p.name.endswith((".tmp", ".csv")) and p.name.count(".") > 1
    ]
    for m in ("cpu", "memory", "disk", "diskio"):
        files = files_of(data, m)
        assert len(files) > 2 and all(p.name.endswith(".csv.gz") for p in files[:-1])
        assert keys(read_directory(data, m), m) == expected(batches, m)


def test_leftovers_of_a_crash_during_compression_are_finished(sink_factory, tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    header = ",".join(MEASUREMENTS["memory"].columns) + "\n"
    body = header + "2026-11-24T00:00:00.000Z,h" + ",1" * 12 + ",{}\n"
    # 1: renamed but never compressed; 2: crashed mid-compression (.tmp); 3: crashed after the
    # rename of the .gz, before the unlink of the .csv
    (data / "memory.20261124T000000Z-20261124T000001Z.csv").write_text(body)
    (data / "memory.20261124T000002Z-20261124T000003Z.csv").write_text(body)
    (data / "memory.20261124T000002Z-20261124T000003Z.csv.gz.tmp").write_bytes(b"\x1f\x8b")
    (data / "memory.20261124T000004Z-20261124T000005Z.csv").write_text(body)
    (data / "memory.20261124T000004Z-20261124T000005Z.csv.gz").write_bytes(
        gzip.compress(body.encode())
    )
    sink: CsvSink = sink_factory(compress="gzip")
    sink.open()
    assert sink.flush_maintenance()
    assert sorted(p.name for p in data.iterdir()) == [
        "memory.20261124T000000Z-20261124T000001Z.csv.gz",
        "memory.20261124T000002Z-20261124T000003Z.csv.gz",
        "memory.20261124T000004Z-20261124T000005Z.csv.gz",
    ]
    for p in data.iterdir():
        assert gzip.decompress(p.read_bytes()).decode() == body


def test_retention_by_age_never_touches_the_active_file(sink_factory, tmp_path) -> None:
    clock = Clock(T0 + timedelta(days=10))
    data = tmp_path / "data"
    data.mkdir()
    old = data / "memory.20261120T000000Z-20261126T000000Z.csv.gz"  # last row 8 days ago
    young = data / "memory.20261126T000000Z-20261128T000000Z.csv.gz"  # 6 days ago
    torn_old = data / f"memory.csv.torn-{int((T0 - timedelta(days=1)).timestamp())}"
    for p in (old, young, torn_old):
        p.write_bytes(b"x")
    (data / "unrelated.csv").write_text("not ours")
    sink: CsvSink = sink_factory(retention=7 * 86400.0, clock=clock)
    sink.open()
    sink.write(tick(0, ("memory",)))  # rows from 10 days ago, but the active file stays
    assert sink.flush_maintenance()
    assert sorted(p.name for p in data.iterdir()) == sorted(
        ["memory.csv", young.name, "unrelated.csv"]
    )


def test_retention_by_total_size_deletes_oldest_first(sink_factory, tmp_path) -> None:
    sink: CsvSink = sink_factory(rotate_size=1000, compress="none", max_total_size=5000)
    sink.open()
    batches = [tick(i, ("memory",), step=10) for i in range(40)]
    for b in batches:
        sink.write(b)
    assert sink.flush_maintenance()
    data = tmp_path / "data"
    assert sum(p.stat().st_size for p in data.iterdir()) <= 5000
    rows = read_directory(data, "memory")
    # what is left is the newest, contiguous tail of what was written
    assert keys(rows, "memory") == expected(batches, "memory")[-len(rows) :]
    assert len(rows) >= 5 and (data / "memory.csv").exists()


def test_no_fd_or_memory_growth_across_2000_rotations(sink_factory, tmp_path) -> None:
    sink: CsvSink = sink_factory(rotate_size=1, compress="gzip", max_total_size=200_000)
    sink.open()

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    def rss_kib() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    for i in range(200):  # warm up: caches, the maintenance thread, first allocations
        sink.write(tick(i, ("memory",), step=1))
    assert sink.flush_maintenance()
    fds_before, rss_before = fds(), rss_kib()
    for i in range(200, 2200):
        sink.write(tick(i, ("memory",), step=1))
    assert sink.flush_maintenance()
    assert sink._metrics.registry.get_sample_value("sic_csv_rotations_total") == 2199
    assert fds() == fds_before
    assert rss_kib() - rss_before < 4096, "RSS grew by more than 4 MiB"
    rows = read_directory(tmp_path / "data", "memory")
    everything = expected([tick(i, ("memory",)) for i in range(2200)], "memory")
    assert keys(rows, "memory") == everything[-len(rows) :]
