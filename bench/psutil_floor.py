"""The floor: a plain psutil loop doing the same reads as the collector, JSON lines to stdout.

Run by bench/run.py next to the collector; not part of the product.
"""

from __future__ import annotations

import json
import sys
import time

import psutil


def main() -> None:
    interval = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    out = sys.stdout
    psutil.cpu_times_percent(percpu=True)
    psutil.cpu_times_percent()
    next_t = time.monotonic()
    while True:
        next_t += interval
        time.sleep(max(0.0, next_t - time.monotonic()))
        ts = round(time.time(), 3)
        rows = [{"m": "cpu", "ts": ts, "cpu": "total", **psutil.cpu_times_percent()._asdict()}]
        for i, c in enumerate(psutil.cpu_times_percent(percpu=True)):
            rows.append({"m": "cpu", "ts": ts, "cpu": i, **c._asdict()})
        rows.append(
            {
                "m": "mem",
                "ts": ts,
                **psutil.virtual_memory()._asdict(),
                **{f"swap_{k}": v for k, v in psutil.swap_memory()._asdict().items()},
            }
        )
        for part in psutil.disk_partitions():
            try:
                usage = psutil.disk_usage(part.mountpoint)
            except OSError:
                continue
            rows.append({"m": "disk", "ts": ts, "mount": part.mountpoint, **usage._asdict()})
        for dev, io in (psutil.disk_io_counters(perdisk=True) or {}).items():
            rows.append({"m": "diskio", "ts": ts, "dev": dev, **io._asdict()})
        out.write("".join(json.dumps(r) + "\n" for r in rows))
        out.flush()


if __name__ == "__main__":
    main()
