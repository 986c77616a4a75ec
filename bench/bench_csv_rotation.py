"""Benchmark: the cost of rotating + gzip-compressing a 100 MB CSV file; does it delay ticks?

    .venv/bin/python bench/bench_csv_rotation.py [--size-mb 100] [--interval 100ms]

Pre-fills ``cpu.csv`` in a temporary directory with SIZE MB of valid rows (older timestamps),
starts the real collector on that directory with ``SIC_CSV_ROTATE_SIZE`` just above it, so the
first tick rotates the file and the background thread compresses it while sampling goes on at
INTERVAL. Reports the time until the ``.csv.gz`` exists, its size, the collector's CPU seconds
over the window, and the tick lateness (jitter) and overrun counts from its own /metrics.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from system_info_collector.schema import MEASUREMENTS

CPU = MEASUREMENTS["cpu"]

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def prefill(path: Path, size: int) -> int:
    rng = random.Random(1)
    start = time.time() - 30 * 86400
    rows = 0
    with path.open("w") as out:
        out.write(",".join(CPU.columns) + "\n")
        written = 0
        while written < size:
            chunk = []
            for _ in range(2000):
                ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start + rows // 3))
                ms = (rows // 3) % 1000
                values = [f"{rng.random() * 10:.6f}" for _ in CPU.fields]
                chunk.append(f"{ts}.{ms:03d}Z,bench-host,cpu{rows % 3},{','.join(values)},{{}}\n")
                rows += 1
            text = "".join(chunk)
            out.write(text)
            written += len(text)
    return rows


def metric(port: int) -> dict[str, dict[str, float]]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[s.labels.get("le", "")] = s.value
    return out


def quantile(buckets: dict[str, float], q: float) -> float:
    items = sorted((float(le), v) for le, v in buckets.items())
    total = items[-1][1]
    return next(le for le, v in items if v >= q * total)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--interval", default="100ms")
    args = parser.parse_args()
    size = args.size_mb * 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        rows = prefill(d / "cpu.csv", size)
        actual = (d / "cpu.csv").stat().st_size
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIC_")}
        env.update(
            SIC_CSV_DIR=tmp,
            SIC_SINKS="csv",
            SIC_INTERVAL=args.interval,
            SIC_CSV_ROTATE_SIZE=str(actual + 100),
            SIC_LOG_LEVEL="WARNING",
            SIC_CSV_RETENTION="3650d",
            SIC_HTTP_LISTEN=f"127.0.0.1:{port}",
        )
        exe = Path(sys.executable).with_name("system-info-collector")
        t0 = time.monotonic()
        proc = subprocess.Popen([str(exe), "run"], env=env)
        try:
            gz = None
            while gz is None and time.monotonic() - t0 < 300:
                found = [p for p in d.glob("cpu.*.csv.gz")]
                gz = found[0] if found else None
                time.sleep(0.05)
            done = time.monotonic() - t0
            gz_size = gz.stat().st_size if gz is not None else 0
            time.sleep(1.0)
            m = metric(port)
            cpu = cpu_seconds(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        assert gz is not None, "no compressed file appeared"
        lateness = m["sic_tick_lateness_seconds_bucket"]
        ticks = m["sic_ticks_total"][""]
        overruns = m["sic_tick_overruns_total"][""]
        print(
            f"\nrotated file: {actual / 1e6:.1f} MB, {rows} rows -> {gz_size / 1e6:.1f} MB"
            f" gzip; interval {args.interval}\n"
        )
        print("| measure | value |\n|---|---:|")
        print(f"| start → rotated file compressed (s) | {done:.2f} |")
        print(f"| collector CPU seconds over that window (+1 s) | {cpu:.2f} |")
        print(f"| ticks / overruns in the window | {ticks:.0f} / {overruns:.0f} |")
        print(
            f"| tick lateness p50 / p99 / max bucket (ms) | {quantile(lateness, 0.5) * 1000:g} / "
            f"{quantile(lateness, 0.99) * 1000:g} / {quantile(lateness, 1.0) * 1000:g} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
