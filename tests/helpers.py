"""Shared test helpers: fixture paths, running the real CLI, polling with a deadline."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

FIXTURES = Path(__file__).parent / "fixtures"
PROC_FIXTURES = FIXTURES / "proc"
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
