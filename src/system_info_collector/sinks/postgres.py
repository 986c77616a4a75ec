"""PostgreSQL sink: schema from :mod:`~system_info_collector.schema`, idempotent batched writes.

Each batch is one transaction, sent as one simple query: ``SET LOCAL statement_timeout``, then
per measurement ``INSERT … SELECT … FROM unnest(<arrays>) ON CONFLICT (host, <entity>, ts) DO
NOTHING`` -- so a retried or replayed batch can never duplicate a row, and nothing outlives the
transaction (no startup options, no temporary table, no prepared statement): PgBouncer in
``pool_mode = transaction`` with its default settings works. Errors are classified by SQLSTATE
class (as Telegraf's PostgreSQL output does):

* *transient* (connection refused/reset, timeouts, server restart, serialization failures,
  out of resources): :class:`TransientSinkError`, the worker retries with backoff;
* *permanent for the data* (classes 22, 23, 54: the server rejects a row): the batch is
  bisected, the rejected rows go to ``dead-letter.jsonl`` in the spool directory, the rest is
  written;
* *permanent for the configuration* (bad password, missing database/schema, no privilege):
  ERROR log with the server's message, then :class:`TransientSinkError` too -- the data stays
  in the spool and the worker keeps probing, so fixing the secret loses nothing.

The spool in front of this sink (``spool_dir``) is run by
:class:`~system_info_collector.spool.SpoolWorker`. A client-side watchdog cuts the socket when
a statement does not answer within ``SIC_DB_STATEMENT_TIMEOUT`` + 1 s (a black-holed server
answers neither the query nor the server-side ``statement_timeout``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import pq, sql
from psycopg.conninfo import conninfo_to_dict

from system_info_collector import __version__
from system_info_collector.config import PostgresSettings, RetrySettings
from system_info_collector.durable import set_aside_tail
from system_info_collector.errors import TransientSinkError
from system_info_collector.logging import event
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.redact import redact_secret
from system_info_collector.schema import MEASUREMENTS, Measurement
from system_info_collector.sinks import CheckResult

APPLICATION_NAME = "system-info-collector"
SCHEMA_VERSION = 1
VERSION_TABLE = "sic_schema_version"
DEAD_LETTER_FILE = "dead-letter.jsonl"
RECORD_BYTES_ESTIMATE = 300  # spooled bytes per record, to express the spool limit in records
WATCHDOG_GRACE = 1.0  # seconds past statement_timeout before the client cuts the socket
_DDL_LOCK = 0x5_1C_DD_1  # pg_advisory_xact_lock key serialising concurrent DDL

TRANSIENT, DATA, CONFIG = "transient", "data", "config"
_DATA_CLASSES = frozenset({"22", "23", "54"})
_CONFIG_CLASSES = frozenset({"28", "3D", "3F", "42", "0A", "0L", "0P", "2B", "44"})
_CONFIG_MESSAGES = (
    "password authentication failed",
    "no password supplied",
    "does not exist",  # database / role
    "no pg_hba.conf entry",
    "permission denied",
    "authentication method",
    "ssl is not enabled",
    "server does not support ssl",
    "invalid connection option",
    "invalid uri",
    'missing "="',
)


def classify(exc: BaseException) -> str:
    """``transient``, ``data`` or ``config`` for a psycopg error (SQLSTATE class first)."""
    state = getattr(exc, "sqlstate", None)
    if state:
        if state[:2] in _DATA_CLASSES:
            return DATA
        if state[:2] in _CONFIG_CLASSES:
            return CONFIG
        return TRANSIENT  # 08, 40, 53, 55, 57, 58, XX, ...: retry
    if isinstance(exc, psycopg.ProgrammingError | psycopg.NotSupportedError):
        return CONFIG
    message = str(exc).lower()
    if "timeout expired" in message or "connection refused" in message:
        return TRANSIENT
    if any(pattern in message for pattern in _CONFIG_MESSAGES):
        return CONFIG
    return TRANSIENT


def error_text(exc: BaseException) -> str:
    """The server's message (with SQLSTATE when there is one), on one line."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    state = getattr(exc, "sqlstate", None)
    text = primary or str(exc).strip() or type(exc).__name__
    text = " ".join(text.split())
    return f"{state}: {text}" if state else text


