"""The only module that reads the environment.

``load_settings(environ)`` reads every ``SIC_*`` variable (environs, ``eager=False`` then
``seal()``) and returns one frozen :class:`Settings`, or raises :class:`ConfigError` listing
every problem at once: the variable, the value given (redacted if secret) and what is expected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import environs

from system_info_collector.clienttls import ClientTls, load_problem
from system_info_collector.errors import ConfigError
from system_info_collector.hostpaths import HostPaths
from system_info_collector.limits import dsn_problems, limit_problems, text_problems
from system_info_collector.providers import COLLECTORS
from system_info_collector.redact import redact_dsn
from system_info_collector.schema import RESERVED_TAGS
from system_info_collector.units import parse_duration, parse_size

KNOWN_COLLECTORS = tuple(COLLECTORS)
DEFAULT_COLLECTORS = tuple(name for name, c in COLLECTORS.items() if not c.optional)
KNOWN_SINKS = ("stdout", "csv", "postgres", "remote_write", "otlp")
MIN_INTERVAL = 0.1
MIN_PARTITION_INTERVAL = 3600.0
SECRET_VARIABLES = frozenset({"SIC_DB_DSN", "SIC_REMOTE_WRITE_URL", "SIC_OTLP_ENDPOINT"})


@dataclass(frozen=True, slots=True)
class CsvSettings:
    directory: str = "./data"
    rotate_size: int = 100_000_000
    rotate_interval: float = 86400.0
    compress: str = "gzip"
    retention: float = 7 * 86400.0
    max_total_size: int | None = None
    fsync: str = "rotate"
    backlog: int = 86400
    file_mode: int = 0o640


@dataclass(frozen=True, slots=True)
class RetrySettings:
    max_attempts: int = 5
    initial: float = 0.2
    max_wait: float = 5.0


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    dsn: str | None = None
    password_file: str | None = None
    schema: str = "public"
    batch_max_rows: int = 5000
    flush_interval: float = 5.0
    connect_timeout: float = 5.0
    statement_timeout: float = 10.0
    spool_dir: str = "./data/.spool"
    spool_max_size: int = 1_000_000_000
    timescale: str = "auto"
    partition_interval: float = 86400.0  # 0: plain tables
    retention: float = 30 * 86400.0  # 0: keep forever


# Sinks behind a write-ahead spool on disk unless SIC_<SINK>_BUFFER says otherwise.
DISK_BUFFERED_SINKS = frozenset({"postgres", "remote_write", "otlp"})
MEMORY_SINK_BATCH_ROWS = 200  # records a sink without its own batch setting writes at once


@dataclass(frozen=True, slots=True)
class BufferSettings:
    """What holds one sink's records until it wrote them (``SIC_<SINK>_BUFFER``), and how the
    sink's worker batches them."""

    kind: str = "memory"  # "memory" or "disk" (a write-ahead spool, memory while it fails)
    memory_max_size: int = 8_000_000  # SIC_BUFFER_MEMORY_MAX_SIZE: bytes held in memory
    memory_max_records: int | None = None  # SIC_CSV_BACKLOG for the CSV sink
    spool_dir: str = "./data/.spool"
    spool_max_size: int = 1_000_000_000
    batch_max_rows: int = MEMORY_SINK_BATCH_ROWS
    flush_interval: float = 0.0  # 0: write as soon as something is pending


HostMetricsMode = Literal["node", "sic", "off"]
HOST_METRICS_MODES: tuple[HostMetricsMode, ...] = ("node", "sic", "off")
# Earlier releases took a boolean: true meant "expose host metrics", false none.
_HOST_METRICS_LEGACY: dict[str, HostMetricsMode] = {
    "true": "node",
    "1": "node",
    "yes": "node",
    "on": "node",
    "false": "off",
    "0": "off",
    "no": "off",
}


@dataclass(frozen=True, slots=True)
class RemoteWriteSettings:
    url: str | None = None
    bearer_token_file: str | None = None
    basic_user: str | None = None
    basic_password_file: str | None = None
    headers_file: str | None = None
    timeout: float = 10.0
    tls: ClientTls = field(default_factory=ClientTls)


