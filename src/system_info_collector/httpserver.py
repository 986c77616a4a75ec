"""A small threaded HTTP server hardened against slow and hostile clients (no routes of its own).

It serves ``GET``/``HEAD`` on a fixed table of paths (``routes``), in its own threads, so a
client cannot delay the caller's work:

- every connection has one deadline for its whole request (request line and headers): a client
  that trickles bytes (slowloris) is cut when the deadline passes, not when it goes quiet;
- a request may send at most :data:`MAX_REQUEST_BYTES` (longer: 431), writes time out too;
- at most ``max_connections`` connections are served at once; beyond that the oldest connection
  still sending its request is cut, else the new one is answered 503 and closed without a thread;
- other methods get 405, other paths 404, every error is a JSON object;
- with ``tls`` every connection is TLS, its handshake inside the same request deadline (in the
  connection's thread: a client that stalls the handshake holds its own slot only); with
  ``auth`` a path not in ``open_paths`` answers 401 unless the request authenticates.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from system_info_collector import __version__
from system_info_collector.logging import event

MAX_CONNECTIONS = 64  # served at once; more are answered 503 and closed
REQUEST_TIMEOUT = 5.0  # seconds for the whole request line + headers
WRITE_TIMEOUT = 10.0  # seconds to send a response
MAX_REQUEST_BYTES = 32 * 1024  # request line + headers

JSON_TYPE = "application/json"
_BUSY_BODY = b'{"error":"too many connections"}\n'
_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


_PLAIN_TO_TLS_BODY = b'{"error":"this server speaks HTTPS: use https://"}\n'
_PLAIN_TO_TLS = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_PLAIN_TO_TLS_BODY), _PLAIN_TO_TLS_BODY)
)


@dataclass(frozen=True, slots=True)
class Json:
    """An answer as a JSON object."""

    status: int
    body: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Raw:
    """An answer as bytes of a content type."""

    status: int
    body: bytes
    content_type: str


Route = Callable[[Message], Json | Raw]  # the request's headers -> the answer
Authenticate = Callable[[str | None], str | None]  # Authorization header -> user, or None


class Throttled(Exception):
    """Raised by an :data:`Authenticate` that cannot check credentials now: the request is
    answered 429 with ``Retry-After: retry_after`` (seconds)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


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
    server: HardenedServer
    server_version = f"system-info-collector/{__version__}"
    sys_version = ""
    error_content_type = JSON_TYPE
    default_request_version = "HTTP/1.0"  # error answers to garbage keep their status line

    def setup(self) -> None:
        server = self.server
        deadline = time.monotonic() + server.request_timeout
        if server.tls is not None:
            self.request = server.handshake(self.request, deadline)
        super().setup()
        self.rfile.close()  # replaced by a reader with a deadline and a byte budget
        self._raw = _DeadlineReader(self.connection, deadline, MAX_REQUEST_BYTES)
        self.rfile = io.BufferedReader(self._raw)
        self.request_version = self.default_request_version
        self.requestline = ""
        self.command = ""

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if isinstance(self.request, ssl.SSLSocket):  # socketserver closes the raw one
                with contextlib.suppress(OSError):
                    self.request.close()

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
        route = self.server.routes.get(path)
        if route is None:
            endpoints = list(self.server.routes)
            self._send(404, {"error": f"no such path {path!r}", "endpoints": endpoints}, head=head)
            return
        auth = self.server.auth
        try:
            denied = (
                auth is not None
                and path not in self.server.open_paths
                and auth(self.headers.get("Authorization")) is None
            )
        except Throttled as exc:
            self._send(
                429,
                {"error": "too many new credentials to check now; retry later"},
                head=head,
                headers={"Retry-After": str(exc.retry_after)},
            )
            return
        if denied:
            event(
                "DEBUG",
                "http_unauthorized",
                "request without valid credentials",
                client=self.client_address[0],
                path=path,
            )
            self._send(
                401,
                {"error": "authentication required (basic auth)"},
                head=head,
                headers={"WWW-Authenticate": f'Basic realm="{self.server.realm}"'},
            )
            return
        answer = route(self.headers)
        if isinstance(answer, Json):
            self._send(answer.status, answer.body, head=head)
        else:
            self._send_bytes(answer.status, answer.body, answer.content_type, head=head)

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


class HardenedServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # do not track handler threads; they are daemons
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        routes: Mapping[str, Route],
        *,
        max_connections: int,
        request_timeout: float,
        write_timeout: float,
        tls: Callable[[], ssl.SSLContext] | None = None,
        auth: Authenticate | None = None,
        open_paths: frozenset[str] = frozenset(),
        realm: str = "system-info-collector",
    ) -> None:
        self.routes = routes
        self.tls = tls
        self.auth = auth
        self.open_paths = open_paths
        self.realm = realm
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
            if self.tls is None:  # a TLS client would read plain bytes as a broken handshake
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

    def handshake(self, request: socket.socket, deadline: float) -> ssl.SSLSocket:
        """``request`` as TLS, the handshake done before ``deadline`` (raises OSError, which
        ends the connection: a DEBUG log, as for any aborted request)."""
        assert self.tls is not None
        request.settimeout(max(deadline - time.monotonic(), 0.001))
        first = request.recv(1, socket.MSG_PEEK)
        if first and first != b"\x16":  # not a TLS handshake record: plain HTTP, most likely
            with contextlib.suppress(OSError):
                request.sendall(_PLAIN_TO_TLS)
            raise ConnectionAbortedError("plain HTTP sent to the HTTPS port")
        tls = self.tls().wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        with self._lock:  # eviction shuts down the socket the connection's thread reads
            if request in self._reading:  # in its place: the oldest first
                self._reading = {tls if r is request else r: None for r in self._reading}
        try:
            tls.settimeout(max(deadline - time.monotonic(), 0.001))
            tls.do_handshake()
        except BaseException:
            self.request_read(tls)
            with contextlib.suppress(OSError):
                tls.close()
            raise
        return tls

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