# -- connection ---------------------------------------------------------------------------
def read_password(settings: PostgresSettings) -> str | None:
    if not settings.password_file:
        return None
    with open(settings.password_file, encoding="utf-8") as handle:
        return handle.read().rstrip("\r\n")


def dsn_secrets(settings: PostgresSettings, password: str | None) -> list[str]:
    """Literal strings no message may show: the password (file or DSN), or, when the DSN does
    not even parse (libpq then quotes pieces of it back), the whole DSN."""
    secrets = [password] if password else []
    try:
        from_dsn = conninfo_to_dict(settings.dsn or "").get("password")
    except psycopg.Error:
        if settings.dsn:
            secrets.append(settings.dsn)
            secrets.extend(part for part in settings.dsn.split() if len(part) >= 4)
    else:
        if from_dsn:
            secrets.append(str(from_dsn))
    return secrets


def connect_kwargs(settings: PostgresSettings, password: str | None) -> dict[str, Any]:
    """libpq parameters: ours merged into the DSN (``PG*`` variables fill what is missing)."""
    params = conninfo_to_dict(settings.dsn or "")
    # No startup ``options`` (PgBouncer refuses them): timeouts are SET LOCAL in every
    # transaction (:func:`local_settings`).
    params["application_name"] = APPLICATION_NAME
    params["connect_timeout"] = str(max(1, math.ceil(settings.connect_timeout)))
    params.setdefault("keepalives", "1")
    params.setdefault("keepalives_idle", "10")
    params.setdefault("keepalives_interval", "5")
    params.setdefault("keepalives_count", "3")
    params.setdefault("tcp_user_timeout", str(int((settings.statement_timeout + 5) * 1000)))
    if password is not None:
        params["password"] = password
    return params


def connect(settings: PostgresSettings, password: str | None = None) -> psycopg.Connection[Any]:
    """An autocommit connection (transactions are explicit); raises psycopg errors.

    Safe behind PgBouncer in transaction mode: no server-side prepared statements
    (``prepare_threshold=None``), no session state (every setting is ``SET LOCAL``).
    """
    if password is None:
        password = read_password(settings)
    return psycopg.connect(
        autocommit=True, prepare_threshold=None, **connect_kwargs(settings, password)
    )


def local_settings(statement_timeout: float, **extra: str) -> str:
    """``SET LOCAL`` statements opening a transaction: they end with it (no session state)."""
    ms = max(1, int(statement_timeout * 1000))
    parts = [f"SET LOCAL statement_timeout = {ms}"]
    parts += [f"SET LOCAL {name} = {_quote_literal(value)}" for name, value in extra.items()]
    return "; ".join(parts)


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def describe(conn: psycopg.Connection[Any]) -> str:
    info = conn.info
    where = info.host if info.host.startswith("/") else f"{info.host}:{info.port}"
    return f"{where}/{info.dbname} as {info.user}"


def abort_socket(conn: psycopg.Connection[Any]) -> None:
    """Shut the connection's socket down from another thread: the blocked call fails at once."""
    with contextlib.suppress(Exception):
        fd = conn.pgconn.socket
        sock = socket.socket(fileno=os.dup(fd))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


