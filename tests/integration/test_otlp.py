"""The otlp sink against an OTLP/HTTP receiver in this test process that decodes with the
official ``opentelemetry-proto`` messages. The collector runs as a real process with the CSV
and otlp sinks; every point must match the CSV: hostmetrics names, attributes, temporality,
the tick time and the value -- each present once, also when the receiver answered 503."""

from __future__ import annotations

import csv
import gzip
import math
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2

from tests.helpers import assert_counters_give_the_csv_shares, clean_env, poll
from tests.integration.conftest import Collector

pytestmark = pytest.mark.integration
CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE


class OtlpReceiver:
    """POST /v1/metrics: gunzip, decode, keep the requests; answers ``fail`` statuses first
    for the requests numbered in ``fail_requests`` (1-based), 200 otherwise."""

    def __init__(self, fail_requests: set[int]) -> None:
        self.requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self.seen = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.seen += 1
                if self.path != "/v1/metrics" or receiver.seen in fail_requests:
                    status = 404 if self.path != "/v1/metrics" else 503
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
                receiver.requests.append(request)
                receiver.headers.append(dict(self.headers))
                answer = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._handler = Handler
        self.port = 0
        self.httpd: ThreadingHTTPServer | None = None
        self.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Listen (again, on the same port after :meth:`stop`)."""
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def points(self) -> list[tuple[tuple[Any, ...], float, dict[str, Any]]]:
        """``(key, value, details)`` per data point; key = (name, attributes, time)."""
        out = []
        triples = [
            (r, s, metric)
            for request in list(self.requests)
            for r in request.resource_metrics
            for s in r.scope_metrics
            for metric in s.metrics
        ]
        for rm, sm, m in triples:
            resource = {a.key: a.value.string_value for a in rm.resource.attributes}
            kind = m.WhichOneof("data")
            data = getattr(m, kind)
            for dp in data.data_points:
                attrs = frozenset((a.key, a.value.string_value) for a in dp.attributes)
                value = dp.as_int if dp.WhichOneof("value") == "as_int" else dp.as_double
                details = {
                    "kind": kind,
                    "unit": m.unit,
                    "resource": resource,
                    "scope": sm.scope.name,
                    "start": dp.start_time_unix_nano,
                    "temporality": getattr(data, "aggregation_temporality", None),
                    "monotonic": getattr(data, "is_monotonic", None),
                    "value_type": dp.WhichOneof("value"),
                }
                out.append(((m.name, attrs, dp.time_unix_nano), value, details))
        return out

    def close(self) -> None:
        self.stop()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver(fail_requests={3, 4, 5})  # request 1 is open()'s empty probe
    yield r
    r.close()


def _rows(csv_dir: Path, name: str) -> list[dict[str, str]]:
    if not (csv_dir / f"{name}.csv").exists():
        return []  # a collector this test does not run
    with open(csv_dir / f"{name}.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _ns(ts: str) -> int:
    dt = datetime.fromisoformat(ts)
    return (int(dt.timestamp()) * 1_000_000 + dt.microsecond) * 1000


# hostmetrics' metadata.yaml: unit, kind (counter = monotonic cumulative sum), value type
SPEC: dict[str, tuple[str, str, str]] = {
    "system.cpu.time": ("s", "counter", "as_double"),
    "system.cpu.utilization": ("1", "gauge", "as_double"),
    "system.cpu.load_average.1m": ("{thread}", "gauge", "as_double"),
    "system.memory.usage": ("By", "sum", "as_int"),
    "system.memory.utilization": ("1", "gauge", "as_double"),
    "system.filesystem.usage": ("By", "sum", "as_int"),
    "system.filesystem.inodes.usage": ("{inodes}", "sum", "as_int"),
    "system.disk.io": ("By", "counter", "as_int"),
    "system.disk.operations": ("{operations}", "counter", "as_int"),
    "system.disk.io_time": ("s", "counter", "as_double"),
    "system.network.io": ("By", "counter", "as_int"),
    "system.network.packets": ("{packets}", "counter", "as_int"),
    "system.network.errors": ("{errors}", "counter", "as_int"),
    "system.network.dropped": ("{packets}", "counter", "as_int"),
}
CPU_STATES = {
    "user": "user",
    "nice": "nice",
    "system": "system",
    "idle": "idle",
    "iowait": "wait",
    "irq": "interrupt",
    "softirq": "softirq",
    "steal": "steal",
}


def mount_modes() -> dict[str, str]:
    """``ro``/``rw`` of every mount point, from the kernel's mount table."""
    modes = {}
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        mountpoint = parts[1].replace("\\040", " ")
        modes[mountpoint] = "ro" if "ro" in parts[3].split(",") else "rw"
    return modes


