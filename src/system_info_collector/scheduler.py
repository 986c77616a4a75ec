"""A drift-free ticker aligned to wall-clock multiples of the interval.

Slot ``n`` is due at ``start + n·interval`` on the monotonic clock, where ``start`` maps to a
wall-clock multiple of the interval, so deadlines never accumulate drift. A tick that runs past
the next slot is counted as an overrun; the missed slots are skipped, never burst-replayed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime


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
    ) -> None:
        """``wait(seconds)`` sleeps and returns True when the ticker must stop."""
        self.interval = interval
        self._wait = wait
        self._mono = monotonic
        self._wall = wall
        self._on_overrun = on_overrun

    def __iter__(self) -> Iterator[Tick]:
        interval = self.interval
        wall_now, mono_now = self._wall(), self._mono()
        first = math.floor(wall_now / interval) + 1
        base = mono_now + (first * interval - wall_now)  # monotonic time of slot `first`
        k = 0
        while True:
            deadline = base + k * interval
            delay = deadline - self._mono()
            if self._wait(max(delay, 0.0)):
                return
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
