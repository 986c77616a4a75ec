"""The first sample after start covers a whole interval, not the few ms until the first slot."""

from __future__ import annotations

import threading
import time

from system_info_collector.agent import Agent
from system_info_collector.config import Settings
from system_info_collector.metrics import Metrics
from system_info_collector.model import Sample
from tests.helpers import poll


class CountersProvider:
    """A provider of counters that need two readings (like cpu and diskio): it reports the
    time since its previous reading, which is what the sample's rates cover."""

    name = "memory"

    def __init__(self) -> None:
        self.last: float | None = None
        self.windows: list[float] = []

    def prime(self) -> None:
        self.last = time.monotonic()

    def collect(self) -> list[Sample]:
        now = time.monotonic()
        assert self.last is not None, "collect() before prime()"
        self.windows.append(now - self.last)
        self.last = now
        return []

    def close(self) -> None:
        pass


def test_the_first_collect_comes_a_whole_interval_after_the_counters_were_read() -> None:
    interval = 0.5
    for _ in range(2):  # wherever in its slot the start falls (before: anywhere in 0..interval)
        provider = CountersProvider()
        agent = Agent(Settings(interval=interval, sinks=()), [provider], [], Metrics(), host="h")
        agent.start()
        runner = threading.Thread(target=agent.run)
        runner.start()
        try:
            poll(lambda p=provider: len(p.windows) >= 2, timeout=5, what="two samples")
        finally:
            agent.stop_event.set()
        runner.join()
        agent.close()
        # a whole interval, less however late the slot that re-read the counters ran (load)
        first = provider.windows[0]
        assert first >= interval * 0.6, f"first sample covered only {first * 1000:.1f} ms"
