"""Durable-file helpers shared by every writer and every reader that repairs a file.

Writing: :func:`write_all` / :func:`pwrite_all` loop until every byte is written (a short write
-- a signal, a pipe, a nearly full disk -- is continued; an error such as ENOSPC raises with the
bytes before it written), :func:`fsync_dir` makes a new name durable.

Reading: :func:`pread_all` reads a byte range in full; :func:`rfind_newline` and
:func:`find_newline` find a line boundary in a file without reading all of it;
:func:`line_blocks` and :func:`pread_lines` cut a stream into whole lines and a torn tail.

A kill -9 or a power cut can tear any file we write at any byte. Each reader that repairs one
at start (the CSV files, the spool's segments, the dead-letter file) keeps the intact part and
moves the damaged bytes to ``<path>.torn-<unix-ts>`` with :func:`set_aside_tail`, so nothing is
silently thrown away and the same file never grows a second damaged region. A file whose
damage has intact records after it (the spool's segments resynchronise on the next intact entry)
gets its damaged ranges copied aside with :func:`set_aside_ranges` before it is rewritten.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator, Sequence

WINDOW = 64 * 1024  # bytes read at a time when scanning a file


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """``write(2)`` until every byte is written (a short write is continued, errors raise)."""
    view = memoryview(data)
    while view:
        view = view[_progress(os.write(fd, view)) :]


def pwrite_all(fd: int, data: bytes, offset: int) -> int:
    """``pwrite(2)`` ``data`` at ``offset`` until every byte is written; returns the offset
    after it. An error raises (the bytes before it may have been written)."""
    view = memoryview(data)
    while view:
        written = _progress(os.pwrite(fd, view, offset))
        view, offset = view[written:], offset + written
    return offset


def _progress(written: int) -> int:
    if written <= 0:  # write(2) of n > 0 bytes returning 0: no progress, never loop on it
        raise OSError(errno.EIO, "write made no progress")
    return written


def pread_all(fd: int, size: int, offset: int) -> bytes:
    """``pread(2)`` until ``size`` bytes of ``fd`` from ``offset`` are read (fewer only at the
    end of the file)."""
    chunks: list[bytes] = []
    while size > 0 and (chunk := os.pread(fd, size, offset)):
        chunks.append(chunk)
        offset += len(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def rfind_newline(fd: int, end: int, floor: int = 0, *, window: int = WINDOW) -> int:
    """Offset of the last ``\\n`` in ``[floor, end)`` of ``fd``, or -1 (reads backwards,
    ``window`` bytes at a time: a torn tail costs what it is long, not the file's size)."""
    pos = end
    while pos > floor:
        start = max(floor, pos - window)
        i = pread_all(fd, pos - start, start).rfind(b"\n")
        if i >= 0:
            return start + i
        pos = start
    return -1


def find_newline(fd: int, start: int, end: int, *, window: int = WINDOW) -> int:
    """Offset of the first ``\\n`` in ``[start, end)`` of ``fd``, or -1."""
    pos = start
    while pos < end:
        chunk = os.pread(fd, min(window, end - pos), pos)
        if not chunk:
            return -1
        i = chunk.find(b"\n")
        if i >= 0:
            return pos + i
        pos += len(chunk)
    return -1


def line_blocks(read: Callable[[int], bytes], block: int = WINDOW) -> Iterator[bytes]:
    """Whole lines, in blocks of about ``block`` bytes, from ``read(block)`` calls until one
    returns ``b""``: every block but the last ends in ``\\n``; a last block without one is the
    torn tail (bytes after the last newline)."""
    rest = b""
    while chunk := read(block):
        data = rest + chunk if rest else chunk
        cut = data.rfind(b"\n") + 1
        rest = data[cut:]
        if cut:
            yield data[:cut]
    if rest:
        yield rest


def pread_lines(fd: int, size: int, *, window: int = WINDOW) -> Iterator[bytes]:
    """Every line of the first ``size`` bytes of ``fd``, each with its ``\\n``; the last one
    without it if the file ends torn. Only ``\\n`` ends a line."""
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        chunk = os.pread(fd, min(n, size - pos), pos) if pos < size else b""
        pos += len(chunk)
        return chunk

    for data in line_blocks(read, window):
        *complete, tail = data.split(b"\n")
        for line in complete:
            yield line + b"\n"
        if tail:
            yield tail


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
            chunk = os.pread(fd, min(WINDOW, size - pos), pos)
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
