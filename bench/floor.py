"""How cheap can a pure-Python tick be? The collector, the psutil loop and a hand-made floor,
in one process, on the same synthetic host, tick for tick.

    .venv/bin/python bench/floor.py --cpus 256 --disks 64 --mounts 64 --ticks 40 --rounds 5
    .venv/bin/python bench/floor.py ... --pause 0.25   # a sleep before each tick, as a real run

Three contenders read the same bench/synthetic_host.py tree (rewritten between ticks, not
measured) and turn it into CSV text, each tick measured with ``time.thread_time()``:

- ``collector``: ``Agent.tick`` (the real providers, stamping, validation; the four families
  cpu, memory, disk, diskio) plus the CSV sink's encoding of the tick's records (what its thread
  does; the bytes are built, not written), as bench/profile_tick.py does;
- ``psutil``: bench/psutil_floor.py's ``rows`` (``cpu_times_percent`` total and per CPU,
  ``virtual_memory``, ``swap_memory``, ``disk_partitions`` + ``disk_usage``,
  ``disk_io_counters(perdisk=True)``) and the ``csv`` module writing them to a ``StringIO``;
- ``floor``: the least work a pure-Python agent can do for the same columns: one ``pread`` per
  file, each file's numbers parsed by one ``split`` and one ``int`` map, deltas and shares by one
  ``map`` per column over all entities, the rules proven on the flat lists (value types, a
  finite sum, ``min`` ≥ 0, percentages ``max`` ≤ 100), the mount plan kept between ticks, one
  ``%`` format for all rows of a measurement with every label pre-formatted. It keeps no record
  objects, serves no other sink and no ``/metrics``, checks no per-collector consistency rule
  and handles no reset, no new or vanished entity and no damaged line. It is not a product: it is
  a lower bound on what interpreted code costs for these records.

The rounds alternate the three so that the machine's noise falls on each alike; the table gives
the best round's µs per record (closest to the code's own cost: others' work only ever adds) and
the median, and each one's ratio to ``psutil``.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import chain, repeat
from operator import add, mul, sub, truediv
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import psutil  # type: ignore[import-untyped]
from psutil_floor import rows as psutil_rows  # bench/psutil_floor.py
from synthetic_host import SyntheticHost  # bench/synthetic_host.py

from system_info_collector.agent import Agent
from system_info_collector.config import load_settings
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.providers import build_providers
from system_info_collector.scheduler import Tick
from system_info_collector.schema import MEASUREMENTS
from system_info_collector.sinks.csv import RowEncoder

FAMILIES = "cpu,memory,disk,diskio"
_CPU_COLUMNS = 10
_CPU_TOTAL = 8
_SECTOR = 512


class Floor:
    """The hand-made lower bound (module docstring): state kept between ticks, one call a tick."""

    def __init__(self, proc: str, root: str, host: str) -> None:
        self._fds = {
            name: os.open(os.path.join(proc, name), os.O_RDONLY)
            for name in ("stat", "meminfo", "diskstats")
        }
        self._host = host
        self._mounts = self._mount_plan(proc, root)
        self._cpu_prev: list[int] | None = None
        self._cpu_names: list[str] = []
        self._cpu_format = ""
        self._io_prev: list[int] | None = None
        self._io_format = ""
        self._io_when = 0.0
        self._disk_format = "".join(
            f"%s,{self._host},{point},{device},{fstype},%d,%d,%d,%d,%r,%d,%d,%d,%r,{{}},1000\n"
            for point, device, fstype, _ in self._mounts
        )

    @staticmethod
    def _mount_plan(proc: str, root: str) -> list[tuple[str, str, str, str]]:
        plan = []
        with open(os.path.join(proc, "1/mountinfo"), encoding="utf-8") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                point = left.split()[4]
                fstype, device = right.split()[:2]
                if fstype in ("ext4", "xfs"):
                    plan.append((point, device, fstype, os.path.join(root, point.lstrip("/"))))
        return plan

    def _read(self, name: str) -> str:
        return os.pread(self._fds[name], 1 << 20, 0).decode()

    def tick(self, stamp: str) -> tuple[bytes, int]:
        parts: list[str] = []
        n = self._cpu(stamp, parts) + self._memory(stamp, parts)
        n += self._disk(stamp, parts) + self._diskio(stamp, parts)
        return "".join(parts).encode(), n

    @staticmethod
    def _proven(values: list[float], percents: list[float] | None) -> bool:
        if not set(map(type, values)) <= {int, float}:
            return False
        if not values or not math.isfinite(sum(values)) or min(values) < 0:
            return False
        return not percents or max(percents) <= 100 + 1e-6

    def _cpu(self, stamp: str, out: list[str]) -> int:
        text = self._read("stat")
        tokens = " ".join(x for x in text.splitlines() if x.startswith("cpu")).split()
        names = tokens[:: _CPU_COLUMNS + 1]
        del tokens[:: _CPU_COLUMNS + 1]
        flat = list(map(int, tokens))
        prev, self._cpu_prev = self._cpu_prev, flat
        if prev is None or len(prev) != len(flat):
            self._cpu_names = ["cpu-total", *names[1:]]
            self._cpu_format = "".join(
                f"%s,{self._host},{name},{','.join(['%r'] * 11)},{{}},1000\n"
                for name in self._cpu_names
            )
            return 0
        deltas = list(map(sub, flat, prev))
        columns = [deltas[i::_CPU_COLUMNS] for i in range(_CPU_COLUMNS)]
        totals = list(map(sum, zip(*columns[:_CPU_TOTAL], strict=True)))
        busy = map(sub, map(sub, totals, columns[3]), columns[4])
        shares = [list(map(truediv, map(mul, repeat(100.0), c), totals)) for c in (*columns, busy)]
        values = list(chain.from_iterable(shares))
        if min(deltas) < 0 or min(totals) <= 0 or not self._proven(values, values):
            return 0
        rows = list(chain.from_iterable(zip(repeat(stamp), *shares)))
        out.append(self._cpu_format % tuple(rows))
        return len(self._cpu_names)

    def _memory(self, stamp: str, out: list[str]) -> int:
        info = {}
        for line in self._read("meminfo").splitlines():
            key, _, rest = line.partition(":")
            info[key] = int(rest.split()[0]) * 1024
        total, free, avail = info["MemTotal"], info["MemFree"], info["MemAvailable"]
        buffers, cached = info["Buffers"], info["Cached"] + info.get("SReclaimable", 0)
        used = total - free - buffers - cached
        swap_total, swap_free = info["SwapTotal"], info["SwapFree"]
        swap_used = swap_total - swap_free
        values = [
            total,
            avail,
            used,
            free,
            buffers,
            cached,
            info.get("Shmem", 0),
            100.0 * (total - avail) / total,
            swap_total,
            swap_used,
            swap_free,
            100.0 * swap_used / swap_total if swap_total else 0.0,
        ]
        if not self._proven(values, [values[7], values[11]]):
            return 0
        row = f"%s,{self._host},%d,%d,%d,%d,%d,%d,%d,%r,%d,%d,%d,%r,{{}},1000\n"
        out.append(row % (stamp, *values))
        return 1

    def _disk(self, stamp: str, out: list[str]) -> int:
        numbers: list[float] = []
        percents: list[float] = []
        for _, _, _, path in self._mounts:
            st = os.statvfs(path)
            size = st.f_frsize
            total, free, avail = st.f_blocks * size, st.f_bfree * size, st.f_bavail * size
            used = total - free
            pct = 100.0 * used / (used + avail) if used + avail else 0.0
            inodes_used = st.f_files - st.f_ffree
            ipct = 100.0 * inodes_used / st.f_files if st.f_files else 0.0
            numbers += (total, used, free, avail, pct, st.f_files, inodes_used, st.f_ffree, ipct)
            percents += (pct, ipct)
        if not self._proven(numbers, percents):
            return 0
        per_mount = zip(*[iter(numbers)] * 9, strict=True)
        out.append(
            self._disk_format % tuple(chain.from_iterable(map(add, repeat((stamp,)), per_mount)))
        )
        return len(self._mounts)

    def _diskio(self, stamp: str, out: list[str]) -> int:
        now = time.monotonic()
        lines = self._read("diskstats").splitlines()
        tokens = " ".join(lines).split()
        width = len(tokens) // len(lines)
        devices = tokens[2::width]
        # reads, sectors read, ms reading, writes, sectors written, ms writing, ms doing I/O
        picked = [tokens[i::width] for i in (3, 5, 6, 7, 9, 10, 12)]
        flat = list(map(int, chain.from_iterable(picked)))
        prev, self._io_prev = self._io_prev, flat
        elapsed, self._io_when = now - self._io_when, now
        n = len(devices)
        if prev is None or len(prev) != len(flat):
            self._io_format = "".join(
                f"%s,{self._host},{d},%d,%d,%d,%d,%r,%r,%r,%r,%r,%r,%r,%r,{{}},1000\n"
                for d in devices
            )
            return 0
        reads, sread, msr, writes, swritten, msw, msio = (
            flat[i * n : (i + 1) * n] for i in range(7)
        )
        rate = repeat(1 / elapsed)
        read_bytes = list(map(mul, sread, repeat(_SECTOR)))
        written = list(map(mul, swritten, repeat(_SECTOR)))
        deltas = list(map(sub, flat, prev))
        d_reads, d_sread, _, d_writes, d_swritten, _, d_io = (
            deltas[i * n : (i + 1) * n] for i in range(7)
        )
        util = list(map(min, repeat(100.0), map(truediv, d_io, repeat(elapsed * 10))))
        columns = [
            reads,
            writes,
            read_bytes,
            written,
            list(map(truediv, msr, repeat(1000))),
            list(map(truediv, msw, repeat(1000))),
            list(map(truediv, msio, repeat(1000))),
            list(map(mul, map(mul, d_sread, repeat(_SECTOR)), rate)),
            list(map(mul, map(mul, d_swritten, repeat(_SECTOR)), rate)),
            list(map(mul, d_reads, rate)),
            list(map(mul, d_writes, rate)),
            util,
        ]
        if min(deltas) < 0 or not self._proven(list(chain.from_iterable(columns)), util):
            return 0
        out.append(self._io_format % tuple(chain.from_iterable(zip(repeat(stamp), *columns))))
        return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpus", type=int, default=256)
    ap.add_argument("--disks", type=int, default=64)
    ap.add_argument("--mounts", type=int, default=64)
    ap.add_argument("--ticks", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pause", type=float, default=0.0, help="seconds of sleep before each tick")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        host = SyntheticHost(tmp, args.cpus, args.disks, args.mounts)
        host.create()
        proc, root = f"{tmp}/proc", f"{tmp}/root"
        settings = load_settings(
            {
                "SIC_HOST_PROC": proc,
                "SIC_HOST_ROOT": root,
                "SIC_SINKS": "csv",
                "SIC_COLLECTORS": FAMILIES,
                "SIC_CSV_DIR": f"{tmp}/csv",
                "SIC_OVERHEAD_BUDGET": "100%",
            }  # every family every tick, as the others
        )
        agent = Agent(settings, build_providers(settings), [], Metrics(), host="bench")
        agent.expose_latest = False
        agent.start()
        encoders = {
            m: RowEncoder(MEASUREMENTS[m].label_columns, [f.name for f in MEASUREMENTS[m].fields])
            for m in FAMILIES.split(",")
        }

        def collector(i: int) -> int:
            tick = Tick(i, datetime.fromtimestamp(1_700_000_000 + i, UTC), 0.0, 0.0)
            records = agent.tick(tick)
            groups: dict[str, list[Record]] = {}
            for r in records:
                groups.setdefault(r.measurement, []).append(r)
            for m, batch in groups.items():
                encoders[m].encode(batch)
            return len(records)

        psutil.PROCFS_PATH = proc
        psutil.cpu_times_percent(percpu=True)
        psutil.cpu_times_percent()

        def plain_psutil(i: int) -> int:
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            batch = psutil_rows(root, 1_700_000_000 + i)
            for _, row in batch:
                writer.writerow(row.values())
            buffer.getvalue().encode()
            return len(batch)

        floor = Floor(proc, root, "bench")

        def hand_made(i: int) -> int:
            return floor.tick(f"2023-11-14T22:13:{i % 60:02d}.000Z")[1]

        contenders: dict[str, Callable[[int], int]] = {
            "collector": collector,
            "psutil": plain_psutil,
            "floor": hand_made,
        }
        results: dict[str, list[float]] = {name: [] for name in contenders}
        counts: dict[str, int] = {}
        step = 0
        for work in contenders.values():  # warm-up, and the first reading of counters
            for _ in range(3):
                host.advance()
                host.write()
                step += 1
                work(step)
        for _ in range(args.rounds):
            for name, work in contenders.items():
                spent, records = 0.0, 0
                for _ in range(args.ticks):
                    host.advance()
                    host.write()
                    step += 1
                    if args.pause:
                        time.sleep(args.pause)
                    started = time.thread_time()
                    records += work(step)
                    spent += time.thread_time() - started
                results[name].append(1e6 * spent / records)
                counts[name] = records // args.ticks
        agent.close()
        floor_psutil = min(results["psutil"])
        print(
            f"{args.cpus} CPUs / {args.disks} disks / {args.mounts} mounts, "
            f"{args.rounds} rounds of {args.ticks} ticks"
            + (f", {args.pause:g} s sleep before each tick" if args.pause else "")
        )
        print("| contender | records/tick | best µs/record | median µs/record | best ÷ psutil |")
        print("|---|---:|---:|---:|---:|")
        for name, values in results.items():
            best = min(values)
            print(
                f"| {name} | {counts[name]} | {best:.2f} | {statistics.median(values):.2f} "
                f"| {best / floor_psutil:.2f} |"
            )


if __name__ == "__main__":
    main()
