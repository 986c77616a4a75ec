"""The directory lock's note (dirlock.py) against a real second process holding a real flock:
a waiter that finds the lock taken before its holder wrote the note waits for the note instead
of naming nobody."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from system_info_collector.dirlock import LOCK_NAME, NO_NOTE, DirLock, DirLocks

# Takes the lock the way a collector does -- flock, then an emptied file -- and writes its note
# only when told to: the state a waiter can meet between a holder's flock and its note.
HOLDER = """
import fcntl, json, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.ftruncate(fd, 0)
print("locked", flush=True)
for command in sys.stdin:
    if command == "half\\n":  # a note cut short, as a reader can see it mid-write
        os.pwrite(fd, b'{"pid": ', 0)
    elif command == "note\\n":
        note = {"pid": os.getpid(), "host": "holder-host", "started": "2026-01-01T00:00:00+00:00"}
        os.pwrite(fd, (json.dumps(note) + "\\n").encode(), 0)
    elif command == "exit\\n":
        break
    print("done", flush=True)
"""


class Holder:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(directory / LOCK_NAME)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "locked\n"

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        if command != "exit":
            assert self.proc.stdout.readline() == "done\n"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.send("exit")
            self.proc.wait(10)


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[Holder]:
    h = Holder(tmp_path / "data")
    with h.proc:  # closes the pipes, waits
        try:
            yield h
        finally:
            h.close()


def test_a_waiter_that_finds_the_note_not_yet_written_waits_for_it(
    tmp_path: Path, holder: Holder
) -> None:
    steps = iter(["half", "note"])  # the holder writes its note while the waiter waits

    def pause(seconds: float) -> None:
        holder.send(next(steps))

    lock = DirLock(str(tmp_path / "data"), "SIC_CSV_DIR", pause=pause)
    assert not lock.try_acquire()
    assert lock.holder == f"pid {holder.proc.pid} on holder-host since 2026-01-01T00:00:00+00:00"
    assert lock.fd is None and lock.state()["state"] == "waiting"


def test_a_holder_that_never_writes_a_note_is_named_after_a_bounded_wait(
    tmp_path: Path, holder: Holder
) -> None:
    waits: list[float] = []
    lock = DirLock(str(tmp_path / "data"), "SIC_CSV_DIR", note_wait=0.3, pause=waits.append)
    started = time.monotonic()
    assert not lock.try_acquire()
    assert lock.holder == NO_NOTE
    assert waits and time.monotonic() - started < 10  # it retried, then gave up


def test_the_lock_is_taken_when_the_holder_exits_during_the_wait(
    tmp_path: Path, holder: Holder
) -> None:
    lock = DirLock(str(tmp_path / "data"), "SIC_CSV_DIR", pause=lambda s: holder.close())
    try:
        assert lock.try_acquire()
        note = json.loads((tmp_path / "data" / LOCK_NAME).read_text())
        assert note["pid"] != holder.proc.pid and note["host"] == socket.gethostname()
    finally:
        lock.release()


def test_a_first_attempt_names_the_holder_and_takes_the_free_locks(
    tmp_path: Path, holder: Holder
) -> None:
    holder.send("note")
    free = DirLock(str(tmp_path / "spool"), "SIC_DB_SPOOL_DIR")
    locks = DirLocks([DirLock(str(tmp_path / "data"), "SIC_CSV_DIR"), free])
    try:
        locks.try_each()
        (waiting,) = locks.waiting
        assert waiting.holder.startswith(f"pid {holder.proc.pid} on holder-host ")
        assert free.fd is not None
    finally:
        locks.release()
