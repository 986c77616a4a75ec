"""The fleet simulator (bench/fleet.py) at small N, as a test: several processes of simulated
nodes through a real PgBouncer whose pool is smaller than the node count, a server outage in
the middle: every row in the database exactly once, and the backlog caught up."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.conftest import Bouncer, PgServer

pytestmark = pytest.mark.integration
FLEET = Path(__file__).resolve().parents[2] / "bench" / "fleet.py"


def load_fleet() -> Any:
    spec = importlib.util.spec_from_file_location("fleet", FLEET)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["fleet"] = module
    spec.loader.exec_module(module)
    return module


def test_a_small_fleet_through_the_bouncer_loses_and_duplicates_nothing_across_an_outage(
    pg_up: PgServer, db_schema: str, bouncer: Callable[..., Bouncer]
) -> None:
    fleet = load_fleet()
    b = bouncer(pool_size=2)

    def started() -> Any:
        with psycopg.connect(pg_up.dsn()) as conn:
            row = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
            return row[0] if row else None

    before = started()

    def restart() -> None:
        pg_up.start()
        b.retarget()

    result = fleet.run_fleet(
        b.dsn(),
        lambda: psycopg.connect(pg_up.dsn()),
        db_schema,
        nodes=8,
        processes=3,
        seconds=9,
        outage=3.0,
        stop=pg_up.stop,
        start_server=restart,
    )
    assert result["lost"] == 0 and result["duplicated"] == 0, result
    assert started() > before  # the outage was real (writes may also just wait in the bouncer)
    assert result["catch-up s"] is not None and result["catch-up s"] < 30, result
    assert result["bytes/row on disk"] > 0
