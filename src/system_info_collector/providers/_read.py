"""Reading host files cheaply and turning OS errors into ProviderError.

Providers read the same few procfs files every tick, so :class:`ProcFile` keeps each one open and
re-reads it from the start (``lseek`` to 0, then ``read`` to the end: procfs regenerates the
content when a read starts at 0), which saves an ``open``/``close`` and a text decoder per file
per tick. Sequential reads, not ``pread`` at growing offsets: a seq_file answers a read at any
other offset than where the previous one stopped by generating the file again from the start,
so a ``pread`` loop generates ``/proc/stat`` of a big host (over 64 KiB) once per chunk plus once
more for the final empty read. On any error the file is reopened once before the error is
reported.
"""

from __future__ import annotations

import contextlib
import os

from system_info_collector.errors import ProviderError

_CHUNK = 65536


def read_text(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read()
    except OSError as exc:
        raise ProviderError(f"cannot read {path}: {exc.strerror or exc}") from exc


class ProcFile:
    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def _read_once(self) -> str:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        os.lseek(self._fd, 0, os.SEEK_SET)
        chunks = []
        while True:
            chunk = os.read(self._fd, _CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode("ascii", "replace")

    def read(self) -> str:
        try:
            return self._read_once()
        except OSError:
            self.close()
        try:
            return self._read_once()
        except OSError as exc:
            self.close()
            raise ProviderError(f"cannot read {self.path}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
