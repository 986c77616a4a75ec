"""Static checks of the shipping artifacts that need no Docker engine or helm binary: the
Dockerfile (hadolint), the chart's version, schema and documented values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from system_info_collector import __version__

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "system-info-collector"


def values() -> dict[str, Any]:
    data = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def schema() -> dict[str, Any]:
    data = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def leaves(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys of values.yaml down to scalars, lists and empty maps."""
    keys = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in OPAQUE:
            keys += leaves(value, path + ".")
        else:
            keys.append(path)
    return keys


# Kubernetes objects passed through as a whole: documented as one row.
OPAQUE = {
    "resources",
    "podSecurityContext",
    "securityContext",
    "livenessProbe",
    "readinessProbe",
    "nodeSelector",
    "updateStrategy",
}


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "hadolint"), str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get install curl\n", encoding="utf-8")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "hadolint"), str(bad)], capture_output=True, text=True
    )
    assert result.returncode != 0


def test_dockerfile_contract() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "ARG BASE_IMAGE=python:3.12-slim" in text
    assert text.count("FROM ${BASE_IMAGE}") == 2
    for line in (
        "SIC_HOST_PROC=/host/proc",
        "SIC_HOST_SYS=/host/sys",
        "SIC_HOST_ROOT=/host/root",
        "SIC_CSV_DIR=/data",
        "USER 10001:10001",
        'VOLUME ["/data"]',
        'ENTRYPOINT ["system-info-collector"]',
        'CMD ["run"]',
        'CMD ["system-info-collector", "health"]',
        f"ARG VERSION={__version__}",
    ):
        assert line in text, line


def test_dockerignore_keeps_the_context_to_the_package() -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert lines[[ln.strip() for ln in lines].index("*")] == "*"
    assert {"!pyproject.toml", "!README.md", "!src/"} <= set(lines)


def test_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["appVersion"] == __version__
    assert chart["apiVersion"] == "v2"


def test_values_and_every_scenario_match_the_schema() -> None:
    validator = jsonschema.Draft7Validator(schema())
    jsonschema.Draft7Validator.check_schema(schema())
    assert not list(validator.iter_errors(values()))
    for scenario in sorted((CHART / "ci").glob("*-values.yaml")):
        merged = values()
        merge(merged, yaml.safe_load(scenario.read_text(encoding="utf-8")))
        errors = [e.message for e in validator.iter_errors(merged)]
        assert not errors, f"{scenario.name}: {errors}"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["intervall"], "1s"),
        (["csv", "rotateSise"], "1GB"),
        (["csv", "compress"], "zstd"),
        (["interval"], "fast"),
        (["retry", "maxAttempts"], 0),
        (["collectors", "enabled"], ["cpu", "gpu"]),
        (["image", "digest"], "latest"),
        (["tags"], {"host": "x"}),
    ],
)
def test_schema_rejects_typos_and_bad_values(path: list[str], value: object) -> None:
    data = values()
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert list(jsonschema.Draft7Validator(schema()).iter_errors(data))


def test_chart_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    missing = [key for key in leaves(values()) if f"`{key}`" not in readme]
    assert not missing, f"helm/system-info-collector/README.md lacks rows for {missing}"


def merge(base: dict[str, Any], override: dict[str, Any]) -> None:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value


def test_make_run_serves_on_loopback_only_unless_told_otherwise(tmp_path: Path) -> None:
    """``make run`` is for local use: /metrics is not open to the network by default."""
    fake = tmp_path / "system-info-collector"  # stands in for the venv's command
    fake.write_text(
        '#!/bin/sh\nprintf "listen=[%s] csv=[%s] args=%s" "$SIC_HTTP_LISTEN" "$SIC_CSV_DIR" "$*"\n'
    )
    fake.chmod(0o755)
    root = Path(__file__).parents[2]
    base = {k: v for k, v in os.environ.items() if not k.startswith("SIC_")}

    def make_run(**env: str) -> str:
        return subprocess.run(
            ["make", "-s", "-o", ".venv/.installed", "run", f"BIN={tmp_path}"],
            cwd=root,
            env={**base, **env},
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    assert make_run() == "listen=[127.0.0.1:9808] csv=[./data] args=run"
    assert make_run(SIC_HTTP_LISTEN=":9900").startswith("listen=[:9900]")
    assert make_run(SIC_HTTP_LISTEN="").startswith("listen=[]")  # empty still turns HTTP off
