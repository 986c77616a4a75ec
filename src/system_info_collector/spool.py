"""On-disk write-ahead spool, and the worker that drains it into a sink.

A :class:`Spool` is a directory of append-only segment files (``spool-<seq>.seg``). Each entry
is one batch of records: a 16-byte header (magic, payload length, row count, CRC32 of all three
and the payload) followed by the batch as compact JSON. Entries are committed oldest-first; the
committed position is kept in the file ``committed`` (written atomically) and segments that are
fully committed are deleted. At start every segment is checked entry by entry: intact entries
are kept, a damaged tail (a kill -9 or power cut can tear a file at any byte) is moved aside to
``<segment>.torn-<time>`` with an ERROR log ``spool_torn_tail``, and the collector starts anyway.
Only when the spool would exceed its size limit are the oldest segments dropped, with an ERROR
log ``spool_overflow`` and the counter ``sic_spool_dropped_records_total``.

A :class:`SpoolWorker` is the :class:`~system_info_collector.worker.SinkWorker` of a sink that
declares a spool (the PostgreSQL sink). ``submit`` appends the batch to the spool in the
sampling thread -- one buffered ``write(2)``, no fsync, no network -- so a sample is in the
kernel before ``submit`` returns and a kill -9 of the collector cannot lose it. The worker
thread reads batches from the spool (from memory while they are recent) and writes them with
the usual retries, backoff and degraded probing; the spool, not memory, holds what the
destination has not committed. Group commit: what the destination commits is durable there, so
the worker fsyncs the spool after a failed attempt and before each attempt while failing (and
whenever a segment was created), not after every successful one. If the spool itself cannot
be written (disk full, read-only), batches wait in the bounded in-memory backlog of the base
worker and go to the spool, in order, as soon as it works again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from system_info_collector.config import RetrySettings
from system_info_collector.durable import fsync_dir, set_aside_tail, torn_path
from system_info_collector.errors import PermanentSinkError, TransientSinkError
from system_info_collector.logging import event
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.sinks import Sink
from system_info_collector.worker import SinkWorker

MAGIC = b"SICs"
HEADER = struct.Struct("<4sIII")  # magic, payload length, rows, crc32(length, rows, payload)
_LENGTH_ROWS = struct.Struct("<II")
MAX_ENTRY_BYTES = 256 * 1024 * 1024
SEGMENT_RE = re.compile(r"^spool-(\d{16})\.seg$")
ACK_FILE = "committed"
# The marker: two 32-byte slots written alternately in place (one pwrite per commit, no rename):
# magic, generation, segment, offset, crc32 of the rest. The valid slot with the highest
# generation wins, so a torn write falls back to the previous position (replaying rows that
# were already committed is harmless: the sink's writes are idempotent).
ACK_SLOT = struct.Struct("<4sQQQI")
ACK_MAGIC = b"SICa"
CACHE_ROWS = 2000  # records of the newest appended batches kept in memory for peek()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


# -- entries ---------------------------------------------------------------------------------
def encode_batch(batch: Sequence[Record]) -> bytes:
    """The batch as compact JSON: ``[[measurement, ts_µs, host, tags, fields], ...]``."""
    return json.dumps(
        [
            [
                r.measurement,
                (r.ts - _EPOCH) // _US,
                r.host,
                r.tags if isinstance(r.tags, dict) else dict(r.tags),
                r.fields if isinstance(r.fields, dict) else dict(r.fields),
            ]
            for r in batch
        ],
        separators=(",", ":"),
    ).encode()


def decode_batch(payload: bytes) -> list[Record]:
    return [
        Record(m, _EPOCH + timedelta(microseconds=us), host, tags, fields)
        for m, us, host, tags, fields in json.loads(payload)
    ]


def frame(payload: bytes, rows: int) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(_LENGTH_ROWS.pack(len(payload), rows)))
    return HEADER.pack(MAGIC, len(payload), rows, crc) + payload


def scan(data: bytes) -> tuple[list[tuple[int, int, int]], int]:
    """Intact entries of a segment's bytes as ``(offset, end, rows)``, and where they stop."""
    entries: list[tuple[int, int, int]] = []
    off, size = 0, len(data)
    while off + HEADER.size <= size:
        magic, length, rows, crc = HEADER.unpack_from(data, off)
        end = off + HEADER.size + length
        if magic != MAGIC or length > MAX_ENTRY_BYTES or end > size:
            break
        payload = memoryview(data)[off + HEADER.size : end]
        if zlib.crc32(payload, zlib.crc32(_LENGTH_ROWS.pack(length, rows))) != crc:
            break
        entries.append((off, end, rows))
        off = end
    return entries, off


