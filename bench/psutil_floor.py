"""The floor: a plain psutil loop doing the same reads as the collector.

    psutil_floor.py [INTERVAL_S]                     # this host, JSON lines to stdout
    psutil_floor.py 0.25 --procfs DIR/proc --root DIR/root --csv OUT   # a synthetic host, CSV

Per tick: ``cpu_times_percent`` total and per CPU, ``virtual_memory``, ``swap_memory``,
``disk_partitions`` + ``disk_usage`` of each (under ``--root``), ``disk_io_counters(perdisk=True)``.
With ``--csv`` the rows go to one CSV file per measurement in OUT (``csv`` module, flushed each
tick), as the collector's CSV sink does. Run by bench/run.py and bench/scale.py next to the
collector; not part of the product.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil  # type: ignore[import-untyped]


def rows(root: str, ts: float) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = [
        ("cpu", {"ts": ts, "cpu": "total", **psutil.cpu_times_percent()._asdict()})
    ]
    for i, c in enumerate(psutil.cpu_times_percent(percpu=True)):
        out.append(("cpu", {"ts": ts, "cpu": i, **c._asdict()}))
    memory = psutil.virtual_memory()._asdict()
    memory.update({f"swap_{k}": v for k, v in psutil.swap_memory()._asdict().items()})
    out.append(("mem", {"ts": ts, **memory}))
    for part in psutil.disk_partitions():
        path = os.path.join(root, part.mountpoint.lstrip("/")) if root != "/" else part.mountpoint
        try:
            usage = psutil.disk_usage(path)
        except OSError:
            continue
        out.append(("disk", {"ts": ts, "mount": part.mountpoint, **usage._asdict()}))
    for dev, io in (psutil.disk_io_counters(perdisk=True) or {}).items():
        out.append(("diskio", {"ts": ts, "dev": dev, **io._asdict()}))
    return out


def json_writer() -> Callable[[list[tuple[str, dict[str, Any]]]], None]:
    out = sys.stdout

    def write(batch: list[tuple[str, dict[str, Any]]]) -> None:
        out.write("".join(json.dumps({"m": m, **r}) + "\n" for m, r in batch))
        out.flush()

    return write


def csv_writer(directory: str) -> Callable[[list[tuple[str, dict[str, Any]]]], None]:
    os.makedirs(directory, exist_ok=True)
    files: dict[str, Any] = {}
    writers: dict[str, Any] = {}

    def write(batch: list[tuple[str, dict[str, Any]]]) -> None:
        for m, r in batch:
            writer = writers.get(m)
            if writer is None:
                files[m] = open(os.path.join(directory, f"{m}.csv"), "a", newline="")  # noqa: SIM115
                writer = writers[m] = csv.writer(files[m], lineterminator="\n")
                writer.writerow(r.keys())
            writer.writerow(r.values())
        for f in files.values():
            f.flush()

    return write


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("interval", nargs="?", type=float, default=1.0, help="seconds")
    ap.add_argument("--procfs", default="/proc", help="psutil.PROCFS_PATH")
    ap.add_argument("--root", default="/", help="where the mount points are (SIC_HOST_ROOT)")
    ap.add_argument("--csv", help="write CSV files into this directory instead of JSON lines")
    args = ap.parse_args()
    psutil.PROCFS_PATH = args.procfs  # set once, before the first read
    write = csv_writer(args.csv) if args.csv else json_writer()
    psutil.cpu_times_percent(percpu=True)
    psutil.cpu_times_percent()
    next_t = time.monotonic()
    while True:
        next_t += args.interval
        time.sleep(max(0.0, next_t - time.monotonic()))
        write(rows(args.root, round(time.time(), 3)))


if __name__ == "__main__":
    main()
