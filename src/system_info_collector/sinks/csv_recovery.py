"""Crash recovery of an active CSV file: keep every intact row, set the torn tail aside.

We write each tick's rows as complete lines, one record per physical line (no raw newline
inside a field), so after a SIGKILL or a power cut only the end of the file can be damaged:
bytes after the last newline, or whole lines that do not parse (another writer, a disk that
returned garbage). :func:`scan` removes that tail -- copying the removed bytes to
``<file>.torn-<unix-ts>`` first -- and logs ERROR ``csv_torn_tail_repaired``. It reads only the
header, the first row and the damaged tail, never the whole file.

A file whose first line is not our header is salvaged (when the caller says which header it
expects): a hole of NUL bytes where the header was (logrotate's ``copytruncate`` cut the file
while we wrote on at our offset), a torn header, garbage. Every line that is a valid row of
this measurement is kept -- written with the header to a new file that replaces the old one
atomically -- and every other byte goes to ``<file>.torn-<unix-ts>``; ERROR
``csv_damage_salvaged`` with the counts. Only this rare case reads the whole file.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from datetime import UTC, datetime

from system_info_collector.durable import (
    find_newline,
    fsync_dir,
    pread_all,
    pread_lines,
    rfind_newline,
    set_aside_tail,
    torn_path,
    write_all,
)
from system_info_collector.logging import event


@dataclass(frozen=True, slots=True)
class Scanned:
    size: int  # bytes kept: the header and the intact rows
    header: bytes | None  # the file's header line (None: empty file)
    first: datetime | None  # ts of the first and last intact row (None: no rows)
    last: datetime | None
    replaced: bool = False  # salvaged into a new file at the same path: reopen it
    set_aside: int = 0  # damaged bytes moved to a ``.torn-`` file by this scan


def parse_ts(text: str) -> datetime | None:
    if not text.endswith("Z"):
        return None
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def parse_line(line: bytes) -> list[str] | None:
    """The fields of one CSV line, or None if it is not valid UTF-8 RFC 4180."""
    try:
        text = line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        return None
    if "\n" in text or "\r" in text:
        return None
    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error:
        return None
    return rows[0] if len(rows) == 1 else None


def _row_ts(line: bytes, ncols: int) -> datetime | None:
    """The timestamp of a valid data row with ``ncols`` fields, else None."""
    fields = parse_line(line)
    if fields is None or len(fields) != ncols:
        return None
    return parse_ts(fields[0])


def _cut(fd: int, path: str, keep: int, size: int, now: float, what: str) -> int:
    target = set_aside_tail(fd, path, keep, size, now)
    event(
        "ERROR",
        "csv_torn_tail_repaired",
        f"{what}: set the damaged bytes aside",
        file=path,
        kept_bytes=keep,
        removed_bytes=size - keep,
        set_aside=target,
    )
    return size - keep


def _valid_row(line: bytes, header: bytes, ncols: int) -> bytes | None:
    body = line.lstrip(b"\0")  # a NUL hole runs into the first line written after it
    if body.endswith(b"\n") and body != header and _row_ts(body, ncols) is not None:
        return body
    return None


def salvage(fd: int, path: str, header: bytes, *, now: float) -> tuple[int, int]:
    """Keep every valid row of ``path`` (open as ``fd``) under ``header`` in a new file that
    replaces it; the other bytes go to a ``.torn-`` file. Returns (rows kept, bytes removed)."""
    header_fields = parse_line(header)
    assert header_fields is not None
    ncols = len(header_fields)
    size = os.fstat(fd).st_size
    tmp = f"{path}.salvage-tmp"
    target = torn_path(path, now)
    kept = removed = 0
    mode = os.fstat(fd).st_mode & 0o777
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    aside = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        write_all(out, header)
        for line in pread_lines(fd, size):
            body = _valid_row(line, header, ncols)
            if body is not None:
                write_all(out, body)
                kept += 1
                junk = line[: len(line) - len(body)]
            else:
                junk = line
            if junk:
                write_all(aside, junk)
                removed += len(junk)
        os.fsync(out)
        os.fsync(aside)
    except BaseException:
        os.close(out)
        os.unlink(tmp)
        raise
    finally:
        os.close(aside)
    os.close(out)
    os.rename(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")
    event(
        "ERROR",
        "csv_damage_salvaged",
        "CSV file without a valid header (a hole of NUL "
        "bytes after copytruncate, a torn header, garbage): kept its valid rows, set the rest "
        "aside",
        file=path,
        kept_rows=kept,
        removed_bytes=removed,
        set_aside=target,
    )
    return kept, removed


def _has_rows(fd: int, size: int, header: bytes) -> bool:
    ncols = len(parse_line(header) or ())
    return any(_valid_row(line, header, ncols) is not None for line in pread_lines(fd, size))


def scan(fd: int, path: str, *, now: float, header: bytes | None = None) -> Scanned:
    """Repair the file open as ``fd`` (read-write) in place and describe what is left.

    ``header``: the header this file should have; when its first line is not a header, the
    file's valid rows are salvaged into a new file (``replaced``: reopen ``path``)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return Scanned(0, None, None, None)
    nl = find_newline(fd, 0, size)
    header_fields = parse_line(pread_all(fd, nl + 1, 0)) if nl >= 0 else None
    if nl < 0 or not header_fields or header_fields[0] != "ts" or not all(header_fields):
        if header is not None and _has_rows(fd, size, header):
            _, removed = salvage(fd, path, header, now=now)
            return Scanned(0, None, None, None, replaced=True, set_aside=removed)
        cut = _cut(fd, path, 0, size, now, "CSV file without a complete header (torn or foreign)")
        return Scanned(0, None, None, None, set_aside=cut)
    header_end = nl + 1
    header = pread_all(fd, header_end, 0)
    ncols = len(header_fields)

    end = size
    last_nl = rfind_newline(fd, end, header_end)
    end = last_nl + 1 if last_nl >= 0 else header_end
    last: datetime | None = None
    while end > header_end:
        prev = rfind_newline(fd, end - 1, header_end)
        start = prev + 1 if prev >= 0 else header_end
        last = _row_ts(pread_all(fd, end - start, start), ncols)
        if last is not None:
            break
        end = start
    cut = 0
    if end < size:
        cut = _cut(fd, path, end, size, now, "torn or invalid last line in a CSV file")
    if end == header_end:
        return Scanned(end, header, None, None, set_aside=cut)
    first_nl = find_newline(fd, header_end, end)
    first = _row_ts(pread_all(fd, first_nl + 1 - header_end, header_end), ncols)
    return Scanned(end, header, first or last, last, set_aside=cut)
