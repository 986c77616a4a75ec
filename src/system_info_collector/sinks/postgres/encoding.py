"""The text of every write: ``SET LOCAL`` settings, the one ``INSERT … SELECT … ON CONFLICT``
statement, the ``unnest`` array literals of a live batch and the ``COPY`` of a replayed chunk."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import cache
from operator import attrgetter, itemgetter

from system_info_collector.model import Record
from system_info_collector.schema import MEASUREMENTS, Measurement


def quote_ident(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def local_settings(statement_timeout: float, **extra: str) -> str:
    """``SET LOCAL`` statements opening a transaction: they end with it (no session state)."""
    ms = max(1, int(statement_timeout * 1000))
    parts = [f"SET LOCAL statement_timeout = {ms}"]
    parts += [f"SET LOCAL {name} = {quote_literal(value)}" for name, value in extra.items()]
    return "; ".join(parts)


def column_types(m: Measurement) -> list[tuple[str, str]]:
    """``(column, SQL type)`` of a measurement's table, in :attr:`Measurement.columns` order."""
    types = {f.name: f.sql_type for f in m.fields}
    out = [("ts", "timestamptz"), ("host", "text")]
    out += [(c, "text") for c in m.label_columns]
    out += [(f, types[f]) for f in m.columns if f in types]
    out.append(("tags", "jsonb"))
    out.append(("interval_ms", "integer"))
    assert [c for c, _ in out] == list(m.columns)
    return out


# Every write -- a live batch or a replayed chunk -- is ``INSERT INTO <table> (<columns>)
# SELECT <columns> FROM <source> ON CONFLICT (<primary key>) DO NOTHING``, run with its
# ``SET LOCAL`` settings as ONE simple query (one implicit transaction, no session state, no
# prepared statement: what PgBouncer's transaction pooling needs). The source is
#
# * for the live sink, ``unnest(<one array literal per column>)``: no staging table at all, one
#   round trip per batch (measured against a staging table created in the transaction and a
#   multi-row VALUES list in docs/benchmarks.md);
# * for ``replay``, a staging table created in the transaction (``ON COMMIT DROP``) that a
#   ``COPY … (FORMAT csv)`` of the file's bytes fills: the CSV is never parsed in Python.
def insert_select_sql(schema: str, m: Measurement, source: str) -> str:
    head, tail = _insert_select_parts(schema, m)
    return head + source + tail


@cache
def _insert_select_parts(schema: str, m: Measurement) -> tuple[str, str]:
    """The statement's text around its source, once per table (it is the same every write)."""
    cols = ", ".join(quote_ident(c) for c in m.columns)
    key = ", ".join(quote_ident(c) for c in m.primary_key)
    table = f"{quote_ident(schema)}.{quote_ident(m.name)}"
    conflict = f"ON CONFLICT ({key}) DO NOTHING"
    return f"INSERT INTO {table} ({cols}) SELECT {cols} FROM ", f" {conflict}"


def _array_text(value: object) -> str:
    """A text-like element of an array literal: always quoted."""
    text = value if type(value) is str else str(value)
    if "\\" in text or '"' in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text + '"'


def _array_number(value: object) -> str:
    if value is None:
        return "NULL"
    if type(value) is float:
        return repr(value)
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return repr(float(value))
    return str(value)


