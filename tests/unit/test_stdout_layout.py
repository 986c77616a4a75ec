"""stdout JSON lines have the CSV file's layout: the same keys in the same order, same values."""

from __future__ import annotations

import io
import json
from datetime import datetime
from pathlib import Path

import pytest

from system_info_collector.metrics import Metrics
from system_info_collector.schema import MEASUREMENTS
from system_info_collector.sinks.csv import CsvSink
from system_info_collector.sinks.stdout import StdoutSink
from tests.helpers import PROC_FIXTURES, clean_env, fields_of, run_cli
from tests.unit.test_csv_sink import read_file, settings, tick


@pytest.mark.parametrize("measurement", sorted(MEASUREMENTS))
def test_a_stdout_record_is_the_csv_row_as_an_object(measurement: str, tmp_path: Path) -> None:
    batch = tick(3, (measurement,))
    out = io.StringIO()
    StdoutSink(out).write(batch)
    csv_sink = CsvSink(settings(tmp_path), metrics=Metrics())
    csv_sink.open()
    csv_sink.write(batch)
    csv_sink.close()
    rows = read_file(tmp_path / f"{measurement}.csv", measurement)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == len(rows) == len(batch)
    for line, row in zip(lines, rows, strict=True):
        assert list(line) == ["measurement", *MEASUREMENTS[measurement].columns]
        assert line.pop("measurement") == measurement
        line["ts"] = datetime.fromisoformat(line["ts"])
        assert line == row  # labels as top-level keys, other labels in "tags", like CSV


def test_the_nested_layout_stays_available_for_old_parsers() -> None:
    env = clean_env(
        SIC_HOST_PROC=str(PROC_FIXTURES / "basic"),
        SIC_COLLECTORS="memory,disk",
        SIC_TAGS="env=test",
    )
    flat = [json.loads(x) for x in run_cli("once", env=env).stdout.splitlines()]
    old = run_cli("once", env={**env, "SIC_STDOUT_LAYOUT": "nested"})
    nested = [json.loads(x) for x in old.stdout.splitlines()]
    assert flat and len(flat) == len(nested)
    for f, n in zip(flat, nested, strict=True):
        assert list(n) == ["measurement", "ts", "host", "tags", "fields", "interval_ms"]
        spec = MEASUREMENTS[f["measurement"]]
        assert n["tags"] == {**f["tags"], **{c: f[c] for c in spec.label_columns if c in n["tags"]}}
        assert set(n["fields"]) == set(fields_of(f))
        if f["measurement"] == "memory":  # from the canned /proc (disk is the live statvfs)
            assert n["fields"] == fields_of(f)
    bad = run_cli("once", env={**env, "SIC_STDOUT_LAYOUT": "yaml"})
    assert bad.returncode == 2 and "SIC_STDOUT_LAYOUT='yaml': expected one of columns, nested" in (
        bad.stderr
    )
