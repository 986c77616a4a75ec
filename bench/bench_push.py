"""Benchmark: flush policies of the push sinks -- one request per tick vs one per N seconds.

    .venv/bin/python bench/bench_push.py                    # 30 s per run, 200 ms ticks
    .venv/bin/python bench/bench_push.py --seconds 60 --interval 1

For each sink (remote_write to a real VictoriaMetrics and to a real Prometheus, both started
here in a temporary directory; otlp to a small OTLP/HTTP receiver in a subprocess that
decodes every request with opentelemetry-proto) and each policy, the benchmark reads this
host every ``--interval`` with the real collectors (cpu, memory, disk, diskio, net, system,
vmstat), maps the tick as the sink's worker does in the sampling thread (``at_tick``: the
series of ``/metrics``, or the hostmetrics points) and calls the sink's ``write`` per tick,
or with the ticks of the last N seconds. Measured over the run: the sender's CPU
(``time.thread_time`` of the tick mapping and of the writing, as % of one core; the mapping
alone in its own column), the delivery latency of every buffered record (acknowledgement
time - tick time: p50, p99), samples per tick, requests per second and bytes on the wire, and
the receiver's CPU (utime+stime of its process from /proc, % of one core).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from system_info_collector.collect import Failures, collect, prime
from system_info_collector.config import OtlpSettings, RemoteWriteSettings, Settings
from system_info_collector.hostpaths import HostPaths
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.providers import build_providers
from system_info_collector.sinks.otlp import OtlpSink
from system_info_collector.sinks.remote_write import RemoteWriteSink

CLK_TCK = os.sysconf("SC_CLK_TCK")
OTLP_RECEIVER = r"""
import gzip, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as pb
OK = pb.ExportMetricsServiceResponse().SerializeToString()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        pb.ExportMetricsServiceRequest.FromString(body)
        self.send_response(200); self.send_header("Content-Length", str(len(OK)))
        self.end_headers(); self.wfile.write(OK)
    def log_message(self, *a): pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


def start_receiver(kind: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if kind == "victoria-metrics":
        binary = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"
        proc = subprocess.Popen(
            [binary, f"-storageDataPath={workdir / 'vm'}", f"-httpListenAddr=127.0.0.1:{port}"],
            **quiet,
        )
        wait_http(f"{base}/health")
        return proc, f"{base}/api/v1/write"
    if kind == "prometheus":
        config = workdir / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1h\n")
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-remote-write-receiver",
            ],
            **quiet,
        )
        wait_http(f"{base}/-/ready")
        return proc, f"{base}/api/v1/write"
    proc = subprocess.Popen([sys.executable, "-c", OTLP_RECEIVER, str(port)], **quiet)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    return proc, base + "/v1/metrics"


COLLECTORS = ("cpu", "memory", "disk", "diskio", "net", "system", "vmstat")


class Host:
    """The real collectors of this host, read once per tick."""

    def __init__(self) -> None:
        self.providers = build_providers(Settings(collectors=COLLECTORS))
        self._failures = Failures()
        prime(self.providers, self._failures)

    def tick(self, ts: datetime) -> list[Record]:
        return collect(self.providers, ts, "bench-host", {}, self._failures).accepted


def run(
    make_sink: Callable[[Metrics], Any],
    host: Host,
    receiver: subprocess.Popen[bytes],
    seconds: float,
    interval: float,
    flush_every: float,
) -> dict[str, float]:
    metrics = Metrics()
    sink = make_sink(metrics)
    sink.open()
    client = sink._client
    sent = {"requests": 0, "bytes": 0}
    original = client.post

    def counting_post(body: bytes, headers: Any) -> Any:
        sent["requests"] += 1
        sent["bytes"] += len(body)
        return original(body, headers)

    client.post = counting_post
    latencies: list[float] = []
    pending: list[Record] = []
    receiver_cpu0 = cpu_seconds(receiver.pid)
    start = (time.time() // interval + 1) * interval
    thread_cpu = mapping_cpu = 0.0
    samples = ticks = 0
    next_flush = start + flush_every
    n = 0
    while True:
        ts = start + n * interval
        if ts >= start + seconds:
            break
        time.sleep(max(0.0, ts - time.time()))
        records = host.tick(datetime.fromtimestamp(ts, UTC))
        c0 = time.thread_time()
        mapped = sink.at_tick(records, host.providers)
        mapping_cpu += time.thread_time() - c0
        samples += sum(len(r.fields) for r in mapped)
        ticks += 1
        pending += mapped
        n += 1
        if flush_every <= interval or time.time() >= next_flush - 1e-6:
            c0 = time.thread_time()
            sink.write(pending)
            acked = time.time()
            thread_cpu += time.thread_time() - c0
            latencies += [acked - r.ts.timestamp() for r in pending]
            pending = []
            next_flush += flush_every
    if pending:  # the last, partial batch, flushed when its time comes
        time.sleep(max(0.0, next_flush - time.time()))
        c0 = time.thread_time()
        sink.write(pending)
        thread_cpu += time.thread_time() - c0
        latencies += [time.time() - r.ts.timestamp() for r in pending]
    sink.close()
    latencies.sort()
    return {
        "sender_cpu_pct": 100 * (thread_cpu + mapping_cpu) / seconds,
        "mapping_cpu_pct": 100 * mapping_cpu / seconds,
        "samples_per_tick": samples / max(1, ticks),
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "requests_per_s": sent["requests"] / seconds,
        "kib_per_s": sent["bytes"] / 1024 / seconds,
        "receiver_cpu_pct": 100 * (cpu_seconds(receiver.pid) - receiver_cpu0) / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--flush", default="tick,1,5", help="policies: tick or N seconds")
    args = parser.parse_args()
    policies = [(p, args.interval if p == "tick" else float(p)) for p in args.flush.split(",")]
    print(
        f"{args.seconds:g} s per run, {args.interval:g} s ticks, collectors {','.join(COLLECTORS)}"
    )
    print(
        "| sink → receiver | flush | samples/tick | sender CPU % (mapping) "
        "| latency p50 / p99 ms | requests/s | KiB/s sent | receiver CPU % |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    host = Host()
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("victoria-metrics", "prometheus", "otlp"):
            workdir = Path(tmp) / kind
            workdir.mkdir()
            receiver, url = start_receiver(kind, workdir)
            try:
                for label, every in policies:
                    if kind == "otlp":

                        def make(m: Metrics, url: str = url) -> Any:
                            return OtlpSink(
                                OtlpSettings(endpoint=url), host_paths=HostPaths(), metrics=m
                            )

                        name = "otlp → OTLP/HTTP receiver"
                    else:

                        def make(m: Metrics, url: str = url) -> Any:
                            return RemoteWriteSink(RemoteWriteSettings(url=url), metrics=m)

                        name = f"remote_write → {kind}"
                    r = run(make, host, receiver, args.seconds, args.interval, every)
                    flush = "per tick" if label == "tick" else f"every {label} s"
                    print(
                        f"| {name} | {flush} | {r['samples_per_tick']:.0f} | "
                        f"{r['sender_cpu_pct']:.2f} ({r['mapping_cpu_pct']:.2f}) | "
                        f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f} | {r['requests_per_s']:.2f} | "
                        f"{r['kib_per_s']:.1f} | {r['receiver_cpu_pct']:.2f} |",
                        flush=True,
                    )
            finally:
                receiver.terminate()
                receiver.wait(15)


if __name__ == "__main__":
    main()
