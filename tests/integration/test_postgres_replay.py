"""``replay``: CSV files and directories into PostgreSQL, idempotently, with clear reports."""

from __future__ import annotations

import gzip
import random
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from system_info_collector.schema import MEASUREMENTS
from tests.helpers import clean_env, poll, run_cli
from tests.integration.conftest import Collector, PgServer

pytestmark = pytest.mark.integration

Query = Callable[..., list[tuple[Any, ...]]]


def table(query: Query, schema: str, name: str) -> list[tuple[Any, ...]]:
    m = MEASUREMENTS[name]
    order = ", ".join(f'"{c}"' for c in m.primary_key)
    return query(f'SELECT * FROM "{schema}"."{name}" ORDER BY {order}')


def replay(pg: PgServer, schema: str, *paths: str | Path) -> Any:
    env = clean_env(SIC_DB_DSN=pg.dsn(), SIC_DB_SCHEMA=schema)
    return run_cli("replay", *map(str, paths), env=env, timeout=60)


def test_replay_of_the_csv_sink_directory_gives_exactly_the_rows_the_db_sink_wrote(
    pg_up: PgServer,
    db_schema: str,
    other_schema: str,
    query: Query,
    collector: Callable[..., Collector],
    tmp_path: Path,
) -> None:
    c = collector(
        pg_up.dsn(),
        db_schema,
        SIC_SINKS="csv,postgres",
        SIC_COLLECTORS="cpu,memory,disk,diskio",
        SIC_CSV_ROTATE_SIZE="8KB",
        SIC_CSV_COMPRESS="gzip",
    )
    csv_dir = Path(c.env["SIC_CSV_DIR"])
    poll(lambda: list(csv_dir.glob("cpu.*.csv.gz")), timeout=20, what="a rotated, gzipped file")
    assert c.stop() == 0
    assert list(csv_dir.glob("*.csv")), "no active files"

    first = replay(pg_up, other_schema, csv_dir)
    assert first.returncode == 0, first.stderr
    assert " 0 rejected" in first.stdout and ".csv.gz: cpu," in first.stderr
    for name in MEASUREMENTS:
        expected = table(query, db_schema, name)
        assert expected or name not in ("cpu", "memory", "disk"), name  # the collectors run
        assert table(query, other_schema, name) == expected, name

    again = replay(pg_up, other_schema, csv_dir)  # idempotent: nothing new
    assert again.returncode == 0 and ": 0 new," in again.stdout
    into_sink_schema = replay(pg_up, db_schema, csv_dir)  # the rows the sink already wrote
    assert ": 0 new," in into_sink_schema.stdout


def test_torn_lines_and_rejected_rows_are_reported_and_the_rest_is_loaded(
    pg_up: PgServer, other_schema: str, query: Query, tmp_path: Path
) -> None:
    m = MEASUREMENTS["memory"]
    header = ",".join(m.columns) + "\n"

    def line(second: int, total: str = "100") -> str:
        values = [f"2024-05-01T00:00:{second:02d}.000Z", "h1"] + [total] * len(m.fields)
        return ",".join([*values, '"{""env"":""t""}"', "1000"]) + "\n"

    good = tmp_path / "memory.csv"
    good.write_text(
        header + line(1) + line(2) + line(3, total="not-a-number") + line(4) + line(5)[:20]
    )
    rotated = tmp_path / "memory.20240501T000000Z-20240501T000010Z.csv.gz"
    rotated.write_bytes(gzip.compress((header + line(6) + line(7)).encode()))
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")

    result = replay(pg_up, other_schema, tmp_path)
    assert result.returncode == 1
    assert "memory.csv: line 4: rejected: 22P02" in result.stderr  # the line number in the file
    assert "incomplete last line" in result.stderr
    assert "notes.csv: not a collector CSV file" in result.stderr
    assert "Traceback" not in result.stderr
    rows = table(query, other_schema, "memory")
    assert [r[0].second for r in rows] == [1, 2, 4, 6, 7]
    assert rows[0][-2:] == ({"env": "t"}, 1000)


def test_bad_invocations_exit_2_with_a_clear_message(pg_up: PgServer, tmp_path: Path) -> None:
    missing = replay(pg_up, "public", tmp_path / "nope")
    assert missing.returncode == 2 and "nope: no such file or directory" in missing.stderr
    empty = replay(pg_up, "public", tmp_path)
    assert empty.returncode == 2 and "no .csv or .csv.gz files" in empty.stderr
    (tmp_path / "cpu.csv").write_text(",".join(MEASUREMENTS["cpu"].columns) + "\n")
    no_dsn = run_cli("replay", str(tmp_path), env=clean_env())
    assert no_dsn.returncode == 2 and "SIC_DB_DSN" in no_dsn.stderr
    bad_pw = replay(
        PgServer(pg_up.kind, pg_up.host, pg_up.port, password="wrong-pw-777"), "public", tmp_path
    )
    assert bad_pw.returncode == 1 and "password authentication failed" in bad_pw.stderr
    assert "wrong-pw-777" not in bad_pw.stderr + bad_pw.stdout


def test_a_truncated_gz_loads_every_row_zcat_recovers(
    pg_up: PgServer, other_schema: str, query: Query, tmp_path: Path
) -> None:
    m = MEASUREMENTS["memory"]
    rng = random.Random(7)  # values that do not compress away, so the cut lands mid-file
    lines = [",".join(m.columns) + "\n"] + [
        ",".join(
            [
                f"2024-05-01T00:{i // 60:02d}:{i % 60:02d}.000Z",
                "h1",
                *(str(rng.randrange(1 << 40)) for _ in m.fields),
                "{}",
                "1000",
            ]
        )
        + "\n"
        for i in range(214)
    ]
    whole = gzip.compress("".join(lines).encode())
    path = tmp_path / "memory.20240501T000000Z-20240501T000400Z.csv.gz"
    path.write_bytes(whole[: len(whole) * 6 // 10])
    zcat = subprocess.run(["gzip", "-dc", str(path)], capture_output=True)
    assert zcat.returncode != 0  # "unexpected end of file": the real tool's recovery
    recovered = zcat.stdout[: zcat.stdout.rfind(b"\n") + 1].count(b"\n") - 1  # minus header
    assert 50 < recovered < 214

    result = replay(pg_up, other_schema, path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "truncated" in result.stderr and f"loaded the {recovered} complete rows" in result.stderr
    assert query(f'SELECT count(*) FROM "{other_schema}".memory') == [(recovered,)]
    assert "Traceback" not in result.stderr
