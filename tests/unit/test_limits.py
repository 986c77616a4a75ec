"""Dangerous values are refused at start (exit 2) with the reason, all of them at once."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from system_info_collector.config import KNOWN_SINKS, load_settings
from system_info_collector.errors import ConfigError
from system_info_collector.limits import LIMITS, PER_SINK_SPOOL_MAX_SIZE, limits_text
from tests.helpers import EXE, clean_env

README = Path(__file__).parents[2] / "README.md"

# The values issue 10 found accepted, each with what the refusal must explain.
DANGEROUS = {
    "SIC_RETRY_MAX_WAIT": ("0", "must be at least 100ms; below 100ms a failing sink is probed"),
    "SIC_RETRY_INITIAL": ("0", "must be at least 10ms; 0 retries a failing sink in a busy loop"),
    "SIC_DB_FLUSH_INTERVAL": ("0", "must be at least 10ms; 0 turns every record into its own"),
    "SIC_DB_SPOOL_MAX_SIZE": ("0", "must be at least 64KB; below 64KB the spool holds no outage"),
    "SIC_REMOTE_WRITE_SPOOL_MAX_SIZE": ("0", "must be at least 64KB; below 64KB the spool holds"),
    "SIC_CSV_SPOOL_MAX_SIZE": ("10KB", "must be at least 64KB; below 64KB the spool holds"),
    "SIC_CSV_ROTATE_SIZE": ("0", "must be at least 4KB; below 4KB a file is rotated"),
    "SIC_CSV_RETENTION": ("0", "must be at least 1h; below an hour rotated files are deleted"),
    "SIC_CSV_ROTATE_INTERVAL": ("0", "must be at least 1m"),
    "SIC_CSV_MAX_TOTAL_SIZE": ("10KB", "must be at least 1MB"),
    "SIC_SHUTDOWN_TIMEOUT": ("0", "must be at least 1s; below 1s SIGTERM cannot flush"),
    "SIC_DB_CONNECT_TIMEOUT": ("0", "must be at least 1s"),
    "SIC_DB_STATEMENT_TIMEOUT": ("0", "must be at least 100ms; 0 disables the server-side"),
    "SIC_RETRY_MAX": ("100000", "must be at most 1000"),
    "SIC_INTERVAL": ("2d", "must be at most 1d"),
    "SIC_HTTP_LISTEN": (":²", "expected [host]:port"),
}
DSN = "SIC_DB_DSN"


@pytest.mark.parametrize("variable", sorted(DANGEROUS))
def test_each_dangerous_value_is_refused_with_its_reason(variable: str) -> None:
    value, reason = DANGEROUS[variable]
    with pytest.raises(ConfigError) as info:
        load_settings({variable: value})
    (problem,) = info.value.problems
    assert problem.startswith(f"{variable}={value!r}: ") and reason in problem


@pytest.mark.parametrize("sink", sorted(set(KNOWN_SINKS) - {"postgres"}))
def test_every_sinks_spool_size_has_the_minimum(sink: str) -> None:
    variable = f"SIC_{sink.upper()}_SPOOL_MAX_SIZE"  # (PostgreSQL's is SIC_DB_SPOOL_MAX_SIZE)
    with pytest.raises(ConfigError) as info:
        load_settings({variable: "63KB", f"SIC_{sink.upper()}_BUFFER": "disk"})
    assert info.value.problems == [
        f"{variable}='63KB': must be at least 64KB; {LIMITS[PER_SINK_SPOOL_MAX_SIZE].why}"
    ]
    at_minimum = load_settings({variable: "64KB", f"SIC_{sink.upper()}_BUFFER": "disk"})
    assert at_minimum.buffer(sink).spool_max_size == 64_000


@pytest.mark.parametrize(
    ("dsn", "reason"),
    [
        ("postgresql://sic:pw@db:99x/metrics", "port '99x' is not a number from 1 to 65535"),
        ("postgresql://sic:pw@db:70000/metrics", "port '70000' is not a number"),
        ("host=db port=0 password=pw", "port '0' is not a number"),
        ("postgresql://sic:pw@db/metrics?sslmode=bogus", "sslmode='bogus': expected one of"),
        ("host=db connect_timeout=soon password=pw", "connect_timeout='soon': expected a whole"),
        ("host=db bogus=1 password=pw", 'invalid connection option "bogus"'),
        ("hunter2secret", 'missing "=" after "***" in connection info string'),
        ("postgresql://sic:Wrong@Pass99@127.0.0.1/metrics", "percent-encode @ as %40"),
    ],
)
def test_a_malformed_dsn_is_a_configuration_error_not_a_transient_one(
    dsn: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({DSN: dsn})
    (problem,) = info.value.problems
    assert problem.startswith(DSN) and reason in problem
    for secret in ("pw ", "pw@", "Wrong", "Pass99", "hunter2"):
        assert secret not in problem, problem


def test_good_dsns_pass() -> None:
    for dsn in (
        "postgresql://sic:s3cr%40t@db:5432,db2:5433/metrics?sslmode=verify-full",
        "host=/run/postgresql dbname=metrics",
        "postgresql:///metrics",
    ):
        assert load_settings({DSN: dsn}).postgres.dsn == dsn


def test_text_that_is_not_utf8_is_refused() -> None:
    raw = b"node-\xff".decode("utf-8", "surrogateescape")  # what os.environ holds for it
    with pytest.raises(ConfigError) as info:
        load_settings({"SIC_HOSTNAME": raw, "SIC_TAGS": f"env={raw}", "NODE_NAME": "a\nb"})
    assert info.value.problems == [
        "NODE_NAME='a\\nb': contains control characters",
        "SIC_HOSTNAME='node-\\xff': not valid UTF-8 text (set it to UTF-8 text)",
        "SIC_TAGS='env=node-\\xff': not valid UTF-8 text (set it to UTF-8 text)",
    ]


def test_all_problems_at_once_from_the_real_command_exit_2_without_traceback() -> None:
    env = clean_env(**{k: v for k, (v, _) in DANGEROUS.items()})
    env[DSN] = "postgresql://sic:Wrong@Pass99@127.0.0.1/metrics"
    env_b = {k.encode(): v.encode() for k, v in env.items()}
    env_b[b"SIC_HOSTNAME"] = b"\xff\xfe"
    import subprocess

    result = subprocess.run([EXE.encode(), b"check"], env=env_b, capture_output=True, timeout=30)
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert "Traceback" not in err and "Pass99" not in err and "Wrong" not in err
    problems = [line for line in err.splitlines() if line.startswith("  ")]
    assert len(problems) == len(DANGEROUS) + 2, err  # + the DSN and the hostname
    assert "percent-encode @ as %40" in err and "SIC_HOSTNAME='\\xff\\xfe'" in err


def test_the_readme_states_every_limit() -> None:
    rows = {
        line.split("|")[1].strip(): line
        for line in README.read_text().splitlines()
        if line.startswith("| `SIC_")
    }
    for key in LIMITS:
        row = next((r for names, r in rows.items() if f"`{key}`" in names), None)
        assert row is not None, f"{key} has no row in the README variable table"
        assert limits_text(key) in row, f"README row of {key} lacks {limits_text(key)!r}"
    assert re.search(r"percent-encode", README.read_text()), "README: '@' in a DSN password"
    assert os.path.exists(README)
