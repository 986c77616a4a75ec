from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from system_info_collector.model import Record
from system_info_collector.providers.memory import memory_fields
from system_info_collector.providers.timex import TimexReading
from system_info_collector.providers.timex import fields as timex_fields
from system_info_collector.validate import validate

TS = datetime(2026, 11, 26, tzinfo=UTC)


def cpu(**overrides: float) -> Record:
    fields: dict[str, float] = {
        f"{s}_percent": 0.0
        for s in (
            "user",
            "nice",
            "system",
            "iowait",
            "irq",
            "softirq",
            "steal",
            "guest",
            "guest_nice",
        )
    }
    fields.update(idle_percent=75.0, user_percent=25.0, usage_percent=25.0)
    fields.update(overrides)
    return Record("cpu", TS, "h", {"cpu": "cpu0"}, fields)


def memory(**overrides: int | float) -> Record:
    fields = memory_fields(
        {
            "MemTotal": 1000,
            "MemFree": 200,
            "MemAvailable": 600,
            "Buffers": 10,
            "Cached": 300,
            "SwapTotal": 0,
            "SwapFree": 0,
        }
    )
    fields.update(overrides)
    return Record("memory", TS, "h", {}, fields)


def test_good_records_pass() -> None:
    accepted, rejected = validate([cpu(), memory()])
    assert len(accepted) == 2 and rejected == []


@pytest.mark.parametrize(
    ("record", "field", "rule"),
    [
        (cpu(user_percent=math.nan), "user_percent", "finite"),
        (cpu(user_percent=85.0, idle_percent=-10.0), "idle_percent", "non_negative"),
        (cpu(user_percent=101.0, idle_percent=0.0), "user_percent", "percent_range"),
        (cpu(idle_percent=60.0), "user_percent..steal_percent", "cpu_states_sum_100"),
        (cpu(guest_percent=30.0), "guest_percent", "not_above_user_percent"),
        (memory(used_bytes=2000), "used_bytes", "not_above_total_bytes"),
        (memory(free_bytes=1.5), "free_bytes", "type"),
        (memory(used_bytes=100), "used_bytes", "used_plus_available_total"),
        (memory(swap_used_bytes=5), "swap_used_bytes", "not_above_swap_total_bytes"),
    ],
)
def test_invalid_records_are_rejected_with_the_rule(record: Record, field: str, rule: str) -> None:
    accepted, rejected = validate([record])
    assert accepted == []
    assert (rejected[0].field, rejected[0].rule) == (field, rule)


def test_missing_field_is_a_type_error() -> None:
    record = Record("memory", TS, "h", {}, {"total_bytes": 1})
    (rejection,) = validate([record])[1]
    assert rejection.rule == "type" and rejection.value is None


def timex(**overrides: float) -> Record:
    reading = TimexReading(0, -2500, -1234567, 12000, 150, 1, 7, 10000, 0, 0, 0, 0, 0, 0, 0, 0, 37)
    return Record("timex", TS, "h", {}, {**timex_fields(reading), **overrides})


def test_signed_fields_may_be_negative_and_only_they() -> None:
    """A clock behind its reference has a negative offset (and a slow one a negative PPS
    frequency): accepted, alone and in a batch; any other field below zero is still refused."""
    ahead, behind = timex(offset_seconds=0.0025), timex(pps_frequency_hertz=-1e-6)
    assert behind.fields["offset_seconds"] == -0.0025
    accepted, rejected = validate([ahead, behind, cpu()])
    assert accepted == [ahead, behind, cpu()] and rejected == []
    assert validate([behind]) == ([behind], [])
    for bad in (timex(maxerror_seconds=-1.0), timex(status=-1)):
        accepted, rejected = validate([behind, bad])
        assert accepted == [behind]
        assert rejected[0].rule == "non_negative" and rejected[0].value == -1