# Each push sink's TLS to its receiver: CA file, client certificate, its key, skip-verify.
CLIENT_TLS_VARIABLES = {
    "remote_write": (
        "SIC_REMOTE_WRITE_TLS_CA_FILE",
        "SIC_REMOTE_WRITE_TLS_CERT_FILE",
        "SIC_REMOTE_WRITE_TLS_KEY_FILE",
        "SIC_REMOTE_WRITE_TLS_INSECURE_SKIP_VERIFY",
    ),
    "otlp": (
        "SIC_OTLP_TLS_CA_FILE",
        "SIC_OTLP_TLS_CERT_FILE",
        "SIC_OTLP_TLS_KEY_FILE",
        "SIC_OTLP_TLS_INSECURE_SKIP_VERIFY",
    ),
}


@dataclass(frozen=True, slots=True)
class OtlpSettings:
    endpoint: str | None = None  # with /v1/metrics
    headers_file: str | None = None
    timeout: float = 10.0
    compression: str = "gzip"
    tls: ClientTls = field(default_factory=ClientTls)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    listen: str = ":9808"
    host_metrics: HostMetricsMode = "node"
    tls_cert_file: str | None = None  # with tls_key_file: HTTPS (docs/operations.md)
    tls_key_file: str | None = None
    tls_client_ca_file: str | None = None  # clients must present a certificate it signed
    basic_auth_file: str | None = None  # user:bcrypt-hash lines; /metrics asks for them
    textfile_directory: str | None = None  # node_exporter's textfile collector: *.prom files


@dataclass(frozen=True, slots=True)
class AdaptiveSettings:
    """``SIC_ADAPTIVE*`` (docs/adaptive.md): bursts of sampling on spikes."""

    enabled: bool = False
    interval: float = 0.25  # seconds between sentinel readings and burst samples
    hold: float = 30.0
    cpu_percent: float = 90.0
    memory_psi: float = 10.0
    io_psi: float = 20.0
    disk_busy_percent: float = 90.0
    jump: float = 30.0  # percentage points above the recent baseline
    psi_triggers: bool = (
        True  # SIC_ADAPTIVE_PSI_TRIGGERS=auto: kernel PSI poll triggers where allowed
    )


# (variable, attribute, default) of the adaptive settings: read by load_settings, and the
# README table and Helm values are checked against it (tests/unit/test_adaptive.py).
ADAPTIVE_OPTIONS = (
    ("SIC_ADAPTIVE_INTERVAL", "interval", "250ms"),
    ("SIC_ADAPTIVE_HOLD", "hold", "30s"),
    ("SIC_ADAPTIVE_CPU_PERCENT", "cpu_percent", "90"),
    ("SIC_ADAPTIVE_MEMORY_PSI", "memory_psi", "10"),
    ("SIC_ADAPTIVE_IO_PSI", "io_psi", "20"),
    ("SIC_ADAPTIVE_DISK_BUSY_PERCENT", "disk_busy_percent", "90"),
    ("SIC_ADAPTIVE_JUMP", "jump", "30"),
)


