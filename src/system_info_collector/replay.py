"""``system-info-collector replay PATH...``: load CSV files into PostgreSQL, idempotently.

PATH is a CSV file written by the CSV sink (active ``<m>.csv`` or rotated ``<m>.<first>-<last>
.csv[.gz]``) or a directory of them (searched recursively; hidden directories such as the
``.spool`` are skipped). The measurement of a file is recognised by its header row. The rows go
through the same path as the live sink -- ``COPY`` (CSV, streamed in large chunks) into a
staging table, then ``INSERT … ON CONFLICT DO NOTHING`` on the primary key -- so replaying a
file twice, or a file the sink already wrote, adds nothing. A torn last line (kill -9 of the
writer) or a truncated ``.gz`` is reported and the intact rows before it are loaded; a line the
server rejects is isolated by bisection and reported with its line number.

Progress goes to stderr: one line per file, and the whole replay's bytes done of the total, rate
and ETA -- a tqdm bar on a terminal, a plain line every 2 s otherwise; the summary to stdout.
A dead-letter/held file of the PostgreSQL sink (``*.jsonl``) named on the command line is
loaded through the live sink's statement.

Exit status: 0 all rows loaded (or already there); 1 some file or row could not be loaded, or
the server failed; 2 a PATH does not exist / nothing to replay / no DSN.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import IO, Any, TextIO

import psycopg

from system_info_collector.config import PostgresSettings, RetrySettings
from system_info_collector.durable import line_blocks
from system_info_collector.model import Record
from system_info_collector.progress import Progress
from system_info_collector.redact import redact_secret
from system_info_collector.retry import Backoff
from system_info_collector.schema import MEASUREMENTS, Measurement
from system_info_collector.sinks.postgres import (
    CONFIG,
    DATA,
    TRANSIENT,
    WATCHDOG_GRACE,
    UnnestEncoder,
    Watchdog,
    abort_socket,
    classify,
    connect,
    copy_script,
    dsn_secrets,
    ensure_schema,
    error_text,
    insert_script,
    partitions,
    read_password,
    run_script,
)
from system_info_collector.sinks.postgres.deadletter import read_records

CHUNK_BYTES = 8 << 20  # per COPY transaction
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# header row -> (measurement, the file's columns): files written before ``interval_ms`` (schema
# version 1) replay too, their rows get interval_ms NULL (unknown).
_HEADERS = {
    (",".join(columns) + "\n").encode(): (m, columns)
    for m in MEASUREMENTS.values()
    for columns in (m.columns, tuple(c for c in m.columns if c != "interval_ms"))
}


def _timestamps(data: bytes) -> list[datetime]:
    """The distinct hours of the ``ts`` column (the first field) of CSV lines: enough to
    know which partitions a chunk needs."""
    hours = {line[:13] for line in data.split(b"\n") if line}
    out = []
    for hour in hours:
        with contextlib.suppress(ValueError):
            out.append(datetime.fromisoformat(hour.decode("ascii", "replace") + ":00+00:00"))
    return out


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


JSON_BATCH = 5000  # records per transaction from a dead-letter file


def _is_records_file(path: str) -> bool:
    """A dead-letter/held/conflicts file of the PostgreSQL sink (``*.jsonl``, ``*.jsonl.1``)."""
    name = os.path.basename(path)
    return name.endswith(".jsonl") or ".jsonl." in name


class ReplayError(Exception):
    """Stops the whole replay (the server is unusable); the message is for the user."""


@dataclass
class Totals:
    files: int = 0
    rows: int = 0
    inserted: int = 0
    rejected: int = 0
    problems: list[str] = field(default_factory=list)


def discover(paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """The CSV files under ``paths`` (sorted, oldest rotated files first) and missing paths."""
    files: list[str] = []
    missing: list[str] = []
    for path in paths:
        if os.path.isfile(path):
            files.append(path)
        elif os.path.isdir(path):
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files += [
                    os.path.join(root, n)
                    for n in sorted(names)
                    if (n.endswith((".csv", ".csv.gz"))) and not n.startswith(".")
                ]
        else:
            missing.append(path)
    return list(dict.fromkeys(files)), missing


class Gunzip(io.RawIOBase):
    """Decompress a gzip file as far as ``zcat`` does: a truncated or damaged stream yields
    every byte decompressed before the damage, then ends (``damage`` says why). Concatenated
    members (``cat a.gz b.gz``) are read one after the other. ``consumed`` counts the
    compressed bytes read (progress)."""

    def __init__(self, path: str) -> None:
        self._raw = open(path, "rb")  # noqa: SIM115 -- closed in close()
        self._z = zlib.decompressobj(wbits=31)
        self._out = b""
        self._done = False
        self.damage: str | None = None
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._out and not self._done:
            raw = self._raw.read(RAW_BLOCK)
            self.consumed += len(raw)
            if not raw:
                self._done = True
                if not self._z.eof and (self.consumed or self._z.unconsumed_tail):
                    self.damage = "the compressed file ends early (truncated)"
                break
            try:
                self._out = self._z.decompress(raw)
                while self._z.eof and self._z.unused_data:  # the next member
                    rest = self._z.unused_data
                    self._z = zlib.decompressobj(wbits=31)
                    self._out += self._z.decompress(rest)
            except zlib.error as exc:
                self._done = True
                self.damage = f"the compressed data is damaged ({exc})"
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


RAW_BLOCK = 1 << 16


def _open(path: str) -> tuple[IO[bytes], Gunzip | None]:
    if path.endswith(".gz"):
        raw = Gunzip(path)
        return io.BufferedReader(raw, CHUNK_BYTES), raw
    return open(path, "rb"), None


def _chunks(handle: IO[bytes], problem: Callable[[str], None], path: str) -> Iterator[bytes]:
    """Whole lines in chunks of about CHUNK_BYTES; a torn tail is reported, not returned."""

    def read(size: int) -> bytes:
        try:
            return handle.read(size)
        except OSError as exc:
            problem(f"{path}: cannot read further ({exc}); loaded the rows before it")
            return b""

    for chunk in line_blocks(read, CHUNK_BYTES):
        if chunk.endswith(b"\n"):
            yield chunk
        elif chunk.strip():
            problem(f"{path}: ignored an incomplete last line ({len(chunk)} bytes, torn write)")


class Replayer:
    def __init__(
        self,
        settings: PostgresSettings,
        retry: RetrySettings,
        *,
        progress: TextIO,
    ) -> None:
        self.settings = settings
        self.retry = retry
        self.progress = progress
        self.bar: Progress | None = None  # of the whole replay, in bytes of the files
        self.bytes_before = 0  # of the files done
        self.password = read_password(settings)
        self._secrets = dsn_secrets(settings, self.password)
        self._conn: psycopg.Connection[Any] | None = None
        self._watchdog = Watchdog()
        self._encoders = {name: UnnestEncoder(m) for name, m in MEASUREMENTS.items()}
        self._direct = True
        self._columns: tuple[str, ...] = ()  # the columns of the file being replayed

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            conn = connect(self.settings, self.password)
            ensure_schema(
                conn,
                self.settings.schema,
                self.settings.timescale,
                statement_timeout=self.settings.statement_timeout,
                partition_interval=self.settings.partition_interval,
            )
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _text(self, exc: BaseException) -> str:
        return redact_secret(error_text(exc), self._secrets)

    def _copy(self, m: Measurement, data: bytes, *, direct: bool = False) -> int:
        """One chunk, retried on transient errors; raises psycopg's data errors.

        ``direct`` first tries a plain COPY into the table (all rows new: the usual backfill);
        if any row is already there, or any row is bad, the chunk takes the staging path.
        """
        if direct:
            try:
                return self._retrying(lambda conn: self._load(conn, m, data, direct=True))
            except psycopg.errors.UniqueViolation:
                self._direct = False  # this file overlaps the table: stop trying
            except psycopg.Error:
                pass  # a bad row: the staging path finds it
        return self._retrying(lambda conn: self._load(conn, m, data, direct=False))

    def _load(
        self, conn: psycopg.Connection[Any], m: Measurement, data: bytes, *, direct: bool
    ) -> int:
        """One chunk in one transaction (one simple query); the rows inserted."""
        # synchronous_commit off is safe: a commit lost in a crash is re-done by a re-run
        query = copy_script(
            self.settings.schema,
            m,
            self.settings.statement_timeout,
            direct=direct,
            columns=self._columns,
            synchronous_commit="off",
        )
        try:
            return run_script(conn, query, data)[-1]
        except psycopg.errors.CheckViolation as exc:
            if "no partition of relation" not in str(exc) or conn.closed:
                raise
        s = self.settings  # rows older (or newer) than every partition: make theirs, again
        partitions.ensure_for(
            conn, s.schema, m, _timestamps(data), s.partition_interval, s.statement_timeout
        )
        return run_script(conn, query, data)[-1]

    def ready(self) -> None:
        """Connect and create the schema now: a bad DSN fails before any file is read."""
        self._retrying(lambda conn: 0)

    def _retrying(self, action: Callable[[psycopg.Connection[Any]], int]) -> int:
        backoff = Backoff(self.retry)
        deadline = self.settings.statement_timeout + WATCHDOG_GRACE
        while True:
            try:
                conn = self._connection()
                with self._watchdog.guard(deadline, partial(abort_socket, conn)):
                    return action(conn)
            except psycopg.Error as exc:
                kind = classify(exc)
                if self._watchdog.fired:
                    kind = TRANSIENT
                if kind == DATA:
                    raise
                self.close()
                if kind == CONFIG or backoff.attempt + 1 >= self.retry.max_attempts:
                    raise ReplayError(f"PostgreSQL: {kind} error: {self._text(exc)}") from exc
                delay = backoff.next_delay()
                print(
                    f"replay: PostgreSQL unavailable ({self._text(exc)}); retrying in {delay:.2f}s",
                    file=self.progress,
                )
                time.sleep(delay)

    def _bisect(self, m: Measurement, lines: list[bytes], first: int, path: str, t: Totals) -> None:
        try:
            t.inserted += self._copy(m, b"".join(lines))
        except psycopg.Error as exc:
            if len(lines) == 1:
                t.rejected += 1
                message = f"{path}: line {first}: rejected: {self._text(exc)}"
                self._problem(t, message)
                return
            mid = len(lines) // 2
            self._bisect(m, lines[:mid], first, path, t)
            self._bisect(m, lines[mid:], first + mid, path, t)

    def records_file(self, path: str, t: Totals) -> None:
        """A dead-letter (or held) file of the PostgreSQL sink: JSON lines, one record each,
        written through the live sink's own statement (``INSERT … SELECT … FROM unnest``)."""
        started = time.monotonic()
        rows = inserted = 0
        batch: list[tuple[int, Record]] = []
        try:
            for number, record in read_records(path):
                if record is None or record.measurement not in MEASUREMENTS:
                    self._problem(t, f"{path}: line {number}: not a record of this collector")
                    continue
                batch.append((number, record))
                if len(batch) >= JSON_BATCH:
                    inserted += self._records(batch, path, t)
                    rows += len(batch)
                    batch = []
        except OSError as exc:
            self._problem(t, f"{path}: cannot read ({exc.strerror or exc})")
            return
        if batch:
            inserted += self._records(batch, path, t)
            rows += len(batch)
        t.files += 1
        t.rows += rows
        t.inserted += inserted
        took = max(time.monotonic() - started, 1e-9)
        print(
            f"replay: {path}: records, {rows} rows, {inserted} new, in {took:.2f}s",
            file=self.progress,
        )

    def _records(self, batch: list[tuple[int, Record]], path: str, t: Totals) -> int:
        groups: dict[str, list[Record]] = {}
        for _, record in batch:
            groups.setdefault(record.measurement, []).append(record)
        query = insert_script(
            self.settings.schema, groups, self._encoders, self.settings.statement_timeout
        )
        try:
            return self._retrying(lambda conn: self._run_records(conn, query, groups))
        except psycopg.Error as exc:
            if len(batch) == 1:
                t.rejected += 1
                self._problem(t, f"{path}: line {batch[0][0]}: rejected: {self._text(exc)}")
                return 0
            mid = len(batch) // 2
            return self._records(batch[:mid], path, t) + self._records(batch[mid:], path, t)

    def _run_records(
        self, conn: psycopg.Connection[Any], query: bytes, groups: dict[str, list[Record]]
    ) -> int:
        try:
            return sum(run_script(conn, query)[1:])
        except psycopg.errors.CheckViolation as exc:
            if "no partition of relation" not in str(exc) or conn.closed:
                raise
        s = self.settings
        for name, records in groups.items():
            partitions.ensure_for(
                conn,
                s.schema,
                MEASUREMENTS[name],
                [r.ts for r in records],
                s.partition_interval,
                s.statement_timeout,
            )
        return sum(run_script(conn, query)[1:])

    def _problem(self, t: Totals, message: str) -> None:
        t.problems.append(message)
        print(f"replay: {message}", file=self.progress)

    def file(self, path: str, t: Totals) -> None:
        started = time.monotonic()
        rows = inserted = 0
        try:
            opened, gunzip = _open(path)
            with opened as handle:
                try:
                    header = handle.readline()
                except OSError as exc:
                    self._problem(t, f"{path}: cannot read ({exc})")
                    return
                found = _HEADERS.get(header.replace(b"\r\n", b"\n"))
                if found is None and gunzip is not None and gunzip.damage:
                    self._problem(t, f"{path}: cannot read: {gunzip.damage}")
                    return
                if found is None:
                    shown = header[:80].decode("utf-8", "replace").strip()
                    self._problem(t, f"{path}: not a collector CSV file (header {shown!r})")
                    return
                m, self._columns = found
                line_no = 2
                self._direct = True
                for chunk in _chunks(handle, lambda msg: self._problem(t, msg), path):
                    n = chunk.count(b"\n")
                    before = t.inserted
                    try:
                        t.inserted += self._copy(m, chunk, direct=self._direct)
                    except psycopg.Error:
                        self._bisect(m, chunk.splitlines(keepends=True), line_no, path, t)
                    line_no += n
                    rows += n
                    inserted += t.inserted - before
                    if self.bar is not None:
                        at = gunzip.consumed if gunzip is not None else handle.tell()
                        self.bar.update(self.bytes_before + at, t.rows + rows)
                if gunzip is not None and gunzip.damage:
                    self._problem(
                        t,
                        f"{path}: {gunzip.damage}; loaded the {rows} complete rows "
                        "before it (as zcat recovers them)",
                    )
        except OSError as exc:
            self._problem(t, f"{path}: cannot read ({exc.strerror or exc})")
            return
        t.files += 1
        t.rows += rows
        took = max(time.monotonic() - started, 1e-9)
        print(
            f"replay: {path}: {m.name}, {rows} rows, {inserted} new, in {took:.2f}s "
            f"({rows / took:,.0f} rows/s)",
            file=self.progress,
        )


