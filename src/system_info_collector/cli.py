"""Commands: run (default), once, check; exit codes; wires config → logging → agent.

Exit codes: 0 success (also after SIGTERM/SIGINT and a flush); 1 a check or collector failed at
run time; 2 invalid configuration or usage; 3 another collector holds the CSV or spool directory
(:mod:`.dirlock`); 130 a second SIGINT cut the shutdown flush short. SIGHUP, SIGUSR1 and SIGUSR2
never end the process (:mod:`.signals`).
Command-line flags are only another way to set ``SIC_*`` variables.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from system_info_collector import __version__
from system_info_collector.config import Settings, load_settings
from system_info_collector.dirlock import EXIT_LOCKED, DirectoryLocked, DirLock, DirLocks
from system_info_collector.errors import ConfigError, TransientSinkError
from system_info_collector.heap import release_free_memory
from system_info_collector.logging import configure, event
from system_info_collector.sinks import CheckResult

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


OVERRIDE_FLAGS = {  # flag: (metavar, help)
    "interval": ("DURATION", "SIC_INTERVAL, e.g. 1s"),
    "csv": ("DIR", "SIC_CSV_DIR: directory of the CSV files"),
    "db_dsn": ("DSN", "SIC_DB_DSN: PostgreSQL URI or key=value"),
    "retry_max": ("N", "SIC_RETRY_MAX"),
    "retry_initial": ("DURATION", "SIC_RETRY_INITIAL"),
    "retry_max_wait": ("DURATION", "SIC_RETRY_MAX_WAIT"),
}
RETRY_FLAGS = ("retry_max", "retry_initial", "retry_max_wait")


def _add_override_flags(parser: argparse.ArgumentParser, flags: Sequence[str]) -> None:
    if not flags:
        return
    group = parser.add_argument_group("overrides (each sets the SIC_ variable named)")
    for attr in flags:
        metavar, help_ = OVERRIDE_FLAGS[attr]
        group.add_argument("--" + attr.replace("_", "-"), metavar=metavar, help=help_)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="system-info-collector",
        description="Sample the host's CPU, memory, disks and disk I/O on a fixed interval and "
        "write every sample to rotated CSV files and PostgreSQL. Configured by SIC_* "
        "environment variables (see README).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    everything = tuple(OVERRIDE_FLAGS)
    specs = {  # command: (one-line help, description, the flags that apply to it)
        "run": (
            "sample until SIGTERM/SIGINT (the default command)",
            "Sample every SIC_INTERVAL into the configured sinks (SIC_SINKS) and serve "
            "/metrics, /healthz and /readyz (SIC_HTTP_LISTEN) until SIGTERM or SIGINT, then "
            "flush every sink (SIC_SHUTDOWN_TIMEOUT). SIGHUP reopens the CSV files, SIGUSR1 "
            "logs a status line, SIGUSR2 toggles DEBUG logging. Exit 3 if another collector "
            "writes to the same CSV or spool directory.",
            everything,
        ),
        "once": (
            f"print one sample of every collector as JSON lines (CPU and disk I/O rates over "
            f"{ONCE_CPU_WINDOW:g}s)",
            "Take one sample of every collector (SIC_COLLECTORS) and print it on stdout as "
            "JSON lines, one object per record; no sink is written. Exit 1 if a collector "
            "failed.",
            (),
        ),
        "check": (
            "validate configuration, host paths and sink reachability; exit 0 if all pass",
            "Validate every SIC_ variable, read the host's procfs and mount table, check that "
            "the CSV and spool directories are free and writable, that SIC_HTTP_LISTEN can be "
            "bound and that PostgreSQL (SIC_DB_DSN) answers. One line per check; exit 0 if "
            "all pass, 1 if one fails, 2 on invalid configuration.",
            everything,
        ),
        "health": (
            "ask the running collector's /healthz (SIC_HTTP_LISTEN); exit 0 if healthy",
            "GET /healthz of the collector running on SIC_HTTP_LISTEN (for a container "
            "HEALTHCHECK); exit 0 if it answers 200, else 1. Samples nothing itself.",
            (),
        ),
        "replay": (
            "load CSV files or directories (active and rotated .gz) into PostgreSQL "
            "(SIC_DB_DSN), idempotently",
            "Load CSV files written by the CSV sink (active, rotated and .gz; directories are "
            "searched) into the PostgreSQL database of SIC_DB_DSN. Rows already there are "
            "skipped, so replaying twice is harmless.",
            ("db_dsn", *RETRY_FLAGS),
        ),
        "report": (
            "per host and hour: completeness and freshness of the samples in PostgreSQL "
            "(SIC_DB_DSN)",
            "Per host and UTC hour of the window: samples stored in the database of "
            "SIC_DB_DSN vs ticks expected, completeness, the longest gap and the age of the "
            "newest sample (docs/push.md). Exit 1 if the database cannot be read.",
            ("db_dsn",),
        ),
    }
    for name, (help_, description, flags) in specs.items():
        sub = commands.add_parser(name, help=help_, description=description)
        if name == "replay":
            sub.add_argument("paths", nargs="+", metavar="PATH", help="CSV file or directory")
        if name == "report":
            sub.add_argument("--hours", type=int, default=24, help="hours back (default 24)")
            sub.add_argument(
                "--expected-interval",
                type=float,
                default=None,
                metavar="SECONDS",
                help="expected seconds between samples (default: the memory collector's interval)",
            )
            sub.add_argument("--format", choices=("text", "csv"), default="text")
        _add_override_flags(sub, flags)
    db = commands.add_parser(
        "db",
        help="database maintenance (SIC_DB_DSN)",
        description="Maintenance of the PostgreSQL database of SIC_DB_DSN.",
    )
    db_commands = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    migrate = (
        "convert plain tables of schema version 1 to range-partitioned tables (copies "
        "every row, keeps the old tables)"
    )
    db_commands.add_parser(
        "migrate", help=migrate, description=f"{migrate[0].upper()}{migrate[1:]}."
    )
    _add_override_flags(db, ("db_dsn", *RETRY_FLAGS))
    _add_override_flags(parser, everything)
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
        "report": lambda s: cmd_report(s, args.hours, args.expected_interval, args.format),
    }
    try:
        return handlers[command](settings)
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:
        event("CRITICAL", "fatal", "unexpected error", error=f"{type(exc).__name__}: {exc}")
        return EXIT_FAILED


def directory_locks(settings: Settings) -> DirLocks:
    """The locks of the directories ``run`` writes: the CSV directory and every spool."""
    from system_info_collector.sinks.csv import directory_mode

    wanted = []
    if "csv" in settings.sinks:
        mode = settings.csv.file_mode  # as the CSV sink would create them
        wanted.append(
            DirLock(
                settings.csv.directory, "SIC_CSV_DIR", directory_mode(mode), mode, sinks=("csv",)
            )
        )
    for sink in settings.sinks:  # every write-ahead spool (SIC_<SINK>_BUFFER=disk)
        buffer = settings.buffer(sink)
        if buffer.kind == "disk":
            variable = "SIC_DB_SPOOL_DIR" if sink == "postgres" else f"SIC_{sink.upper()}_SPOOL_DIR"
            wanted.append(DirLock(buffer.spool_dir, variable, sinks=(sink,)))
    seen: dict[str, DirLock] = {}
    for lock in wanted:
        key = os.path.realpath(lock.directory)
        if key in seen:  # one lock per directory, even if both variables name it
            first = seen[key]
            first.sinks = (*first.sinks, *(s for s in lock.sinks if s not in first.sinks))
        else:
            seen[key] = lock
    return DirLocks(list(seen.values()))


class _LockGate:
    """A sink's gate (:attr:`SinkWorker.gate`): its directories' locks, taken before it writes
    there. Shared by the workers of one directory; a worker thread calls it."""

    def __init__(self, locks: Sequence[DirLock]) -> None:
        self._locks = locks
        self._mutex = threading.Lock()

    def __call__(self) -> None:
        with self._mutex:
            for lock in self._locks:
                if lock.fd is not None:
                    continue
                if not lock.try_or_note():
                    raise TransientSinkError(f"directory lock not taken: {lock.reason()}")
                event(
                    "INFO",
                    "directory_available",
                    "the data directory can be used now: its sinks start writing there",
                    directory=lock.directory,
                    variable=lock.what,
                    sinks=list(lock.sinks),
                )


def gate_unavailable(agent: Agent, locks: DirLocks) -> None:
    """The sinks whose directory could not be locked at start wait for it (their records in
    memory meanwhile); every other sink, sampling and /metrics go on."""
    for lock in locks.unavailable:
        event(
            "ERROR",
            "directory_unavailable",
            "cannot create the lock file of a data directory: the sinks writing there keep "
            "their records in memory and retry; the others run",
            directory=lock.directory,
            variable=lock.what,
            sinks=list(lock.sinks),
            error=lock.error,
        )
    for worker in agent.workers:
        mine = [lock for lock in locks.locks if worker.name in lock.sinks]
        if any(lock.fd is None for lock in mine):
            worker.gate = _LockGate(mine)


def _take_locks(settings: Settings, locks: DirLocks, stop: Callable[[float], bool]) -> int | None:
    """None when every lock is held; else the exit code."""

    def waiting(lock: DirLock) -> None:
        event(
            "WARNING",
            "directory_lock_wait",
            "directory in use by another collector; waiting (SIC_LOCK_TIMEOUT)",
            directory=lock.directory,
            variable=lock.what,
            held_by=lock.holder,
            timeout_seconds=settings.lock_timeout,
        )

    try:
        if not locks.acquire(settings.lock_timeout, stop=stop, on_wait=waiting):
            return EXIT_OK  # SIGTERM while waiting
    except DirectoryLocked as exc:
        lock = next(lk for lk in locks.locks if lk.directory == exc.directory)
        event(
            "ERROR",
            "directory_locked",
            "another collector is writing to this directory; "
            "one directory has one writer (give each collector its own SIC_CSV_DIR and "
            "SIC_DB_SPOOL_DIR)",
            directory=exc.directory,
            variable=lock.what,
            held_by=exc.holder,
            exit_code=EXIT_LOCKED,
        )
        return EXIT_LOCKED
    return None


def cmd_run(settings: Settings) -> int:
    import prometheus_client

    from system_info_collector.agent import Agent, resolve_hostname
    from system_info_collector.metrics import Metrics
    from system_info_collector.providers import build_providers
    from system_info_collector.signals import SignalActions
    from system_info_collector.sinks import build_sinks

    # First of all: SIGHUP/SIGUSR1/SIGUSR2 must not kill the process (queued until started).
    actions = SignalActions(
        set_debug=lambda on: configure("DEBUG" if on else settings.log_level, settings.log_format)
    )
    actions.install()

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
    locks = directory_locks(settings)
    agent.locks = locks  # type: ignore[attr-defined]  # read by /readyz and the status line

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
            server = HttpServer.from_settings(agent, settings.http)
        except OSError as exc:
            event(
                "ERROR",
                "http_listen_failed",
                "cannot listen for /metrics, /healthz, /readyz",
                listen=settings.http.listen,
                error=str(exc),
            )
            return EXIT_FAILED
    locks.try_each()  # a first attempt before /readyz is served: it names a holder at once
    if server is not None:
        server.start()  # before waiting for the locks: /readyz tells why we wait
    code = _take_locks(settings, locks, agent.stop_event.wait)
    if code is not None:
        if server is not None:
            server.close()
        return code
    gate_unavailable(agent, locks)
    actions.start(agent)
    agent.start()
    release_free_memory()  # the heap left over from imports and start-up (about 1 MB)
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
        actions.close()
        locks.release()
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
    from system_info_collector.http import get_health, tls_files

    listen = settings.http.listen
    if not listen:
        print("unhealthy: SIC_HTTP_LISTEN is empty, so there is no /healthz to ask")
        return EXIT_FAILED
    try:
        status, body = get_health(listen, tls=tls_files(settings.http))
    except (OSError, http.client.HTTPException) as exc:
        print(f"unhealthy: no answer from /healthz on {listen}: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    print(f"{'healthy' if status == 200 else 'unhealthy'}: HTTP {status} {body.strip()}")
    return EXIT_OK if status == 200 else EXIT_FAILED


def cmd_once(settings: Settings) -> int:
    from system_info_collector.agent import resolve_hostname
    from system_info_collector.collect import Failures, base_intervals_ms, collect, prime
    from system_info_collector.providers import build_providers
    from system_info_collector.sinks.stdout import record_line

    host = resolve_hostname(settings)
    providers = build_providers(settings)
    try:
        prime(providers)  # a failure here is reported by collect() below
        time.sleep(ONCE_CPU_WINDOW)
        ts = datetime.fromtimestamp(round(time.time(), 3), UTC)
        # `once` stamps the interval a `run` with the same settings would stamp
        intervals = base_intervals_ms(settings, providers)
        failures = Failures("collector failed")
        result = collect(providers, ts, host, settings.tags, failures, intervals_ms=intervals)
    finally:
        for provider in providers:
            provider.close()
    layout = settings.stdout_layout
    sys.stdout.write("".join(record_line(r, layout) + "\n" for r in result.accepted))
    sys.stdout.flush()
    return EXIT_FAILED if result.failed else EXIT_OK


def cmd_replay(settings: Settings, paths: Sequence[str]) -> int:
    from system_info_collector.replay import replay

    return replay(settings.postgres, settings.retry, paths)


def cmd_db(settings: Settings, command: str) -> int:
    from system_info_collector.sinks.postgres.migrate import run_migrate

    assert command == "migrate"
    return run_migrate(settings.postgres)


def cmd_report(settings: Settings, hours: int, interval: float | None, fmt: str) -> int:
    from system_info_collector.report import report

    if not settings.postgres.dsn:
        print("system-info-collector report: SIC_DB_DSN is not set", file=sys.stderr)
        return EXIT_CONFIG
    if hours < 1 or (interval is not None and interval <= 0):
        print(
            "system-info-collector report: --hours must be >= 1 and --expected-interval > 0",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    every = interval or settings.collector_interval("memory")
    return report(settings.postgres, hours=hours, interval=every, fmt=fmt)


def cmd_check(settings: Settings) -> int:
    from system_info_collector.checks import host_checks
    from system_info_collector.metrics import Metrics
    from system_info_collector.sinks import build_sinks

    results: list[CheckResult] = [CheckResult("configuration", True, "all SIC_ variables valid")]
    results += host_checks(settings)
    for lock in directory_locks(settings).locks:
        try:
            free = lock.try_acquire()
        except OSError as exc:
            results.append(CheckResult(f"lock {lock.what}", False, _os_error(exc)))
            continue
        lock.release()
        detail = f"{lock.directory} in use by {lock.holder}: `run` would exit {EXIT_LOCKED}"
        results.append(CheckResult(f"lock {lock.what}", free, lock.directory if free else detail))
    if settings.http.listen:
        results.append(_listen_check(settings.http.listen))
    if settings.http.textfile_directory:
        results.append(_textfile_check(settings.http.textfile_directory))
    for sink in build_sinks(settings, Metrics()):
        try:
            results += sink.check()
        except Exception as exc:
            results.append(CheckResult(f"sink {sink.name}", False, f"{type(exc).__name__}: {exc}"))
    for r in results:
        print(f"{'ok' if r.ok else 'FAIL':<4}  {r.name}: {r.detail}")
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def _os_error(exc: OSError) -> str:
    return f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")


def _textfile_check(directory: str) -> CheckResult:
    """Read SIC_TEXTFILE_DIRECTORY as a scrape would (its ERROR lines name what fails)."""
    from system_info_collector.exposition.textfile import TextfileCollector

    families = {f.name: f for f in TextfileCollector(directory).collect()}
    failed = families["node_textfile_scrape_error"].samples[0].value != 0
    mtimes = families.get("node_textfile_mtime_seconds")
    read = len(mtimes.samples) if mtimes is not None else 0
    detail = f"{directory}: {read} .prom file(s) read"
    if failed:
        detail += (
            "; a file or the directory could not be read or parsed (the ERROR lines say which)"
        )
    return CheckResult("textfile directory", not failed, detail)


def _listen_check(listen: str) -> CheckResult:
    """Bind SIC_HTTP_LISTEN as ``run`` would (and let go at once)."""
    import socket

    from system_info_collector.config import parse_listen

    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(1)
    except OSError as exc:
        return CheckResult(
            "http listen",
            False,
            f"cannot listen on {listen}: {exc.strerror or exc}; `run` would exit {EXIT_FAILED}",
        )
    return CheckResult("http listen", True, f"{listen} can be bound")
