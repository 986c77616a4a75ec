"""Rotated CSV files: their names, gzip compression and retention, off the sampling path.

A rotated file is named ``<measurement>.<first>-<last>.csv`` (UTC, ``%Y%m%dT%H%M%SZ`` of its
first and last row; ``_001``, ``_002``… is appended before ``.csv`` in the rare case two files
would get the same name), so names sort by time. :class:`Maintainer` runs in one background
thread: it compresses each rotated file to ``.csv.gz.tmp``, fsyncs, renames it to ``.csv.gz``
and only then removes the ``.csv``; on every pass it first finishes or redoes whatever a crash
left behind (a stale ``.gz.tmp``, a ``.csv`` whose ``.gz`` already exists, an uncompressed
rotated file), then applies retention by age and by total size (oldest first, never the active
file).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from system_info_collector.durable import fsync_dir
from system_info_collector.logging import event

STAMP = "%Y%m%dT%H%M%SZ"
CHUNK = 1 << 20
MAINTENANCE_PERIOD = 60.0  # seconds between passes when no rotation wakes the thread

_ROTATED = re.compile(
    r"^(?P<m>[a-z0-9_]+)\.(?P<first>\d{8}T\d{6}Z)-(?P<last>\d{8}T\d{6}Z)(?:_(?P<seq>\d+))?"
    r"\.csv(?P<gz>\.gz)?(?P<tmp>\.tmp)?$"
)
_TORN = re.compile(r"^(?P<m>[a-z0-9_]+)\.csv\.torn-(?P<ts>\d+)(?:-(?P<seq>\d+))?$")


@dataclass(frozen=True, slots=True)
class Rotated:
    """A rotated (or set-aside torn) file found in the directory."""

    name: str
    measurement: str
    first: float  # unix seconds of the first row (torn files: when they were set aside)
    last: float
    compressed: bool
    tmp: bool
    torn: bool = False


def stamp(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime(STAMP)


def _epoch(text: str) -> float:
    return datetime.strptime(text, STAMP).replace(tzinfo=UTC).timestamp()


def parse_name(name: str) -> Rotated | None:
    """The rotated or torn file ``name`` stands for, or None if it is not one of ours."""
    m = _ROTATED.match(name)
    if m:
        try:
            first, last = _epoch(m["first"]), _epoch(m["last"])
        except ValueError:
            return None
        return Rotated(name, m["m"], first, last, bool(m["gz"]), bool(m["tmp"]))
    t = _TORN.match(name)
    if t:
        ts = float(t["ts"])
        return Rotated(name, t["m"], ts, ts, False, False, torn=True)
    return None


def rotated_path(directory: str, measurement: str, first: datetime, last: datetime) -> str:
    """A free ``<measurement>.<first>-<last>.csv`` path in ``directory`` (no ``.gz`` twin)."""
    base = os.path.join(directory, f"{measurement}.{stamp(first)}-{stamp(last)}")
    candidate, seq = base, 0
    while os.path.lexists(candidate + ".csv") or os.path.lexists(candidate + ".csv.gz"):
        seq += 1
        candidate = f"{base}_{seq:03d}"
    return candidate + ".csv"


class _Stopped(Exception):
    pass


def compress(path: str, *, mode: int, should_stop: Callable[[], bool] = lambda: False) -> str:
    """gzip ``path`` to ``path.gz`` via a fsync'ed ``.gz.tmp`` and a rename; remove ``path``.

    Returns the ``.gz`` path. On any error (or ``should_stop()``) the ``.tmp`` is removed and
    ``path`` is left as it was, so the next pass can redo the work.
    """
    gz_path = path + ".gz"
    tmp = gz_path + ".tmp"
    src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        mtime = int(os.fstat(src).st_mtime)
        dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            os.fchmod(dst, mode)
            with (
                open(dst, "wb", closefd=False) as raw,
                gzip.GzipFile(os.path.basename(path), "wb", 6, raw, mtime) as out,
            ):
                while chunk := os.read(src, CHUNK):
                    if should_stop():
                        raise _Stopped
                    out.write(chunk)
            os.fsync(dst)  # always: the .csv is deleted once the .gz exists
        finally:
            os.close(dst)
        os.rename(tmp, gz_path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    finally:
        os.close(src)
    fsync_dir(os.path.dirname(path) or ".")
    os.unlink(path)
    return gz_path


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _files(directory: str, measurements: Iterable[str]) -> tuple[list[Rotated], int]:
    """Our rotated/torn files and the total size of every CSV file of ours (active included)."""
    wanted = set(measurements)
    actives = {f"{m}.csv" for m in wanted}
    found: list[Rotated] = []
    total = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            info = parse_name(entry.name)
            if entry.name not in actives and (info is None or info.measurement not in wanted):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                total += entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
            if info is not None:
                found.append(info)
    found.sort(key=lambda r: (r.first, r.last, r.name))
    return found, total


def apply_retention(
    directory: str,
    measurements: Iterable[str],
    *,
    now: float,
    retention: float,
    max_total_size: int | None,
) -> list[str]:
    """Delete rotated and torn files older than ``retention`` (by their last row), then the
    oldest until all our files fit in ``max_total_size``. Returns the names deleted."""
    files, total = _files(directory, measurements)
    deleted: list[str] = []

    def delete(info: Rotated, reason: str) -> int:
        path = os.path.join(directory, info.name)
        try:
            size = os.stat(path).st_size
            os.unlink(path)
        except FileNotFoundError:
            return 0
        deleted.append(info.name)
        event(
            "INFO",
            "csv_retention_deleted",
            "deleted an old CSV file",
            file=path,
            reason=reason,
            size_bytes=size,
        )
        return size

    keep: list[Rotated] = []
    for info in files:
        if info.tmp:
            continue
        if now - info.last > retention:
            total -= delete(info, "age")
        else:
            keep.append(info)
    if max_total_size is not None:
        for info in keep:
            if total <= max_total_size:
                break
            total -= delete(info, "max_total_size")
    return deleted


class Maintainer:
    """The background thread that compresses rotated files and applies retention."""

    def __init__(
        self,
        directory: str,
        measurements: Iterable[str],
        *,
        compress: bool,
        retention: float,
        max_total_size: int | None,
        file_mode: int,
        clock: Callable[[], float] = time.time,
        period: float = MAINTENANCE_PERIOD,
    ) -> None:
        self.directory = directory
        self.measurements = tuple(measurements)
        self._compress = compress
        self._retention = retention
        self._max_total = max_total_size
        self._mode = file_mode
        self._clock = clock
        self._period = period
        self._cond = threading.Condition()
        self._requested = 0
        self._completed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="csv-maintenance", daemon=True)
            self._thread.start()
            self.notify()

    def notify(self) -> int:
        """Ask for a pass (after a rotation); returns the request number."""
        with self._cond:
            self._requested += 1
            self._cond.notify_all()
            return self._requested

    def drain(self, timeout: float) -> bool:
        """Wait until a pass that started after this call has finished."""
        target = self.notify()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._completed < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None:
                    return False
                self._cond.wait(remaining)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                if self._completed >= self._requested:
                    self._cond.wait(self._period)
                if self._stop.is_set():
                    return
                target = self._requested
            try:
                self.run_once()
            except Exception as exc:  # the thread must survive; the next pass retries
                event(
                    "ERROR",
                    "csv_maintenance_failed",
                    "CSV compression/retention pass failed",
                    directory=self.directory,
                    error=f"{type(exc).__name__}: {exc}",
                )
            with self._cond:
                self._completed = max(self._completed, target)
                self._cond.notify_all()

    def run_once(self) -> None:
        """One pass: repair leftovers, compress pending rotated files, apply retention."""
        try:
            files, _ = _files(self.directory, self.measurements)
        except (FileNotFoundError, NotADirectoryError):
            return  # the sink reports the missing directory when it writes
        names = {f.name for f in files}
        for info in files:
            if self._stop.is_set():
                return
            path = os.path.join(self.directory, info.name)
            if info.tmp:  # a pass that did not finish (crash, stop, error): start over
                _unlink_quietly(path)
            elif not info.torn and not info.compressed:
                if info.name + ".gz" in names:  # crashed after the rename, before the unlink
                    _unlink_quietly(path)
                elif self._compress:
                    self._compress_one(path)
        apply_retention(
            self.directory,
            self.measurements,
            now=self._clock(),
            retention=self._retention,
            max_total_size=self._max_total,
        )

    def _compress_one(self, path: str) -> None:
        try:
            compress(path, mode=self._mode, should_stop=self._stop.is_set)
        except _Stopped:
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            event(
                "WARNING",
                "csv_compress_failed",
                "could not compress a rotated CSV file; will retry",
                file=path,
                error=f"{exc.strerror or exc}",
            )