def replay(
    settings: PostgresSettings,
    retry: RetrySettings,
    paths: Sequence[str],
    *,
    out: TextIO | None = None,
    progress: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    progress = progress or sys.stderr
    files, missing = discover(paths)
    for path in missing:
        print(f"replay: {path}: no such file or directory", file=progress)
    if missing:
        return EXIT_USAGE
    if not files:
        print(f"replay: no .csv or .csv.gz files in {', '.join(paths)}", file=progress)
        return EXIT_USAGE
    if not settings.dsn:
        print("replay: set SIC_DB_DSN (or --db-dsn) to the database to load into", file=progress)
        return EXIT_USAGE
    try:
        replayer = Replayer(settings, retry, progress=progress)
    except OSError as exc:
        print(f"replay: cannot read SIC_DB_PASSWORD_FILE: {exc}", file=progress)
        return EXIT_USAGE
    totals = Totals()
    started = time.monotonic()
    try:
        replayer.ready()
        sizes = {path: _size(path) for path in files}
        replayer.bar = Progress(progress, "replay", sum(sizes.values()), "bytes")
        for path in files:
            if _is_records_file(path):
                replayer.records_file(path, totals)
            else:
                replayer.file(path, totals)
            replayer.bytes_before += sizes[path]
            replayer.bar.update(replayer.bytes_before, totals.rows)
        replayer.bar.close()
    except ReplayError as exc:
        if replayer.bar is not None:
            replayer.bar.close()
        print(f"replay: stopped: {exc}", file=progress)
        totals.problems.append(str(exc))
        replayer.close()
        _summary(out, totals, time.monotonic() - started)
        return EXIT_FAILED
    replayer.close()
    _summary(out, totals, time.monotonic() - started)
    return EXIT_FAILED if totals.problems else EXIT_OK


def _summary(out: TextIO, t: Totals, took: float) -> None:
    took = max(took, 1e-9)
    present = t.rows - t.inserted - t.rejected
    print(
        f"replayed {t.rows} rows from {t.files} files in {took:.2f}s ({t.rows / took:,.0f} "
        f"rows/s): {t.inserted} new, {present} already present, {t.rejected} rejected",
        file=out,
    )