class Watchdog:
    """One daemon thread that runs an action if a guarded block outlives its deadline."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._action: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None
        self.fired = False

    @contextlib.contextmanager
    def guard(self, seconds: float, action: Callable[[], None]) -> Iterator[None]:
        with self._cond:
            self._deadline = time.monotonic() + seconds
            self._action = action
            self.fired = False
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pg-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._deadline = None
                self._action = None

    def _run(self) -> None:
        with self._cond:
            while True:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                action, self._action, self._deadline = self._action, None, None
                if action is not None:
                    self.fired = True
                    action()


# -- schema -------------------------------------------------------------------------------
def table_ident(schema: str, m: Measurement) -> sql.Identifier:
    return sql.Identifier(schema, m.name)


def columns_sql(m: Measurement) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(c) for c in m.columns)


def create_table_sql(schema: str, m: Measurement) -> sql.Composed:
    defs: list[sql.Composable] = [
        sql.SQL("{} timestamptz NOT NULL").format(sql.Identifier("ts")),
        sql.SQL("{} text NOT NULL").format(sql.Identifier("host")),
        *(sql.SQL("{} text NOT NULL").format(sql.Identifier(c)) for c in m.entity),
        *(sql.SQL("{} text NOT NULL DEFAULT ''").format(sql.Identifier(c)) for c in m.labels),
        *(sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(f.sql_type)) for f in m.fields),
        sql.SQL("{} jsonb NOT NULL DEFAULT '{{}}'::jsonb").format(sql.Identifier("tags")),
        sql.SQL("PRIMARY KEY ({})").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in m.primary_key)
        ),
    ]
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
        table_ident(schema, m), sql.SQL(", ").join(defs)
    )


def ensure_schema(
    conn: psycopg.Connection[Any],
    schema: str,
    timescale: str = "auto",
    *,
    statement_timeout: float = 30.0,
) -> str:
    """Create the schema, tables, indexes and version row if missing. Returns a summary."""
    notes: list[str] = []
    with conn.transaction():
        conn.execute(local_settings(statement_timeout))
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
        if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone():
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            notes.append(f"created schema {schema}")
        hyper = False
        if timescale != "off":
            has_ext = conn.execute(
                "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"
            ).fetchone()
            if not has_ext and timescale == "on":
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                has_ext = (1,)
            hyper = bool(has_ext)
        for m in MEASUREMENTS.values():
            regclass = f"{_quote(schema)}.{_quote(m.name)}"
            exists = conn.execute("SELECT to_regclass(%s)", (regclass,)).fetchone()
            if exists is None or exists[0] is None:
                conn.execute(create_table_sql(schema, m))
                notes.append(f"created table {schema}.{m.name}")
                if hyper:
                    conn.execute(
                        "SELECT create_hypertable(%s::regclass, 'ts', if_not_exists => TRUE, "
                        "migrate_data => TRUE)",
                        (regclass,),
                    )
                else:
                    conn.execute(
                        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                            sql.Identifier(f"{m.name}_ts_idx"),
                            table_ident(schema, m),
                            sql.Identifier("ts"),
                        )
                    )
        version = sql.Identifier(schema, VERSION_TABLE)
        regclass = f"{_quote(schema)}.{_quote(VERSION_TABLE)}"
        exists = conn.execute("SELECT to_regclass(%s)", (regclass,)).fetchone()
        if exists is None or exists[0] is None:
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (version integer PRIMARY KEY, "
                    "applied_at timestamptz NOT NULL DEFAULT now(), collector_version text)"
                ).format(version)
            )
        row = conn.execute(sql.SQL("SELECT max(version) FROM {}").format(version)).fetchone()
        current = row[0] if row else None
        if current is None:
            conn.execute(
                sql.SQL("INSERT INTO {} (version, collector_version) VALUES (%s, %s) "
                        "ON CONFLICT DO NOTHING").format(version),
                (SCHEMA_VERSION, __version__),
            )  # fmt: skip
            current = SCHEMA_VERSION
        if current > SCHEMA_VERSION:
            notes.append(f"schema version {current} is newer than this collector's "
                         f"{SCHEMA_VERSION}")  # fmt: skip
    kind = "hypertables" if hyper else "tables"
    summary = f"schema {schema}: {kind} {', '.join(MEASUREMENTS)} ready (version {current})"
    return "; ".join([summary, *notes])


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def column_types(m: Measurement) -> list[tuple[str, str]]:
    """``(column, SQL type)`` of a measurement's table, in :attr:`Measurement.columns` order."""
    types = {f.name: f.sql_type for f in m.fields}
    out = [("ts", "timestamptz"), ("host", "text")]
    out += [(c, "text") for c in m.label_columns]
    out += [(f, types[f]) for f in m.columns if f in types]
    out.append(("tags", "jsonb"))
    assert [c for c, _ in out] == list(m.columns)
    return out


