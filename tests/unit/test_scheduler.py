"""The ticker on a simulated clock: hours of ticks in milliseconds, no real sleeping."""

from __future__ import annotations

from datetime import UTC, datetime

from system_info_collector.scheduler import Tick, Ticker


class SimClock:
    def __init__(self, wall: float, mono: float = 5000.0) -> None:
        self.offset = wall - mono
        self.mono = mono

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> float:
        return self.mono + self.offset

    def wait(self, seconds: float) -> bool:
        self.mono += seconds
        return False


def take(ticker: Ticker, n: int, work: float = 0.0, clock: SimClock | None = None) -> list[Tick]:
    ticks = []
    for tick in ticker:
        ticks.append(tick)
        if clock is not None:
            clock.mono += work
        if len(ticks) == n:
            break
    return ticks


def test_ticks_align_to_wall_clock_multiples_without_drift_over_hours() -> None:
    clock = SimClock(wall=1_764_000_000.3)
    ticker = Ticker(0.5, wait=clock.wait, monotonic=clock.monotonic, wall=clock.wall)
    hours = 6
    ticks = take(ticker, int(hours * 3600 / 0.5), work=0.003, clock=clock)
    first = ticks[0]
    assert first.ts == datetime.fromtimestamp(1_764_000_000.5, UTC)
    for n, tick in enumerate(ticks):
        assert (
            tick.deadline == first.deadline + n * 0.5
            or abs(tick.deadline - (first.deadline + n * 0.5)) < 1e-6
        )
    last = ticks[-1]
    assert (last.ts - first.ts).total_seconds() == (len(ticks) - 1) * 0.5
    assert all(t.lateness < 1e-6 for t in ticks)  # each tick starts on its deadline


def test_an_overrun_skips_missed_slots_instead_of_bursting() -> None:
    clock = SimClock(wall=1_000.0)
    overruns: list[tuple[int, float]] = []
    ticker = Ticker(
        1.0,
        wait=clock.wait,
        monotonic=clock.monotonic,
        wall=clock.wall,
        on_overrun=lambda skipped, late: overruns.append((skipped, late)),
    )
    seen = []
    for tick in ticker:
        seen.append(tick.slot)
        if tick.slot == 1003:
            clock.mono += 2.5  # this tick takes 2.5 intervals
        if len(seen) == 5:
            break
    assert seen == [1001, 1002, 1003, 1006, 1007]
    assert overruns == [(2, 2.5)]


def test_stop_ends_the_iteration_promptly() -> None:
    clock = SimClock(wall=10.0)
    calls = []

    def wait(seconds: float) -> bool:
        calls.append(seconds)
        return len(calls) > 2

    ticks = list(Ticker(1.0, wait=wait, monotonic=clock.monotonic, wall=clock.wall))
    assert len(ticks) == 2


def test_sub_second_timestamps_are_exact_milliseconds() -> None:
    clock = SimClock(wall=1_764_000_000.05)
    ticks = take(Ticker(0.1, wait=clock.wait, monotonic=clock.monotonic, wall=clock.wall), 30)
    assert all(t.ts.microsecond % 1000 == 0 for t in ticks)
    assert [t.ts.microsecond // 1000 for t in ticks[:3]] == [100, 200, 300]
