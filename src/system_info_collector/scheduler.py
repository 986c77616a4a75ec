"""A drift-free ticker aligned to wall-clock multiples of the interval, re-anchored on a step.

Slot ``n`` is due at ``start + n·interval`` on the monotonic clock, where ``start`` maps to a
wall-clock multiple of the interval, so deadlines never accumulate drift. A tick that runs past
the next slot is counted as an overrun; the missed slots are skipped, never burst-replayed.

The mapping from monotonic to wall time is taken once and then checked at every tick: when the
wall clock has moved away from it by more than :func:`step_threshold` (an NTP step, a manual
``date -s``, a resume from suspend -- the monotonic clock stops while suspended), the ticker
calls ``on_clock_step(seconds)`` and re-anchors: the tick runs at once for the wall-clock slot
now running (no gap; after a backward step slots repeat, as the wall clock does), so
timestamps follow the wall clock again instead of carrying the skew for the rest of the
process's life. Slow NTP slewing stays far below the threshold.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

MAX_STEP_THRESHOLD = 1.0  # seconds


def step_threshold(interval: float) -> float:
    """A wall-clock jump larger than this re-anchors: half an interval (a timestamp off by
    more would name the wrong slot), at most 1 s."""
    return min(MAX_STEP_THRESHOLD, interval / 2)


@dataclass(frozen=True, slots=True)
class Tick:
    slot: int  # wall-clock slot number: ts == slot * interval seconds after the epoch
    ts: datetime  # scheduled wall time, UTC, millisecond precision
    deadline: float  # scheduled monotonic time
    lateness: float  # how late the tick started, seconds


class Ticker:
    def __init__(
        self,
        interval: float,
        *,
        wait: Callable[[float], bool],
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        on_overrun: Callable[[int, float], None] | None = None,
        on_clock_step: Callable[[float], None] | None = None,
    ) -> None:
        """``wait(seconds)`` sleeps and returns True when the ticker must stop."""
        self.interval = interval
        self._wait = wait
        self._mono = monotonic
        self._wall = wall
        self._on_overrun = on_overrun
        self._on_clock_step = on_clock_step
        self.threshold = step_threshold(interval)

    def _anchor(self, *, current: bool = False) -> tuple[int, float]:
        """The next wall-clock slot (``current``: the one now running) and its monotonic time."""
        wall_now, mono_now = self._wall(), self._mono()
        first = math.floor(wall_now / self.interval) + (0 if current else 1)
        return first, mono_now + (first * self.interval - wall_now)

    def __iter__(self) -> Iterator[Tick]:
        interval = self.interval
        first, base = self._anchor()
        k = 0
        while True:
            deadline = base + k * interval
            delay = deadline - self._mono()
            if self._wait(max(delay, 0.0)):
                return
            mono_now, wall_now = self._mono(), self._wall()
            step = wall_now - (first * interval + (mono_now - base))
            if abs(step) > self.threshold:
                if self._on_clock_step is not None:
                    self._on_clock_step(step)
                first, base = self._anchor(current=True)  # that slot's tick runs now: no gap
                k = 0
                continue
            slot = first + k
            ts = datetime.fromtimestamp(round(slot * interval, 3), UTC)
            yield Tick(slot, ts, deadline, max(0.0, self._mono() - deadline))
            now = self._mono()
            k += 1
            if now >= base + k * interval:
                late_k = math.floor((now - base) / interval) + 1
                skipped = late_k - k
                if self._on_overrun is not None:
                    self._on_overrun(skipped, now - deadline)
                k = late_k
