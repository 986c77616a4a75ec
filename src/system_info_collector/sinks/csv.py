"""CSV files on a mounted volume: one active file per measurement, rotated, compressed, retained.

Format: UTF-8, a header row, the columns of :data:`system_info_collector.schema.MEASUREMENTS`
in order, RFC 4180 quoting (``csv`` module, minimal quoting) with ``\\n`` line endings, ``ts`` as
ISO 8601 UTC with milliseconds and ``Z``, floats as the shortest round-tripping decimal (never
exponent notation, never the locale's separator), integers as integers, ``tags`` as JSON. One
record is always one physical line: CR/LF inside a label are written as ``\\015``/``\\012``
(as ``/proc/mounts`` does), which keeps crash recovery line-based.

``write`` is retry-safe for the same batch: each measurement's rows are written with one
positioned write; on any error the file is cut back to its previous size and the error is
raised as :class:`TransientSinkError`; measurements of the batch already written are not
written again. Rotation and recovery: :mod:`.csv_rotation`, :mod:`.csv_recovery`.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import operator
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from system_info_collector.config import CsvSettings
from system_info_collector.durable import fsync_dir, pwrite_all
from system_info_collector.errors import PermanentSinkError, TransientSinkError
from system_info_collector.logging import event
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.schema import MEASUREMENTS
from system_info_collector.sinks import CheckResult
from system_info_collector.sinks.csv_recovery import scan
from system_info_collector.sinks.csv_rotation import Maintainer, rotated_path

MIN_FREE_BYTES = 1 << 20  # `check` fails below this much free space


def format_ts(ts: datetime) -> str:
    ts = ts.astimezone(UTC) if ts.tzinfo is not None else ts
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def format_float(value: float) -> str:
    text = repr(value)
    if "e" in text:  # 1e-05, 1e+16: spell out, keeping exactly the digits repr chose
        text = format(Decimal(text), "f")
        if "." not in text:
            text += ".0"
    return text


def format_value(value: object) -> str:
    if isinstance(value, datetime):
        return format_ts(value)
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, int):
        return str(value)
    if value is None:
        return ""
    text = str(value)
    if "\n" in text or "\r" in text:
        text = text.replace("\r", "\\015").replace("\n", "\\012")
    return text


def encode_rows(rows: Iterable[Sequence[object]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows([format_value(v) for v in row] for row in rows)
    return buffer.getvalue().encode("utf-8")


def header_bytes(measurement: str) -> bytes:
    return encode_rows([MEASUREMENTS[measurement].columns])


def directory_mode(file_mode: int) -> int:
    """rwx for the owner, r-x for the group/others that may read the files."""
    return 0o700 | (0o050 if file_mode & 0o040 else 0) | (0o005 if file_mode & 0o004 else 0)


# Characters of a row of numbers written by ``repr`` without exponent: anything else (``e``,
# ``inf``, ``True``, ``None``, quotes) sends the row through :func:`format_value`.
_NOT_PLAIN_NUMBERS = str.maketrans("", "", "0123456789.-,")
_MAX_LABEL_TEXTS = 65536


def csv_text(text: str) -> str:
    """``text`` as the ``csv`` module writes it (minimal quoting) after :func:`format_value`."""
    if "\n" in text or "\r" in text:
        text = text.replace("\r", "\\015").replace("\n", "\\012")
    if '"' in text:
        return '"' + text.replace('"', '""') + '"'
    if "," in text:
        return '"' + text + '"'
    return text


class RowEncoder:
    """The CSV lines of one measurement's records, byte for byte what
    ``encode_rows(spec.row(r) for r in records)`` writes, without a formatting call per value:
    a row's numbers go through one ``%r`` format of the row, checked at once to hold nothing
    but digits, dots and minus signs (else the row takes :func:`format_value`); the timestamp
    and host of a batch, the tag JSON, ``interval_ms`` and each label value are formatted once."""

    def __init__(self, label_columns: Sequence[str], field_names: Sequence[str]) -> None:
        self._labels = tuple(label_columns)
        self._label_set = frozenset(self._labels)
        self._names = tuple(field_names)
        getter = operator.itemgetter(*self._names)
        self._values = getter if len(self._names) > 1 else (lambda f: (getter(f),))
        self._format = ",".join(["%r"] * len(self._names))  # one repr per value, one call
        self._texts: dict[str, str] = {}  # label value -> its CSV text (entities repeat)

    def encode(self, records: Iterable[Record]) -> bytes:
        heads: dict[tuple[datetime, str], str] = {}
        extras: dict[tuple[tuple[str, object], ...], str] = {}
        intervals: dict[int, str] = {}  # interval_ms -> its ",<ms>" cell
        texts = self._texts
        if len(texts) > _MAX_LABEL_TEXTS:
            texts.clear()
        labels, label_set, values, names = self._labels, self._label_set, self._values, self._names
        fmt = self._format
        lines = []
        last_ts: object = None
        last_host: object = None
        stamp = ""
        for r in records:
            if r.ts is not last_ts or r.host is not last_host:  # a tick's records share them
                last_ts, last_host = r.ts, r.host
                stamp = heads.get((r.ts, r.host), "")
                if not stamp:
                    stamp = heads[(r.ts, r.host)] = (
                        csv_text(format_value(r.ts)) + "," + csv_text(format_value(r.host)) + ","
                    )
            head = stamp
            tags = r.tags
            for c in labels:
                v = tags.get(c, "")
                if type(v) is str:
                    text = texts.get(v)
                    if text is None:
                        text = texts[v] = csv_text(v)
                else:
                    text = csv_text(format_value(v))
                head += text + ","
            fields = r.fields
            try:
                vals = values(fields)
            except KeyError:  # a missing field is an empty column
                vals = tuple([fields.get(n) for n in names])
            numbers = fmt % vals
            if numbers.translate(_NOT_PLAIN_NUMBERS):
                numbers = ",".join([csv_text(format_value(v)) for v in vals])
            interval = r.interval_ms
            tail = intervals.get(interval)
            if tail is None:  # 0 (unknown) is an empty cell, as Measurement.row's None
                tail = intervals[interval] = "," + (
                    csv_text(format_value(interval)) if interval else ""
                )
            if tags.keys() <= label_set:
                lines.append(head + numbers + ",{}" + tail)
                continue
            key = tuple((k, v) for k, v in tags.items() if k not in label_set)
            extra = extras.get(key)
            if extra is None:
                text = json.dumps(dict(key), separators=(",", ":"), sort_keys=True)
                extra = extras[key] = "," + csv_text(text)
            lines.append(head + numbers + extra + tail)
        lines.append("")
        return "\n".join(lines).encode("utf-8")


@dataclass(slots=True)
class _Active:
    path: str
    fd: int
    dev: int
    ino: int
    size: int
    opened_at: float
    first: datetime | None = None
    last: datetime | None = None
    dirty: bool = False  # a failed write could not be cut back: cut before the next write


def _describe(exc: OSError) -> str:
    return f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")


class CsvSink:
    name = "csv"

    def __init__(
        self, settings: CsvSettings, *, metrics: Metrics, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.directory = settings.directory
        self._metrics = metrics
        self._clock = clock
        self._fsync = settings.fsync
        self._mode = settings.file_mode
        self._dir_mode = directory_mode(settings.file_mode)
        self._active: dict[str, _Active] = {}
        self._headers = {m: header_bytes(m) for m in MEASUREMENTS}
        self._encoders = {
            name: RowEncoder(m.label_columns, [f.name for f in m.fields])
            for name, m in MEASUREMENTS.items()
        }
        self._retrying: Sequence[Record] | None = None  # the batch a failed write() was given
        self._done: set[str] = set()  # its measurements already written
        self._reopen = False  # SIGHUP: fsync, close and reopen the active files at next write
        self.maintainer = Maintainer(
            self.directory,
            MEASUREMENTS,
            compress=settings.compress == "gzip",
            retention=settings.retention,
            max_total_size=settings.max_total_size,
            file_mode=settings.file_mode,
            clock=clock,
        )

    # -- Sink protocol -------------------------------------------------------------------
    def open(self) -> None:
        """Create the directory, repair the active files, start compression/retention."""
        try:
            self._ensure_dir()
            for measurement in MEASUREMENTS:
                if measurement not in self._active and os.path.lexists(self._path(measurement)):
                    self._active[measurement] = self._open_active(measurement)
        except OSError as exc:
            raise TransientSinkError(f"cannot open CSV directory: {_describe(exc)}") from exc
        self.maintainer.start()

    def request_reopen(self) -> None:
        """Ask for the active files to be fsynced, closed and reopened at the next write
        (SIGHUP; safe from any thread: the worker thread acts on it)."""
        self._reopen = True

    def _reopen_files(self) -> None:
        self._reopen = False
        count = len(self._active)
        try:
            self.close_files()
        finally:
            event(
                "INFO",
                "csv_files_reopened",
                "fsynced and closed the active CSV files; reopening them",
                files=count,
                directory=self.directory,
            )

    def write(self, batch: Sequence[Record]) -> None:
        if self._reopen:
            try:
                self._reopen_files()
            except OSError as exc:
                raise TransientSinkError(f"cannot reopen CSV files: {_describe(exc)}") from exc
        if self._retrying is not batch:
            self._retrying, self._done = None, set()
        groups: dict[str, list[Record]] = {}
        for record in batch:
            groups.setdefault(record.measurement, []).append(record)
        unknown = sorted(set(groups) - set(MEASUREMENTS))
        if unknown:
            raise PermanentSinkError(f"no CSV columns for measurement(s) {', '.join(unknown)}")
        for measurement, records in groups.items():
            if measurement in self._done:
                continue
            try:
                self._write(measurement, records)
            except OSError as exc:
                self._retrying = batch
                raise TransientSinkError(
                    f"cannot write {self._path(measurement)}: {_describe(exc)}"
                ) from exc
            self._done.add(measurement)
        self._retrying, self._done = None, set()

    def close(self) -> None:
        try:
            self.close_files()
        finally:
            self.maintainer.stop()

    def close_files(self) -> None:
        """fsync (unless ``never``) and close every active file; they reopen on next write."""
        error: OSError | None = None
        for active in self._active.values():
            try:
                if self._fsync != "never" and not active.dirty:
                    os.fsync(active.fd)
            except OSError as exc:
                error = error or exc
            finally:
                try:
                    os.close(active.fd)
                except OSError as exc:
                    error = error or exc
        self._active.clear()
        if error is not None:
            raise TransientSinkError(f"cannot fsync CSV file: {_describe(error)}") from error

    def check(self) -> list[CheckResult]:
        directory = os.path.abspath(self.directory)
        try:
            self._ensure_dir()
        except OSError as exc:
            return [CheckResult("sink csv directory", False, f"cannot create: {_describe(exc)}")]
        results = [CheckResult("sink csv directory", True, directory)]
        try:
            fd, probe = tempfile.mkstemp(prefix=".sic-check-", dir=directory)
            os.close(fd)
            os.unlink(probe)
            results.append(CheckResult("sink csv writable", True, f"created a file in {directory}"))
        except OSError as exc:
            results.append(CheckResult("sink csv writable", False, _describe(exc)))
        try:
            free = shutil.disk_usage(directory).free
        except OSError as exc:
            results.append(CheckResult("sink csv free space", False, _describe(exc)))
            return results
        results.append(
            CheckResult(
                "sink csv free space",
                free >= MIN_FREE_BYTES,
                f"{free / 2**20:.1f} MiB free in {directory}",
            )
        )
        return results

    def flush_maintenance(self, timeout: float = 30.0) -> bool:
        """Wait for a compression/retention pass (tests, benchmarks)."""
        return self.maintainer.drain(timeout)

    # -- files ---------------------------------------------------------------------------
    def _ensure_dir(self) -> None:
        try:
            os.makedirs(self.directory, mode=self._dir_mode, exist_ok=True)
        except FileExistsError as exc:  # a file (or a dangling link) where the directory belongs
            raise NotADirectoryError(
                errno.ENOTDIR, "exists but is not a directory", self.directory
            ) from exc

    def _path(self, measurement: str) -> str:
        return os.path.join(self.directory, f"{measurement}.csv")

    def _open_active(self, measurement: str) -> _Active:
        """Open (repairing it) or create the active file of ``measurement``."""
        path = self._path(measurement)
        self._ensure_dir()
        now = self._clock()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return self._create(path)
        try:
            found = scan(fd, path, now=now, header=self._headers[measurement])
            if found.set_aside:
                self._metrics.csv_damaged_bytes.inc(found.set_aside)
                self._metrics.csv_damage_events.inc()
            if found.replaced:  # salvaged into a new file: open that one
                os.close(fd)
                fd = -1
                return self._open_active(measurement)
            if found.header is not None and found.header != self._headers[measurement]:
                event(
                    "WARNING",
                    "csv_header_changed",
                    "columns changed: rotating the old file",
                    file=path,
                )
                old = _Active(path, fd, 0, 0, found.size, now, found.first, found.last)
                fd = -1
                if found.first is not None:
                    self._rotate(old, "schema")
                else:
                    os.close(old.fd)
                    os.unlink(path)  # a header and no rows
                return self._create(path)
            st = os.fstat(fd)
            opened_at = found.first.timestamp() if found.first else now
            return _Active(
                path, fd, st.st_dev, st.st_ino, found.size, opened_at, found.first, found.last
            )
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise

    def _create(self, path: str) -> _Active:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, self._mode)
        try:
            os.fchmod(fd, self._mode)  # exactly SIC_CSV_FILE_MODE, whatever the umask
            if self._fsync != "never":
                fsync_dir(self.directory)
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        return _Active(path, fd, st.st_dev, st.st_ino, 0, self._clock())

    def _still_there(self, active: _Active) -> bool:
        try:
            st = os.stat(active.path)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == (active.dev, active.ino)

    def _write(self, measurement: str, records: list[Record]) -> None:
        active = self._active.get(measurement)
        if active is not None and not self._still_there(active):
            event(
                "WARNING",
                "csv_file_vanished",
                "active CSV file was removed or replaced; starting a new one",
                file=active.path,
            )
            del self._active[measurement]
            os.close(active.fd)
            active = None
        elif active is not None and (found := os.fstat(active.fd).st_size) < active.size:
            # Another program cut the file (logrotate's copytruncate, `: > file`): writing on at
            # our offset would leave a hole of NUL bytes and no header. Start it again.
            event(
                "WARNING",
                "csv_file_truncated",
                "active CSV file was truncated by another "
                "program (copytruncate?); starting it again with a header",
                file=active.path,
                expected_bytes=active.size,
                found_bytes=found,
            )
            self._metrics.csv_truncations.inc()
            del self._active[measurement]
            os.close(active.fd)
            active = None
        if active is None:
            active = self._active[measurement] = self._open_active(measurement)
        body = self._encoders[measurement].encode(records)
        if active.first is not None:
            if active.size + len(body) > self.settings.rotate_size:
                reason = "size"
            elif self._clock() - active.opened_at >= self.settings.rotate_interval:
                reason = "age"
            else:
                reason = ""
            if reason:
                del self._active[measurement]
                self._rotate(active, reason)
                active = self._active[measurement] = self._open_active(measurement)
        data = (self._headers[measurement] if active.size == 0 else b"") + body
        self._append(active, data)
        stamps = [r.ts for r in records]
        active.first = active.first or min(stamps)
        active.last = max(stamps) if active.last is None else max(active.last, *stamps)
        self._metrics.csv_bytes.inc(len(data))

    def _append(self, active: _Active, data: bytes) -> None:
        """Write ``data`` at the end of the file's intact part; on error cut it back."""
        fd, start = active.fd, active.size
        try:
            if active.dirty:
                os.ftruncate(fd, start)
                active.dirty = False
            pos = pwrite_all(fd, data, start)
            if self._fsync == "tick":
                os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, start)
            except OSError:
                active.dirty = True
            raise
        active.size = pos

    def _rotate(self, active: _Active, reason: str) -> None:
        """Rename the active file to its rotated name; always closes it (the caller reopens)."""
        assert active.first is not None and active.last is not None
        try:
            if self._fsync != "never":
                os.fsync(active.fd)
            target = rotated_path(
                self.directory,
                os.path.basename(active.path)[: -len(".csv")],
                active.first,
                active.last,
            )
            os.rename(active.path, target)
        finally:
            os.close(active.fd)
        self._metrics.csv_rotations.inc()
        event(
            "INFO",
            "csv_rotated",
            "rotated a CSV file",
            file=target,
            reason=reason,
            size_bytes=active.size,
        )
        self.maintainer.notify()
        if self._fsync != "never":
            fsync_dir(self.directory)
