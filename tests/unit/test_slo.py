"""Delivery SLIs from the data: latency per record, completeness over a judged window."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, Histogram

from system_info_collector.model import Record
from system_info_collector.slo import LATENCY_BUCKETS, DeliveryLedger

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0.timestamp()

    def __call__(self) -> float:
        return self.now


def rec(ts: datetime) -> Record:
    return Record("memory", ts, "h", {}, {"used_bytes": 1})


def test_completeness_judges_only_samples_past_the_grace_period() -> None:
    registry, clock = CollectorRegistry(), Clock()
    ledger = DeliveryLedger(registry, clock=clock)
    ledger.track("remote_write")
    ticks = [T0 + timedelta(seconds=10 * i) for i in range(30)]  # 5 minutes of ticks
    for ts in ticks:
        ledger.produced(ts, 1)
    ledger.acknowledged("remote_write", [rec(ts) for ts in ticks[:24]], now=clock.now)
    clock.now = (T0 + timedelta(minutes=5)).timestamp()  # minutes 0-3 judged, 4 not yet
    assert ledger.completeness() == {"remote_write": 1.0}  # the 24 acked ones: minutes 0-3
    clock.now = (T0 + timedelta(minutes=6, seconds=1)).timestamp()  # minute 4 judged too
    assert ledger.completeness() == {"remote_write": 24 / 30}
    gauge = registry.get_sample_value("sic_sink_completeness_ratio", {"sink": "remote_write"})
    assert gauge == 24 / 30
    clock.now = (T0 + timedelta(minutes=30)).timestamp()  # all out of the window
    assert ledger.completeness() == {"remote_write": 1.0}


def test_latency_is_observed_per_record_from_its_tick_time() -> None:
    registry = CollectorRegistry()
    ledger = DeliveryLedger(registry, clock=Clock())
    now = T0.timestamp()
    ledger.acknowledged("otlp", [rec(T0 - timedelta(seconds=s)) for s in (0.2, 3, 40)], now=now)

    def bucket(le: str) -> float | None:
        return registry.get_sample_value(
            "sic_sink_delivery_latency_seconds_bucket", {"sink": "otlp", "le": le}
        )

    assert (bucket("0.25"), bucket("5.0"), bucket("60.0")) == (1.0, 2.0, 3.0)


def test_a_replay_cannot_push_completeness_over_one() -> None:
    clock = Clock()
    ledger = DeliveryLedger(CollectorRegistry(), clock=clock)
    ledger.produced(T0, 2)
    ledger.acknowledged("remote_write", [rec(T0)] * 2, now=clock.now)
    ledger.acknowledged("remote_write", [rec(T0)] * 2, now=clock.now)  # sent again
    clock.now += 120
    assert ledger.completeness() == {"remote_write": 1.0}


def test_a_sink_counting_its_own_units_is_judged_against_them() -> None:
    """The push sinks buffer series, not records: a tick is 1 record for the agent's count and
    3 for the sink's; each sink is judged in its own units."""
    registry, clock = CollectorRegistry(), Clock()
    ledger = DeliveryLedger(registry, clock=clock)
    ledger.track("csv")
    ledger.track("remote_write", own_units=True)
    ticks = [T0 + timedelta(seconds=10 * i) for i in range(6)]
    for ts in ticks:
        ledger.produced(ts, 1)
        ledger.produced(ts, 3, sink="remote_write")
    ledger.acknowledged("csv", [rec(ts) for ts in ticks], now=clock.now)
    ledger.acknowledged(
        "remote_write", [rec(ts) for ts in ticks for _ in range(3)][:9], now=clock.now
    )
    clock.now = (T0 + timedelta(minutes=3)).timestamp()
    assert ledger.completeness() == {"csv": 1.0, "remote_write": 0.5}


def test_latency_by_tick_equals_a_histogram_observed_per_record() -> None:
    """A batch is observed once per tick time with its count: the exposition must be what
    prometheus-client's Histogram gives when every record is observed on its own (bucket edges
    included: a latency equal to a bound counts in that bound)."""
    registry, reference = CollectorRegistry(), CollectorRegistry()
    ledger = DeliveryLedger(registry, clock=Clock())
    histogram = Histogram(
        "sic_sink_delivery_latency_seconds",
        "reference",
        ["sink"],
        buckets=LATENCY_BUCKETS,
        registry=reference,
    )
    now = T0.timestamp()
    rng = random.Random(12)
    for sink in ("remote_write", "otlp"):
        for _ in range(50):  # batches of whole ticks, some at exactly a bucket bound
            ages = [rng.choice([*LATENCY_BUCKETS, 0, rng.uniform(0, 4000)]) for _ in range(3)]
            batch = [
                rec(T0 - timedelta(seconds=a)) for a in ages for _ in range(rng.randint(1, 40))
            ]
            rng.shuffle(batch)
            ledger.acknowledged(sink, batch, now=now)
            for r in batch:
                histogram.labels(sink).observe(max(0.0, now - r.ts.timestamp()))

    def samples(reg: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in reg.collect()
            if family.name == "sic_sink_delivery_latency_seconds"
            for s in family.samples
            if not s.name.endswith("_created")
        }

    got, want = samples(registry), samples(reference)
    assert got.keys() == want.keys() and len(got) == 2 * (len(LATENCY_BUCKETS) + 3)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key
