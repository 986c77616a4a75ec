"""The CSV sink's fast row encoder writes exactly the bytes of the reference path
(``csv.writer`` over ``format_value`` of ``Measurement.row``), for real and hostile records."""

from __future__ import annotations

import csv
import io
import random
from datetime import UTC, datetime, timedelta

import pytest

from system_info_collector.model import Record
from system_info_collector.schema import MEASUREMENTS
from system_info_collector.sinks.csv import RowEncoder, encode_rows

T0 = datetime(2026, 11, 24, 12, 0, 0, 123_000, tzinfo=UTC)
NASTY_TEXT = [
    "a,b",
    'say "hi"',
    "line\nbreak",
    "cr\rlf\r\n",
    "",
    " lead",
    "tab\there",
    "ünïcødé ✓",
    '"',
    ",",
    "\\012",
    "/mnt/with space",
    "x" * 300,
    "100%",
    "%s",
    "%%r",
]
NASTY_NUMBERS: list[object] = [
    0,
    0.0,
    -0.0,
    1,
    2**63 - 1,
    1e-05,
    1.5e-10,
    1e16,
    123456789.125,
    0.1 + 0.2,
    99.99999999999999,
    float("inf"),
    float("nan"),
    True,
    False,
    None,
    -3,
    -2.5e-7,
    7.0,
    1e-4,
    9.999999999999999e-05,
    9999999999999998.0,
    10**16,
    10**400,
    -1e-4,
]


def reference(name: str, records: list[Record]) -> bytes:
    return encode_rows(MEASUREMENTS[name].row(r) for r in records)


def encoder(name: str) -> RowEncoder:
    m = MEASUREMENTS[name]
    return RowEncoder(m.label_columns, [f.name for f in m.fields])


def random_record(rng: random.Random, name: str) -> Record:
    m = MEASUREMENTS[name]
    tags: dict[str, object] = {
        c: rng.choice([*NASTY_TEXT, f"{c}{rng.randrange(9)}"])
        for c in m.label_columns
        if rng.random() < 0.9
    }
    if rng.random() < 0.3:
        tags.update({"site": rng.choice(NASTY_TEXT), "zone": "eu-1"})
    if rng.random() < 0.05 and m.label_columns:
        tags[m.label_columns[0]] = rng.choice([7, 2.5, None])  # not a str: still the same bytes
    fields: dict[str, object] = {}
    for f in m.fields:
        r = rng.random()
        if r < 0.05:
            continue  # a missing field: an empty column
        if r < 0.25:
            fields[f.name] = rng.choice(NASTY_NUMBERS)
        elif f.sql_type == "bigint":
            fields[f.name] = rng.randrange(0, 10 ** rng.randrange(1, 20))
        else:
            fields[f.name] = rng.random() * 10 ** rng.randrange(-8, 18)
    ts = T0 + timedelta(milliseconds=rng.randrange(3) * 250)
    host = rng.choice(["node-1", "node-1", "weird,host", 'q"host'])
    interval_ms = rng.choice([0, 100, 250, 5000, 10000, 60000])  # 0: unknown, an empty cell
    return Record(name, ts, host, tags, fields, interval_ms)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", list(MEASUREMENTS))
def test_fast_rows_are_byte_identical_to_the_csv_module(name: str) -> None:
    rng = random.Random(f"csv-{name}")
    enc = encoder(name)
    for _ in range(300):
        batch = [random_record(rng, name) for _ in range(rng.randrange(0, 12))]
        assert enc.encode(batch) == reference(name, batch)


@pytest.mark.parametrize("name", list(MEASUREMENTS))
def test_plain_records_take_the_fast_path_and_read_back(name: str) -> None:
    m = MEASUREMENTS[name]
    fields = {f.name: (12345 if f.sql_type == "bigint" else 42.125) for f in m.fields}
    batch = [
        Record(name, T0, "h", {c: f"{c}-{i}" for c in m.label_columns}, fields) for i in range(5)
    ]
    data = encoder(name).encode(batch)
    assert data == reference(name, batch)
    rows = list(csv.reader(io.StringIO(data.decode())))
    assert [len(r) for r in rows] == [len(m.columns)] * 5
    assert rows[0][0] == "2026-11-24T12:00:00.123Z"


def tick_batch(rng: random.Random, name: str, entities: list[tuple[str, ...]]) -> list[Record]:
    """One tick's records as a provider makes them: one ts/host/interval object for all, the
    entity labels only; the numbers plain mostly, hostile sometimes."""
    m = MEASUREMENTS[name]
    ts, host, interval_ms = T0 + timedelta(seconds=rng.randrange(9)), "node-1", 1000
    hostile = rng.random() < 0.4
    batch = []
    for entity in entities:
        fields: dict[str, object] = {}
        for f in m.fields:
            if hostile and rng.random() < 0.1:
                fields[f.name] = rng.choice(NASTY_NUMBERS)
            elif f.sql_type == "bigint":
                fields[f.name] = rng.randrange(0, 10 ** rng.randrange(1, 17))
            else:
                fields[f.name] = rng.choice([0.0, 100.0, rng.random() * 100, rng.random() * 1e12])
        if hostile and rng.random() < 0.05:
            del fields[m.fields[0].name]
        tags: dict[str, object] = dict(zip(m.label_columns, entity, strict=True))
        if hostile and rng.random() < 0.05:
            tags["site"] = "eu"
        batch.append(Record(name, ts, host, tags, fields, interval_ms))  # type: ignore[arg-type]
    return batch


@pytest.mark.parametrize("name", list(MEASUREMENTS))
def test_whole_ticks_are_byte_identical_to_the_csv_module(name: str) -> None:
    """Batches shaped as a tick (one ts/host/interval object, entity labels only), tick after
    tick with the same entities (the kept label texts), with new entities, hostile labels
    (quotes, commas, %), numbers at the edge of exponent notation, bools, NaN, missing fields."""
    rng = random.Random(f"tick-{name}")
    m = MEASUREMENTS[name]
    enc = encoder(name)
    for _ in range(60):
        entities = [
            tuple(rng.choice([*NASTY_TEXT, f"{c}{i}"]) for c in m.label_columns)
            for i in range(rng.randrange(2, 20))
        ]
        for _ in range(4):  # the same entities again: the kept label texts
            batch = tick_batch(rng, name, entities)
            assert enc.encode(batch) == reference(name, batch)
