"""Crash recovery of an active CSV file: keep every intact row, set the torn tail aside.

We write each tick's rows as complete lines, one record per physical line (no raw newline
inside a field), so after a SIGKILL or a power cut only the end of the file can be damaged:
bytes after the last newline, or whole lines that do not parse (another writer, a disk that
returned garbage). :func:`scan` removes that tail -- copying the removed bytes to
``<file>.torn-<unix-ts>`` first -- and logs ERROR ``csv_torn_tail_repaired``. A file whose
first line is not a header (a partial header, garbage) is set aside entirely. It reads only the
header, the first row and the damaged tail, never the whole file.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from datetime import UTC, datetime

from system_info_collector.durable import set_aside_tail
from system_info_collector.logging import event

WINDOW = 64 * 1024


@dataclass(frozen=True, slots=True)
class Scanned:
    size: int  # bytes kept: the header and the intact rows
    header: bytes | None  # the file's header line (None: empty file)
    first: datetime | None  # ts of the first and last intact row (None: no rows)
    last: datetime | None


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


def _rfind_newline(fd: int, end: int, floor: int) -> int:
    """Offset of the last newline in ``[floor, end)``, or -1."""
    pos = end
    while pos > floor:
        start = max(floor, pos - WINDOW)
        i = os.pread(fd, pos - start, start).rfind(b"\n")
        if i >= 0:
            return start + i
        pos = start
    return -1


def _find_newline(fd: int, start: int, end: int) -> int:
    """Offset of the first newline in ``[start, end)``, or -1."""
    pos = start
    while pos < end:
        chunk = os.pread(fd, min(WINDOW, end - pos), pos)
        if not chunk:
            return -1
        i = chunk.find(b"\n")
        if i >= 0:
            return pos + i
        pos += len(chunk)
    return -1


def _cut(fd: int, path: str, keep: int, size: int, now: float, what: str) -> None:
    target = set_aside_tail(fd, path, keep, size, now)
    event("ERROR", "csv_torn_tail_repaired", f"{what}: set the damaged bytes aside",
          file=path, kept_bytes=keep, removed_bytes=size - keep, set_aside=target)  # fmt: skip


def scan(fd: int, path: str, *, now: float) -> Scanned:
    """Repair the file open as ``fd`` (read-write) in place and describe what is left."""
    size = os.fstat(fd).st_size
    if size == 0:
        return Scanned(0, None, None, None)
    nl = _find_newline(fd, 0, size)
    header_fields = parse_line(os.pread(fd, nl + 1, 0)) if nl >= 0 else None
    if nl < 0 or not header_fields or header_fields[0] != "ts" or not all(header_fields):
        _cut(fd, path, 0, size, now, "CSV file without a complete header (torn or foreign)")
        return Scanned(0, None, None, None)
    header_end = nl + 1
    header = os.pread(fd, header_end, 0)
    ncols = len(header_fields)

    end = size
    last_nl = _rfind_newline(fd, end, header_end)
    end = last_nl + 1 if last_nl >= 0 else header_end
    last: datetime | None = None
    while end > header_end:
        prev = _rfind_newline(fd, end - 1, header_end)
        start = prev + 1 if prev >= 0 else header_end
        last = _row_ts(os.pread(fd, end - start, start), ncols)
        if last is not None:
            break
        end = start
    if end < size:
        _cut(fd, path, end, size, now, "torn or invalid last line in a CSV file")
    if end == header_end:
        return Scanned(end, header, None, None)
    first_nl = _find_newline(fd, header_end, end)
    first = _row_ts(os.pread(fd, first_nl + 1 - header_end, header_end), ncols)
    return Scanned(end, header, first or last, last)
