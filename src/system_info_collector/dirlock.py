"""One directory, one writer: an exclusive ``flock`` on a lock file in each data directory.

Two collectors writing one CSV directory or one spool directory would interleave rows and
unlink each other's segments. ``run`` therefore takes ``flock(LOCK_EX | LOCK_NB)`` on
``<dir>/.system-info-collector.lock`` for the CSV directory and for the spool directory before
it opens either, and holds it until it exits (the kernel drops it when the process dies, even by
kill -9, so a stale lock file is harmless). The file names its holder (pid, host name, start
time) for the error message of the second process, which exits with :data:`EXIT_LOCKED`, or
waits up to ``SIC_LOCK_TIMEOUT`` (serving ``/readyz`` 503 meanwhile). A lock file that cannot
be created (a read-only or foreign directory) is no reason to stop: the lock keeps the error,
and the sinks writing there take it later, before they write (``cli.gate_unavailable``).

The holder writes its note only once it holds the lock, so a second process can find the lock
taken and the note not yet written (empty, or cut short): it reads the note again, retrying the
lock too, for up to :data:`NOTE_WAIT` seconds before it names the holder "a process that left
no note" (a collector of an older release, or one whose note could not be written).

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

from system_info_collector.durable import pread_all, pwrite_all

LOCK_NAME = ".system-info-collector.lock"
EXIT_LOCKED = 3  # another collector holds one of our directories
NOTE_WAIT = 2.0  # seconds to wait for the holder's note after it took the lock
NOTE_POLL = 0.01
NO_NOTE = "a process that left no note"


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
    error: str = ""  # why the lock file cannot be created (read-only, permissions), until it can
    sinks: tuple[str, ...] = ()  # the sinks writing this directory
    note_wait: float = NOTE_WAIT
    pause: Callable[[float], None] = time.sleep  # between two reads of an unwritten note
    clock: Callable[[], float] = time.monotonic

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
            holder = self._holder(fd)
        except BaseException:
            os.close(fd)
            raise
        if holder is not None:
            os.close(fd)
            self.holder = holder
            return False
        try:
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            os.ftruncate(fd, 0)  # a reader finds no note or ours, never a mix with the last one
            pwrite_all(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError:
            pass  # the lock is what counts; the note is only for error messages
        self.fd, self.holder = fd, ""
        return True

    def _holder(self, fd: int) -> str | None:
        """None once ``fd`` holds the lock; else who holds it, from its note. A holder that
        has the lock but has not written its note yet gets ``note_wait`` seconds to do so."""
        deadline = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return None
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
            holder = _describe_holder(fd)
            if holder is not None:
                return holder
            now = self.clock()
            deadline = now + self.note_wait if deadline is None else deadline
            if now >= deadline:
                return NO_NOTE
            self.pause(NOTE_POLL)

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = None

    def state(self) -> dict[str, object]:
        return {
            "directory": self.directory,
            "variable": self.what,
            "state": "held"
            if self.fd is not None
            else ("unavailable" if self.error else "waiting"),
            **({"held_by": self.holder} if self.fd is None and self.holder else {}),
            **({"error": self.error} if self.fd is None and self.error else {}),
        }

    def reason(self) -> str:
        """Why it is not held (for /readyz)."""
        if self.error:
            return f"{self.directory} unavailable: {self.error}"
        return f"{self.directory} in use by {self.holder}"

    def try_or_note(self) -> bool:
        """:meth:`try_acquire`, with an OSError kept in :attr:`error` instead of raised."""
        try:
            taken = self.try_acquire()
        except OSError as exc:
            self.error = f"{exc.strerror or exc} ({exc.filename or self.directory})"
            return False
        self.error = ""
        return taken


def _describe_holder(fd: int) -> str | None:
    """The holder named by its note (one JSON line), or None while there is no complete one."""
    try:
        data = pread_all(fd, 4096, 0)
    except OSError:
        return NO_NOTE
    if not data.endswith(b"\n"):
        return None
    try:
        info = json.loads(data)
        return f"pid {info['pid']} on {info['host']} since {info['started']}"
    except (ValueError, KeyError, TypeError):
        return NO_NOTE


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
        """Take every lock that can be taken, waiting up to ``timeout`` seconds for those
        another process holds; ``stop(seconds)`` sleeps and returns True when the process is
        asked to stop (then False is returned). A lock whose file cannot be created (the
        directory is read-only, not ours) is left with its :attr:`DirLock.error`
        (:attr:`unavailable`): its sinks take it later, before they write there.
        Raises :class:`DirectoryLocked` when the time is up."""
        deadline = clock() + timeout
        announced: set[str] = set()
        while True:
            waiting = [
                lock
                for lock in self.locks
                if not lock.try_or_note() and not lock.error  # held by another process
            ]
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

    def try_each(self) -> None:
        """One attempt at every lock, without waiting: the holder of a taken one (or why one
        cannot be taken) is known before ``/readyz`` is first served."""
        for lock in self.locks:
            lock.try_or_note()

    def release(self) -> None:
        for lock in self.locks:
            lock.release()

    @property
    def waiting(self) -> list[DirLock]:
        return [lock for lock in self.locks if lock.fd is None]

    @property
    def unavailable(self) -> list[DirLock]:
        return [lock for lock in self.locks if lock.fd is None and lock.error]

    def states(self) -> list[dict[str, object]]:
        return [lock.state() for lock in self.locks]
