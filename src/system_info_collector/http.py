"""/metrics, /healthz and /readyz: the collector's endpoints on the hardened server.

The server only *reads* what the agent already keeps (its metrics registry, the newest records
and readings, the sink workers' state); it never samples the host itself, and it runs in its
own threads (:mod:`.httpserver`), so a slow or hostile client cannot delay a tick. The pieces:
:mod:`.httpserver` (generic server), :mod:`.probes` (/healthz, /readyz), :mod:`.exposition`
(host metrics).
"""

from __future__ import annotations

import socket
import threading
import time
from email.message import Message

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from system_info_collector.agent import Agent
from system_info_collector.config import HttpSettings, parse_listen
from system_info_collector.exposition import HostMetricsCollector, Mode
from system_info_collector.exposition.textfile import TextfileCollector
from system_info_collector.httpserver import (
    MAX_CONNECTIONS,
    REQUEST_TIMEOUT,
    WRITE_TIMEOUT,
    HardenedServer,
    Json,
    Raw,
)
from system_info_collector.logging import event
from system_info_collector.probes import Probes, get_health
from system_info_collector.webauth import REALM, BasicAuth, TlsContext, TlsFiles, tls_files

__all__ = ["HttpServer", "get_health", "tls_files"]

# What answers without credentials when basic auth is on: the kubelet's probes and the
# `health` command cannot hold a password, and these show no host metrics and no secret.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})


class HttpServer:
    """Binds at construction (so a busy port fails before sampling starts); serves on start()."""

    def __init__(
        self,
        agent: Agent,
        listen: str,
        *,
        host_metrics: Mode = "node",
        max_connections: int = MAX_CONNECTIONS,
        request_timeout: float = REQUEST_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
        stale_after: float | None = None,
        tls: TlsFiles | None = None,
        basic_auth_file: str | None = None,
        textfile_directory: str | None = None,
    ) -> None:
        self.agent = agent
        self.tls = tls
        self.probes = Probes(agent, stale_after=stale_after)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(agent.metrics.registry)
        if host_metrics != "off":
            self.registry.register(HostMetricsCollector(agent, host_metrics))
        if textfile_directory:
            self.registry.register(TextfileCollector(textfile_directory))
        self._server = HardenedServer(
            parse_listen(listen),
            {"/metrics": self._metrics, "/healthz": self._health, "/readyz": self._ready},
            max_connections=max_connections,
            request_timeout=request_timeout,
            write_timeout=write_timeout,
            tls=TlsContext(tls) if tls is not None else None,
            auth=BasicAuth(basic_auth_file).user if basic_auth_file else None,
            open_paths=OPEN_PATHS,
            realm=REALM,
        )
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, agent: Agent, http: HttpSettings) -> HttpServer:
        return cls(
            agent,
            http.listen,
            host_metrics=http.host_metrics,
            tls=tls_files(http),
            basic_auth_file=http.basic_auth_file,
            textfile_directory=http.textfile_directory,
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"

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

    def _metrics(self, headers: Message) -> Raw:
        return Raw(200, *self.exposition(headers.get("Accept", "")))

    def _health(self, headers: Message) -> Json:
        return Json(*self.probes.health())

    def _ready(self, headers: Message) -> Json:
        return Json(*self.probes.readiness())

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
        event(
            "INFO",
            "http_listening",
            "serving /metrics, /healthz, /readyz",
            url=self.url,
            tls="mutual" if self.tls and self.tls.client_ca_file else bool(self.tls),
            basic_auth=self._server.auth is not None,
        )

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
