"""PostgreSQL sink: schema from :mod:`~system_info_collector.schema`, idempotent batched writes.

Each batch is one transaction: ``COPY`` into a temporary staging table per measurement, then
``INSERT … SELECT … ON CONFLICT (host, <entity>, ts) DO NOTHING`` -- so a retried or replayed
batch can never duplicate a row. Errors are classified by SQLSTATE class (as Telegraf's
PostgreSQL output does):

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
    statement_ms = max(1, int(settings.statement_timeout * 1000))
    options = params.get("options") or ""
    params["options"] = f"{options} -c statement_timeout={statement_ms}".strip()
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
    """An autocommit connection (transactions are explicit); raises psycopg errors."""
    if password is None:
        password = read_password(settings)
    return psycopg.connect(autocommit=True, **connect_kwargs(settings, password))


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


def stage_ident(m: Measurement) -> sql.Identifier:
    return sql.Identifier(f"sic_stage_{m.name}")


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


def insert_sql(schema: str, m: Measurement) -> sql.Composed:
    cols = columns_sql(m)
    return sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) DO NOTHING").format(
        table_ident(schema, m),
        cols,
        cols,
        stage_ident(m),
        sql.SQL(", ").join(sql.Identifier(c) for c in m.primary_key),
    )


def ensure_schema(conn: psycopg.Connection[Any], schema: str, timescale: str = "auto") -> str:
    """Create the schema, tables, indexes and version row if missing. Returns a summary."""
    notes: list[str] = []
    with conn.transaction():
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


def create_stages(conn: psycopg.Connection[Any], schema: str) -> None:
    """Per-connection temporary staging tables, emptied at every commit."""
    for m in MEASUREMENTS.values():
        conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) "
                "ON COMMIT DELETE ROWS"
            ).format(stage_ident(m), table_ident(schema, m))
        )


# The live sink stages every measurement of a batch in ONE temporary table, so that a batch is
# one COPY whatever it holds: a column ``m`` (the measurement's index in MEASUREMENTS), then the
# columns of every measurement, each prefixed ``<measurement>.`` and typed as in its table. A
# row fills its own measurement's columns; the others stay NULL. Per measurement, ``INSERT …
# SELECT <its columns> FROM sic_stage WHERE m = <index> ON CONFLICT DO NOTHING`` moves the rows.
WIDE_STAGE = "sic_stage"
_ORDER = tuple(MEASUREMENTS)


def column_types(m: Measurement) -> list[tuple[str, str]]:
    """``(column, SQL type)`` of a measurement's table, in :attr:`Measurement.columns` order."""
    types = {f.name: f.sql_type for f in m.fields}
    out = [("ts", "timestamptz"), ("host", "text")]
    out += [(c, "text") for c in m.label_columns]
    out += [(f, types[f]) for f in m.columns if f in types]
    out.append(("tags", "jsonb"))
    assert [c for c, _ in out] == list(m.columns)
    return out


def create_wide_stage(conn: psycopg.Connection[Any]) -> None:
    """The per-connection staging table of :class:`PostgresSink` (emptied at every commit)."""
    cols: list[sql.Composable] = [sql.SQL("m smallint NOT NULL")]
    for m in MEASUREMENTS.values():
        cols += [
            sql.SQL("{} {}").format(sql.Identifier(f"{m.name}.{c}"), sql.SQL(t))
            for c, t in column_types(m)
        ]
    conn.execute(
        sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS").format(
            sql.Identifier(WIDE_STAGE), sql.SQL(", ").join(cols)
        )
    )


def wide_copy_sql() -> sql.Composed:
    return sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(WIDE_STAGE))


def wide_insert_sql(schema: str, m: Measurement) -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {} ({}) SELECT {} FROM {} WHERE m = {} ON CONFLICT ({}) DO NOTHING"
    ).format(
        table_ident(schema, m),
        columns_sql(m),
        sql.SQL(", ").join(sql.Identifier(f"{m.name}.{c}") for c in m.columns),
        sql.Identifier(WIDE_STAGE),
        sql.Literal(_ORDER.index(m.name)),
        sql.SQL(", ").join(sql.Identifier(c) for c in m.primary_key),
    )


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def copy_text(value: object) -> str:
    """One value in ``COPY … FROM STDIN`` text format (the common types first: it is hot)."""
    kind = type(value)
    if kind is float:
        return repr(value)
    if kind is str:
        text: str = value  # type: ignore[assignment]
        if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
            return text.translate(_COPY_ESCAPES)
        return text
    if value is None:
        return "\\N"
    if kind is int:
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return repr(float(value))
    if isinstance(value, str):
        return copy_text(str(value))
    return str(value)


