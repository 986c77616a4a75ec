from pathlib import Path

import pytest

from system_info_collector.config import load_settings
from system_info_collector.errors import ConfigError


def test_defaults() -> None:
    s = load_settings({})
    assert s.interval == 1.0
    # Every collector but the optional `sockets`; the first four are still valid on their own.
    new = ("net", "system", "pressure", "vmstat", "filefd", "md", "timex", "bonding")
    assert s.collectors == ("cpu", "memory", "disk", "diskio", *new)
    previous = load_settings({"SIC_COLLECTORS": "cpu,memory,disk,diskio"})
    assert previous.collectors == ("cpu", "memory", "disk", "diskio")
    assert s.sinks == ("csv",)
    assert s.host_paths.proc == "/proc" and s.host_paths.root == "/"
    assert s.csv.directory == "./data" and s.csv.rotate_size == 100_000_000
    assert s.postgres.spool_dir == "./data/.spool"
    # five ticks per PostgreSQL transaction at the default 1 s (docs/postgres.md: why)
    assert s.postgres.flush_interval == 5.0 == 5 * s.interval
    assert s.log_format == "json" and s.shutdown_timeout == 10.0
    assert s.http.listen == ":9808"


def test_dsn_turns_on_the_postgres_sink_and_spool_follows_csv_dir() -> None:
    s = load_settings({"SIC_DB_DSN": "postgresql://u:pw@db/metrics", "SIC_CSV_DIR": "/data"})
    assert s.sinks == ("csv", "postgres")
    assert s.postgres.spool_dir == "/data/.spool"


def test_telegraf_style_host_variables_are_honoured_and_sic_wins() -> None:
    s = load_settings({"HOST_PROC": "/host/proc", "HOST_SYS": "/host/sys", "HOST_ROOT": "/hr"})
    assert (s.host_paths.proc, s.host_paths.sys, s.host_paths.root) == (
        "/host/proc",
        "/host/sys",
        "/hr",
    )
    s = load_settings({"HOST_PROC": "/host/proc", "SIC_HOST_PROC": "/other"})
    assert s.host_paths.proc == "/other"


def test_hostname_from_node_name_and_tags() -> None:
    s = load_settings({"NODE_NAME": "node-7", "SIC_TAGS": "env=prod, team = sre"})
    assert s.hostname == "node-7"
    assert s.tags == {"env": "prod", "team": "sre"}
    assert load_settings({"NODE_NAME": "n", "SIC_HOSTNAME": "h"}).hostname == "h"


def test_per_collector_interval_must_be_a_whole_multiple() -> None:
    s = load_settings({"SIC_INTERVAL": "500ms", "SIC_DISK_INTERVAL": "10s"})
    assert s.collector_interval("disk") == 10.0 and s.collector_interval("cpu") == 0.5
    with pytest.raises(ConfigError) as info:
        load_settings({"SIC_INTERVAL": "2s", "SIC_DISK_INTERVAL": "3s"})
    assert (
        "SIC_DISK_INTERVAL='3s': must be a whole multiple of SIC_INTERVAL" in info.value.problems[0]
    )


def test_every_problem_is_reported_at_once() -> None:
    env = {
        "SIC_INTERVAL": "50ms",
        "SIC_COLLECTORS": "cpu,gpu",
        "SIC_CSV_ROTATE_SIZE": "huge",
        "SIC_RETRY_MAX": "0",
        "SIC_LOG_FORMAT": "xml",
        "SIC_DISK_FSTYPES_EXCLUDE": "(",
        "SIC_TAGS": "novalue",
        "SIC_HTTP_LISTEN": "nowhere",
        "SIC_SINKS": "csv,kafka",
    }
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    text = "\n".join(info.value.problems)
    for expected in (
        "SIC_INTERVAL='50ms': must be at least 100ms",
        "unknown collector 'gpu'",
        "SIC_CSV_ROTATE_SIZE='huge'",
        "SIC_RETRY_MAX='0'",
        "SIC_LOG_FORMAT='xml': expected one of json, text",
        "SIC_DISK_FSTYPES_EXCLUDE='('",
        "SIC_TAGS='novalue'",
        "SIC_HTTP_LISTEN='nowhere'",
        "unknown sink 'kafka'",
    ):
        assert expected in text
    assert len(info.value.problems) == len(env)


def test_postgres_sink_without_dsn_is_an_error() -> None:
    with pytest.raises(ConfigError, match="SIC_DB_DSN is not set"):
        load_settings({"SIC_SINKS": "postgres"})


def test_tag_keys_must_not_shadow_columns() -> None:
    with pytest.raises(ConfigError, match="'host' is a column name"):
        load_settings({"SIC_TAGS": "host=x"})


def test_a_bad_base_interval_is_reported_once_not_per_collector() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"SIC_INTERVAL": "-1s"})
    assert info.value.problems == [
        "SIC_INTERVAL='-1s': '-1s' is not a duration (expected e.g. 250ms, 1s, 5m, 24h, 7d)"
    ]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("SIC_INTERVAL", "9" * 400 + "d", "too long"),
        ("SIC_SHUTDOWN_TIMEOUT", "9" * 400, "too long"),
        ("SIC_CSV_ROTATE_SIZE", "9" * 400 + "GB", "too large"),
        ("SIC_CSV_FILE_MODE", "9", "not an octal file mode such as 0640"),
        ("SIC_CSV_FILE_MODE", "1777", "not an octal file mode such as 0640"),
        ("SIC_DISK_TIMEOUT", "0", "must be more than 0"),
    ],
)
def test_out_of_range_values_are_clear_errors(variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({variable: value})
    (problem,) = info.value.problems
    assert problem.startswith(f"{variable}=") and expected in problem


def test_a_csv_file_name_where_a_directory_belongs_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="looks like a file name"):
        load_settings({"SIC_CSV_DIR": str(tmp_path / "metrics.csv")})
    (tmp_path / "odd.csv").mkdir()  # an existing directory with that name is fine
    assert load_settings({"SIC_CSV_DIR": str(tmp_path / "odd.csv")}).csv.directory.endswith(
        "odd.csv"
    )


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        ("", "node"),
        ("node", "node"),
        ("SIC", "sic"),
        ("off", "off"),
        ("true", "node"),
        ("false", "off"),
    ],
)
def test_host_metrics_mode_with_the_booleans_of_earlier_releases(value: str, mode: str) -> None:
    settings = load_settings({"SIC_PROMETHEUS_HOST_METRICS": value})
    assert settings.http.host_metrics == mode


def test_an_unknown_host_metrics_mode_names_the_choices() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({"SIC_PROMETHEUS_HOST_METRICS": "prometheus"})
    assert "SIC_PROMETHEUS_HOST_METRICS='prometheus'" in str(err.value)
    assert "node" in str(err.value) and "sic" in str(err.value) and "off" in str(err.value)
