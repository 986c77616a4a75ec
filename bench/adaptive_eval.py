"""Adaptive sampling against fixed intervals, AdaM-style (Trihinas et al. 2015).

One run, one spiky workload, four collectors side by side on the same host:

* ground truth: ``SIC_INTERVAL=100ms``;
* fixed 5 s, fixed 250 ms, and adaptive (5 s base, 250 ms bursts, ``SIC_ADAPTIVE_HOLD``).

The workload (``--seconds``, default 75): every ``--period`` seconds a spike -- a busy process on
every core for ``--burn`` seconds, and every other spike also ``--memory`` MiB touched and held.
Errors are computed against the ground truth at each of its samples: for CPU (a rate) the
estimate is the sample whose window ``(ts - interval_ms, ts]`` covers the instant; for memory (a
gauge) the newest sample at or before it, as a dashboard shows it. The agents' CPU comes from
``/proc/<pid>/stat``.

``--host real`` (default) loads this machine, whose other users spike too. ``--host synthetic``
is the quiet host: every agent reads a procfs tree (``bench/synthetic_host.py``, 2 CPUs) that
this script rewrites every 50 ms with the same schedule -- 10 % busy between spikes, 100 % in a
CPU spike, and in every other spike also 3 GB less ``MemAvailable`` with a 60 % memory stall
(PSI ``some`` total) -- so nothing but the workload crosses a threshold. Usage::

    .venv/bin/python bench/adaptive_eval.py --seconds 75
    .venv/bin/python bench/adaptive_eval.py --seconds 75 --host synthetic
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

from synthetic_host import BASE, JIFFIES_PER_STEP, STEP_SECONDS, SyntheticHost

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


class SpikyHost(SyntheticHost):
    """A quiet 2-CPU host whose counters follow the spike schedule (:func:`spiking`)."""

    def __init__(self, base: str, period: float, burn: float) -> None:
        super().__init__(base, cpus=2, disks=1, mounts=1)
        self.period, self.burn = period, burn
        self.began: float | None = None  # monotonic start of the workload (None: quiet)
        self.cpu_spike = self.memory_spike = False
        self._stall = {"cpu": BASE, "memory": BASE, "io": BASE}  # PSI some totals, µs

    def advance(self) -> None:
        self.step += 1
        self.cpu_spike, self.memory_spike = spiking(
            self.began, self.period, self.burn, time.monotonic()
        )
        for i, c in enumerate(self._cpu):
            user = JIFFIES_PER_STEP if self.cpu_spike else (1 if (self.step + i) % 2 else 0)
            c[0] += user  # 100 % in a spike, else 10 % busy
            c[3] += JIFFIES_PER_STEP - user
        for n in self._disk:
            n[9] += 5  # 10 % busy
        if self.memory_spike:
            self._stall["memory"] += 30_000  # 30 ms of each 50 ms: a 60 % stall

    def _meminfo(self) -> str:
        step, self.step = self.step, 0  # a quiet host: no drift between spikes
        try:
            text = super()._meminfo()
        finally:
            self.step = step
        if not self.memory_spike:
            return text
        lines = text.splitlines(keepends=True)
        for k, line in enumerate(lines):
            if line.startswith(("MemAvailable:", "MemFree:")):
                value = int(line.split()[1]) - 2_900_000  # ~3 GB taken, same width
                lines[k] = f"{line[:16]}{value:>{len(line) - 20}} kB\n"
        return "".join(lines)

    def write(self) -> None:
        super().write()
        for kind, total in self._stall.items():
            text = (
                f"some avg10=0.00 avg60=0.00 avg300=0.00 total={total}\n"
                f"full avg10=0.00 avg60=0.00 avg300=0.00 total={BASE}\n"
            )
            self._write_in_place(f"pressure/{kind}", text.encode())


def spiking(began: float | None, period: float, burn: float, now: float) -> tuple[bool, bool]:
    """(CPU spike, memory spike) at ``now``: a spike every ``period`` s, half a period after
    the start, ``burn`` s long; every other one also a memory spike."""
    if began is None or now < began:
        return False, False
    n, into = divmod(now - began - period / 2, period)
    cpu = n >= 0 and into < burn
    return cpu, cpu and n % 2 == 1


def start(
    name: str, env: dict[str, str], out: Path, hold: str, host: dict[str, str]
) -> subprocess.Popen[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("SIC_")}
    full.update(host)
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
        held = bytearray(mib << 20 if n % 2 else 0)  # touched: the pages are really used
        for i in range(0, len(held), 4096):
            held[i] = 1
        for p in procs:
            p.wait()
        del held
        n += 1


def rewrite(host: SpikyHost | None, stop: threading.Event) -> None:
    """Advance and rewrite the synthetic tree every 50 ms until ``stop``."""
    if host is None:
        return
    next_t = time.monotonic()
    while not stop.is_set():
        next_t += STEP_SECONDS
        stop.wait(max(0.0, next_t - time.monotonic()))
        host.advance()
        host.write()
    host.close()


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
    ap.add_argument("--host", choices=("real", "synthetic"), default="real")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        synthetic, host_env = None, {}
        if args.host == "synthetic":
            synthetic = SpikyHost(str(Path(tmp) / "host"), args.period, args.burn)
            (synthetic.proc / "pressure").mkdir(parents=True)
            synthetic.create()
            host_env = {
                "SIC_HOST_PROC": str(synthetic.proc),
                "SIC_HOST_ROOT": str(synthetic.root),
            }
        stop = threading.Event()
        writer = threading.Thread(target=rewrite, args=(synthetic, stop))
        writer.start()
        procs = {
            n: start(n, env, Path(tmp) / f"{i}.jsonl", args.hold, host_env)
            for i, (n, env) in enumerate(RUNS.items())
        }
        time.sleep(6)  # every agent past its first base tick (not synchronisation of results)
        before = {n: cpu_seconds(p.pid) for n, p in procs.items()}
        began, t0 = time.monotonic(), time.time()
        if synthetic is not None:
            synthetic.began = began
            time.sleep(args.seconds - args.period)  # the schedule runs in the writer
        else:
            workload(args.seconds, args.period, args.burn, args.memory)
        took, t1 = time.monotonic() - began, time.time()
        cpu = {n: 100 * (cpu_seconds(p.pid) - before[n]) / took for n, p in procs.items()}
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(30)
        stop.set()
        writer.join()
        data = {n: series(Path(tmp) / f"{i}.jsonl") for i, n in enumerate(RUNS)}
    for d in data.values():  # the workload's span only
        for m in d:
            d[m] = [s for s in d[m] if t0 <= s[0] <= t1]
    truth = data["truth 100 ms"]
    if synthetic is not None:
        print(
            f"synthetic quiet host, workload {took:.0f} s, spike every {args.period:g} s "
            f"({args.burn:g} s at 100 % CPU, every other one -3 GB available + 60 % memory "
            f"stall), hold {args.hold}"
        )
    else:
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