# -- the one insert path ------------------------------------------------------------------
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
    cols = ", ".join(_quote(c) for c in m.columns)
    key = ", ".join(_quote(c) for c in m.primary_key)
    return (
        f"INSERT INTO {_quote(schema)}.{_quote(m.name)} ({cols}) SELECT {cols} FROM {source} "
        f"ON CONFLICT ({key}) DO NOTHING"
    )


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
    """Records of one measurement as ``unnest('{…}'::type[], …) AS u(columns)``."""

    def __init__(self, m: Measurement) -> None:
        self.m = m
        encoders: dict[str, Callable[[object], str]] = {"timestamptz": _array_ts}
        self._columns = [
            (index, encoders.get(t, _array_number if t in _NUMERIC else _array_text), t)
            for index, (_, t) in enumerate(column_types(m))
        ]
        self._alias = "u(" + ", ".join(_quote(c) for c in m.columns) + ")"

    def source(self, records: Sequence[Record]) -> str:
        row = self.m.row
        rows = [row(r) for r in records]
        arrays = []
        for index, encode, sql_type in self._columns:
            body = "{" + ",".join([encode(r[index]) for r in rows]) + "}"
            arrays.append(f"{_quote_literal(body)}::{sql_type}[]")
        return f"unnest({', '.join(arrays)}) AS {self._alias}"


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
    schema: str, m: Measurement, timeout: float, *, direct: bool, **settings: str
) -> bytes:
    """The simple query that loads CSV bytes: ``COPY`` straight into the table (``direct``) or
    into a staging table created in the transaction, then :func:`insert_select_sql`."""
    not_null = ", ".join(_quote(c) for c in ("host", *m.label_columns))
    cols = ", ".join(_quote(c) for c in m.columns)
    table = f"{_quote(schema)}.{_quote(m.name)}"
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


# -- one batch, one simple query ----------------------------------------------------------
COPY_CHUNK = 1 << 18


def _wait(fd: int, events: int) -> None:
    """Block (GIL released) until the socket is ready; the watchdog's shutdown wakes it."""
    poller = select.poll()
    poller.register(fd, events)
    while not poller.poll():
        pass


def _result(pgconn: Any, fd: int) -> Any:
    """The next result of the running query (None: the query is done)."""
    while pgconn.is_busy():
        _wait(fd, select.POLLIN)
        pgconn.consume_input()
    return pgconn.get_result()


def _flush(pgconn: Any, fd: int) -> None:
    while pgconn.flush():
        _wait(fd, select.POLLIN | select.POLLOUT)
        pgconn.consume_input()


def run_script(conn: psycopg.Connection[Any], query: bytes, data: bytes = b"") -> list[int]:
    """Run ``query`` -- several statements sent as one simple query, so the server runs them
    as ONE implicit transaction (rolled back as a whole on any error) -- streaming ``data``
    into its ``COPY … FROM STDIN`` if it has one. Returns the rows each statement affected.

    One round trip for an INSERT script, two with a COPY, where psycopg's ``BEGIN``,
    ``execute()``…, ``COMMIT`` take four or more. Raises the server's error (the connection is
    then ready for the next query); on any other failure the connection is closed (its
    protocol state is unknown).
    """
    pgconn = conn.pgconn
    error: Any = None
    counts: list[int] = []
    try:
        fd = pgconn.socket
        pgconn.send_query(query)
        _flush(pgconn, fd)
        result = _result(pgconn, fd)
        while result is not None:
            if result.status == pq.ExecStatus.COPY_IN:
                view = memoryview(data)
                for start in range(0, len(view), COPY_CHUNK):
                    while not pgconn.put_copy_data(view[start : start + COPY_CHUNK]):
                        _wait(fd, select.POLLOUT)
                while not pgconn.put_copy_end(None):
                    _wait(fd, select.POLLOUT)
                _flush(pgconn, fd)
            elif result.status == pq.ExecStatus.FATAL_ERROR:
                error = error or result
            elif result.status in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
                tuples = result.command_tuples
                counts.append(tuples if tuples is not None else 0)
            else:
                raise psycopg.OperationalError(f"unexpected result {result.status!r}")
            result = _result(pgconn, fd)
    except BaseException:
        with contextlib.suppress(Exception):
            conn.close()
        raise
    if error is not None:
        raise psycopg.errors.error_from_result(error, encoding=conn.info.encoding)
    return counts


