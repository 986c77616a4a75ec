"""The dead-letter file: rows the server rejected, one JSON line each, with the error."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from system_info_collector.durable import rfind_newline, set_aside_tail, write_all
from system_info_collector.logging import event
from system_info_collector.model import Record

DEAD_LETTER_FILE = "dead-letter.jsonl"
CONFLICTS_FILE = "conflicts.jsonl"
HELD_FILE = "held.jsonl"
MIN_FILE_LIMIT = 1 << 20


def file_limit(spool_max_size: int) -> int:
    """The size limit of the dead-letter and conflict files: 5 % of the spool's, >= 1 MiB."""
    return max(MIN_FILE_LIMIT, spool_max_size // 20)


def conflict_line(record: Record, sink: str, stored: str) -> bytes:
    """A record whose key was already stored with other values, next to the stored row."""
    line = json.dumps(
        {
            "logged_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "sink": sink,
            "conflict": "the key is stored with different values; the stored row was kept",
            "measurement": record.measurement,
            "ts": record.ts.isoformat(),
            "host": record.host,
            "tags": dict(record.tags),
            "fields": dict(record.fields),
            "interval_ms": record.interval_ms,
            "stored": json.loads(stored),
        },
        separators=(",", ":"),
        default=str,
    )
    return (line + "\n").encode()


def dead_letter_line(record: Record, sink: str, error: str) -> bytes:
    """One self-contained JSON line: when, why, and the record as it would have been written."""
    line = json.dumps(
        {
            "logged_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "sink": sink,
            "error": error,
            "measurement": record.measurement,
            "ts": record.ts.isoformat(),
            "host": record.host,
            "tags": dict(record.tags),
            "fields": dict(record.fields),
            "interval_ms": record.interval_ms,
        },
        separators=(",", ":"),
        default=str,
    )
    return (line + "\n").encode()


def append_line(path: str, line: bytes, max_size: int | None = None) -> None:
    """Append complete lines (one write, fsync'ed). A torn last line left by a crash or a failed
    write is first set aside to ``<path>.torn-<time>`` with an ERROR log, so the new line
    never glues onto it. With ``max_size``, a file that would grow past it is first rotated
    to ``<path>.1`` (replacing the previous one; ERROR log): at most twice ``max_size``."""
    if max_size is not None:
        with contextlib.suppress(FileNotFoundError):
            size = os.stat(path).st_size
            if size and size + len(line) > max_size:
                os.replace(path, path + ".1")
                event(
                    "ERROR",
                    "dead_letter_rotated",
                    "the file reached its size limit; rotated it (the previous rotated copy "
                    "is replaced)",
                    file=path,
                    moved_to=path + ".1",
                    size_bytes=size,
                    limit_bytes=max_size,
                )
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            keep = rfind_newline(fd, size) + 1
            aside = set_aside_tail(fd, path, keep, size, time.time())
            event(
                "ERROR",
                "dead_letter_torn_tail",
                "the file ends in an incomplete line (a crash while writing it); moved it aside",
                file=path,
                kept_bytes=keep,
                damaged_bytes=size - keep,
                moved_to=aside,
            )
        write_all(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_records(path: str) -> Iterator[tuple[int, Record | None]]:
    """``(line number, record)`` of a dead-letter/held file; None for a line that does not
    parse (reported by the caller). A torn last line (no newline) is skipped."""
    with open(path, "rb") as handle:
        yield from parse_lines(handle)


def parse_lines(lines: Iterable[bytes]) -> Iterator[tuple[int, Record | None]]:
    """:func:`read_records` of lines already read (split at ``\\n`` only, as a file iterates)."""
    for number, raw in enumerate(lines, start=1):
        if not raw.endswith(b"\n"):
            return
        try:
            item = json.loads(raw)
            record = Record(
                str(item["measurement"]),
                datetime.fromisoformat(item["ts"]),
                str(item["host"]),
                {str(k): str(v) for k, v in item.get("tags", {}).items()},
                {str(k): v for k, v in item.get("fields", {}).items()},
                int(item.get("interval_ms") or 0),  # lines from before it: unknown
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            yield number, None
            continue
        yield number, record
