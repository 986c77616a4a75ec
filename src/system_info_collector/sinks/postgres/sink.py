"""The PostgreSQL sink: writes a batch in one transaction, idempotently; raises
:class:`~system_info_collector.errors.TransientSinkError` for whatever must be retried.

Each batch is one simple query: ``SET LOCAL statement_timeout``, then per measurement ``INSERT
… SELECT … FROM unnest(<arrays>) ON CONFLICT (host, <entity>, ts) DO NOTHING`` -- so a retried
or replayed batch never duplicates a row, and nothing outlives the transaction (no startup
options, no temporary table, no prepared statement): PgBouncer in ``pool_mode = transaction``
with its default settings works. Errors by :class:`~.errors.ErrorKind`:

* *transient* (connection refused/reset, timeouts, server restart, serialization failures,
  out of resources): :class:`TransientSinkError`, the worker retries with backoff;
* *data* (classes 22, 23, 54: the server rejects a row): the batch is bisected, the rejected
  rows go to ``dead-letter.jsonl`` in the spool directory, the rest is written;
* *config* (bad password, missing database/schema, no privilege): ERROR log with the server's
  message, then :class:`TransientSinkError` too -- the data stays in the spool and the worker
  keeps probing, so fixing the secret loses nothing.

A client-side watchdog cuts the socket when a statement does not answer within
``SIC_DB_STATEMENT_TIMEOUT`` + 1 s (a black-holed server answers neither the query nor the
server-side ``statement_timeout``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg

from system_info_collector.config import PostgresSettings, RetrySettings
from system_info_collector.durable import torn_path
from system_info_collector.errors import TransientSinkError
from system_info_collector.logging import event
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.redact import redact_secret
from system_info_collector.schema import MEASUREMENTS
from system_info_collector.sinks import CheckResult
from system_info_collector.sinks.postgres import partitions
from system_info_collector.sinks.postgres.connection import (
    WATCHDOG_GRACE,
    Watchdog,
    abort_socket,
    connect,
    describe,
    dsn_secrets,
    read_password,
    run_script,
)
from system_info_collector.sinks.postgres.ddl import SchemaState, ensure_schema, verify
from system_info_collector.sinks.postgres.deadletter import (
    CONFLICTS_FILE,
    DEAD_LETTER_FILE,
    HELD_FILE,
    append_line,
    conflict_line,
    dead_letter_line,
    file_limit,
    parse_lines,
)
from system_info_collector.sinks.postgres.encoding import (
    UnnestEncoder,
    differing_sql,
    insert_script,
)
from system_info_collector.sinks.postgres.errors import (
    CONFIG,
    DATA,
    TRANSIENT,
    ErrorKind,
    classify,
    error_text,
)

HOLD_RECHECK_EVERY = 30.0  # seconds between checks of a held table
CONFLICT_LOG_EVERY = 60.0  # seconds: one WARNING per minute at most while conflicts go on
MAINTENANCE_EVERY = 900.0  # seconds between partition maintenance runs (cheap when idle)


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
        # the spool directory also holds the dead-letter file (the spool itself is the buffer
        # the worker drives: buffer.py, SIC_POSTGRES_BUFFER; the sink never sees it)
        self.spool_dir = settings.spool_dir
        self.spool_max_size = settings.spool_max_size
        self.batch_max_rows = settings.batch_max_rows  # held rows are re-sent in such chunks
        self.dead_letter_path = os.path.join(settings.spool_dir, DEAD_LETTER_FILE)
        self.conflicts_path = os.path.join(settings.spool_dir, CONFLICTS_FILE)
        self.held_path = os.path.join(settings.spool_dir, HELD_FILE)
        self._held: dict[str, list[str]] = {}
        # rows an earlier process held (held.jsonl) go out with this process's first write to
        # their tables (the table may have been fixed while the collector was stopped)
        self._held_file_checked = False
        self._next_recheck = 0.0
        self._conflicts_unlogged = 0
        self._conflict_log_after = 0.0
        self._conn: psycopg.Connection[Any] | None = None
        self._schema_ready = False
        self._watchdog = Watchdog()
        self._last_problem: str | None = None
        self._secrets: list[str] = []
        self._encoders = {name: UnnestEncoder(m) for name, m in MEASUREMENTS.items()}
        self._partitioned: frozenset[str] = frozenset()
        self._next_maintenance = 0.0

    # -- Sink ----------------------------------------------------------------------------
    def open(self) -> None:
        """Nothing to do: the first write connects (a server down at start is just transient)."""

    def write(self, batch: Sequence[Record]) -> None:
        groups: dict[str, list[Record]] = {}
        for record in batch:
            groups.setdefault(record.measurement, []).append(record)
        conn = self._connection()
        if not self._held_file_checked:
            try:
                self._release([n for n in MEASUREMENTS if n not in self._held], at_start=True)
            except psycopg.Error as exc:
                raise self._failure(exc, self._after_error(exc)) from exc
            self._held_file_checked = True
        if self._held:
            try:
                self._recheck_held(conn)
            except psycopg.Error as exc:
                raise self._failure(exc, self._after_error(exc)) from exc
            for name in [n for n in groups if n in self._held]:
                self._hold(name, groups.pop(name))
            if not groups:
                return
        try:
            self._write_groups(conn, groups)
        except psycopg.Error as exc:
            kind = self._after_error(exc)
            if kind != DATA:
                raise self._failure(exc, kind) from exc
        else:
            self._recovered()
            self._maintain()
            return
        for name, records in groups.items():
            try:
                if len(records) > 1 and self._drifted(conn, name):
                    self._hold(name, records)  # every row would fail: a table problem
                    continue
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
                summary = self._ensure_schema(conn).summary
                results.append(
                    CheckResult(
                        "sink postgres",
                        True,
                        f"connected to {describe(conn)} (PostgreSQL {version // 10000}."
                        f"{version % 10000}); {summary}",
                    )
                )
                for table, problems in verify(conn, self.settings.schema).items():
                    results.append(
                        CheckResult(
                            f"sink postgres table {self.settings.schema}.{table}",
                            False,
                            drift_text(problems),
                        )
                    )
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
        return CheckResult(
            name, True, f"{self.spool_dir} writable (limit {self.spool_max_size} bytes)"
        )

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
                    state = self._ensure_schema(conn)
                    self._schema_ready = True
                    self._partitioned = frozenset(state.partitioned)
                    self._next_maintenance = time.monotonic() + MAINTENANCE_EVERY
                    event(
                        "INFO",
                        "postgres_schema_ready",
                        state.summary,
                        sink=self.name,
                        target=describe(conn),
                    )
                    if state.unpartitioned and self.settings.partition_interval > 0:
                        self._warn_unpartitioned(state)
                    self._set_held(verify(conn, self.settings.schema))
        except psycopg.Error as exc:
            with contextlib.suppress(Exception):
                conn.close()
            raise self._failure(exc, classify(exc)) from exc
        self._conn = conn
        return conn

    def _deadline(self) -> float:
        return self.settings.statement_timeout + WATCHDOG_GRACE

    # -- schema drift: a table whose shape is not ours holds its rows, the others flow ------
    def _drifted(self, conn: psycopg.Connection[Any], name: str) -> bool:
        with self._watchdog.guard(self._deadline(), lambda: abort_socket(conn)):
            found = verify(conn, self.settings.schema)
        self._set_held({**self._held, **{n: p for n, p in found.items() if n == name}})
        return name in found

    def _set_held(self, found: dict[str, list[str]]) -> None:
        """Log each change of state once: a table held (ERROR), a table released (INFO)."""
        for name, problems in found.items():
            if name not in self._held:
                event(
                    "ERROR",
                    "postgres_table_held",
                    "the table does not match the collector's schema: its rows are held in "
                    "the spool directory (not dead-lettered) until it is fixed; the other "
                    "tables go on",
                    sink=self.name,
                    table=f"{self.settings.schema}.{name}",
                    problems=problems,
                    file=self.held_path,
                )
        self._held = dict(found)
        self._next_recheck = time.monotonic() + HOLD_RECHECK_EVERY

    def _recheck_held(self, conn: psycopg.Connection[Any]) -> None:
        if time.monotonic() < self._next_recheck:
            return
        with self._watchdog.guard(self._deadline(), lambda: abort_socket(conn)):
            found = verify(conn, self.settings.schema)
        released = [n for n in self._held if n not in found]
        self._set_held({n: p for n, p in found.items() if n in self._held})
        if released:
            self._release(released)

    def _hold(self, name: str, records: list[Record]) -> None:
        os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)
        problem = drift_text(self._held.get(name, ["table problem"]))
        with contextlib.suppress(FileNotFoundError):
            if os.path.getsize(self.held_path) > self.settings.spool_max_size:
                event(
                    "ERROR",
                    "postgres_held_overflow",
                    "the held rows reached SIC_DB_SPOOL_MAX_SIZE; dropping these",
                    sink=self.name,
                    table=name,
                    rows=len(records),
                    file=self.held_path,
                )
                return
        append_line(
            self.held_path, b"".join(dead_letter_line(r, self.name, problem) for r in records)
        )
        self._metrics.db_held.inc(len(records))

    def _release(self, names: list[str], *, at_start: bool = False) -> None:
        """The tables are fixed: write their held rows, keep the others' (one pass); at start,
        the rows an earlier process held for tables that match now (silent if there are none).
        A line that does not parse (damaged on disk) is set aside with an ERROR and counted,
        not kept for ever; a torn last line is left to the next append, which sets it aside."""
        try:
            with open(self.held_path, "rb") as handle:
                lines = handle.readlines()  # split at "\n" only, as parse_lines numbers them
        except FileNotFoundError:
            return
        mine: dict[str, list[Record]] = {}
        keep: list[bytes] = []
        damaged: list[bytes] = []
        for number, record in parse_lines(lines):
            if record is None:
                damaged.append(lines[number - 1])
            elif record.measurement in names:
                mine.setdefault(record.measurement, []).append(record)
            else:
                keep.append(lines[number - 1])
        if at_start and not mine and not damaged:
            return
        if damaged:
            aside = torn_path(self.held_path, time.time())
            with open(aside, "xb") as handle:
                handle.write(b"".join(damaged))
                os.fsync(handle.fileno())
            size = sum(map(len, damaged))
            self._metrics.spool_damage_events.labels(self.name).inc()
            self._metrics.spool_damaged_bytes.labels(self.name).inc(size)
            event(
                "ERROR",
                "postgres_held_damaged",
                "lines of the held-rows file do not parse (damaged on disk); moved them aside",
                sink=self.name,
                file=self.held_path,
                moved_to=aside,
                lines=len(damaged),
                damaged_bytes=size,
            )
        for name, records in mine.items():
            for start in range(0, len(records), self.batch_max_rows):
                self._bisect(name, records[start : start + self.batch_max_rows])
        tail = lines[-1] if lines and not lines[-1].endswith(b"\n") else b""
        tmp = self.held_path + ".tmp"
        with open(tmp, "wb") as handle:
            handle.write(b"".join(keep) + tail)
            os.fsync(handle.fileno())
        os.replace(tmp, self.held_path)
        if mine or not at_start:
            event(
                "INFO",
                "postgres_table_released",
                "the table matches the schema; wrote the rows held for it",
                sink=self.name,
                tables=sorted(mine) if at_start else names,
                rows=sum(len(r) for r in mine.values()),
            )

    def _ensure_schema(self, conn: psycopg.Connection[Any]) -> SchemaState:
        s = self.settings
        return ensure_schema(
            conn,
            s.schema,
            s.timescale,
            statement_timeout=s.statement_timeout,
            partition_interval=s.partition_interval,
        )

    def _warn_unpartitioned(self, state: SchemaState) -> None:
        event(
            "WARNING",
            "postgres_table_unpartitioned",
            "these tables were created by schema version 1 (not partitioned): SIC_DB_RETENTION "
            "does not apply to them; `system-info-collector db migrate` converts them in "
            "place and keeps every row",
            sink=self.name,
            schema=self.settings.schema,
            tables=list(state.unpartitioned),
        )

    def _write_groups(self, conn: psycopg.Connection[Any], groups: dict[str, list[Record]]) -> None:
        """One transaction, one round trip: ``SET LOCAL`` and an ``INSERT … SELECT … FROM
        unnest(…) ON CONFLICT DO NOTHING`` per table (:func:`insert_script`). A row outside
        every partition makes the partitions it needs, then the batch is written again."""
        query = insert_script(
            self.settings.schema, groups, self._encoders, self.settings.statement_timeout
        )
        try:
            with self._watchdog.guard(self._deadline(), lambda: abort_socket(conn)):
                counts = run_script(conn, query)
        except psycopg.errors.CheckViolation as exc:
            if "no partition of relation" not in str(exc) or conn.closed:
                raise
            self._add_partitions(conn, groups)
            with self._watchdog.guard(self._deadline(), lambda: abort_socket(conn)):
                counts = run_script(conn, query)
        for (name, records), inserted in zip(groups.items(), counts[1:], strict=False):
            if inserted < len(records):
                self._check_conflicts(conn, name, records)

    def _check_conflicts(
        self, conn: psycopg.Connection[Any], name: str, records: list[Record]
    ) -> None:
        """Rows not inserted because their key was there: fine when the stored values are the
        same (a retried batch); otherwise count, log and keep them in conflicts.jsonl."""
        m = MEASUREMENTS[name]
        query = differing_sql(self.settings.schema, m, self._encoders[name].source(records))
        with self._watchdog.guard(self._deadline(), lambda: abort_socket(conn)):
            rows = conn.execute(query).fetchall()
        if not rows:
            return
        width = len(m.primary_key)
        stored = {tuple(row[:width]): row[width] for row in rows}
        os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)
        limit = file_limit(self.settings.spool_max_size)
        first = None
        for record in records:
            values = {"host": record.host, "ts": record.ts, **record.tags}
            key = tuple(values.get(c, "") for c in m.primary_key)
            row = stored.pop(key, None)
            if row is None:
                continue
            first = first or key
            append_line(self.conflicts_path, conflict_line(record, self.name, row), limit)
            self._metrics.db_conflicts.inc()
            self._conflicts_unlogged += 1
        now = time.monotonic()
        if first is not None and now >= self._conflict_log_after:
            self._conflict_log_after = now + CONFLICT_LOG_EVERY
            event(
                "WARNING",
                "postgres_conflicting_rows",
                "rows whose key is already stored with different values: the wall clock "
                "stepped back, or another host reports the same host name (SIC_HOSTNAME); "
                "the stored rows are kept, the new ones written to the conflicts file",
                sink=self.name,
                measurement=name,
                rows=self._conflicts_unlogged,
                host=first[0],
                first_key=[str(k) for k in first],
                file=self.conflicts_path,
            )
            self._conflicts_unlogged = 0

    def _add_partitions(
        self, conn: psycopg.Connection[Any], groups: dict[str, list[Record]]
    ) -> None:
        s = self.settings
        for name, records in groups.items():
            if name not in self._partitioned:
                continue
            with self._watchdog.guard(self._deadline(), lambda: abort_socket(conn)):
                made = partitions.ensure_for(
                    conn,
                    s.schema,
                    MEASUREMENTS[name],
                    (r.ts for r in records),
                    s.partition_interval,
                    s.statement_timeout,
                )
            if made:
                event(
                    "INFO",
                    "postgres_partitions_created",
                    "created partitions for rows outside the existing ones",
                    sink=self.name,
                    partitions=made,
                )

    def _maintain(self) -> None:
        """Partitions ahead and retention, every MAINTENANCE_EVERY, after a write."""
        if not self._partitioned or time.monotonic() < self._next_maintenance:
            return
        self._next_maintenance = time.monotonic() + MAINTENANCE_EVERY
        conn, s = self._conn, self.settings
        if conn is None or conn.closed:
            return
        try:
            with self._watchdog.guard(self._deadline(), lambda: abort_socket(conn)):
                done = partitions.maintain(
                    conn,
                    s.schema,
                    [MEASUREMENTS[n] for n in sorted(self._partitioned)],
                    now=datetime.now(UTC),
                    interval=s.partition_interval,
                    retention=s.retention,
                    statement_timeout=s.statement_timeout,
                )
        except (psycopg.Error, ValueError) as exc:
            event(
                "WARNING",
                "postgres_maintenance_failed",
                "partition maintenance failed; retrying at the next one",
                sink=self.name,
                error=redact_secret(error_text(exc), self._secrets),
            )
            if isinstance(exc, psycopg.Error):
                self._after_error(exc)
            return
        if done and (done[0] or done[1]):
            event(
                "INFO",
                "postgres_partitions",
                "partition maintenance",
                sink=self.name,
                created=done[0],
                dropped=done[1],
                retention_seconds=s.retention,
            )

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

    def _after_error(self, exc: psycopg.Error) -> ErrorKind:
        """Classify; drop the connection unless only the data was wrong (it rolled back)."""
        kind = TRANSIENT if self._watchdog.fired else classify(exc)
        if getattr(exc, "sqlstate", None) in ("42P01", "3F000"):
            self._schema_ready = False  # table or schema dropped under us: recreate
            kind = TRANSIENT
        if kind != DATA or (self._conn is not None and self._conn.closed):
            self.close()
        return kind

    def _failure(self, exc: BaseException, kind: ErrorKind) -> TransientSinkError:
        text = redact_secret(error_text(exc), self._secrets)
        if self._watchdog.fired:
            text = f"no answer within {self._deadline():g}s (server black-holed?): {text}"
        self._problem(kind, text)
        return TransientSinkError(f"{kind}: {text}")

    def _problem(self, kind: ErrorKind, text: str) -> None:
        if kind == CONFIG and text != self._last_problem:
            event(
                "ERROR",
                "postgres_config_error",
                "PostgreSQL refuses this configuration; spooling and probing until it is fixed",
                sink=self.name,
                error=text,
            )
        self._last_problem = text

    def _recovered(self) -> None:
        self._last_problem = None

    def _dead_letter(self, record: Record, exc: psycopg.Error) -> None:
        text = redact_secret(error_text(exc), self._secrets)
        os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)
        limit = file_limit(self.settings.spool_max_size)
        append_line(self.dead_letter_path, dead_letter_line(record, self.name, text), limit)
        self._metrics.dead_lettered.inc()
        event(
            "ERROR",
            "postgres_row_rejected",
            "PostgreSQL rejected a row; wrote it to the dead-letter file",
            sink=self.name,
            measurement=record.measurement,
            error=text,
            file=self.dead_letter_path,
        )


def drift_text(problems: list[str]) -> str:
    return "; ".join(problems) + (
        " -- the table does not match the collector's schema (docs/postgres.md, Tables): "
        "ALTER it back, or rename it and let the collector create it again"
    )
