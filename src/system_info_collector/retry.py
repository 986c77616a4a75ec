"""Backoff policy applied around sinks: exponential, full jitter, capped; then slow probing."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from system_info_collector.config import RetrySettings


@dataclass(slots=True)
class Backoff:
    """Delay before retry ``attempt`` (1-based): ``uniform(0, min(max_wait, initial·2^(n-1)))``.

    After ``max_attempts`` failures in a row the policy is *degraded*: it stops hammering and
    probes every ``max_wait`` until a write succeeds (:meth:`reset`).
    """

    settings: RetrySettings
    rng: Callable[[], float] = field(default=random.random)
    attempt: int = 0

    @property
    def degraded(self) -> bool:
        return self.attempt >= self.settings.max_attempts

    def next_delay(self) -> float:
        self.attempt += 1
        if self.degraded:
            return self.settings.max_wait
        cap = min(self.settings.max_wait, self.settings.initial * 2.0 ** (self.attempt - 1))
        return cap * self.rng()

    def reset(self) -> None:
        self.attempt = 0
