"""Adaptive sampling against fixed intervals, AdaM-style (Trihinas et al. 2015).

One run, one spiky workload, four collectors side by side on the same host:

* ground truth: ``SIC_INTERVAL=100ms``;
* fixed 5 s, fixed 250 ms, and adaptive (5 s base, 250 ms bursts, ``SIC_ADAPTIVE_HOLD``).

The workload (``--seconds``, default 75): every ``--period`` seconds a spike -- a busy process on
every core for ``--burn`` seconds, and every other spike also ``--memory`` MiB touched and held.
Errors are computed against the ground truth at each of its samples: for CPU (a rate) the
estimate is the sample whose window ``(ts - interval_ms, ts]`` covers the instant; for memory (a
gauge) the newest sample at or before it, as a dashboard shows it. The agents' CPU comes from
``/proc/<pid>/stat``. Usage::

    .venv/bin/python bench/adaptive_eval.py --seconds 75
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

EXE = str(Path(sys.executable).with_name("system-info-collector"))
RUNS = {
    "truth 100 ms": {"SIC_INTERVAL": "100ms"},
    "fixed 5 s": {"SIC_INTERVAL": "5s"},
    "fixed 250 ms": {"SIC_INTERVAL": "250ms"},
    "adaptive": {"SIC_INTERVAL": "5s", "SIC_ADAPTIVE": "on", "SIC_ADAPTIVE_INTERVAL": "250ms"},
}


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(name: str, env: dict[str, str], out: Path, hold: str) -> subprocess.Popen[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("SIC_")}
    full.update(
        SIC_SINKS="stdout",
        SIC_HTTP_LISTEN="",
        SIC_COLLECTORS="cpu,memory",
        SIC_ADAPTIVE_HOLD=hold,
        SIC_OVERHEAD_BUDGET="0",
        **env,
    )
    return subprocess.Popen(
        [EXE, "run"], env=full, stdout=out.open("wb"), stderr=subprocess.DEVNULL
    )


def workload(seconds: float, period: float, burn: float, mib: int) -> None:
    began = time.monotonic()
    n = 0
    while time.monotonic() - began < seconds - period:
        time.sleep(max(0.0, began + (n + 0.5) * period - time.monotonic()))  # the schedule
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    f"import time\nend = time.time() + {burn}\nwhile time.time() < end: pass",
                ]
            )
            for _ in range(os.cpu_count() or 1)
        ]
        held = bytearray(mib << 20) if n % 2 else b""  # touched: the pages are really used
        for i in range(0, len(held), 4096):
            held[i] = 1
        for p in procs:
            p.wait()
        del held
        n += 1


def series(path: Path) -> dict[str, list[tuple[float, float, float]]]:
    """measurement -> [(ts, interval s, value)] of cpu-total usage / memory used %."""
    out: dict[str, list[tuple[float, float, float]]] = {"cpu": [], "memory": []}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        ts = datetime.fromisoformat(r["ts"].replace("Z", "+00:00")).timestamp()
        if r["measurement"] == "cpu" and r.get("cpu") == "cpu-total":
            out["cpu"].append((ts, r["interval_ms"] / 1000, r["usage_percent"]))
        elif r["measurement"] == "memory":
            out["memory"].append((ts, r["interval_ms"] / 1000, r["used_percent"]))
    return out


def errors(
    truth: list[tuple[float, float, float]], est: list[tuple[float, float, float]], *, window: bool
) -> tuple[float, float]:
    times = [t for t, _, _ in est]
    diffs = []
    for t, _, value in truth:
        if window:  # the sample whose (ts - interval, ts] covers t
            i = bisect.bisect_left(times, t)
            if i == len(est) or est[i][0] - est[i][1] > t:
                continue
        else:  # the newest sample at or before t
            i = bisect.bisect_right(times, t) - 1
            if i < 0:
                continue
        diffs.append(abs(est[i][2] - value))
    return max(diffs), sum(diffs) / len(diffs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=75)
    ap.add_argument("--period", type=float, default=12)
    ap.add_argument("--burn", type=float, default=2.0)
    ap.add_argument("--memory", type=int, default=1024)
    ap.add_argument("--hold", default="3s")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        procs = {
            n: start(n, env, Path(tmp) / f"{i}.jsonl", args.hold)
            for i, (n, env) in enumerate(RUNS.items())
        }
        time.sleep(6)  # every agent past its first base tick (not synchronisation of results)
        before = {n: cpu_seconds(p.pid) for n, p in procs.items()}
        began, t0 = time.monotonic(), time.time()
        load = threading.Thread(
            target=workload, args=(args.seconds, args.period, args.burn, args.memory)
        )
        load.start()
        load.join()
        took, t1 = time.monotonic() - began, time.time()
        cpu = {n: 100 * (cpu_seconds(p.pid) - before[n]) / took for n, p in procs.items()}
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(30)
        data = {n: series(Path(tmp) / f"{i}.jsonl") for i, n in enumerate(RUNS)}
    for d in data.values():  # the workload's span only
        for m in d:
            d[m] = [s for s in d[m] if t0 <= s[0] <= t1]
    truth = data["truth 100 ms"]
    print(
        f"workload {took:.0f} s, spike every {args.period:g} s ({args.burn:g} s on "
        f"{os.cpu_count()} cores, every other one +{args.memory} MiB), hold {args.hold}"
    )
    print(
        "| run | CPU % error max / mean | memory % error max / mean | samples (cpu-total) "
        "| agent CPU, % of a core |"
    )
    print("|---|---|---|---|---|")
    for name, d in data.items():
        cmax, cmean = errors(truth["cpu"], d["cpu"], window=True)
        mmax, mmean = errors(truth["memory"], d["memory"], window=False)
        print(
            f"| {name} | {cmax:.1f} / {cmean:.2f} | {mmax:.2f} / {mmean:.3f} | "
            f"{len(d['cpu'])} | {cpu[name]:.2f} |"
        )


if __name__ == "__main__":
    main()
