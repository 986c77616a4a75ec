"""What the push sinks cost per tick on a small and a big synthetic host, in-process.

    .venv/bin/python bench/push_mapping.py                      # 8 and 256 CPUs
    .venv/bin/python bench/push_mapping.py --hosts 64:16:16 --ticks 50

For each host shape (CPUs:disks:mounts, a bench/synthetic_host.py tree) the real providers
sample a tick (cpu, memory, disk, diskio: what the tree serves), then, timed with
``time.thread_time`` (the best of ``--rounds`` rounds of ``--ticks`` ticks; the counters
advance between ticks, not timed):

* **mapping** -- what the sink's worker runs in the sampling thread at every tick
  (``at_tick``): the ``/metrics`` series for remote write, the hostmetrics points for OTLP;
* **encoding** -- what the sink's own thread does with the tick before the request: the
  ``WriteRequest`` + snappy, the ``ExportMetricsServiceRequest`` + gzip;
* the samples of a tick and the request body's size.

No network: the request is built, not sent (bench/bench_push.py measures delivery).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from synthetic_host import SyntheticHost  # bench/synthetic_host.py

from system_info_collector.collect import Failures, collect, prime
from system_info_collector.config import OtlpSettings, RemoteWriteSettings, load_settings
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.providers import build_providers
from system_info_collector.sinks.otlp import OtlpSink
from system_info_collector.sinks.remote_write import RemoteWriteSink

COLLECTORS = "cpu,memory,disk,diskio"  # the scale bench's four (the tree serves all nine)


def measure(shape: str, ticks: int, rounds: int) -> dict[str, float]:
    cpus, disks, mounts = (int(n) for n in shape.split(":"))
    with tempfile.TemporaryDirectory() as tmp:
        host = SyntheticHost(tmp, cpus, disks, mounts)
        host.create()
        settings = load_settings(
            {
                "SIC_HOST_PROC": f"{tmp}/proc",
                "SIC_HOST_ROOT": f"{tmp}/root",
                "SIC_SINKS": "",
                "SIC_COLLECTORS": COLLECTORS,
            }
        )
        providers = build_providers(settings)
        failures = Failures()
        prime(providers, failures)
        rw = RemoteWriteSink(RemoteWriteSettings(url="http://127.0.0.1:1/"), metrics=Metrics())
        otlp = OtlpSink(
            OtlpSettings(endpoint="http://127.0.0.1:1/"),
            host_paths=settings.host_paths,
            metrics=Metrics(),
        )
        sinks: dict[str, tuple[Callable[..., list[Record]], Callable[[list[Record]], bytes]]] = {
            "remote_write": (
                rw.at_tick,
                lambda mapped: rw._compress(rw.encode([mapped])[0]),
            ),
            "otlp": (
                otlp.at_tick,
                lambda mapped: otlp_body(otlp, mapped),
            ),
        }
        out: dict[str, float] = {}
        for name, (at_tick, encode) in sinks.items():
            best_map = best_encode = float("inf")
            samples = size = 0
            for _ in range(rounds):
                spent_map = spent_encode = 0.0
                for i in range(ticks):
                    host.advance()
                    host.write()
                    ts = datetime.fromtimestamp(1_700_000_000 + i, UTC)
                    records = collect(providers, ts, "bench", {}, failures).accepted
                    c0 = time.thread_time()
                    mapped = at_tick(records, providers)
                    c1 = time.thread_time()
                    body = encode(mapped)
                    spent_encode += time.thread_time() - c1
                    spent_map += c1 - c0
                    samples = sum(len(r.fields) for r in mapped)
                    size = len(body)
                best_map = min(best_map, spent_map / ticks)
                best_encode = min(best_encode, spent_encode / ticks)
            out[f"{name} samples"] = samples
            out[f"{name} map ms"] = 1000 * best_map
            out[f"{name} encode ms"] = 1000 * best_encode
            out[f"{name} KiB"] = size / 1024
        for p in providers:
            p.close()
        host.close()
        return out


def otlp_body(sink: OtlpSink, mapped: list[Record]) -> bytes:
    import gzip

    body, _ = sink.encode(mapped)
    return gzip.compress(body, compresslevel=6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hosts", default="8:4:5,256:64:64", help="CPUs:disks:mounts, comma-separated")
    ap.add_argument("--ticks", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(
        "| host (CPUs / disks / mounts) | sink | samples/tick | mapping ms/tick (sampling thread) "
        "| encoding ms/tick (sink thread) | body KiB |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for shape in args.hosts.split(","):
        r = measure(shape, args.ticks, args.rounds)
        for sink in ("remote_write", "otlp"):
            print(
                f"| {shape.replace(':', ' / ')} | {sink} | {r[f'{sink} samples']:.0f} | "
                f"{r[f'{sink} map ms']:.2f} | {r[f'{sink} encode ms']:.2f} | "
                f"{r[f'{sink} KiB']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
