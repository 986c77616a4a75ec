"""Benchmark: the collector's RSS through a long CSV outage and after the backlog drained,
this checkout next to another one (the peer: e.g. the release before), in one run.

    .venv/bin/python bench/bench_backlog.py --peer /path/to/other/checkout/src \
        --outage 120 --interval 100ms

Both run ``system-info-collector run`` (the CSV sink only, every collector, the given interval)
at the same time, each with its CSV directory on its own 16 MiB tmpfs (needs root). After
``--warmup`` seconds of normal writing (RSS "before"), a ballast file fills the tmpfs: every
write fails with ENOSPC and the sink keeps its backlog. ``VmRSS`` of each is read from
``/proc/PID/status`` every second. After ``--outage`` seconds the ballast is deleted, each
collector writes its backlog, and RSS is read again ``--settle`` seconds after the backlog
gauge (``sic_sink_backlog_records`` from /metrics) went back to 0. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).with_name("system-info-collector"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def gauge(port: int, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)]
    return sum(values) if values else None


@dataclass
class Run:
    label: str
    src: str
    work: Path
    interval: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    samples: list[int] = field(default_factory=list)
    records: float = 0.0
    dsn: str = ""  # set: the PostgreSQL sink instead of CSV, the outage is the server stopped
    extra: list[str] = field(default_factory=list)  # K=V for the collector
    container: str = ""

    @property
    def volume(self) -> Path:
        return self.work / "volume"

    def start(self) -> None:
        self.volume.mkdir()
        if not self.dsn:
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(self.volume)], check=True
            )
        self._start()

    def _start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SIC_", "HOST_"))}
        if self.dsn:
            env.update(
                SIC_SINKS="postgres",
                SIC_DB_DSN=self.dsn,
                SIC_DB_SCHEMA=f"b{self.port}",
                SIC_DB_SPOOL_DIR=str(self.work / "spool"),
                SIC_DB_CONNECT_TIMEOUT="1s",
            )
        else:
            env["SIC_SINKS"] = "csv"
        env.update(
            PYTHONPATH=self.src,
            SIC_INTERVAL=self.interval,
            SIC_CSV_DIR=str(self.volume / "csv"),
            SIC_HTTP_LISTEN=f"127.0.0.1:{self.port}",
            SIC_LOG_LEVEL="warning",
            SIC_RETRY_MAX_WAIT="2s",
            **dict(e.split("=", 1) for e in self.extra),
        )
        log = open(self.work / "log.jsonl", "wb")  # noqa: SIM115 -- closed with the process
        self.proc = subprocess.Popen([EXE, "run"], env=env, stdout=log, stderr=log)

    def sample(self) -> None:
        assert self.proc is not None
        self.samples.append(rss_kib(self.proc.pid))

    def fill(self) -> None:
        """Fill the volume to the last byte (large writes, then single bytes)."""
        if self.dsn:
            return
        fd = os.open(self.volume / "ballast", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 16, 1 << 10, 1):
                try:
                    while os.write(fd, b"\0" * size) == size:
                        pass
                except OSError:
                    pass
        finally:
            os.close(fd)

    def heal(self) -> None:
        self.records = gauge(self.port, "sic_sink_backlog_records") or 0.0
        if not self.dsn:
            (self.volume / "ballast").unlink()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        if not self.dsn:
            subprocess.run(["umount", "-l", str(self.volume)], check=False)


def fill_to_the_bound(max_bytes: int) -> None:
    """The worst case in this process: a MemoryBuffer filled to its byte bound with ticks of
    this host's real records (every collector, read from /proc), RSS before and after."""
    sys.path.insert(0, str(HERE / "src"))
    from system_info_collector.buffer import MemoryBuffer
    from system_info_collector.config import load_settings
    from system_info_collector.heap import release_free_memory
    from system_info_collector.metrics import Metrics
    from system_info_collector.model import Record
    from system_info_collector.providers import build_providers

    settings = load_settings({"SIC_HTTP_LISTEN": ""})
    providers = build_providers(settings)
    for p in providers:
        p.prime()
    from datetime import UTC, datetime, timedelta

    t0 = datetime.now(UTC)
    one = [
        Record(p.name, t0, "bench-host", s.tags, s.fields) for p in providers for s in p.collect()
    ]
    buffer = MemoryBuffer("csv", max_bytes=max_bytes, metrics=Metrics())
    release_free_memory()
    before = rss_kib(os.getpid())
    i = 0
    while len(buffer) == i * len(one):  # until the bound drops the oldest
        i += 1
        ts = t0 + timedelta(seconds=i)
        buffer.add([Record(r.measurement, ts, r.host, r.tags, r.fields) for r in one])
    full = rss_kib(os.getpid())
    print(
        f"| MemoryBuffer at its bound ({max_bytes / 1e6:g} MB) | {len(buffer):,} records "
        f"({len(one)} a tick) | {before / 1024:.1f} MiB | {full / 1024:.1f} MiB | "
        f"{(full - before) / 1024:.1f} MiB | {(full - before) * 1024 / len(buffer):.0f} B |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peer", help="the other checkout's src/ directory")
    parser.add_argument("--fill", type=float, help="only fill a MemoryBuffer of this many MB")
    parser.add_argument("--outage", type=float, default=120.0, help="seconds of outage")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after the drain")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before the outage")
    parser.add_argument("--interval", default="100ms")
    parser.add_argument("--env", action="append", default=[], help="extra K=V for both")
    parser.add_argument("--dsn", help="PostgreSQL sink instead of CSV (server in a container)")
    parser.add_argument(
        "--container",
        help="the server's Docker container: the outage is "
        "`docker stop`, the end of it `docker start`",
    )
    args = parser.parse_args()
    if args.fill:
        fill_to_the_bound(int(args.fill * 1e6))
        return
    if not args.peer:
        parser.error("--peer is required")
    root = Path(tempfile.mkdtemp(prefix="sic-backlog-"))
    runs = []
    for label, src in (("this checkout", str(HERE / "src")), ("peer", args.peer)):
        work = root / label.replace(" ", "-")
        work.mkdir()
        runs.append(Run(label, src, work, args.interval, dsn=args.dsn or "", extra=args.env))
    try:
        for run in runs:
            run.start()
        time.sleep(args.warmup)  # start-up and normal writing before the outage
        before = {}
        for run in runs:
            run.sample()
            before[run.label] = run.samples[-1]
            run.fill()
        if args.container:
            subprocess.run(
                ["docker", "stop", "-t", "2", args.container], check=True, capture_output=True
            )
        end = time.monotonic() + args.outage
        while time.monotonic() < end:
            time.sleep(1.0)
            for run in runs:
                run.sample()
        peak = {run.label: max(run.samples) for run in runs}
        for run in runs:
            run.heal()
        if args.container:
            subprocess.run(["docker", "start", args.container], check=True, capture_output=True)
        after = {}
        for run in runs:
            deadline = time.monotonic() + 120
            while (gauge(run.port, "sic_sink_backlog_records") or 0) > 50:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{run.label}: backlog did not drain")
                time.sleep(0.5)
        time.sleep(args.settle)
        for run in runs:
            run.sample()
            after[run.label] = run.samples[-1]
        what = "server stopped, PostgreSQL sink" if args.dsn else "full volume, CSV sink"
        print(f"outage {args.outage:g} s ({what}) at {args.interval}, every collector")
        print(
            "| checkout | records held at the end | RSS before | RSS peak | growth per 1000 "
            "records held | RSS after the drain |"
        )
        print("|---|---|---|---|---|---|")
        for run in runs:
            grown = peak[run.label] - before[run.label]
            per = grown / (run.records / 1000) if run.records else 0.0
            print(
                f"| {run.label} | {run.records:,.0f} | {before[run.label] / 1024:.1f} MiB | "
                f"{peak[run.label] / 1024:.1f} MiB | {per:.0f} KiB | "
                f"{after[run.label] / 1024:.1f} MiB |"
            )
        print(json.dumps({r.label: r.samples for r in runs}), file=sys.stderr)
    finally:
        for run in runs:
            run.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
