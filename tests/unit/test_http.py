"""/metrics, /healthz, /readyz served in-process over real sockets, read with a real client.

The agent is real (real /proc providers, real sink workers); the test ticks it by hand so it
can also *not* tick (a stalled scheduler). A failing sink is a stdout sink writing to a real
pipe nobody reads (the way a stuck log shipper blocks a container's stdout).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from system_info_collector.agent import Agent, LatestRecords
from system_info_collector.config import BufferSettings, RetrySettings, Settings, load_settings
from system_info_collector.exposition import HostMetricsCollector, sic_metric_name
from system_info_collector.http import HttpServer
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.probes import Probes
from system_info_collector.providers import build_providers
from system_info_collector.scheduler import Tick
from system_info_collector.sinks import Sink
from system_info_collector.sinks.stdout import StdoutSink
from tests.helpers import EXE, PROC_FIXTURES, clean_env, poll

FAST = RetrySettings(max_attempts=2, initial=0.01, max_wait=0.05)


def make_agent(
    sinks: Sequence[Sink] = (),
    *,
    collectors: tuple[str, ...] = ("memory",),
    retry: RetrySettings = FAST,
    interval: float = 0.1,
    buffers: Mapping[str, BufferSettings] | None = None,
) -> Agent:
    settings = Settings(
        interval=interval,
        collectors=collectors,
        sinks=tuple(s.name for s in sinks),
        retry=retry,
        shutdown_timeout=1.0,
        buffers=buffers or {},
    )
    return Agent(settings, build_providers(settings), sinks, Metrics(), host="test-host")


def tick(agent: Agent) -> list[Record]:
    interval = agent.settings.interval
    slot = int(time.time() / interval)
    ts = datetime.fromtimestamp(round(slot * interval, 3), UTC)
    return agent.tick(Tick(slot, ts, time.monotonic(), 0.0))


@contextlib.contextmanager
def serving(agent: Agent, **options: Any) -> Iterator[HttpServer]:
    server = HttpServer(agent, "127.0.0.1:0", **options)
    agent.start()
    server.start()
    try:
        yield server
    finally:
        server.close()
        agent.close()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(server: HttpServer, path: str, method: str = "GET", **headers: str) -> Response:
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        return Response(resp.status, dict(resp.getheaders()), resp.read())
    finally:
        conn.close()


def scrape(server: HttpServer) -> dict[str, list[Sample]]:
    resp = request(server, "/metrics")
    assert resp.status == 200
    families = text_string_to_metric_families(resp.body.decode())
    out: dict[str, list[Sample]] = {}
    for family in families:
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


# -- /metrics ----------------------------------------------------------------------------


def test_metrics_expose_the_collectors_own_numbers_and_they_move() -> None:
    with open(os.devnull, "w") as devnull:
        agent = make_agent([StdoutSink(devnull)], collectors=("cpu", "memory"))
        with serving(agent) as server:
            tick(agent)
            poll(lambda: agent.workers[0].last_success, what="first write")
            first = scrape(server)
            for _ in range(3):
                tick(agent)
            poll(lambda: agent.workers[0].pending_records == 0, what="writes")
            second = scrape(server)
    assert first["sic_ticks_total"][0].value == 1
    assert second["sic_ticks_total"][0].value == 4
    assert second["sic_tick_duration_seconds_count"][0].value == 4
    collected = {s.labels["measurement"]: s.value for s in second["sic_records_collected_total"]}
    assert collected["memory"] == 4  # one record per tick
    written = second["sic_sink_rows_written_total"][0]
    assert written.labels == {"sink": "stdout"} and written.value == sum(collected.values())
    assert second["sic_sink_backlog_records"][0].value == 0
    assert second["sic_build_info"][0].labels["version"]


def tick_with_cpu(agent: Agent) -> list[Record]:
    """Tick until a tick has CPU records (clock ticks must pass between two readings)."""

    def once() -> list[Record] | None:
        records = tick(agent)
        return records if any(r.measurement == "cpu" for r in records) else None

    return poll(once, what="a tick with cpu records")


def test_host_metrics_come_from_the_last_tick() -> None:
    agent = make_agent(collectors=("cpu", "memory"))
    with serving(agent) as server:
        records = tick_with_cpu(agent)
        metrics = scrape(server)
    memory = next(r for r in records if r.measurement == "memory")
    [available] = metrics["node_memory_MemAvailable_bytes"]
    assert available.value == memory.fields["available_bytes"]  # the same reading, not a new one
    seconds = metrics["node_cpu_seconds_total"]
    cpus = {s.labels["cpu"] for s in seconds}
    assert cpus == {str(n) for n in range(len(cpus))}  # "0", "1", …: no cpu-total
    modes = {"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"}
    assert {s.labels["mode"] for s in seconds} == modes
    assert all(s.value >= 0 for s in seconds)
    stamps = {
        s.labels["measurement"]: s.value for s in metrics["sic_host_sample_timestamp_seconds"]
    }
    assert stamps["memory"] == memory.ts.timestamp()


def test_cpu_counters_only_grow_between_scrapes() -> None:
    agent = make_agent(collectors=("cpu",))
    with serving(agent) as server:
        tick_with_cpu(agent)
        first = {
            tuple(s.labels.values()): s.value for s in scrape(server)["node_cpu_seconds_total"]
        }
        busy_until = time.monotonic() + 0.05
        while time.monotonic() < busy_until:
            pass
        tick_with_cpu(agent)
        second = {
            tuple(s.labels.values()): s.value for s in scrape(server)["node_cpu_seconds_total"]
        }
    assert first.keys() == second.keys()
    assert all(second[k] >= first[k] for k in first)
    assert sum(second.values()) > sum(first.values())


def test_sic_mode_has_the_project_names_as_counters_and_ratios() -> None:
    agent = make_agent(collectors=("cpu", "memory"))
    with serving(agent, host_metrics="sic") as server:
        records = tick_with_cpu(agent)
        metrics = scrape(server)
    memory = next(r for r in records if r.measurement == "memory")
    [ratio] = metrics["sic_memory_used_ratio"]
    assert ratio.value == pytest.approx(memory.fields["used_percent"] / 100)
    assert 0 <= ratio.value <= 1
    assert metrics["sic_memory_available_bytes"][0].value == memory.fields["available_bytes"]
    cpus = {s.labels["cpu"] for s in metrics["sic_cpu_seconds_total"]}
    assert cpus and "cpu-total" not in cpus
    assert not [n for n in metrics if n.endswith("_percent") or n.startswith("node_")]


def test_host_metrics_can_be_switched_off() -> None:
    agent = make_agent()
    with serving(agent, host_metrics="off") as server:
        tick(agent)
        metrics = scrape(server)
    assert "sic_ticks_total" in metrics
    assert not [name for name in metrics if name.startswith(("sic_memory", "sic_host_", "node_"))]


def test_sic_metric_names_follow_prometheus_conventions() -> None:
    assert sic_metric_name("cpu", "usage_percent") == "sic_cpu_usage_ratio"
    assert sic_metric_name("memory", "available_bytes") == "sic_memory_available_bytes"
    assert sic_metric_name("disk", "available_bytes") == "sic_filesystem_avail_bytes"
    assert sic_metric_name("disk", "total_bytes") == "sic_filesystem_size_bytes"
    assert sic_metric_name("disk", "inodes_total") == "sic_filesystem_inodes"
    assert sic_metric_name("disk", "inodes_used_percent") == "sic_filesystem_inodes_used_ratio"
    assert sic_metric_name("diskio", "read_bytes_total") == "sic_diskio_read_bytes_total"


def _families(collector: HostMetricsCollector) -> dict[str, Any]:
    return {f.name: f for f in collector.collect()}


def _disk_records(ts: datetime) -> list[Record]:
    return [
        Record(
            "disk",
            ts,
            "h",
            {"mountpoint": "/data", "device": "/dev/vdb", "fstype": "xfs", "env": "prod"},
            {"available_bytes": 1000, "total_bytes": 4000, "inodes_total": 10, "used_percent": 50},
        ),
        Record(
            "diskio",
            ts,
            "h",
            {"device": "vdb", "env": "prod"},
            {"read_bytes_total": 512, "utilization_percent": 12.5, "reads_per_second": 3.0},
        ),
    ]


def test_sic_mode_disk_and_diskio_labels_types_and_static_tags() -> None:
    now = time.time()
    agent = make_agent()
    agent.settings = dataclasses.replace(agent.settings, tags={"env": "prod"})
    agent.latest = {r.measurement: [r] for r in _disk_records(datetime.fromtimestamp(now, UTC))}
    families = _families(HostMetricsCollector(agent, "sic", clock=lambda: now))
    avail = families["sic_filesystem_avail_bytes"]
    assert avail.type == "gauge"
    assert avail.samples[0].labels == {
        "mountpoint": "/data",
        "device": "/dev/vdb",
        "fstype": "xfs",
        "env": "prod",
    }
    assert avail.samples[0].value == 1000
    assert families["sic_filesystem_used_ratio"].samples[0].value == 0.5
    assert families["sic_filesystem_inodes"].type == "gauge"
    read = families["sic_diskio_read_bytes"]  # a counter family: exposed as ..._total
    assert read.type == "counter" and read.samples[0].name == "sic_diskio_read_bytes_total"
    assert read.samples[0].labels == {"device": "vdb", "env": "prod"}
    assert families["sic_diskio_utilization_ratio"].samples[0].value == 0.125
    assert "sic_diskio_reads_per_second" not in families  # rate() of the counter instead


def test_node_mode_filesystem_from_records_and_the_mount_table(tmp_path: Any) -> None:
    now = time.time()
    agent = make_agent(collectors=("disk",))
    agent.settings = dataclasses.replace(agent.settings, tags={"env": "prod"})
    agent.latest = {"disk": [_disk_records(datetime.fromtimestamp(now, UTC))[0]]}
    families = _families(HostMetricsCollector(agent, "node", clock=lambda: now))
    labels = {"device": "/dev/vdb", "fstype": "xfs", "mountpoint": "/data", "env": "prod"}
    for name, value in [
        ("node_filesystem_size_bytes", 4000),
        ("node_filesystem_avail_bytes", 1000),
        ("node_filesystem_files", 10),
        ("node_filesystem_device_error", 0),
        ("node_filesystem_readonly", 0),
    ]:
        [sample] = families[name].samples
        assert (sample.labels, sample.value) == (labels, value), name


def test_a_slower_collector_keeps_its_last_sample_until_it_is_stale() -> None:
    clock = [1_000_000.0]
    ts = datetime.fromtimestamp(clock[0], UTC)
    agent = make_agent()
    collector = HostMetricsCollector(agent, "sic", clock=lambda: clock[0])
    disk = Record(
        "disk",
        ts,
        "h",
        {"mountpoint": "/", "device": "d", "fstype": "ext4"},
        {"available_bytes": 1},
    )
    memory = Record("memory", ts, "h", {}, {"available_bytes": 2})
    agent.latest = {"disk": [disk], "memory": [memory]}
    assert "sic_filesystem_avail_bytes" in _families(collector)
    agent.latest = {**agent.latest, "memory": [memory]}  # the next tick did not sample disks
    assert "sic_filesystem_avail_bytes" in _families(collector)
    clock[0] += 3 * agent.settings.interval + 0.01
    assert "sic_filesystem_avail_bytes" not in _families(collector)


def _advance_cpus(stat: Path) -> None:
    """Every CPU spent 100 more ticks in each state (a CPU whose counters did not move has no
    shares to report)."""
    lines = [
        " ".join([w[0], *(str(int(v) + 100) for v in w[1:])]) if ln.startswith("cpu") else ln
        for ln in stat.read_text().splitlines()
        for w in [ln.split()]
    ]
    stat.write_text("\n".join(lines) + "\n")


def _without(path: Path, *needles: str) -> None:
    """Remove the lines containing any of ``needles`` from a file of the proc tree."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(ln for ln in lines if not any(n in ln for n in needles)))


