"""Benchmark: the collector's CPU and memory cost next to a plain psutil loop (the floor).

    make bench                        # 120 s window, 1 s interval, stdout sink to /dev/null
    .venv/bin/python bench/run.py --seconds 300 --sinks csv --env SIC_CSV_DIR=/tmp/x

Both processes run side by side for the same window. CPU is utime+stime from /proc/PID/stat
over the window, as % of one core; RSS is sampled from /proc/PID/status every second (steady =
median of the second half of the window, peak = VmHWM). Tick jitter (how late ticks start) is
read from the collector's own /metrics histogram at the end of the window.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lateness_quantile(port: int, q: float) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == "sic_tick_lateness_seconds":
            buckets = [
                (float(s.labels["le"]), s.value)
                for s in family.samples
                if s.name.endswith("_bucket")
            ]
            total = buckets[-1][1]
            for le, count in buckets:
                if count >= q * total:
                    return le
    return None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=120.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--interval", default="1s")
    parser.add_argument("--sinks", default="stdout")
    parser.add_argument("--env", action="append", default=[], help="extra K=V for the collector")
    parser.add_argument("--no-floor", action="store_true", help="skip the psutil loop")
    args = parser.parse_args()

    exe = Path(sys.executable).with_name("system-info-collector")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIC_")}
    env.update(
        SIC_INTERVAL=args.interval,
        SIC_SINKS=args.sinks,
        SIC_LOG_LEVEL="WARNING",
        SIC_HTTP_LISTEN=f"127.0.0.1:{port}",
    )
    for item in args.env:
        key, _, value = item.partition("=")
        env[key] = value
    interval_s = (
        float(args.interval.rstrip("s"))
        if args.interval.endswith("s") and not args.interval.endswith("ms")
        else 1.0
    )
    devnull = open(os.devnull, "w")  # noqa: SIM115
    procs = {"system-info-collector": subprocess.Popen([str(exe), "run"], env=env, stdout=devnull)}
    if not args.no_floor:
        procs["psutil loop (floor)"] = subprocess.Popen(
            [sys.executable, str(HERE / "psutil_floor.py"), str(interval_s)], stdout=devnull
        )
    try:
        time.sleep(args.warmup)
        start = {name: cpu_seconds(p.pid) for name, p in procs.items()}
        t0 = time.monotonic()
        rss: dict[str, list[int]] = {name: [] for name in procs}
        while time.monotonic() - t0 < args.seconds:
            time.sleep(1.0)
            for name, p in procs.items():
                if p.poll() is not None:
                    raise SystemExit(f"{name} exited early with {p.returncode}")
                rss[name].append(status_kb(p.pid, "VmRSS"))
        elapsed = time.monotonic() - t0
        results = {}
        for name, p in procs.items():
            cpu = cpu_seconds(p.pid) - start[name]
            steady = statistics.median(rss[name][len(rss[name]) // 2 :]) / 1024
            peak = status_kb(p.pid, "VmHWM") / 1024
            results[name] = (100.0 * cpu / elapsed, steady, peak, cpu)
        p99 = lateness_quantile(port, 0.99)
        p50 = lateness_quantile(port, 0.50)
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            p.wait(timeout=20)

    print(
        f"\n{platform.node()} · {os.cpu_count()} CPUs · Python {platform.python_version()} · "
        f"window {elapsed:.0f} s · interval {args.interval} · sinks {args.sinks}\n"
    )
    print("| process | CPU % of one core | CPU seconds | steady RSS MB | peak RSS MB |")
    print("|---|---:|---:|---:|---:|")
    for name, (pct, steady, peak, cpu) in results.items():
        print(f"| {name} | {pct:.3f} | {cpu:.2f} | {steady:.1f} | {peak:.1f} |")
    if "psutil loop (floor)" in results:
        ratio = results["system-info-collector"][0] / max(results["psutil loop (floor)"][0], 1e-9)
        print(f"\nCPU ratio collector / floor: {ratio:.2f}")
    print(
        f"tick lateness (jitter) p50 ≤ {p50 * 1000 if p50 else float('nan'):g} ms, "
        f"p99 ≤ {p99 * 1000 if p99 else float('nan'):g} ms (histogram bucket bounds)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
