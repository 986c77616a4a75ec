"""Shared test helpers: fixture paths, running the real CLI, polling with a deadline."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

FIXTURES = Path(__file__).parent / "fixtures"
PROC_FIXTURES = FIXTURES / "proc"
MDSTAT_FIXTURES = FIXTURES / "mdstat"  # /proc/mdstat files of many kinds of arrays
EXE = str(Path(sys.executable).with_name("system-info-collector"))

T = TypeVar("T")


def clean_env(**overrides: str) -> dict[str, str]:
    """The process environment without any SIC_/HOST_ variables, plus ``overrides``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SIC_", "HOST_", "NODE_NAME", "PG"))
    }
    env.setdefault("SIC_HTTP_LISTEN", "")
    env.update(overrides)
    return env


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 30, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args],
        env=dict(env) if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )


def poll(
    fn: Callable[[], T | None],
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """Call ``fn`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def fields_of(record: Mapping[str, object]) -> dict[str, object]:
    """The fields of one stdout/``once`` JSON record (the CSV-column layout), without nulls."""
    from system_info_collector.schema import MEASUREMENTS

    spec = MEASUREMENTS[str(record["measurement"])]
    return {f.name: record[f.name] for f in spec.fields if record.get(f.name) is not None}


CSV_CPU_STATES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def assert_counters_give_the_csv_shares(
    seconds: Mapping[tuple[str, str], Mapping[int, float]],
    rows: Sequence[Mapping[str, str]],
    when: Callable[[str], int],
    cpu: Callable[[str], str] = lambda name: name,
) -> None:
    """Pushed cumulative CPU seconds (``seconds[(cpu, csv state)][time]``) tick to tick give
    the per-CPU shares the CSV rows of cpu.csv hold for the later tick (``when``: a row's
    ``ts`` as the pushed time unit; ``cpu``: a row's cpu as the pushed label value)."""
    per_cpu: dict[str, list[Mapping[str, str]]] = defaultdict(list)
    for row in rows:
        if row["cpu"] != "cpu-total":
            per_cpu[cpu(row["cpu"])].append(row)
    checked = 0
    for name, cpu_rows in per_cpu.items():
        for before, row in itertools.pairwise(cpu_rows):
            start, end = when(before["ts"]), when(row["ts"])
            deltas = {
                s: seconds[(name, s)][end] - seconds[(name, s)][start] for s in CSV_CPU_STATES
            }
            total = sum(deltas.values())
            for state, delta in deltas.items():
                share = float(row[f"{state}_percent"])
                assert math.isclose(100 * delta / total, share, abs_tol=1e-6), (name, end, state)
            checked += 1
    assert checked >= 5, f"only {checked} pairs of ticks to compare"