def test_vanished_entities_disappear_at_their_collectors_next_run(tmp_path: Path) -> None:
    """As on node_exporter: a CPU taken offline, an interface, a disk and a mount that are gone
    from the host's files are gone from the next scrape, not served until they go stale."""
    source = PROC_FIXTURES / "basic"
    proc = tmp_path / "proc"
    shutil.copytree(source, proc, ignore=shutil.ignore_patterns("later", "*.json*", "*.env"))
    root = tmp_path / "root"
    (root / "srv" / "my data").mkdir(parents=True)  # both mounts measured with a real statvfs
    settings = load_settings(
        {
            "SIC_HOST_PROC": str(proc),
            "SIC_HOST_SYS": str(source / "sysfs"),
            "SIC_HOST_ROOT": str(root),
            "SIC_COLLECTORS": "cpu,disk,diskio,net",
            "SIC_SINKS": "",
            "SIC_HTTP_LISTEN": "127.0.0.1:0",
            "SIC_INTERVAL": "60s",  # stale only after 3 minutes: staleness cannot explain it
        }
    )
    agent = Agent(settings, build_providers(settings), [], Metrics(), host="test-host")
    vanishing = {
        "node_cpu_seconds_total": ("cpu", "1"),
        "node_network_receive_bytes_total": ("device", "wlan0"),
        "node_disk_read_bytes_total": ("device", "nvme0n1"),
        "node_filesystem_avail_bytes": ("mountpoint", "/srv/my data"),
    }
    staying = {
        "node_cpu_seconds_total": ("cpu", "0"),
        "node_network_receive_bytes_total": ("device", "eth0"),
        "node_disk_read_bytes_total": ("device", "vda"),
        "node_filesystem_avail_bytes": ("mountpoint", "/"),
    }

    def present(families: dict[str, list[Sample]], wanted: dict[str, tuple[str, str]]) -> set[str]:
        return {
            name
            for name, (label, value) in wanted.items()
            if any(s.labels.get(label) == value for s in families.get(name, []))
        }

    with serving(agent, host_metrics="node") as server:
        _advance_cpus(proc / "stat")
        tick(agent)
        before = scrape(server)
        assert present(before, vanishing) == set(vanishing)
        assert present(before, staying) == set(staying)
        _without(proc / "stat", "cpu1 ")
        _without(proc / "1" / "net" / "dev", "wlan0:")
        _without(proc / "diskstats", " nvme0n1 ")
        _without(proc / "1" / "mountinfo", "/srv/my\\040data")
        _advance_cpus(proc / "stat")
        tick(agent)
        after = scrape(server)
        assert present(after, vanishing) == set()
        assert present(after, staying) == set(staying)
        shutil.copy(source / "1" / "net" / "dev", proc / "1" / "net" / "dev")  # wlan0 is back
        for _ in range(2):  # a new interface's counters need two readings
            _advance_cpus(proc / "stat")
            tick(agent)
        again = scrape(server)
        assert present(again, vanishing) == {"node_network_receive_bytes_total"}