def _array_ts(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else _array_text(value)


class UnnestEncoder:
    """Records of one measurement as ``unnest('{…}'::type[], …) AS u(columns)``: per column of
    :meth:`Measurement.row` (the values it gives, taken for all records at once), one array."""

    def __init__(self, m: Measurement) -> None:
        self.m = m
        encoders: dict[str, Callable[[object], str]] = {"timestamptz": _array_ts}
        self._encoders = [
            (encoders.get(t, _array_number if t in _NUMERIC else _array_text), f"::{t}[]")
            for _, t in column_types(m)
        ]
        self._alias = "u(" + ", ".join(quote_ident(c) for c in m.columns) + ")"
        self._labels = m.label_columns
        self._label_set = frozenset(m.label_columns)
        self._fields = [(itemgetter(f.name), f.name) for f in m.fields]

    def _columns(self, records: Sequence[Record]) -> list[list[object]]:
        """What ``[m.row(r) for r in records]`` holds, column by column."""
        tags_list = list(map(_TAGS, records))
        fields_list = list(map(_FIELDS, records))
        columns: list[list[object]] = [list(map(_TS, records)), list(map(_HOST, records))]
        columns += [[t.get(c, "") for t in tags_list] for c in self._labels]
        for get, name in self._fields:
            try:
                columns.append(list(map(get, fields_list)))
            except KeyError:  # a missing field: NULL, as Measurement.row's .get
                columns.append([f.get(name) for f in fields_list])
        labels = self._label_set
        columns.append(
            [
                "{}"
                if t.keys() <= labels
                else json.dumps(
                    {k: v for k, v in t.items() if k not in labels},
                    separators=(",", ":"),
                    sort_keys=True,
                )
                for t in tags_list
            ]
        )
        columns.append([r.interval_ms or None for r in records])
        return columns

    def source(self, records: Sequence[Record]) -> str:
        arrays = [
            quote_literal("{" + _array_elements(values, encode) + "}") + cast
            for values, (encode, cast) in zip(self._columns(records), self._encoders, strict=True)
        ]
        return f"unnest({', '.join(arrays)}) AS {self._alias}"


_TS, _HOST, _TAGS, _FIELDS = (attrgetter(a) for a in ("ts", "host", "tags", "fields"))


def _array_elements(values: list[object], encode: Callable[[object], str]) -> str:
    """``",".join(encode(v) for v in values)``, byte for byte, without a call per value where
    the column's values allow: exact ints and floats are their ``repr`` (what
    :func:`_array_number` gives them), plain strings without a quote or a backslash are only
    quoted (what :func:`_array_text` does to them), repeated timestamps formatted once."""
    kinds = set(map(type, values))
    if encode is _array_number and kinds <= _PLAIN_NUMBERS:
        return ",".join(map(repr, values))
    if encode is _array_text and kinds == _STR:
        joined = '","'.join(values)  # type: ignore[arg-type]
        if "\\" not in joined and joined.count('"') == 2 * (len(values) - 1):
            return '"' + joined + '"'
    if encode is _array_ts:  # the same object (a tick's records share it), formatted once
        texts, last, text = [], None, ""
        for v in values:
            if v is not last:
                last, text = v, encode(v)
            texts.append(text)
        return ",".join(texts)
    return ",".join(map(encode, values))


_PLAIN_NUMBERS = frozenset({int, float})
_STR = frozenset({str})


_NUMERIC = frozenset({"double precision", "bigint", "integer", "real", "numeric", "smallint"})


def insert_script(
    schema: str, groups: dict[str, list[Record]], encoders: dict[str, UnnestEncoder], timeout: float
) -> bytes:
    """The one simple query that writes a live batch: ``SET LOCAL``, one INSERT per table."""
    parts = [local_settings(timeout)]
    parts += [
        insert_select_sql(schema, MEASUREMENTS[name], encoders[name].source(records))
        for name, records in groups.items()
    ]
    return "; ".join(parts).encode()


STAGE = "sic_stage"


def copy_script(
    schema: str,
    m: Measurement,
    timeout: float,
    *,
    direct: bool,
    columns: Sequence[str] = (),
    **settings: str,
) -> bytes:
    """The simple query that loads CSV bytes: ``COPY`` straight into the table (``direct``) or
    into a staging table created in the transaction, then :func:`insert_select_sql`.
    ``columns``: the file's columns when they are not all of the table's (an older file)."""
    not_null = ", ".join(quote_ident(c) for c in ("host", *m.label_columns))
    cols = ", ".join(quote_ident(c) for c in (columns or m.columns))
    table = f"{quote_ident(schema)}.{quote_ident(m.name)}"
    options = f"(FORMAT csv, FORCE_NOT_NULL ({not_null}))"
    parts = [local_settings(timeout, **settings)]
    if direct:
        parts.append(f"COPY {table} ({cols}) FROM STDIN WITH {options}")
    else:
        parts += [
            f"CREATE TEMP TABLE {STAGE} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP",
            f"COPY {STAGE} ({cols}) FROM STDIN WITH {options}",
            insert_select_sql(schema, m, STAGE),
        ]
    return "; ".join(parts).encode()


def differing_sql(schema: str, m: Measurement, source: str) -> str:
    """The rows of ``source`` whose key is stored with other values: key and stored row."""
    table = f"{quote_ident(schema)}.{quote_ident(m.name)}"
    key = " AND ".join(f"t.{quote_ident(c)} = u.{quote_ident(c)}" for c in m.primary_key)
    values = [c for c in m.columns if c not in m.primary_key]
    stored = ", ".join(f"t.{quote_ident(c)}" for c in values)
    new = ", ".join(f"u.{quote_ident(c)}" for c in values)
    keys = ", ".join(f"u.{quote_ident(c)}" for c in m.primary_key)
    return (
        f"SELECT {keys}, row_to_json(t)::text FROM {source} JOIN {table} t ON {key} "
        f"WHERE ({stored}) IS DISTINCT FROM ({new})"
    )