@dataclass(slots=True)
class _Segment:
    seq: int
    path: str
    size: int = 0  # bytes of intact entries
    rows: int = 0
    entries: int = 0
    acked_offset: int = 0  # entries before this offset are committed
    acked_rows: int = 0
    acked_entries: int = 0

    @property
    def pending_rows(self) -> int:
        return self.rows - self.acked_rows

    @property
    def pending_bytes(self) -> int:
        return self.size - self.acked_offset

    @property
    def pending_entries(self) -> int:
        return self.entries - self.acked_entries


@dataclass(frozen=True, slots=True)
class Entry:
    """One spooled batch, as read back by :meth:`Spool.peek`."""

    seq: int
    offset: int
    end: int
    rows: int
    records: list[Record]


class Spool:
    """Append-only segment files of CRC-checked batches; see the module docstring."""

    def __init__(
        self,
        directory: str,
        *,
        max_size: int,
        metrics: Metrics,
        segment_size: int | None = None,
    ) -> None:
        self.directory = directory
        self.max_size = max_size
        self.segment_size = segment_size or max(4096, min(16 << 20, max_size // 8))
        self._metrics = metrics
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._fd: int | None = None  # the active (last) segment, opened for appending
        self._unsynced: list[int] = []  # fds of rotated segments awaiting fsync + close
        self._dirty = False
        self._dir_dirty = False
        self._opened = False
        self._ack_fd: int | None = None
        self._ack_generation = 0
        # the newest appended batches, by (segment, offset): peek() need not read them back
        self._cache: dict[tuple[int, int], Entry] = {}
        self._cache_rows = 0
        self.cache_limit = CACHE_ROWS

    # -- start-up ----------------------------------------------------------------------
    def open(self) -> None:
        """Create the directory, recover every segment, start a new segment for appends."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        ack_seq, ack_off = self._read_ack()
        if self._ack_fd is not None:  # an earlier open() failed half-way
            os.close(self._ack_fd)
        self._ack_fd = os.open(
            os.path.join(self.directory, ACK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        found = sorted(
            (int(m.group(1)), name)
            for name in os.listdir(self.directory)
            if (m := SEGMENT_RE.match(name))
        )
        segments: list[_Segment] = []
        for seq, name in found:
            path = os.path.join(self.directory, name)
            if seq < ack_seq:  # committed; its deletion was interrupted
                _unlink(path)
                continue
            segment = self._recover(seq, path)
            if segment is None:
                continue
            if seq == ack_seq:
                self._apply_ack(segment, ack_off)
            if segment.pending_entries == 0:
                _unlink(path)
                continue
            segments.append(segment)
        with self._lock:
            self._segments = list(segments)
            next_seq = max([s for s, _ in found] + [ack_seq, 0]) + 1
            self._new_segment(next_seq)
            self._opened = True
            self._update_metrics()
        self.sync()
        if segments:
            event("INFO", "spool_recovered", "replaying spooled records oldest-first",
                  directory=self.directory, batches=self.pending_batches,
                  records=self.pending_rows, bytes=self.pending_bytes)  # fmt: skip

    def _read_ack(self) -> tuple[int, int]:
        """The committed position ``(segment, offset)``; ``(0, 0)``: replay everything."""
        path = os.path.join(self.directory, ACK_FILE)
        try:
            data = _read_file(path)
        except FileNotFoundError:
            return 0, 0
        if not data:
            return 0, 0  # created, never written: nothing was committed yet
        best: tuple[int, int, int] | None = None
        for start in range(0, 2 * ACK_SLOT.size, ACK_SLOT.size):
            chunk = data[start : start + ACK_SLOT.size]
            if len(chunk) < ACK_SLOT.size:
                continue
            magic, generation, seq, off, crc = ACK_SLOT.unpack(chunk)
            valid = magic == ACK_MAGIC and zlib.crc32(chunk[:-4]) == crc
            if valid and (best is None or generation > best[0]):
                best = (generation, seq, off)
        if best is not None:
            self._ack_generation = best[0]
            return best[1], best[2]
        aside = torn_path(path, time.time())
        os.replace(path, aside)
        event("ERROR", "spool_marker_damaged",
              "the spool's committed-position marker is damaged; moved it aside and replaying "
              "every spooled record (rows already in the database are skipped, not duplicated)",
              file=path, moved_to=aside, size_bytes=len(data))  # fmt: skip
        return 0, 0

    def _apply_ack(self, segment: _Segment, ack_off: int) -> None:
        data = _read_file(segment.path)
        entries, _ = scan(data)
        ends = {end for _, end, _ in entries}
        if ack_off not in ends:
            return  # not an entry boundary: replay the whole segment (idempotent)
        for _, end, rows in entries:
            if end > ack_off:
                break
            segment.acked_offset, segment.acked_rows = end, segment.acked_rows + rows
            segment.acked_entries += 1

    def _recover(self, seq: int, path: str) -> _Segment | None:
        data = _read_file(path)
        entries, good = scan(data)
        if good < len(data):
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            try:
                aside = set_aside_tail(fd, path, good, len(data), time.time())
            finally:
                os.close(fd)
            event("ERROR", "spool_torn_tail",
                  "spool segment ends in a damaged record; kept the intact records and moved "
                  "the damaged tail aside", segment=path,
                  intact_records=sum(r for *_, r in entries),
                  intact_bytes=good, damaged_bytes=len(data) - good, moved_to=aside)  # fmt: skip
        if not entries:
            _unlink(path)
            return None
        return _Segment(seq, path, size=good, rows=sum(r for *_, r in entries),
                        entries=len(entries))  # fmt: skip

    # -- the sampling thread -----------------------------------------------------------
    def append(self, batch: Sequence[Record]) -> None:
        """Append one batch (buffered write, no fsync). Raises OSError if it cannot."""
        data = frame(encode_batch(batch), len(batch))
        dropped_rows = 0
        dropped_files: list[str] = []
        with self._lock:
            if not self._opened:
                raise OSError("spool is not open")
            active = self._segments[-1]
            if active.size and active.size + len(data) > self.segment_size:
                self._rotate()
                active = self._segments[-1]
            while (
                self._segments
                and len(self._segments) > 1
                and (self._disk_bytes() + len(data) > self.max_size)
            ):
                oldest = self._segments.pop(0)
                dropped_rows += oldest.pending_rows
                dropped_files.append(oldest.path)
            if self._disk_bytes() + len(data) > self.max_size and active.pending_entries:
                # even the active segment must go: roll over, then drop it
                self._rotate()
                oldest = self._segments.pop(0)
                dropped_rows += oldest.pending_rows
                dropped_files.append(oldest.path)
                active = self._segments[-1]
            assert self._fd is not None
            try:
                written = os.write(self._fd, data)
            except OSError:
                self._repair_tail(active)
                raise
            if written != len(data):
                self._repair_tail(active)
                raise OSError(f"short write to the spool ({written} of {len(data)} bytes)")
            start = active.size
            active.size += len(data)
            active.rows += len(batch)
            active.entries += 1
            self._dirty = True
            self._remember(Entry(active.seq, start, active.size, len(batch), list(batch)))
            if dropped_files:
                self._forget(self._segments[0].seq, self._segments[0].acked_offset)
            self._update_metrics()
        for path in dropped_files:
            _unlink(path)
        if dropped_rows or dropped_files:
            self._metrics.spool_dropped.inc(dropped_rows)
            event("ERROR", "spool_overflow",
                  "spool reached SIC_DB_SPOOL_MAX_SIZE: dropped the oldest spooled records",
                  directory=self.directory, dropped_records=dropped_rows,
                  dropped_segments=len(dropped_files), max_size_bytes=self.max_size)  # fmt: skip

    def _remember(self, entry: Entry) -> None:
        self._cache[(entry.seq, entry.offset)] = entry
        self._cache_rows += entry.rows
        while self._cache_rows > self.cache_limit and self._cache:
            oldest = next(iter(self._cache))  # still on disk: peek() reads it back
            self._cache_rows -= self._cache.pop(oldest).rows

    def _forget(self, seq: int, offset: int) -> None:
        """Drop cached entries before position ``(seq, offset)`` (committed or dropped)."""
        while self._cache:
            key = next(iter(self._cache))
            if key >= (seq, offset):
                break
            self._cache_rows -= self._cache.pop(key).rows

    def _repair_tail(self, active: _Segment) -> None:
        """After a failed/short write, cut the segment back to its last intact entry."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, active.size)
        except OSError:
            self._rotate()  # cannot even truncate: the next start moves the tail aside

    def _disk_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    def _rotate(self) -> None:
        self._new_segment(self._segments[-1].seq + 1)

    def _new_segment(self, seq: int) -> None:
        path = os.path.join(self.directory, f"spool-{seq:016d}.seg")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        if self._fd is not None:
            self._unsynced.append(self._fd)
        self._fd = fd
        self._segments.append(_Segment(seq, path))
        self._dir_dirty = True

    # -- the worker thread -------------------------------------------------------------
    def sync(self, *, appended: bool = True) -> None:
        """fsync what was appended since the last call (and the directory, for new files).

        ``appended=False``: only if segments were rotated or created meanwhile (their fds wait
        here to be fsync'ed and closed); appends to the active segment alone are left.
        """
        with self._lock:
            if not (self._dirty or self._unsynced or self._dir_dirty) or self._fd is None:
                return
            if not appended and not (self._unsynced or self._dir_dirty):
                return
            fds = self._unsynced
            self._unsynced = []
            active = os.dup(self._fd)
            self._dirty = False
            dir_dirty, self._dir_dirty = self._dir_dirty, False
        try:
            for fd in fds:
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.fsync(active)
            if dir_dirty:
                fsync_dir(self.directory)
        finally:
            os.close(active)

    def peek(self, max_rows: int) -> list[Entry]:
        """The oldest uncommitted batches, at least one, up to ``max_rows`` records."""
        with self._lock:
            plan = [(s.seq, s.path, s.acked_offset, s.size) for s in self._segments if s.size]
            cache = dict(self._cache)
        entries: list[Entry] = []
        rows = 0
        for seq, path, start, size in plan:
            while start < size and (cached := cache.get((seq, start))) is not None:
                if entries and rows + cached.rows > max_rows:
                    return entries
                entries.append(cached)
                rows += cached.rows
                start = cached.end
            if start >= size:
                if rows >= max_rows:
                    break
                continue
            try:
                with open(path, "rb") as handle:
                    handle.seek(start)
                    data = handle.read(size - start)
            except FileNotFoundError:
                continue  # dropped by the size limit meanwhile
            found, _ = scan(data)
            for off, end, n in found:
                if entries and rows + n > max_rows:
                    return entries
                payload = data[off + HEADER.size : end]
                try:
                    records = decode_batch(payload)
                except (ValueError, TypeError, KeyError) as exc:
                    event("ERROR", "spool_bad_entry", "spool entry passed its CRC but does not "
                          "decode; skipping it", segment=path, offset=start + off,
                          error=str(exc))  # fmt: skip
                    records = []
                entries.append(Entry(seq, start + off, start + end, n, records))
                rows += n
            if rows >= max_rows:
                break
        return entries

    def commit(self, entries: Sequence[Entry]) -> None:
        """Mark ``entries`` (a prefix returned by :meth:`peek`) as written; trim the spool."""
        if not entries:
            return
        last = entries[-1]
        done: list[str] = []
        with self._lock:
            keep: list[_Segment] = []
            for segment in self._segments:
                if segment.seq < last.seq and segment is not self._segments[-1]:
                    done.append(segment.path)
                    continue
                if segment.seq == last.seq:
                    for entry in entries:
                        if entry.seq == segment.seq and entry.end > segment.acked_offset:
                            segment.acked_offset = entry.end
                            segment.acked_rows += entry.rows
                            segment.acked_entries += 1
                    if segment.pending_entries == 0 and segment is not self._segments[-1]:
                        done.append(segment.path)
                        continue
                keep.append(segment)
            self._segments = keep
            head = keep[0] if keep else None
            ack = (head.seq, head.acked_offset) if head else (last.seq, last.end)
            self._forget(*ack)
            self._update_metrics()
        self._write_ack(*ack)
        for path in done:
            _unlink(path)

    def _write_ack(self, seq: int, offset: int) -> None:
        """Record the committed position in the older slot (no fsync: a stale marker only
        replays committed rows again)."""
        if self._ack_fd is None:
            return
        self._ack_generation += 1
        generation = self._ack_generation
        head = ACK_SLOT.pack(ACK_MAGIC, generation, seq, offset, 0)[:-4]
        slot = head + struct.pack("<I", zlib.crc32(head))
        try:
            os.pwrite(self._ack_fd, slot, (generation % 2) * ACK_SLOT.size)
        except OSError as exc:  # the rows are written; at worst they are replayed again
            event("WARNING", "spool_marker_failed", "cannot record the committed position",
                  directory=self.directory, error=str(exc))  # fmt: skip

    # -- state -------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._opened

    @property
    def pending_rows(self) -> int:
        return sum(s.pending_rows for s in self._segments)

    @property
    def pending_batches(self) -> int:
        return sum(s.pending_entries for s in self._segments)

    @property
    def pending_bytes(self) -> int:
        return sum(s.pending_bytes for s in self._segments)

    def _update_metrics(self) -> None:
        self._metrics.spool_bytes.set(self.pending_bytes)
        self._metrics.spool_batches.set(self.pending_batches)

    def close(self) -> None:
        try:
            self.sync()
        except OSError as exc:
            event("ERROR", "spool_sync_failed", "cannot fsync the spool", error=str(exc))
        with self._lock:
            self._opened = False
            for fd in [*self._unsynced, *([self._fd] if self._fd is not None else [])]:
                os.close(fd)
            self._unsynced, self._fd = [], None
            if self._ack_fd is not None:
                os.close(self._ack_fd)
                self._ack_fd = None
            self._cache.clear()
            self._cache_rows = 0
            # an empty active segment is not worth keeping
            for segment in list(self._segments):
                if segment.size == 0 or segment.pending_entries == 0:
                    _unlink(segment.path)
                    self._segments.remove(segment)


def _read_file(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# -- the worker --------------------------------------------------------------------------
class SpooledSink(Sink, Protocol):
    """A sink that wants a write-ahead spool in front of it."""

    spool_dir: str
    spool_max_size: int
    batch_max_rows: int
    flush_interval: float


class SpoolWorker(SinkWorker):
    """A :class:`SinkWorker` whose backlog is a :class:`Spool` on disk (module docstring)."""

    def __init__(
        self,
        sink: Sink,
        *,
        spool: Spool,
        retry: RetrySettings,
        metrics: Metrics,
        batch_max_rows: int,
        flush_interval: float,
        memory_limit: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(sink, retry=retry, backlog_limit=memory_limit, metrics=metrics,
                         clock=clock)  # fmt: skip
        self.spool = spool
        self._batch_max_rows = batch_max_rows
        self._flush_interval = flush_interval
        self._spool_ok = False
        self._next_flush = 0.0

    @classmethod
    def for_sink(cls, sink: Any, *, retry: RetrySettings, metrics: Metrics) -> SpoolWorker:
        spool = Spool(sink.spool_dir, max_size=sink.spool_max_size, metrics=metrics)
        return cls(
            sink,
            spool=spool,
            retry=retry,
            metrics=metrics,
            batch_max_rows=sink.batch_max_rows,
            flush_interval=sink.flush_interval,
        )

    # -- the sampling thread -----------------------------------------------------------
    def start(self) -> None:
        try:
            self.spool.open()
            self._spool_ok = True
        except OSError as exc:
            self._spool_failed("cannot open the spool", exc)
        super().start()

    def submit(self, batch: Sequence[Record]) -> None:
        if not batch:
            return
        with self._cond:
            if self._spool_ok and not self._pending:
                try:
                    self.spool.append(batch)
                except OSError as exc:
                    self._spool_failed("cannot append to the spool", exc)
                else:
                    self._update_gauges()
                    self._cond.notify()
                    return
        super().submit(batch)  # memory, until the spool works again

    def _spool_failed(self, what: str, exc: OSError) -> None:
        if self._spool_ok or not self._thread.is_alive():
            event("ERROR", "spool_unavailable",
                  f"{what}; keeping records in memory until it works again",
                  sink=self.name, directory=self.spool.directory, error=str(exc))  # fmt: skip
        self._spool_ok = False

    @property
    def pending_records(self) -> int:
        return self.spool.pending_rows + self._pending_records

    @property
    def pending_batches(self) -> int:
        return self.spool.pending_batches + len(self._pending)

    def close(self, timeout: float) -> bool:
        with self._cond:
            self._closing = True
            self._deadline = self._clock() + timeout
            self._cond.notify_all()
        self._thread.join(timeout + 1.0)
        in_memory = self._pending_records
        if in_memory:
            event("ERROR", "sink_unflushed", "shutdown: records that could not be spooled "
                  "were not written", sink=self.name, records=in_memory)  # fmt: skip
        spooled = self.spool.pending_rows
        if spooled:
            event("WARNING", "spool_kept", "records not yet written stay in the spool and are "
                  "written after the next start", sink=self.name, records=spooled,
                  directory=self.spool.directory)  # fmt: skip
        if not self._thread.is_alive():
            self.spool.close()
        return in_memory == 0 and spooled == 0 and not self._thread.is_alive()

    # -- the worker thread -------------------------------------------------------------
    def _sync_spool(self, *, appended: bool = True) -> None:
        try:
            self.spool.sync(appended=appended)
        except OSError as exc:
            event("ERROR", "spool_sync_failed", "cannot fsync the spool",
                  sink=self.name, error=str(exc))  # fmt: skip

    def _update_gauges(self) -> None:
        self._metrics.queue_depth.labels(self.name).set(self.pending_batches)
        self._metrics.backlog_records.labels(self.name).set(self.pending_records)

    def _drain_memory(self) -> None:
        """Move batches kept in memory (spool was failing) into the spool, oldest first."""
        while True:
            with self._cond:
                if not self._pending:
                    if not self._spool_ok and self.spool.is_open:
                        self._spool_ok = True
                    return
                batch = self._pending[0]
                try:
                    if not self.spool.is_open:
                        self.spool.open()
                    self.spool.append(batch)
                except OSError:
                    return
                self._pending.popleft()
                self._pending_records -= len(batch)
                if not self._pending:
                    self._spool_ok = True
                    event("INFO", "spool_available", "spool works again", sink=self.name)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._past_deadline():
                        return
                    pending = self.pending_records
                    if self._closing and not pending:
                        return
                    if not self._opened:
                        break
                    now = self._clock()
                    if pending and (
                        self._closing or pending >= self._batch_max_rows or now >= self._next_flush
                    ):
                        break
                    self._cond.wait(None if not pending else self._next_flush - now)
            if not self._opened:
                try:
                    self.sink.open()
                    self._opened = True
                except Exception as exc:  # keep the data, keep probing
                    self._sync_spool()
                    if self._closing:
                        return
                    self._on_transient(exc)
                continue
            if self._pending:
                self._drain_memory()
            # Group commit: while the destination works, what it commits is durable there, so
            # the spool is fsync'ed only when a write fails (below) and before every attempt
            # while it keeps failing -- one fsync per attempt, never in the sampling thread.
            self._sync_spool(appended=self._failing)
            entries: list[Entry] = []
            memory_batch: Sequence[Record] | None = None
            if self.spool.pending_batches:
                entries = self.spool.peek(self._batch_max_rows)
                batch: Sequence[Record] = [r for e in entries for r in e.records]
            elif self._pending:
                memory_batch = batch = self._pending[0]
            else:
                continue
            self._next_flush = self._clock() + self._flush_interval
            try:
                if batch:
                    self.sink.write(batch)
            except TransientSinkError as exc:
                self._sync_spool()  # the batch stays in the spool: make it durable
                if self._closing:
                    return  # the spool keeps it for the next start
                self._on_transient(exc)
                continue
            except PermanentSinkError as exc:
                self.spool.commit(entries)
                self._drop(memory_batch or batch, "permanent", exc)
            except Exception as exc:  # a bug must not kill the worker
                self.spool.commit(entries)
                self._drop(memory_batch or batch, "unexpected", exc)
            else:
                self.spool.commit(entries)
                self._on_success(memory_batch or batch)
            self._update_gauges()


__all__ = ["Entry", "Spool", "SpoolWorker", "decode_batch", "encode_batch"]
