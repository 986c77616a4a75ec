"""Scale benchmark: cost per record on a big synthetic host, and the collector next to collectd.

    make bench-scale                                  # everything below, ~7 min
    .venv/bin/python bench/scale.py --only synthetic --cpus 256 --intervals 250ms --seconds 40
    .venv/bin/python bench/scale.py --only collectd --seconds 60 [--dsn "host=… dbname=…"]
    .venv/bin/python bench/scale.py --only collectd --collectd-seconds 90 --db-flush 1s,5s,10s

**synthetic**: for each host size (CPUs/disks/mounts: 2/2/4, 64/16/16, 256/64/64, 1024/64/64)
and interval (1 s, 250 ms), bench/synthetic_host.py writes a procfs tree whose counters move
every 50 ms (rewritten in place), and two processes read it side by side in the same window:
``system-info-collector run`` (``SIC_HOST_PROC``/``SIC_HOST_ROOT`` on the tree, CSV sink,
``/metrics`` on a free port for its tick histogram; host metrics off, as the psutil loop exposes
nothing either -- ``--host-metrics`` turns them on; ``SIC_COLLECTORS=cpu,memory,disk,diskio``,
the reads the psutil loop makes -- ``--collectors default`` runs every default collector) and
bench/psutil_floor.py (``PROCFS_PATH`` on
the tree, ``disk_usage`` under the fake root, CSV rows). Reported per process: CPU % of one core
(utime+stime from ``/proc/PID/stat`` over the window), µs of CPU per record (CSV lines written in
the window), steady RSS (median of the second half of the window); for the collector also the
tick duration p99 (``sic_tick_duration_seconds``: the bucket bound), the mean tick, overruns and
how many ticks of the window wrote every entity of every measurement.

**collectd**: on this machine's own /proc, collectd (``/usr/sbin/collectd -f``; ``cpu`` per CPU
in percent, ``memory``, ``df``, ``disk`` → ``csv``, Interval 1), the collector with the CSV sink
and the collector with CSV + PostgreSQL (a throwaway server: ``--dsn``, else
tests/integration/conftest.py's ``start_server``: testcontainers or a local ``initdb``), all three
side by side in one window at 1 s, product defaults otherwise (``/metrics`` on).
``--db-flush 1s,5s,10s`` runs one CSV + PostgreSQL collector per ``SIC_DB_FLUSH_INTERVAL``
(each in its own schema) in the same window instead of one with the default.

Every row carries the machine's load: the 1-minute load average at the end of the window and how
busy all CPUs were during it (``/proc/stat``), since the window is shared with whatever else runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from run import cpu_seconds, free_port, status_kb  # bench/run.py

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EXE = Path(sys.executable).with_name("system-info-collector")
COLLECTD = "/usr/sbin/collectd"
SIZES = {2: (2, 4), 64: (16, 16), 256: (64, 64), 1024: (64, 64)}  # cpus: (disks, mounts)
# The four families collectd's configuration below reads (cpu, memory, df, disk) and the psutil
# loop reads on the synthetic host; ours are named cpu, memory, disk (df) and diskio (disk).
# "default" runs every default collector (the synthetic host has the files of all nine).
COLLECTD_FAMILIES = "cpu,memory,disk,diskio"


# -- measuring ---------------------------------------------------------------------------
def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs of this machine."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(values) - values[3] - values[4], sum(values)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    csv_dir: str | None = None
    port: int | None = None
    cpu0: float = 0.0
    lines0: int = 0
    rss: list[int] = field(default_factory=list)

    def lines(self) -> int:
        if not self.csv_dir:
            return 0
        total = 0
        for path in Path(self.csv_dir).rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                with open(path, "rb") as f:
                    total += f.read().count(b"\n")
        return total


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def value(m: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    return sum(v for _, v in m.get(name, []))


def tick_stats(before: dict, after: dict) -> dict[str, float]:  # type: ignore[type-arg]
    """Tick duration p99 (bucket bound), mean, overruns and skipped slots within the window."""
    name = "sic_tick_duration_seconds"

    def buckets(m: dict) -> dict[float, float]:  # type: ignore[type-arg]
        return {float(lab["le"]): v for lab, v in m.get(name + "_bucket", [])}

    b0, b1 = buckets(before), buckets(after)
    diff = sorted((le, b1[le] - b0.get(le, 0.0)) for le in b1)
    count = value(after, name + "_count") - value(before, name + "_count")
    total = value(after, name + "_sum") - value(before, name + "_sum")
    p99 = next((le for le, n in diff if n >= 0.99 * count), float("inf")) if count else 0.0
    return {
        "ticks": count,
        "p99": p99,
        "mean": total / count if count else 0.0,
        "overruns": value(after, "sic_tick_overruns_total")
        - value(before, "sic_tick_overruns_total"),
        "skipped": value(after, "sic_ticks_skipped_total")
        - value(before, "sic_ticks_skipped_total"),
    }


def complete_ticks(csv_dir: str, t0: float, t1: float, expected: dict[str, int]) -> tuple[int, int]:
    """(ticks with every entity of every measurement, ticks) among rows stamped in [t0, t1)."""
    lo, hi = (datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S") for t in (t0, t1))
    per_tick: dict[str, Counter[str]] = {}
    for measurement in expected:
        path = Path(csv_dir, f"{measurement}.csv")
        if not path.exists():
            continue
        with open(path) as f:
            next(f, None)
            for line in f:
                ts = line[:24]
                if lo <= ts < hi:
                    per_tick.setdefault(ts, Counter())[measurement] += 1
    full = sum(1 for c in per_tick.values() if all(c[m] == n for m, n in expected.items()))
    return full, len(per_tick)


def measure(procs: list[Proc], seconds: float, warmup: float) -> dict[str, Any]:
    """Run the window; fills each Proc's CPU/RSS/lines; returns window facts."""
    deadline = time.monotonic() + warmup
    for p in procs:  # wait for the HTTP endpoints, then the rest of the warm-up
        while p.port and time.monotonic() < deadline + 30:
            try:
                scrape(p.port)
                break
            except OSError:
                time.sleep(0.2)
    time.sleep(max(0.0, deadline - time.monotonic()))
    before = {p.name: scrape(p.port) for p in procs if p.port}
    busy0 = machine_busy()
    t0_wall, t0 = time.time(), time.monotonic()
    for p in procs:
        p.cpu0, p.lines0 = cpu_seconds(p.popen.pid), p.lines()
    while time.monotonic() - t0 < seconds:
        time.sleep(1.0)
        for p in procs:
            if p.popen.poll() is not None:
                raise SystemExit(f"{p.name} exited early with {p.popen.returncode}")
            p.rss.append(status_kb(p.popen.pid, "VmRSS"))
    elapsed = time.monotonic() - t0
    results: dict[str, object] = {"elapsed": elapsed, "t0": t0_wall, "t1": time.time()}
    for p in procs:
        cpu = cpu_seconds(p.popen.pid) - p.cpu0
        lines = p.lines() - p.lines0
        results[p.name] = {
            "cpu_pct": 100.0 * cpu / elapsed,
            "us_per_record": 1e6 * cpu / lines if lines else float("nan"),
            "records": lines,
            "rss": statistics.median(p.rss[len(p.rss) // 2 :]) / 1024,
            "peak": status_kb(p.popen.pid, "VmHWM") / 1024,
        }
    busy1 = machine_busy()
    results["machine_busy"] = 100.0 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
    results["load1"] = os.getloadavg()[0]
    for p in procs:
        if p.port:
            results[p.name]["ticks"] = tick_stats(before[p.name], scrape(p.port))  # type: ignore[index]
    return results


def stop(procs: list[Proc]) -> None:
    for p in procs:
        if p.popen.poll() is None:
            p.popen.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.popen.kill()
            p.popen.wait()


def collector_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIC_")}
    env.update(SIC_LOG_LEVEL="WARNING", SIC_CSV_COMPRESS="none", **extra)
    return env


def parse_interval(text: str) -> float:
    return float(text[:-2]) / 1000 if text.endswith("ms") else float(text.rstrip("s"))


# -- synthetic host ----------------------------------------------------------------------
def run_synthetic(
    cpus: int,
    interval: str,
    seconds: float,
    warmup: float,
    host_metrics: bool,
    env_extra: list[str],
    collectors: str = COLLECTD_FAMILIES,
) -> dict[str, object]:
    disks, mounts = SIZES.get(cpus, (64, 64))
    base = tempfile.mkdtemp(prefix=f"sic-scale-{cpus}-")
    procs: list[Proc] = []
    generator = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "synthetic_host.py"),
            f"{base}/host",
            f"--cpus={cpus}",
            f"--disks={disks}",
            f"--mounts={mounts}",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert generator.stdout is not None
        if generator.stdout.readline().strip() != b"ready":
            raise SystemExit("synthetic host generator failed")
        port = free_port()
        env = collector_env(
            SIC_INTERVAL=interval,
            SIC_SINKS="csv",
            SIC_CSV_DIR=f"{base}/collector",
            SIC_HOST_PROC=f"{base}/host/proc",
            SIC_HOST_ROOT=f"{base}/host/root",
            SIC_HTTP_LISTEN=f"127.0.0.1:{port}",
            SIC_PROMETHEUS_HOST_METRICS="node" if host_metrics else "off",
            **({} if collectors == "default" else {"SIC_COLLECTORS": collectors}),
        )
        for item in env_extra:
            key, _, val = item.partition("=")
            env[key] = val
        devnull = subprocess.DEVNULL
        procs.append(
            Proc(
                "collector",
                subprocess.Popen([str(EXE), "run"], env=env, stdout=devnull),
                f"{base}/collector",
                port,
            )
        )
        procs.append(
            Proc(
                "psutil",
                subprocess.Popen(
                    [
                        sys.executable,
                        str(HERE / "psutil_floor.py"),
                        str(parse_interval(interval)),
                        f"--procfs={base}/host/proc",
                        f"--root={base}/host/root",
                        f"--csv={base}/psutil",
                    ],
                    stdout=devnull,
                ),
                f"{base}/psutil",
            )
        )
        gen = Proc("generator", generator)
        procs.append(gen)
        result = measure(procs, seconds, warmup)
        expected = {"cpu": cpus + 1, "memory": 1, "disk": mounts, "diskio": disks}
        result["complete"] = complete_ticks(
            f"{base}/collector",
            float(result["t0"]),
            float(result["t1"]),
            expected,
        )
        result.update(
            cpus=cpus,
            disks=disks,
            mounts=mounts,
            interval=interval,
            slots=round(float(result["elapsed"]) / parse_interval(interval)),
        )
        return result
    finally:
        stop(procs if procs else [Proc("generator", generator)])
        shutil.rmtree(base, ignore_errors=True)


def print_synthetic(rows: list[dict]) -> None:  # type: ignore[type-arg]
    print(
        "\n| CPUs/disks/mounts | interval | records/tick | collector CPU % | psutil CPU % | ratio "
        "| collector µs/record | psutil µs/record | collector RSS MB | psutil RSS MB "
        "| tick p99 / mean ms | overruns | complete / written ticks of slots "
        "| machine busy % / load1 |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        c, p, t = r["collector"], r["psutil"], r["collector"]["ticks"]
        per_tick = r["cpus"] + 1 + 1 + r["disks"] + r["mounts"]
        full, seen = r["complete"]
        print(
            f"| {r['cpus']}/{r['disks']}/{r['mounts']} | {r['interval']} | {per_tick} "
            f"| {c['cpu_pct']:.2f} | {p['cpu_pct']:.2f} | {c['cpu_pct'] / p['cpu_pct']:.2f} "
            f"| {c['us_per_record']:.1f} | {p['us_per_record']:.1f} | {c['rss']:.1f} "
            f"| {p['rss']:.1f} | ≤ {t['p99'] * 1000:g} / {t['mean'] * 1000:.2f} "
            f"| {t['overruns']:.0f} | {full}/{seen} of {r['slots']} "
            f"| {r['machine_busy']:.0f} / {r['load1']:.2f} |"
        )


# -- collectd ----------------------------------------------------------------------------
COLLECTD_CONF = """\
Hostname "bench"
FQDNLookup false
Interval 1
BaseDir "{base}"
PIDFile "{base}/collectd.pid"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin cpu
LoadPlugin memory
LoadPlugin df
LoadPlugin disk
LoadPlugin csv
<Plugin cpu>
  ReportByCpu true
  ReportByState true
  ValuesPercentage true
</Plugin>
<Plugin csv>
  DataDir "{base}/csv"
  StoreRates true
</Plugin>
"""


def _load_ci_env() -> None:
    """testcontainers settings written by .ci/bootstrap.sh (the image to use), if present."""
    path = REPO / ".ci" / ".env"
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, val = line.partition("=")
            if sep and not key.startswith("#") and key != "PATH":
                os.environ.setdefault(key, val.strip('"'))


def start_postgres(dsn: str | None) -> tuple[Any, str]:
    """``(server, dsn)``: ``dsn`` itself (server None) or a throwaway server started by
    tests/integration/conftest.py's ``start_server`` (stop it with :func:`stop_postgres`)."""
    if dsn is not None:
        return None, dsn
    _load_ci_env()
    sys.path.insert(0, str(REPO))
    from tests.integration.conftest import start_server

    server, reasons = start_server()
    if server is None:
        raise SystemExit(f"no PostgreSQL server: {'; '.join(reasons)}")
    return server, server.dsn()


def stop_postgres(server: Any) -> None:
    if server is not None:
        from tests.integration.conftest import stop_server

        stop_server(server)


def family_suffix(families: str) -> str:
    return "" if families == "default" else f" [{families}]"


def pg_name(flush: str | None, families: str = "default") -> str:
    return (
        "collector CSV+PostgreSQL" + (f" flush {flush}" if flush else "") + family_suffix(families)
    )


def csv_name(families: str = "default") -> str:
    return "collector CSV" + family_suffix(families)


def run_collectd(
    seconds: float,
    warmup: float,
    dsn: str | None,
    flushes: list[str | None],
    families: list[str],
) -> dict[str, object]:
    server, dsn = start_postgres(dsn)
    base = tempfile.mkdtemp(prefix="sic-collectd-")
    procs: list[Proc] = []
    try:
        Path(base, "collectd.conf").write_text(COLLECTD_CONF.format(base=base))
        procs.append(
            Proc(
                "collectd",
                subprocess.Popen(
                    [COLLECTD, "-f", "-C", f"{base}/collectd.conf"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                ),
                f"{base}/csv",
            )
        )
        runs: list[tuple[str, str, dict[str, str]]] = []
        schemas = 0
        for fam in families:
            chosen = {} if fam == "default" else {"SIC_COLLECTORS": fam}
            runs.append((csv_name(fam), "csv", dict(chosen)))
            for flush in flushes:
                extra = {"SIC_DB_DSN": dsn, "SIC_DB_SCHEMA": f"bench_scale{schemas or ''}"}
                schemas += 1
                if flush:
                    extra["SIC_DB_FLUSH_INTERVAL"] = flush
                runs.append((pg_name(flush, fam), "csv,postgres", {**extra, **chosen}))
        for i, (name, sinks, extra) in enumerate(runs):
            port = free_port()
            csv_dir = f"{base}/sic-{i}-{sinks.replace(',', '-')}"
            env = collector_env(
                SIC_INTERVAL="1s",
                SIC_SINKS=sinks,
                SIC_CSV_DIR=csv_dir,
                SIC_HTTP_LISTEN=f"127.0.0.1:{port}",
                **extra,
            )
            procs.append(
                Proc(
                    name,
                    subprocess.Popen([str(EXE), "run"], env=env, stdout=subprocess.DEVNULL),
                    csv_dir,
                    port,
                )
            )
        return measure(procs, seconds, warmup)
    finally:
        stop(procs)
        shutil.rmtree(base, ignore_errors=True)
        stop_postgres(server)


def print_collectd(r: dict[str, Any], flushes: list[str | None], families: list[str]) -> None:
    ref = r["collectd"]["cpu_pct"]
    print(
        f"\nwindow {r['elapsed']:.0f} s at 1 s; machine busy {r['machine_busy']:.0f} % "
        f"of {os.cpu_count()} CPUs, load1 {r['load1']:.2f}\n"
    )
    print(
        "| process | CPU % of one core | vs collectd | steady RSS MB | peak RSS MB "
        "| lines written | tick p99 / mean ms | overruns |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    names = ["collectd"]
    for fam in families:
        names += [csv_name(fam), *(pg_name(f, fam) for f in flushes)]
    for name in names:
        p = r[name]
        t = p.get("ticks")
        ticks = (
            f"≤ {t['p99'] * 1000:g} / {t['mean'] * 1000:.2f} | {t['overruns']:.0f}"
            if t
            else "n/a | n/a"
        )
        print(
            f"| {name} | {p['cpu_pct']:.3f} | {p['cpu_pct'] / ref:.2f} | {p['rss']:.1f} "
            f"| {p['peak']:.1f} | {p['records']} | {ticks} |"
        )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--only", choices=("synthetic", "collectd"))
    ap.add_argument("--cpus", default="2,64,256,1024")
    ap.add_argument("--intervals", default="1s,250ms")
    ap.add_argument("--seconds", type=float, default=30.0, help="window per configuration")
    ap.add_argument("--collectd-seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--host-metrics", action="store_true", help="SIC_PROMETHEUS_HOST_METRICS on")
    ap.add_argument("--dsn", help="PostgreSQL for the collectd comparison (else one is started)")
    ap.add_argument("--env", action="append", default=[], help="extra K=V for the collector")
    ap.add_argument(
        "--collectors",
        default=COLLECTD_FAMILIES,
        help="SIC_COLLECTORS of the collector on the synthetic host (default: "
        f"{COLLECTD_FAMILIES}, the reads the psutil loop makes; 'default': the product's nine)",
    )
    ap.add_argument(
        "--db-flush",
        default="",
        help="comma-separated SIC_DB_FLUSH_INTERVAL values: one CSV+PostgreSQL collector each, "
        "side by side in the collectd window (default: one, with the default interval)",
    )
    ap.add_argument(
        "--families",
        default=f"default;{COLLECTD_FAMILIES}",
        help="';'-separated SIC_COLLECTORS sets for the collectd window, 'default' for the "
        f"default collectors (default: default;{COLLECTD_FAMILIES}, the families collectd reads)",
    )
    args = ap.parse_args()
    import platform

    print(
        f"{platform.node()} · {os.cpu_count()} CPUs · Python {platform.python_version()} · "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    if args.only in (None, "synthetic"):
        rows = []
        for cpus in (int(c) for c in args.cpus.split(",")):
            for interval in args.intervals.split(","):
                rows.append(
                    run_synthetic(
                        cpus,
                        interval,
                        args.seconds,
                        args.warmup,
                        args.host_metrics,
                        args.env,
                        args.collectors,
                    )
                )
                print_synthetic(rows[-1:])
        print("\nsynthetic host, all configurations:")
        print_synthetic(rows)
    if args.only in (None, "collectd"):
        if not os.path.exists(COLLECTD):
            print(f"\n{COLLECTD} not installed: collectd comparison skipped")
        else:
            flushes: list[str | None] = [f or None for f in args.db_flush.split(",")]
            families = [f for f in args.families.split(";") if f]
            result = run_collectd(args.collectd_seconds, args.warmup, args.dsn, flushes, families)
            print_collectd(result, flushes, families)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
