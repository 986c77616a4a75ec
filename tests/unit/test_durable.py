"""The durable-file helpers every writer and every repairing reader uses (durable.py): writes that
finish despite short writes and signals and surface a full disk, and line boundaries found
the same way wherever a file is torn."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from system_info_collector import durable
from system_info_collector.durable import (
    find_newline,
    line_blocks,
    pread_all,
    pread_lines,
    pwrite_all,
    rfind_newline,
    write_all,
)

# lines of every length around the scan window (4 bytes below), an empty line, a CRLF and a
# stray CR inside a line (only \n ends a line), a line longer than two windows
CONTENT = b"ts,a\n1,2\n\n333,4\r\nx\ry\n" + b"7" * 11 + b"\n" + b"z\n"
WINDOW = 4


def reference_lines(data: bytes) -> list[bytes]:
    *complete, tail = data.split(b"\n")
    return [line + b"\n" for line in complete] + ([tail] if tail else [])


@pytest.fixture
def torn_files(tmp_path: Path) -> Iterator[list[tuple[bytes, int]]]:
    """The file cut at every byte: (content, read-only fd) for each cut."""
    files = []
    for cut in range(len(CONTENT) + 1):
        path = tmp_path / f"cut-{cut}"
        path.write_bytes(CONTENT[:cut])
        files.append((CONTENT[:cut], os.open(path, os.O_RDONLY)))
    yield files
    for _, fd in files:
        os.close(fd)


def test_the_last_and_first_newline_are_found_wherever_the_file_is_torn(
    torn_files: list[tuple[bytes, int]],
) -> None:
    for data, fd in torn_files:
        size = len(data)
        assert rfind_newline(fd, size, window=WINDOW) == data.rfind(b"\n"), size
        for floor in range(size + 1):
            want = data.rfind(b"\n", floor, size)
            assert rfind_newline(fd, size, floor, window=WINDOW) == want, (size, floor)
            assert find_newline(fd, floor, size, window=WINDOW) == data.find(b"\n", floor), size
        # a range that runs past the end of the file ends at the end of the file
        assert find_newline(fd, 0, size + 100, window=WINDOW) == data.find(b"\n")


def test_lines_and_blocks_of_a_file_torn_at_any_byte(
    torn_files: list[tuple[bytes, int]],
) -> None:
    for data, fd in torn_files:
        assert list(pread_lines(fd, len(data), window=WINDOW)) == reference_lines(data)
        pos = 0

        def read(n: int, fd: int = fd) -> bytes:
            nonlocal pos
            chunk = os.pread(fd, n, pos)
            pos += len(chunk)
            return chunk

        blocks = list(line_blocks(read, WINDOW))
        assert b"".join(blocks) == data
        # whole lines in every block but the last, which is the torn tail if there is one
        assert all(b.endswith(b"\n") for b in blocks[:-1]) and all(blocks)


def test_pread_all_reads_the_whole_range_or_up_to_the_end(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(CONTENT)
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset in range(len(CONTENT) + 2):
            for size in (0, 1, 5, len(CONTENT) + 3):
                assert pread_all(fd, size, offset) == CONTENT[offset : offset + size]
    finally:
        os.close(fd)


def test_write_all_finishes_through_short_writes_and_interrupting_signals() -> None:
    """A blocking pipe written faster than it is read while SIGALRM fires every 0.2 ms: the
    kernel returns short writes (a signal after some bytes) and EINTR (a signal before any);
    every byte still arrives once, in order."""
    data = os.urandom(1 << 20) * 4
    r, w = os.pipe()
    received: list[bytes] = []
    alarms = 0

    def on_alarm(signum: int, frame: object) -> None:
        nonlocal alarms
        alarms += 1

    def reader() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # the writer gets them
        while chunk := os.read(r, 4096):
            received.append(chunk)

    returned: list[tuple[int, int]] = []
    real_write = os.write

    def recording_write(fd: int, buf: memoryview) -> int:  # the real write(2), observed
        n = real_write(fd, buf)
        returned.append((len(buf), n))
        return n

    previous = signal.signal(signal.SIGALRM, on_alarm)
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
        durable.os.write = recording_write  # type: ignore[assignment]
        try:
            write_all(w, data)
        finally:
            durable.os.write = real_write
            signal.setitimer(signal.ITIMER_REAL, 0, 0)
    finally:
        signal.signal(signal.SIGALRM, previous)
        os.close(w)
        thread.join(30)
        os.close(r)
    assert b"".join(received) == data
    assert alarms > 0
    assert any(n < asked for asked, n in returned), (
        "no short write happened: the test proves nothing"
    )


def test_a_full_disk_surfaces_as_enospc() -> None:
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(OSError) as info:
            write_all(fd, b"row\n")
        assert info.value.errno == errno.ENOSPC
        with pytest.raises(OSError) as info:
            pwrite_all(fd, b"row\n", 0)
        assert info.value.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_pwrite_all_at_an_offset_and_a_limit_reached_midway(tmp_path: Path) -> None:
    """A file size limit (RLIMIT_FSIZE, in a child process) cuts a write short, then refuses
    the rest: the bytes before the limit are written and the error surfaces (EFBIG), never a
    silent short write."""
    path = tmp_path / "f"
    path.write_bytes(b"-" * 10)
    fd = os.open(path, os.O_RDWR)
    try:
        assert pwrite_all(fd, b"abc", 4) == 7
        assert pwrite_all(fd, b"", 4) == 4
    finally:
        os.close(fd)
    assert path.read_bytes() == b"----abc---"
    child = f"""
import errno, os, resource, signal
from system_info_collector.durable import pwrite_all, write_all
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (300, 300))
for name, write in (("p", lambda fd: pwrite_all(fd, b"x" * 1000, 0)),
                    ("w", lambda fd: write_all(fd, b"x" * 1000))):
    fd = os.open({str(tmp_path)!r} + "/" + name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        write(fd)
    except OSError as exc:
        print(name, errno.errorcode[exc.errno], os.fstat(fd).st_size)
"""
    out = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.split("\n") == ["p EFBIG 300", "w EFBIG 300", ""], out.stderr
    assert (tmp_path / "p").read_bytes() == b"x" * 300
