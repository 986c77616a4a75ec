"""Benchmark: what each push-sink candidate costs in memory and start-up CPU, imported alone.

    .venv/bin/python bench/import_rss.py                  # candidates importable from this venv
    .venv/bin/python bench/import_rss.py --sdk-venv /tmp/otel-sdk
        # + the full OpenTelemetry SDK path, from a venv made with
        #   python3 -m venv /tmp/otel-sdk && /tmp/otel-sdk/bin/pip install \\
        #       opentelemetry-sdk opentelemetry-exporter-otlp-proto-http

Each candidate runs in a fresh interpreter, ``--repeat`` times: it imports what the sink
needs, builds one small request, then reports VmRSS (from /proc/self/status) and the process
CPU time (utime+stime). The table shows the median, and the increase over a bare interpreter
(``baseline``) run the same way, so the numbers are what the candidate *adds*.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

SINKS = Path(__file__).resolve().parent.parent / "src/system_info_collector/sinks"
# prompb.py and the module it imports, loaded from their files, not through the package (whose
# __init__ would bring the configuration and the rest of the collector into the measurement)
LOAD_PROMPB = """
import importlib.util, sys
def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
load("system_info_collector.sinks.protowire", SINKS / "protowire.py")
prompb = load("prompb", SINKS / "prompb.py")
"""

REPORT = """
import json, os, resource
u = resource.getrusage(resource.RUSAGE_SELF)
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))
print(json.dumps({"rss_kib": rss, "cpu_s": u.ru_utime + u.ru_stime}))
"""

CANDIDATES = {
    "baseline": "pass",
    "remote_write: protobuf (runtime messages) + cramjam snappy + http.client": """
import http.client, cramjam
"""
    + LOAD_PROMPB
    + """
W = prompb.write_request_class(); w = W(); t = w.timeseries.add(); t.labels.add(name="a", value="b")
t.samples.add(value=1.0, timestamp=1); bytes(cramjam.snappy.compress_raw(w.SerializeToString()))
""",
    "remote_write (own wire format: prompb.WriteRequestWriter) + cramjam snappy + http.client": """
import http.client, cramjam
from datetime import datetime, timezone
"""
    + LOAD_PROMPB
    + """
w = prompb.WriteRequestWriter()
w.add(prompb.labels_bytes([("a", "b")]), 1.0, w.stamp(datetime.now(timezone.utc)))
bytes(cramjam.snappy.compress_raw(w.bytes()))
""",
    "otlp: opentelemetry-proto messages + gzip + http.client": """
import gzip, http.client
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
r = metrics_service_pb2.ExportMetricsServiceRequest(); m = r.resource_metrics.add()
m.scope_metrics.add().metrics.add(name="system.cpu.time")
gzip.compress(r.SerializeToString())
""",
}
SDK = """
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
exporter = OTLPMetricExporter(endpoint="http://127.0.0.1:1/v1/metrics")
"""


def measure(python: str, code: str, repeat: int) -> tuple[float, float]:
    rss, cpu = [], []
    for _ in range(repeat):
        prelude = f"from pathlib import Path\nSINKS = Path({str(SINKS)!r})\n"
        command = [python, "-c", prelude + code + REPORT]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        item = json.loads(out.strip().splitlines()[-1])
        rss.append(item["rss_kib"] / 1024)
        cpu.append(item["cpu_s"] * 1000)
    return statistics.median(rss), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sdk-venv", help="a venv with opentelemetry-sdk + the OTLP/HTTP exporter")
    args = parser.parse_args()
    runs = [(name, sys.executable, code) for name, code in CANDIDATES.items()]
    if args.sdk_venv:
        python = f"{args.sdk_venv}/bin/python"
        runs.append(("baseline (SDK venv)", python, "pass"))
        name = "otlp: opentelemetry-sdk + opentelemetry-exporter-otlp-proto-http"
        runs.append((name, python, SDK))
    print("| candidate | RSS MiB | + over baseline | start-up CPU ms | + over baseline |")
    print("|---|---:|---:|---:|---:|")
    base: dict[str, tuple[float, float]] = {}
    for name, python, code in runs:
        rss, cpu = measure(python, code, args.repeat)
        ref = base.setdefault(python, (rss, cpu))
        print(f"| {name} | {rss:.1f} | {rss - ref[0]:+.1f} | {cpu:.0f} | {cpu - ref[1]:+.0f} |")


if __name__ == "__main__":
    main()