def expected_points(csv_dir: Path) -> dict[tuple[Any, ...], float | None]:
    """What the hostmetrics receiver reports for the CSV rows: key (name, attributes, time ns)
    -> value (``None`` where the CSV does not hold it: the slab states, and
    ``system.cpu.time``, whose shares :func:`assert_cpu_time_gives_the_shares` checks)."""
    out: dict[tuple[Any, ...], float | None] = {}

    def put(name: str, attrs: dict[str, str], ts: str, value: float | None) -> None:
        key = (name, frozenset(attrs.items()), _ns(ts))
        assert key not in out
        out[key] = value

    for row in _rows(csv_dir, "cpu"):
        if row["cpu"] != "cpu-total":
            for ours, state in CPU_STATES.items():
                attrs = {"cpu": row["cpu"], "state": state}
                put("system.cpu.utilization", attrs, row["ts"], float(row[f"{ours}_percent"]) / 100)
                put("system.cpu.time", attrs, row["ts"], None)
    for row in _rows(csv_dir, "memory"):
        total, free, buffers, cached = (
            int(row[c]) for c in ("total_bytes", "free_bytes", "buffers_bytes", "cached_bytes")
        )
        states = {
            "used": total - free - buffers - cached,
            "free": free,
            "buffered": buffers,
            "cached": cached,
        }
        for state, value in states.items():
            put("system.memory.usage", {"state": state}, row["ts"], value)
            put("system.memory.utilization", {"state": state}, row["ts"], value / total)
        for state in ("slab_reclaimable", "slab_unreclaimable"):  # meminfo lines, not in the CSV
            put("system.memory.usage", {"state": state}, row["ts"], None)
            put("system.memory.utilization", {"state": state}, row["ts"], None)
    modes = mount_modes()
    for row in _rows(csv_dir, "disk"):
        base = {
            "device": row["device"],
            "mode": modes[row["mountpoint"]],
            "mountpoint": row["mountpoint"],
            "type": row["fstype"],
        }
        used, free, avail = (int(row[c]) for c in ("used_bytes", "free_bytes", "available_bytes"))
        for state, value in (("used", used), ("free", avail), ("reserved", free - avail)):
            put("system.filesystem.usage", {**base, "state": state}, row["ts"], value)
        for state in ("used", "free"):
            value = int(row[f"inodes_{state}"])
            put("system.filesystem.inodes.usage", {**base, "state": state}, row["ts"], value)
    for row in _rows(csv_dir, "diskio"):
        device = {"device": row["device"]}
        for name, read, write in (
            ("system.disk.io", "read_bytes_total", "written_bytes_total"),
            ("system.disk.operations", "reads_total", "writes_total"),
        ):
            put(name, {**device, "direction": "read"}, row["ts"], int(row[read]))
            put(name, {**device, "direction": "write"}, row["ts"], int(row[write]))
        put("system.disk.io_time", device, row["ts"], float(row["io_time_seconds_total"]))
    for row in _rows(csv_dir, "net"):
        for name, field in (
            ("system.network.io", "bytes"),
            ("system.network.packets", "packets"),
            ("system.network.errors", "errors"),
            ("system.network.dropped", "dropped"),
        ):
            for direction in ("receive", "transmit"):
                attrs = {"device": row["interface"], "direction": direction}
                put(name, attrs, row["ts"], int(row[f"{direction}_{field}_total"]))
    for row in _rows(csv_dir, "system"):
        put("system.cpu.load_average.1m", {}, row["ts"], float(row["load1"]))
    return out


def assert_cpu_time_gives_the_shares(got: list[tuple[Any, float, Any]], csv_dir: Path) -> None:
    """``system.cpu.time`` tick to tick gives the CSV's per-CPU shares of that tick."""
    ours = {state: column for column, state in CPU_STATES.items()}
    seconds: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for (name, attrs, ns), value, _ in got:
        if name == "system.cpu.time":
            a = dict(attrs)
            seconds[(a["cpu"], ours[a["state"]])][ns] = value
    assert_counters_give_the_csv_shares(seconds, _rows(csv_dir, "cpu"), _ns)


