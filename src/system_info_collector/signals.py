"""SIGHUP, SIGUSR1 and SIGUSR2: handled, never fatal (SIGTERM/SIGINT stop and flush: cli.py).

Their default action would end the process at once, without flushing a sink. Instead:

- ``SIGHUP``: the CSV sink fsyncs and closes its active files and reopens them at its next
  write (after a log rotator moved them, or a volume was remounted); logs ``reopen_requested``
  and then ``csv_files_reopened``. Configuration is *not* reloaded (restart for that).
- ``SIGUSR1``: one INFO ``status`` line: ticks, lateness, each sink's state and backlog, the
  failing collectors, the directory locks and wall-clock steps seen.
- ``SIGUSR2``: toggles DEBUG logging on and off (``log_level_changed``).

The handler only queues the signal number (``SimpleQueue.put`` is safe in a signal handler;
the interrupted main thread may be inside the logger); a daemon thread acts on it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from queue import SimpleQueue
from types import FrameType
from typing import TYPE_CHECKING, Any

from system_info_collector.logging import event

if TYPE_CHECKING:
    from system_info_collector.agent import Agent

HANDLED = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


class SignalActions:
    def __init__(self, *, set_debug: Callable[[bool], None]) -> None:
        self._queue: SimpleQueue[int | None] = SimpleQueue()
        self._set_debug = set_debug
        self._debug = False
        self._agent: Agent | None = None
        self._thread: threading.Thread | None = None
        self.started = time.monotonic()

    def install(self) -> None:
        """Catch the signals now (they are queued until :meth:`start`)."""
        for signum in HANDLED:
            signal.signal(signum, self._handler)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self._queue.put_nowait(signum)

    def start(self, agent: Agent) -> None:
        self._agent = agent
        self._thread = threading.Thread(target=self._run, name="signals", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put_nowait(None)
            self._thread.join(5.0)
            self._thread = None

    def _run(self) -> None:
        while (signum := self._queue.get()) is not None:
            try:
                self.handle(signal.Signals(signum))
            except Exception as exc:  # a status line must never take the collector down
                with contextlib.suppress(Exception):
                    name = signal.Signals(signum).name
                    error = f"{type(exc).__name__}: {exc}"
                    event(
                        "ERROR",
                        "signal_failed",
                        "could not act on a signal",
                        signal=name,
                        error=error,
                    )

    def handle(self, signum: signal.Signals) -> None:
        agent = self._agent
        assert agent is not None
        if signum == signal.SIGHUP:
            sinks = [w.name for w in agent.workers if hasattr(w.sink, "request_reopen")]
            for worker in agent.workers:
                reopen = getattr(worker.sink, "request_reopen", None)
                if reopen is not None:
                    reopen()
            event(
                "INFO",
                "reopen_requested",
                "SIGHUP: files are fsynced and reopened at the "
                "next write (configuration is not reloaded)",
                signal="SIGHUP",
                sinks=sinks,
            )
        elif signum == signal.SIGUSR1:
            event(
                "INFO",
                "status",
                "status on SIGUSR1",
                signal="SIGUSR1",
                uptime_seconds=round(time.monotonic() - self.started, 3),
                **status(agent),
            )
        elif signum == signal.SIGUSR2:
            self._debug = not self._debug
            self._set_debug(self._debug)
            state = "on" if self._debug else "off"
            event(
                "INFO",
                "log_level_changed",
                f"SIGUSR2: DEBUG logging {state}",
                signal="SIGUSR2",
                debug=self._debug,
            )


def status(agent: Agent) -> dict[str, Any]:
    """What an operator asks first: is it ticking, is every sink keeping up, what fails."""
    registry = agent.metrics.registry
    last = agent.last_tick_monotonic
    locks = getattr(agent, "locks", None)

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    return {
        "host": agent.host,
        "interval_seconds": agent.settings.interval,
        "ticks": int(value("sic_ticks_total")),
        "tick_overruns": int(value("sic_tick_overruns_total")),
        "clock_steps": int(value("sic_clock_steps_total")),
        "last_tick_age_seconds": None if last is None else round(time.monotonic() - last, 3),
        "collectors_failing": sorted(agent.failing_collectors),
        "sinks": [
            {
                "name": w.name,
                "degraded": bool(w.degraded),
                "failing": bool(w.failing),
                "pending_records": int(w.pending_records),
                "rows_written": int(value("sic_sink_rows_written_total", sink=w.name)),
                "last_error": w.last_error if w.failing or w.degraded else None,
            }
            for w in agent.workers
        ],
        "locks": locks.states() if locks is not None else [],
    }
