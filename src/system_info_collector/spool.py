"""The on-disk write-ahead spool: CRC-checked batches in append-only segment files.

A :class:`Spool` is a directory of append-only segment files (``spool-<seq>.seg``). Each entry
is one batch of records: a 16-byte header (magic, payload length, row count, CRC32 of all three
and the payload) followed by the batch as compact JSON. Entries are committed oldest-first; the
committed position is kept in the file ``committed`` (written atomically) and segments that are
fully committed are deleted. At start every segment is checked entry by entry (:func:`scan`
resynchronises on the next intact entry after damage): intact entries are kept, a damaged tail
(a kill -9 or power cut can tear a file at any byte) is moved aside to ``<segment>.torn-<time>``
with an ERROR log ``spool_torn_tail``, damage with intact entries after it is moved aside the
same way and the segment rewritten with every intact entry (``spool_damaged``), and the
collector starts anyway. Damage met while draining (bytes changed, a segment truncated or
removed under us) is set aside too, and draining goes on: :meth:`Spool.peek` returns every
intact entry, never an empty list while one is pending.
What a segment's own bytes cannot show is caught by its **seal** (``<segment>.seal``: its length,
CRC-checked), written once a rotated segment is fsynced: a sealed segment found shorter at start
but otherwise intact was cut at an entry boundary (ERROR ``spool_segment_truncated``, its lost
bytes counted), a seal whose segment is gone means the segment was removed
(``spool_segment_removed``), a damaged seal is set aside (``spool_seal_damaged``). A segment is
deleted seal first, and a seal is renamed into place only while its segment is in the spool (under
the lock that drops segments), so a crash at any step never looks like a removal.
Only when the spool would exceed its size limit are the oldest segments dropped, with an ERROR
log ``spool_overflow`` and the counter ``sic_spool_dropped_records_total``.

The spool is the disk half of the write-ahead buffer
(:class:`~system_info_collector.buffer.SpoolBuffer`): ``append`` runs in the sampling thread --
one ``pwrite(2)`` at the segment's own offset, no fsync, no network -- so a sample is in the
kernel before it returns and a kill -9 of the collector cannot lose it. The sink's worker reads
batches back (from memory while they are recent) and commits what the destination committed.
Group commit: what the destination commits is durable there, so the spool is fsync'ed after a
failed attempt (and whenever a segment was created), not after every successful one.
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from system_info_collector.durable import (
    fsync_dir,
    pread_all,
    pwrite_all,
    set_aside_ranges,
    set_aside_tail,
    torn_path,
    write_all,
)
from system_info_collector.logging import event
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record

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
# A rotated segment's seal, ``<segment>.seal``: magic, segment, size, crc32 of the rest (framed
# as the marker's slots: :func:`_with_crc`, :func:`_checked`); written (tmp, fsync, rename) once
# the segment is fsynced. At start a segment shorter than its seal but otherwise intact was cut
# at an entry boundary, and a seal without its segment means the segment was removed: neither
# shows in the segment's own bytes.
SEAL_SUFFIX = ".seal"
SEAL = struct.Struct("<4sQQI")
SEAL_MAGIC = b"SICz"
READ_WINDOW = 1 << 20  # bytes peek() reads at a time (more only for a larger entry)
CACHE_ROWS = 2000  # records of the newest appended batches kept in memory for peek()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


# -- entries ---------------------------------------------------------------------------------
# One encoder for every batch (``json.dumps`` with separators builds a new one per call); a
# record holds no cycles, so the per-container cycle check is left out: the same text, ~20 %
# cheaper for a tick of this VM's 15 records (64 against 79 µs, ``timeit``).
_ENCODE = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def encode_batch(batch: Sequence[Record]) -> bytes:
    """The batch as compact JSON: ``[[measurement, ts_µs, host, tags, fields, interval_ms], ...]``
    (entries of releases before ``interval_ms`` have five elements and read as 0: unknown)."""
    return _ENCODE(
        [
            [
                r.measurement,
                (r.ts - _EPOCH) // _US,
                r.host,
                r.tags if isinstance(r.tags, dict) else dict(r.tags),
                r.fields if isinstance(r.fields, dict) else dict(r.fields),
                r.interval_ms,
            ]
            for r in batch
        ]
    ).encode()


def decode_batch(payload: bytes) -> list[Record]:
    return [
        Record(m, _EPOCH + timedelta(microseconds=us), host, tags, fields, *rest)
        for m, us, host, tags, fields, *rest in json.loads(payload)
    ]


def frame(payload: bytes, rows: int) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(_LENGTH_ROWS.pack(len(payload), rows)))
    return HEADER.pack(MAGIC, len(payload), rows, crc) + payload


def _entry_at(data: bytes, off: int) -> tuple[int, int] | None:
    """``(end, rows)`` of the intact entry starting at ``off``, or None."""
    if off + HEADER.size > len(data):
        return None
    magic, length, rows, crc = HEADER.unpack_from(data, off)
    end = off + HEADER.size + length
    if magic != MAGIC or length > MAX_ENTRY_BYTES or end > len(data):
        return None
    payload = memoryview(data)[off + HEADER.size : end]
    if zlib.crc32(payload, zlib.crc32(_LENGTH_ROWS.pack(length, rows))) != crc:
        return None
    return end, rows


def scan(data: bytes) -> tuple[list[tuple[int, int, int]], list[tuple[int, int]]]:
    """The intact entries of a segment's bytes as ``(offset, end, rows)``, and the damaged
    ranges ``(start, end)`` between and after them.

    Where an entry does not check out (a flipped byte, a torn write, zeros where a truncated
    file was extended), scanning resynchronises on the next offset that holds an intact entry
    (its magic, a plausible length and a matching CRC32 over length, rows and payload), so
    every intact entry after the damage is found too.
    """
    entries: list[tuple[int, int, int]] = []
    damaged: list[tuple[int, int]] = []
    off, size, bad = 0, len(data), -1
    while off < size:
        found = _entry_at(data, off)
        if found is None:
            if bad < 0:
                bad = off
            off = data.find(MAGIC, off + 1)
            if off < 0:
                break
            continue
        if bad >= 0:
            damaged.append((bad, off))
            bad = -1
        entries.append((off, found[0], found[1]))
        off = found[0]
    if bad >= 0:
        damaged.append((bad, size))
    return entries, damaged


def gaps(start: int, end: int, intact: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The ranges of ``[start, end)`` not covered by the sorted ``intact`` ranges."""
    out: list[tuple[int, int]] = []
    pos = start
    for lo, hi in intact:
        if lo > pos:
            out.append((pos, lo))
        pos = max(pos, hi)
    if pos < end:
        out.append((pos, end))
    return out


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
    # damaged ranges already set aside (start -> end): skipped by peek(), passed by commit()
    holes: dict[int, int] = field(default_factory=dict)

    def pass_holes(self) -> None:
        while self.acked_offset in self.holes:
            self.acked_offset = self.holes.pop(self.acked_offset)

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
        sink: str = "postgres",  # whose spool it is: the sink label of sic_spool_bytes/_batches
    ) -> None:
        self.directory = directory
        self.sink = sink
        self.max_size = max_size
        self.segment_size = segment_size or max(4096, min(16 << 20, max_size // 8))
        self._metrics = metrics
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._fd: int | None = None  # the active (last) segment, opened for appending
        self._unsynced: list[int] = []  # fds of rotated segments awaiting fsync + close
        self._sealing: list[tuple[int, str, int]] = []  # (seq, path, size) of those segments
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
        names = os.listdir(self.directory)
        for name in names:  # a rewrite (_rewrite) or seal interrupted before its rename: the
            if name.endswith((".seg.tmp", SEAL_SUFFIX + ".tmp")):  # original is still intact
                _unlink(os.path.join(self.directory, name))
        found = sorted((int(m.group(1)), name) for name in names if (m := SEGMENT_RE.match(name)))
        seals = self._read_seals(names, ack_seq)
        segments: list[_Segment] = []
        for i, (seq, name) in enumerate(found):
            path = os.path.join(self.directory, name)
            if seq < ack_seq:  # committed; its deletion was interrupted
                _unlink_segment(path)
                continue
            segment = self._recover(
                seq,
                path,
                ack_off if seq == ack_seq else None,
                newest=i == len(found) - 1,
                sealed=seals.get(seq),
            )
            if segment is None:
                continue
            if segment.pending_entries == 0:
                _unlink_segment(path)
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
            event(
                "INFO",
                "spool_recovered",
                "replaying spooled records oldest-first",
                directory=self.directory,
                batches=self.pending_batches,
                records=self.pending_rows,
                bytes=self.pending_bytes,
            )

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
            slot = _checked(ACK_SLOT, data[start : start + ACK_SLOT.size])
            if slot is None or slot[0] != ACK_MAGIC:
                continue
            _, generation, seq, off = slot
            if best is None or generation > best[0]:
                best = (generation, seq, off)
        if best is not None:
            self._ack_generation = best[0]
            return best[1], best[2]
        aside = torn_path(path, time.time())
        os.replace(path, aside)
        event(
            "ERROR",
            "spool_marker_damaged",
            "the spool's committed-position marker is damaged; moved it aside and replaying "
            "every spooled record (rows already in the database are skipped, not duplicated)",
            file=path,
            moved_to=aside,
            size_bytes=len(data),
        )
        return 0, 0

    def _read_seals(self, names: list[str], ack_seq: int) -> dict[int, int]:
        """The sealed size of each segment that has a seal. A damaged seal is set aside; a seal
        whose (uncommitted) segment is gone means that segment was removed: both ERROR + count."""
        seals: dict[int, int] = {}
        for name in names:
            match = SEGMENT_RE.match(name[: -len(SEAL_SUFFIX)])
            if not name.endswith(SEAL_SUFFIX) or match is None:
                continue
            seq, path = int(match.group(1)), os.path.join(self.directory, name)
            segment = _Segment(seq, path[: -len(SEAL_SUFFIX)])
            try:
                data = _read_file(path)
            except OSError:  # not a file we can read: the segment is only left unchecked
                continue
            seal = _checked(SEAL, data)
            magic, sealed_seq, size = seal if seal is not None else (b"", 0, 0)
            if magic != SEAL_MAGIC or sealed_seq != seq:
                aside = torn_path(path, time.time())
                os.replace(path, aside)
                self._damaged(
                    segment,
                    "spool_seal_damaged",
                    "a spool segment's seal is damaged; moved it aside (the segment is read as "
                    "usual, only its length cannot be checked)",
                    moved_to=aside,
                    damaged_bytes=len(data),
                )
            elif name[: -len(SEAL_SUFFIX)] in names:
                seals[seq] = size
            else:
                _unlink(path)
                if seq >= ack_seq:
                    self._damaged(
                        segment,
                        "spool_segment_removed",
                        "a spool segment was removed while the collector was stopped: its "
                        "records are lost",
                        damaged_bytes=size,
                    )
        return seals

    def _recover(
        self, seq: int, path: str, ack_off: int | None, *, newest: bool, sealed: int | None = None
    ) -> _Segment | None:
        """Check a segment entry by entry; set damaged bytes aside, keep every intact entry.

        ``ack_off``: the committed position when this is the marker's segment. A damaged tail
        is cut off (:func:`set_aside_tail`); damage with intact entries after it is removed by
        rewriting the segment with its pending intact entries only (the marker is reset to the
        rewritten segment's start *before* the rename, so a crash in between only replays).
        """
        data = _read_file(path)
        entries, damaged = scan(data)
        acked = 0  # entries before the committed position
        if ack_off is not None and ack_off in {end for _, end, _ in entries}:
            acked = next(i + 1 for i, (_, end, _) in enumerate(entries) if end == ack_off)
        segment = _Segment(
            seq, path, size=len(data), rows=sum(r for *_, r in entries), entries=len(entries)
        )
        if not data and not newest:
            # only the newest segment can be empty (created at start, nothing appended yet)
            self._damaged(
                segment,
                "spool_segment_emptied",
                "spool segment is empty but is not the newest one (truncated?); "
                "what it held is lost",
                damaged_bytes=0,
            )
        if sealed is not None and (damaged or len(data) != sealed):
            _unlink(path + SEAL_SUFFIX)  # its bytes change (or changed): the seal no longer holds
            if data and not damaged and len(data) < sealed:
                self._damaged(
                    segment,
                    "spool_segment_truncated",
                    "spool segment is shorter than when it was sealed (cut at an entry "
                    "boundary): the records of its missing tail are lost",
                    damaged_bytes=sealed - len(data),
                    sealed_bytes=sealed,
                )
        if len(damaged) == 1 and damaged[0][1] == len(data):
            good = damaged[0][0]
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            try:
                aside = set_aside_tail(fd, path, good, len(data), time.time())
            finally:
                os.close(fd)
            segment.size = good
            self._damaged(
                segment,
                "spool_torn_tail",
                "spool segment ends in a damaged record; kept the intact records and "
                "moved the damaged tail aside",
                moved_to=aside,
                intact_bytes=good,
                damaged_bytes=len(data) - good,
            )
        elif damaged:
            kept = entries[acked:]
            aside = set_aside_ranges(path, data, damaged, time.time())
            if kept:
                self._rewrite(segment, data, kept, marker=ack_off is not None)
            else:
                _unlink_segment(path)
            segment.size = sum(end - off for off, end, _ in kept)
            segment.rows = sum(r for *_, r in kept)
            segment.entries, acked = len(kept), 0
            self._damaged(
                segment,
                "spool_damaged",
                "spool segment holds damaged bytes; kept every intact record before "
                "and after them and moved the damaged bytes aside",
                moved_to=aside,
                damaged_ranges=len(damaged),
                damaged_bytes=sum(e - s for s, e in damaged),
            )
        if not segment.entries:
            _unlink_segment(path)
            return None
        for _, end, rows in entries[:acked]:
            segment.acked_offset, segment.acked_rows = end, segment.acked_rows + rows
            segment.acked_entries += 1
        return segment

    def _rewrite(
        self, segment: _Segment, data: bytes, kept: Sequence[tuple[int, int, int]], *, marker: bool
    ) -> None:
        tmp = segment.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            write_all(fd, b"".join(data[off:end] for off, end, _ in kept))
            os.fsync(fd)
        finally:
            os.close(fd)
        if marker:  # the old offsets mean nothing in the rewritten file
            self._write_ack(segment.seq, 0)
            if self._ack_fd is not None:
                os.fsync(self._ack_fd)
        os.replace(tmp, segment.path)
        _unlink(segment.path + SEAL_SUFFIX)
        fsync_dir(self.directory)

    def _damaged(self, segment: _Segment, name: str, message: str, **fields: Any) -> None:
        """ERROR log and counter for bytes set aside (or lost) from ``segment``."""
        self._metrics.spool_damaged_bytes.labels(self.sink).inc(fields["damaged_bytes"])
        self._metrics.spool_damage_events.labels(self.sink).inc()
        event(
            "ERROR",
            name,
            message,
            sink=self.sink,
            segment=segment.path,
            intact_records=segment.pending_rows,
            intact_entries=segment.pending_entries,
            **fields,
        )

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
            try:  # at our own offset: a file truncated under us gets a hole, not shifted entries
                pwrite_all(self._fd, data, active.size)
            except OSError:
                self._repair_tail(active)
                raise
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
            _unlink_segment(path)
        if dropped_rows or dropped_files:
            self._metrics.spool_dropped.labels(self.sink).inc(dropped_rows)
            event(
                "ERROR",
                "spool_overflow",
                "spool reached its size limit (SIC_DB_SPOOL_MAX_SIZE, SIC_<SINK>_SPOOL_MAX_SIZE): "
                "dropped the oldest spooled records",
                sink=self.sink,
                directory=self.directory,
                dropped_records=dropped_rows,
                dropped_segments=len(dropped_files),
                max_size_bytes=self.max_size,
            )

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
        """After a failed write, cut the segment back to its last intact entry."""
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
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:  # the directory was removed under us
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            event(
                "ERROR",
                "spool_dir_recreated",
                "the spool directory was removed; created it again",
                directory=self.directory,
            )
            fd = os.open(path, flags, 0o600)
        if self._fd is not None:
            self._unsynced.append(self._fd)
            sealed = self._segments[-1]  # appended to no more: its size is final
            self._sealing.append((sealed.seq, sealed.path, sealed.size))
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
            fds, seals = self._unsynced, self._sealing
            self._unsynced, self._sealing = [], []
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
            for seq, path, size in seals:  # their bytes are durable now
                self._seal(seq, path, size)
            if dir_dirty or seals:
                fsync_dir(self.directory)
        finally:
            os.close(active)

    def _seal(self, seq: int, path: str, size: int) -> None:
        """Seal segment ``seq`` at ``size`` bytes: the seal is written and fsynced aside, then
        renamed into place under the lock, and only while the segment is still in the spool. A
        segment the size limit or a commit drops leaves the spool under the lock before it is
        deleted (seal first), so no step of this ever leaves a seal without its segment -- which
        a crash would turn into a false ``spool_segment_removed`` at the next start."""
        tmp = _prepared_seal(path, seq, size)
        if tmp is None:
            return
        with self._lock:
            if any(s.seq == seq for s in self._segments):
                try:
                    os.replace(tmp, path + SEAL_SUFFIX)  # a rename: no fsync under the lock
                    return
                except OSError:
                    pass
        _unlink(tmp)

    def peek(self, max_rows: int) -> list[Entry]:
        """The oldest uncommitted batches, at least one, up to ``max_rows`` records.

        Damage found on the way (bytes that do not check out, a segment truncated or removed
        under us) is set aside with an ERROR and counted, and every intact entry before and
        after it is still returned: an empty list means nothing intact is pending.
        """
        for _ in range(4):  # each pass settles the damage it met; more is pathological
            entries, damaged = self._collect(max_rows)
            if damaged is None:
                break
            self._settle(damaged)
        return entries

    def _collect(self, max_rows: int) -> tuple[list[Entry], int | None]:
        """The entries :meth:`peek` returns, or those before unknown damage and its segment."""
        with self._lock:
            plan = [
                (s.seq, s.path, s.acked_offset, s.size, dict(s.holes))
                for s in self._segments
                if s.pending_entries
            ]
            cache = dict(self._cache)
        entries: list[Entry] = []
        rows = 0
        for seq, path, pos, size, holes in plan:
            window = READ_WINDOW
            while pos < size:
                if pos in holes:
                    pos = holes[pos]
                    continue
                cached = cache.get((seq, pos))
                if cached is not None:
                    if entries and rows + cached.rows > max_rows:
                        return entries, None
                    entries.append(cached)
                    rows += cached.rows
                    pos = cached.end
                    continue
                want = min(size - pos, window)
                try:
                    data = _pread_path(path, pos, want)
                except FileNotFoundError:
                    return entries, seq  # removed under us
                found, damaged = scan(data)
                stop = damaged[0][0] if damaged else len(data)
                for off, end, n in found:
                    if off >= stop:
                        break
                    if entries and rows + n > max_rows:
                        return entries, None
                    hit = cache.get((seq, pos + off))
                    try:
                        records = (
                            hit.records if hit else decode_batch(data[off + HEADER.size : end])
                        )
                    except (ValueError, TypeError, KeyError):
                        return entries, seq  # passed its CRC, does not decode: damage too
                    entries.append(Entry(seq, pos + off, pos + end, n, records))
                    rows += n
                if rows >= max_rows:
                    return entries, None
                if not damaged and len(data) == want:
                    pos += len(data)
                    continue
                if pos + stop in holes:  # (a short read: the file was truncated under us)
                    pos += stop
                    continue
                if len(data) == want < size - pos and damaged[0][1] == len(data):
                    pos, window = pos + stop, window * 2  # maybe an entry cut by the window
                    continue
                return entries, seq
        return entries, None

    def _settle(self, seq: int) -> None:
        """Re-read segment ``seq`` after damage: keep every intact entry (on disk or still in
        memory), set the damaged bytes aside, mark them as holes, correct the counts."""
        with self._lock:
            segment = next((s for s in self._segments if s.seq == seq), None)
            if segment is None:
                return
            start, size = segment.acked_offset, segment.size
            try:
                data = _pread_path(segment.path, start, size - start)
                missing = False
            except FileNotFoundError:
                if segment is self._segments[-1]:
                    self._rescue_active()
                    return
                data, missing = b"", True
            found, _ = scan(data)
            intact = {start + off: (start + end, n) for off, end, n in found}
            for (c_seq, off), entry in self._cache.items():
                if c_seq == seq and off >= start:
                    intact[off] = (entry.end, entry.rows)
            bad: list[tuple[int, int]] = []  # decode failures: intact CRC, useless payload
            for off, (end, _n) in sorted(intact.items()):
                if (seq, off) in self._cache or off - start + HEADER.size > len(data):
                    continue
                try:
                    decode_batch(data[off - start + HEADER.size : end - start])
                except (ValueError, TypeError, KeyError):
                    bad.append((off, end))
            for off, _end in bad:
                del intact[off]
            spans = sorted((off, end) for off, (end, _) in intact.items())
            holes = gaps(start, size, spans)
            new = [(lo, hi) for lo, hi in holes if lo not in segment.holes]
            kept_rows = sum(n for _, n in intact.values())
            lost_rows = segment.pending_rows - kept_rows
            lost_entries = segment.pending_entries - len(intact)
            segment.rows -= lost_rows
            segment.entries -= lost_entries
            segment.holes = dict(holes)
            segment.pass_holes()
            present = [
                (lo - start, min(hi, start + len(data)) - start)
                for lo, hi in new
                if lo < start + len(data)
            ]
            aside = (
                set_aside_ranges(segment.path, data, present, time.time())
                if present and not missing
                else None
            )
            gone = missing and segment is not self._segments[-1]
            if gone:
                self._segments.remove(segment)
            self._update_metrics()
        if not new and not lost_rows:
            return
        _unlink(segment.path + SEAL_SUFFIX)  # its length changed under us: nothing to check
        damaged_bytes = sum(hi - lo for lo, hi in new)
        self._metrics.spool_damaged_bytes.labels(self.sink).inc(damaged_bytes)
        self._metrics.spool_damage_events.labels(self.sink).inc()
        event(
            "ERROR",
            "spool_removed" if missing else "spool_damaged",
            "spool segment was removed: its records are lost"
            if missing
            else "spooled bytes are damaged (changed or truncated on disk); kept every intact "
            "record before and after them and moved the damaged bytes aside",
            sink=self.sink,
            segment=segment.path,
            intact_records=kept_rows,
            intact_entries=len(intact),
            lost_records=max(lost_rows, 0),
            lost_entries=max(lost_entries, 0),
            damaged_bytes=damaged_bytes,
            damaged_ranges=len(new),
            moved_to=aside,
        )

    def verify(self) -> None:
        """Notice that the active segment (or the whole spool directory) was removed under us
        (``rm -rf``, a volume re-created): appends would go on into a file nobody can find
        after a restart. Its pending entries are still readable through our descriptor: they
        move to a new segment in a re-created directory, with an ERROR log."""
        with self._lock:
            if not self._opened or self._fd is None:
                return
            try:
                if os.fstat(self._fd).st_nlink:
                    return
            except OSError:
                return
            self._rescue_active()

    def _rescue_active(self) -> None:
        """(Locked.) Move the removed active segment's pending entries to a new segment."""
        assert self._fd is not None
        active = self._segments[-1]
        data = pread_all(self._fd, active.size - active.acked_offset, active.acked_offset)
        found, _ = scan(data)
        recreated = not os.path.isdir(self.directory)
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self._new_segment(active.seq + 1)  # raises before anything changed if it cannot
        fresh = self._segments[-1]
        lost_rows, lost_files = 0, 0
        for segment in self._segments[:-2]:
            if not os.path.exists(segment.path):
                lost_rows += segment.pending_rows
                lost_files += 1
                self._segments.remove(segment)
        self._segments.remove(active)
        payload = b"".join(data[off:end] for off, end, _ in found)
        assert self._fd is not None
        pwrite_all(self._fd, payload, 0)
        fresh.size, fresh.entries = len(payload), len(found)
        fresh.rows = sum(n for *_, n in found)
        lost_rows += active.pending_rows - fresh.rows
        self._cache.clear()
        self._cache_rows = 0
        self._dirty = True
        if self._ack_fd is not None and os.fstat(self._ack_fd).st_nlink == 0:
            os.close(self._ack_fd)
            self._ack_fd = os.open(
                os.path.join(self.directory, ACK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
        head = self._segments[0]
        self._write_ack(head.seq, head.acked_offset)
        self._update_metrics()
        if lost_rows:
            self._metrics.spool_damage_events.labels(self.sink).inc()
        event(
            "ERROR",
            "spool_files_removed",
            "spool files were removed while running; kept the records still readable and "
            "spool to a new segment",
            sink=self.sink,
            directory=self.directory,
            directory_recreated=recreated,
            kept_records=fresh.rows,
            lost_records=max(lost_rows, 0),
            lost_segments=lost_files,
        )

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
                    segment.pass_holes()
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
            _unlink_segment(path)

    def _write_ack(self, seq: int, offset: int) -> None:
        """Record the committed position in the older slot (no fsync: a stale marker only
        replays committed rows again)."""
        if self._ack_fd is None:
            return
        self._ack_generation += 1
        generation = self._ack_generation
        slot = _with_crc(ACK_SLOT, ACK_MAGIC, generation, seq, offset)
        try:
            pwrite_all(self._ack_fd, slot, (generation % 2) * ACK_SLOT.size)
        except OSError as exc:  # the rows are written; at worst they are replayed again
            event(
                "WARNING",
                "spool_marker_failed",
                "cannot record the committed position",
                directory=self.directory,
                error=str(exc),
            )

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
        self._metrics.spool_state(self.sink, self.pending_bytes, self.pending_batches)

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
                    _unlink_segment(segment.path)
                    self._segments.remove(segment)


def _read_file(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _pread_path(path: str, offset: int, size: int) -> bytes:
    """Up to ``size`` bytes of ``path`` from ``offset`` (fewer if the file is shorter)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return pread_all(fd, size, offset)
    finally:
        os.close(fd)


def _with_crc(layout: struct.Struct, *values: Any) -> bytes:
    """``values`` packed by ``layout``, whose last field (``I``) is the crc32 of the rest."""
    head = layout.pack(*values, 0)[:-4]
    return head + struct.pack("<I", zlib.crc32(head))


def _checked(layout: struct.Struct, data: bytes) -> tuple[Any, ...] | None:
    """The fields of a :func:`_with_crc` record, without the crc, if ``data`` is exactly one
    intact record; else None."""
    if len(data) != layout.size:
        return None
    *fields, crc = layout.unpack(data)
    return tuple(fields) if zlib.crc32(data[:-4]) == crc else None


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _unlink_segment(path: str) -> None:
    """A segment and its seal, the seal first: a crash in between leaves an unsealed segment
    (not checked), never a seal without its segment (which reads as a removed segment)."""
    _unlink(path + SEAL_SUFFIX)
    _unlink(path)


def _prepared_seal(path: str, seq: int, size: int) -> str | None:
    """The seal of segment ``path`` at ``size`` bytes, written and fsynced to a temporary file
    (the caller renames it into place and fsyncs the directory), or None if it cannot be
    written: that only leaves the segment unchecked."""
    tmp = path + SEAL_SUFFIX + ".tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            write_all(fd, _with_crc(SEAL, SEAL_MAGIC, seq, size))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        _unlink(tmp)
        return None
    return tmp


__all__ = ["Entry", "Spool", "decode_batch", "encode_batch", "frame", "scan"]
