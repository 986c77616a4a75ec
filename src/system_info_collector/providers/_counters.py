"""Counters that need two readings: deltas that restart from the new reading after a wrap or a
reset, per-second rates, saying once that a source is missing, and one reading for `check`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Generic, TypeVar

from system_info_collector.collector import Clock, Provider
from system_info_collector.logging import event
from system_info_collector.model import Sample

T = TypeVar("T")


def deltas(prev: Sequence[int], cur: Sequence[int]) -> list[int] | None:
    """``cur - prev`` per counter; None if any went backwards (wrap, reset, re-created device):
    the caller then starts again from ``cur`` instead of reporting a negative or huge rate."""
    out = [c - p for p, c in zip(prev, cur, strict=True)]
    return None if any(d < 0 for d in out) else out


def one_sample(provider: Provider) -> Sample:
    """The one sample of a single-record provider, read once for `check` (then closed)."""
    try:
        (sample,) = provider.collect()
    finally:
        provider.close()
    return sample


def say_missing(collector: str, path: str, reason: str, consequence: str) -> None:
    """The INFO, at start, that a source this kernel or mount does not have is not collected
    (the collector reports what it can; nothing repeats every tick)."""
    event(
        "INFO",
        "collector_source_missing",
        f"{collector}: {consequence}",
        collector=collector,
        path=path,
        reason=reason,
    )


class Previous(Generic[T]):
    """The previous reading of a provider's counters, per entity, and when it was taken."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._reading: dict[str, T] = {}
        self._time = 0.0

    def start(self, reading: Mapping[str, T]) -> None:
        self._reading, self._time = dict(reading), self._clock()

    def advance(self, reading: Mapping[str, T]) -> tuple[float, list[tuple[str, T, T]]]:
        """Seconds since the previous reading and ``(entity, previous, current)`` of the entities
        in both; ``reading`` becomes the previous one (entities that vanished drop out, new ones
        start from it)."""
        now = self._clock()
        elapsed, before = now - self._time, self._reading
        self._reading, self._time = dict(reading), now
        if elapsed <= 0:
            return elapsed, []
        return elapsed, [(k, before[k], v) for k, v in reading.items() if k in before]
