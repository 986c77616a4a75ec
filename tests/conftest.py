"""Suite-wide rules.

Integration tests (marker ``integration``) skip with a reason where a real PostgreSQL server,
a Docker engine or root is missing -- except under CI (``CI=true``), where such a skip is turned
into a failure, so the integration suite can never silently disappear.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import Any

import pytest
from loguru import logger

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if IN_CI and report.skipped and item.get_closest_marker("integration") is not None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"integration test skipped under CI=true (not allowed): {reason}"


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    """Every structured log event emitted during the test (its fields plus ``level``)."""
    seen: list[dict[str, Any]] = []
    handler = logger.add(
        lambda m: seen.append(
            {**m.record["extra"], "level": m.record["level"].name, "msg": m.record["message"]}
        ),
        level="DEBUG",
    )
    yield seen
    logger.remove(handler)
