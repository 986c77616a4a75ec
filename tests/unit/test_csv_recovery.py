"""Crash recovery of the active CSV files: a file cut at any byte is repaired at open().

Intact rows are kept, the torn tail is set aside in ``<file>.torn-<ts>`` with an ERROR log,
the next rows follow on a fresh line, and there is never a second header.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from system_info_collector.metrics import Metrics
from system_info_collector.schema import MEASUREMENTS
from system_info_collector.sinks.csv import CsvSink
from tests.unit.test_csv_sink import (
    Clock,
    expected,
    files_of,
    keys,
    read_directory,
    read_file,
    settings,
    tick,
)

MEM = ("memory",)


def run_once(directory: Path, *batches: list[Any], **overrides: object) -> CsvSink:
    sink = CsvSink(settings(directory, **overrides), metrics=Metrics(), clock=Clock())
    sink.open()
    for b in batches:
        sink.write(b)
    sink.close()
    return sink


def torn_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.torn-*"))


def test_a_file_cut_at_every_byte_offset_is_repaired(tmp_path: Path, events) -> None:
    source = tmp_path / "source"
    run_once(source, *(tick(i, MEM) for i in range(3)))
    full = (source / "memory.csv").read_bytes()
    header_end = full.index(b"\n") + 1
    line_ends = [i + 1 for i, b in enumerate(full) if b == ord("\n")][1:]
    data = tmp_path / "data"
    data.mkdir()
    for cut in range(len(full) + 1):
        for p in data.iterdir():
            p.unlink()
        (data / "memory.csv").write_bytes(full[:cut])
        events.clear()
        run_once(data, tick(9, MEM))
        kept = sum(1 for e in line_ends if e <= cut)
        good = line_ends[kept - 1] if kept else (header_end if cut >= header_end else 0)
        rows = read_file(data / "memory.csv", "memory")  # one header, parses, typed
        assert keys(rows, "memory") == expected(
            [tick(i, MEM) for i in [*range(kept), 9]], "memory"
        ), cut
        torn = torn_files(data)
        repaired = [e for e in events if e.get("event") == "csv_torn_tail_repaired"]
        if good == cut:
            assert torn == [] and repaired == [], cut
        else:
            assert len(torn) == 1 and torn[0].read_bytes() == full[good:cut], cut
            (e,) = repaired
            assert e["level"] == "ERROR" and e["kept_bytes"] == good
            assert e["removed_bytes"] == cut - good and e["set_aside"] == str(torn[0])


@pytest.mark.parametrize(
    "garbage",
    [
        b"garbage\n",
        b"\x00\x00\x00\x00",
        b"\xff\xfe,not utf-8\n",
        b"2026-11-24T00:00:09.000Z,h,1,2\n",  # too few columns
        b'2026-11-24T00:00:09.000Z,"unterminated\n',
        b"not-a-time" + b",1" * (len(MEASUREMENTS["memory"].columns) - 1) + b"\n",
        b"x\ny\nz\n",  # several bad lines
    ],
)
def test_garbage_after_the_last_row_is_set_aside(tmp_path: Path, garbage: bytes) -> None:
    data = tmp_path / "data"
    run_once(data, tick(0, MEM), tick(1, MEM))
    intact = (data / "memory.csv").read_bytes()
    with open(data / "memory.csv", "ab") as f:
        f.write(garbage)
    run_once(data, tick(2, MEM))
    assert keys(read_directory(data, "memory"), "memory") == expected(
        [tick(0, MEM), tick(1, MEM), tick(2, MEM)], "memory"
    )
    (torn,) = torn_files(data)
    assert torn.read_bytes() == garbage
    assert (data / "memory.csv").read_bytes().startswith(intact)


def test_a_complete_row_without_its_newline_is_set_aside(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run_once(data, tick(0, MEM), tick(1, MEM))
    raw = (data / "memory.csv").read_bytes()
    (data / "memory.csv").write_bytes(raw[:-1])
    run_once(data, tick(2, MEM))
    assert keys(read_directory(data, "memory"), "memory") == expected(
        [tick(0, MEM), tick(2, MEM)], "memory"
    )
    assert torn_files(data)[0].read_bytes() == raw[raw.rindex(b"\n", 0, -1) + 1 : -1]


def test_a_foreign_first_line_sets_the_whole_file_aside(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    junk = b"\x00\x01binary junk\nmore\n"
    (data / "memory.csv").write_bytes(junk)
    run_once(data, tick(0, MEM))
    assert keys(read_directory(data, "memory"), "memory") == expected([tick(0, MEM)], "memory")
    assert [p.read_bytes() for p in torn_files(data)] == [junk]


def test_a_header_change_rotates_the_old_file_first(tmp_path: Path, events) -> None:
    data = tmp_path / "data"
    data.mkdir()
    old_columns = [c for c in MEASUREMENTS["memory"].columns if c != "shared_bytes"]
    lines = [",".join(old_columns)] + [
        f"2026-11-20T00:00:0{i}.000Z,h" + ",1" * (len(old_columns) - 3) + ",{}" for i in range(3)
    ]
    old = ("\n".join(lines) + "\n").encode()
    (data / "memory.csv").write_bytes(old)
    run_once(data, tick(0, MEM), compress="none")
    rotated = data / "memory.20261120T000000Z-20261120T000002Z.csv"
    assert rotated.read_bytes() == old
    assert files_of(data, "memory") == [rotated, data / "memory.csv"]
    assert len(read_file(data / "memory.csv", "memory")) == 1
    assert any(e.get("event") == "csv_header_changed" for e in events)


def test_an_old_header_without_rows_is_replaced(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "memory.csv").write_text("ts,host,old_column,tags\n")
    run_once(data, tick(0, MEM))
    assert sorted(p.name for p in data.iterdir()) == ["memory.csv"]
    assert len(read_file(data / "memory.csv", "memory")) == 1


def test_recovery_reads_only_the_tail_of_a_large_file(tmp_path: Path) -> None:
    """A 20 MB active file with a torn tail: repaired in place; the next rows follow."""
    data = tmp_path / "data"
    run_once(data, tick(0, MEM))
    row = (data / "memory.csv").read_bytes().split(b"\n")[1] + b"\n"
    with open(data / "memory.csv", "ab") as f:
        f.write(row * (20_000_000 // len(row)))
        f.write(row[:17])
    size = (data / "memory.csv").stat().st_size
    run_once(data, tick(1, MEM))
    assert (data / "memory.csv").stat().st_size == size - 17 + len(row)
    assert torn_files(data)[0].read_bytes() == row[:17]


def test_a_nul_hole_where_the_header_was_keeps_every_valid_row(tmp_path: Path, events) -> None:
    """logrotate's copytruncate cut the file while we wrote on at our offset."""
    data = tmp_path / "data"
    run_once(data, *(tick(i, MEM) for i in range(4)))
    raw = (data / "memory.csv").read_bytes()
    header_end = raw.index(b"\n") + 1
    rows = raw[header_end:].splitlines(keepends=True)
    junk = b"garbage,\n"
    (data / "memory.csv").write_bytes(b"\0" * 300 + rows[0] + rows[1] + junk + rows[2] + rows[3])
    run_once(data, tick(9, MEM))
    assert keys(read_directory(data, "memory"), "memory") == expected(
        [tick(i, MEM) for i in [0, 1, 2, 3, 9]], "memory"
    )
    assert (data / "memory.csv").read_bytes().startswith(raw)
    (torn,) = torn_files(data)
    assert torn.read_bytes() == b"\0" * 300 + junk
    (e,) = [e for e in events if e.get("event") == "csv_damage_salvaged"]
    assert e["level"] == "ERROR" and e["kept_rows"] == 4 and e["removed_bytes"] == 300 + len(junk)
    assert not list(data.glob("*.salvage-tmp"))
