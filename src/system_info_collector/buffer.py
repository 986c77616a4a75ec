"""What holds a sink's records until the sink has written them: one small protocol, two
implementations and one composite (after Telegraf's ``models/buffer.go``).

The sampling thread calls :meth:`Buffer.add` (never blocks, never raises); the sink's
:class:`~system_info_collector.worker.SinkWorker` takes the oldest records with
:meth:`Buffer.batch`, writes them, and then :meth:`Buffer.accept` s the batch (written, or
permanently refused: gone) or :meth:`Buffer.reject` s it (not written: it stays first in line
and the buffer makes it as durable as it can). The worker never knows which buffer it has.

* :class:`MemoryBuffer` -- bounded in *bytes*: a batch that has to wait is kept compressed
  (the spool's compact JSON, zlib level 1: ~30 bytes per record instead of ~1 KB of ``Record``
  objects); only the batch at the head stays decoded, so the healthy path encodes nothing.
  Beyond the bound the oldest batches are dropped with an ERROR and a counter.
* :class:`SpoolBuffer` -- the on-disk write-ahead :class:`~system_info_collector.spool.Spool`:
  a record is in the kernel when ``add`` returns, so a kill -9 cannot lose it.
* :class:`FallbackBuffer` -- a spool with a memory buffer behind it: when the disk cannot be
  written (full, read-only, removed) records wait in memory and move to the spool, in order, as
  soon as it works again.

Which buffer a sink gets is configuration (``SIC_<SINK>_BUFFER=memory|disk``), built by
:func:`build_buffer`; a sink only knows how to write.
"""

from __future__ import annotations

import threading
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from system_info_collector.config import BufferSettings
from system_info_collector.logging import event
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.spool import Spool, decode_batch, encode_batch

# What a held batch costs besides its compressed bytes (the item, the bytes object, the deque
# slot), and what a decoded record costs (measured: ~470 B by tracemalloc, ~1-1.4 KB of RSS).
ITEM_OVERHEAD_BYTES = 200
DECODED_RECORD_BYTES = 1200
RECORD_ESTIMATE_BYTES = 300  # spooled bytes per record, to express a spool limit in records


@dataclass(frozen=True, slots=True)
class Batch:
    """Records taken by :meth:`Buffer.batch`; ``token`` lets the buffer accept exactly them."""

    records: Sequence[Record]
    token: Any = None


class Buffer(Protocol):
    name: str
    durable: bool  # records survive a kill -9 once add() returned

    def open(self) -> None: ...  # before the first add(): recover what a previous run left

    def add(self, records: Sequence[Record]) -> None: ...

    def batch(self, max_records: int) -> Batch | None: ...  # the oldest, at least one batch

    def accept(self, batch: Batch) -> None: ...

    def reject(self, batch: Batch) -> None: ...

    def __len__(self) -> int: ...  # records held

    @property
    def batches(self) -> int: ...

    @property
    def volatile(self) -> int: ...  # records held only in memory (lost by a kill -9)

    @property
    def limit_records(self) -> int: ...  # about how many records fit

    @property
    def problem(self) -> str | None: ...  # why it is not as durable as configured, if it is not

    def close(self) -> None: ...  # after the worker stopped: log what stays, release files


# -- memory --------------------------------------------------------------------------------
@dataclass(slots=True)
class _Item:
    rows: int
    nbytes: int
    records: Sequence[Record] | None  # decoded: the head while the sink keeps up
    blob: bytes | None = None  # compressed compact JSON: everything that has to wait


def _pack(records: Sequence[Record]) -> _Item:
    blob = zlib.compress(encode_batch(records), 1)
    return _Item(len(records), len(blob) + ITEM_OVERHEAD_BYTES, None, blob)


