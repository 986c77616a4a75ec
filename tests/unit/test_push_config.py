"""Configuration of the push sinks (remote_write, otlp): validated, secrets never echoed."""

from pathlib import Path

import pytest

from system_info_collector.config import load_settings, otlp_metrics_url
from system_info_collector.errors import ConfigError


def test_remote_write_settings(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    s = load_settings(
        {
            "SIC_SINKS": "csv,remote_write",
            "SIC_REMOTE_WRITE_URL": "http://vm:8428/api/v1/write",
            "SIC_REMOTE_WRITE_BEARER_TOKEN_FILE": str(token),
            "SIC_REMOTE_WRITE_TIMEOUT": "3s",
        }
    )
    assert s.sinks == ("csv", "remote_write")
    assert s.remote_write.url == "http://vm:8428/api/v1/write"
    assert s.remote_write.bearer_token_file == str(token) and s.remote_write.timeout == 3.0


def test_otlp_endpoint_gets_the_metrics_path_as_otlp_exporters_do() -> None:
    assert otlp_metrics_url("http://c:4318") == "http://c:4318/v1/metrics"
    assert otlp_metrics_url("http://c:4318/") == "http://c:4318/v1/metrics"
    assert otlp_metrics_url("https://c/otlp/v1/metrics") == "https://c/otlp/v1/metrics"
    s = load_settings({"SIC_SINKS": "otlp", "SIC_OTLP_ENDPOINT": "http://c:4318"})
    assert s.otlp.endpoint == "http://c:4318/v1/metrics" and s.otlp.compression == "gzip"


def test_otlp_problems_at_once_and_no_password_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            {
                "SIC_SINKS": "otlp",
                "SIC_OTLP_ENDPOINT": "grpc://u:pw-otlp-9@c:4317",
                "SIC_OTLP_HEADERS_FILE": str(tmp_path / "missing"),
                "SIC_OTLP_COMPRESSION": "zstd",
                "SIC_OTLP_TIMEOUT": "never",
            }
        )
    problems = info.value.problems
    assert "pw-otlp-9" not in "\n".join(problems)
    assert {p.split("=")[0] for p in problems} == {
        "SIC_OTLP_ENDPOINT",
        "SIC_OTLP_HEADERS_FILE",
        "SIC_OTLP_COMPRESSION",
        "SIC_OTLP_TIMEOUT",
    }
    with pytest.raises(ConfigError) as info:
        load_settings({"SIC_SINKS": "otlp"})
    assert info.value.problems == ["SIC_SINKS includes otlp but SIC_OTLP_ENDPOINT is not set"]


def test_every_push_problem_at_once_and_no_password_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            {
                "SIC_SINKS": "remote_write",
                "SIC_REMOTE_WRITE_URL": "ftp://user:hunter2pw@host/write",
                "SIC_REMOTE_WRITE_BASIC_AUTH_USER": "bob",
                "SIC_REMOTE_WRITE_HEADERS_FILE": str(tmp_path / "missing"),
                "SIC_REMOTE_WRITE_TIMEOUT": "soon",
            }
        )
    problems = info.value.problems
    text = "\n".join(problems)
    assert "hunter2pw" not in text
    assert any(p.startswith("SIC_REMOTE_WRITE_URL=") and "http://" in p for p in problems)
    assert any(
        "SIC_REMOTE_WRITE_HEADERS_FILE" in p and "not a readable file" in p for p in problems
    )
    assert any("SIC_REMOTE_WRITE_BASIC_AUTH_PASSWORD_FILE go together" in p for p in problems)
    assert any(p.startswith("SIC_REMOTE_WRITE_TIMEOUT=") for p in problems)


def test_remote_write_sink_needs_its_url() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"SIC_SINKS": "remote_write"})
    assert info.value.problems == [
        "SIC_SINKS includes remote_write but SIC_REMOTE_WRITE_URL is not set"
    ]