@dataclass(frozen=True, slots=True)
class Settings:
    interval: float = 1.0
    collectors: tuple[str, ...] = DEFAULT_COLLECTORS
    collector_intervals: Mapping[str, float] = field(default_factory=dict)
    host_paths: HostPaths = field(default_factory=HostPaths)
    # Each collector's own settings (its declared ``settings`` dataclass), by collector name.
    collector_settings: Mapping[str, Any] = field(
        default_factory=lambda: {name: c.settings() for name, c in COLLECTORS.items()}
    )
    hostname: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    log_level: str = "INFO"
    log_format: str = "json"
    shutdown_timeout: float = 10.0
    lock_timeout: float = 0.0
    stdout_layout: str = "columns"
    sinks: tuple[str, ...] = ("csv",)
    csv: CsvSettings = field(default_factory=CsvSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    postgres: PostgresSettings = field(default_factory=PostgresSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    remote_write: RemoteWriteSettings = field(default_factory=RemoteWriteSettings)
    otlp: OtlpSettings = field(default_factory=OtlpSettings)
    buffers: Mapping[str, BufferSettings] = field(default_factory=dict)
    adaptive: AdaptiveSettings = field(default_factory=AdaptiveSettings)
    overhead_budget: float = 2.0  # % of one core; 0 = none
    overhead_window: float = 60.0  # seconds the budget is averaged over

    def buffer(self, sink: str) -> BufferSettings:
        """The buffer settings of ``sink`` (defaults for a sink the mapping does not name)."""
        found = self.buffers.get(sink)
        if found is not None:
            return found
        if sink == "postgres":
            return _postgres_buffer(self.postgres, kind="disk")
        kind = "disk" if sink in DISK_BUFFERED_SINKS else "memory"
        return BufferSettings(
            kind=kind, spool_dir=os.path.join(self.csv.directory, f".spool-{sink}")
        )

    def collector_interval(self, name: str) -> float:
        return self.collector_intervals.get(name, self.interval)

    def collector(self, name: str) -> Any:
        """The settings of collector ``name`` (e.g. a ``DiskSettings``)."""
        return self.collector_settings[name]


class _Env(environs.Env):
    """environs reading from a given mapping instead of ``os.environ`` (testable, no globals)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        super().__init__(eager=False)
        self._source = environ

    def _get_value(self, env_key: str, default: Any) -> Any:
        return self._source.get(env_key, default)


def _expect(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parser(value: str) -> Any:
        try:
            return parse(value)
        except (ValueError, OverflowError, re.error) as exc:
            raise environs.EnvError(str(exc)) from exc

    return parser


def _regex(value: str) -> re.Pattern[str]:
    try:
        return re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression ({exc})") from exc


def _labels(value: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        key, sep, val = item.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"{item!r} is not k=v with k a letter/underscore identifier")
        labels[key] = val.strip()
    return labels


def _names(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p.strip().lower() for p in value.split(",") if p.strip()))


def _file_mode(value: str) -> int:
    try:
        mode = int(value.strip(), 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise ValueError(f"{value!r} is not an octal file mode such as 0640")
    return mode


def _percent(value: str) -> float:
    """``90``, ``90%`` or ``2.5%``: a share in percent, 0 to 100."""
    text = value.strip().removesuffix("%").strip()
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a percentage such as 90 or 2%") from None
    if not 0 <= number <= 100:
        raise ValueError(f"{value!r} is not between 0 and 100")
    return number


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    return lambda value: parse(value) if value.strip() else None


def _adaptive_problems(
    get: Callable[..., str], on: bool, values: Mapping[str, Any], interval: float | None
) -> list[str]:
    """The burst interval: at least 100ms, at most the base, and the base a whole multiple of
    it (so base samples keep their wall-clock slots); the hold not negative."""
    burst = values.get("interval")
    if not on or burst is None:
        return []
    given = f"SIC_ADAPTIVE_INTERVAL={get('SIC_ADAPTIVE_INTERVAL', '250ms')!r}"
    if burst < MIN_INTERVAL:
        return [f"{given}: must be at least 100ms"]
    if interval is None or interval < MIN_INTERVAL:
        return []
    if burst > interval + 1e-9:
        return [f"{given}: must not exceed SIC_INTERVAL ({get('SIC_INTERVAL', '1s')})"]
    ratio = interval / burst
    if abs(ratio - round(ratio)) > 1e-6:
        return [
            f"{given}: SIC_INTERVAL ({get('SIC_INTERVAL', '1s')}) must be a whole multiple of it"
        ]
    return []


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the configuration from ``environ`` (default: the process environment)."""
    source: Mapping[str, str] = os.environ if environ is None else environ
    env = _Env(source)
    for name, parse in {
        "duration": parse_duration,
        "size": parse_size,
        "opt_size": _optional(parse_size),
        "regex": _regex,
        "labels": _labels,
        "names": _names,
        "file_mode": _file_mode,
        "positive_int": _positive_int,
        "positive_duration": _positive_duration,
        "percent": _percent,
    }.items():
        env.add_parser(name, _expect(parse))
    e: Any = env  # environs' dynamic parser methods are not typed

    problems: list[str] = []
    get = source.get

    def choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = get(name, default).strip().lower()
        if value not in allowed:
            problems.append(f"{name}={get(name)!r}: expected one of {', '.join(allowed)}")
            return default
        return value

    def client_tls(sink: str) -> ClientTls:
        ca, cert, key, skip = CLIENT_TLS_VARIABLES[sink]
        return ClientTls(
            ca_file=get(ca, "").strip() or None,
            cert_file=get(cert, "").strip() or None,
            key_file=get(key, "").strip() or None,
            insecure_skip_verify=choice(skip, "false", ("false", "true")) == "true",
        )

    def host_metrics_mode() -> HostMetricsMode:
        raw = get("SIC_PROMETHEUS_HOST_METRICS", "node").strip().lower() or "node"
        mode = _HOST_METRICS_LEGACY.get(raw, raw)
        for allowed in HOST_METRICS_MODES:
            if mode == allowed:
                return allowed
        problems.append(
            f"SIC_PROMETHEUS_HOST_METRICS={get('SIC_PROMETHEUS_HOST_METRICS')!r}: expected "
            "node (node_exporter's names), sic (the project's names) or off"
        )
        return "node"

    interval = e.duration("SIC_INTERVAL", "1s")
    collectors = e.names("SIC_COLLECTORS", ",".join(DEFAULT_COLLECTORS))
    # Unset: the base interval (and an invalid SIC_INTERVAL is reported once, not per collector).
    per_collector = {
        c: e.duration(f"SIC_{c.upper()}_INTERVAL", None)
        for c in KNOWN_COLLECTORS
        if get(f"SIC_{c.upper()}_INTERVAL", "").strip()
    }
    proc = get("SIC_HOST_PROC") or get("HOST_PROC") or "/proc"
    sys_ = get("SIC_HOST_SYS") or get("HOST_SYS") or "/sys"
    root = get("SIC_HOST_ROOT") or get("HOST_ROOT") or "/"
    # Each collector's declared options (SIC_<NAME>_*), read whether or not it is enabled.
    options = {
        name: {o.attribute: getattr(e, o.parse)(o.variable, o.default) for o in c.options}
        for name, c in COLLECTORS.items()
    }
    hostname = (get("SIC_HOSTNAME") or get("NODE_NAME") or "").strip() or None
    tags = e.labels("SIC_TAGS", "")
    log_level = choice(
        "SIC_LOG_LEVEL", "INFO", ("trace", "debug", "info", "success", "warning", "error")
    ).upper()
    log_format = choice("SIC_LOG_FORMAT", "json", ("json", "text"))
    shutdown_timeout = e.duration("SIC_SHUTDOWN_TIMEOUT", "10s")
    lock_timeout = e.duration("SIC_LOCK_TIMEOUT", "0s")
    stdout_layout = choice("SIC_STDOUT_LAYOUT", "columns", ("columns", "nested"))

    csv_dir = get("SIC_CSV_DIR", "").strip() or "./data"
    csv = CsvSettings(
        directory=csv_dir,
        rotate_size=e.size("SIC_CSV_ROTATE_SIZE", "100MB"),
        rotate_interval=e.duration("SIC_CSV_ROTATE_INTERVAL", "24h"),
        compress=choice("SIC_CSV_COMPRESS", "gzip", ("gzip", "none")),
        retention=e.duration("SIC_CSV_RETENTION", "7d"),
        max_total_size=e.opt_size("SIC_CSV_MAX_TOTAL_SIZE", ""),
        fsync=choice("SIC_CSV_FSYNC", "rotate", ("tick", "rotate", "never")),
        backlog=e.positive_int("SIC_CSV_BACKLOG", "86400"),
        file_mode=e.file_mode("SIC_CSV_FILE_MODE", "0640"),
    )
    retry = RetrySettings(
        max_attempts=e.positive_int("SIC_RETRY_MAX", "5"),
        initial=e.duration("SIC_RETRY_INITIAL", "200ms"),
        max_wait=e.duration("SIC_RETRY_MAX_WAIT", "5s"),
    )
    dsn = get("SIC_DB_DSN", "").strip() or None
    password_file = get("SIC_DB_PASSWORD_FILE", "").strip() or None
    postgres = PostgresSettings(
        dsn=dsn,
        password_file=password_file,
        schema=get("SIC_DB_SCHEMA", "public").strip() or "public",
        batch_max_rows=e.positive_int("SIC_DB_BATCH_MAX_ROWS", "5000"),
        flush_interval=e.duration("SIC_DB_FLUSH_INTERVAL", "5s"),
        connect_timeout=e.duration("SIC_DB_CONNECT_TIMEOUT", "5s"),
        statement_timeout=e.duration("SIC_DB_STATEMENT_TIMEOUT", "10s"),
        spool_dir=get("SIC_DB_SPOOL_DIR", "").strip() or os.path.join(csv_dir, ".spool"),
        spool_max_size=e.size("SIC_DB_SPOOL_MAX_SIZE", "1GB"),
        timescale=choice("SIC_DB_TIMESCALE", "auto", ("auto", "on", "off")),
        partition_interval=e.duration("SIC_DB_PARTITION_INTERVAL", "1d"),
        retention=e.duration("SIC_DB_RETENTION", "30d"),
    )
    http = HttpSettings(
        listen=get("SIC_HTTP_LISTEN", ":9808").strip(),
        host_metrics=host_metrics_mode(),
        tls_cert_file=get("SIC_HTTP_TLS_CERT_FILE", "").strip() or None,
        tls_key_file=get("SIC_HTTP_TLS_KEY_FILE", "").strip() or None,
        tls_client_ca_file=get("SIC_HTTP_TLS_CLIENT_CA_FILE", "").strip() or None,
        basic_auth_file=get("SIC_HTTP_BASIC_AUTH_FILE", "").strip() or None,
        textfile_directory=get("SIC_TEXTFILE_DIRECTORY", "").strip() or None,
    )
    remote_write = RemoteWriteSettings(
        url=get("SIC_REMOTE_WRITE_URL", "").strip() or None,
        bearer_token_file=get("SIC_REMOTE_WRITE_BEARER_TOKEN_FILE", "").strip() or None,
        basic_user=get("SIC_REMOTE_WRITE_BASIC_AUTH_USER", "").strip() or None,
        basic_password_file=get("SIC_REMOTE_WRITE_BASIC_AUTH_PASSWORD_FILE", "").strip() or None,
        headers_file=get("SIC_REMOTE_WRITE_HEADERS_FILE", "").strip() or None,
        timeout=e.duration("SIC_REMOTE_WRITE_TIMEOUT", "10s"),
        tls=client_tls("remote_write"),
    )
    otlp_endpoint = get("SIC_OTLP_ENDPOINT", "").strip() or None
    otlp = OtlpSettings(
        endpoint=otlp_metrics_url(otlp_endpoint) if otlp_endpoint else None,
        headers_file=get("SIC_OTLP_HEADERS_FILE", "").strip() or None,
        timeout=e.duration("SIC_OTLP_TIMEOUT", "10s"),
        compression=choice("SIC_OTLP_COMPRESSION", "gzip", ("gzip", "none")),
        tls=client_tls("otlp"),
    )
    adaptive_on = choice("SIC_ADAPTIVE", "off", ("off", "on")) == "on"
    psi_triggers = choice("SIC_ADAPTIVE_PSI_TRIGGERS", "auto", ("auto", "off")) == "auto"
    adaptive_values = {
        attribute: (e.duration if attribute in ("interval", "hold") else e.percent)(name, default)
        for name, attribute, default in ADAPTIVE_OPTIONS
    }
    overhead_budget = e.percent("SIC_OVERHEAD_BUDGET", "2%")
    overhead_window = e.positive_duration("SIC_OVERHEAD_WINDOW", "60s")
    default_sinks = "csv,postgres" if dsn else "csv"
    sinks = e.names("SIC_SINKS", default_sinks)
    memory_max_size = e.size("SIC_BUFFER_MEMORY_MAX_SIZE", "8MB")
    buffers: dict[str, BufferSettings] = {}
    spool_sizes: dict[str, float | None] = {}  # SIC_<SINK>_SPOOL_MAX_SIZE, for limit_problems
    for s in KNOWN_SINKS:
        default_kind = "disk" if s in DISK_BUFFERED_SINKS else "memory"
        kind = choice(f"SIC_{s.upper()}_BUFFER", default_kind, ("memory", "disk"))
        if s == "postgres":
            buffers[s] = _postgres_buffer(postgres, kind=kind, memory_max_size=memory_max_size)
            continue
        upper = s.upper()
        buffers[s] = BufferSettings(
            kind=kind,
            memory_max_size=memory_max_size,
            memory_max_records=csv.backlog if s == "csv" else None,
            spool_dir=get(f"SIC_{upper}_SPOOL_DIR", "").strip()
            or os.path.join(csv_dir, f".spool-{s}"),
            spool_max_size=e.size(f"SIC_{upper}_SPOOL_MAX_SIZE", "1GB"),
        )
        spool_sizes[f"SIC_{upper}_SPOOL_MAX_SIZE"] = buffers[s].spool_max_size

    try:
        env.seal()
    except environs.EnvValidationError as exc:
        by_key: Any = exc.error_messages
        for key, messages in sorted(by_key.items()):
            given = redact_value(key, source.get(key, ""))
            text = "; ".join(_flatten(messages))
            problems.append(f"{key}={given!r}: {text}")

    # Cross-field rules, checked only where the values themselves parsed.
    problems += limit_problems(
        {
            "SIC_INTERVAL": interval,
            "SIC_SHUTDOWN_TIMEOUT": shutdown_timeout,
            "SIC_LOCK_TIMEOUT": lock_timeout,
            "SIC_RETRY_INITIAL": retry.initial,
            "SIC_RETRY_MAX_WAIT": retry.max_wait,
            "SIC_RETRY_MAX": retry.max_attempts,
            "SIC_CSV_ROTATE_SIZE": csv.rotate_size,
            "SIC_CSV_ROTATE_INTERVAL": csv.rotate_interval,
            "SIC_CSV_RETENTION": csv.retention,
            "SIC_CSV_MAX_TOTAL_SIZE": csv.max_total_size,
            "SIC_CSV_BACKLOG": csv.backlog,
            "SIC_DB_BATCH_MAX_ROWS": postgres.batch_max_rows,
            "SIC_DB_FLUSH_INTERVAL": postgres.flush_interval,
            "SIC_DB_CONNECT_TIMEOUT": postgres.connect_timeout,
            "SIC_DB_STATEMENT_TIMEOUT": postgres.statement_timeout,
            "SIC_DB_SPOOL_MAX_SIZE": postgres.spool_max_size,
            "SIC_BUFFER_MEMORY_MAX_SIZE": memory_max_size,
            **spool_sizes,
        },
        source,
    )
    problems += text_problems(source)
    if dsn:
        problems += dsn_problems(dsn)
    for c in collectors or ():
        if c not in KNOWN_COLLECTORS:
            problems.append(
                f"SIC_COLLECTORS={get('SIC_COLLECTORS')!r}: unknown collector {c!r} "
                f"(expected some of {', '.join(KNOWN_COLLECTORS)})"
            )
    if collectors == ():
        problems.append("SIC_COLLECTORS='': at least one collector must be enabled")
    intervals: dict[str, float] = {}
    for c, value in per_collector.items():
        if value is None or interval is None or interval < MIN_INTERVAL:
            continue
        ratio = value / interval
        if ratio < 1 - 1e-9 or abs(ratio - round(ratio)) > 1e-6:
            problems.append(
                f"SIC_{c.upper()}_INTERVAL={get(f'SIC_{c.upper()}_INTERVAL')!r}: must be a "
                f"whole multiple of SIC_INTERVAL ({get('SIC_INTERVAL', '1s')})"
            )
        elif round(ratio) != 1:
            intervals[c] = round(ratio) * interval
    for s in sinks or ():
        if s not in KNOWN_SINKS:
            problems.append(
                f"SIC_SINKS={get('SIC_SINKS')!r}: unknown sink {s!r} "
                f"(expected some of {', '.join(KNOWN_SINKS)})"
            )
    for key in sorted(set(tags or {}) & RESERVED_TAGS):
        problems.append(f"SIC_TAGS={get('SIC_TAGS')!r}: {key!r} is a column name; pick another")
    if sinks and "postgres" in sinks and not dsn:
        problems.append("SIC_SINKS includes postgres but SIC_DB_DSN is not set")
    if (
        retry.initial is not None
        and retry.max_wait is not None
        and retry.initial > retry.max_wait >= 0.1
    ):
        problems.append(
            f"SIC_RETRY_INITIAL={get('SIC_RETRY_INITIAL')!r}: must not exceed SIC_RETRY_MAX_WAIT"
        )
    if http.listen and _parse_listen(http.listen) is None:
        problems.append(
            f"SIC_HTTP_LISTEN={http.listen!r}: expected [host]:port, e.g. :9808 or 127.0.0.1:9808"
        )
    problems += _http_problems(http)
    if csv_dir.lower().endswith((".csv", ".csv.gz")) and not os.path.isdir(csv_dir):
        problems.append(
            f"SIC_CSV_DIR={csv_dir!r}: looks like a file name, but it is the directory the CSV "
            "files go in (one file per measurement, e.g. --csv ./metrics)"
        )
    part, keep = postgres.partition_interval, postgres.retention
    if part is not None and part and not MIN_PARTITION_INTERVAL <= part <= 366 * 86400:
        problems.append(
            f"SIC_DB_PARTITION_INTERVAL={get('SIC_DB_PARTITION_INTERVAL')!r}: must be 0 (plain "
            "tables) or between 1h and 366d"
        )
    elif part is not None and keep is not None and keep and keep < part:
        problems.append(
            f"SIC_DB_RETENTION={get('SIC_DB_RETENTION')!r}: must be 0 (keep forever) or at "
            "least SIC_DB_PARTITION_INTERVAL (whole partitions are dropped)"
        )
    if password_file and not os.path.isfile(password_file):
        problems.append(f"SIC_DB_PASSWORD_FILE={password_file!r}: not a readable file")
    problems.extend(_adaptive_problems(get, adaptive_on, adaptive_values, interval))
    problems.extend(_push_problems(sinks or (), remote_write, otlp, otlp_endpoint))

    if problems:
        raise ConfigError(problems)

    return Settings(
        interval=interval,
        collectors=collectors,
        collector_intervals=intervals,
        host_paths=HostPaths(proc=proc, sys=sys_, root=root),
        collector_settings={
            name: COLLECTORS[name].settings(**values) for name, values in options.items()
        },
        hostname=hostname,
        tags=tags,
        log_level=log_level,
        log_format=log_format,
        shutdown_timeout=shutdown_timeout,
        lock_timeout=lock_timeout,
        stdout_layout=stdout_layout,
        sinks=sinks,
        csv=csv,
        retry=retry,
        postgres=postgres,
        http=http,
        remote_write=remote_write,
        otlp=otlp,
        buffers=buffers,
        adaptive=AdaptiveSettings(
            enabled=adaptive_on,
            psi_triggers=psi_triggers,
            **adaptive_values,
        ),
        overhead_budget=overhead_budget,
        overhead_window=overhead_window,
    )


def _postgres_buffer(pg: PostgresSettings, **kw: Any) -> BufferSettings:
    """The PostgreSQL sink's buffer: its spool and batching come from the SIC_DB_* settings."""
    return BufferSettings(
        spool_dir=pg.spool_dir,
        spool_max_size=pg.spool_max_size,
        batch_max_rows=pg.batch_max_rows,
        flush_interval=pg.flush_interval,
        **kw,
    )


def otlp_metrics_url(endpoint: str) -> str:
    """``SIC_OTLP_ENDPOINT`` as the URL metrics are posted to: a base URL (``http://c:4318``)
    gets ``/v1/metrics`` appended, as OTLP exporters do; a URL ending in it is used as is."""
    base, sep, query = endpoint.partition("?")
    if not base.rstrip("/").endswith("/v1/metrics"):
        base = base.rstrip("/") + "/v1/metrics"
    return base + sep + query


def _url_problem(key: str, url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{key}={redact_value(key, url)!r}: expected an http:// or https:// URL"
    try:
        parts.port  # noqa: B018 -- raises on a bad port
    except ValueError:
        return f"{key}={redact_value(key, url)!r}: the port is not a number from 0 to 65535"
    return None


def _push_problems(
    sinks: tuple[str, ...],
    remote_write: RemoteWriteSettings,
    otlp: OtlpSettings,
    otlp_endpoint: str | None,
) -> list[str]:
    problems: list[str] = []
    for sink, key, url in (
        ("remote_write", "SIC_REMOTE_WRITE_URL", remote_write.url),
        ("otlp", "SIC_OTLP_ENDPOINT", otlp_endpoint),
    ):
        if url:
            problem = _url_problem(key, url)
            if problem:
                problems.append(problem)
        elif sink in sinks:
            problems.append(f"SIC_SINKS includes {sink} but {key} is not set")
    for key, path in (
        ("SIC_REMOTE_WRITE_BEARER_TOKEN_FILE", remote_write.bearer_token_file),
        ("SIC_REMOTE_WRITE_BASIC_AUTH_PASSWORD_FILE", remote_write.basic_password_file),
        ("SIC_REMOTE_WRITE_HEADERS_FILE", remote_write.headers_file),
        ("SIC_OTLP_HEADERS_FILE", otlp.headers_file),
    ):
        if path and not os.path.isfile(path):
            problems.append(f"{key}={path!r}: not a readable file")
    for sink, tls in (("remote_write", remote_write.tls), ("otlp", otlp.tls)):
        problems += _client_tls_problems(CLIENT_TLS_VARIABLES[sink], tls)
    if bool(remote_write.basic_user) != bool(remote_write.basic_password_file):
        problems.append(
            "SIC_REMOTE_WRITE_BASIC_AUTH_USER and SIC_REMOTE_WRITE_BASIC_AUTH_PASSWORD_FILE "
            "go together: set both or neither"
        )
    if remote_write.bearer_token_file and remote_write.basic_user:
        problems.append(
            "SIC_REMOTE_WRITE_BEARER_TOKEN_FILE and SIC_REMOTE_WRITE_BASIC_AUTH_USER: "
            "choose one kind of auth"
        )
    return problems


def _unreadable(files: Iterable[tuple[str, str | None]]) -> list[str]:
    """``VARIABLE='path': not a readable file`` for each set path that is not one."""
    return [
        f"{key}={path!r}: not a readable file"
        for key, path in files
        if path and not (os.path.isfile(path) and os.access(path, os.R_OK))
    ]


def _client_tls_problems(names: tuple[str, str, str, str], tls: ClientTls) -> list[str]:
    ca, cert, key, _ = names
    problems = _unreadable(((ca, tls.ca_file), (cert, tls.cert_file), (key, tls.key_file)))
    unreadable = bool(problems)
    if bool(tls.cert_file) != bool(tls.key_file):
        problems.append(f"{cert} and {key} go together: set both or neither")
    elif not unreadable and (tls.ca_file or tls.cert_file):
        problem = load_problem(tls.context)
        if problem:
            problems.append(f"{ca}, {cert}, {key}: {problem}")
    return problems


def _http_problems(http: HttpSettings) -> list[str]:
    """The TLS and basic auth files (SIC_HTTP_TLS_*, SIC_HTTP_BASIC_AUTH_FILE): set together,
    readable, loadable; no file content in a message."""
    from system_info_collector.webauth import read_users, tls_files

    files = (
        ("SIC_HTTP_TLS_CERT_FILE", http.tls_cert_file),
        ("SIC_HTTP_TLS_KEY_FILE", http.tls_key_file),
        ("SIC_HTTP_TLS_CLIENT_CA_FILE", http.tls_client_ca_file),
        ("SIC_HTTP_BASIC_AUTH_FILE", http.basic_auth_file),
    )
    problems = _unreadable(files)
    unreadable = bool(problems)
    if any(path for _, path in files) and not http.listen:
        problems.append(
            "SIC_HTTP_TLS_* or SIC_HTTP_BASIC_AUTH_FILE is set, but SIC_HTTP_LISTEN is empty"
        )
    if bool(http.tls_cert_file) != bool(http.tls_key_file):
        problems.append(
            "SIC_HTTP_TLS_CERT_FILE and SIC_HTTP_TLS_KEY_FILE go together: set both or neither"
        )
    elif http.tls_client_ca_file and not http.tls_cert_file:
        problems.append(
            "SIC_HTTP_TLS_CLIENT_CA_FILE needs SIC_HTTP_TLS_CERT_FILE and SIC_HTTP_TLS_KEY_FILE"
        )
    elif (tls := tls_files(http)) is not None and not unreadable:
        problem = load_problem(tls.context)
        if problem:
            problems.append(f"SIC_HTTP_TLS_CERT_FILE/SIC_HTTP_TLS_KEY_FILE: {problem}")
    if http.basic_auth_file and not unreadable:
        try:
            read_users(http.basic_auth_file)
        except (OSError, ValueError) as exc:
            problems.append(f"SIC_HTTP_BASIC_AUTH_FILE={http.basic_auth_file!r}: {exc}")
    return problems


def _positive_int(value: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise ValueError(f"{value!r} must be at least 1")
    return number


def _positive_duration(value: str) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be more than 0")
    return seconds


def _parse_listen(listen: str) -> tuple[str, int] | None:
    host, sep, port = listen.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        return None
    return host.strip("[]") or "0.0.0.0", int(port)


def parse_listen(listen: str) -> tuple[str, int]:
    parsed = _parse_listen(listen)
    if parsed is None:
        raise ValueError(listen)
    return parsed


def redact_value(key: str, value: str) -> str:
    return redact_dsn(value) if key in SECRET_VARIABLES else value


def _flatten(messages: Any) -> list[str]:
    if isinstance(messages, str):
        return [messages]
    if isinstance(messages, dict):
        return [m for v in messages.values() for m in _flatten(v)]
    return [m for v in messages for m in _flatten(v)]
