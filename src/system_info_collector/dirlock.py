"""One directory, one writer: an exclusive ``flock`` on a lock file in each data directory.

Two collectors writing one CSV directory or one spool directory would interleave rows and
unlink each other's segments. ``run`` therefore takes ``flock(LOCK_EX | LOCK_NB)`` on
``<dir>/.system-info-collector.lock`` for the CSV directory and for the spool directory before
it opens either, and holds it until it exits (the kernel drops it when the process dies, even by
kill -9, so a stale lock file is harmless). The file names its holder (pid, host name, start
time) for the error message of the second process, which exits with :data:`EXIT_LOCKED`, or
waits up to ``SIC_LOCK_TIMEOUT`` (serving ``/readyz`` 503 meanwhile).

On NFS, Linux turns ``flock`` into an NFS byte-range lock (NLM for v3, part of the protocol for
v4): it excludes writers on other clients when the server grants locks, but with the ``nolock``
mount option it is local to each client, and a client cut off longer than its v4 lease can lose
it. Give each host its own directory there.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

LOCK_NAME = ".system-info-collector.lock"
EXIT_LOCKED = 3  # another collector holds one of our directories


class DirectoryLocked(Exception):
    """The lock of ``directory`` is held by another process (``holder`` describes it)."""

    def __init__(self, directory: str, holder: str) -> None:
        super().__init__(f"{directory} is in use by another collector ({holder})")
        self.directory = directory
        self.holder = holder


@dataclass(slots=True)
class DirLock:
    directory: str
    what: str  # the variable naming the directory, for messages
    dir_mode: int = 0o700  # if the directory must be created (as its writer would create it)
    file_mode: int = 0o600
    fd: int | None = None
    holder: str = ""  # who holds it, while another process does

    @property
    def path(self) -> str:
        return os.path.join(self.directory, LOCK_NAME)

    def try_acquire(self) -> bool:
        """Take the lock without waiting; False (and :attr:`holder` set) if it is held."""
        if self.fd is not None:
            return True
        os.makedirs(self.directory, mode=self.dir_mode, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, self.file_mode)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            self.holder = _describe_holder(fd)
            os.close(fd)
            return False
        try:
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            data = (json.dumps(info) + "\n").encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        except OSError:
            pass  # the lock is what counts; the note is only for error messages
        self.fd, self.holder = fd, ""
        return True

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = None

    def state(self) -> dict[str, object]:
        return {
            "directory": self.directory,
            "variable": self.what,
            "state": "held" if self.fd is not None else "waiting",
            **({"held_by": self.holder} if self.fd is None and self.holder else {}),
        }


def _describe_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']} since {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that left no note"


@dataclass(slots=True)
class DirLocks:
    """The locks of all directories a ``run`` writes, taken together (or not at all)."""

    locks: Sequence[DirLock] = field(default_factory=list)

    def acquire(
        self,
        timeout: float,
        *,
        stop: Callable[[float], bool],
        on_wait: Callable[[DirLock], None] | None = None,
        poll: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> bool:
        """Take every lock, waiting up to ``timeout`` seconds; ``stop(seconds)`` sleeps and
        returns True when the process is asked to stop (then False is returned).
        Raises :class:`DirectoryLocked` when the time is up; OSError if a lock file cannot be
        created."""
        deadline = clock() + timeout
        announced: set[str] = set()
        while True:
            waiting = [lock for lock in self.locks if not lock.try_acquire()]
            if not waiting:
                return True
            first = waiting[0]
            if clock() >= deadline:
                self.release()
                raise DirectoryLocked(first.directory, first.holder)
            if on_wait is not None and first.directory not in announced:
                announced.add(first.directory)
                on_wait(first)
            if stop(min(poll, max(0.0, deadline - clock()))):
                self.release()
                return False

    def release(self) -> None:
        for lock in self.locks:
            lock.release()

    @property
    def waiting(self) -> list[DirLock]:
        return [lock for lock in self.locks if lock.fd is None]

    def states(self) -> list[dict[str, object]]:
        return [lock.state() for lock in self.locks]
