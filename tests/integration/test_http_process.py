"""The real collector process, scraped and probed over HTTP like Prometheus and kubelet would.

These spawn our own process only (no database, no Docker), so they are not marked integration.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import EXE, clean_env, poll

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Collector:
    proc: subprocess.Popen[str]
    port: int
    ticks: list[datetime] = field(default_factory=list)  # distinct record ts, in arrival order
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with NO_PROXY.open(self.base + path, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def metrics(self) -> dict[str, float]:
        status, body = self.get("/metrics")
        assert status == 200
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                key = s.name + "".join(f",{k}={v}" for k, v in sorted(s.labels.items()))
                values[key] = s.value
        return values

    def read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            ts = datetime.fromisoformat(json.loads(line)["ts"])
            with self.lock:
                if not self.ticks or self.ticks[-1] != ts:
                    self.ticks.append(ts)


@pytest.fixture
def collector() -> Iterator[Collector]:
    port = free_port()
    env = clean_env(
        SIC_INTERVAL="100ms",
        SIC_SINKS="stdout",
        SIC_COLLECTORS="cpu,memory",
        SIC_HTTP_LISTEN=f"127.0.0.1:{port}",
    )
    proc = subprocess.Popen(
        [EXE, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    c = Collector(proc, port)
    reader = threading.Thread(target=c.read_stdout, daemon=True)
    reader.start()
    try:
        poll(lambda: _answers(c), timeout=20, what="the collector's /healthz")
        yield c
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
        reader.join(timeout=5)
        assert proc.stderr is not None
        stderr = proc.stderr.read()
        proc.stderr.close()
        assert proc.stdout is not None
        proc.stdout.close()
        assert "Traceback" not in stderr


def _answers(c: Collector) -> bool:
    if c.proc.poll() is not None:
        assert c.proc.stderr is not None
        raise AssertionError(f"collector exited: {c.proc.stderr.read()}")
    try:
        return c.get("/healthz")[0] == 200
    except OSError:
        return False


def test_scrapes_see_the_counters_move_and_probes_pass(collector: Collector) -> None:
    first = collector.metrics()
    poll(
        lambda: collector.metrics()["sic_ticks_total"] >= first["sic_ticks_total"] + 3,
        what="three more ticks",
    )
    second = collector.metrics()
    assert second["sic_ticks_total"] > first["sic_ticks_total"]
    mem = "sic_records_collected_total,measurement=memory"
    assert second[mem] > first.get(mem, 0)
    assert second["sic_tick_duration_seconds_count"] == second["sic_ticks_total"]
    written = "sic_sink_rows_written_total,sink=stdout"
    poll(lambda: collector.metrics()[written] > first.get(written, 0), what="rows written")
    assert second["node_memory_MemAvailable_bytes"] > 0
    assert any(k.startswith("node_cpu_seconds_total,cpu=0,") for k in second)
    assert second["sic_build_info,version=" + _version()] == 1

    status, body = collector.get("/readyz")
    assert status == 200 and json.loads(body)["sinks"][0]["name"] == "stdout"

    health = subprocess.run(
        [EXE, "health"],
        env=clean_env(SIC_HTTP_LISTEN=f":{collector.port}"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert health.returncode == 0, health.stdout + health.stderr

    collector.proc.send_signal(signal.SIGTERM)
    assert collector.proc.wait(timeout=15) == 0
    health = subprocess.run(
        [EXE, "health"],
        env=clean_env(SIC_HTTP_LISTEN=f":{collector.port}"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert health.returncode == 1 and "no answer" in health.stdout


def _version() -> str:
    from system_info_collector import __version__

    return __version__


def test_a_busy_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = clean_env(
            SIC_INTERVAL="100ms", SIC_SINKS="stdout", SIC_HTTP_LISTEN=f"127.0.0.1:{port}"
        )
        result = subprocess.run([EXE, "run"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "http_listen_failed" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""  # nothing was sampled


SLOW_CLIENTS = 300  # well above the server's 64 connection slots


def test_slow_clients_do_not_delay_ticks(collector: Collector) -> None:
    before = collector.metrics()
    with collector.lock:
        start = len(collector.ticks)
    stop, flooded = threading.Event(), threading.Event()
    opened: list[socket.socket] = []

    def slowloris() -> None:
        # half a request on every connection, then one more header byte now and then
        for _ in range(SLOW_CLIENTS):
            with contextlib.suppress(OSError):
                s = socket.create_connection(("127.0.0.1", collector.port), timeout=1)
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                opened.append(s)
        flooded.set()
        while not stop.wait(0.2):
            for s in opened:
                with contextlib.suppress(OSError):
                    s.send(b"a")

    attacker = threading.Thread(target=slowloris, daemon=True)
    attacker.start()
    try:
        assert flooded.wait(30)
        assert len(opened) > 200  # connected and sent half a request (the rest were refused)
        deadline = time.monotonic() + 2.0
        answered = 0
        while time.monotonic() < deadline:  # a normal client keeps getting answers
            assert collector.get("/healthz")[0] == 200
            answered += 1
        # Measured while the attack still runs: the teardown below (hundreds of sockets closed
        # at once) is not what this test is about. A slot skipped before this scrape shows as a
        # gap only once the tick after it is printed, so wait for two more ticks first.
        after = collector.metrics()
        with collector.lock:
            seen = len(collector.ticks)
        poll(lambda: len(collector.ticks) >= seen + 2, timeout=10, what="two more ticks")
        with collector.lock:
            during = collector.ticks[start:]
    finally:
        stop.set()
        attacker.join()
        for s in opened:
            s.close()
    assert answered >= 5
    assert len(during) >= 15  # ~2.5 s of 100 ms ticks
    steps = {round((b - a).total_seconds(), 3) for a, b in itertools.pairwise(during)}
    assert steps == {0.1}, f"tick gaps while under attack: {sorted(steps)}"
    assert after["sic_ticks_skipped_total"] == before["sic_ticks_skipped_total"]
    assert after["sic_tick_overruns_total"] == before["sic_tick_overruns_total"]

    def late(m: dict[str, float]) -> float:  # ticks that started more than 50 ms after their slot
        return m["sic_tick_lateness_seconds_count"] - m["sic_tick_lateness_seconds_bucket,le=0.05"]

    assert late(after) == late(before)