def test_a_failing_collector_keeps_its_entities_until_they_go_stale() -> None:
    clock = [1_000_000.0]
    ts = datetime.fromtimestamp(clock[0], UTC)
    agent = make_agent(collectors=("memory", "net"))
    collector = HostMetricsCollector(agent, "sic", clock=lambda: clock[0])
    eth0 = Record("net", ts, "h", {"interface": "eth0"}, {"receive_bytes_total": 1})
    memory = Record("memory", ts, "h", {}, {"available_bytes": 2})
    latest = LatestRecords()
    latest.update([eth0, memory], read={"memory", "net"})
    # the next run of net failed (not read), memory's ran and reported nothing new of eth0
    agent.latest = latest.update([memory], read={"memory"})
    assert agent.latest["net"] == [eth0]
    assert any(name.startswith("sic_net_") for name in _families(collector))
    clock[0] += 3 * agent.settings.interval + 0.01
    assert not any(name.startswith("sic_net_") for name in _families(collector))
    # a rejected record keeps the previous one of its entity; the others are replaced
    eth1 = Record("net", ts, "h", {"interface": "eth1"}, {"receive_bytes_total": 5})
    bad = Record("net", ts, "h", {"interface": "eth0"}, {"receive_bytes_total": -1})
    assert latest.update([eth1], read={"net"}, rejected=[bad])["net"] == [eth1, eth0]
    assert latest.update([], read={"net"}) == {"memory": [memory]}  # every interface gone