class MemoryBuffer:
    """Batches in memory, oldest first, bounded in bytes (and optionally in records)."""

    durable = False

    def __init__(
        self,
        name: str,
        *,
        max_bytes: int,
        metrics: Metrics,
        max_records: int | None = None,
    ) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self.max_records = max_records
        self._metrics = metrics
        self._lock = threading.Lock()
        self._items: deque[_Item] = deque()
        self._rows = 0
        self._bytes = 0

    def open(self) -> None:
        pass

    def add(self, records: Sequence[Record]) -> None:
        if not records:
            return
        # Encode outside the lock; the head (nothing waiting) stays decoded: the healthy path.
        item = _pack(records) if self._items else None
        with self._lock:
            if item is None:
                if self._items:
                    item = _pack(records)
                else:
                    est = len(records) * DECODED_RECORD_BYTES + ITEM_OVERHEAD_BYTES
                    item = _Item(len(records), est, records)
            self._items.append(item)
            self._rows += item.rows
            self._bytes += item.nbytes
            dropped = 0
            while len(self._items) > 1 and self._over():
                oldest = self._items.popleft()
                self._rows -= oldest.rows
                self._bytes -= oldest.nbytes
                dropped += oldest.rows
        if dropped:
            self._metrics.sink_dropped.labels(self.name).inc(dropped)
            event(
                "ERROR",
                "sink_backlog_overflow",
                "backlog full: dropped the oldest records",
                sink=self.name,
                dropped_records=dropped,
                limit_bytes=self.max_bytes,
                limit_records=self.max_records,
            )

    def _over(self) -> bool:
        return self._bytes > self.max_bytes or (
            self.max_records is not None and self._rows > self.max_records
        )

    def batch(self, max_records: int) -> Batch | None:
        with self._lock:
            taken: list[_Item] = []
            rows = 0
            for item in self._items:
                if taken and rows + item.rows > max_records:
                    break
                taken.append(item)
                rows += item.rows
        if not taken:
            return None
        records: list[Record] = []
        for item in taken:
            if item.records is not None:
                records.extend(item.records)
            else:
                assert item.blob is not None
                records.extend(decode_batch(zlib.decompress(item.blob)))
        return Batch(records, tuple(taken))

    def accept(self, batch: Batch) -> None:
        with self._lock:
            for item in batch.token:
                if self._items and self._items[0] is item:  # not dropped by overflow meanwhile
                    self._items.popleft()
                    self._rows -= item.rows
                    self._bytes -= item.nbytes

    def reject(self, batch: Batch) -> None:
        pass  # it stays first in line

    def __len__(self) -> int:
        return self._rows

    @property
    def batches(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def volatile(self) -> int:
        return self._rows

    @property
    def limit_records(self) -> int:
        """Records that fit at the current size a record (so held/limit is the byte fill);
        ~50 B a record while empty."""
        per_record = self._bytes / self._rows if self._rows else 50.0
        by_bytes = int(self.max_bytes / per_record)
        return min(by_bytes, self.max_records) if self.max_records else by_bytes

    @property
    def problem(self) -> str | None:
        return None

    def close(self) -> None:
        left = self._rows
        if left:
            event(
                "ERROR",
                "sink_unflushed",
                "shutdown: records held in memory were not written",
                sink=self.name,
                records=left,
            )


# -- disk ----------------------------------------------------------------------------------
class SpoolBuffer:
    """The write-ahead :class:`Spool` as a buffer. ``add`` raises OSError when the disk fails
    (:class:`FallbackBuffer` catches it); ``reject`` fsyncs what waits (group commit)."""

    durable = True

    def __init__(self, name: str, spool: Spool) -> None:
        self.name = name
        self.spool = spool

    def open(self) -> None:
        self.spool.open()

    def add(self, records: Sequence[Record]) -> None:
        self.spool.append(records)

    def batch(self, max_records: int) -> Batch | None:
        # Group commit: while the sink writes, what it commits is durable there; only new
        # segments (and the directory) are fsync'ed here, appends when an attempt failed.
        self.spool.sync(appended=False)
        self.spool.verify()  # one fstat: was the spool removed under us?
        if not self.spool.pending_batches:
            return None
        entries = self.spool.peek(max_records)
        if not entries:  # what was pending was damaged: set aside, nothing to write
            return None
        return Batch([r for e in entries for r in e.records], entries)

    def accept(self, batch: Batch) -> None:
        self.spool.commit(batch.token)

    def reject(self, batch: Batch) -> None:
        self.sync()

    def sync(self) -> None:
        try:
            self.spool.sync()
        except OSError as exc:
            event(
                "ERROR",
                "spool_sync_failed",
                "cannot fsync the spool",
                sink=self.name,
                error=str(exc),
            )

    def __len__(self) -> int:
        return self.spool.pending_rows

    @property
    def batches(self) -> int:
        return self.spool.pending_batches

    @property
    def volatile(self) -> int:
        return 0

    @property
    def limit_records(self) -> int:
        return max(1000, self.spool.max_size // RECORD_ESTIMATE_BYTES)

    @property
    def problem(self) -> str | None:
        return None if self.spool.is_open else "spool is not open"

    def close(self) -> None:
        spooled = self.spool.pending_rows
        if spooled:
            event(
                "WARNING",
                "spool_kept",
                "records not yet written stay in the spool and are written after the next start",
                sink=self.name,
                records=spooled,
                directory=self.spool.directory,
            )
        self.spool.close()


class FallbackBuffer:
    """A :class:`SpoolBuffer` that keeps going in a :class:`MemoryBuffer` while the disk fails."""

    durable = True

    def __init__(self, disk: SpoolBuffer, memory: MemoryBuffer) -> None:
        self.name = disk.name
        self.disk = disk
        self.memory = memory
        self._lock = threading.Lock()  # add() vs the worker moving memory to disk
        self._disk_ok = False
        self._error: str | None = None

    def open(self) -> None:
        try:
            self.disk.open()
            self._disk_ok = True
        except OSError as exc:
            self._failed("cannot open the spool", exc)

    def add(self, records: Sequence[Record]) -> None:
        with self._lock:
            if self._disk_ok and not len(self.memory):
                try:
                    self.disk.add(records)
                    return
                except OSError as exc:
                    self._failed("cannot append to the spool", exc)
        self.memory.add(records)  # until the spool works again

    def _failed(self, what: str, exc: OSError) -> None:
        if self._disk_ok or self._error is None:
            event(
                "ERROR",
                "spool_unavailable",
                f"{what}; keeping records in memory until it works again",
                sink=self.name,
                directory=self.disk.spool.directory,
                error=str(exc),
            )
        self._disk_ok = False
        self._error = f"{what}: {exc}"

    def _move_to_disk(self) -> None:
        """Oldest first, the batches memory holds go to the spool once it works again."""
        while len(self.memory):
            batch = self.memory.batch(1)
            if batch is None:
                break
            with self._lock:
                try:
                    if not self.disk.spool.is_open:
                        self.disk.open()
                    self.disk.add(batch.records)
                except OSError:
                    return
                self.memory.accept(batch)
        with self._lock:
            if not self._disk_ok and self.disk.spool.is_open and not len(self.memory):
                self._disk_ok, self._error = True, None
                event("INFO", "spool_available", "spool works again", sink=self.name)

    def batch(self, max_records: int) -> Batch | None:
        if not self._disk_ok or len(self.memory):
            self._move_to_disk()
        if self.disk.spool.is_open and self.disk.batches:
            got = self.disk.batch(max_records)
            if got is not None:
                return Batch(got.records, (self.disk, got))
        got = self.memory.batch(max_records)
        return None if got is None else Batch(got.records, (self.memory, got))

    def accept(self, batch: Batch) -> None:
        part, inner = batch.token
        part.accept(inner)

    def reject(self, batch: Batch) -> None:
        part, inner = batch.token
        part.reject(inner)

    def __len__(self) -> int:
        return len(self.disk) + len(self.memory)

    @property
    def batches(self) -> int:
        return self.disk.batches + self.memory.batches

    @property
    def volatile(self) -> int:
        return len(self.memory)

    @property
    def limit_records(self) -> int:
        return self.disk.limit_records

    @property
    def problem(self) -> str | None:
        return self._error

    def close(self) -> None:
        if len(self.memory):  # the disk may work again: what memory holds survives there
            self._move_to_disk()
        self.memory.close()
        if self.disk.spool.is_open:
            self.disk.close()


def build_buffer(name: str, settings: BufferSettings, metrics: Metrics) -> Buffer:
    """The buffer ``SIC_<SINK>_BUFFER`` asks for: ``memory``, or ``disk`` (a write-ahead
    spool in ``settings.spool_dir`` that falls back to memory while the disk fails)."""
    memory = MemoryBuffer(
        name,
        max_bytes=settings.memory_max_size,
        metrics=metrics,
        max_records=settings.memory_max_records,
    )
    if settings.kind == "memory":
        return memory
    spool = Spool(settings.spool_dir, max_size=settings.spool_max_size, metrics=metrics, sink=name)
    return FallbackBuffer(SpoolBuffer(name, spool), memory)


__all__ = [
    "Batch",
    "Buffer",
    "FallbackBuffer",
    "MemoryBuffer",
    "SpoolBuffer",
    "build_buffer",
]
