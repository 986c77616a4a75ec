"""The write-ahead spool on real files: order, trimming, restart, torn tails, the size limit."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from system_info_collector.config import RetrySettings
from system_info_collector.errors import TransientSinkError
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.sinks import CheckResult
from system_info_collector.spool import (
    Spool,
    SpoolWorker,
    decode_batch,
    encode_batch,
    scan,
)
from tests.helpers import poll

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
    memory = Record("memory", T0 + timedelta(microseconds=123), "h", {},
                    {"total_bytes": 2**62, "used_percent": 0.1})  # fmt: skip
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
    assert metrics.registry.get_sample_value("sic_spool_bytes") == 0


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


def test_garbage_in_a_segment_is_set_aside_and_later_segments_survive(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    spool, _ = open_spool(tmp_path, segment_size=4096)
    for i in range(60):
        spool.append(batch(i))
    spool.close()
    first = sorted(tmp_path.glob("*.seg"))[0]
    raw = bytearray(first.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # a flipped bit in the middle: CRC mismatch
    first.write_bytes(bytes(raw))
    again, _ = open_spool(tmp_path)
    got = ticks(again.peek(max_rows=10_000))
    assert got[0] == 0 and got[-1] == 59 and len(got) < 60
    assert got == sorted(got)
    assert [e for e in events if e.get("event") == "spool_torn_tail"]


def test_over_the_size_limit_the_oldest_are_dropped_with_an_error_and_a_count(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    spool, metrics = open_spool(tmp_path, max_size=20_000, segment_size=4096)
    for i in range(200):
        spool.append(batch(i))
    on_disk = sum(p.stat().st_size for p in tmp_path.glob("*.seg"))
    assert on_disk <= 20_000
    got = ticks(spool.peek(max_rows=10_000))
    assert got[-1] == 199 and got == list(range(got[0], 200))  # the newest, contiguous
    dropped = metrics.registry.get_sample_value("sic_spool_dropped_records_total")
    assert dropped == 3 * got[0]
    assert [e for e in events if e.get("event") == "spool_overflow" and e["level"] == "ERROR"]


class FlakySink:
    name = "flaky"
    spool_dir = ""

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


def test_worker_keeps_the_outage_on_disk_not_in_memory_and_drains_in_order(
    tmp_path: Path,
) -> None:
    sink = FlakySink()
    metrics = Metrics()
    spool = Spool(str(tmp_path), max_size=1 << 20, metrics=metrics)
    worker = SpoolWorker(sink, spool=spool, retry=RetrySettings(3, 0.001, 0.01), metrics=metrics,
                         batch_max_rows=50, flush_interval=0.01)  # fmt: skip
    worker.start()
    sink.down.set()
    for i in range(30):
        worker.submit(batch(i))
    assert worker.pending_records == 90
    assert worker._pending_records == 0  # nothing in memory: it is all in the spool
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
    worker = SpoolWorker(sink, spool=spool, retry=RetrySettings(3, 0.001, 0.01), metrics=metrics,
                         batch_max_rows=50, flush_interval=0.01)  # fmt: skip
    worker.start()  # never prevents start
    for i in range(5):
        worker.submit(batch(i))
    poll(lambda: len(sink.rows) == 15, timeout=5, what="written from memory")
    assert worker.close(2.0)
    assert os.path.isfile(blocker)