# -- /healthz ----------------------------------------------------------------------------


def health_status(server: HttpServer) -> tuple[int, dict[str, Any]]:
    resp = request(server, "/healthz")
    assert resp.headers["Content-Type"] == "application/json"
    return resp.status, resp.json()


def test_healthz_follows_the_scheduler() -> None:
    agent = make_agent()
    with serving(agent, stale_after=0.3) as server:
        status, body = health_status(server)
        assert (status, body["status"]) == (200, "starting")
        # never ticked: the start-up grace runs out
        body = poll(lambda: (s := health_status(server))[0] == 503 and s[1], what="503")
        assert body["status"] == "stalled" and "no tick yet" in body["reason"]
        tick(agent)
        status, body = health_status(server)
        assert (status, body["status"]) == (200, "ok")
        assert body["last_tick_age_seconds"] < 0.3
        # ticked once, then the scheduler stalls
        body = poll(lambda: (s := health_status(server))[0] == 503 and s[1], what="503")
        assert body["status"] == "stalled" and "last tick" in body["reason"]
        tick(agent)
        assert health_status(server)[0] == 200
        agent.stop_event.set()
        status, body = health_status(server)
        assert (status, body["status"]) == (503, "stopping")


def test_staleness_is_three_intervals_with_a_one_second_floor() -> None:
    assert Probes(make_agent(interval=0.1)).stale_after == 1.0
    assert Probes(make_agent(interval=10.0)).stale_after == 30.0


