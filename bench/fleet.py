"""Fleet simulator: N nodes at 1 s through PgBouncer into one PostgreSQL, with the real sink.

    .venv/bin/python bench/fleet.py --nodes 200 --processes 2 --seconds 60 --outage 20

Starts a PostgreSQL container (``SIC_TEST_POSTGRES_IMAGE``, as the tests do) and a real
``pgbouncer`` (transaction pooling, ``default_pool_size`` 10) in front of it, then runs
``--processes`` worker processes; each drives its share of the ``--nodes`` simulated nodes, one
:class:`~system_info_collector.sinks.postgres.PostgresSink` (the real sink code, its own
connection through the bouncer) per node, written from 16 threads per process so that nodes
write in parallel as real ones do. A node has its own host name and a realistic record
mix every second -- 16 CPUs + the total, memory, 4 mounts, 4 disks: 26 rows. A node's records wait
in its own in-memory backlog (what the collector's spool does) until a write commits; a failed
write is retried at the next tick with everything pending, in batches of 5000 records.

``--outage S`` stops the server S seconds into the run (the bouncer stays up), starts it again
after S seconds and reports the catch-up: how long until every node's backlog is empty.

Reported: sustained rows/s, commit latency (sample time → committed) p50/p99 outside the outage
and its catch-up (after a 5 s warm-up: every sink connecting and checking the schema),
the server's CPU (its container's cgroup), bytes per row on disk (heap + indexes, all
partitions), the lag at the end of the outage and the catch-up time, and lost / duplicated rows
(expected = nodes * ticks * 26, counted in the database; must be 0 / 0).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from system_info_collector.config import PostgresSettings, RetrySettings
from system_info_collector.errors import TransientSinkError
from system_info_collector.logging import configure
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.schema import MEASUREMENTS
from system_info_collector.sinks.postgres import PostgresSink

ROWS_PER_TICK = 26
THREADS = 16  # per process: the nodes of a process write in parallel (the GIL is released
# while a write waits for the server)
WARMUP = 5  # seconds not counted in the latency: 1 000 sinks connecting and checking the schema
BATCH = 5000
CPU_FIELDS = [f.name for f in MEASUREMENTS["cpu"].fields]
MEM_FIELDS = [f.name for f in MEASUREMENTS["memory"].fields]
DISK_FIELDS = [f.name for f in MEASUREMENTS["disk"].fields]
IO_FIELDS = [f.name for f in MEASUREMENTS["diskio"].fields]


def node_tick(host: str, ts: datetime, i: int) -> list[Record]:
    """One second of one node: values that move, so rows are not all alike on disk."""
    v = (i * 7919 + hash(host)) % 1000 / 10.0
    out = [
        Record("cpu", ts, host, {"cpu": c}, {f: v for f in CPU_FIELDS})
        for c in ["cpu-total", *(f"cpu{k}" for k in range(16))]
    ]
    out.append(Record("memory", ts, host, {}, {f: int(v * 1e8) for f in MEM_FIELDS}))
    for k in range(4):
        tags = {"mountpoint": f"/data{k}", "device": f"nvme0n{k}p1", "fstype": "ext4"}
        out.append(Record("disk", ts, host, tags, {f: int(v * 1e9) for f in DISK_FIELDS}))
        out.append(
            Record(
                "diskio", ts, host, {"device": f"nvme0n{k}"}, {f: int(v * 1e3) for f in IO_FIELDS}
            )
        )
    return out


@dataclass
class Report:
    rows: int = 0
    latencies: list[tuple[float, float]] | None = None  # (sample time, seconds to commit)
    lag_at_restart: float = 0.0  # seconds of samples pending when the server came back
    drained_at: float = 0.0  # wall time when the last backlog emptied after the outage
    failures: int = 0


def worker(
    dsn: str,
    schema: str,
    hosts: list[str],
    start: float,
    seconds: int,
    outage: tuple[float, float] | None,
    out: Any,
) -> None:
    """One process: its nodes, one sink each, one tick per second until ``seconds``, then
    until every backlog is empty."""
    configure("WARNING", "text")
    settings = PostgresSettings(
        dsn=dsn,
        schema=schema,
        spool_dir="/tmp/fleet-unused",
        connect_timeout=2.0,
        statement_timeout=5.0,
    )
    sinks = {h: PostgresSink(settings, retry=RetrySettings(), metrics=Metrics()) for h in hosts}
    pending: dict[str, list[Record]] = {h: [] for h in hosts}
    latencies: list[tuple[float, float]] = []
    report = Report(latencies=latencies)
    lock = threading.Lock()
    pool = ThreadPoolExecutor(THREADS)
    tick = 0
    while True:
        due = start + tick
        now = time.time()
        if tick < seconds:
            if due > now:
                time.sleep(due - now)
            ts = datetime.fromtimestamp(due, UTC)
            for h in hosts:
                pending[h] += node_tick(h, ts, tick)
        elif not any(pending.values()):
            break
        else:
            time.sleep(0.2)
        restarted = outage is not None and outage[1] <= time.time()
        if restarted and not report.lag_at_restart and outage is not None:
            oldest = min((p[0].ts.timestamp() for p in pending.values() if p), default=outage[1])
            report.lag_at_restart = outage[1] - oldest

        def flush(h: str) -> None:
            batch = pending[h][:BATCH]
            if not batch:
                return
            try:
                sinks[h].write(batch)
            except TransientSinkError:
                with lock:
                    report.failures += 1
                return
            committed = time.time()
            del pending[h][: len(batch)]
            with lock:
                report.rows += len(batch)
                latencies.extend(
                    (r.ts.timestamp(), committed - r.ts.timestamp())
                    for r in batch[::ROWS_PER_TICK]
                    if r.ts.timestamp() >= start + WARMUP
                )

        list(pool.map(flush, hosts))  # the nodes write in parallel, as real ones do
        if restarted and not report.drained_at and not any(pending.values()):
            report.drained_at = time.time()
        tick += 1
    pool.shutdown()
    for s in sinks.values():
        s.close()
    out.put(report)


def run_fleet(
    bouncer_dsn: str,
    direct: Callable[[], Any],
    schema: str,
    *,
    nodes: int,
    processes: int,
    seconds: int,
    outage: float = 0.0,
    stop: Callable[[], None] | None = None,
    start_server: Callable[[], None] | None = None,
    server_cpu: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Run the fleet; ``direct()`` opens a direct connection for the counts."""
    hosts = [f"node-{i:04d}" for i in range(nodes)]
    start = time.time() + 3.0
    window = (start + seconds / 3, start + seconds / 3 + outage) if outage else None
    queue: Any = mp.get_context("fork").Queue()
    procs = [
        mp.get_context("fork").Process(
            target=worker,
            args=(bouncer_dsn, schema, hosts[i::processes], start, seconds, window, queue),
        )
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    measure = server_cpu or (lambda: float("nan"))
    cpu0, cpu = measure(), 0.0
    if window and stop and start_server:
        time.sleep(max(0.0, window[0] - time.time()))
        cpu += measure() - cpu0  # a restarted container starts its counter again
        stop()
        time.sleep(max(0.0, window[1] - time.time()))
        start_server()
        cpu0 = measure()
    reports = [queue.get(timeout=seconds + 600) for _ in procs]
    for p in procs:
        p.join(30)
    cpu += measure() - cpu0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    took = time.time() - start
    drained = max((r.drained_at for r in reports), default=0.0)

    def steady(ts: float) -> bool:  # outside the outage and its catch-up
        return window is None or not window[0] - 6 <= ts <= max(drained, window[1])

    latencies = sorted(x for r in reports for ts, x in (r.latencies or []) if steady(ts))
    with direct() as conn:
        stored = sum(
            conn.execute(f'SELECT count(*) FROM "{schema}"."{m}"').fetchone()[0]
            for m in MEASUREMENTS
        )
        size = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
            "AND c.relkind = 'r'",
            (schema,),
        ).fetchone()[0]
    expected = nodes * seconds * ROWS_PER_TICK
    return {
        "nodes": nodes,
        "processes": processes,
        "seconds": seconds,
        "rows/s offered": nodes * ROWS_PER_TICK,
        "rows/s sustained": round(sum(r.rows for r in reports) / took),
        "commit latency p50 s": round(statistics.median(latencies), 3) if latencies else None,
        "commit latency p99 s": round(latencies[int(len(latencies) * 0.99) - 1], 3)
        if latencies
        else None,
        "server CPU % of one core": round(100 * cpu / took, 1),
        "simulator CPU % of one core": round(
            100 * (children.ru_utime + children.ru_stime) / took, 1
        ),
        "bytes/row on disk": round(size / max(stored, 1), 1),
        "outage s": outage,
        "lag at restart s": round(max((r.lag_at_restart for r in reports), default=0.0), 1),
        "catch-up s": round(drained - window[1], 1) if window and drained else None,
        "lost": expected - stored,
        "duplicated": 0 if stored <= expected else stored - expected,
        "failed writes (retried)": sum(r.failures for r in reports),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--outage", type=float, default=0.0)
    ap.add_argument("--pool", type=int, default=10)
    args = ap.parse_args()
    os.environ.setdefault("SIC_TEST_POSTGRES_IMAGE", "local/postgres:15")
    import psycopg

    from tests.integration.conftest import Bouncer, start_server, stop_server

    server, reasons = start_server()
    if server is None:
        sys.exit(f"no PostgreSQL: {reasons}")
    import tempfile

    bouncer = Bouncer(
        server,
        args.pool,
        tempfile.mkdtemp(prefix="fleet-pgb-"),
        run_as="nobody" if os.geteuid() == 0 else None,
        max_client_conn=args.nodes + 50,
    )
    try:
        bouncer.start()

        def restart() -> None:
            server.start()
            bouncer.retarget()

        result = run_fleet(
            bouncer.dsn(),
            lambda: psycopg.connect(server.dsn()),
            "fleet",
            nodes=args.nodes,
            processes=args.processes,
            seconds=args.seconds,
            outage=args.outage,
            stop=server.stop,
            start_server=restart,
            server_cpu=lambda: container_cpu(server),
        )
    finally:
        bouncer.stop()
        stop_server(server)
    for key, value in result.items():
        print(f"| {key} | {value} |")


def container_cpu(server: Any) -> float:
    """CPU seconds the server's container has used (cgroup v2), NaN when not a container."""
    if server.kind != "docker":
        return float("nan")
    cid = server._wrapped().id
    for path in (
        f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat",
        f"/sys/fs/cgroup/docker/{cid}/cpu.stat",
    ):
        if os.path.exists(path):
            for line in Path(path).read_text().splitlines():
                if line.startswith("usage_usec"):
                    return int(line.split()[1]) / 1e6
    for path in (
        f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage",
        f"/sys/fs/cgroup/cpu,cpuacct/docker/{cid}/cpuacct.usage",
    ):
        if os.path.exists(path):
            return int(Path(path).read_text()) / 1e9  # cgroup v1: nanoseconds
    return float("nan")


if __name__ == "__main__":
    main()
