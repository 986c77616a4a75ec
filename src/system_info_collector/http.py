"""/metrics, /healthz, /readyz on a small threaded HTTP server, off the sampling path.

The server only *reads* what the agent already keeps (its metrics registry, the last tick's
records, the sink workers' state); it never samples the host itself. It runs in its own threads,
so a slow or hostile client cannot delay a tick:

- every connection has one deadline for its whole request (request line and headers): a client
  that trickles bytes (slowloris) is cut when the deadline passes, not when it goes quiet;
- a request may send at most :data:`MAX_REQUEST_BYTES` (longer: 431), writes time out too;
- at most ``max_connections`` connections are served at once; beyond that a connection is
  answered 503 and closed at once, without a thread.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from system_info_collector import __version__
from system_info_collector.agent import Agent
from system_info_collector.config import parse_listen
from system_info_collector.logging import event
from system_info_collector.model import Record
from system_info_collector.schema import MEASUREMENTS, Measurement

MAX_CONNECTIONS = 64  # served at once; more are answered 503 and closed
REQUEST_TIMEOUT = 5.0  # seconds for the whole request line + headers
WRITE_TIMEOUT = 10.0  # seconds to send a response
MAX_REQUEST_BYTES = 32 * 1024  # request line + headers
STALE_TICKS = 3  # /healthz fails when no tick ran for this many intervals ...
MIN_STALE_AFTER = 1.0  # ... but never sooner than this many seconds
HIGH_WATER = 0.8  # /readyz fails when a sink's backlog reaches this share of its limit
ENDPOINTS = ("/metrics", "/healthz", "/readyz")

JSON_TYPE = "application/json"
_BUSY_BODY = b'{"error":"too many connections"}\n'
_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


# -- host metrics ------------------------------------------------------------------------
# Prometheus names for the schema's fields: sic_<measurement>_<field>; fields ending in
# ``_total`` are counters. The disk measurement is a filesystem in node_exporter's words.
_PREFIX = {"disk": "sic_filesystem"}
_RENAME = {
    ("disk", "total_bytes"): "size_bytes",
    ("disk", "available_bytes"): "avail_bytes",
    ("disk", "inodes_total"): "inodes",  # a gauge, not a counter
}


def host_metric_name(measurement: str, field: str) -> str:
    """``("disk", "available_bytes")`` -> ``"sic_filesystem_avail_bytes"``."""
    prefix = _PREFIX.get(measurement, f"sic_{measurement}")
    return f"{prefix}_{_RENAME.get((measurement, field), field)}"


class HostMetricsCollector:
    """The latest host sample (what the ticks already read) as Prometheus metrics.

    Measurements sampled less often than every tick (``SIC_<C>_INTERVAL``) keep their last
    records until they are older than three of their intervals.
    """

    def __init__(self, agent: Agent, clock: Callable[[], float] = time.time) -> None:
        self._agent = agent
        self._clock = clock

    def describe(self) -> Iterable[Metric]:
        return ()  # names vary with the data; nothing to check at registration

    def _snapshot(self) -> dict[str, list[Record]]:
        latest = self._agent.latest  # replaced as a whole by the agent each tick
        now = self._clock()
        fresh = {}
        for name, recs in latest.items():
            limit = STALE_TICKS * self._agent.settings.collector_interval(name)
            alive = [r for r in recs if now - r.ts.timestamp() <= limit]
            if alive:
                fresh[name] = alive
        return fresh

    def collect(self) -> Iterator[Metric]:
        latest = self._snapshot()
        stamp = GaugeMetricFamily(
            "sic_host_sample_timestamp_seconds",
            "Scheduled Unix time of the latest sample of each measurement",
            labels=["measurement"],
        )
        for name, records in latest.items():
            stamp.add_metric([name], max(r.ts for r in records).timestamp())
        yield stamp
        for name, measurement in MEASUREMENTS.items():
            if name in latest:
                yield from _families(measurement, latest[name])


def _families(measurement: Measurement, records: list[Record]) -> Iterator[Metric]:
    columns = measurement.label_columns
    extra = sorted({k for r in records for k in r.tags if k not in columns and k[:2] != "__"})
    labels = [*columns, *extra]
    values = [[r.tags.get(k, "") for k in labels] for r in records]
    for field in measurement.fields:
        name = host_metric_name(measurement.name, field.name)
        help_ = f"{field.help} ({measurement.name}.{field.name})"
        family: GaugeMetricFamily | CounterMetricFamily
        if name.endswith("_total"):
            family = CounterMetricFamily(name, help_, labels=labels)
        else:
            family = GaugeMetricFamily(name, help_, labels=labels)
        for record, label_values in zip(records, values, strict=True):
            value = record.fields.get(field.name)
            if value is not None:
                family.add_metric(label_values, float(value))
        if family.samples:
            yield family


# -- probes ------------------------------------------------------------------------------
class Probes:
    """The answers of /healthz and /readyz: ``(status, JSON body)``."""

    def __init__(
        self,
        agent: Agent,
        *,
        stale_after: float | None = None,
        high_water: float = HIGH_WATER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.agent = agent
        interval = agent.settings.interval
        self.stale_after = stale_after or max(STALE_TICKS * interval, MIN_STALE_AFTER)
        self.high_water = high_water
        self._clock = clock
        self.started = clock()

    def health(self) -> tuple[int, dict[str, Any]]:
        now = self._clock()
        last = self.agent.last_tick_monotonic
        body: dict[str, Any] = {
            "status": "ok",
            "interval_seconds": self.agent.settings.interval,
            "stale_after_seconds": self.stale_after,
            "last_tick_age_seconds": None if last is None else round(now - last, 3),
        }
        if self.agent.stop_event.is_set():
            return 503, {**body, "status": "stopping", "reason": "shutting down"}
        locks = getattr(self.agent, "locks", None)
        if last is None and locks is not None and locks.waiting:
            # alive, waiting for another collector to release a directory (SIC_LOCK_TIMEOUT)
            return 200, {**body, "status": "waiting for directory lock"}
        if last is None:
            waited = now - self.started
            if waited <= self.stale_after:
                return 200, {**body, "status": "starting"}
            reason = f"no tick yet, {waited:.3f}s after start (limit {self.stale_after:g}s)"
            return 503, {**body, "status": "stalled", "reason": reason}
        age = now - last
        if age > self.stale_after:
            reason = f"last tick {age:.3f}s ago (limit {self.stale_after:g}s)"
            return 503, {**body, "status": "stalled", "reason": reason}
        return 200, body

    def readiness(self) -> tuple[int, dict[str, Any]]:
        sinks = [self._sink_state(worker) for worker in self.agent.workers]
        ready = all(s["ready"] for s in sinks)
        body: dict[str, Any] = {"status": "ready" if ready else "not ready", "sinks": sinks}
        locks = getattr(self.agent, "locks", None)
        if locks is not None:
            body["locks"] = locks.states()
        if self.agent.stop_event.is_set():
            return 503, {**body, "status": "stopping", "reason": "shutting down"}
        if locks is not None and locks.waiting:
            held = "; ".join(f"{lk.directory} in use by {lk.holder}" for lk in locks.waiting)
            return 503, {**body, "status": "waiting for directory lock", "reason": held}
        collectors = [p.name for p in self.agent.providers]
        failing = sorted(self.agent.failing_collectors)
        body["collectors_failing"] = failing
        if collectors and set(collectors) <= set(failing):
            # Nothing is being sampled: not ready (alerts, rollouts see it); /healthz stays
            # 200 because a restart would not fix a missing /proc mount (see operations.md).
            reason = f"every collector fails ({', '.join(failing)}); see the collector_failed log"
            return 503, {**body, "status": "not ready", "reason": reason}
        if not ready:
            names = ", ".join(f"{s['name']} {s['state']}" for s in sinks if not s["ready"])
            body["reason"] = f"sinks not keeping up: {names}"
        return (200 if ready else 503), body

    def _sink_state(self, worker: Any) -> dict[str, Any]:
        limit = int(worker.backlog_limit)
        high = max(1, int(limit * self.high_water))
        pending = int(worker.pending_records)
        problem = worker.buffer_problem  # e.g. the spool cannot be written: memory only
        if worker.degraded:
            state = "degraded"
        elif problem:
            state = "buffer_failed"
        elif worker.stalled:
            state = "stalled"
        elif pending >= high:
            state = "backlogged"
        elif worker.failing:
            state = "retrying"
        else:
            state = "ok"
        last_success = worker.last_success
        return {
            "name": worker.name,
            "ready": state in ("ok", "retrying"),
            "state": state,
            "pending_records": pending,
            "pending_batches": int(worker.pending_batches),
            "backlog_limit_records": limit,
            "high_water_records": high,
            "last_success": None
            if last_success is None
            else datetime.fromtimestamp(last_success, UTC).isoformat(timespec="milliseconds"),
            "last_error": problem or (worker.last_error if state != "ok" else None),
        }


# -- the server ----------------------------------------------------------------------------
class _DeadlineReader(io.RawIOBase):
    """Socket reads that share one deadline and one byte budget for the whole request."""

    def __init__(self, sock: socket.socket, deadline: float, budget: int) -> None:
        self._sock = sock
        self._deadline = deadline
        self._budget = budget
        self.eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request not received in time")
        if self._budget <= 0:
            raise http.client.LineTooLong(f"request headers over {MAX_REQUEST_BYTES} bytes")
        self._sock.settimeout(remaining)
        view = memoryview(buffer)[: self._budget]
        n = self._sock.recv_into(view)
        self._budget -= n
        self.eof = self.eof or n == 0
        return n


DRAIN_BYTES = 1 << 20  # at most this much of an oversized request is read and dropped ...
DRAIN_SECONDS = 1.0  # ... for at most this long


def _drain(sock: socket.socket) -> None:
    sock.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + DRAIN_SECONDS
    left = DRAIN_BYTES
    while left > 0 and (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        chunk = sock.recv(min(65536, left))
        if not chunk:
            return
        left -= len(chunk)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = f"system-info-collector/{__version__}"
    sys_version = ""
    error_content_type = JSON_TYPE
    default_request_version = "HTTP/1.0"  # error answers to garbage keep their status line

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # replaced by a reader with a deadline and a byte budget
        server = self.server
        deadline = time.monotonic() + server.request_timeout
        self._raw = _DeadlineReader(self.connection, deadline, MAX_REQUEST_BYTES)
        self.rfile = io.BufferedReader(self._raw)
        self.request_version = self.default_request_version
        self.requestline = ""
        self.command = ""

    def version_string(self) -> str:
        return self.server_version

    def parse_request(self) -> bool:
        parsed = super().parse_request()  # reads the headers
        self.server.request_read(self.connection)
        if parsed and self._raw.eof:  # cut off before the blank line: not a whole request
            self.send_error(400, "incomplete request: the connection ended inside the headers")
            return False
        return parsed

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except http.client.LineTooLong:
            # Over the byte budget before the request line (or a header line) ended: answer,
            # then read and drop what the client still sends for a moment, so that it sees
            # the answer rather than a reset.
            self.close_connection = True
            with contextlib.suppress(OSError):
                if not self.requestline:
                    self.send_error(414, f"request line over {MAX_REQUEST_BYTES} bytes")
                else:
                    self.send_error(431, f"request headers over {MAX_REQUEST_BYTES} bytes")
                self.wfile.flush()
                _drain(self.connection)
        except (OSError, http.client.HTTPException) as exc:
            self.close_connection = True
            event(
                "DEBUG",
                "http_request_aborted",
                "client request aborted",
                client=self.client_address[0],
                error=f"{type(exc).__name__}: {exc}",
            )

    def log_message(self, format: str, *args: Any) -> None:
        event("DEBUG", "http_request", format % args, client=self.client_address[0])

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        self.connection.settimeout(self.server.write_timeout)
        self.close_connection = True
        try:
            status = HTTPStatus(code)
            text = message or status.phrase
        except ValueError:
            text = message or ""
        self._send(code, {"error": text, **({"detail": explain} if explain else {})})

    def do_GET(self) -> None:
        self._route(head=False)

    def do_HEAD(self) -> None:
        self._route(head=True)

    def _not_allowed(self) -> None:
        self.connection.settimeout(self.server.write_timeout)
        self._send(
            405,
            {"error": f"method {self.command} not allowed; use GET or HEAD"},
            headers={"Allow": "GET, HEAD"},
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

    def _route(self, *, head: bool) -> None:
        self.connection.settimeout(self.server.write_timeout)
        path = self.path.split("?", 1)[0]
        app = self.server.app
        if path == "/metrics":
            body, content_type = app.exposition(self.headers.get("Accept", ""))
            self._send_bytes(200, body, content_type, head=head)
        elif path == "/healthz":
            self._send(*app.probes.health(), head=head)
        elif path == "/readyz":
            self._send(*app.probes.readiness(), head=head)
        else:
            self._send(
                404, {"error": f"no such path {path!r}", "endpoints": list(ENDPOINTS)}, head=head
            )

    def _send(
        self,
        code: int,
        body: Mapping[str, Any],
        *,
        head: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        data = (json.dumps(body, separators=(",", ":")) + "\n").encode()
        self._send_bytes(code, data, JSON_TYPE, head=head, headers=headers)

    def _send_bytes(
        self,
        code: int,
        data: bytes,
        content_type: str,
        *,
        head: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head and self.command != "HEAD":
            self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # do not track handler threads; they are daemons
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        app: HttpServer,
        *,
        max_connections: int,
        request_timeout: float,
        write_timeout: float,
    ) -> None:
        self.app = app
        self.request_timeout = request_timeout
        self.write_timeout = write_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._reading: dict[socket.socket, None] = {}  # still sending their request, oldest first
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve our FQDN (DNS) for no use of ours.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        # All slots taken: cut the oldest connection still sending its request (a slow client
        # holds its slot no longer than a new one needs), else answer 503 without a thread.
        if not self._slots.acquire(blocking=False) and not (
            self._evict_oldest_reader() and self._slots.acquire(timeout=0.1)
        ):
            with contextlib.suppress(OSError):
                request.setblocking(False)
                request.send(_BUSY)
            self.shutdown_request(request)
            return
        with self._lock:
            self._reading[request] = None
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.request_read(request)
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.request_read(request)
            self._slots.release()

    def request_read(self, request: socket.socket) -> None:
        with self._lock:
            self._reading.pop(request, None)

    def _evict_oldest_reader(self) -> bool:
        with self._lock:
            if not self._reading:
                return False
            oldest = next(iter(self._reading))
            del self._reading[oldest]
        with contextlib.suppress(OSError):
            oldest.shutdown(socket.SHUT_RDWR)  # its blocked read returns; its thread ends
        return True

    def handle_error(self, request: Any, client_address: Any) -> None:
        event(
            "DEBUG",
            "http_handler_error",
            "error while serving a client",
            client=str(client_address),
        )


class HttpServer:
    """Binds at construction (so a busy port fails before sampling starts); serves on start()."""

    def __init__(
        self,
        agent: Agent,
        listen: str,
        *,
        host_metrics: bool = True,
        max_connections: int = MAX_CONNECTIONS,
        request_timeout: float = REQUEST_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
        stale_after: float | None = None,
    ) -> None:
        self.agent = agent
        self.probes = Probes(agent, stale_after=stale_after)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(agent.metrics.registry)
        if host_metrics:
            self.registry.register(HostMetricsCollector(agent))
        self._server = _Server(
            parse_listen(listen),
            self,
            max_connections=max_connections,
            request_timeout=request_timeout,
            write_timeout=write_timeout,
        )
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    def _wake_address(self) -> tuple[str, int]:
        host, port = self.address
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return host, port

    def exposition(self, accept: str) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def start(self) -> None:
        self.probes.started = time.monotonic()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            # No periodic polling while idle (it would cost CPU every interval); close()
            # wakes the loop with a connection of its own instead.
            kwargs={"poll_interval": 3600.0},
            name="http",
            daemon=True,
        )
        self._thread.start()
        event("INFO", "http_listening", "serving /metrics, /healthz, /readyz", url=self.url)

    def close(self) -> None:
        if self._thread is not None:
            stopper = threading.Thread(target=self._server.shutdown, daemon=True)
            stopper.start()
            while stopper.is_alive():  # serve_forever checks the shutdown flag on activity
                try:
                    with socket.create_connection(self._wake_address(), timeout=1.0):
                        pass
                except OSError:
                    pass
                stopper.join(0.05)
            self._thread.join()
            self._thread = None
        self._server.server_close()


def get_health(listen: str, timeout: float = 2.0) -> tuple[int, str]:
    """``GET /healthz`` of the process serving on ``listen``: (status, body). No proxies."""
    host, port = parse_listen(listen)
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/healthz", headers={"Accept": JSON_TYPE})
        response = conn.getresponse()
        return response.status, response.read(64 * 1024).decode("utf-8", "replace")
    finally:
        conn.close()