# -- /readyz -----------------------------------------------------------------------------


class StuckPipe:
    """A real pipe whose reader has stopped: writes fail until :meth:`drain` starts reading."""

    def __init__(self) -> None:
        self._r, w = os.pipe()
        os.set_blocking(w, False)
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(w, b"x" * 65536)
        self.stream: TextIO = os.fdopen(w, "w")
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        os.set_blocking(self._r, False)
        while not self._stop.is_set():
            try:
                if not os.read(self._r, 1 << 20):
                    return
            except BlockingIOError:
                self._stop.wait(0.005)

    def drain(self) -> None:
        self._reader.start()

    def close(self) -> None:
        if not self._reader.is_alive():
            self.drain()
        with contextlib.suppress(OSError):
            poll(lambda: self._flush_ok(), timeout=5, what="pipe flushed")
        self._stop.set()
        self._reader.join()
        with contextlib.suppress(OSError):
            self.stream.close()
        os.close(self._r)

    def _flush_ok(self) -> bool:
        try:
            self.stream.flush()
        except BlockingIOError:
            return False
        return True


@pytest.fixture
def stuck_pipe() -> Iterator[StuckPipe]:
    pipe = StuckPipe()
    yield pipe
    pipe.close()


def ready_status(server: HttpServer) -> tuple[int, dict[str, Any]]:
    resp = request(server, "/readyz")
    assert resp.headers["Content-Type"] == "application/json"
    return resp.status, resp.json()


def test_readyz_fails_while_a_sink_is_degraded_and_recovers(stuck_pipe: StuckPipe) -> None:
    agent = make_agent([StdoutSink(stuck_pipe.stream)])
    with serving(agent) as server:
        status, body = ready_status(server)
        assert status == 200 and body["sinks"][0]["state"] == "ok"

        def not_ready() -> dict[str, Any] | None:
            tick(agent)
            status, body = ready_status(server)
            return body if status == 503 else None

        body = poll(not_ready, what="/readyz 503")
        [sink] = body["sinks"]
        assert body["status"] == "not ready" and "stdout degraded" in body["reason"]
        assert sink["name"] == "stdout" and sink["state"] == "degraded" and not sink["ready"]
        assert sink["pending_records"] > 0 and "stdout" in sink["last_error"]

        stuck_pipe.drain()
        # ready again as soon as the first batch is written; the rest drains right after
        body = poll(lambda: (s := ready_status(server))[0] == 200 and s[1], what="/readyz 200")
        assert body["sinks"][0]["state"] == "ok"
        body = poll(
            lambda: (b := ready_status(server)[1])["sinks"][0]["pending_records"] == 0 and b,
            what="backlog drained",
        )
        assert body["sinks"][0]["last_success"] is not None


