"""Where the collector's RSS goes with both sinks: ``/proc/PID/smaps`` by mapping, side by side.

    .venv/bin/python bench/rss_smaps.py --seconds 20 [--dsn "host=… dbname=…"]
    .venv/bin/python bench/rss_smaps.py --variant binary= --variant python=PSYCOPG_IMPL=python

Starts a throwaway PostgreSQL (``--dsn``, else tests/integration/conftest.py's ``start_server``),
then one ``system-info-collector run`` per ``--variant NAME=K=V,K=V`` (extra environment; CSV +
PostgreSQL sinks at 1 s on this host's /proc, ``/metrics`` on a free port, product defaults
otherwise), all at once; after ``--seconds`` it reads every process's ``VmRSS`` and its smaps,
and prints the Rss of each mapping group (anonymous memory and heap, then each file by name,
largest first) next to each other, each process's CPU (utime + stime after ``--warmup``), and
the modules that loaded an OpenSSL copy.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from run import cpu_seconds, free_port, status_kb  # bench/run.py
from scale import collector_env, start_postgres, stop, stop_postgres

EXE = Path(sys.executable).with_name("system-info-collector")


class Proc:
    def __init__(self, name: str, popen: subprocess.Popen[bytes]) -> None:
        self.name, self.popen, self.csv_dir = name, popen, ""


def smaps(pid: int) -> Counter[str]:
    """Rss in KiB per mapping group: a file by its base name (versions and hashes kept), or
    ``[anon+heap]`` for anonymous memory, the heap and the stack."""
    out = Counter[str]()
    group = "[anon+heap]"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", first):
                parts = line.split(None, 5)
                path = parts[5].strip() if len(parts) > 5 else ""
                group = os.path.basename(path) if path.startswith("/") else "[anon+heap]"
            elif first == "Rss:":
                out[group] += int(line.split()[1])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=10.0, help="CPU counted after this")
    ap.add_argument("--dsn")
    ap.add_argument("--variant", action="append", default=[], help="NAME=K=V,K=V (repeatable)")
    ap.add_argument("--top", type=int, default=18)
    args = ap.parse_args()
    variants: dict[str, dict[str, str]] = {}
    for spec in args.variant or ["default="]:
        name, _, env = spec.partition("=")
        variants[name] = dict(kv.split("=", 1) for kv in env.split(",") if kv)
    server, dsn = start_postgres(args.dsn)
    base = tempfile.mkdtemp(prefix="sic-rss-")
    procs: list[Proc] = []
    try:
        for i, (name, extra) in enumerate(variants.items()):
            env = collector_env(
                SIC_INTERVAL="1s",
                SIC_SINKS="csv,postgres",
                SIC_CSV_DIR=f"{base}/csv{i}",
                SIC_HTTP_LISTEN=f"127.0.0.1:{free_port()}",
                SIC_DB_DSN=dsn,
                SIC_DB_SCHEMA=f"bench_rss{i}",
                **extra,
            )
            popen = subprocess.Popen([str(EXE), "run"], env=env, stdout=subprocess.DEVNULL)
            procs.append(Proc(name, popen))
        time.sleep(args.warmup)
        cpu0 = {p.name: cpu_seconds(p.popen.pid) for p in procs}
        t0 = time.monotonic()
        time.sleep(max(0.0, args.seconds - args.warmup))
        cpu = {
            p.name: 100 * (cpu_seconds(p.popen.pid) - cpu0[p.name]) / (time.monotonic() - t0)
            for p in procs
        }
        rows = {p.name: smaps(p.popen.pid) for p in procs}
        rss = {p.name: status_kb(p.popen.pid, "VmRSS") / 1024 for p in procs}
        ssl_libs = {
            p.name: sorted({g for g in rows[p.name] if re.match(r"lib(ssl|crypto)[-.]", g)})
            for p in procs
        }
    finally:
        stop(procs)  # type: ignore[arg-type]
        stop_postgres(server)
    names = list(rows)
    total = Counter[str]()
    for r in rows.values():
        total.update(r)
    print("| mapping | " + " | ".join(f"{n} KiB" for n in names) + " |")
    print("|---|" + "---:|" * len(names))
    print("| **VmRSS (MB)** | " + " | ".join(f"**{rss[n]:.1f}**" for n in names) + " |")
    print(
        f"| CPU % of one core after {args.warmup:g} s | "
        + " | ".join(f"{cpu[n]:.3f}" for n in names)
        + " |"
    )
    for group, _ in total.most_common(args.top):
        print(f"| {group} | " + " | ".join(str(rows[n].get(group, 0)) for n in names) + " |")
    rest = {
        n: sum(v for g, v in rows[n].items() if g not in dict(total.most_common(args.top)))
        for n in names
    }
    print("| (all other mappings) | " + " | ".join(str(rest[n]) for n in names) + " |")
    for n in names:
        print(f"{n}: OpenSSL copies mapped: {', '.join(ssl_libs[n]) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