# -- the dead-letter file -----------------------------------------------------------------
def append_line(path: str, line: bytes) -> None:
    """Append one complete line (fsync'ed). A torn last line left by a crash or a failed
    write is first set aside to ``<path>.torn-<time>`` with an ERROR log, so the new line
    never glues onto it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            keep = _last_newline(fd, size) + 1
            aside = set_aside_tail(fd, path, keep, size, time.time())
            event("ERROR", "dead_letter_torn_tail",
                  "the dead-letter file ends in an incomplete line; moved it aside",
                  file=path, kept_bytes=keep, damaged_bytes=size - keep,
                  moved_to=aside)  # fmt: skip
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_newline(fd: int, size: int, window: int = 64 * 1024) -> int:
    """Offset of the last ``\\n`` before ``size``, or -1."""
    end = size
    while end > 0:
        start = max(0, end - window)
        found = os.pread(fd, end - start, start).rfind(b"\n")
        if found >= 0:
            return start + found
        end = start
    return -1


# -- the sink -----------------------------------------------------------------------------
class PostgresSink:
    name = "postgres"

    def __init__(
        self,
        settings: PostgresSettings,
        *,
        retry: RetrySettings,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.retry = retry
        self._metrics = metrics
        # read by the agent: these make it run this sink behind a write-ahead SpoolWorker
        self.spool_dir = settings.spool_dir
        self.spool_max_size = settings.spool_max_size
        self.batch_max_rows = settings.batch_max_rows
        self.flush_interval = settings.flush_interval
        self.backlog_limit = max(1000, settings.spool_max_size // RECORD_BYTES_ESTIMATE)
        self.dead_letter_path = os.path.join(settings.spool_dir, DEAD_LETTER_FILE)
        self._conn: psycopg.Connection[Any] | None = None
        self._schema_ready = False
        self._watchdog = Watchdog()
        self._last_problem: str | None = None
        self._secrets: list[str] = []
        self._encoders = {name: UnnestEncoder(m) for name, m in MEASUREMENTS.items()}

    # -- Sink ----------------------------------------------------------------------------
    def open(self) -> None:
        """Nothing to do: the first write connects (a server down at start is just transient)."""

    def write(self, batch: Sequence[Record]) -> None:
        groups: dict[str, list[Record]] = {}
        for record in batch:
            groups.setdefault(record.measurement, []).append(record)
        conn = self._connection()
        try:
            self._write_groups(conn, groups)
        except psycopg.Error as exc:
            kind = self._after_error(exc)
            if kind != DATA:
                raise self._failure(exc, kind) from exc
        else:
            self._recovered()
            return
        for name, records in groups.items():
            try:
                self._bisect(name, records)
            except psycopg.Error as exc:
                kind = self._after_error(exc)
                raise self._failure(exc, kind) from exc
        self._recovered()

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def check(self) -> list[CheckResult]:
        results: list[CheckResult] = []
        try:
            password = read_password(self.settings)
        except OSError as exc:
            return [CheckResult("sink postgres", False, f"SIC_DB_PASSWORD_FILE: {exc}")]
        secrets = dsn_secrets(self.settings, password)
        try:
            with connect(self.settings, password) as conn:
                version = conn.info.server_version
                summary = ensure_schema(
                    conn,
                    self.settings.schema,
                    self.settings.timescale,
                    statement_timeout=self.settings.statement_timeout,
                )
                results.append(CheckResult(
                    "sink postgres", True,
                    f"connected to {describe(conn)} (PostgreSQL {version // 10000}."
                    f"{version % 10000}); {summary}",
                ))  # fmt: skip
        except psycopg.Error as exc:
            detail = f"{classify(exc)} error: {error_text(exc)}"
            results.append(CheckResult("sink postgres", False, redact_secret(detail, secrets)))
        results.append(self._check_spool())
        return results

    def _check_spool(self) -> CheckResult:
        name = "sink postgres spool"
        try:
            os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)
            probe = os.path.join(self.spool_dir, f".check-{os.getpid()}")
            with open(probe, "wb") as handle:
                handle.write(b"ok")
                os.fsync(handle.fileno())
            os.unlink(probe)
        except OSError as exc:
            return CheckResult(name, False, f"{self.spool_dir} is not writable: {exc}")
        return CheckResult(name, True, f"{self.spool_dir} writable "
                           f"(limit {self.spool_max_size} bytes)")  # fmt: skip

    # -- internals -----------------------------------------------------------------------
    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._conn = None
        try:
            password = read_password(self.settings)
        except OSError as exc:
            self._problem(CONFIG, f"cannot read SIC_DB_PASSWORD_FILE: {exc}")
            raise TransientSinkError(f"cannot read the password file: {exc}") from exc
        self._secrets = dsn_secrets(self.settings, password)
        self._watchdog.fired = False
        try:
            conn = connect(self.settings, password)
        except psycopg.Error as exc:
            raise self._failure(exc, classify(exc)) from exc
        try:
            with self._watchdog.guard(self._deadline(), lambda: abort_socket(conn)):
                if not self._schema_ready:
                    summary = ensure_schema(
                        conn,
                        self.settings.schema,
                        self.settings.timescale,
                        statement_timeout=self.settings.statement_timeout,
                    )
                    self._schema_ready = True
                    event("INFO", "postgres_schema_ready", summary, sink=self.name,
                          target=describe(conn))  # fmt: skip
        except psycopg.Error as exc:
            with contextlib.suppress(Exception):
                conn.close()
            raise self._failure(exc, classify(exc)) from exc
        self._conn = conn
        return conn

    def _deadline(self) -> float:
        return self.settings.statement_timeout + WATCHDOG_GRACE

    def _write_groups(self, conn: psycopg.Connection[Any], groups: dict[str, list[Record]]) -> None:
        """One transaction, one round trip: ``SET LOCAL`` and an ``INSERT … SELECT … FROM
        unnest(…) ON CONFLICT DO NOTHING`` per table (:func:`insert_script`)."""
        query = insert_script(
            self.settings.schema, groups, self._encoders, self.settings.statement_timeout
        )
        with self._watchdog.guard(self._deadline(), lambda: abort_socket(conn)):
            run_script(conn, query)

    def _bisect(self, name: str, records: list[Record]) -> None:
        """Write ``records`` in halves until the rows the server rejects are isolated."""
        conn = self._connection()
        try:
            self._write_groups(conn, {name: records})
        except psycopg.Error as exc:
            if self._after_error(exc) != DATA:
                raise
            if len(records) == 1:
                self._dead_letter(records[0], exc)
                return
            mid = len(records) // 2
            self._bisect(name, records[:mid])
            self._bisect(name, records[mid:])

    def _after_error(self, exc: psycopg.Error) -> str:
        """Classify; drop the connection unless only the data was wrong (it rolled back)."""
        kind = TRANSIENT if self._watchdog.fired else classify(exc)
        if getattr(exc, "sqlstate", None) in ("42P01", "3F000"):
            self._schema_ready = False  # table or schema dropped under us: recreate
            kind = TRANSIENT
        if kind != DATA or (self._conn is not None and self._conn.closed):
            self.close()
        return kind

    def _failure(self, exc: BaseException, kind: str) -> TransientSinkError:
        text = redact_secret(error_text(exc), self._secrets)
        if self._watchdog.fired:
            text = f"no answer within {self._deadline():g}s (server black-holed?): {text}"
        self._problem(kind, text)
        return TransientSinkError(f"{kind}: {text}")

    def _problem(self, kind: str, text: str) -> None:
        if kind == CONFIG and text != self._last_problem:
            event("ERROR", "postgres_config_error",
                  "PostgreSQL refuses this configuration; spooling and probing until it is "
                  "fixed", sink=self.name, error=text)  # fmt: skip
        self._last_problem = text

    def _recovered(self) -> None:
        self._last_problem = None

    def _dead_letter(self, record: Record, exc: psycopg.Error) -> None:
        text = redact_secret(error_text(exc), self._secrets)
        line = json.dumps(
            {
                "logged_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "sink": self.name,
                "error": text,
                "measurement": record.measurement,
                "ts": record.ts.isoformat(),
                "host": record.host,
                "tags": dict(record.tags),
                "fields": dict(record.fields),
            },
            separators=(",", ":"),
            default=str,
        )
        os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)
        append_line(self.dead_letter_path, (line + "\n").encode())
        self._metrics.dead_lettered.inc()
        event("ERROR", "postgres_row_rejected",
              "PostgreSQL rejected a row; wrote it to the dead-letter file",
              sink=self.name, measurement=record.measurement, error=text,
              file=self.dead_letter_path)  # fmt: skip


__all__ = [
    "CONFIG",
    "DATA",
    "TRANSIENT",
    "PostgresSink",
    "classify",
    "connect",
    "ensure_schema",
]
