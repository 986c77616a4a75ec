"""The GitHub workflows, checked offline: the GitHub workflow JSON schema, pinned actions,
minimal permissions, concurrency groups, and that they run what the issue asks for."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
NAMES = ("ci.yml", "image.yml", "chart.yml")
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"uses:\s*\S+@[0-9a-f]{40}\s+#\s*v\d+(\.\d+){0,2}\s*$")


def load(name: str) -> dict[Any, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def steps(workflow: dict[Any, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path)


def test_the_three_workflows_exist() -> None:
    assert sorted(p.name for p in WORKFLOWS.glob("*.yml")) == sorted(NAMES)


def test_workflows_match_the_github_workflow_schema() -> None:
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows"]
        + [str(WORKFLOWS / n) for n in NAMES],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_broken_workflow(tmp_path: Path) -> None:
    """The schema check above can fail: a misspelt key is reported."""
    broken = tmp_path / "broken.yml"
    text = (WORKFLOWS / "ci.yml").read_text(encoding="utf-8").replace("runs-on:", "run-on:")
    broken.write_text(text, encoding="utf-8")
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(broken)],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0


@pytest.mark.parametrize("name", NAMES)
def test_actions_are_pinned_by_commit_sha_with_a_version_comment(name: str) -> None:
    uses = [s["uses"] for s in steps(load(name)) if "uses" in s]
    assert uses, f"{name} uses no actions?"
    for ref in uses:
        assert PINNED.match(ref), f"{name}: {ref} is not pinned to a full commit SHA"
    lines = [ln for ln in (WORKFLOWS / name).read_text(encoding="utf-8").splitlines()]
    for line in lines:
        if "uses:" in line:
            assert VERSION_COMMENT.search(line), f"{name}: no '# vX.Y.Z' comment: {line.strip()}"


def test_one_action_one_pin_everywhere() -> None:
    pins: dict[str, set[str]] = {}
    for name in NAMES:
        for s in steps(load(name)):
            if "uses" in s:
                action, _, sha = s["uses"].partition("@")
                pins.setdefault(action, set()).add(sha)
    assert {a: p for a, p in pins.items() if len(p) > 1} == {}


@pytest.mark.parametrize("name", NAMES)
def test_permissions_are_minimal_and_concurrency_grouped(name: str) -> None:
    wf = load(name)
    assert wf["permissions"] == {"contents": "read"}, "top-level permissions: contents: read"
    assert "${{ github.workflow }}" in wf["concurrency"]["group"]
    for job_name, job in wf["jobs"].items():
        perms = job.get("permissions", {})
        assert perms.get("contents", "read") == "read", f"{job_name} writes contents"
        extra = {k for k, v in perms.items() if v == "write"}
        assert extra <= {"packages"}, f"{job_name} asks for {extra}"
        if "packages" in extra:
            # Only the jobs that push to GHCR, and only on version tags.
            text = yaml.safe_dump(job)
            assert "refs/tags/v" in text, f"{job_name} can write packages but never checks for tags"
        assert "timeout-minutes" in job, f"{job_name} has no timeout"


def test_ci_runs_make_test_on_every_supported_python() -> None:
    wf = load("ci.yml")
    job = wf["jobs"]["test"]
    assert job["strategy"]["matrix"]["python"] == ["3.11", "3.12", "3.13"]
    runs = " ".join(s.get("run", "") for s in job["steps"])
    assert "make test" in runs
    assert "docker" in runs  # the runner's Docker engine serves testcontainers and the image tests
    assert "helm" in yaml.safe_dump(job)


def test_image_workflow_builds_both_platforms_smoke_tests_and_pushes_only_on_tags() -> None:
    wf = load("image.yml")
    assert wf[True]["push"]["tags"] == ["v*.*.*"]  # yaml reads the key `on` as True
    smoke = wf["jobs"]["smoke"]
    smoke_runs = " ".join(s.get("run", "") for s in smoke["steps"])
    assert "tests/integration/test_image.py" in smoke_runs
    assert "GITHUB_STEP_SUMMARY" in smoke_runs  # measured image size in the summary
    build = wf["jobs"]["build"]
    assert build["needs"] == "smoke"
    (push,) = [s for s in build["steps"] if s.get("id") == "build"]
    assert push["with"]["platforms"] == "linux/amd64,linux/arm64"
    assert push["with"]["push"] == "${{ startsWith(github.ref, 'refs/tags/v') }}"
    assert push["with"]["sbom"] is True
    assert push["with"]["provenance"] == "mode=max"
    (meta,) = [s for s in build["steps"] if s.get("id") == "meta"]
    assert "type=semver,pattern={{version}}" in meta["with"]["tags"]


def test_chart_workflow_checks_everything_and_releases_on_tags() -> None:
    wf = load("chart.yml")
    runs = " ".join(s.get("run", "") for s in wf["jobs"]["check"]["steps"])
    for needle in (
        "helm lint --strict",
        "ci/*-values.yaml",
        "kubernetes-validate",
        "scripts/render-k8s.sh",
        "git diff --exit-code",
        "kubectl kustomize k8s/",
    ):
        assert needle in runs, needle
    release = wf["jobs"]["release"]
    assert release["if"] == "startsWith(github.ref, 'refs/tags/v')"
    release_runs = " ".join(s.get("run", "") for s in release["steps"])
    assert "helm package" in release_runs and "helm push" in release_runs