def test_readyz_fails_at_the_backlog_high_water_mark(stuck_pipe: StuckPipe) -> None:
    sink = StdoutSink(stuck_pipe.stream)
    patient = RetrySettings(max_attempts=10_000, initial=0.01, max_wait=0.02)
    small = {"stdout": BufferSettings(memory_max_records=10)}  # SIC_CSV_BACKLOG-style bound
    agent = make_agent([sink], retry=patient, buffers=small)  # retries, never degraded
    with serving(agent) as server:
        tick(agent)
        poll(lambda: agent.workers[0].failing, what="first failure")
        status, body = ready_status(server)  # retrying with a short backlog: still ready
        assert status == 200 and body["sinks"][0]["state"] == "retrying"
        for _ in range(7):
            tick(agent)
        status, body = ready_status(server)
        assert body["sinks"][0]["pending_records"] == 8
        assert status == 503 and body["sinks"][0]["state"] == "backlogged"
        assert body["sinks"][0]["high_water_records"] == 8


# -- HTTP behaviour ----------------------------------------------------------------------


def test_unknown_paths_and_methods_get_json_errors() -> None:
    with serving(make_agent()) as server:
        missing = request(server, "/nope")
        assert missing.status == 404 and "/metrics" in missing.json()["endpoints"]
        post = request(server, "/metrics", method="POST")
        assert post.status == 405 and post.headers["Allow"] == "GET, HEAD"
        assert "POST" in post.json()["error"]
        head = request(server, "/healthz", method="HEAD")
        assert head.status == 200 and head.body == b"" and int(head.headers["Content-Length"]) > 0
        query = request(server, "/healthz?verbose=1")
        assert query.status == 200


def test_malformed_requests_get_a_400_with_a_json_body() -> None:
    with serving(make_agent()) as server:
        for raw in (b"GARBAGE\r\n\r\n", b"GET /healthz HTTP/1.0\r\nHost: x\r\n"):
            sock = _connect(server)
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)  # the second one ends inside its headers
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            sock.close()
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.0 400") and b"application/json" in head
            assert json.loads(body)["error"]


def test_openmetrics_is_negotiated() -> None:
    with serving(make_agent()) as server:
        resp = request(server, "/metrics", Accept="application/openmetrics-text; version=1.0.0")
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert resp.body.endswith(b"# EOF\n")


def _connect(server: HttpServer) -> socket.socket:
    return socket.create_connection(server.address, timeout=5)


def test_a_trickling_client_is_cut_at_the_request_deadline() -> None:
    with serving(make_agent(), request_timeout=0.5) as server:
        sock = _connect(server)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        sock.settimeout(0.1)
        started = time.monotonic()
        closed = False
        with contextlib.suppress(OSError):  # sending into a closed connection may fail
            while time.monotonic() - started < 3:
                sock.sendall(b"X")  # a byte every 100ms: never idle, never finished
                try:
                    closed = sock.recv(1) == b""
                except TimeoutError:
                    continue
                except ConnectionResetError:
                    closed = True
                break
        elapsed = time.monotonic() - started
        sock.close()
        assert closed and 0.3 < elapsed < 1.5
        assert request(server, "/healthz").status in (200, 503)  # still serving


def test_oversized_headers_are_refused_without_buffering_them() -> None:
    with serving(make_agent()) as server:
        sock = _connect(server)
        header = b"X-Junk: " + b"a" * 4000 + b"\r\n"
        answer = b""
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + header * 10 + b"\r\n")
            while chunk := sock.recv(65536):
                answer += chunk
        sock.close()
        # 431 if the answer arrived before the reset of the unread rest, else just the reset
        assert answer == b"" or answer.startswith(b"HTTP/1.0 431")
        too_many = _connect(server)
        too_many.sendall(b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 150 + b"\r\n")
        assert too_many.recv(65536).startswith(b"HTTP/1.0 431")
        too_many.close()
        assert request(server, "/healthz").status == 200


def test_when_all_slots_are_taken_the_oldest_slow_client_makes_room() -> None:
    with serving(make_agent(), max_connections=2) as server:
        slow = [_connect(server) for _ in range(2)]
        for sock in slow:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        poll(lambda: len(server._server._reading) == 2, what="two slow clients held")
        resp = request(server, "/healthz")
        assert resp.status == 200
        slow[0].settimeout(2)
        assert slow[0].recv(1) == b""  # the oldest was cut
        for sock in slow:
            sock.close()


