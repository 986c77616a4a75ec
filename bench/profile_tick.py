"""Profile the per-record path in-process: ticks on a synthetic host, then the CSV encoding.

    .venv/bin/python bench/profile_tick.py --cpus 256 --disks 64 --mounts 64 --ticks 100

Builds the real agent (real providers on a bench/synthetic_host.py tree, validator, the
``/metrics`` snapshot when ``--host-metrics``) with no sink thread, advances the tree's counters
between ticks (not profiled), and profiles ``Agent.tick`` plus the CSV sink's ``write`` of
each tick's records (what its thread does) with cProfile. Prints the CPU time per tick and per
record without the profiler (the best and the median of ``--rounds`` rounds), then the profile's
top entries. ``--pause 0.25`` sleeps that long before each tick (not measured), as the real
process does between slots: the same work then costs more CPU, because caches and branch
predictors are cold again at every tick (docs/benchmarks.md, "hot and cold ticks").
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from synthetic_host import SyntheticHost  # bench/synthetic_host.py

from system_info_collector.agent import Agent
from system_info_collector.config import load_settings
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.providers import build_providers
from system_info_collector.scheduler import Tick
from system_info_collector.schema import MEASUREMENTS
from system_info_collector.sinks.csv import CsvSink
from system_info_collector.sinks.postgres.encoding import UnnestEncoder, insert_script


def _cpu_of(work: Callable[[], object], times: int = 50) -> float:
    """CPU seconds of one call of ``work`` (the mean of ``times`` calls)."""
    started = time.thread_time()
    for _ in range(times):
        work()
    return (time.thread_time() - started) / times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpus", type=int, default=256)
    ap.add_argument("--disks", type=int, default=64)
    ap.add_argument("--mounts", type=int, default=64)
    ap.add_argument("--ticks", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--host-metrics", action="store_true")
    ap.add_argument("--pause", type=float, default=0.0, help="seconds of sleep before each tick")
    ap.add_argument("--collectors", default="", help="SIC_COLLECTORS (default: the default nine)")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        host = SyntheticHost(tmp, args.cpus, args.disks, args.mounts)
        host.create()
        settings = load_settings(
            {
                "SIC_HOST_PROC": f"{tmp}/proc",
                "SIC_HOST_ROOT": f"{tmp}/root",
                "SIC_SINKS": "csv",
                **({"SIC_COLLECTORS": args.collectors} if args.collectors else {}),
            }
        )
        agent = Agent(settings, build_providers(settings), [], Metrics(), host="bench")
        agent.expose_latest = args.host_metrics
        agent.start()
        sink = CsvSink(replace(settings.csv, directory=f"{tmp}/csv"), metrics=Metrics())
        sink.open()

        accepted_last: list[Record] = []

        def run(n: int, profiler: cProfile.Profile | None) -> tuple[float, int]:
            spent, records = 0.0, 0
            for i in range(n):
                host.advance()
                host.write()
                tick = Tick(i, datetime.fromtimestamp(1_700_000_000 + i, UTC), 0.0, 0.0)
                if args.pause:
                    time.sleep(args.pause)
                started = time.thread_time()
                if profiler:
                    profiler.enable()
                accepted = agent.tick(tick)
                accepted_last[:] = accepted
                sink.write(accepted)  # what the CSV sink's thread does with the tick
                if profiler:
                    profiler.disable()
                spent += time.thread_time() - started
                records += len(accepted)
            return spent, records

        run(5, None)  # warm-up
        # the best and the median of a few rounds: on a shared machine the others' work only
        # ever adds (cache misses, frequency), so the best round is the closest to the code's cost
        rounds = sorted(run(args.ticks, None) for _ in range(args.rounds))
        best, median = rounds[0], rounds[len(rounds) // 2]
        records = best[1]
        print(
            f"{args.cpus} CPUs / {args.disks} disks / {args.mounts} mounts"
            + (f", {args.pause:g} s pause before each tick" if args.pause else "")
            + ": "
            f"{records / args.ticks:.0f} records/tick, best of {args.rounds} rounds of "
            f"{args.ticks} ticks {1000 * best[0] / args.ticks:.2f} ms/tick = "
            f"{1e6 * best[0] / records:.2f} µs/record, median {1e6 * median[0] / records:.2f} "
            "µs/record (CPU time of tick + CSV write, no profiler)"
        )
        # the PostgreSQL sink's text for a tick's records (what its thread builds per write)
        groups: dict[str, list[Record]] = {}
        for r in accepted_last:
            groups.setdefault(r.measurement, []).append(r)
        encoders = {name: UnnestEncoder(m) for name, m in MEASUREMENTS.items()}
        best_text = min(
            _cpu_of(lambda: insert_script("s", groups, encoders, 5.0)) for _ in range(5)
        )
        print(
            f"PostgreSQL unnest text of one tick: best of 5 x 50: {1e3 * best_text:.2f} ms/tick = "
            f"{1e6 * best_text / len(accepted_last):.2f} µs/record"
        )
        if args.top:  # --top 0: no profile (for counting instructions with valgrind)
            profiler = cProfile.Profile()
            run(args.ticks, profiler)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)
        agent.close()
        sink.close()


if __name__ == "__main__":
    main()