def btime_ns() -> int:
    line = next(x for x in Path("/proc/stat").read_text().splitlines() if x.startswith("btime"))
    return int(line.split()[1]) * 1_000_000_000


def test_every_point_arrives_once_named_as_hostmetrics(
    receiver: OtlpReceiver, tmp_path: Path
) -> None:
    headers = tmp_path / "otlp-headers"
    headers.write_text("Authorization: Api-Token otlp-s3cret\nX-Tenant: fleet-a\n")
    csv_dir = tmp_path / "csv"
    env = clean_env(
        SIC_SINKS="csv,otlp",
        SIC_OTLP_ENDPOINT=receiver.endpoint,
        SIC_OTLP_HEADERS_FILE=str(headers),
        SIC_HOSTNAME="otlp-host",
        SIC_TAGS="env=test",
        SIC_INTERVAL="200ms",
        SIC_CSV_DIR=str(csv_dir),
        SIC_CSV_COMPRESS="none",
        SIC_RETRY_INITIAL="50ms",
        SIC_RETRY_MAX_WAIT="300ms",
        SIC_LOG_LEVEL="info",
    )
    collector = Collector(env)
    try:
        poll(
            lambda: (
                len(_rows(csv_dir, "memory")) >= 10 if (csv_dir / "memory.csv").exists() else None
            ),
            timeout=20,
            what="10 ticks",
        )
        assert collector.stop() == 0, "".join(collector.stderr[-20:])
    finally:
        if collector.proc.poll() is None:
            collector.kill9()
    assert collector.events("sink_write_failed"), "the 503 answers were not retried"
    assert not collector.events("sink_batch_rejected")
    assert "otlp-s3cret" not in "".join(collector.stderr)
    sent = receiver.headers[0]
    assert sent["Authorization"] == "Api-Token otlp-s3cret" and sent["X-Tenant"] == "fleet-a"
    assert sent["Content-Type"] == "application/x-protobuf"

    expected = expected_points(csv_dir)
    points = receiver.points()
    counts = Counter(key for key, _, _ in points)
    assert not [k for k, n in counts.items() if n > 1], "points delivered twice"
    got = [p for p in points if p[0][0] in {k[0] for k in expected}]
    missing = set(expected) - {key for key, _, _ in got}
    extra = {key for key, _, _ in got} - set(expected)
    assert not missing and not extra, f"missing {sorted(missing)[:3]}, extra {sorted(extra)[:3]}"
    ticks = {_ns(row["ts"]) for row in _rows(csv_dir, "memory")}
    assert {key[2] for key in counts} <= ticks, "a point not at a tick of the CSV"
    boot = btime_ns()
    for key, value, details in points:
        assert details["resource"] == {"host.name": "otlp-host", "env": "test"}
        assert details["scope"] == "system-info-collector"
        spec = SPEC.get(key[0])
        if spec is not None:
            unit, kind, value_type = spec
            assert (details["unit"], details["value_type"]) == (unit, value_type), key
            assert details["kind"] == ("gauge" if kind == "gauge" else "sum"), key
        if details["kind"] == "sum":
            assert details["temporality"] == CUMULATIVE and details["start"] == boot, key
            if spec is not None:
                assert details["monotonic"] is (spec[1] == "counter"), key
        want = expected.get(key)
        if want is not None:
            assert math.isclose(value, want, rel_tol=1e-12), (key, value, want)
    assert_cpu_time_gives_the_shares(got, csv_dir)
    names = {key[0] for key in counts}
    for name in ("system.disk.merged", "system.disk.weighted_io_time", "system.paging.faults"):
        assert name in names, name
    states = {dict(k[1])["state"] for k in counts if k[0] == "system.memory.usage"}
    assert states == {
        "used",
        "free",
        "buffered",
        "cached",
        "slab_reclaimable",
        "slab_unreclaimable",
    }
    keys = {frozenset(dict(k[1])) for k in counts if k[0] == "system.filesystem.usage"}
    assert keys == {frozenset({"device", "mode", "mountpoint", "type", "state"})}