class RowShaper:
    """Records as rows of the wide stage in COPY text format: ``m``, NULLs, their columns."""

    def __init__(self) -> None:
        widths = [len(MEASUREMENTS[name].columns) for name in _ORDER]
        total = sum(widths)
        self._parts: dict[str, tuple[str, str]] = {}
        offset = 0
        for index, (name, width) in enumerate(zip(_ORDER, widths, strict=True)):
            before = f"{index}\t" + "\\N\t" * offset
            after = "\t\\N" * (total - offset - width) + "\n"
            self._parts[name] = (before, after)
            offset += width

    def text(self, name: str, records: Sequence[Record]) -> str:
        before, after = self._parts[name]
        row = MEASUREMENTS[name].row
        return "".join([before + "\t".join(map(copy_text, row(r))) + after for r in records])


# -- one batch, two round trips ----------------------------------------------------------
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


def copy_batch(conn: psycopg.Connection[Any], query: bytes, data: bytes) -> None:
    """Run ``query`` -- ``COPY … FROM STDIN`` then other statements, sent as one simple query,
    so the server runs them as ONE (implicit) transaction -- streaming ``data`` into the COPY.

    Two round trips (the query; the data), where psycopg's ``BEGIN``, ``cursor.copy()``,
    ``execute()``, ``COMMIT`` take four. Raises the server's error (the transaction is then
    rolled back and the connection is ready for the next query); on any other failure the
    connection is closed (its protocol state is unknown).
    """
    pgconn = conn.pgconn
    error: Any = None
    try:
        fd = pgconn.socket
        pgconn.send_query(query)
        _flush(pgconn, fd)
        result = _result(pgconn, fd)
        if result is not None and result.status == pq.ExecStatus.COPY_IN:
            view = memoryview(data)
            for start in range(0, len(view), COPY_CHUNK):
                while not pgconn.put_copy_data(view[start : start + COPY_CHUNK]):
                    _wait(fd, select.POLLOUT)
            while not pgconn.put_copy_end(None):
                _wait(fd, select.POLLOUT)
            _flush(pgconn, fd)
            result = _result(pgconn, fd)
        while result is not None:
            if result.status == pq.ExecStatus.FATAL_ERROR and error is None:
                error = result
            elif result.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
                raise psycopg.OperationalError(f"unexpected result {result.status!r}")
            result = _result(pgconn, fd)
    except BaseException:
        with contextlib.suppress(Exception):
            conn.close()
        raise
    if error is not None:
        raise psycopg.errors.error_from_result(error, encoding=conn.info.encoding)


def copy_csv(
    conn: psycopg.Connection[Any], schema: str, m: Measurement, data: bytes, *, direct: bool = False
) -> int:
    """COPY CSV lines (no header, the columns of ``m``) in, in one transaction; rows inserted.

    Through the staging table and ``INSERT … ON CONFLICT DO NOTHING``; or, with ``direct``,
    straight into the table -- as fast as COPY gets, but all or nothing: it raises
    ``UniqueViolation`` if any row is already there (the caller then takes the staging path).
    """
    not_null = sql.SQL(", ").join(sql.Identifier(c) for c in ("host", *m.label_columns))
    target = table_ident(schema, m) if direct else stage_ident(m)
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(
            sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, FORCE_NOT_NULL ({}))").format(
                target, columns_sql(m), not_null
            )
        ) as copy:
            copy.write(data)
        if direct:
            return max(cur.rowcount, 0)
        cur.execute(insert_sql(schema, m))
        return max(cur.rowcount, 0)


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
        self._statements: dict[tuple[str, ...], bytes] = {}  # COPY + INSERTs per key set
        self._shaper = RowShaper()

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
                summary = ensure_schema(conn, self.settings.schema, self.settings.timescale)
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
                    summary = ensure_schema(conn, self.settings.schema, self.settings.timescale)
                    self._schema_ready = True
                    event("INFO", "postgres_schema_ready", summary, sink=self.name,
                          target=describe(conn))  # fmt: skip
                create_wide_stage(conn)
        except psycopg.Error as exc:
            with contextlib.suppress(Exception):
                conn.close()
            raise self._failure(exc, classify(exc)) from exc
        self._conn = conn
        return conn

    def _deadline(self) -> float:
        return self.settings.statement_timeout + WATCHDOG_GRACE

    def _write_groups(self, conn: psycopg.Connection[Any], groups: dict[str, list[Record]]) -> None:
        """One transaction, two round trips: ``COPY`` every record of the batch into the wide
        stage, then ``INSERT … ON CONFLICT DO NOTHING`` into each table (:func:`copy_batch`)."""
        key = tuple(groups)
        query = self._statements.get(key)
        if query is None:
            schema = self.settings.schema
            parts = [wide_copy_sql(), *(wide_insert_sql(schema, MEASUREMENTS[n]) for n in key)]
            query = self._statements[key] = b"; ".join(p.as_bytes(conn) for p in parts)
        shaper = self._shaper
        data = "".join(shaper.text(name, records) for name, records in groups.items()).encode()
        with self._watchdog.guard(self._deadline(), lambda: abort_socket(conn)):
            copy_batch(conn, query, data)

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