# -- the health command ------------------------------------------------------------------


def run_health(listen: str) -> tuple[int, str]:
    import subprocess

    result = subprocess.run(
        [EXE, "health"],
        env=clean_env(SIC_HTTP_LISTEN=listen),
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.returncode, result.stdout + result.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_health_command_asks_healthz() -> None:
    agent = make_agent()
    with serving(agent, stale_after=0.2) as server:
        tick(agent)
        poll(lambda: request(server, "/healthz").status == 503, what="stalled")
        code, out = run_health(f"127.0.0.1:{server.address[1]}")
        assert code == 1 and "HTTP 503" in out and "stalled" in out
        tick(agent)
        with serving(make_agent(), stale_after=60) as fresh:
            code, out = run_health(f":{fresh.address[1]}")  # all interfaces: asks 127.0.0.1
            assert code == 0 and out.startswith("healthy: HTTP 200")
    code, out = run_health(f"127.0.0.1:{free_port()}")
    assert code == 1 and "no answer" in out and "Traceback" not in out
    code, out = run_health("")
    assert code == 1 and "SIC_HTTP_LISTEN is empty" in out


def test_readyz_fails_while_a_disk_buffer_cannot_write_its_spool(
    tmp_path: Path, stuck_pipe: StuckPipe
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")  # the spool directory cannot be created below a file
    spooled = {"stdout": BufferSettings(kind="disk", spool_dir=str(blocker / "spool"))}
    # Retrying, never degraded within the test: "degraded" outranks "buffer_failed" (probes.py).
    patient = RetrySettings(max_attempts=1_000_000, initial=0.01, max_wait=0.05)
    agent = make_agent([StdoutSink(stuck_pipe.stream)], buffers=spooled, retry=patient)
    with serving(agent) as server:
        tick(agent)
        status, body = ready_status(server)
        [sink] = body["sinks"]
        assert status == 503 and sink["state"] == "buffer_failed" and not sink["ready"]
        assert "cannot open the spool" in sink["last_error"]
        assert "stdout buffer_failed" in body["reason"]


# -- misuse (issue 10) -------------------------------------------------------------------
def test_a_100kb_request_line_is_answered_414_and_the_server_keeps_serving() -> None:
    with serving(make_agent()) as server:
        sock = _connect(server)
        answer = b""
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            sock.sendall(b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            while chunk := sock.recv(65536):
                answer += chunk
        sock.close()
        assert answer.startswith(b"HTTP/1.0 414 "), answer[:100]
        assert b"request line over 32768 bytes" in answer
        assert request(server, "/healthz").status == 200


def test_readyz_fails_but_healthz_passes_when_every_collector_fails(tmp_path: Any) -> None:
    from system_info_collector.hostpaths import HostPaths

    settings = Settings(
        interval=0.1,
        collectors=("cpu", "memory"),
        sinks=(),
        host_paths=HostPaths(proc=str(tmp_path / "nonexistent")),
    )
    agent = Agent(settings, build_providers(settings), [], Metrics(), host="h")
    probes = Probes(agent)
    agent.start()
    try:
        now = datetime.now(UTC)
        agent.tick(Tick(1, now, time.monotonic(), 0.0))
        agent.last_tick_monotonic = time.monotonic()
        status, body = probes.readiness()
        assert status == 503 and body["collectors_failing"] == ["cpu", "memory"]
        assert body["reason"].startswith("every collector fails (cpu, memory)")
        assert probes.health()[0] == 200  # the process is alive and ticking
        # one collector working again is enough to be ready
        (tmp_path / "nonexistent").mkdir()
        (tmp_path / "nonexistent" / "meminfo").write_text(
            (PROC_FIXTURES / "basic" / "meminfo").read_text()
        )
        agent.tick(Tick(2, now, time.monotonic(), 0.0))
        status, body = probes.readiness()
        assert status == 200 and body["collectors_failing"] == ["cpu"]
    finally:
        agent.close()
