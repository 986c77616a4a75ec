"""Commands: run (default), once, check; exit codes; wires config → logging → agent.

Exit codes: 0 success (also after SIGTERM/SIGINT and a flush); 1 a check or collector failed at
run time; 2 invalid configuration or usage; 130 a second SIGINT cut the shutdown flush short.
Command-line flags are only another way to set ``SIC_*`` variables.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from system_info_collector import __version__
from system_info_collector.config import Settings, load_settings
from system_info_collector.errors import ConfigError
from system_info_collector.heap import release_free_memory
from system_info_collector.logging import configure, event

if TYPE_CHECKING:
    from system_info_collector.agent import Agent

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT: a second Ctrl-C cut the shutdown flush short
ONCE_CPU_WINDOW = 0.25  # seconds between the two readings `once` needs for CPU and disk I/O rates

# flag -> variable it overrides
FLAG_VARIABLES = {
    "interval": "SIC_INTERVAL",
    "csv": "SIC_CSV_DIR",
    "db_dsn": "SIC_DB_DSN",
    "retry_max": "SIC_RETRY_MAX",
    "retry_initial": "SIC_RETRY_INITIAL",
    "retry_max_wait": "SIC_RETRY_MAX_WAIT",
}


def _add_override_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("overrides (each sets the SIC_ variable named)")
    group.add_argument("--interval", metavar="DURATION", help="SIC_INTERVAL, e.g. 1s")
    group.add_argument("--csv", metavar="DIR", help="SIC_CSV_DIR: directory of the CSV files")
    group.add_argument("--db-dsn", metavar="DSN", help="SIC_DB_DSN: PostgreSQL URI or key=value")
    group.add_argument("--retry-max", metavar="N", help="SIC_RETRY_MAX")
    group.add_argument("--retry-initial", metavar="DURATION", help="SIC_RETRY_INITIAL")
    group.add_argument("--retry-max-wait", metavar="DURATION", help="SIC_RETRY_MAX_WAIT")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="system-info-collector",
        description="Sample the host's CPU, memory, disks and disk I/O on a fixed interval and "
        "write every sample to rotated CSV files and PostgreSQL. Configured by SIC_* "
        "environment variables (see README).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="sample until SIGTERM/SIGINT (the default command)")
    once = commands.add_parser(
        "once",
        help=f"print one sample of every collector as JSON lines (CPU and disk I/O "
        f"rates over {ONCE_CPU_WINDOW:g}s)",
    )
    check = commands.add_parser(
        "check", help="validate configuration, host paths and sink reachability; exit 0 if all pass"
    )
    health = commands.add_parser(
        "health", help="ask the running collector's /healthz (SIC_HTTP_LISTEN); exit 0 if healthy"
    )
    replay = commands.add_parser(
        "replay",
        help="load CSV files or directories (active and rotated .gz) into PostgreSQL "
        "(SIC_DB_DSN), idempotently",
    )
    replay.add_argument("paths", nargs="+", metavar="PATH", help="CSV file or directory")
    db = commands.add_parser("db", help="database maintenance (SIC_DB_DSN)")
    db_commands = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    db_commands.add_parser(
        "migrate",
        help="convert plain tables of schema version 1 to range-partitioned tables (copies "
        "every row, keeps the old tables)",
    )
    for sub in (run, once, check, health, replay, db):
        _add_override_flags(sub)
    _add_override_flags(parser)
    return parser


def environment(args: argparse.Namespace, base: Mapping[str, str]) -> dict[str, str]:
    environ = dict(base)
    for attr, variable in FLAG_VARIABLES.items():
        value = getattr(args, attr, None)
        if value is not None:
            environ[variable] = value
    return environ


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command or "run"
    try:
        settings = load_settings(environment(args, os.environ))
    except ConfigError as exc:
        print("system-info-collector: invalid configuration:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    configure(settings.log_level, settings.log_format)
    handlers: dict[str, Callable[[Settings], int]] = {
        "run": cmd_run,
        "once": cmd_once,
        "check": cmd_check,
        "health": cmd_health,
        "replay": lambda s: cmd_replay(s, args.paths),
        "db": lambda s: cmd_db(s, args.db_command),
    }
    try:
        return handlers[command](settings)
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:
        event("CRITICAL", "fatal", "unexpected error", error=f"{type(exc).__name__}: {exc}")
        return EXIT_FAILED


def cmd_run(settings: Settings) -> int:
    import prometheus_client

    from system_info_collector.agent import Agent, resolve_hostname
    from system_info_collector.metrics import Metrics
    from system_info_collector.providers import build_providers
    from system_info_collector.sinks import build_sinks

    if "postgres" in settings.sinks and settings.postgres.dsn:
        from system_info_collector.sinks.postgres.sink import preflight

        drift = preflight(settings.postgres)
        for problem in drift:
            event("ERROR", "postgres_schema_drift", "refusing to start", table_problem=problem)
        if drift:
            return EXIT_FAILED
    # Process-wide switch, set once here: no `_created` series (node_exporter has none either).
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    metrics = Metrics()
    agent = Agent(
        settings,
        build_providers(settings),
        build_sinks(settings, metrics),
        metrics,
        host=resolve_hostname(settings),
    )

    requested: list[str] = []  # the signal that asked to stop (logged by the main loop)

    def stop(signum: int, frame: FrameType | None) -> None:
        # Runs on the main thread between two bytecodes: no logging here for the first signal
        # (the main thread may be inside the logger), only flags.
        name = signal.Signals(signum).name
        if not requested:
            requested.append(name)
            agent.stop_event.set()
        elif signum == signal.SIGINT:
            _force_exit(agent, name)
        else:
            # `timeout`, `kill 0` and process-group kills deliver SIGTERM twice; the flush is
            # already bounded by SIC_SHUTDOWN_TIMEOUT, so a repeated SIGTERM changes nothing.
            with contextlib.suppress(Exception):
                event(
                    "DEBUG",
                    "shutdown_signal_repeated",
                    "already stopping; a second SIGINT (Ctrl-C) exits at once",
                    signal=name,
                )

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server = None
    if settings.http.listen:
        from system_info_collector.http import HttpServer

        try:
            server = HttpServer(
                agent, settings.http.listen, host_metrics=settings.http.host_metrics
            )
        except OSError as exc:
            event(
                "ERROR",
                "http_listen_failed",
                "cannot listen for /metrics, /healthz, /readyz",
                listen=settings.http.listen,
                error=str(exc),
            )
            return EXIT_FAILED
    agent.start()
    release_free_memory()  # the heap left over from imports and start-up (about 1 MB)
    if server is not None:
        server.start()
    try:
        agent.run()
        if requested:
            event(
                "INFO",
                "shutdown_requested",
                "stopping: flushing every sink",
                signal=requested[0],
                shutdown_timeout_seconds=settings.shutdown_timeout,
            )
    finally:
        flushed = agent.close()
        if server is not None:
            server.close()
        event("INFO", "collector_stopped", "stopped", flushed=flushed)
    return EXIT_OK


def _force_exit(agent: Agent, signal_name: str) -> NoReturn:
    """A second SIGINT while flushing: exit now (code 130) without waiting for the sinks.

    What was not yet written is lost from memory only: CSV files and the spool are read back
    and repaired at the next start, as after a kill -9.
    """
    with contextlib.suppress(Exception):  # the interrupted main thread may hold the logger
        event(
            "ERROR",
            "shutdown_forced",
            "second interrupt: exiting without waiting for the sinks to flush",
            signal=signal_name,
            unflushed_records=sum(w.pending_records for w in agent.workers),
        )
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


def cmd_health(settings: Settings) -> int:
    """GET /healthz of the running collector (for HEALTHCHECK): 0 healthy, 1 otherwise."""
    from system_info_collector.http import get_health

    listen = settings.http.listen
    if not listen:
        print("unhealthy: SIC_HTTP_LISTEN is empty, so there is no /healthz to ask")
        return EXIT_FAILED
    try:
        status, body = get_health(listen)
    except (OSError, http.client.HTTPException) as exc:
        print(f"unhealthy: no answer from /healthz on {listen}: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    print(f"{'healthy' if status == 200 else 'unhealthy'}: HTTP {status} {body.strip()}")
    return EXIT_OK if status == 200 else EXIT_FAILED


def cmd_once(settings: Settings) -> int:
    from system_info_collector.agent import resolve_hostname
    from system_info_collector.collect import Failures, collect, prime
    from system_info_collector.providers import build_providers
    from system_info_collector.sinks.stdout import record_json

    host = resolve_hostname(settings)
    providers = build_providers(settings)
    try:
        prime(providers)  # a failure here is reported by collect() below
        time.sleep(ONCE_CPU_WINDOW)
        ts = datetime.fromtimestamp(round(time.time(), 3), UTC)
        result = collect(providers, ts, host, settings.tags, Failures("collector failed"))
    finally:
        for provider in providers:
            provider.close()
    sys.stdout.write("".join(record_json(r) + "\n" for r in result.accepted))
    sys.stdout.flush()
    return EXIT_FAILED if result.failed else EXIT_OK


def cmd_replay(settings: Settings, paths: Sequence[str]) -> int:
    from system_info_collector.replay import replay

    return replay(settings.postgres, settings.retry, paths)


def cmd_db(settings: Settings, command: str) -> int:
    from system_info_collector.sinks.postgres.migrate import run_migrate

    assert command == "migrate"
    return run_migrate(settings.postgres)


def cmd_check(settings: Settings) -> int:
    from system_info_collector.checks import host_checks
    from system_info_collector.metrics import Metrics
    from system_info_collector.sinks import CheckResult, build_sinks

    results: list[CheckResult] = [CheckResult("configuration", True, "all SIC_ variables valid")]
    results += host_checks(settings)
    for sink in build_sinks(settings, Metrics()):
        try:
            results += sink.check()
        except Exception as exc:
            results.append(CheckResult(f"sink {sink.name}", False, f"{type(exc).__name__}: {exc}"))
    for r in results:
        print(f"{'ok' if r.ok else 'FAIL':<4}  {r.name}: {r.detail}")
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED
