"""The ticker on a simulated clock: hours of ticks in milliseconds, no real sleeping."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime
from typing import Any

import pytest

from system_info_collector.agent import Agent
from system_info_collector.config import Settings
from system_info_collector.metrics import Metrics
from system_info_collector.scheduler import Tick, Ticker, step_threshold


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


def stepping_ticker(clock: SimClock, interval: float, steps: list[float]) -> Ticker:
    return Ticker(
        interval,
        wait=clock.wait,
        monotonic=clock.monotonic,
        wall=clock.wall,
        on_clock_step=steps.append,
    )


@pytest.mark.parametrize("step", [-30.0, -1.5, +0.6, +3600.0])
def test_a_wall_clock_step_re_anchors_the_timestamps(step: float) -> None:
    clock = SimClock(wall=1_000_000.0)
    steps: list[float] = []
    seen: list[Tick] = []
    for tick in stepping_ticker(clock, 1.0, steps):
        seen.append(tick)
        if len(seen) == 3:
            clock.offset += step  # NTP step / date -s / resume from suspend
        if len(seen) == 6:
            break
    assert steps == [pytest.approx(step)]
    before, after = seen[:3], seen[3:]
    assert [t.slot for t in before] == [1_000_001, 1_000_002, 1_000_003]
    # after the step every timestamp is the wall clock's slot again, one interval apart
    for t in after[1:]:
        assert t.ts.timestamp() == pytest.approx(clock_wall_at(clock, t.deadline), abs=1e-6)
    assert [b.slot - a.slot for a, b in itertools.pairwise(after)] == [1, 1]
    assert after[0].slot == math.floor(1_000_004 + step)  # the slot running at the step
    assert after[0].ts.timestamp() <= clock_wall_at(clock, after[0].deadline) + 1e-6


def clock_wall_at(clock: SimClock, mono: float) -> float:
    return mono + clock.offset


def test_slewing_and_jitter_below_the_threshold_do_not_re_anchor() -> None:
    clock = SimClock(wall=1_000_000.0)
    steps: list[float] = []
    ticks = []
    for tick in stepping_ticker(clock, 0.1, steps):
        ticks.append(tick)
        clock.offset += 0.0004 * (1 if len(ticks) % 2 else -1)  # ±0.4 ms between ticks
        if len(ticks) == 1000:
            break
    assert steps == [] and step_threshold(0.1) == 0.05 and step_threshold(10.0) == 1.0
    assert [t.slot for t in ticks] == list(range(ticks[0].slot, ticks[0].slot + 1000))


def test_the_agent_logs_and_counts_a_step(events: list[dict[str, Any]]) -> None:
    metrics = Metrics()
    agent = Agent(Settings(interval=1.0, collectors=()), [], [], metrics, host="h")
    agent._clock_stepped(-30.25)
    (e,) = [e for e in events if e.get("event") == "clock_stepped"]
    assert e["level"] == "WARNING" and e["step_seconds"] == -30.25 and e["direction"] == "backward"
    assert metrics.registry.get_sample_value("sic_clock_steps_total") == 1.0
