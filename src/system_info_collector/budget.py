"""The overhead budget: the agent's own CPU time per collector, and stretched intervals.

The collect path measures each provider's ``collect()`` in CPU time of the sampling thread
(``time.thread_time``); the sentinel readings of adaptive sampling are charged as ``adaptive``.
The rest of a tick (validation, stamping, hand-off to the sinks) is shared among the
collectors by their records. Every ``window`` seconds (``SIC_OVERHEAD_WINDOW``) the *whole
process's* CPU time over the window (``time.process_time``: sink threads and ``/metrics``
included) is compared with the budget (``SIC_OVERHEAD_BUDGET``, % of one core), and shared
among the collectors in proportion to what they were measured to cost:

* over budget: the costliest collector's *stretch* (a whole multiple of its interval, base and
  burst alike) doubles, then again the costliest, until the projected total fits or every
  collector is at ``MAX_STRETCH`` -- each change logged ``collector_backoff`` with the figures;
* well under budget (below 70 % of it, projected with the stretch undone): a stretched collector
  is restored one step, the costliest first, logged ``collector_restored``.

Bursts are measured like any other sample, so they count against the budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from system_info_collector.logging import event

MAX_STRETCH = 64  # never sample a collector less often than 64 times its interval
RESTORE_BELOW = 0.7  # restore when the projected total is below this share of the budget


@dataclass(slots=True)
class Budget:
    budget_percent: float  # % of one core; 0 = no budget
    window: float  # seconds
    intervals: Mapping[str, float]  # each collector's configured interval, seconds
    monotonic: Callable[[], float]
    process_time: Callable[[], float] = time.process_time
    stretch: dict[str, int] = field(default_factory=dict)
    _spent: dict[str, float] = field(default_factory=dict)
    _runs: dict[str, int] = field(default_factory=dict)
    _per_run: dict[str, float] = field(default_factory=dict)  # CPU seconds per sample
    _since: float | None = None
    _cpu_since: float = 0.0

    def __post_init__(self) -> None:
        self.stretch = {name: 1 for name in self.intervals}

    def charge(self, costs: Mapping[str, float]) -> None:
        """CPU seconds each collector spent on one sample (one call: one sample of each)."""
        for name, seconds in costs.items():
            self._spent[name] = self._spent.get(name, 0.0) + seconds
            self._runs[name] = self._runs.get(name, 0) + 1

    def evaluate(self) -> list[str]:
        """At the end of each window: adjust the stretches; returns the collectors changed."""
        now = self.monotonic()
        if self._since is None:
            self._since, self._cpu_since = now, self.process_time()
            return []
        elapsed = now - self._since
        if self.budget_percent <= 0 or elapsed < self.window:
            return []
        cpu = self.process_time()
        total = 100.0 * (cpu - self._cpu_since) / elapsed  # the whole agent, % of one core
        for name, runs in self._runs.items():
            self._per_run[name] = self._spent[name] / runs
        # Each collector's cost at its current interval (cost per sample / interval: a stretched
        # collector may not have run in this window), scaled so they add up to the whole agent
        # (sink threads and bursts are shared in proportion).
        expected = {
            n: c / (self.intervals[n] * self.stretch[n])
            for n, c in self._per_run.items()
            if n in self.intervals
        }
        measured = sum(expected.values())
        rates = {n: total * e / measured for n, e in expected.items()} if measured else {}
        self._spent, self._runs, self._since, self._cpu_since = {}, {}, now, cpu
        if total > self.budget_percent:
            return self._back_off(rates, total)
        return self._restore(rates, total)

    def _back_off(self, rates: dict[str, float], total: float) -> list[str]:
        before = dict(self.stretch)
        projected = {n: r for n, r in rates.items() if n in self.stretch}
        fixed = total - sum(projected.values())  # what no stretch reduces (sentinels, idle)
        while fixed + sum(projected.values()) > self.budget_percent:
            open_ = [n for n in projected if self.stretch[n] < MAX_STRETCH and projected[n] > 0]
            if not open_:
                break
            name = max(open_, key=projected.__getitem__)
            k = self.stretch[name]
            new = min(MAX_STRETCH, k * 2)
            projected[name] *= k / new
            self.stretch[name] = new
        changed = [n for n in self.stretch if self.stretch[n] != before[n]]
        for name in changed:
            event(
                "WARNING",
                "collector_backoff",
                "over the overhead budget: sampling this collector less often",
                collector=name,
                collector_cpu_percent=round(rates[name], 3),
                total_cpu_percent=round(total, 3),
                budget_percent=self.budget_percent,
                projected_cpu_percent=round(fixed + sum(projected.values()), 3),
                interval_seconds=self.intervals[name] * before[name],
                new_interval_seconds=self.intervals[name] * self.stretch[name],
            )
        return changed

    def _restore(self, rates: dict[str, float], total: float) -> list[str]:
        stretched = [n for n, k in self.stretch.items() if k > 1]
        for name in sorted(stretched, key=lambda n: rates.get(n, 0.0), reverse=True):
            k = self.stretch[name]
            rate = rates.get(name, 0.0)
            new = max(1, k // 2)
            projected = total - rate + rate * k / new
            if projected > RESTORE_BELOW * self.budget_percent:
                continue
            self.stretch[name] = new
            event(
                "INFO",
                "collector_restored",
                "back under the overhead budget",
                collector=name,
                total_cpu_percent=round(total, 3),
                projected_cpu_percent=round(projected, 3),
                budget_percent=self.budget_percent,
                interval_seconds=self.intervals[name] * k,
                new_interval_seconds=self.intervals[name] * new,
            )
            return [name]
        return []

    def effective(self, names: Iterable[str]) -> dict[str, int]:
        return {n: self.stretch.get(n, 1) for n in names}
