"""Durable-file helpers shared by every writer: fsync of a directory, writing all bytes, and
setting a damaged file tail (or damaged ranges) aside.

A kill -9 or a power cut can tear any file we write at any byte. Each reader that repairs one
at start (the CSV files, the spool's segments, the dead-letter file) keeps the intact part and
moves the damaged bytes to ``<path>.torn-<unix-ts>`` with :func:`set_aside_tail`, so nothing is
silently thrown away and the same file never grows a second damaged region. A file whose
damage has intact records after it (the spool's segments resynchronise on the next intact entry)
gets its damaged ranges copied aside with :func:`set_aside_ranges` before it is rewritten.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

_WINDOW = 64 * 1024


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def torn_path(path: str, now: float) -> str:
    """A new ``<path>.torn-<unix-ts>`` (``-2``, ``-3``… when that second is taken)."""
    base = f"{path}.torn-{int(now)}"
    candidate, seq = base, 1
    while os.path.lexists(candidate):
        seq += 1
        candidate = f"{base}-{seq}"
    return candidate


def set_aside_tail(fd: int, path: str, keep: int, size: int, now: float) -> str:
    """Copy bytes ``[keep, size)`` of ``fd`` (the file ``path``, open read-write) to a new
    :func:`torn_path` file, fsync it, then cut ``fd`` back to ``keep`` bytes and fsync it.
    Returns the set-aside file's path."""
    target = torn_path(path, now)
    out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        pos = keep
        while pos < size:
            chunk = os.pread(fd, min(_WINDOW, size - pos), pos)
            if not chunk:
                break
            write_all(out, chunk)
            pos += len(chunk)
        os.fsync(out)
    finally:
        os.close(out)
    os.ftruncate(fd, keep)
    os.fsync(fd)
    return target


def write_all(fd: int, data: bytes) -> None:
    """``write(2)`` until every byte is written (a short write is retried, errors raise)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def set_aside_ranges(path: str, data: bytes, ranges: Sequence[tuple[int, int]], now: float) -> str:
    """Copy the byte ranges ``ranges`` of ``data`` (the content of ``path``), one after the other,
    to a new :func:`torn_path` file and fsync it. Returns the set-aside file's path."""
    target = torn_path(path, now)
    out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        for start, end in ranges:
            write_all(out, data[start:end])
        os.fsync(out)
    finally:
        os.close(out)
    return target
