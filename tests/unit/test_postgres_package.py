"""The PostgreSQL sink's pure parts, without a server: error kinds, statement text, encoding."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from system_info_collector.model import Record
from system_info_collector.schema import MEASUREMENTS
from system_info_collector.sinks.postgres import (
    ErrorKind,
    UnnestEncoder,
    classify,
    copy_script,
    insert_select_sql,
    local_settings,
)
from system_info_collector.sinks.postgres.deadletter import append_line, dead_letter_line

T = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("sqlstate", "kind"),
    [
        ("22003", ErrorKind.DATA),  # numeric value out of range
        ("23514", ErrorKind.DATA),  # check violation
        ("54000", ErrorKind.DATA),
        ("28P01", ErrorKind.CONFIG),  # bad password
        ("3D000", ErrorKind.CONFIG),  # no such database
        ("42501", ErrorKind.CONFIG),  # insufficient privilege
        ("08006", ErrorKind.TRANSIENT),  # connection failure
        ("40001", ErrorKind.TRANSIENT),  # serialization failure
        ("57014", ErrorKind.TRANSIENT),  # statement timeout
        ("57P01", ErrorKind.TRANSIENT),  # admin shutdown
        ("53300", ErrorKind.TRANSIENT),  # too many connections
        ("XX000", ErrorKind.TRANSIENT),
    ],
)
def test_errors_are_classified_by_sqlstate_class(sqlstate: str, kind: ErrorKind) -> None:
    error = psycopg.errors.lookup(sqlstate)("from the server")  # psycopg's own class
    assert error.sqlstate == sqlstate
    assert classify(error) is kind


def test_errors_without_sqlstate_are_classified_by_message() -> None:
    refused = psycopg.OperationalError('connection to server at "h" failed: Connection refused')
    assert classify(refused) is ErrorKind.TRANSIENT
    password = psycopg.OperationalError("FATAL:  password authentication failed for user x")
    assert classify(password) is ErrorKind.CONFIG
    assert f"{ErrorKind.CONFIG}: text" == "config: text"  # what the worker's messages show


def test_settings_are_local_to_the_transaction() -> None:
    text = local_settings(1.5, synchronous_commit="off", application_name="it's")
    assert text == (
        "SET LOCAL statement_timeout = 1500; SET LOCAL synchronous_commit = 'off'; "
        "SET LOCAL application_name = 'it''s'"
    )
    assert "SET " not in text.replace("SET LOCAL ", "")  # never a session-level SET


def test_unnest_source_quotes_every_awkward_value_as_an_array_literal() -> None:
    m = MEASUREMENTS["disk"]
    fields: dict[str, float | int] = {f.name: 1 for f in m.fields}
    fields["used_percent"] = 0.1
    del fields["inodes_free"]  # a missing field is NULL
    tags = {"mountpoint": '/mnt/a "b" \\c\'d', "device": "sda", "fstype": "ext4", "env": "x"}
    source = UnnestEncoder(m).source([Record("disk", T, "h1", tags, fields)])
    assert source.startswith("unnest('{2024-05-01T12:00:00.123000+00:00}'::timestamptz[], ")
    assert """'{"/mnt/a \\"b\\" \\\\c''d"}'::text[]""" in source  # " and \\ escaped, ' doubled
    assert "'{0.1}'::double precision[]" in source and "'{NULL}'::bigint[]" in source
    assert """'{"{\\"env\\":\\"x\\"}"}'::jsonb[]""" in source
    assert source.endswith(") AS u(" + ", ".join(f'"{c}"' for c in m.columns) + ")")


def test_one_insert_statement_serves_the_sink_and_replay() -> None:
    m = MEASUREMENTS["cpu"]
    live = insert_select_sql("s", m, "unnest(...) AS u(...)")
    assert live.startswith('INSERT INTO "s"."cpu" ("ts", "host", "cpu", ')
    assert live.endswith('ON CONFLICT ("host", "cpu", "ts") DO NOTHING')
    staged = copy_script("s", m, 10.0, direct=False).decode()
    assert insert_select_sql("s", m, "sic_stage") in staged
    assert (
        'CREATE TEMP TABLE sic_stage (LIKE "s"."cpu" INCLUDING DEFAULTS) ON COMMIT DROP' in staged
    )
    direct = copy_script("s", m, 10.0, direct=True).decode()
    assert "TEMP" not in direct and 'COPY "s"."cpu" (' in direct


def test_a_dead_letter_line_is_one_json_object_with_the_error() -> None:
    record = Record("memory", T, "h1", {"env": "x"}, {"total_bytes": 2**70})
    line = dead_letter_line(record, "postgres", "22003: out of range")
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    item = json.loads(line)
    assert item["error"] == "22003: out of range" and item["fields"] == {"total_bytes": 2**70}
    assert item["ts"] == T.isoformat() and item["measurement"] == "memory"


def test_the_dead_letter_file_is_bounded_by_rotating_once(tmp_path: Path) -> None:
    path = str(tmp_path / "dead-letter.jsonl")
    line = b'{"row":"' + b"x" * 89 + b'"}\n'  # 100 bytes
    for _ in range(25):
        append_line(path, line, max_size=1000)
    sizes = [os.path.getsize(path), os.path.getsize(path + ".1")]
    assert sizes == [500, 1000]  # 25 lines: 10 rotated away twice over, the newest kept
    assert Path(path).read_bytes() == line * 5 and Path(path + ".1").read_bytes() == line * 10
    assert not list(tmp_path.glob("*.torn-*"))
