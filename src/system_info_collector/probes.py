"""The answers of /healthz (liveness: is the scheduler ticking?) and /readyz (readiness: are
the sinks keeping up?), and the ``health`` command's client of /healthz."""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from system_info_collector.agent import Agent
from system_info_collector.clienttls import ClientTls
from system_info_collector.config import parse_listen
from system_info_collector.httpserver import JSON_TYPE
from system_info_collector.webauth import TlsFiles

STALE_TICKS = 3  # /healthz fails when no tick ran for this many intervals ...
MIN_STALE_AFTER = 1.0  # ... but never sooner than this many seconds
HIGH_WATER = 0.8  # /readyz fails when a sink's backlog reaches this share of its limit


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
            status = "directory unavailable" if locks.unavailable else "waiting for directory lock"
            reason = "; ".join(lk.reason() for lk in locks.waiting)
            return 503, {**body, "status": status, "reason": reason}
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


def get_health(listen: str, timeout: float = 2.0, tls: TlsFiles | None = None) -> tuple[int, str]:
    """``GET /healthz`` of the process serving on ``listen``: (status, body). No proxies.

    With ``tls`` over HTTPS, without verifying the certificate (it is our own process on this
    host, and nothing secret is sent); under mutual TLS the server's own certificate and key
    are presented as the client's (they pass where one CA signs both)."""
    host, port = parse_listen(listen)
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    conn: http.client.HTTPConnection
    if tls is None:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    else:
        mutual = tls.client_ca_file is not None
        client = ClientTls(
            cert_file=tls.cert_file if mutual else None,
            key_file=tls.key_file if mutual else None,
            insecure_skip_verify=True,
        )
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=client.context())
    try:
        conn.request("GET", "/healthz", headers={"Accept": JSON_TYPE})
        response = conn.getresponse()
        return response.status, response.read(64 * 1024).decode("utf-8", "replace")
    finally:
        conn.close()
