"""The write-ahead spool on real files: order, trimming, restart, torn tails, the size limit."""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from system_info_collector.buffer import FallbackBuffer, MemoryBuffer, SpoolBuffer
from system_info_collector.config import RetrySettings
from system_info_collector.errors import TransientSinkError
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.sinks import CheckResult
from system_info_collector.spool import (
    Spool,
    decode_batch,
    encode_batch,
    frame,
    gaps,
    scan,
)
from system_info_collector.worker import SinkWorker
from tests.helpers import FIXTURES, poll

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def batch(i: int, n: int = 3) -> list[Record]:
    return [
        Record(
            "cpu", T0 + timedelta(seconds=i), "h", {"cpu": f"cpu{k}"}, {"usage_percent": i + k / 4}
        )
        for k in range(n)
    ]


def ticks(entries: Sequence[Any]) -> list[int]:
    return [int((e.records[0].ts - T0).total_seconds()) for e in entries]


def open_spool(path: Path, max_size: int = 1 << 20, **kw: Any) -> tuple[Spool, Metrics]:
    metrics = Metrics()
    spool = Spool(str(path), max_size=max_size, metrics=metrics, **kw)
    spool.open()
    return spool, metrics


def test_encoding_round_trips_records_exactly() -> None:
    memory = Record(
        "memory",
        T0 + timedelta(microseconds=123),
        "h",
        {},
        {"total_bytes": 2**62, "used_percent": 0.1},
    )
    records = [*batch(7), memory]
    assert decode_batch(encode_batch(records)) == records


def test_batches_come_back_oldest_first_and_commit_trims(tmp_path: Path) -> None:
    spool, metrics = open_spool(tmp_path, segment_size=4096)
    for i in range(100):
        spool.append(batch(i))
    assert spool.pending_batches == 100 and spool.pending_rows == 300
    assert len(list(tmp_path.glob("*.seg"))) > 3  # several segments
    got: list[int] = []
    while spool.pending_batches:
        entries = spool.peek(max_rows=30)
        assert sum(e.rows for e in entries) <= 30
        got += ticks(entries)
        spool.commit(entries)
    assert got == list(range(100))
    assert len(list(tmp_path.glob("*.seg"))) == 1  # only the active segment is left
    assert metrics.registry.get_sample_value("sic_spool_bytes", {"sink": "postgres"}) == 0


def test_restart_replays_only_what_was_not_committed(tmp_path: Path) -> None:
    spool, _ = open_spool(tmp_path, segment_size=4096)
    for i in range(40):
        spool.append(batch(i))
    spool.commit(spool.peek(max_rows=45))  # the first 15 batches
    del spool  # no close(): as after kill -9
    again, _ = open_spool(tmp_path)
    assert again.pending_batches == 25
    assert ticks(again.peek(max_rows=10_000)) == list(range(15, 40))
    again.append(batch(40))
    assert ticks(again.peek(max_rows=10_000))[-1] == 40


