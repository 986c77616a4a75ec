"""``interval_ms`` on every record: stamped by the collect path, in every sink's format, and
files/spools written by the release before it are handled (rotated, read)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.schema import MEASUREMENTS
from system_info_collector.sinks.csv import CsvSink
from system_info_collector.spool import decode_batch, encode_batch
from tests.helpers import PROC_FIXTURES, clean_env, run_cli
from tests.unit.test_csv_sink import files_of, read_file, settings, tick

V1 = Path(__file__).parent.parent / "fixtures" / "csv-v1"


def test_once_stamps_each_collectors_interval() -> None:
    for extra, expected in (({}, 2000), ({"SIC_MEMORY_INTERVAL": "6s"}, 6000)):
        env = clean_env(
            SIC_HOST_PROC=str(PROC_FIXTURES / "basic"),
            SIC_COLLECTORS="memory",
            SIC_INTERVAL="2s",
            **extra,
        )
        result = run_cli("once", env=env)
        assert result.returncode == 0, result.stderr
        assert [json.loads(line)["interval_ms"] for line in result.stdout.split()] == [expected]


def test_an_active_csv_file_of_the_previous_release_is_rotated_not_appended_to(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(V1 / "memory.csv", data / "memory.csv")
    old = (V1 / "memory.csv").read_bytes()
    sink = CsvSink(settings(data, compress="none"), metrics=Metrics())
    sink.open()
    sink.write(tick(0, ("memory",)))
    sink.close()
    rotated, active = files_of(data, "memory")
    assert rotated.read_bytes() == old  # the old file untouched, named by its rows' times
    assert active.read_text().splitlines()[0] == ",".join(MEASUREMENTS["memory"].columns)
    assert [r["interval_ms"] for r in read_file(active, "memory")] == [1000]


def test_spool_entries_carry_the_interval_and_old_entries_still_read() -> None:
    ts = datetime(2024, 1, 1, tzinfo=UTC)
    record = Record("memory", ts, "h", {}, {"total_bytes": 1}, interval_ms=250)
    assert decode_batch(encode_batch([record])) == [record]
    old_entry = json.dumps([["memory", 1704067200000000, "h", {}, {"total_bytes": 1}]]).encode()
    assert decode_batch(old_entry) == [Record("memory", ts, "h", {}, {"total_bytes": 1})]