def test_a_segment_torn_at_any_byte_keeps_intact_records_and_never_stops_start(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    src = tmp_path / "src"
    spool, _ = open_spool(src)
    for i in range(4):
        spool.append(batch(i, n=1 + i % 2))  # entries of different sizes
    spool.commit(spool.peek(max_rows=1))  # the marker points inside the segment: after entry 0
    spool.close()
    [segment] = [p for p in src.glob("*.seg") if p.stat().st_size]
    data = segment.read_bytes()
    marker = (src / "committed").read_bytes()
    ends = [end for _, end, _ in scan(data)[0]]
    assert len(ends) == 4 and ends[-1] == len(data)
    for size in range(len(data) + 1):  # cut at every byte, the headers included
        work = tmp_path / f"cut{size}"
        work.mkdir()
        (work / segment.name).write_bytes(data[:size])
        (work / "committed").write_bytes(marker)
        events.clear()
        restored, _ = open_spool(work)  # never raises
        intact = sum(1 for end in ends if end <= size)
        good = ends[intact - 1] if intact else 0
        assert ticks(restored.peek(max_rows=100)) == list(range(1, intact)), size
        torn = [e for e in events if e.get("event") == "spool_torn_tail"]
        if good == size:
            assert not torn and not list(work.glob("*.torn-*")), size
        else:
            assert torn and torn[0]["level"] == "ERROR", size
            assert torn[0]["damaged_bytes"] == size - good
            [aside] = list(work.glob("*.torn-*"))
            assert aside.read_bytes() == data[good:size]
        restored.append(batch(9))  # and it keeps working, after the intact records
        assert ticks(restored.peek(max_rows=100)) == [*range(1, intact), 9], size
        restored.close()


def two_markers(tmp_path: Path) -> tuple[Path, bytes, bytes]:
    """A spool of batches 0..9 with 3, then 6 committed; the marker bytes after each commit."""
    spool, _ = open_spool(tmp_path, segment_size=4096)
    for i in range(10):
        spool.append(batch(i))
    spool.commit(spool.peek(max_rows=9))
    after_3 = (tmp_path / "committed").read_bytes()
    spool.commit(spool.peek(max_rows=9))
    after_6 = (tmp_path / "committed").read_bytes()
    del spool  # as after kill -9
    return tmp_path, after_3, after_6


def test_the_committed_marker_torn_at_any_byte_only_replays_more(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    directory, after_3, after_6 = two_markers(tmp_path / "spool")
    # A power cut tears the newest write of the marker (one slot) at any byte, or cuts the file.
    slots = range(0, len(after_6), 32)
    newest = next(i for i in slots if after_6[i : i + 32] != after_3[i : i + 32])
    candidates = [after_6[:size] for size in range(len(after_6) + 1)]
    for k in range(1, 32):  # the newest slot half old, half new, either way round
        candidates.append(after_6[: newest + k] + after_3[newest + k :])
        candidates.append(after_3[: newest + k] + after_6[newest + k :])
    for raw in candidates:
        (directory / "committed").write_bytes(raw)
        events.clear()
        again, _ = open_spool(directory)
        got = ticks(again.peek(max_rows=10_000))
        assert got in (list(range(6, 10)), list(range(3, 10)), list(range(10))), raw
        if len(raw) >= 64 or raw[:32] == after_6[:32]:  # a whole slot survived: no error
            assert got != list(range(10)), raw
            assert not [e for e in events if e["level"] == "ERROR"], raw
        elif raw:  # no intact slot: the marker is set aside with an ERROR, everything replayed
            assert [e for e in events if e.get("event") == "spool_marker_damaged"], raw
            assert (directory / "committed").read_bytes() == b""
        again.close()
        again, _ = open_spool(directory)  # as it was: nothing was committed meanwhile
        assert ticks(again.peek(max_rows=10_000)) == got
        del again


@pytest.mark.parametrize(
    "garbage",
    [b"\x00" * 64, b"not a marker", b"\xff" * 7, b"99999999 0\n", b"2 40\n"],  # last two:
    # plausible text (the marker format before the slots): must not be trusted blindly
)
def test_a_garbage_marker_is_set_aside_with_an_error_and_everything_is_replayed(
    tmp_path: Path, events: list[dict[str, Any]], garbage: bytes
) -> None:
    directory, _, _ = two_markers(tmp_path / "spool")
    (directory / "committed").write_bytes(garbage)
    again, _ = open_spool(directory)
    assert ticks(again.peek(max_rows=10_000)) == list(range(10))  # replay all: idempotent
    [damaged] = [e for e in events if e.get("event") == "spool_marker_damaged"]
    assert damaged["level"] == "ERROR"
    assert Path(damaged["moved_to"]).read_bytes() == garbage
    entries = again.peek(max_rows=3)
    again.commit(entries)  # and the new marker works
    del again
    third, _ = open_spool(directory)
    assert ticks(third.peek(max_rows=10_000)) == list(range(1, 10))


def test_batches_not_kept_in_memory_are_read_back_from_disk_in_order(tmp_path: Path) -> None:
    spool, _ = open_spool(tmp_path, segment_size=4096)
    spool.cache_limit = 10  # only the newest ~3 batches stay in memory
    for i in range(40):
        spool.append(batch(i))
    got: list[int] = []
    while spool.pending_batches:
        entries = spool.peek(max_rows=12)
        got += ticks(entries)
        spool.commit(entries)
        if len(got) == 20:
            for i in range(40, 45):
                spool.append(batch(i))
    assert got == list(range(45))
    assert spool._cache_rows <= 10


def test_the_scanner_resynchronises_on_the_next_intact_entry_whatever_byte_is_damaged() -> None:
    frames = [frame(encode_batch(batch(i, n=1 + i % 3)), 1 + i % 3) for i in range(6)]
    data = b"".join(frames)
    bounds = [(sum(map(len, frames[:i])), sum(map(len, frames[: i + 1]))) for i in range(6)]
    victim_start, victim_end = bounds[2]
    for pos in range(victim_start, victim_end):  # header fields, CRC and payload alike
        for flip in (0x01, 0xFF):
            raw = bytearray(data)
            raw[pos] ^= flip
            entries, damaged = scan(bytes(raw))
            assert [(o, e) for o, e, _ in entries] == bounds[:2] + bounds[3:], pos
            assert damaged == [(victim_start, victim_end)], pos
    # zeros in the middle (a truncated file extended by later writes), garbage at the end
    holed = data[:victim_start] + b"\0" * 100 + data[victim_end:] + b"SICs" + b"x" * 10
    entries, damaged = scan(holed)
    assert len(entries) == 5
    assert damaged == [(victim_start, victim_start + 100), (len(holed) - 14, len(holed))]
    assert gaps(0, 10, [(2, 4), (4, 6)]) == [(0, 2), (6, 10)]


def damaged_spool(tmp_path: Path, at: float, n: int = 60) -> tuple[Path, list[int]]:
    """A closed spool of batches 0..n-1 (one segment) with one byte flipped ``at`` (0..1) into
    the segment; returns the directory and the batches that must survive."""
    spool, _ = open_spool(tmp_path)
    for i in range(n):
        spool.append(batch(i, n=1 + i % 3))
    spool.close()
    [segment] = list(tmp_path.glob("*.seg"))
    raw = bytearray(segment.read_bytes())
    pos = int(len(raw) * at)
    entries, _ = scan(bytes(raw))
    hit = next(i for i, (off, end, _) in enumerate(entries) if off <= pos < end)
    raw[pos] ^= 0x5A
    segment.write_bytes(bytes(raw))
    return tmp_path, [i for i in range(n) if i != hit]


@pytest.mark.parametrize("at", [0.1, 0.3, 0.97])
def test_a_flipped_byte_at_start_keeps_every_intact_entry_before_and_after_it(
    tmp_path: Path, events: list[dict[str, Any]], at: float
) -> None:
    directory, survivors = damaged_spool(tmp_path, at)
    before = {p.name: p.read_bytes() for p in directory.glob("*.seg")}
    again, metrics = open_spool(directory)
    assert ticks(again.peek(max_rows=10_000)) == survivors
    [damage] = [e for e in events if e.get("event") in ("spool_damaged", "spool_torn_tail")]
    assert damage["level"] == "ERROR"
    assert damage["intact_entries"] == len(survivors)
    assert damage["intact_records"] == sum(1 + i % 3 for i in survivors)
    aside = Path(damage["moved_to"]).read_bytes()
    assert len(aside) == damage["damaged_bytes"] > 0
    assert aside in next(iter(before.values()))  # exactly the damaged entry's bytes
    assert metrics.registry.get_sample_value(
        "sic_spool_damaged_bytes_total", {"sink": "postgres"}
    ) == len(aside)
    assert (
        metrics.registry.get_sample_value("sic_spool_damage_events_total", {"sink": "postgres"})
        == 1
    )
    first = again.peek(max_rows=5)
    again.commit(first)  # and the rewritten segment works on
    del again  # as after kill -9: the damage is gone from the segment, not found twice
    events.clear()
    third, _ = open_spool(directory)
    assert ticks(third.peek(max_rows=10_000)) == survivors[len(first) :]
    assert not [e for e in events if e["level"] == "ERROR"]


def test_a_rewrite_cut_short_by_kill_9_leaves_the_original_and_no_litter(tmp_path: Path) -> None:
    directory, survivors = damaged_spool(tmp_path, 0.3)
    [segment] = list(directory.glob("*.seg"))
    (directory / (segment.name + ".tmp")).write_bytes(segment.read_bytes()[:100])  # half-written
    again, _ = open_spool(directory)
    assert ticks(again.peek(max_rows=10_000)) == survivors
    assert not list(directory.glob("*.tmp"))


def test_damage_after_the_committed_position_replays_nothing_that_was_committed(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    spool, _ = open_spool(tmp_path)
    for i in range(30):
        spool.append(batch(i))
    spool.commit(spool.peek(max_rows=30))  # batches 0..9
    del spool  # kill -9: the marker points into the segment
    [segment] = list(tmp_path.glob("*.seg"))
    raw = bytearray(segment.read_bytes())
    entries, _ = scan(bytes(raw))
    raw[entries[20][0] + 20] ^= 0xFF  # batch 20's payload
    segment.write_bytes(bytes(raw))
    again, _ = open_spool(tmp_path)
    assert ticks(again.peek(max_rows=10_000)) == [*range(10, 20), *range(21, 30)]
    del again  # the marker was reset with the rewrite: a second start agrees
    third, _ = open_spool(tmp_path)
    assert ticks(third.peek(max_rows=10_000)) == [*range(10, 20), *range(21, 30)]


def drain(spool: Spool, max_rows: int = 12) -> list[int]:
    got: list[int] = []
    while spool.pending_batches:
        entries = spool.peek(max_rows=max_rows)
        if not entries:
            break
        got += ticks(entries)
        spool.commit(entries)
    return got


@pytest.mark.parametrize("at", [0.1, 0.3])
def test_a_byte_flipped_while_running_is_set_aside_and_draining_goes_on(
    tmp_path: Path, events: list[dict[str, Any]], at: float
) -> None:
    spool, metrics = open_spool(tmp_path)
    spool.cache_limit = 0  # read everything back from disk
    for i in range(60):
        spool.append(batch(i))
    [segment] = list(tmp_path.glob("*.seg"))
    raw = bytearray(segment.read_bytes())
    entries, _ = scan(bytes(raw))
    pos = int(len(raw) * at)
    hit = next(i for i, (off, end, _) in enumerate(entries) if off <= pos < end)
    raw[pos] ^= 0x01
    with open(segment, "r+b") as handle:  # in place, as a bad disk would
        handle.seek(pos)
        handle.write(raw[pos : pos + 1])
    assert drain(spool) == [i for i in range(60) if i != hit]
    assert spool.pending_batches == 0 and spool.pending_rows == 0
    [damage] = [e for e in events if e.get("event") == "spool_damaged"]
    assert damage["level"] == "ERROR" and damage["lost_records"] == 3
    assert (
        damage["lost_entries"] == 1 and damage["damaged_bytes"] == entries[hit][1] - entries[hit][0]
    )
    assert (
        metrics.registry.get_sample_value("sic_spool_damaged_bytes_total", {"sink": "postgres"})
        == damage["damaged_bytes"]
    )
    assert Path(damage["moved_to"]).read_bytes() == bytes(raw[entries[hit][0] : entries[hit][1]])
    spool.append(batch(99))
    assert drain(spool) == [99]


def test_a_segment_truncated_to_zero_while_running_never_stalls_the_drain(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    spool, metrics = open_spool(tmp_path, segment_size=4096)
    spool.cache_limit = 0
    for i in range(60):
        spool.append(batch(i))
    segments = sorted(tmp_path.glob("*.seg"))
    assert len(segments) > 2
    os.truncate(segments[0], 0)  # the oldest
    os.truncate(segments[-1], 0)  # and the active one, which goes on being appended to
    for i in range(60, 65):
        spool.append(batch(i))
    got = drain(spool)
    lost_old = {e["lost_records"] for e in events if e.get("event") == "spool_damaged"}
    assert got[-5:] == list(range(60, 65))  # appended after the truncation: kept
    assert got == sorted(got) and 0 not in got and len(got) < 65
    assert sum(e["lost_records"] for e in events if e.get("event") == "spool_damaged") == 3 * (
        65 - len(got)
    ), lost_old
    assert spool.pending_batches == 0
    assert (
        metrics.registry.get_sample_value("sic_spool_damage_events_total", {"sink": "postgres"})
        or 0
    ) >= 2


def test_a_removed_spool_directory_is_recreated_and_nothing_pending_is_lost(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    directory = tmp_path / "spool"
    spool, _ = open_spool(directory)
    for i in range(10):
        spool.append(batch(i))
    spool.commit(spool.peek(max_rows=6))  # 0, 1
    shutil.rmtree(directory)
    spool.verify()
    [removed] = [e for e in events if e.get("event") == "spool_files_removed"]
    assert removed["level"] == "ERROR" and removed["directory_recreated"] is True
    assert removed["kept_records"] == 24 and removed["lost_records"] == 0
    spool.append(batch(10))
    del spool  # kill -9: what was pending is on disk again
    again, _ = open_spool(directory)
    assert ticks(again.peek(max_rows=10_000)) == list(range(2, 11))


@pytest.mark.parametrize("sink", ["postgres", "remote_write"])
def test_over_the_size_limit_the_oldest_are_dropped_with_an_error_and_a_count(
    tmp_path: Path, events: list[dict[str, Any]], sink: str
) -> None:
    spool, metrics = open_spool(tmp_path, max_size=20_000, segment_size=4096, sink=sink)
    metrics.prepare(["postgres", "remote_write"], [])
    for i in range(200):
        spool.append(batch(i))
    on_disk = sum(p.stat().st_size for p in tmp_path.glob("*.seg"))
    assert on_disk <= 20_000
    got = ticks(spool.peek(max_rows=10_000))
    assert got[-1] == 199 and got == list(range(got[0], 200))  # the newest, contiguous

    def dropped(name: str) -> float | None:
        return metrics.registry.get_sample_value("sic_spool_dropped_records_total", {"sink": name})

    assert dropped(sink) == 3 * got[0]  # counted for the spool's own sink, not another's
    assert dropped({"postgres": "remote_write", "remote_write": "postgres"}[sink]) == 0
    [overflow] = {e["sink"] for e in events if e.get("event") == "spool_overflow"}
    assert overflow == sink
    assert [e for e in events if e.get("event") == "spool_overflow" and e["level"] == "ERROR"]


class FlakySink:
    name = "flaky"

    def __init__(self) -> None:
        self.rows: list[Record] = []
        self.down = threading.Event()

    def open(self) -> None:
        pass

    def write(self, records: Sequence[Record]) -> None:
        if self.down.is_set():
            raise TransientSinkError("server down")
        self.rows.extend(records)

    def close(self) -> None:
        pass

    def check(self) -> list[CheckResult]:
        return []


def spooled_worker(sink: FlakySink, spool: Spool, metrics: Metrics) -> SinkWorker:
    memory = MemoryBuffer(sink.name, max_bytes=1 << 20, metrics=metrics)
    buffer = FallbackBuffer(SpoolBuffer(sink.name, spool), memory)
    return SinkWorker(
        sink,
        buffer,
        retry=RetrySettings(3, 0.001, 0.01),
        metrics=metrics,
        batch_max_rows=50,
        flush_interval=0.01,
    )


def test_worker_keeps_the_outage_on_disk_not_in_memory_and_drains_in_order(
    tmp_path: Path,
) -> None:
    sink = FlakySink()
    metrics = Metrics()
    spool = Spool(str(tmp_path), max_size=1 << 20, metrics=metrics)
    worker = spooled_worker(sink, spool, metrics)
    worker.start()
    sink.down.set()
    for i in range(30):
        worker.submit(batch(i))
    assert worker.pending_records == 90
    assert worker.buffer.volatile == 0  # nothing in memory: it is all in the spool
    poll(lambda: worker.degraded, timeout=5, what="degraded")
    assert not spool._dirty, "a failed attempt leaves the spool fsync'ed"
    sink.down.clear()
    poll(lambda: worker.pending_records == 0, timeout=5, what="drained")
    assert [int((r.ts - T0).total_seconds()) for r in sink.rows[::3]] == list(range(30))
    assert worker.close(2.0)


def test_worker_falls_back_to_memory_when_the_spool_cannot_be_written(tmp_path: Path) -> None:
    sink = FlakySink()
    metrics = Metrics()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")  # the spool directory cannot be created here
    spool = Spool(str(blocker / "spool"), max_size=1 << 20, metrics=metrics)
    worker = spooled_worker(sink, spool, metrics)
    worker.start()  # never prevents start
    assert worker.buffer_problem and "cannot open the spool" in worker.buffer_problem
    for i in range(5):
        worker.submit(batch(i))
    poll(lambda: len(sink.rows) == 15, timeout=5, what="written from memory")
    assert worker.close(2.0)
    assert os.path.isfile(blocker)


def test_a_damaged_entry_never_stalls_the_worker(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    """The bug this guards against: peek() returned [] for a damaged head entry and the worker
    took the empty batch as written, so the sink never wrote again."""
    sink = FlakySink()
    sink.down.set()
    metrics = Metrics()
    spool = Spool(str(tmp_path), max_size=1 << 20, metrics=metrics)
    spool.cache_limit = 0
    worker = spooled_worker(sink, spool, metrics)
    worker.start()
    for i in range(30):
        worker.submit(batch(i))
    [segment] = [p for p in tmp_path.glob("*.seg") if p.stat().st_size]
    with open(segment, "r+b") as handle:  # the head entry's payload
        handle.seek(30)
        byte = handle.read(1)
        handle.seek(30)
        handle.write(bytes([byte[0] ^ 0xFF]))
    # A batch the worker read just before the flip may still be in flight; the damage is found
    # by a later read, after that attempt failed: only then can the sink take writes again.
    poll(
        lambda: [e for e in events if e.get("event") == "spool_damaged"],
        timeout=5,
        what="the damaged head entry found while draining",
    )
    sink.down.clear()
    poll(lambda: worker.pending_records == 0, timeout=5, what="drained past the damage")
    assert [int((r.ts - T0).total_seconds()) for r in sink.rows[::3]] == list(range(1, 30))
    # The counter is raised after the sink's write returns, which can be after the last batch
    # left the spool (pending_records == 0): wait for it, with a deadline.
    poll(
        lambda: value_of(metrics, "sic_sink_rows_written_total", sink="flaky") == 87,
        timeout=5,
        what="rows_written counted",
    )
    assert [e for e in events if e.get("event") == "spool_damaged"]
    assert worker.close(2.0)


def value_of(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_spool_written_by_the_previous_release_is_drained(tmp_path: Path) -> None:
    """tests/fixtures/spool/previous-release: written by the release before the Buffer
    protocol (40 batches in 3 segments of 4 KiB, batches 0-4 committed, no close: kill -9)."""
    directory = tmp_path / "spool"
    shutil.copytree(FIXTURES / "spool" / "previous-release", directory)
    sink = FlakySink()
    metrics = Metrics()
    worker = spooled_worker(sink, Spool(str(directory), max_size=1 << 20, metrics=metrics), metrics)
    worker.start()
    poll(lambda: len(sink.rows) == 105, timeout=5, what="the old spool drained")
    assert sink.rows == [r for i in range(5, 40) for r in batch(i)]
    assert worker.close(2.0)
    assert not [p for p in directory.glob("*.seg") if p.stat().st_size]


# -- seals: what a segment's own bytes cannot show ---------------------------------------------
def sealed_spool(path: Path, batches: int = 60) -> tuple[list[Path], int]:
    """A stopped spool of several rotated (sealed) segments and ``batches`` pending batches."""
    spool, _ = open_spool(path, segment_size=2048)
    for i in range(batches):
        spool.append(batch(i))
    spool.sync()  # the worker's fsync: rotated segments get their seals
    spool.close()
    segments = sorted(path.glob("*.seg"))
    assert len(segments) >= 3 and len(list(path.glob("*.seg.seal"))) == len(segments) - 1
    return segments, batches


def drained(spool: Spool) -> list[int]:
    got: list[int] = []
    while spool.pending_batches:
        entries = spool.peek(max_rows=1000)
        got += ticks(entries)
        spool.commit(entries)
    return got


def test_a_sealed_segment_cut_at_an_entry_boundary_is_reported_and_the_rest_replayed(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    segments, total = sealed_spool(tmp_path)
    first = segments[0]
    data = first.read_bytes()
    entries, damaged = scan(data)
    assert not damaged and len(entries) >= 3
    cut = entries[-2][1]  # after the third-last entry: the last two entries are gone whole
    lost = len(entries) - len([e for e in entries if e[1] <= cut])
    os.truncate(first, cut)
    assert scan(first.read_bytes())[1] == []  # nothing in the bytes shows the cut

    spool, metrics = open_spool(tmp_path, segment_size=2048)
    (report,) = [e for e in events if e.get("event") == "spool_segment_truncated"]
    assert report["level"] == "ERROR" and report["damaged_bytes"] == len(data) - cut
    assert report["segment"] == str(first)
    assert metrics.spool_damage_events.labels("postgres")._value.get() == 1
    got = drained(spool)
    assert len(got) == total - lost and got == sorted(got)  # every intact batch, in order
    spool.close()
    events.clear()
    spool, _ = open_spool(tmp_path, segment_size=2048)  # said once, not at every start
    assert not [e for e in events if e.get("level") == "ERROR"]
    spool.close()


def test_a_sealed_segment_removed_while_stopped_is_reported(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    segments, total = sealed_spool(tmp_path)
    lost = len(scan(segments[1].read_bytes())[0])
    segments[1].unlink()
    spool, metrics = open_spool(tmp_path, segment_size=2048)
    (report,) = [e for e in events if e.get("event") == "spool_segment_removed"]
    assert report["level"] == "ERROR" and report["segment"] == str(segments[1])
    assert metrics.spool_damage_events.labels("postgres")._value.get() == 1
    assert len(drained(spool)) == total - lost
    spool.close()


def test_a_damaged_seal_is_set_aside_and_its_segment_read_as_usual(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    segments, total = sealed_spool(tmp_path)
    seal = Path(f"{segments[0]}.seal")
    raw = bytearray(seal.read_bytes())
    raw[9] ^= 0x01  # a flipped bit in the sealed segment number
    seal.write_bytes(bytes(raw))
    spool, _ = open_spool(tmp_path, segment_size=2048)
    (report,) = [e for e in events if e.get("level") == "ERROR"]
    assert report["event"] == "spool_seal_damaged"
    assert list(tmp_path.glob("*.seal.torn-*")) and not seal.exists()
    assert drained(spool) == list(range(total))
    spool.close()


def test_seals_never_raise_a_false_alarm(tmp_path: Path, events: list[dict[str, Any]]) -> None:
    """Commits delete sealed segments, the size limit drops them, a restart replays, a spool
    of the previous release has no seals: no ERROR, nothing lost."""
    spool, _ = open_spool(tmp_path, segment_size=2048)
    for i in range(60):
        spool.append(batch(i))
    spool.sync()
    entries = spool.peek(max_rows=90)
    spool.commit(entries)  # the first sealed segments are deleted with their seals
    spool.close()
    spool, _ = open_spool(tmp_path, segment_size=2048)
    assert drained(spool) == list(range(30, 60))
    spool.close()
    small = tmp_path / "small"
    spool, _ = open_spool(small, max_size=8192, segment_size=2048)
    for i in range(200):  # the oldest segments are dropped (an ERROR of their own)
        spool.append(batch(i))
        if i % 7 == 0:
            spool.sync()
    spool.close()
    old = tmp_path / "old"
    sealed_spool(old)
    for seal in old.glob("*.seal"):
        seal.unlink()  # as the previous release left it
    events.clear()
    for directory in (small, old):
        spool, _ = open_spool(directory, max_size=8192 if directory == small else 1 << 20)
        assert not [e for e in events if e.get("level") == "ERROR"], events
        assert drained(spool)
        spool.close()
    assert not list(small.glob("*.seal")) or all(
        Path(str(s)[: -len(".seal")]).exists() for s in small.glob("*.seal")
    )


# Directories copied at each rename and unlink while a test records (an audit hook cannot be
# removed, so it is added once and does nothing unless a test sets ``_CRASH_DIR``).
_CRASH_DIR: list[Path] = []
_CRASH_COPIES: list[Path] = []


def _copy_before_each_step(event: str, args: tuple[Any, ...]) -> None:
    if _CRASH_DIR and event in ("os.rename", "os.remove"):
        source = _CRASH_DIR[0]
        copy = source.with_name(f"crash-{len(_CRASH_COPIES):03d}")
        _CRASH_DIR.clear()  # copytree makes no renames, but never recurse
        try:
            shutil.copytree(source, copy)
        finally:
            _CRASH_DIR.append(source)
        _CRASH_COPIES.append(copy)


sys.addaudithook(_copy_before_each_step)


def test_a_crash_while_sealing_a_segment_the_size_limit_dropped_is_no_false_alarm(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    """The worker seals the segments rotated since its last fsync while the sampling thread's
    size limit may drop them: at no step of the sealing may the directory hold a seal whose
    segment is gone, or a crash right then reads as a removal (an ERROR) at the next start."""
    directory = tmp_path / "spool"
    spool, _ = open_spool(directory, max_size=8192, segment_size=2048)
    i = 0
    while True:  # rotate and drop segments, with no fsync (no seal) in between
        spool.append(batch(i))
        i += 1
        if [e for e in events if e.get("event") == "spool_overflow"]:
            break
    events.clear()
    _CRASH_COPIES.clear()
    _CRASH_DIR.append(directory)
    try:
        spool.sync()  # fsyncs, then seals the rotated segments: dropped ones included
    finally:
        _CRASH_DIR.clear()
    spool.close()
    assert len(list(directory.glob("*.seal"))) >= 1  # the segments still there were sealed
    crashes = [*_CRASH_COPIES, directory]  # before each rename or unlink, and at the end
    assert len(crashes) >= 3
    for crash in crashes:
        events.clear()
        restarted, _ = open_spool(crash, max_size=8192, segment_size=2048)
        assert not [e for e in events if e.get("level") == "ERROR"], (crash.name, events)
        assert drained(restarted)
        restarted.close()
